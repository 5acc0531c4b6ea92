"""Import an ONNX window network as a graph :class:`~deepshift_edge.Model`.

The ONNX graph maps one window, ``(1, C, W)`` for 1-D frames or ``(1, C, F, W)`` for 2-D
frames (or a layout with time elsewhere, see ``time_axis``), to an output. Every ONNX value
computed from the input becomes a tensor of the graph model; the converter tracks what each
of its axes is (batch, channels, features, time, or a size-1 axis the engine does not
store), folds what is constant (weights, shape arithmetic, pads computed at run time), and
identifies elementwise subgraphs by what they compute (:mod:`.onnx_pointwise`). The result
is checked (stream vs offline reference on random input, dense and decimated) before it is
returned.

Only the ``onnx`` package is needed (imported when :func:`from_onnx` is called), never
onnxruntime. Supported ops: ``SUPPORTED_OPS``; the first unsupported op of the graph is
named before anything else is said (:class:`~deepshift_edge.ModelFormatError`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Dict, Optional

import numpy as np

from ..errors import ModelError, ModelFormatError
from ..nn import layers as L
from ..nn import merge as M
from . import onnx_pointwise as P

__all__ = ["from_onnx", "SUPPORTED_OPS", "TIME_AXIS_NAMES"]

SUPPORTED_OPS = (
    "Conv (1-D/2-D; strides, dilations, groups; any zero padding: pads, auto_pad SAME_UPPER/"
    "SAME_LOWER/VALID, a Pad node before it)", "BatchNormalization",
    "Relu, Clip, LeakyRelu, PRelu, Elu, Celu, Selu, Sigmoid, Tanh, HardSwish, HardSigmoid, "
    "Softplus, Softsign, Gelu, Identity, Dropout",
    "Softmax (over channels: of each 1-D frame, or of the vector after the head)",
    "Transpose (any order of batch, channel, feature, time and size-1 axes)",
    "MaxPool / AveragePool (pads, auto_pad, ceil_mode, count_include_pad; dilated 1-D max)",
    "GlobalAveragePool, GlobalMaxPool, ReduceMean / ReduceMax / ReduceSum over time (and "
    "features): the head; ReduceSum / ReduceMean over a stack of branches (torch.stack(...).sum)",
    "Add / Sub / Mul / Sum / Mean of computed tensors (residuals, skip sums, gates)",
    "Cast to float or double (the identity)",
    "Concat over channels (Inception) or along a new size-1 axis (torch.stack)",
    "Split / Slice / Gather on channels (torch.chunk) and on time (crops, chomps, the last frame)",
    "Pad (zeros, on time and features; negative pads crop)",
    "Reshape / Flatten: per frame (C, F) -> C*F channels, the whole window, or the vector",
    "Squeeze / Unsqueeze of size-1 axes (before and after the head)",
    "per-frame elementwise subgraphs of Add/Sub/Mul/Div/Pow/Sqrt/Exp/Log/Neg/Abs/Reciprocal/"
    "Erf/Tanh/Sigmoid/Relu/Clip/Max/Min with per-channel constants, identified numerically as "
    "a per-channel scale and shift followed by one engine activation (GELU at opset < 20, "
    "SiLU as x*Sigmoid(x), decomposed BatchNorm, ...)",
    "Gemm / MatMul (after the head; MatMul also per frame on (1, T, C))",
    "Shape and constant subgraphs (folded)",
)

RECURRENT = ("GRU", "LSTM", "RNN")

# Axis roles of a tensor's ONNX axes.
B, C, F_, T, U, K = "b", "c", "f", "t", "1", "k"  # batch, channels, features, time, size 1, stack


@dataclass
class _Val:
    """What the converter knows about one ONNX value computed from the graph input."""

    tensor: object                # the graph-model Tensor (None while pending)
    shape: tuple                  # ONNX shape (batch axis included)
    roles: tuple                  # one of B, C, F_, T, U, K per ONNX axis
    node: str = ""
    expr: Optional[P.Expr] = None  # pending elementwise expression over the value `root`
    root: str = ""
    pad: Optional[dict] = None    # pending zero Pad over `tensor`: {role: (before, after)}
    flat_perm: Optional[np.ndarray] = None  # flattened window in ONNX order = ours[flat_perm]
    spans_window: str = ""        # a pool over the whole window ("max"/"avg")
    stack: Optional[list] = None  # Concat along a new size-1 axis: the stacked tensors
    conv: Optional[tuple] = None  # (layer, input tensor, node name, ONNX output): the Conv that made it
    pool_src: object = None       # a pool spanning the window: the tensor it pools

    @property
    def head(self) -> bool:
        return T not in self.roles

    def axis(self, role) -> Optional[int]:
        return self.roles.index(role) if role in self.roles else None

    @property
    def two_d(self) -> bool:
        return F_ in self.roles

    @property
    def pending(self) -> bool:
        return self.tensor is None or self.pad is not None


def _decode(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, (list, tuple)):
        return type(v)(_decode(x) for x in v)
    return v


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: _decode(helper.get_attribute_value(a)) for a in node.attribute}


def _fail(node, msg) -> ModelFormatError:
    return ModelFormatError(f"ONNX node {node.name or '<unnamed>'!r} ({node.op_type}): {msg}")


def from_onnx(model, window: Optional[int] = None, *, time_axis=None, check: bool = True,
              return_report: bool = False, seed: int = 0, semantics: str = "window", labels=None,
              metadata=None):
    """Convert an ONNX window network (a path, bytes, or an ``onnx.ModelProto``) into a graph
    :class:`~deepshift_edge.Model`.

    ``window``: the window ``W`` in frames; default: the (static) time length of the graph
    input. ``time_axis``: which input axis is time, as an index or as the name of a symbolic
    dimension; default: the one axis named like time (``TIME_AXIS_NAMES``, e.g. ``"time"``,
    ``"frames"``, ``"T"``), else the last. Accepted inputs: ``(1, C, T)``, ``(1, T, C)``
    (channels last), ``(1, C, F, T)`` and ``(1, C, T, F)``. A graph whose output keeps the
    time axis gives its newest position per window (``semantics='window'``), or every position
    of the recording (``semantics='sequence'``, docs/semantics.md). With ``check=True`` the
    converted model is streamed on random input (dense and decimated) and compared with its
    offline reference; ``return_report=True`` returns ``(model, report_text)``. ``labels``
    (class names) and ``metadata`` are validated and set on the model, for ``dse.save`` to keep.

    A graph that cannot be converted raises :class:`ModelFormatError` (never a protobuf or
    indexing error from deep inside the conversion); a missing file raises OSError.

    An already-quantized graph (QDQ: QuantizeLinear/DequantizeLinear around its ops, as
    onnxruntime's ``quantize_static`` writes it) gives a :class:`~deepshift_edge.QuantizedModel`
    with the file's own scales, zero points, int8 weights and biases (its ``.model`` is the
    float network with the dequantized weights): :mod:`deepshift_edge.convert.onnx_qdq`.
    """
    from .onnx_qdq import Q_OPS, from_onnx_qdq

    try:
        proto = _load_proto(model)
        if any(n.op_type in Q_OPS for n in proto.graph.node):
            if semantics != "window":
                raise ModelFormatError("a quantized (QDQ) graph converts with semantics='window' only: "
                                       "int8 streaming covers window models")
            return from_onnx_qdq(proto, window, time_axis=time_axis, check=check,
                                 return_report=return_report, seed=seed, labels=labels, metadata=metadata)
        model = proto
        result = _from_onnx(model, window, time_axis, check=check, return_report=return_report,
                            seed=seed, semantics=semantics)
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


def _load_proto(model):
    import onnx

    if isinstance(model, (bytes, bytearray)):
        return onnx.load_from_string(bytes(model))
    if isinstance(model, onnx.ModelProto):
        return model
    try:
        return onnx.load(model)
    except OSError:
        raise
    except Exception as exc:
        raise ModelFormatError(f"{model}: not a readable ONNX model: {exc}") from None


def _from_onnx(model, window, time_axis, *, check, return_report, seed, semantics, hooks=None):
    """The conversion. ``hooks`` (the QDQ importer's, :mod:`.onnx_qdq`): an object whose
    ``barriers`` (ONNX value names) are made graph nodes of their own rather than merged into
    an elementwise expression, and whose ``trace`` dict is filled with {ONNX value name:
    model node name} for every value that is one of the returned model's nodes."""
    from ..formats.npz import LIMITS
    from ..nn.graph import SEMANTICS, Input, Model

    try:
        import onnx
        from onnx import numpy_helper, shape_inference
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("from_onnx needs the 'onnx' package: pip install onnx") from exc
    if semantics not in SEMANTICS:
        raise ModelFormatError(f"semantics must be 'window' or 'sequence', got {semantics!r}")

    proto = _load_proto(model)
    graph = proto.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ModelFormatError(f"expected one graph input (a window), got {[i.name for i in inputs]}")
    if len(graph.output) != 1:
        raise ModelFormatError(f"expected one graph output, got {[o.name for o in graph.output]}")
    inp = inputs[0]
    early = _first_unsupported(graph, inp.name, foldable_too=False)  # before any layout complaint
    if early is not None:
        raise early
    in_dims = inp.type.tensor_type.shape.dim
    dims = [d.dim_value if d.HasField("dim_value") else None for d in in_dims]
    names = [d.dim_param if d.HasField("dim_param") else "" for d in in_dims]
    if len(dims) not in (3, 4):
        raise _first_unsupported(graph, inp.name) or ModelFormatError(
            f"graph input {inp.name!r}: expected (1, C, W) or (1, C, F, W), got {len(dims)} dims")
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
            proto = _infer_shapes(proto)
        except ModelFormatError:
            raise
        except Exception as exc:
            raise _first_unsupported(proto.graph, inp.name) or ModelFormatError(
                f"ONNX shape inference failed: {exc}") from None
        shapes = {}
        for vi in list(proto.graph.value_info) + list(proto.graph.output) + list(proto.graph.input):
            t = vi.type.tensor_type
            if t.HasField("shape"):
                shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
        if not folded:
            break
    pool_attrs = _ceil_pools_for_inference(proto, shapes)
    if pool_attrs:
        del proto.graph.value_info[:]  # inferred with the old attributes: infer them again
        for o in proto.graph.output:
            o.type.tensor_type.ClearField("shape")
        try:
            proto = _infer_shapes(proto)
        except ModelFormatError:
            raise
        except Exception as exc:
            raise ModelFormatError(f"ONNX shape inference failed: {exc}") from None
        shapes = {}
        for vi in list(proto.graph.value_info) + list(proto.graph.output) + list(proto.graph.input):
            t = vi.type.tensor_type
            if t.HasField("shape"):
                shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
    graph = proto.graph
    bad = _first_unsupported(graph, inp.name)
    if bad is not None:
        raise bad
    rank = len(dims)
    if rank == 3:
        roles = (B, C, T) if t_axis == 2 else (B, T, C)
        in_features = other[0]
    else:
        roles = (B, C, F_, T) if t_axis == 3 else (B, C, T, F_)
        in_features = (other[0], other[1])
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}  # with the folded ones
    conv = _Converter(inits, shapes, numpy_helper, opset, graph)
    conv.pool_attrs = pool_attrs
    if hooks is not None:
        conv.barriers = set(hooks.barriers)
    x = Input(in_features, name=conv.unique(inp.name or "input"))
    vals: Dict[str, _Val] = {inp.name: _Val(x, tuple(fixed), roles, node=inp.name)}
    for node in graph.node:
        conv.node(node, vals)
    out = graph.output[0].name
    if out not in vals:
        raise ModelFormatError(f"graph output {out!r} does not depend on the input")
    result = conv.globalize(conv.materialize(out, vals))
    if result.stack is not None:
        raise ModelFormatError(f"the graph output is a stack of {len(result.stack)} branches; sum or "
                               f"average them (ReduceSum/ReduceMean over the stacked axis)")
    try:
        model = Model(x, result.tensor, window=int(window), semantics=semantics)
    except ModelError as exc:
        raise ModelFormatError(f"the converted graph does not form a valid model: {exc}") from None
    conv.check_shapes(model)
    graph_model = model
    model = _as_sequential(model, in_features, int(window), semantics)
    if hooks is not None:
        _trace(vals, graph_model, model, hooks.trace)
    notes = []
    want = tuple(d for d in shapes.get(out, ()) if d is not None)
    got_shape = tuple(model.output_shape)
    per_window = int(np.prod(want)) if want else None
    if not result.head and want:
        per_window = int(np.prod(want)) // max(1, result.shape[result.axis(T)])
    if not result.head and semantics == "window" and want:
        notes.append(f"  the graph outputs every position ({result.shape[result.axis(T)]} per window); "
                     f"the stream gives the newest one (semantics='window')")
    if per_window is not None and per_window != int(np.prod(got_shape)):
        raise ModelFormatError(f"converted model gives output shape {got_shape}, the ONNX graph {want}")
    report = _check(model, seed, notes) if check else "\n".join(
        [f"converted: {len(model.layers)} layers"] + notes)
    return (model, report) if return_report else model


