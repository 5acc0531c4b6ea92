"""Import an ONNX window network as a :class:`~deepshift_edge.Sequential`.

The ONNX graph maps one window, ``(1, C, W)`` for 1-D frames or ``(1, C, F, W)`` for 2-D
frames (time is the last axis), to an output. The graph is walked from its input; every
node becomes a layer (or folds into one), an ``Add`` of two branches that fork from the
same tensor becomes a :class:`~deepshift_edge.layers.Residual`, and the result is checked
(stream vs offline reference on random input) before it is returned.

Only the ``onnx`` package is needed (imported when :func:`from_onnx` is called), never
onnxruntime. Supported ops: see ``SUPPORTED_OPS``; anything else raises
:class:`~deepshift_edge.ModelFormatError` naming the op and the node.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np

from ..nn import layers as L
from ..nn import merge as M
from . import onnx_pointwise as P
from ..errors import ModelError, ModelFormatError

__all__ = ["from_onnx", "SUPPORTED_OPS"]

SUPPORTED_OPS = (
    "Conv (1-D/2-D; strides, dilations, groups; time pads 0, causal (left), or symmetric + "
    "Slice chomp; feature pads symmetric)", "BatchNormalization", "Relu", "Clip (0..6 or 0..inf)",
    "LeakyRelu", "Sigmoid", "Tanh", "HardSwish", "HardSigmoid", "Gelu",
    "Softmax (over channels: of each 1-D frame, or of the vector after the head)",
    "Transpose (between (1, C, T) and (1, T, C), or (1, C, F, T) and (1, C, T, F))",
    "MaxPool / AveragePool (no padding, ceil_mode 0)", "GlobalAveragePool", "GlobalMaxPool",
    "ReduceMean / ReduceMax over time (and features)", "Add of two branches (residual)",
    "per-frame elementwise subgraphs of Add/Sub/Mul/Div/Pow/Sqrt/Exp/Log/Neg/Abs/Reciprocal/"
    "Erf/Tanh/Sigmoid/Relu/Clip/Max/Min with per-channel constants, identified numerically as "
    "a per-channel scale and shift followed by one engine activation (GELU at opset < 20, "
    "SiLU as x*Sigmoid(x), decomposed BatchNorm, ...)",
    "Gemm / MatMul (after the head; MatMul also per frame on (1, T, C))",
    "Flatten / Reshape to (1, -1) (of the window in any layout, or of the vector)",
    "Squeeze / Unsqueeze (after the head)",
    "Slice on time (last frame, causal chomp, right-aligned crop of a residual skip)",
    "Pad (zeros: left of time, symmetric on features) feeding a Conv",
    "Gather of the last frame", "Identity", "Dropout",
)


class _Crop:
    """Marker: the branch drops its oldest `n` time positions (kept until the residual Add)."""

    def __init__(self, n, node):
        self.n, self.node = n, node
    is_head = False


@dataclass
class _Val:
    layers: tuple                 # layers applied to the graph input, in order
    shape: tuple                  # ONNX shape of the tensor (batch dim included)
    head: bool = False            # the time axis is gone
    chomp: int = 0                # symmetric-padded conv waiting for its right crop
    node: str = ""
    expr: Optional[P.Expr] = None  # pending elementwise expression over tensor `root`
    root: str = ""
    t_axis: Optional[int] = None  # ONNX axis of time (None after the head)
    c_axis: int = 1               # ONNX axis of channels
    flat_perm: Optional[np.ndarray] = None  # flattened window in ONNX order = ours[flat_perm]
    pad: Optional[tuple] = None   # a zero Pad waiting for its Conv: (time left, feature each side)
    sliced_from: Optional[tuple] = None  # a last-frame Slice: (time length, time axis) before it
    vec2d: bool = False           # after the head of a 2-D model: the vector is (C, F)
    spans_window: str = ""        # a pool over the whole window ("max"/"avg"): a global pool if a head follows

    @property
    def f_axis(self) -> Optional[int]:
        """The feature axis of 2-D data (before the head)."""
        if self.head or len(self.shape) != 4:
            return None
        return 3 if self.t_axis == 2 else 2

    @property
    def time_last(self) -> bool:
        return self.t_axis == len(self.shape) - 1


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _fail(node, msg) -> ModelFormatError:
    return ModelFormatError(f"ONNX node {node.name or '<unnamed>'!r} ({node.op_type}): {msg}")


def from_onnx(model, window: Optional[int] = None, *, time_axis=None, check: bool = True,
              return_report: bool = False, seed: int = 0, labels=None, metadata=None):
    """Convert an ONNX window network (a path, bytes, or an ``onnx.ModelProto``).

    ``window``: the window ``W`` in frames; default: the (static) time length of the graph
    input. ``time_axis``: which input axis is time, as an index or as the name of a symbolic
    dimension; default: the one axis named like time (``TIME_AXIS_NAMES``, e.g. ``"time"``,
    ``"frames"``, ``"T"``), else the last. Accepted inputs: ``(1, C, T)``, ``(1, T, C)``
    (channels last, e.g. a model that transposes or applies MatMul per frame),
    ``(1, C, F, T)`` and ``(1, C, T, F)``. With ``check=True`` the converted model is
    streamed on random input and compared with its offline reference;
    ``return_report=True`` returns ``(model, report_text)``. ``labels`` (class names) and
    ``metadata`` are validated and set on the model, for ``dse.save`` to keep.

    A graph that cannot be converted raises :class:`ModelFormatError` (never a protobuf or
    indexing error from deep inside the conversion); a missing file raises OSError.
    """
    try:
        result = _from_onnx(model, window, time_axis, check=check, return_report=return_report, seed=seed)
    except (ModelFormatError, ImportError, OSError):
        raise
    except MemoryError:
        raise ModelFormatError("ONNX model too large to convert (ran out of memory)") from None
    except Exception as exc:  # a corrupt graph: report it as such, with what went wrong
        raise ModelFormatError(f"not a convertible ONNX model: {type(exc).__name__}: {exc}") from exc
    _annotate(result[0] if return_report else result, labels, metadata)
    return result


def _annotate(seq, labels, metadata):
    from ..formats.npz import check_annotations
    seq.labels, seq.metadata = check_annotations(labels, metadata, seq.output_shape, "", ModelError)


TIME_AXIS_NAMES = ("time", "t", "frames", "n_frames", "num_frames", "steps", "timesteps", "time_steps",
                   "seq", "seq_len", "sequence", "sequence_length", "length", "window")


def _input_time_axis(inp, dims, names, time_axis) -> int:
    """The graph input's time axis: given, named like time, or the last."""
    rank = len(dims)
    allowed = (1, 2) if rank == 3 else (2, 3)
    if time_axis is None:
        named = [j for j, n in enumerate(names) if n and n.lower() in TIME_AXIS_NAMES]
        t = named[0] if len(named) == 1 else rank - 1
    elif isinstance(time_axis, str):
        if time_axis not in names:
            raise ModelFormatError(f"graph input {inp.name!r}: no axis is named {time_axis!r}; the "
                                   f"symbolic axis names are {[n for n in names if n]}")
        t = names.index(time_axis)
    elif isinstance(time_axis, (int, np.integer)) and not isinstance(time_axis, bool) and -rank <= time_axis < rank:
        t = int(time_axis) % rank
    else:
        raise ModelFormatError(f"time_axis must be an axis index in {-rank}..{rank - 1} or an axis name, "
                               f"got {time_axis!r}")
    if t not in allowed:
        layouts = "(1, C, T) or (1, T, C)" if rank == 3 else "(1, C, F, T) or (1, C, T, F)"
        raise ModelFormatError(f"graph input {inp.name!r}: time on axis {t} of {rank}; expected {layouts}")
    return t