def _trace(vals, graph_model, model, trace):
    """{ONNX value: node name in `model`} for the values that are nodes of `graph_model`
    (`model` is the same graph, perhaps rebuilt as a Sequential: same node order)."""
    index = {n.name: i for i, n in enumerate(graph_model.nodes)}
    for name, v in vals.items():
        t = v.tensor
        if t is None or v.stack is not None or t._source.name not in index:
            continue
        trace[name] = model.nodes[index[t._source.name]].name


def _as_sequential(model, in_features, window, semantics):
    """A chain-shaped graph as the :class:`~deepshift_edge.Sequential` it is (same layers,
    same computation), so that everything written for layer stacks applies to it."""
    from ..nn.sequential import Sequential

    nodes = model.nodes[:-1] if model._implicit_head else model.nodes
    for i, node in enumerate(nodes[1:], start=1):
        if node.inputs != (i - 1,):
            return model
    try:
        return Sequential([n.layer for n in nodes[1:]], in_features=in_features, window=window,
                          semantics=semantics)
    except ModelError:  # pragma: no cover - the same layers formed a Model
        return model


def _dynamic_nodes(graph, input_name) -> list:
    """Nodes whose inputs depend on the graph input, in graph order."""
    live, out = {input_name}, []
    for node in graph.node:
        if any(i in live for i in node.input if i):
            out.append(node)
            live.update(o for o in node.output if o)
    return out


def _first_unsupported(graph, input_name, foldable_too=True) -> Optional[ModelFormatError]:
    """The first node computed from the input whose op the converter does not know, as an
    error (named before any complaint about layouts or shapes), or None. ``foldable_too=False``
    (before constant folding) skips the ops of shape arithmetic, which folding may remove."""
    for node in _dynamic_nodes(graph, input_name):
        op = node.op_type
        if not foldable_too and op in _Converter.FOLDABLE:
            continue
        if node.domain not in ("", "ai.onnx") or not _Converter.handles(op):
            if op in RECURRENT:
                return _fail(node, f"unsupported op {op!r}: recurrent layers (GRU, LSTM, RNN) do not "
                                   f"stream here; deepshift_edge streams convolutional networks (a "
                                   f"CNN front end converts on its own: export the part before the "
                                   f"{op})")
            domain = f" (domain {node.domain!r})" if node.domain not in ("", "ai.onnx") else ""
            return _fail(node, f"unsupported op {op!r}{domain}; supported: {', '.join(SUPPORTED_OPS)}")
    return None


def _fold_constant_nodes(proto, numpy_helper, opset, shapes) -> bool:
    """Replace nodes that compute only from constants (exporters build pads and shapes that
    way), and Shape of tensors whose inferred shape is static, by initializers, in place.
    A node that cannot be folded stays for the converter to report. True if any folded."""
    graph = proto.graph
    folder = _Converter({t.name: numpy_helper.to_array(t) for t in graph.initializer}, {}, numpy_helper,
                        opset, None)
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


def _infer_shapes(proto):
    """onnx's shape inference, guarded: onnx aborts the process (a C++ assertion, no exception)
    when a Slice reads a tensor with a negative or empty axis, e.g. after a Conv whose kernel is
    longer than the window. A first pass with every Slice read as Identity finds such axes and
    refuses the graph, naming the node."""
    from onnx import shape_inference

    probe = type(proto).FromString(proto.SerializeToString())
    for node in probe.graph.node:
        if node.op_type == "Slice":
            del node.input[1:]
            del node.attribute[:]
            node.op_type = "Identity"
    del probe.graph.value_info[:]
    probe = shape_inference.infer_shapes(probe, strict_mode=False, data_prop=True)
    producer = {o: n for n in probe.graph.node for o in n.output}
    for vi in probe.graph.value_info:
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        if any(d is not None and d <= 0 for d in dims) and vi.name in producer:
            node = producer[vi.name]
            raise _fail(node, f"its output would have shape {tuple(dims)}: an axis with no positions (is the "
                              f"window shorter than the kernel? pass a longer window=)")
    return shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)


def _ceil_pools_for_inference(proto, shapes) -> Dict[str, dict]:
    """ceil_mode pools whose last window would start in the right padding: PyTorch and
    onnxruntime drop that window, onnx's shape inference counts it (and so every shape after
    it is off by one). Such a node gets ``ceil_mode=0`` and just enough right padding for
    inference to count PyTorch's windows; its own attributes are returned (by output name)
    for the conversion, which follows PyTorch."""
    from ..nn.spec import output_length

    original = {}
    for node in proto.graph.node:
        if node.op_type not in ("MaxPool", "AveragePool"):
            continue
        a = _attrs(node)
        x, y = shapes.get(node.input[0]), shapes.get(node.output[0]) if node.output else None
        if not a.get("ceil_mode") or a.get("auto_pad", "NOTSET") != "NOTSET" or not x or not y \
                or None in x or None in y or "kernel_shape" not in a:
            continue
        k = list(a["kernel_shape"])
        nd = len(k)
        if len(x) != nd + 2 or len(y) != nd + 2:
            continue
        s, d = list(a.get("strides", [1] * nd)), list(a.get("dilations", [1] * nd))
        pads = [int(p) for p in a.get("pads", [0] * (2 * nd))]
        ours = [output_length(x[2 + j], k[j], d[j], s[j], pads[j], pads[j + nd], True) for j in range(nd)]
        if list(y[2:]) == ours or min(ours) < 1:
            continue
        # ceil_mode=0 on every axis, with the right padding that gives PyTorch's count
        new = list(pads)
        for j in range(nd):
            new[j + nd] = max(0, (ours[j] - 1) * s[j] + (k[j] - 1) * d[j] + 1 - x[2 + j] - pads[j])
        if [output_length(x[2 + j], k[j], d[j], s[j], new[j], new[j + nd], False) for j in range(nd)] == ours:
            from onnx import helper

            original[node.output[0]] = {"ceil_mode": 1, "pads": pads}
            keep = [att for att in node.attribute if att.name not in ("ceil_mode", "pads")]
            del node.attribute[:]
            node.attribute.extend(keep + [helper.make_attribute("ceil_mode", 0),
                                          helper.make_attribute("pads", new)])
    return original


def _shape_value(node, shape) -> np.ndarray:
    """What an ONNX Shape node gives for a tensor of static `shape` (its start/end applied)."""
    a = _attrs(node)
    return np.array(shape, np.int64)[a.get("start", 0):a.get("end", len(shape))]


def _check(model, seed, notes=()) -> str:
    lines = [f"converted: {len(model.layers)} layers, frames {model.frame_shape} -> output "
             f"{tuple(model.output_shape)}; window {model.window}, receptive field "
             f"{model.receptive_field}, hop {model.hop}; equivalence: {model.equivalence}"]
    lines.extend(notes)
    rng = np.random.default_rng(seed)
    if model.semantics != "window":
        return _check_sequence(model, rng, lines)
    n = model.window + 2 * max(model.hop, 1) + 8
    x = rng.standard_normal((n,) + model.frame_shape).astype(np.float32)
    ref = model.forward(x)
    dense = model.stream().push_many(x)
    decimated = model.stream(mode="decimated").push_many(x)
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    errs = []
    for got, want in ((dense, ref), (decimated, ref[::max(model.hop, 1)])):
        if got.shape != want.shape:
            raise ModelFormatError(f"converted model streams {got.shape} outputs where the reference "
                                   f"has {want.shape}: please report this")
        errs.append(float(np.max(np.abs(got - want))) if got.size else 0.0)
    lines.append(f"  check: streamed vs offline reference on {len(dense)} windows of random input "
                 f"(dense and decimated): max |error| = {max(errs):.2e} (max |output| {scale:.2e})")
    if not max(errs) <= 1e-4 * max(1.0, scale):
        raise ModelFormatError(f"converted model streams with error {max(errs):.2e}: please report this")
    return "\n".join(lines)


def _check_sequence(model, rng, lines) -> str:
    """'sequence' semantics: the stream, flushed, equals the network run over the recording."""
    from ..engine.stream import Stream

    if not hasattr(Stream, "flush"):
        lines.append("  check: not run (this engine does not stream 'sequence' semantics yet)")
        return "\n".join(lines)
    x = rng.standard_normal((3 * model.window + 8,) + model.frame_shape).astype(np.float32)
    ref = model.forward(x)
    stream = model.stream()
    got = np.concatenate([stream.push_many(x), stream.flush()])
    if got.shape != ref.shape:
        raise ModelFormatError(f"converted model streams {got.shape} outputs where the offline run has "
                               f"{ref.shape}: please report this")
    err = float(np.max(np.abs(got - ref))) if got.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    lines.append(f"  check: streamed and flushed vs the offline run on {len(x)} frames of random input: "
                 f"max |error| = {err:.2e} (max |output| {scale:.2e})")
    if not err <= 1e-4 * max(1.0, scale):
        raise ModelFormatError(f"converted model streams with error {err:.2e}: please report this")
    return "\n".join(lines)


_NAME_BAD = re.compile(r"[^A-Za-z0-9_.:-]+")