def _from_onnx(model, window, time_axis, *, check, return_report, seed):
    from ..formats.npz import LIMITS

    try:
        import onnx
        from onnx import numpy_helper, shape_inference
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("from_onnx needs the 'onnx' package: pip install onnx") from exc
    from ..nn.sequential import Sequential

    if isinstance(model, (bytes, bytearray)):
        proto = onnx.load_from_string(bytes(model))
    elif isinstance(model, onnx.ModelProto):
        proto = model
    else:
        try:
            proto = onnx.load(model)
        except OSError:
            raise
        except Exception as exc:
            raise ModelFormatError(f"{model}: not a readable ONNX model: {exc}") from None
    graph = proto.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ModelFormatError(f"expected one graph input (a window), got {[i.name for i in inputs]}")
    if len(graph.output) != 1:
        raise ModelFormatError(f"expected one graph output, got {[o.name for o in graph.output]}")
    inp = inputs[0]
    in_dims = inp.type.tensor_type.shape.dim
    dims = [d.dim_value if d.HasField("dim_value") else None for d in in_dims]
    names = [d.dim_param if d.HasField("dim_param") else "" for d in in_dims]
    if len(dims) not in (3, 4):
        raise ModelFormatError(f"graph input {inp.name!r}: expected (1, C, W) or (1, C, F, W), got "
                               f"{len(dims)} dims")
    t_axis = _input_time_axis(inp, dims, names, time_axis)
    if window is None:
        if dims[t_axis] is None:
            raise ModelFormatError(f"graph input {inp.name!r}: the time axis ({t_axis}) is symbolic; "
                                   f"pass window= (deepshift-edge convert: --window)")
        window = dims[t_axis]
    if not isinstance(window, (int, np.integer)) or isinstance(window, bool) or not 1 <= window <= LIMITS["window"]:
        raise ModelFormatError(f"window must be an integer in 1..{LIMITS['window']}, got {window!r}")
    other = [d for j, d in enumerate(dims) if j not in (0, t_axis)]
    if any(d is None or not 1 <= d <= LIMITS["channels"] for d in other):
        raise ModelFormatError(f"graph input {inp.name!r}: channel/feature dims must be static and at most "
                               f"{LIMITS['channels']}, got {dims} (time on axis {t_axis})")
    # Fix the input shape (batch 1, time = window) and infer every other shape.
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    fixed = [1] + dims[1:]
    fixed[t_axis] = int(window)
    target = next(i for i in proto.graph.input if i.name == inp.name)
    for j, d in enumerate(target.type.tensor_type.shape.dim):
        d.Clear()
        d.dim_value = fixed[j]
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 17)
    # Exporters compute pads and crop offsets from shapes at run time; with the input fixed,
    # those are constants: fold them and infer again until every shape is static.
    shapes: Dict[str, tuple] = {}
    for _ in range(6):
        folded = _fold_constant_nodes(proto, numpy_helper, opset, shapes)
        try:
            proto = shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
        except Exception as exc:
            raise ModelFormatError(f"ONNX shape inference failed: {exc}") from None
        shapes = {}
        for vi in list(proto.graph.value_info) + list(proto.graph.output) + list(proto.graph.input):
            t = vi.type.tensor_type
            if t.HasField("shape"):
                shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
        if not folded:
            break
    graph = proto.graph
    in_features = other[0] if len(dims) == 3 else (other[0], other[1])
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}  # with the folded ones
    conv = _Converter(inits, shapes, numpy_helper, opset)
    c_axis = 2 if (len(dims) == 3 and t_axis == 1) else 1
    vals: Dict[str, _Val] = {inp.name: _Val((), tuple(fixed), t_axis=t_axis, c_axis=c_axis)}
    for node in graph.node:
        conv.node(node, vals)
    out = graph.output[0].name
    if out not in vals:
        raise ModelFormatError(f"graph output {out!r} does not depend on the input")
    result = conv.globalize(conv.materialize(out, vals))
    if result.chomp:
        raise ModelFormatError(f"node {result.node!r}: a Conv with symmetric time padding must be "
                               f"followed by a Slice removing its last {result.chomp} positions "
                               f"(a causal 'chomp'); symmetric padding looks into the future")
    if not result.head and result.shape[result.t_axis] != 1:
        raise ModelFormatError(
            f"the graph output keeps the time axis ({result.shape[result.t_axis]} positions, shape "
            f"{result.shape}); a stream gives one output per window: end the graph with a "
            f"last-frame Slice/Gather, a global pooling, or Flatten")
    layers = [lay for lay in result.layers if not isinstance(lay, _Crop)]
    if len(layers) != len(result.layers):
        raise ModelFormatError("a Slice cropping the time axis is only supported on the skip branch "
                               "of a residual Add")
    try:
        seq = Sequential(layers, in_features=in_features, window=int(window))
    except ModelError as exc:
        raise ModelFormatError(f"the converted layers do not form a valid model: {exc}") from None
    want = tuple(d for d in shapes.get(out, ()) if d is not None)
    if want and int(np.prod(want)) != int(np.prod(seq.output_shape)):
        raise ModelFormatError(f"converted model gives output shape {seq.output_shape}, the ONNX "
                               f"graph {want}")
    report = _check(seq, seed) if check else f"converted: {len(seq.layers)} layers"
    return (seq, report) if return_report else seq