def _auto_pads(mode: str, n: int, k: int, s: int, d: int) -> tuple:
    """ONNX auto_pad for one axis of ``n`` positions: (before, after)."""
    if mode == "VALID":
        return 0, 0
    eff = (k - 1) * d + 1
    total = max(0, (-(-n // s) - 1) * s + eff - n)
    small = total // 2
    return (small, total - small) if mode == "SAME_UPPER" else (total - small, small)


def _slice_bounds(start, end, step, n) -> tuple:
    """ONNX Slice bounds of one axis, clamped (step 1)."""
    start, end = int(start), int(end)
    start = max(0, min(n, start + n if start < 0 else start))
    end = max(0, min(n, end + n if end < 0 else end))
    return start, max(start, end)


class _Converter:
    # Constant subgraphs (shape arithmetic, pads computed by the exporter) are evaluated with
    # onnx's reference implementation, limited to these ops and to small tensors.
    FOLDABLE = {"Shape", "Size", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Identity",
                "Reshape", "Slice", "ConstantOfShape", "Expand", "Range", "Transpose", "Equal",
                "Where", "Less", "Greater", "Not", "ReduceProd", "Split", "Tile", "Floor", "Ceil",
                "ReduceL2", "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "Flatten"}
    MAX_CONST = 1 << 20  # elements in a folded constant

    def __init__(self, inits, shapes, numpy_helper, opset=17, graph=None):
        self.opset = opset
        self.consts: Dict[str, np.ndarray] = dict(inits)
        self.shapes = shapes
        self.nh = numpy_helper
        self.used = set()
        self.expect: Dict[str, tuple] = {}  # model node name -> (channels, features, length) in ONNX
        self.readers: Dict[str, int] = {}
        self.pool_attrs: Dict[str, dict] = {}  # the attributes of pools rewritten for shape inference
        self.barriers = set()  # values that must be nodes of their own (the QDQ importer's)
        if graph is not None:
            for n in graph.node:
                for i in n.input:
                    self.readers[i] = self.readers.get(i, 0) + 1
            for o in graph.output:
                self.readers[o.name] = self.readers.get(o.name, 0) + 1

    @classmethod
    def handles(cls, op) -> bool:
        return op in P.ELEMENTWISE or op in ("Constant", "Sum", "Mean") or hasattr(cls, f"op_{op}")

    # -- helpers
    def unique(self, name: str) -> str:
        base = _NAME_BAD.sub("_", name or "").strip("_.:-")[:100] or "node"
        out, k = base, 1
        while out in self.used:
            k += 1
            out = f"{base}_{k}"
        self.used.add(out)
        return out

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

    def apply(self, node, layer, inputs, suffix=""):
        """A graph node for ``layer`` on the tensors ``inputs``, named after the ONNX node."""
        for pname, arr in layer.params().items():
            if not np.isfinite(arr).all():  # an infinite variance still gives finite outputs
                raise _fail(node, f"the {type(layer).__name__} {pname} has non-finite values")
        try:
            return layer(*inputs, name=self.unique((node.name or node.op_type) + suffix))
        except ModelError as exc:
            raise _fail(node, str(exc)) from None

    def record(self, tensor, shape, roles):
        """Remember the ONNX shape of a converted tensor, checked against the model's specs."""
        if tensor is None or K in roles:
            return
        name = tensor._source.name
        ch = shape[roles.index(C)] if C in roles else None
        feat = shape[roles.index(F_)] if F_ in roles else None
        length = shape[roles.index(T)] if T in roles else None
        self.expect[name] = (ch, feat, length)

    def put(self, vals, node, tensor, shape, roles, out=0, **kw) -> _Val:
        v = _Val(tensor, tuple(shape), tuple(roles), node=node.name, **kw)
        vals[node.output[out]] = v
        self.record(tensor, shape, roles)
        return v

    def check_shapes(self, model):
        """Every converted node has the channels, features and time length ONNX says."""
        for i, node in enumerate(model.nodes):
            want = self.expect.get(node.name)
            spec = model.specs[i]
            if want is None or spec is None:
                continue
            ch, feat, length = want
            got = (spec.channels, spec.features, spec.length)
            if length is None and spec.length is not None:
                continue
            bad = (ch is not None and ch != spec.channels) or (length is not None and length != spec.length) \
                or (feat is not None and spec.features is not None and feat != spec.features)
            if bad:
                raise ModelFormatError(f"converted node {node.name!r} has (channels, features, length) "
                                       f"{got} where the ONNX graph has {want}: please report this")

    # -- dispatch
    def node(self, node, vals):
        self._node(node, vals)
        for out in node.output:  # a quantized value of a QDQ graph: its own node
            if out in self.barriers and out in vals and vals[out].expr is not None:
                self.lower_expr(out, vals)

    def _node(self, node, vals):
        op = node.op_type
        if op == "Constant":
            self.consts[node.output[0]] = self.constant_value(node)
            return
        dyn = [i for i in node.input if i in vals]
        if not dyn:
            self.fold_const(node)
            return
        if any(vals[i].flat_perm is not None for i in dyn) and op not in ("Gemm", "MatMul") \
                and op not in P.ELEMENTWISE:
            raise _fail(node, "a window flattened with time before the last axis can only feed Gemm/MatMul")
        if op in P.ELEMENTWISE:
            return self.elementwise(node, vals)
        if op == "Sum":
            return self.join(node, vals, "Add")
        if op == "Mean":  # the average of branches: their sum, scaled
            self.join(node, vals, "Add")
            v = vals[node.output[0]]
            n = len([i for i in node.input if i])
            if n > 1:
                t = self.apply(node, self.affine_layer(v, np.array(1.0 / n), None), [v.tensor], ".mean")
                self.put(vals, node, t, v.shape, v.roles)
            return
        keep_pending = {"Conv": "pad", "ReduceSum": "stack", "ReduceMean": "stack", "ReduceMax": "stack"}
        if any(vals[i].stack is not None for i in dyn) and keep_pending.get(op) != "stack":
            raise _fail(node, "a stack of branches (torch.stack) is supported only when summed or "
                              "averaged over the stacked axis")
        for name in dyn:
            v = vals[name]
            if keep_pending.get(op) == "pad" and v.pad is not None and v.expr is None:
                continue
            if keep_pending.get(op) == "stack" and v.stack is not None:
                continue
            self.materialize(name, vals)
        handler = getattr(self, f"op_{op}", None)
        if handler is None:  # pragma: no cover - _first_unsupported ran first
            raise _fail(node, f"unsupported op {op!r}")
        handler(node, vals, vals[dyn[0]])

    def constant_value(self, node) -> np.ndarray:
        a = _attrs(node)
        if "value" in a:
            return self.nh.to_array(a["value"])
        for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                           ("value_int", np.int64), ("value_ints", np.int64)):
            if key in a:
                return np.asarray(a[key], dtype)
        raise _fail(node, f"only tensor and number constants are supported, got {sorted(a)}")

    def fold_const(self, node):
        a = _attrs(node)
        ins = [self.consts.get(i) if i else None for i in node.input]
        if any(v is None for i, v in zip(node.input, ins) if i):
            raise _fail(node, "needs values that are not constants")
        op = node.op_type
        if op in P.ELEMENTWISE and all(np.issubdtype(np.asarray(v).dtype, np.floating)
                                       for v in ins if v is not None):
            fn = P.bind(op, a)
            if fn is None:
                raise _fail(node, f"unsupported attributes {a}")
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

    # -- pending values
    def materialize(self, name, vals) -> _Val:
        """Turn a pending value (an elementwise expression, a zero Pad) into graph nodes."""
        v = vals[name]
        if v.expr is not None:
            v = self.lower_expr(name, vals)
        if v.pad is not None:
            v = self.pad_layer(v)
            vals[name] = v
        return v

    def pad_layer(self, v: _Val) -> _Val:
        node = _Named(v.node, "Pad")
        f = v.pad.get(F_, (0, 0))
        if f != (0, 0):
            raise _fail(node, f"zero padding of the features {f} is supported only as the padding of "
                              f"the Conv it feeds")
        lo, hi = v.pad.get(T, (0, 0))
        t = v.tensor
        if lo < 0 or hi < 0:
            t = self.apply(node, M.Crop(max(0, -lo), max(0, -hi)), [t], ".crop")
        if lo > 0 or hi > 0:
            t = self.apply(node, M.Pad(max(0, lo), max(0, hi)), [t])
        self.record(t, v.shape, v.roles)
        return replace(v, tensor=t, pad=None, conv=None)

    # -- elementwise
    def root_of(self, name, vals) -> str:
        v = vals[name]
        return v.root if v.expr is not None else name

    def per_channel(self, c, root: _Val, node) -> np.ndarray:
        """A constant operand as float64, shaped to broadcast per channel against `root`."""
        c = np.asarray(c, np.float64)
        if c.ndim == 0 or c.size == 1:
            return c.reshape(())
        if root.flat_perm is not None:
            raise _fail(node, "per-element constants on a window flattened with time before the last axis")
        shape = root.shape
        try:
            full = np.broadcast_to(c, np.broadcast_shapes(c.shape, shape))
        except ValueError:
            raise _fail(node, f"constant of shape {c.shape} does not broadcast to {shape}") from None
        if full.shape != tuple(shape):
            raise _fail(node, f"constant of shape {c.shape} broadcasts the tensor {shape} to {full.shape}")
        ax = root.axis(C)
        if ax is None:
            raise _fail(node, f"a per-element constant on a tensor of shape {shape} without channels")
        moved = np.moveaxis(full, ax, 0).reshape(shape[ax], -1)
        if not np.all(moved == moved[:, :1]):
            raise _fail(node, "elementwise constants must be per channel (the same for every frame "
                              "and feature)")
        keep = [1] * len(shape)
        keep[ax] = shape[ax]
        return moved[:, 0].reshape(keep)

    def elementwise(self, node, vals):
        """Collect an elementwise node into its root's pending expression, or join branches."""
        dyn = [i for i in node.input if i in vals]
        for name in dyn:
            if vals[name].expr is None and vals[name].pending:
                self.materialize(name, vals)
        roots = {self.root_of(i, vals) for i in dyn}
        if len(roots) > 1:
            if node.op_type in ("Add", "Sub", "Mul"):
                return self.join(node, vals, "Mul" if node.op_type == "Mul" else "Add",
                                 negate_second=node.op_type == "Sub")
            raise _fail(node, f"elementwise {node.op_type} of two tensors computed on different "
                              f"branches is not supported (Add, Sub, Mul and Sum join branches)")
        root_name = roots.pop()
        root = vals[root_name]
        if root.stack is not None:
            raise _fail(node, "elementwise op on a stack of branches (torch.stack); only a sum or "
                              "mean over the stacked axis is supported")
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
        vals[node.output[0]] = _Val(None, root.shape, root.roles, node=node.name, expr=expr,
                                    root=root_name, flat_perm=root.flat_perm)

    def lower_expr(self, name, vals) -> _Val:
        """A pending expression as graph nodes: per-channel affines and activations, joined by
        Add/Mul where it combines two functions of its root (``tanh(x) * sigmoid(x)``)."""
        v = vals[name]
        root = vals[v.root]
        ax = root.axis(C)
        var_shape = tuple(root.shape[ax] if i == ax else 1 for i in range(1, len(root.shape)))
        node = _Named(v.node or name, "elementwise")
        memo: dict = {}
        try:
            t = self._lower(v.expr, root.tensor, root, var_shape, node, memo)
        except P.Unidentified as exc:
            nodes = v.expr.all_nodes()
            raise ModelFormatError(f"ONNX nodes {nodes}: the elementwise subgraph on {v.root!r} does not "
                                   f"convert: {exc}") from None
        out = _Val(t, root.shape, root.roles, node=v.node, flat_perm=root.flat_perm)
        self.record(t, root.shape, root.roles)
        vals[name] = out
        return out

    def _lower(self, expr, var, root, var_shape, node, memo):
        if expr.fn is None:
            return var
        key = (id(expr), id(var))
        if key in memo:
            return memo[key]
        try:
            steps = P.identify(expr, var_shape)
        except P.Unidentified as first:
            dyn = [a for a in expr.args if isinstance(a, P.Expr) and a.uses_variable()]
            if expr.op in ("Add", "Sub", "Mul") and len(dyn) == 2 and len(expr.args) == 2:
                a = self._lower(expr.args[0], var, root, var_shape, node, memo)
                b = self._lower(expr.args[1], var, root, var_shape, node, memo)
                if expr.op == "Sub":
                    b = self.apply(node, self.affine_layer(root, np.array(-1.0), None), [b], ".neg")
                out = self.apply(node, (M.Mul if expr.op == "Mul" else M.Add)(), [a, b], f".{expr.op.lower()}")
                memo[key] = out
                return out
            for cut in P._cuts(expr):  # f(g(x)) where g joins two functions of x
                try:
                    inner = self._lower(cut, var, root, var_shape, node, memo)
                    outer = P._substitute(expr, cut, P.Expr(None))
                    out = self._lower(outer, inner, root, var_shape, node, {})
                except P.Unidentified:
                    continue
                memo[key] = out
                return out
            raise first
        t = var
        for scale, shift, act in steps:
            if scale is not None or shift is not None:
                t = self.apply(node, self.affine_layer(root, scale, shift), [t], ".affine")
            if act is not None:
                t = self.apply(node, act, [t], f".{type(act).__name__.lower()}")
        memo[key] = t
        return t

    def affine_layer(self, root, scale, shift):
        """y = x * scale + shift per channel, as a BatchNorm (the planner folds it into the
        producing Conv/Linear when it can, or runs it as its own op)."""
        n = root.shape[root.axis(C)]
        layer = (L.BatchNorm2d if root.two_d else L.BatchNorm1d)(n, eps=2.0 ** -20)
        layer.weight = np.ones(n) if scale is None else np.broadcast_to(np.ravel(scale) if np.ndim(scale) else scale, (n,))
        layer.bias = np.zeros(n) if shift is None else np.broadcast_to(np.ravel(shift) if np.ndim(shift) else shift, (n,))
        layer.running_var = np.full(n, 1.0 - 2.0 ** -20)  # var + eps == 1 exactly in float32
        return layer

    def join(self, node, vals, kind, negate_second=False):
        """Add / Mul / Sum of tensors computed on different branches: one merge node."""
        names = [i for i in node.input if i]
        if any(i not in vals for i in names):
            raise _fail(node, f"{node.op_type} of a computed tensor and a constant of another shape; "
                              f"constants must be per channel")
        xs = [self.materialize(i, vals) for i in names]
        if any(v.stack is not None for v in xs):
            raise _fail(node, f"{node.op_type} of a stack of branches (torch.stack)")
        first = xs[0]
        for v in xs[1:]:
            if v.roles != first.roles:
                raise _fail(node, f"{node.op_type} of tensors in different layouts: {first.shape} "
                                  f"({''.join(first.roles)}) and {v.shape} ({''.join(v.roles)})")
            if v.shape != first.shape:
                raise _fail(node, f"{node.op_type} broadcasts {first.shape} and {v.shape}; branches "
                                  f"must have equal shapes")
        tensors = [v.tensor for v in xs]
        if negate_second:
            tensors[1] = self.apply(node, self.affine_layer(xs[1], np.array(-1.0), None), [tensors[1]], ".neg")
        if len(tensors) == 1:
            self.put(vals, node, tensors[0], first.shape, first.roles)
            return
        layer = M.Mul() if kind == "Mul" else M.Add()
        self.put(vals, node, self.apply(node, layer, tensors), first.shape, first.roles)

    # -- layout checks
    def need_bc(self, node, x: _Val, what=None):
        what = what or node.op_type
        if x.head:
            raise _fail(node, f"{what} after the time axis was reduced")
        if x.roles[0] != B or x.roles[1] != C:
            hint = " (a module that takes (B, T, C) frames needs time_axis=1)" if x.roles[1] == T else ""
            raise _fail(node, f"{what} on a tensor of shape {x.shape} whose channels are on axis "
                              f"{x.axis(C)}: ONNX {what} reads channels on axis 1; transpose first{hint}")

    def spatial(self, node, x: _Val, k, strides, dil, lo, hi):
        """Per-axis parameters of a Conv/Pool on ONNX spatial axes -> {role: (k, s, d, lo, hi)};
        size-1 axes the engine does not store must have a kernel of 1 and no padding."""
        out = {}
        for j, role in enumerate(x.roles[2:]):
            p = (int(k[j]), int(strides[j]), int(dil[j]), int(lo[j]), int(hi[j]))
            if role == U:
                if p[0] != 1 or p[3] or p[4]:
                    raise _fail(node, f"kernel {p[0]} with padding ({p[3]}, {p[4]}) on a size-1 axis")
                continue
            if role not in (F_, T):
                raise _fail(node, f"spatial axis {j + 2} of {x.shape} is not time or features")
            out[role] = p
        if T not in out:
            raise _fail(node, f"no time axis among the spatial axes of {x.shape}")
        return out

    def pads(self, node, a, x: _Val, k, strides, dil):
        nd = len(k)
        mode = a.get("auto_pad", "NOTSET")
        if mode in ("SAME_UPPER", "SAME_LOWER", "VALID"):
            pairs = [_auto_pads(mode, x.shape[2 + j], k[j], strides[j], dil[j]) for j in range(nd)]
            return [p[0] for p in pairs], [p[1] for p in pairs]
        if mode != "NOTSET":
            raise _fail(node, f"auto_pad={mode!r} is not supported")
        pads = [int(p) for p in a.get("pads", [0] * (2 * nd))]
        if any(p < 0 for p in pads):
            raise _fail(node, f"negative pads {pads}")
        return pads[:nd], pads[nd:]

    # -- conv
    def op_Conv(self, node, vals, x):
        self.need_bc(node, x)
        a = _attrs(node)
        w = self.const(node.input[1], node, "weight").astype(np.float32)
        b = self.opt_const(node, 2)
        nd = w.ndim - 2
        if nd not in (1, 2) or len(x.shape) != nd + 2:
            raise _fail(node, f"{nd}-D Conv on a tensor of shape {x.shape}")
        k = list(w.shape[2:])
        strides = list(a.get("strides", [1] * nd))
        dil = list(a.get("dilations", [1] * nd))
        lo, hi = self.pads(node, a, x, k, strides, dil)
        if x.pad is not None:  # a zero Pad node before the conv: its zeros are the conv's padding
            for j, role in enumerate(x.roles[2:]):
                plo, phi = x.pad.get(role, (0, 0))
                if plo < 0 or phi < 0:
                    x = self.pad_layer(x)
                    lo, hi = self.pads(node, a, x, k, strides, dil)
                    break
                lo[j] += plo
                hi[j] += phi
        sp = self.spatial(node, x, k, strides, dil, lo, hi)
        idx = (slice(None), slice(None)) + tuple(0 if r == U else slice(None) for r in x.roles[2:])
        w = w[idx]
        kept = [r for r in x.roles[2:] if r != U]
        if kept == [T, F_]:  # our kernels are (feature, time)
            w = np.ascontiguousarray(w.transpose(0, 1, 3, 2))
        group = int(a.get("group", 1))
        c_in = x.shape[1]
        kt, st, dt, lt, ht = sp[T]
        eff = (kt - 1) * dt + 1
        pad_t = "causal" if (lt, ht) == (eff - 1, 0) and lt > 0 else (lt if lt == ht else (lt, ht))
        try:
            if F_ not in sp:
                layer = L.Conv1d(c_in, w.shape[0], kt, stride=st, padding=pad_t, dilation=dt, groups=group,
                                 bias=b is not None, seed=0)
            else:
                kf, sf, df, lf, hf = sp[F_]
                layer = L.Conv2d(c_in, w.shape[0], (kf, kt), stride=(sf, st), padding=((lf, hf), pad_t),
                                 dilation=(df, dt), groups=group, bias=b is not None, seed=0)
            layer.weight = w
            if b is not None:
                layer.bias = b
        except ModelError as exc:
            raise _fail(node, str(exc)) from None
        t = self.apply(node, layer, [x.tensor])
        self.put(vals, node, t, self.shape(node.output[0]) or x.shape, x.roles,
                 conv=(layer, x.tensor, t._source.name, node.output[0]))

    def _rechomp(self, node, x: _Val, crop_right: int):
        """A Conv whose right part a Slice drops (a TCN's chomp): the same conv with less right
        padding, so the positions that would read the future are never computed."""
        if x.conv is None or self.readers.get(x.conv[3], 0) != 1:
            return None
        layer, src, name, _ = x.conv
        lt, ht = layer.pad_t
        need = crop_right * layer.s_t
        if need > ht:
            return None
        cfg = layer.config()
        eff = (layer.k_t - 1) * layer.d_t + 1
        new_t = (lt, ht - need)
        pad_t = "causal" if new_t == (eff - 1, 0) and lt > 0 else (new_t if new_t[0] != new_t[1] else new_t[0])
        if isinstance(layer, L.Conv2d):
            cfg["padding"] = (tuple(layer.pad_f), pad_t)
            cfg["kernel_size"], cfg["stride"], cfg["dilation"] = (tuple(cfg[k]) for k in
                                                                   ("kernel_size", "stride", "dilation"))
        else:
            cfg["padding"] = pad_t
        new = type(layer)(**cfg, seed=0)
        new.weight = layer.weight
        if layer.bias is not None:
            new.bias = layer.bias
        return new(src, name=name)

    # -- pools and heads
    def _pool(self, node, vals, x, op):
        self.need_bc(node, x, "pooling")
        a = {**_attrs(node), **self.pool_attrs.get(node.output[0], {})}
        k = list(a["kernel_shape"])
        nd = len(k)
        if len(x.shape) != nd + 2:
            raise _fail(node, f"{nd}-D pooling on a tensor of shape {x.shape}")
        strides = list(a.get("strides", [1] * nd))
        dil = list(a.get("dilations", [1] * nd))
        lo, hi = self.pads(node, a, x, k, strides, dil)
        sp = self.spatial(node, x, k, strides, dil, lo, hi)
        ceil = bool(a.get("ceil_mode", 0))
        cip = bool(a.get("count_include_pad", 0))
        kt, st, dt, lt, ht = sp[T]
        try:
            if F_ not in sp:
                if op == "max":
                    layer = L.MaxPool1d(kt, st, dt, padding=(lt, ht), ceil_mode=ceil)
                else:
                    if dt != 1:
                        raise _fail(node, "dilated average pooling is not supported")
                    layer = L.AvgPool1d(kt, st, padding=(lt, ht), ceil_mode=ceil, count_include_pad=cip)
            else:
                kf, sf, df, lf, hf = sp[F_]
                if dt != 1 or df != 1:
                    raise _fail(node, "dilated 2-D pooling is not supported")
                if op == "max":
                    layer = L.MaxPool2d((kf, kt), (sf, st), padding=((lf, hf), (lt, ht)), ceil_mode=ceil)
                else:
                    layer = L.AvgPool2d((kf, kt), (sf, st), padding=((lf, hf), (lt, ht)), ceil_mode=ceil,
                                        count_include_pad=cip)
        except ModelError as exc:
            raise _fail(node, str(exc)) from None
        onnx_shape = self.shape(node.output[0])
        t = self.apply(node, layer, [x.tensor])
        v = self.put(vals, node, t, onnx_shape or x.shape, x.roles)
        spans = all(p[0] == x.shape[x.axis(r)] and p[2] == 1 and not p[3] and not p[4] for r, p in sp.items())
        if spans:  # AdaptiveXxxPool(1) exports this way
            v.spans_window = op
            v.pool_src = x.tensor

    def op_MaxPool(self, node, vals, x):
        if len(node.output) > 1 and node.output[1]:
            raise _fail(node, "MaxPool indices output is not supported")
        self._pool(node, vals, x, "max")

    def op_AveragePool(self, node, vals, x):
        self._pool(node, vals, x, "avg")

    def globalize(self, x: _Val) -> _Val:
        """A pool whose kernel spans the window, read as a vector: the global pool (a running
        sum / max over the window instead of a window-sized pool every frame)."""
        if not x.spans_window:
            return x
        node = _Named(x.node, "pool")
        pool = L.GlobalMaxPool() if x.spans_window == "max" else L.GlobalAvgPool()
        t = self.apply(node, pool, [x.pool_src], ".global")
        roles = tuple(U if r in (T, F_) else r for r in x.roles)
        return _Val(t, x.shape, roles, node=x.node)

    def _head(self, node, vals, x, op, keep, scale=None):
        """A global pool over time and features; ``keep``: the roles of the output axes."""
        t = self.apply(node, L.GlobalMaxPool() if op == "max" else L.GlobalAvgPool(), [x.tensor])
        if scale is not None:
            t = self.apply(node, self.affine_layer(_Val(None, (1, x.shape[x.axis(C)]), (B, C)), scale, None),
                           [t], ".sum")
        shape = self.shape(node.output[0]) or tuple(1 if r == U else x.shape[j] for j, r in enumerate(keep))
        self.put(vals, node, t, shape, keep)

    def op_GlobalAveragePool(self, node, vals, x):
        self.need_bc(node, x)
        self._head(node, vals, x, "avg", tuple(U if r in (T, F_) else r for r in x.roles))

    def op_GlobalMaxPool(self, node, vals, x):
        self.need_bc(node, x)
        self._head(node, vals, x, "max", tuple(U if r in (T, F_) else r for r in x.roles))

    def _reduce(self, node, vals, x, op):
        a = _attrs(node)
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self.const(node.input[1], node, "axes").tolist()
        rank = len(x.shape)
        if axes is None or len(axes) == 0:
            if a.get("noop_with_empty_axes", 0) and axes is not None:
                self.put(vals, node, x.tensor, x.shape, x.roles)
                return
            axes = range(rank)
        axes = sorted({int(v) % rank for v in axes})
        keepdims = bool(a.get("keepdims", 1))
        keep = tuple((U if j in axes else r) for j, r in enumerate(x.roles) if keepdims or j not in axes)
        if x.stack is not None:  # torch.stack(branches).sum(0) / .mean(0)
            if axes != [x.axis(K)] or op == "max":
                raise _fail(node, f"reduction over axes {axes} of a stack of branches: only a sum or mean "
                                  f"over the stacked axis ({x.axis(K)}) is supported")
            t = self.apply(node, M.Add(), x.stack) if len(x.stack) > 1 else x.stack[0]
            if op == "mean":
                t = self.apply(node, self.affine_layer(_Val(None, x.shape, x.roles), np.array(1 / len(x.stack)),
                                                       None), [t], ".mean")
            self.put(vals, node, t, self.shape(node.output[0]) or tuple(x.shape[j] for j in range(rank)
                                                                       if keepdims or j not in axes), keep)
            return
        reduced = {x.roles[j] for j in axes}
        if x.head or B in reduced or C in reduced or T not in reduced or (x.two_d and F_ not in reduced):
            want = sorted(j for j, r in enumerate(x.roles) if r in (T, F_))
            raise _fail(node, f"reduction over axes {axes} of shape {x.shape}: only over time "
                              f"(and features) of the window, i.e. axes {want}")
        if x.roles[0] != B or C not in x.roles:
            raise _fail(node, f"reduction of a tensor of shape {x.shape} without batch and channel axes")
        n = int(np.prod([x.shape[j] for j in axes]))
        self._head(node, vals, x, "max" if op == "max" else "avg", keep,
                   scale=np.array(float(n)) if op == "sum" else None)

    def op_ReduceMean(self, node, vals, x):
        self._reduce(node, vals, x, "mean")

    def op_ReduceMax(self, node, vals, x):
        self._reduce(node, vals, x, "max")

    def op_ReduceSum(self, node, vals, x):
        self._reduce(node, vals, x, "sum")

    # -- per-frame layers
    def op_BatchNormalization(self, node, vals, x):
        if x.roles[:2] != (B, C):
            self.need_bc(node, x)
        a = _attrs(node)
        scale, bias, mean, var = (self.const(node.input[i], node, n).astype(np.float32)
                                  for i, n in ((1, "scale"), (2, "B"), (3, "mean"), (4, "var")))
        layer = (L.BatchNorm2d if x.two_d else L.BatchNorm1d)(len(scale), eps=a.get("epsilon", 1e-5))
        try:
            layer.weight, layer.bias, layer.running_mean, layer.running_var = scale, bias, mean, var
        except ModelError as exc:
            raise _fail(node, str(exc)) from None
        self.put(vals, node, self.apply(node, layer, [x.tensor]), x.shape, x.roles)

    def op_PRelu(self, node, vals, x):
        slope = self.per_channel(self.const(node.input[1], node, "slope"), x, node)
        n = x.shape[x.axis(C)]
        layer = L.PReLU(1 if slope.size == 1 else n)
        layer.weight = np.ravel(slope).astype(np.float32)
        self.put(vals, node, self.apply(node, layer, [x.tensor]), x.shape, x.roles)

    def op_Softmax(self, node, vals, x):
        axis = _attrs(node).get("axis", -1)
        rank = len(x.shape)
        axis = axis + rank if axis < 0 else axis
        if x.head:
            others = [d for j, d in enumerate(x.shape[1:], 1) if j != axis]
            if x.roles[axis] != C or any(d != 1 for d in others):
                raise _fail(node, f"Softmax over axis {axis} of shape {x.shape}: expected the channel "
                                  f"axis of a vector")
        elif x.roles[axis] != C or x.two_d:
            raise _fail(node, f"Softmax over axis {axis} of shape {x.shape} before the head: only over the "
                              f"channels (axis {x.axis(C)}) of 1-D frames")
        self.put(vals, node, self.apply(node, L.Softmax(), [x.tensor]), x.shape, x.roles)

    def op_Gemm(self, node, vals, x):
        a = _attrs(node)
        if not x.head:
            raise _fail(node, "Gemm before the head: use Flatten/GlobalAveragePool first")
        if a.get("transA", 0) or node.input[0] not in vals or node.input[1] in vals:
            raise _fail(node, "Gemm with transA or a constant A is not supported")
        if x.two_d or C not in x.roles:
            raise _fail(node, f"Gemm on a vector of shape {x.shape}: flatten it first")
        w = self.const(node.input[1], node, "B").astype(np.float64) * a.get("alpha", 1.0)
        if a.get("transB", 0):
            w = w.T
        w = self._vector_weight(x, w).T
        b = self.opt_const(node, 2)
        layer = L.Linear(w.shape[1], w.shape[0], bias=b is not None, seed=0)
        try:
            layer.weight = w
            if b is not None:
                layer.bias = np.broadcast_to(np.asarray(b, np.float64) * a.get("beta", 1.0), (w.shape[0],))
        except ModelError as exc:
            raise _fail(node, str(exc)) from None
        self.put(vals, node, self.apply(node, layer, [x.tensor]), self.shape(node.output[0]) or (1, w.shape[0]),
                 (B, C))

    def _vector_weight(self, x, w_in_out):
        """Weight (in, out) of a Gemm/MatMul on the flattened vector, in our order."""
        if x.flat_perm is not None:
            ours = np.empty_like(w_in_out)
            ours[x.flat_perm] = w_in_out
            return ours
        return w_in_out

    def op_MatMul(self, node, vals, x):
        if node.input[0] not in vals or node.input[1] in vals:
            raise _fail(node, "MatMul is supported as x @ W with constant W")
        w = self.const(node.input[1], node, "weight")
        if w.ndim != 2:
            raise _fail(node, f"MatMul weight must be 2-D, got {w.shape}")
        last = x.roles[-1]
        if last != C and not (x.head and C in x.roles and all(r in (U, B) for r in x.roles if r != C)):
            hint = " (a module that takes (B, T, C) frames needs time_axis=1)" if last == T else ""
            raise _fail(node, f"MatMul contracts the last axis of {x.shape}, but the channels are on "
                              f"axis {x.axis(C)}{hint}")
        if x.two_d:
            raise _fail(node, "a per-frame MatMul is supported on 1-D frames (1, T, C) only")
        layer = L.Linear(w.shape[0], w.shape[1], bias=False, seed=0)
        try:
            layer.weight = self._vector_weight(x, np.asarray(w, np.float64)).T
        except ModelError as exc:
            raise _fail(node, str(exc)) from None
        shape = self.shape(node.output[0]) or x.shape[:-1] + (w.shape[1],)
        self.put(vals, node, self.apply(node, layer, [x.tensor]), shape, x.roles)

    # -- branches
    def op_Concat(self, node, vals, x):
        names = [i for i in node.input if i]
        if any(i not in vals for i in names):
            raise _fail(node, "Concat of computed tensors with constants is not supported")
        xs = [vals[i] for i in names]
        rank = len(x.shape)
        axis = int(_attrs(node).get("axis", 0)) % rank
        for v in xs[1:]:
            if v.roles != x.roles:
                raise _fail(node, f"Concat of tensors in different layouts: {x.shape} and {v.shape}")
        role = x.roles[axis]
        out_shape = self.shape(node.output[0]) or x.shape[:axis] + (sum(v.shape[axis] for v in xs),) + x.shape[axis + 1:]
        if role == C:
            t = self.apply(node, M.Concat(), [v.tensor for v in xs]) if len(xs) > 1 else x.tensor
            self.put(vals, node, t, out_shape, x.roles)
        elif role == U and all(v.shape == x.shape for v in xs):  # torch.stack: a new axis of branches
            roles = x.roles[:axis] + (K,) + x.roles[axis + 1:]
            vals[node.output[0]] = _Val(None, tuple(out_shape), roles, node=node.name,
                                        stack=[v.tensor for v in xs])
        else:
            what = {T: "time", F_: "features", B: "the batch"}.get(role, "a stacked axis")
            raise _fail(node, f"Concat along {what} (axis {axis} of {x.shape}): only channels, or a "
                              f"new size-1 axis summed afterwards, are supported")

    def _channel_slice(self, node, x, lo, hi, suffix=""):
        if x.head and not x.roles[-1:] == (C,) and x.two_d:
            raise _fail(node, "slicing the channels of a 2-D vector")
        if (lo, hi) == (0, x.shape[x.axis(C)]):
            return x.tensor
        return self.apply(node, M.ChannelSlice(lo, hi), [x.tensor], suffix)

    def _time_crop(self, node, x, lo, hi, suffix=""):
        n = x.shape[x.axis(T)]
        if (lo, hi) == (0, n):
            return x.tensor
        if lo == 0 and suffix == "":
            t = self._rechomp(node, x, n - hi)
            if t is not None:
                return t
        return self.apply(node, M.Crop(lo, n - hi), [x.tensor], suffix)

    def op_Split(self, node, vals, x):
        a = _attrs(node)
        rank = len(x.shape)
        axis = int(a.get("axis", 0)) % rank
        n = x.shape[axis]
        outs = [o for o in node.output]
        split = self.opt_const(node, 1)
        if split is None:
            split = a.get("split")
        if split is None:
            parts = a.get("num_outputs", len(outs))
            size = -(-n // parts)
            split = [min(size, n - i * size) for i in range(parts)]
        split = [int(s) for s in np.ravel(split)]
        if sum(split) != n or len(split) != len(outs):
            raise _fail(node, f"split {split} of {n} positions into {len(outs)} outputs")
        role = x.roles[axis]
        if role not in (C, T, U):
            raise _fail(node, f"Split along axis {axis} of {x.shape}: only channels or time")
        start = 0
        for j, (name, size) in enumerate(zip(outs, split)):
            lo, hi = start, start + size
            start = hi
            if not name:
                continue
            if role == C:
                t = self._channel_slice(node, x, lo, hi, f".{j}")
            elif role == T:
                t = self._time_crop(node, x, lo, hi, f".{j}")
            else:
                t = x.tensor
            shape = x.shape[:axis] + (size,) + x.shape[axis + 1:]
            self.put(vals, node, t, shape, x.roles, out=j)

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
        if any(s != 1 for s in steps):
            raise _fail(node, f"Slice with steps {steps}: only step 1 is supported")
        cur = x
        shape = list(x.shape)
        for axis, s, e in zip(axes, starts, ends):
            n = shape[axis]
            lo, hi = _slice_bounds(s, e, 1, n)
            role = x.roles[axis]
            if (lo, hi) == (0, n):
                continue
            if hi <= lo:
                raise _fail(node, f"Slice [{lo}:{hi}] of axis {axis} leaves nothing")
            if role == C:
                t = self._channel_slice(node, cur, lo, hi)
            elif role == T:
                t = self._time_crop(node, cur, lo, hi)
            else:
                what = {F_: "the features", B: "the batch", U: "a size-1 axis"}.get(role, f"axis {axis}")
                raise _fail(node, f"Slice [{lo}:{hi}] of {what} (axis {axis} of {x.shape}): only slices of "
                                  f"channels and time are supported")
            shape[axis] = hi - lo
            cur = _Val(t, tuple(shape), x.roles, node=x.node)
        self.put(vals, node, cur.tensor, tuple(shape), x.roles)

    def op_Gather(self, node, vals, x):
        axis = int(_attrs(node).get("axis", 0)) % len(x.shape)
        idx = np.asarray(self.const(node.input[1], node, "indices"))
        role = x.roles[axis]
        n = x.shape[axis]
        if idx.size != 1:
            raise _fail(node, f"Gather of {idx.size} indices: only one index (a frame or a channel)")
        i = int(idx.ravel()[0]) % n
        roles = list(x.roles)
        shape = list(x.shape)
        if idx.ndim == 0:
            del roles[axis], shape[axis]
        else:
            shape[axis] = 1
        if role == T:
            t = self._time_crop(node, x, i, i + 1, ".crop") if i != n - 1 else x.tensor
            if idx.ndim == 0:
                t = self.apply(node, L.LastFrame(), [t])
        elif role == U:
            t = x.tensor
        elif role == C and idx.ndim > 0:
            t = self._channel_slice(node, x, i, i + 1)
        else:
            raise _fail(node, f"Gather on axis {axis} of {x.shape}: only a frame of the time axis, or one "
                              f"channel kept as an axis")
        self.put(vals, node, t, tuple(shape), tuple(roles))

    # -- padding
    def op_Pad(self, node, vals, x):
        a = _attrs(node)
        mode = a.get("mode", "constant")
        rank = len(x.shape)
        pads = a.get("pads")
        if pads is None:
            pads = self.const(node.input[1], node, "pads").tolist()
        pads = [int(p) for p in np.ravel(pads)]
        value = self.opt_const(node, 2)
        axes = self.opt_const(node, 3)
        if axes is not None:  # opset 18: pads only for the listed axes
            axes = [int(v) % rank for v in np.ravel(axes)]
            full = [0] * (2 * rank)
            for j, ax in enumerate(axes):
                full[ax], full[ax + rank] = pads[j], pads[j + len(axes)]
            pads = full
        if mode != "constant" or (value is not None and np.any(np.asarray(value) != 0)):
            raise _fail(node, f"Pad mode {mode!r} value {None if value is None else np.ravel(value).tolist()}: "
                              f"only zero padding streams")
        if len(pads) != 2 * rank:
            raise _fail(node, f"Pad {pads} of a tensor of rank {rank}")
        if x.head:
            raise _fail(node, "Pad after the time axis was reduced")
        pend = dict(x.pad or {})
        for j, role in enumerate(x.roles):
            lo, hi = pads[j], pads[j + rank]
            if not lo and not hi:
                continue
            if role not in (T, F_):
                what = {C: "channels", B: "the batch", U: "a size-1 axis"}.get(role, f"axis {j}")
                raise _fail(node, f"Pad {pads} of shape {x.shape} pads {what}; only time and features")
            plo, phi = pend.get(role, (0, 0))
            pend[role] = (plo + lo, phi + hi)
        shape = tuple(d + pads[j] + pads[j + rank] for j, d in enumerate(x.shape))
        vals[node.output[0]] = _Val(x.tensor, shape, x.roles, node=node.name, pad=pend or None)

    # -- layout
    def op_Transpose(self, node, vals, x):
        rank = len(x.shape)
        perm = [int(p) for p in _attrs(node).get("perm", range(rank - 1, -1, -1))]
        if x.flat_perm is not None:
            raise _fail(node, "Transpose of a flattened window")
        roles = tuple(x.roles[p] for p in perm)
        shape = tuple(x.shape[p] for p in perm)
        self.put(vals, node, x.tensor, shape, roles)

    def op_Unsqueeze(self, node, vals, x):
        axes = self.opt_const(node, 1)
        if axes is None:
            axes = _attrs(node).get("axes", [])
        rank = len(x.shape) + len(np.ravel(axes))
        axes = sorted(int(a) % rank for a in np.ravel(axes))
        roles, shape = list(x.roles), list(x.shape)
        for a in axes:
            roles.insert(a, U)
            shape.insert(a, 1)
        self.put(vals, node, x.tensor, tuple(shape), tuple(roles), flat_perm=x.flat_perm)

    def op_Squeeze(self, node, vals, x):
        axes = self.opt_const(node, 1)
        if axes is None:
            axes = _attrs(node).get("axes")
        rank = len(x.shape)
        if axes is None:
            axes = [j for j, d in enumerate(x.shape) if d == 1]
        axes = sorted({int(a) % rank for a in np.ravel(axes)})
        if any(x.shape[a] != 1 for a in axes):
            raise _fail(node, f"Squeeze of axes {axes} of shape {x.shape}: only size-1 axes")
        x = self.globalize(x)
        self._drop_unit_axes(node, vals, x, axes)

    def _drop_unit_axes(self, node, vals, x, axes, shape=None, roles=None):
        """Remove size-1 axes; a real one (time, features, channels of size 1) changes the data:
        time -> the last frame, features -> FrameFlatten (or Flatten of the vector)."""
        dropped = {x.roles[a] for a in axes}
        keep_roles = [r for j, r in enumerate(x.roles) if j not in axes] if roles is None else list(roles)
        keep_shape = [d for j, d in enumerate(x.shape) if j not in axes] if shape is None else list(shape)
        t = x.tensor
        if C in dropped and F_ in keep_roles:  # (1, F) frames of one channel: the features become channels
            t = self.apply(node, M.FrameFlatten() if not x.head else L.Flatten(), [t], ".flatten")
            keep_roles = [C if r == F_ else r for r in keep_roles]
        elif C in dropped and not x.head:
            raise _fail(node, f"Squeeze/Reshape drops the channel axis of {x.shape} before the head")
        if F_ in dropped:
            t = self.apply(node, M.FrameFlatten() if not x.head else L.Flatten(), [t], ".flatten")
        if T in dropped:
            t = self.apply(node, L.LastFrame(), [t], ".last")
        self.put(vals, node, t, tuple(keep_shape), tuple(keep_roles), flat_perm=x.flat_perm)

    def op_Flatten(self, node, vals, x):
        x = self.globalize(x)
        axis = int(_attrs(node).get("axis", 1)) % (len(x.shape) + 1)
        shape = (int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:])))
        self._reshape(node, vals, x, shape)

    def op_Reshape(self, node, vals, x):
        x = self.globalize(x)
        out = self.shape(node.output[0])
        if out is None or None in out:
            target = self.const(node.input[1], node, "shape").astype(np.int64).tolist()
            try:
                out = tuple(np.empty(x.shape, np.int8).reshape(
                    [x.shape[j] if d == 0 else d for j, d in enumerate(target)]).shape)
            except ValueError:
                raise _fail(node, f"reshape of {x.shape} to {target}") from None
        self._reshape(node, vals, x, tuple(int(d) for d in out))

    def _reshape(self, node, vals, x, out):
        """Reshape as merges of adjacent axes, size-1 axes appearing or going."""
        if tuple(out) == tuple(x.shape):
            self.put(vals, node, x.tensor, x.shape, x.roles, flat_perm=x.flat_perm)
            return
        if not out or out[0] != 1:
            raise _fail(node, f"reshape of {x.shape} to {out} moves the batch axis")
        if not x.head and len(out) == 2:  # (1, N): the whole window, whatever its sizes
            return self._flatten_whole(node, vals, x, out)
        big_in = [(d, r, j) for j, (d, r) in enumerate(zip(x.shape, x.roles)) if d != 1]
        big_out = [j for j, d in enumerate(out) if d != 1]
        groups, i = [], 0
        for j in big_out:
            g, prod = [], 1
            while i < len(big_in) and prod < out[j]:
                g.append(big_in[i])
                prod *= big_in[i][0]
                i += 1
            if prod != out[j]:
                raise _fail(node, f"reshape of {x.shape} to {out} splits an axis; only merges of adjacent "
                                  f"axes (e.g. (C, F) frames into C*F channels) are supported")
            groups.append((j, g))
        if i != len(big_in):  # pragma: no cover - products must match
            raise _fail(node, f"reshape of {x.shape} to {out}")
        roles = [U] * len(out)
        roles[0] = B
        merged_cf = whole = False
        for j, g in groups:
            rs = [r for _, r, _ in g]
            if len(rs) == 1:
                roles[j] = rs[0]
            elif rs == [C, F_]:
                roles[j] = C
                merged_cf = True
            elif T in rs or (x.head and set(rs) <= {C, F_}):
                whole = True
            else:
                raise _fail(node, f"reshape of {x.shape} to {out} merges axes {rs} in an order the engine "
                                  f"does not store ((C, F) frames flatten in C order)")
        if whole:
            if len(groups) != 1:
                raise _fail(node, f"reshape of {x.shape} to {out}: time merged with other axes must "
                                  f"flatten the whole window into one vector")
            return self._flatten_whole(node, vals, x, out)
        # real size-1 axes that go: assign them to the new size-1 axes in order, else squeeze them
        gone = [(j, r) for j, (d, r) in enumerate(zip(x.shape, x.roles)) if d == 1 and r in (C, F_, T)]
        free = [j for j in range(1, len(out)) if out[j] == 1]
        for (_, r), j in zip(gone, free):
            roles[j] = r
        lost = [a for a, _ in gone[len(free):]]
        if merged_cf:
            t = self.apply(node, M.FrameFlatten() if not x.head else L.Flatten(), [x.tensor], ".flatten")
            x = _Val(t, x.shape, x.roles, node=x.node)
        if lost:
            self._drop_unit_axes(node, vals, x, lost, shape=out, roles=roles)
        else:
            self.put(vals, node, x.tensor, out, roles)

    def _flatten_whole(self, node, vals, x, out):
        """The whole window (C[, F], T) into one vector, in ONNX's axis order: the Flatten head;
        a following Gemm/MatMul gets its columns permuted when that order is not ours."""
        axes = [j for j, r in enumerate(x.roles) if r in (C, F_, T)]
        ours = [x.axis(r) for r in (C, F_, T) if x.axis(r) is not None]
        perm = None
        if ours != axes:
            index = np.arange(int(np.prod([x.shape[a] for a in ours]))).reshape([x.shape[a] for a in ours])
            perm = np.moveaxis(index, list(range(len(ours))), [axes.index(a) for a in ours]).reshape(-1)
            if np.array_equal(perm, np.arange(perm.size)):  # only size-1 axes moved (a window of one position)
                perm = None
        t = self.apply(node, L.Flatten(), [x.tensor])
        roles = [U] * len(out)
        roles[0] = B
        big = [j for j in range(1, len(out)) if out[j] != 1]
        roles[big[0] if big else len(out) - 1] = C
        self.put(vals, node, t, out, roles, flat_perm=perm)


class _Named:
    """A stand-in ONNX node for messages and node names of layers made from several nodes."""

    def __init__(self, name, op_type):
        self.name, self.op_type = name, op_type