def _fold_constant_nodes(proto, numpy_helper, opset, shapes) -> bool:
    """Replace nodes that compute only from constants (exporters build pads and shapes that
    way), and Shape of tensors whose inferred shape is static, by initializers, in place.
    A node that cannot be folded stays for the converter to report. True if any folded."""
    graph = proto.graph
    folder = _Converter({t.name: numpy_helper.to_array(t) for t in graph.initializer}, {}, numpy_helper, opset)
    keep, folded = [], []
    for node in graph.node:
        inputs = [i for i in node.input if i]
        try:
            if node.op_type == "Shape" and inputs and inputs[0] not in folder.consts:
                shape = shapes.get(inputs[0])
                if shape is not None and None not in shape:
                    folder.consts[node.output[0]] = _shape_value(node, shape)
                    folded.append(node.output[0])
                    continue
            elif node.op_type == "Constant" or (inputs and all(i in folder.consts for i in inputs)):
                folder.node(node, {})
                folded.extend(o for o in node.output if o)
                continue
        except ModelFormatError:
            pass
        keep.append(node)
    if not folded:
        return False
    used = {i for n in keep for i in n.input} | {o.name for o in graph.output}
    graph.initializer.extend(numpy_helper.from_array(np.asarray(folder.consts[o]), o)
                             for o in folded if o in used)
    del graph.node[:]
    graph.node.extend(keep)
    return True


def _shape_value(node, shape) -> np.ndarray:
    """What an ONNX Shape node gives for a tensor of static `shape` (its start/end applied)."""
    a = _attrs(node)
    return np.array(shape, np.int64)[a.get("start", 0):a.get("end", len(shape))]


def _check(seq, seed) -> str:
    lines = [f"converted: {len(seq.layers)} layers, frames {seq.frame_shape} -> output "
             f"{seq.output_shape}; window {seq.window}, receptive field {seq.receptive_field}, "
             f"hop {seq.hop}; equivalence: {seq.equivalence}"]
    if seq.equivalence != "window-exact":
        lines.append(f"  not streamable window-exactly: {seq._why_not_window_exact}")
        return "\n".join(lines)
    rng = np.random.default_rng(seed)
    n = seq.window + 2 * max(seq.hop, 1) + 8
    x = rng.standard_normal((n,) + seq.frame_shape).astype(np.float32)
    ref = seq.forward(x)
    got = seq.stream().push_many(x)
    err = float(np.max(np.abs(got - ref))) if got.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    lines.append(f"  check: streamed vs offline reference on {len(got)} windows of random input: "
                 f"max |error| = {err:.2e} (max |output| {scale:.2e})")
    if not err <= 1e-4 * max(1.0, scale):
        raise ModelFormatError(f"converted model streams with error {err:.2e}: please report this")
    return "\n".join(lines)


class _Converter:
    def __init__(self, inits, shapes, numpy_helper, opset=17):
        self.opset = opset
        self.consts: Dict[str, np.ndarray] = dict(inits)
        self.shapes = shapes
        self.nh = numpy_helper

    def consts_view(self, graph):
        """Initializers plus the values of Constant nodes (for pattern matching)."""
        view = dict(self.consts)
        for n in graph.node:
            if n.op_type == "Constant":
                a = _attrs(n)
                if "value" in a:
                    view[n.output[0]] = self.nh.to_array(a["value"])
        return view

    # -- helpers
    def const(self, name, node, what) -> np.ndarray:
        if name not in self.consts:
            raise _fail(node, f"{what} ({name!r}) must be a constant (initializer or Constant node)")
        return self.consts[name]

    def opt_const(self, node, i):
        if len(node.input) > i and node.input[i]:
            return self.const(node.input[i], node, f"input {i}")
        return None

    def shape(self, name):
        return self.shapes.get(name)

    def emit(self, vals, node, x: _Val, layer=None, shape=None, **kw):
        layers = x.layers + ((layer,) if layer is not None else ())
        out_shape = shape if shape is not None else self.shape(node.output[0]) or x.shape
        head = kw.get("head", x.head)
        vals[node.output[0]] = _Val(layers, tuple(out_shape), head=head, chomp=kw.get("chomp", 0),
                                    node=node.name, t_axis=None if head else kw.get("t_axis", x.t_axis),
                                    c_axis=kw.get("c_axis", x.c_axis), flat_perm=kw.get("flat_perm"),
                                    vec2d=kw.get("vec2d", x.vec2d and head))

    def head_axes(self, node, x: _Val, keepdims: bool, drop=()):
        """Channel axis after the time (and `drop`) axes are reduced."""
        if keepdims:
            return x.c_axis
        gone = [x.t_axis] + list(drop)
        return x.c_axis - sum(1 for a in gone if a is not None and a < x.c_axis)

    # -- dispatch
    def node(self, node, vals):
        op = node.op_type
        if op == "Constant":
            a = _attrs(node)
            if "value" not in a:
                raise _fail(node, f"only tensor constants are supported, got {sorted(a)}")
            self.consts[node.output[0]] = self.nh.to_array(a["value"])
            return
        dyn = [i for i in node.input if i in vals]
        if not dyn:  # constant folding of shape arithmetic is not needed for supported graphs
            self.fold_const(node)
            return
        if any(vals[i].pad is not None for i in dyn) and op != "Conv":
            raise _fail(node, "follows a Pad; a zero Pad is supported only as the padding of the Conv "
                              "it feeds")
        if any(vals[i].flat_perm is not None for i in dyn) and op not in ("Gemm", "MatMul", "Identity"):
            raise _fail(node, "a window flattened with time before the last axis can only feed Gemm/MatMul")
        if op in P.ELEMENTWISE and not (op == "Add" and self.is_residual(node, vals)):
            return self.pointwise(node, vals)
        for name in dyn:
            self.materialize(name, vals)
        x = vals[dyn[0]]
        if x.chomp and op != "Slice":
            raise _fail(node, f"follows a Conv with symmetric time padding; expected a Slice removing "
                              f"its last {x.chomp} positions (causal chomp)")
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            raise _fail(node, f"unsupported op {op!r}; supported: {', '.join(SUPPORTED_OPS)}")
        if any(isinstance(lay, _Crop) for lay in x.layers[-1:]) and op not in ("Add",):
            raise _fail(node, "a time crop (Slice) may only feed a residual Add")
        handler(node, vals, x)

    # Constant subgraphs (shape arithmetic, pads computed by the exporter) are evaluated with
    # onnx's reference implementation, limited to these ops and to small tensors.
    FOLDABLE = {"Shape", "Size", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Identity",
                "Reshape", "Slice", "ConstantOfShape", "Expand", "Range", "Transpose", "Equal",
                "Where", "Less", "Greater", "Not", "ReduceProd", "Split", "Tile", "Floor", "Ceil"}
    MAX_CONST = 1 << 20  # elements in a folded constant

    def fold_const(self, node):
        a = _attrs(node)
        ins = [self.consts.get(i) if i else None for i in node.input]
        if any(v is None for i, v in zip(node.input, ins) if i):
            raise _fail(node, "needs values that are not constants")
        op = node.op_type
        if op in P.ELEMENTWISE and all(np.issubdtype(np.asarray(v).dtype, np.floating)
                                       for v in ins if v is not None):
            fn = P.bind(op, a)
            with np.errstate(all="ignore"):
                self.consts[node.output[0]] = np.asarray(fn(*[None if v is None else np.asarray(v, np.float64)
                                                             for v in ins]))
            return
        if op not in self.FOLDABLE and op not in P.ELEMENTWISE:
            raise _fail(node, "operates on constants only; not supported")
        if any(v is not None and np.size(v) > self.MAX_CONST for v in ins):
            raise _fail(node, f"constant input larger than {self.MAX_CONST} elements")
        grows = {"ConstantOfShape": lambda: np.prod(ins[0]),
                 "Expand": lambda: np.prod(np.broadcast_shapes(np.shape(ins[0]), tuple(int(d) for d in ins[1]))),
                 "Range": lambda: (float(ins[1]) - float(ins[0])) / float(ins[2]),
                 "Tile": lambda: np.size(ins[0]) * np.prod(ins[1])}
        if op in grows:
            n = float(grows[op]())
            if not n <= self.MAX_CONST:
                raise _fail(node, f"would build a constant of {n:.3g} elements (at most {self.MAX_CONST})")
        from onnx.reference import ReferenceEvaluator

        try:
            outs = ReferenceEvaluator(node, opsets={"": self.opset}).run(
                None, {i: v for i, v in zip(node.input, ins) if i})
        except Exception as exc:
            raise _fail(node, f"constant computation failed: {type(exc).__name__}: {exc}") from None
        for name, value in zip(node.output, outs):
            if name:
                self.consts[name] = np.asarray(value)

    def op_Shape(self, node, vals, x):
        """The shape of a computed tensor is static here (batch 1, the window fixed)."""
        self.consts[node.output[0]] = _shape_value(node, x.shape)

    # -- layout
    def spatial(self, x: _Val, values):
        """ONNX spatial-axis values (kernel, strides, ...) of a Conv/Pool -> ours: (feature, time)
        for 2-D, (time,) for 1-D. A (1, C, T, F) tensor lists time first."""
        values = list(values)
        if len(x.shape) == 4 and x.t_axis == 2:
            return values[::-1]
        return values

    def need_channels_first(self, node, x: _Val):
        if x.c_axis != 1:
            raise _fail(node, f"{node.op_type} on a tensor of shape {x.shape} whose channels are on axis "
                              f"{x.c_axis}: ONNX {node.op_type} reads channels on axis 1; transpose first")

    def op_Transpose(self, node, vals, x):
        rank = len(x.shape)
        perm = list(_attrs(node).get("perm", range(rank - 1, -1, -1)))
        if x.head:
            moved = [a for a in range(rank) if perm[a] != a and x.shape[perm[a]] != 1]
            if moved:
                raise _fail(node, f"Transpose {perm} after the head moves a non-unit axis of {x.shape}")
            self.emit(vals, node, x, shape=tuple(x.shape[p] for p in perm), c_axis=perm.index(x.c_axis))
            return
        if perm[0] != 0:
            raise _fail(node, f"Transpose {perm} moves the batch axis")
        t, c = perm.index(x.t_axis), perm.index(x.c_axis)
        ok = (t, c) in ((2, 1), (1, 2)) if rank == 3 else (c == 1 and t in (2, 3))
        if not ok:
            layouts = "(1, C, T) or (1, T, C)" if rank == 3 else "(1, C, F, T) or (1, C, T, F)"
            raise _fail(node, f"Transpose {perm} of a tensor with channels on axis {x.c_axis}, time on "
                              f"{x.t_axis} gives channels on {c}, time on {t}; streamable layouts are {layouts}")
        self.emit(vals, node, x, shape=tuple(x.shape[p] for p in perm), t_axis=t, c_axis=c)

    # -- conv and friends
    def op_Conv(self, node, vals, x):
        if x.head:
            raise _fail(node, "Conv after the time axis was reduced")
        self.need_channels_first(node, x)
        a = _attrs(node)
        w = self.const(node.input[1], node, "weight").astype(np.float32)
        b = self.opt_const(node, 2)
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
            raise _fail(node, f"auto_pad={a['auto_pad']!r} is not supported; export explicit pads")
        nd = w.ndim - 2
        if nd not in (1, 2) or len(x.shape) != nd + 2:
            raise _fail(node, f"{nd}-D Conv on a tensor of shape {x.shape}")
        if nd == 2 and x.t_axis == 2:  # (1, C, T, F): our kernels are (feature, time)
            w = np.ascontiguousarray(w.transpose(0, 1, 3, 2))
        k = list(w.shape[2:])
        strides = self.spatial(x, a.get("strides", [1] * nd))
        dil = self.spatial(x, a.get("dilations", [1] * nd))
        pads = list(a.get("pads", [0] * (2 * nd)))
        lo, hi = self.spatial(x, pads[:nd]), self.spatial(x, pads[nd:])
        if x.pad is not None:  # a preceding zero Pad (F.pad(x, (k-1, 0)) before a causal conv)
            lo[-1] += x.pad[0]
            if nd == 2:
                lo[0] += x.pad[1]
                hi[0] += x.pad[1]
        group = int(a.get("group", 1))
        t_lo, t_hi = lo[-1], hi[-1]
        eff = (k[-1] - 1) * dil[-1]
        chomp = 0
        if t_lo == 0 and t_hi == 0:
            padding = "valid"
        elif t_lo == eff and t_hi == 0:
            padding = "causal"
        elif t_lo == eff and t_hi == eff and strides[-1] == 1:
            padding, chomp = "causal", eff
        else:
            raise _fail(node, f"time padding ({t_lo}, {t_hi}) with kernel {k[-1]}, dilation "
                              f"{dil[-1]}: only 0, causal ({eff}, 0), or ({eff}, {eff}) followed by "
                              f"a chomp Slice stream; other padding looks into the future")
        c_in = x.shape[1]
        try:
            if nd == 1:
                layer = L.Conv1d(c_in, w.shape[0], k[0], stride=strides[0], padding=padding,
                                 dilation=dil[0], groups=group, bias=b is not None, seed=0)
            else:
                if lo[0] != hi[0]:
                    raise _fail(node, f"feature padding must be symmetric, got {lo[0]}, {hi[0]}")
                layer = L.Conv2d(c_in, w.shape[0], tuple(k), stride=tuple(strides),
                                 padding=(lo[0], padding), dilation=tuple(dil), groups=group,
                                 bias=b is not None, seed=0)
            layer.weight = w
            if b is not None:
                layer.bias = b
        except ModelError as exc:
            raise _fail(node, str(exc)) from None
        self.emit(vals, node, x, layer, chomp=chomp)

    def op_Pad(self, node, vals, x):
        a = _attrs(node)
        mode = a.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        rank = len(x.shape)
        pads = a.get("pads")
        if pads is None:
            pads = self.const(node.input[1], node, "pads").tolist()
        pads = [int(p) for p in pads]
        value = self.opt_const(node, 2)
        axes = self.opt_const(node, 3)
        if axes is not None:  # opset 18: pads only for the listed axes
            full = [0] * (2 * rank)
            for j, ax in enumerate(int(v) % rank for v in np.ravel(axes)):
                full[ax], full[ax + rank] = pads[j], pads[j + len(pads) // 2]
            pads = full
        if mode != "constant" or (value is not None and np.any(np.asarray(value) != 0)):
            raise _fail(node, f"Pad mode {mode!r} value {value}: only zero padding streams")
        if x.head or x.pad is not None or x.c_axis != 1 or len(pads) != 2 * rank:
            raise _fail(node, f"Pad of shape {x.shape}: only zero padding of a window before a Conv")
        before, after = pads[:rank], pads[rank:]
        f = x.f_axis
        if before[0] or after[0] or before[1] or after[1] or after[x.t_axis] or \
                (f is not None and before[f] != after[f]):
            raise _fail(node, f"Pad {pads} of shape {x.shape}: only left (causal) padding of time and "
                              f"symmetric padding of features stream")
        shape = tuple(d + before[j] + after[j] for j, d in enumerate(x.shape))
        self.emit(vals, node, x, shape=shape)
        vals[node.output[0]].pad = (before[x.t_axis], before[f] if f is not None else 0)

    def op_BatchNormalization(self, node, vals, x):
        self.need_channels_first(node, x)
        a = _attrs(node)
        scale, bias, mean, var = (self.const(node.input[i], node, n).astype(np.float32)
                                  for i, n in ((1, "scale"), (2, "B"), (3, "mean"), (4, "var")))
        two_d = x.vec2d if x.head else len(x.shape) == 4
        layer = (L.BatchNorm2d if two_d else L.BatchNorm1d)(len(scale), eps=a.get("epsilon", 1e-5))
        layer.weight, layer.bias, layer.running_mean, layer.running_var = scale, bias, mean, var
        self.emit(vals, node, x, layer)

    def op_Softmax(self, node, vals, x):
        axis = _attrs(node).get("axis", -1)
        rank = len(x.shape)
        axis = axis + rank if axis < 0 else axis
        if x.head:
            others = [d for j, d in enumerate(x.shape[1:], 1) if j != axis]
            if axis != x.c_axis or any(d != 1 for d in others):
                raise _fail(node, f"Softmax over axis {axis} of shape {x.shape}: expected the channel "
                                  f"axis of a vector")
        elif axis != x.c_axis or x.f_axis is not None:
            raise _fail(node, f"Softmax over axis {axis} of shape {x.shape} before the head: only over the "
                              f"channels (axis {x.c_axis}) of 1-D frames")
        self.emit(vals, node, x, L.Softmax())

    # -- pools and heads
    def _pool(self, node, vals, x, op):
        if x.head:
            raise _fail(node, "pooling after the time axis was reduced")
        self.need_channels_first(node, x)
        a = _attrs(node)
        k = self.spatial(x, a["kernel_shape"])
        nd = len(k)
        strides = self.spatial(x, a.get("strides", [1] * nd))
        if any(p for p in a.get("pads", [])) or a.get("ceil_mode", 0):
            raise _fail(node, "pooling with padding or ceil_mode=1 does not stream; use pads 0")
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
            raise _fail(node, "auto_pad is not supported")
        dil = self.spatial(x, a.get("dilations", [1] * nd))
        if nd == 1:
            layer = (L.MaxPool1d(k[0], strides[0], dil[0]) if op == "max"
                     else L.AvgPool1d(k[0], strides[0]))
            if op == "avg" and dil[0] != 1:
                raise _fail(node, "dilated average pooling is not supported")
        else:
            if any(d != 1 for d in dil):
                raise _fail(node, "dilated 2-D pooling is not supported")
            layer = (L.MaxPool2d if op == "max" else L.AvgPool2d)(tuple(k), tuple(strides))
        self.emit(vals, node, x, layer)
        spans = ([x.shape[x.f_axis]] if nd == 2 else []) + [x.shape[x.t_axis]]
        if list(k) == spans and all(d == 1 for d in dil):  # AdaptiveXxxPool(1) exports this way
            vals[node.output[0]].spans_window = op

    def op_MaxPool(self, node, vals, x):
        if len(node.output) > 1 and node.output[1]:
            raise _fail(node, "MaxPool indices output is not supported")
        self._pool(node, vals, x, "max")

    def op_AveragePool(self, node, vals, x):
        self._pool(node, vals, x, "avg")

    def _global(self, node, vals, x, op, keepdims=True):
        if x.head:
            raise _fail(node, "global pooling after the time axis was reduced")
        c_axis = self.head_axes(node, x, keepdims, drop=[x.f_axis])
        self.emit(vals, node, x, L.GlobalMaxPool() if op == "max" else L.GlobalAvgPool(), head=True,
                  c_axis=c_axis)

    def op_GlobalAveragePool(self, node, vals, x):
        self.need_channels_first(node, x)
        self._global(node, vals, x, "avg")

    def op_GlobalMaxPool(self, node, vals, x):
        self.need_channels_first(node, x)
        self._global(node, vals, x, "max")

    def _reduce(self, node, vals, x, op):
        a = _attrs(node)
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self.const(node.input[1], node, "axes").tolist()
        rank = len(x.shape)
        axes = sorted(int(v) % rank for v in (axes if axes is not None else range(rank)))
        want = sorted(a for a in (x.t_axis, x.f_axis) if a is not None)
        if x.head or axes != want:
            raise _fail(node, f"reduction over axes {axes} of shape {x.shape}: only over time "
                              f"(and features) of the window, i.e. axes {want}")
        self._global(node, vals, x, op, keepdims=bool(a.get("keepdims", 1)))

    def op_ReduceMean(self, node, vals, x):
        self._reduce(node, vals, x, "avg")

    def op_ReduceMax(self, node, vals, x):
        self._reduce(node, vals, x, "max")

    def _last_frame(self, node, vals, x, keepdims=True):
        self.emit(vals, node, x, L.LastFrame(), head=True, c_axis=self.head_axes(node, x, keepdims),
                  vec2d=x.f_axis is not None)

    def op_Slice(self, node, vals, x):
        a = _attrs(node)
        if len(node.input) > 1:
            starts = self.const(node.input[1], node, "starts").tolist()
            ends = self.const(node.input[2], node, "ends").tolist()
            axes = self.opt_const(node, 3)
            steps = self.opt_const(node, 4)
        else:
            starts, ends, axes, steps = a["starts"], a["ends"], a.get("axes"), None
        rank = len(x.shape)
        axes = list(range(len(starts))) if axes is None else [int(v) % rank for v in np.ravel(axes)]
        steps = [1] * len(starts) if steps is None else np.ravel(steps).tolist()
        if x.head or axes != [x.t_axis] or steps != [1]:
            raise _fail(node, f"Slice on axes {axes} (steps {steps}) of shape {x.shape}: only "
                              f"slices of the time axis ({x.t_axis}) are supported")
        t = x.shape[x.t_axis]
        lo, hi = int(starts[0]), int(ends[0])
        lo = max(0, min(t, lo + t if lo < 0 else lo))
        hi = max(0, min(t, hi + t if hi < 0 else hi))

        def with_time(n):
            return tuple(n if j == x.t_axis else d for j, d in enumerate(x.shape))
        if x.chomp:
            if lo == 0 and hi == t - x.chomp:
                self.emit(vals, node, x, shape=with_time(hi))
                return
            raise _fail(node, f"expected the causal chomp [0:{t - x.chomp}] after a symmetric-padded "
                              f"Conv, got [{lo}:{hi}]")
        if lo == 0 and hi == t:
            self.emit(vals, node, x)
        elif hi == t and lo == t - 1:
            self._last_frame(node, vals, x)
            # ... unless it turns out to be a residual skip cropped to one position
            vals[node.output[0]].sliced_from = (t, x.t_axis)
        elif hi == t and 0 < lo < t:
            vals[node.output[0]] = _Val(x.layers + (_Crop(lo, node.name),), with_time(t - lo),
                                        node=node.name, t_axis=x.t_axis, c_axis=x.c_axis)
        else:
            raise _fail(node, f"time slice [{lo}:{hi}] of {t} positions: only the last frame, a "
                              f"causal chomp, or a crop keeping the newest positions stream")

    def op_Gather(self, node, vals, x):
        axis = _attrs(node).get("axis", 0)
        rank = len(x.shape)
        idx = self.const(node.input[1], node, "indices")
        if x.head or axis % rank != x.t_axis or idx.size != 1 or \
                int(idx.ravel()[0]) % x.shape[x.t_axis] != x.shape[x.t_axis] - 1:
            raise _fail(node, "Gather is supported only for the last frame of the time axis")
        self._last_frame(node, vals, x, keepdims=idx.ndim > 0)

    # -- shape ops
    def op_Flatten(self, node, vals, x):
        if _attrs(node).get("axis", 1) != 1:
            raise _fail(node, "only Flatten(axis=1) is supported")
        self._flatten(node, vals, x)

    @staticmethod
    def globalize(x: _Val) -> _Val:
        """A pool whose kernel spans the window, read as a vector: the global pool (a running
        sum / max over the window instead of a window-sized pool every frame)."""
        if not x.spans_window:
            return x
        pool = L.GlobalMaxPool() if x.spans_window == "max" else L.GlobalAvgPool()
        return _Val(x.layers[:-1] + (pool,), x.shape, head=True, node=x.node, c_axis=x.c_axis)

    def _flatten(self, node, vals, x):
        x = self.globalize(x)
        if not x.head:
            perm = None
            if not x.time_last:  # ONNX flattens in its axis order, ours is (C[, F], T)
                ours = [x.c_axis] + ([x.f_axis] if x.f_axis is not None else []) + [x.t_axis]
                index = np.arange(int(np.prod(x.shape))).reshape(tuple(x.shape[a] for a in ours))
                perm = np.moveaxis(index, list(range(len(ours))), [a - 1 for a in ours]).reshape(-1)
            self.emit(vals, node, x, L.Flatten(), head=True, c_axis=1, flat_perm=perm)
        elif x.vec2d:  # (1, C, F) after LastFrame on 2-D frames
            if x.c_axis != 1:
                raise _fail(node, f"Flatten of {x.shape} with channels on axis {x.c_axis}")
            self.emit(vals, node, x, L.Flatten(), c_axis=1, vec2d=False)
        else:
            self.emit(vals, node, x, c_axis=1)

    def op_Reshape(self, node, vals, x):
        target = self.const(node.input[1], node, "shape").tolist()
        out = self.shape(node.output[0])
        if out is None or len(out) != 2 or out[0] != 1:
            raise _fail(node, f"only reshapes to (1, N) are supported, got target {target}")
        self._flatten(node, vals, x)

    def _squeeze(self, node, vals, x):
        x = self.globalize(x)
        if not x.head:
            raise _fail(node, "Squeeze/Unsqueeze before the head is not supported")
        out = self.shape(node.output[0])
        nonunit = [j for j, d in enumerate(out or ()) if d != 1]
        self.emit(vals, node, x, c_axis=nonunit[-1] if len(nonunit) == 1 and nonunit[-1] > 0 else 1)

    op_Squeeze = _squeeze
    op_Unsqueeze = _squeeze

    def _vector_weight(self, node, x, w_in_out):
        """Weight (in, out) of a Gemm/MatMul on the flattened vector, in our order."""
        if x.flat_perm is not None:
            ours = np.empty_like(w_in_out)
            ours[x.flat_perm] = w_in_out
            return ours
        return w_in_out

    def op_Gemm(self, node, vals, x):
        a = _attrs(node)
        if not x.head:
            raise _fail(node, "Gemm before the head: use Flatten/GlobalAveragePool first")
        if a.get("transA", 0) or node.input[0] != x_name(node, vals):
            raise _fail(node, "Gemm with transA or a constant A is not supported")
        w = self.const(node.input[1], node, "B").astype(np.float64) * a.get("alpha", 1.0)
        if a.get("transB", 0):
            w = w.T
        w = self._vector_weight(node, x, w).T
        b = self.opt_const(node, 2)
        layer = L.Linear(w.shape[1], w.shape[0], bias=b is not None, seed=0)
        layer.weight = w
        if b is not None:
            layer.bias = np.broadcast_to(np.asarray(b, np.float64) * a.get("beta", 1.0), (w.shape[0],))
        self.emit(vals, node, x, layer, c_axis=1, vec2d=False)

    def op_MatMul(self, node, vals, x):
        if node.input[0] != x_name(node, vals):
            raise _fail(node, "MatMul is supported as x @ W with constant W")
        w = self.const(node.input[1], node, "weight")
        if w.ndim != 2:
            raise _fail(node, f"MatMul weight must be 2-D, got {w.shape}")
        if x.c_axis != len(x.shape) - 1 and not (x.head and sum(d != 1 for d in x.shape[1:]) <= 1):
            raise _fail(node, f"MatMul contracts the last axis of {x.shape}, but the channels are on "
                              f"axis {x.c_axis}")
        if not x.head and x.f_axis is not None:
            raise _fail(node, "a per-frame MatMul is supported on 1-D frames (1, T, C) only")
        layer = L.Linear(w.shape[0], w.shape[1], bias=False, seed=0)
        layer.weight = self._vector_weight(node, x, np.asarray(w, np.float64)).T
        self.emit(vals, node, x, layer)

    # -- per-frame elementwise subgraphs
    def root_of(self, name, vals) -> str:
        v = vals[name]
        return v.root if v.expr is not None else name

    def is_residual(self, node, vals) -> bool:
        """An Add of two computed tensors from different roots joins two branches."""
        dyn = [i for i in node.input if i in vals]
        return len(dyn) == 2 and self.root_of(dyn[0], vals) != self.root_of(dyn[1], vals)

    def channel_axis(self, val) -> int:
        return val.c_axis

    def per_channel(self, c, root: _Val, node) -> np.ndarray:
        """A constant operand as float64, shaped to broadcast per channel against `root`."""
        c = np.asarray(c, np.float64)
        if c.ndim == 0 or c.size == 1:
            return c.reshape(())
        shape = root.shape
        try:
            full = np.broadcast_to(c, np.broadcast_shapes(c.shape, shape))
        except ValueError:
            raise _fail(node, f"constant of shape {c.shape} does not broadcast to {shape}") from None
        if full.shape != tuple(shape):
            raise _fail(node, f"constant of shape {c.shape} broadcasts the tensor {shape} to {full.shape}")
        ax = self.channel_axis(root)
        moved = np.moveaxis(full, ax, 0).reshape(shape[ax], -1)
        if not np.all(moved == moved[:, :1]):
            raise _fail(node, "elementwise constants must be per channel (the same for every frame "
                              "and feature)")
        keep = [1] * len(shape)
        keep[ax] = shape[ax]
        return moved[:, 0].reshape(keep)

    def pointwise(self, node, vals):
        """Collect an elementwise node into its root tensor's pending expression."""
        dyn = [i for i in node.input if i in vals]
        roots = {self.root_of(i, vals) for i in dyn}
        if len(roots) != 1:
            raise _fail(node, f"elementwise {node.op_type} of two tensors computed on different "
                              f"branches is not supported (only a residual Add joins branches)")
        root_name = roots.pop()
        root = vals[root_name]
        if root.chomp:
            raise _fail(node, f"follows a Conv with symmetric time padding; expected a Slice "
                              f"removing its last {root.chomp} positions (causal chomp)")
        if any(isinstance(lay, _Crop) for lay in root.layers[-1:]):
            raise _fail(node, "a time crop (Slice) may only feed a residual Add")
        fn = P.bind(node.op_type, _attrs(node))
        if fn is None:
            raise _fail(node, f"unsupported attributes {_attrs(node)}")
        args = []
        for i, name in enumerate(node.input):
            if node.op_type == "Dropout" and i > 0:
                break
            if not name:  # an omitted optional input (e.g. Clip without min)
                args.append(None)
            elif name in vals:
                v = vals[name]
                args.append(v.expr if v.expr is not None else P.Expr(None))
            else:
                args.append(self.per_channel(self.const(name, node, f"input {i}"), root, node))
        out_shape = self.shape(node.output[0])
        if out_shape is not None and None not in out_shape and tuple(out_shape) != tuple(root.shape):
            raise _fail(node, f"elementwise {node.op_type} changes the shape {root.shape} to {out_shape}")
        expr = P.Expr(fn, args, node.op_type, (node.name or node.op_type,))
        vals[node.output[0]] = _Val(root.layers, root.shape, head=root.head, node=node.name,
                                    expr=expr, root=root_name, t_axis=root.t_axis, c_axis=root.c_axis,
                                    flat_perm=root.flat_perm, vec2d=root.vec2d)

    def materialize(self, name, vals) -> _Val:
        """Turn a pending expression into layers: a BatchNorm-form scale/shift + an activation."""
        v = vals[name]
        if v.expr is None:
            return v
        root = vals[v.root]
        ax = self.channel_axis(root)
        var_shape = tuple(root.shape[ax] if i == ax else 1 for i in range(1, len(root.shape)))
        nodes = v.expr.all_nodes()
        try:
            steps = P.identify(v.expr, var_shape)
        except P.Unidentified as exc:
            raise ModelFormatError(f"ONNX nodes {nodes}: the elementwise subgraph on {v.root!r} does not "
                                   f"convert: {exc}") from None
        layers = root.layers
        for scale, shift, act in steps:
            if scale is not None or shift is not None:
                layers = layers + (self.affine_layer(root, scale, shift),)
            if act is not None:
                layers = layers + (act,)
        vals[name] = out = _Val(layers, root.shape, head=root.head, node=v.node, t_axis=root.t_axis,
                                c_axis=root.c_axis, vec2d=root.vec2d)
        return out

    def affine_layer(self, root, scale, shift):
        """y = x * scale + shift per channel, as a BatchNorm (the planner folds it into the
        producing Conv/Linear when it can, or runs it as its own op)."""
        n = root.shape[self.channel_axis(root)]
        two_d = root.vec2d if root.head else len(root.shape) == 4
        layer = (L.BatchNorm2d if two_d else L.BatchNorm1d)(n, eps=2.0 ** -20)
        layer.weight = np.ones(n) if scale is None else np.broadcast_to(scale, (n,))
        layer.bias = np.zeros(n) if shift is None else np.broadcast_to(shift, (n,))
        layer.running_var = np.full(n, 1.0 - 2.0 ** -20)  # var + eps == 1 exactly in float32
        return layer

    @staticmethod
    def as_crop(v: _Val, other: _Val) -> _Val:
        """A last-frame Slice added to a one-position window is a right-aligned crop."""
        if v.sliced_from is None or other.head or other.shape != v.shape:
            return v
        t, t_axis = v.sliced_from
        if other.t_axis != t_axis or other.shape[t_axis] != 1:
            return v
        return _Val(v.layers[:-1] + (_Crop(t - 1, v.node),), v.shape, node=v.node, t_axis=t_axis,
                    c_axis=v.c_axis)

    def op_Add(self, node, vals, x):  # reached only for an Add joining two branches
        self.residual(node, vals)

    def residual(self, node, vals):
        a, b = (self.as_crop(vals[node.input[i]], vals[node.input[1 - i]]) for i in (0, 1))
        if a.head or b.head:
            raise _fail(node, "Add of two tensors after the head is not supported")
        n = 0
        while n < min(len(a.layers), len(b.layers)) and a.layers[n] is b.layers[n]:
            n += 1
        prefix, ra, rb = a.layers[:n], list(a.layers[n:]), list(b.layers[n:])
        # The branch without time layers (after dropping a right-aligned crop) is the skip.
        def strip(branch):
            return [lay for lay in branch if not isinstance(lay, _Crop)]

        def is_skip(branch):
            s = _fold_into_first(strip(branch))
            return len(s) == 0 or (len(s) == 1 and isinstance(s[0], L.Linear)) or \
                (len(s) == 1 and isinstance(s[0], (L.Conv1d, L.Conv2d)) and s[0].k_t == 1 and s[0].s_t == 1)

        if is_skip(rb) and not (is_skip(ra) and len(strip(ra)) < len(strip(rb))):
            body, skip = ra, rb
        elif is_skip(ra):
            body, skip = rb, ra
        else:
            raise _fail(node, "residual Add: one branch must be the identity, a 1x1 Conv or a per-frame Linear")
        if any(isinstance(lay, _Crop) for lay in body):
            raise _fail(node, "residual Add: the time crop must be on the skip branch")
        body = strip(body)
        if not body:
            raise _fail(node, "residual Add of a tensor with itself is not supported")
        skip = _fold_into_first(strip(skip))
        try:
            block = M.Residual(body, skip[0] if skip else None)
        except ModelError as exc:
            raise _fail(node, str(exc)) from None
        out = self.shape(node.output[0])
        if out is not None and None not in out and out != a.shape and out != b.shape:
            raise _fail(node, f"residual Add broadcasts {a.shape} and {b.shape}; expected equal shapes")
        if (a.t_axis, a.c_axis) != (b.t_axis, b.c_axis):
            raise _fail(node, f"residual Add of {a.shape} and {b.shape} in different layouts (time on "
                              f"axes {a.t_axis} and {b.t_axis})")
        if a.shape[a.t_axis] != b.shape[b.t_axis]:
            raise _fail(node, f"residual Add of {a.shape} and {b.shape}: crop the skip branch to the "
                              f"newest {min(a.shape[a.t_axis], b.shape[b.t_axis])} positions with a Slice")
        vals[node.output[0]] = _Val(prefix + (block,), a.shape, node=node.name, t_axis=a.t_axis,
                                    c_axis=a.c_axis)


def x_name(node, vals):
    return next(i for i in node.input if i in vals)


def _fold_into_first(branch: list) -> list:
    """[Linear or Conv, BatchNorm...] -> [the layer with the affines folded in] (a skip branch
    whose bias the exporter wrote as a separate Add)."""
    if len(branch) < 2 or not isinstance(branch[0], (L.Linear, L.Conv1d, L.Conv2d)) or \
            not all(isinstance(lay, L._BatchNorm) for lay in branch[1:]):
        return branch
    import copy

    first = copy.copy(branch[0])
    w = first.weight.astype(np.float64)
    b = np.zeros(w.shape[0]) if first.bias is None else first.bias.astype(np.float64)
    for bn in branch[1:]:
        scale, shift = bn.scale_shift()
        w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
        b = b * scale + shift
    if first.bias is None:  # the layer object fixes whether a bias exists
        first = type(first)(**{**first.config(), "bias": True})
    first.weight, first.bias = w, b
    return [first]
