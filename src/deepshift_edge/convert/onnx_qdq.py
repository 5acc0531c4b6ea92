"""Import an already-quantized ONNX graph (QDQ format) as an int8 :class:`~deepshift_edge.QuantizedModel`.

A QDQ graph is a float graph with ``QuantizeLinear -> DequantizeLinear`` pairs on its
activations and ``DequantizeLinear`` on int8 weights and int32 biases, as
``onnxruntime.quantization.quantize_static(..., quant_format=QuantFormat.QDQ,
per_channel=True)`` writes it. The importer

1. reads every quantization parameter of the file: per-tensor scale and zero point of each
   quantized activation, per-output-channel int8 weights (zero point 0), int32 biases;
2. removes the Q/DQ nodes, leaving the float graph with dequantized weights, and converts
   it with :func:`~deepshift_edge.from_onnx` (every quantized value is kept as a node of its
   own, so the int8 operators requantize exactly where the file does);
3. rebuilds the int8 model with :func:`deepshift_edge.quant.quantize.quantize_with` from those
   parameters, and checks that its stream equals its integer reference bit for bit.

onnxruntime's quantizer removes a ReLU that follows a Conv/Gemm/Add (its output's zero point,
-128, is the clamp); the importer puts it back in the float graph (so the float model is the
original network) and the int8 conv clamps there as the file does. What the int8 engine has
no operator for is refused with the ONNX node named: asymmetric or per-input-channel
weights, a BatchNorm or per-channel affine left between quantized tensors, per-axis or
16-bit activations, int8 inputs/outputs of the graph, a requantization where the float
model has no operator. ``docs/converters.md`` says what converts and what it is tested
against (onnxruntime running the same file on every window).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np

from ..errors import ModelError, ModelFormatError
from ..nn import layers as L
from ..nn import merge as M

__all__ = ["from_onnx_qdq", "is_qdq", "int8_output_name"]

Q_OPS = ("QuantizeLinear", "DequantizeLinear")
_RELU_FUSES = ("Conv", "Gemm", "MatMul", "Add", "Sum", "BatchNormalization")  # int8 fuses a ReLU into these
# ops whose int8 form keeps its input's scale and zero point (onnxruntime's "direct 8-bit" ops)
_SHARED = ("Slice", "Pad", "MaxPool", "AveragePool", "Reshape", "Transpose", "Squeeze", "Unsqueeze",
           "Flatten", "Gather", "Split", "Identity", "Dropout")
_INT8, _UINT8, _INT32 = 3, 2, 6  # ONNX TensorProto data types


def is_qdq(model) -> bool:
    """True if the ONNX graph (a path, bytes or ModelProto) holds QuantizeLinear/DequantizeLinear."""
    from .onnx_import import _load_proto

    return any(n.op_type in Q_OPS for n in _load_proto(model).graph.node)


@dataclass
class _Hooks:
    barriers: set
    trace: Dict[str, str] = field(default_factory=dict)


@dataclass
class _Weight:
    q: np.ndarray          # the stored integers (int8 weights, int32 biases)
    scale: np.ndarray      # float32, scalar or per `axis`
    zero: np.ndarray
    axis: int
    node: str              # the DequantizeLinear node


def _fail(node, msg) -> ModelFormatError:
    return ModelFormatError(f"QDQ graph: ONNX node {getattr(node, 'name', '') or '<unnamed>'!r} "
                            f"({getattr(node, 'op_type', '?')}): {msg}")


class _Stripped:
    """The float graph of a QDQ file and the quantization parameters it held."""

    def __init__(self, proto):
        from onnx import helper, numpy_helper

        from ..quant import scheme as Q

        self.proto = type(proto).FromString(proto.SerializeToString())
        g = self.proto.graph
        consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        for n in g.node:
            if n.op_type == "Constant" and n.output and n.output[0] not in consts:
                a = {x.name: x for x in n.attribute}
                if "value" in a:
                    consts[n.output[0]] = numpy_helper.to_array(a["value"].t)
        inputs = {i.name for i in g.input if i.name not in consts}
        self.acts: Dict[str, "Q.QParams"] = {}      # float value -> QParams (int8 terms)
        self.unsigned: Dict[str, bool] = {}
        self.q_output: Dict[str, str] = {}         # float value -> its QuantizeLinear's output
        self.weights: Dict[str, _Weight] = {}      # float initializer -> stored integers
        alias: Dict[str, str] = {}                 # DQ output -> the float value it stands for
        q_of: Dict[str, tuple] = {}                # Q output -> (float input, params, node)
        readers: Dict[str, list] = {}
        for n in g.node:
            for i in n.input:
                readers.setdefault(i, []).append(n)
        outputs = {o.name for o in g.output}

        def params(n, what):
            scale = consts.get(n.input[1]) if len(n.input) > 1 else None
            if scale is None:
                raise _fail(n, f"the scale of a {what} must be a constant")
            zero = consts.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            if attrs.get("block_size", 0):
                raise _fail(n, "blocked quantization (block_size) is not supported")
            if zero is None:
                zero = np.zeros((), np.uint8)  # ONNX's default: uint8, zero point 0
            return np.asarray(scale, np.float32), np.asarray(zero), int(attrs.get("axis", 1))

        drop = set()
        for n in g.node:
            if n.domain not in ("", "ai.onnx") or n.op_type not in Q_OPS:
                continue
            drop.add(id(n))
            if n.op_type == "QuantizeLinear":
                x = n.input[0]
                scale, zero, axis = params(n, "QuantizeLinear")
                if x in consts:  # float weights quantized in the graph: quantize them here
                    q = _quantize_const(consts[x], scale, zero, axis)
                    q_of[n.output[0]] = (None, (scale, zero, axis, q), n)
                    continue
                if scale.size != 1 or zero.size != 1:
                    raise _fail(n, "per-axis quantization of an activation: the int8 engine has one scale "
                                   "and zero point per tensor")
                if zero.dtype not in (np.int8, np.uint8):
                    raise _fail(n, f"activations quantized to {zero.dtype}: only int8 and uint8 convert")
                if not (np.isfinite(scale).all() and float(scale.reshape(-1)[0]) > 0):
                    raise _fail(n, f"scale {scale.reshape(-1)[0]} must be positive and finite")
                for r in readers.get(n.output[0], []):
                    if r.op_type != "DequantizeLinear":
                        raise _fail(r, f"reads the int8 value {n.output[0]!r} directly: every quantized "
                                       f"value must be read through DequantizeLinear")
                if n.output[0] in outputs:
                    raise _fail(n, "the graph outputs int8 values: only a float output (after "
                                   "DequantizeLinear) converts")
                z = int(zero.reshape(-1)[0]) - (128 if zero.dtype == np.uint8 else 0)
                qp = Q.QParams(float(scale.reshape(-1)[0]), z)
                old = self.acts.get(x)
                if old is not None and old != qp:
                    raise _fail(n, f"the value {x!r} is quantized twice with different parameters")
                self.acts[x] = qp
                self.unsigned[x] = zero.dtype == np.uint8
                self.q_output[x] = n.output[0]
                q_of[n.output[0]] = (x, (scale, zero, axis, None), n)
            else:
                src = n.input[0]
                scale, zero, axis = params(n, "DequantizeLinear")
                if src in consts or (src in q_of and q_of[src][0] is None):
                    q = consts[src] if src in consts else q_of[src][1][3]
                    if src in q_of:
                        scale, zero, axis = q_of[src][1][:3]
                    self.weights[n.output[0]] = _Weight(np.asarray(q), scale, zero, axis, n.name)
                    consts[n.output[0]] = _dequantize_const(np.asarray(q), scale, zero, axis)
                    continue
                if src in inputs:
                    raise _fail(n, "the graph input is int8: the importer takes float input frames "
                                   "(quantized by the model's first QuantizeLinear)")
                if src not in q_of:
                    raise _fail(n, f"dequantizes {src!r}, which no QuantizeLinear of the graph writes")
                x, (s0, z0, _, _), qn = q_of[src]
                if not (np.array_equal(s0, scale) and np.array_equal(z0, zero)):
                    raise _fail(n, f"dequantizes {src!r} with other parameters than its QuantizeLinear "
                                   f"({qn.name!r}) used")
                alias[n.output[0]] = x

        # The float graph: no Q/DQ, dequantized initializers, DQ outputs read as their float value.
        keep = [n for n in g.node if id(n) not in drop]
        for n in keep:
            for j, i in enumerate(n.input):
                if i in alias:
                    n.input[j] = alias[i]
        for o in g.output:
            if o.name in alias:
                o.name = alias[o.name]
        new_inits = [numpy_helper.from_array(np.asarray(consts[name], np.float32), name)
                     for name in self.weights]
        used = {i for n in keep for i in n.input}
        old_inits = [t for t in g.initializer if t.name in used and t.name not in self.weights]
        del g.initializer[:]
        g.initializer.extend(old_inits + [t for t in new_inits if t.name in used])
        del g.value_info[:]
        # onnxruntime removes a Relu/Clip whose input has no other reader (the output's zero
        # point, -128, is that clamp): put it back, so that the float model is the network the
        # file computes. After a Conv/Gemm/Add the int8 op clamps there itself (the value before
        # the ReLU takes the same parameters); after an op that keeps its input's scale in int8
        # (Slice, MaxPool, Pad, ...) the file requantizes there, and the ReLU is that step.
        self.relus = set()
        final = []
        consumers: Dict[str, list] = {}
        for n in keep:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        for n in keep:
            final.append(n)
            if not n.output or n.output[0] not in self.acts:
                continue
            out = n.output[0]
            qp = self.acts[out]
            if qp.zero_point != Q.QMIN or any(c.op_type in ("Relu", "Clip") for c in consumers.get(out, [])):
                continue
            if n.op_type in _RELU_FUSES:
                fuses = True
            elif n.op_type in _SHARED and n.input and self.acts.get(n.input[0], qp) != qp:
                fuses = False
            else:
                continue
            pre = f"{out}__before_relu"
            n.output[0] = pre
            final.append(helper.make_node("Relu", [pre], [out], name=f"{n.name or n.op_type}__relu"))
            self.relus.add(out)
            if fuses:
                self.acts[pre] = qp
        del g.node[:]
        g.node.extend(final)
        self.nodes = {o: n for n in g.node for o in n.output}


def _axis_shape(arr, scale, axis):
    if scale.size == 1:
        return scale.reshape(()), None
    shape = [1] * arr.ndim
    ax = axis % arr.ndim
    shape[ax] = -1
    return scale.reshape(shape), ax


def _dequantize_const(q, scale, zero, axis) -> np.ndarray:
    """DequantizeLinear in float32, as onnxruntime computes it."""
    s, _ = _axis_shape(q, scale, axis)
    z, _ = _axis_shape(q, np.asarray(zero), axis)
    return ((q.astype(np.int64) - z.astype(np.int64)).astype(np.float32) * s).astype(np.float32)


def _quantize_const(x, scale, zero, axis) -> np.ndarray:
    """QuantizeLinear (round half to even, saturate) of a constant."""
    s, _ = _axis_shape(np.asarray(x), scale, axis)
    z, _ = _axis_shape(np.asarray(x), np.asarray(zero), axis)
    info = np.iinfo(np.asarray(zero).dtype)
    q = np.rint(np.asarray(x, np.float32) / s) + z.astype(np.float64)
    return np.clip(q, info.min, info.max).astype(np.asarray(zero).dtype)


def int8_output_name(model) -> Optional[str]:
    """The ONNX value holding what the imported model's int8 part ends in: the output of the
    QuantizeLinear of the logits when the graph ends in a (quantized) Softmax, else of the
    graph output's QuantizeLinear. For comparisons at the int8 level (add it as a graph output)."""
    from .onnx_import import _load_proto

    g = _load_proto(model).graph
    prod = {o: n for n in g.node for o in n.output}

    def through_qdq(name):
        n = prod.get(name)
        if n is not None and n.op_type == "DequantizeLinear":
            q = prod.get(n.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                return q
        return None

    q = through_qdq(g.output[0].name)
    if q is None:
        return None
    src = prod.get(q.input[0])
    if src is not None and src.op_type == "Softmax":
        inner = through_qdq(src.input[0])
        return inner.output[0] if inner is not None else None
    return q.output[0]


def from_onnx_qdq(model, window: Optional[int] = None, *, time_axis=None, check: bool = True,
                  return_report: bool = False, seed: int = 0, labels=None, metadata=None):
    """Convert a QDQ ONNX graph (a path, bytes or ``onnx.ModelProto``) into a
    :class:`~deepshift_edge.QuantizedModel` with the file's own scales, zero points, int8
    weights and int32 biases. ``window``, ``time_axis``, ``labels``, ``metadata`` as for
    :func:`~deepshift_edge.from_onnx`. ``check``: the float model is checked as from_onnx
    does, and the int8 stream against its integer reference (bit for bit) on random input.
    """
    try:
        import onnx  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("from_onnx needs the 'onnx' package: pip install onnx") from exc
    from .onnx_import import _annotate, _from_onnx, _load_proto

    try:
        return _convert(_load_proto(model), window, time_axis, check, return_report, seed, labels, metadata,
                        _from_onnx, _annotate)
    except (ModelFormatError, ImportError, OSError):
        raise
    except ModelError as exc:
        raise ModelFormatError(f"QDQ graph: {exc}") from None
    except MemoryError:
        raise ModelFormatError("ONNX model too large to convert (ran out of memory)") from None
    except Exception as exc:  # a corrupt graph: report it as such
        raise ModelFormatError(f"not a convertible QDQ ONNX model: {type(exc).__name__}: {exc}") from exc


def _convert(proto, window, time_axis, check, return_report, seed, labels, metadata, from_onnx_, annotate,
             arithmetic: str = "onnxruntime"):
    """arithmetic: whose integer arithmetic the model takes, "onnxruntime" (float
    requantization) or "tflite" (gemmlowp's fixed point, the Linear heads rounding once; the
    TFLite importer, which comes through here, marks its own FULLY_CONNECTED ops after)."""
    from ..quant.quantize import linear_heads, quantize_with, set_single_rounding

    st = _Stripped(proto)
    hooks = _Hooks(barriers=set(st.acts))
    model, report = from_onnx_(st.proto, window, time_axis, check=check, return_report=True, seed=seed,
                               semantics="window", hooks=hooks)
    onnx_of: Dict[str, list] = {}  # model node -> the ONNX values it holds
    for value, node_name in hooks.trace.items():
        onnx_of.setdefault(node_name, []).append(value)
    tensors, source = _node_params(st, hooks.trace)
    model, split = _unfuse(st, model, tensors, onnx_of)
    annotate(model, labels, metadata)
    _propagate_shared(model, tensors, source)
    _check_shared(st, model, tensors, source, onnx_of)
    convs = {}
    for i, node in enumerate(model.nodes[1:], start=1):
        if isinstance(node.layer, (L._Conv, L.Linear)):
            convs[node.name] = _conv_params(st, model, i, onnx_of, tensors)
        elif isinstance(node.layer, L._BatchNorm):
            convs[node.name] = _affine_params(model, i, tensors)
    try:
        # onnxruntime requantizes its QLinearConv, QGemm, QLinearGlobalAveragePool and QLinearMul
        # in float (MlasRequantizeOutput and alike): the imported model does the same, to run to
        # its integers (its QLinearAdd is fixed point, as ours, with other constants)
        means_and_muls = [n.name for n in model.nodes if isinstance(n.layer, (L.GlobalAvgPool, M.Mul))]
        in_float = list(convs) + means_and_muls if arithmetic == "onnxruntime" else []
        qm = quantize_with(model, tensors, convs, float_rounding=in_float,
                           calibration={"windows": 0, "method": "onnx-qdq", "source": "onnx QDQ graph"})
        if arithmetic == "tflite":
            set_single_rounding(qm, linear_heads(qm))  # the library's convention (quantize.linear_heads)
    except ModelError as exc:
        msg = str(exc)
        if "no scale and zero point for node" in msg:
            name = msg.split("'")[1] if "'" in msg else ""
            values = onnx_of.get(name, [])
            raise ModelFormatError(f"QDQ graph: the value of node {name!r} (ONNX {values[:3]}) is not quantized "
                                   f"(no QuantizeLinear) and needs its own int8 scale: an op onnxruntime left "
                                   f"in float between int8 ops; quantize it too (op_types_to_quantize)") from None
        raise ModelFormatError(f"QDQ graph: {msg}") from None
    own = {name for name, value in source.items() if hooks.trace.get(value) == name}
    qm.onnx_values = {}  # int8 operator -> the file's int8 value it computes (for comparisons)
    for qn in qm.qnodes:
        name = model.nodes[qn.model_nodes[-1]].name
        if name in own and source[name] in st.q_output:
            qm.onnx_values[qn.name] = st.q_output[source[name]]
    lines = [report, f"  int8: {len(qm.qnodes)} int8 operators from the file's scales and zero points"
             + (f", float tail {[model.nodes[i].name for i in qm.tail]}" if qm.tail else "")
             + (f"; ReLU restored after {len(st.relus)} ops whose output zero point is -128" if st.relus else "")
             + (f"; {split} requantization(s) of the file kept apart from the op before" if split else "")]
    if check:
        lines.append(_check_int8(qm, seed))
    report = "\n".join(lines)
    return (qm, report) if return_report else qm


def _node_params(st: "_Stripped", trace) -> tuple:
    """{model node: QParams} from the file's QuantizeLinear nodes, and the ONNX value each came
    from. Two different parameters on one node: the file requantizes where the float model has
    no operator."""
    tensors, source = {}, {}
    for value, qp in st.acts.items():
        name = trace.get(value)
        if name is None:
            continue
        if name in tensors and tensors[name] != qp:
            raise _fail(st.nodes.get(value), f"requantizes {source[name]!r} (scale {tensors[name].scale:.6g}, "
                                             f"zero point {tensors[name].zero_point}) to scale {qp.scale:.6g}, "
                                             f"zero point {qp.zero_point} where the float model has no "
                                             f"operator (node {name!r}): the int8 engine cannot rescale there")
        if name not in tensors or (source[name] not in st.q_output and value in st.q_output):
            tensors[name] = qp  # named after the first value of the file that holds it
            source[name] = value
    return tensors, source


def _shared(layer) -> bool:
    """Layers whose int8 operator keeps its input's scale and zero point."""
    if isinstance(layer, (L._Pool, L.GlobalMaxPool, L.LastFrame, L.Flatten, M.Pad, M.Crop, M.ChannelSlice,
                          M.FrameFlatten)):
        return True
    return type(layer) in (L.Identity, L.Dropout)


def _unfuse(st, model, tensors, onnx_of) -> tuple:
    """The int8 quantizer fuses BatchNorm into the conv before it and ReLU/ReLU6 into their
    producer. Where the file quantizes in between (its own scale on the producer's output), an
    Identity node keeps them apart, so that the int8 model requantizes twice, as the file does.
    A BatchNorm after a conv whose output the file does not quantize is refused."""
    from ..nn import merge as M
    from ..nn.graph import GraphNode, Model

    consumers = model.consumers()
    nodes = model.nodes
    split = set()
    for i, node in enumerate(nodes[1:], start=1):
        layer = node.layer
        if not node.inputs:
            continue
        p = node.inputs[0]
        if len(consumers[p]) != 1:
            continue
        pl = nodes[p].layer
        if isinstance(layer, L._BatchNorm):
            fuses = isinstance(pl, (L._Conv, L.Linear))
        elif isinstance(layer, L.ReLU6):
            fuses = isinstance(pl, (L._Conv, L.Linear, L._BatchNorm))
        elif isinstance(layer, L.ReLU):
            fuses = isinstance(pl, (L._Conv, L.Linear, L._BatchNorm, M.Add))
        else:
            continue
        if not fuses:
            continue
        mine, theirs = tensors.get(node.name), tensors.get(nodes[p].name)
        if theirs is None:
            if isinstance(layer, L._BatchNorm):
                raise _fail(_onnx_producer(st, onnx_of.get(node.name, [])),
                            f"a BatchNorm (node {node.name!r}) after a conv whose output is not quantized: the "
                            f"int8 engine would fold it into the file's int8 weights; fold it before "
                            f"quantizing (onnxruntime.quantization.quant_pre_process)")
            continue
        if mine != theirs:
            split.add(i)
    if not split:
        return model, 0
    new, index = [], {}
    for i, node in enumerate(nodes):
        inputs = tuple(index[j] for j in node.inputs)
        if i in split:
            name = f"{nodes[node.inputs[0]].name}.requant"
            new.append(GraphNode(name, L.Identity(), (inputs[0],)))
            tensors[name] = tensors[nodes[node.inputs[0]].name]
            inputs = (len(new) - 1,) + inputs[1:]
        index[i] = len(new)
        new.append(GraphNode(node.name, node.layer, inputs))
    rebuilt = Model.from_nodes(model.in_features, new, window=model.window)
    return rebuilt, len(split)


def _propagate_shared(model, tensors, source):
    """An activation the file leaves in float before an op that keeps its input's scale in int8
    (DQ -> Elu -> AveragePool -> Q): its table quantizes at the scale of the value it flows
    into, when no entry saturates there (else the int8 op would clip what the file's float
    pool averages: that graph is refused, the activation having no scale of its own)."""
    from ..nn import merge as M
    from ..quant import scheme as Q

    consumers = model.consumers()
    for i in range(len(model.nodes) - 1, 0, -1):
        node = model.nodes[i]
        if node.name in tensors or not node.inputs:
            continue
        cons = [model.nodes[c] for c in consumers[i]]
        if not cons or not all(_shared(c.layer) and c.name in tensors for c in cons):
            continue
        qps = {tensors[c.name] for c in cons}
        if len(qps) != 1:
            continue
        qp = qps.pop()
        if _shared(node.layer):
            tensors[node.name] = qp
            source[node.name] = source[cons[0].name]
            continue
        layer = node.layer
        src = tensors.get(model.nodes[node.inputs[0]].name)
        if src is None or isinstance(layer, (L._Conv, L.Linear, L._BatchNorm, L.Softmax, L._Head, L._Pool,
                                             M.Add, M.Mul, M.Concat)) or len(node.inputs) != 1:
            continue
        real = src.scale * (np.arange(Q.QMIN, Q.QMAX + 1) - src.zero_point)
        try:
            y = np.asarray(layer.forward(real[None, :] if isinstance(layer, L.PReLU) else real), np.float64)
        except Exception:  # pragma: no cover - a layer that is no per-frame function
            continue
        lo, hi = qp.real_of(Q.QMIN) - qp.scale / 2, qp.real_of(Q.QMAX) + qp.scale / 2
        if np.all(np.isfinite(y)) and y.min() >= lo and y.max() <= hi:
            tensors[node.name] = qp
            source[node.name] = source[cons[0].name]


def _check_shared(st, model, tensors, source, onnx_of):
    """An op that keeps its input's scale in int8 but has other parameters in the file."""
    for node in model.nodes[1:]:
        if not _shared(node.layer) or node.name not in tensors or not node.inputs:
            continue
        src = model.nodes[node.inputs[0]].name
        if src in tensors and tensors[src] != tensors[node.name]:
            onnx_node = _onnx_producer(st, onnx_of.get(node.name, []))
            raise _fail(onnx_node, f"requantizes its input (scale {tensors[src].scale:.6g}, zero point "
                                   f"{tensors[src].zero_point}) to scale {tensors[node.name].scale:.6g}, zero "
                                   f"point {tensors[node.name].zero_point}: the int8 {type(node.layer).__name__} "
                                   f"keeps its input's scale")


def _affine_params(model, i: int, tensors) -> tuple:
    """A BatchNorm (or per-channel scale and shift) on its own: a depthwise 1x1 int8 conv whose
    weight is +-127 at scale |gamma/sqrt(var+eps)|/127 (the float factor to float32 precision) and
    whose bias is the shift at s_in*s_w: the file computes it in float on dequantized values."""
    from ..quant import scheme as Q

    node = model.nodes[i]
    scale, shift = node.layer.scale_shift()
    scale = np.asarray(scale, np.float64)
    src = model.nodes[node.inputs[0]].name
    if src not in tensors:
        raise ModelFormatError(f"QDQ graph: the input of the BatchNorm / per-channel affine {node.name!r} is "
                               f"not quantized")
    s_in = tensors[src].scale
    s_w = np.where(scale != 0, np.abs(scale) / Q.QMAX, 1.0).astype(np.float32)
    wq = np.where(scale > 0, Q.QMAX, np.where(scale < 0, -Q.QMAX, 0)).astype(np.int8)[:, None, None, None]
    bias = np.rint(np.asarray(shift, np.float64) / (s_in * s_w.astype(np.float64)))
    if np.abs(bias).max(initial=0) > Q.INT32_MAX:
        raise ModelFormatError(f"QDQ graph: the shift of {node.name!r} overflows int32 at scale s_in*s_w")
    return wq, s_w, bias.astype(np.int32)


def _onnx_producer(st: _Stripped, values):
    for v in values:
        if v in st.nodes:
            return st.nodes[v]
    return None


def _conv_params(st: _Stripped, model, i: int, onnx_of, tensors) -> tuple:
    """(int8 weights (out, in/g, kf, kt), float32 per-channel scales, int32 bias) of model node i,
    read from the ONNX Conv/Gemm/MatMul it came from."""
    from ..quant import scheme as Q
    from ..quant.quantize import _weight4

    node = model.nodes[i]
    layer = node.layer
    onnx_node = None
    for v in onnx_of.get(node.name, []):
        n = st.nodes.get(v)
        if n is not None and n.op_type in ("Conv", "Gemm", "MatMul"):
            onnx_node = n
            break
    if onnx_node is None:
        raise ModelFormatError(f"QDQ graph: model node {node.name!r} ({type(layer).__name__}) comes from no "
                               f"ONNX Conv/Gemm/MatMul with int8 weights")
    w_name = onnx_node.input[1]
    wt = st.weights.get(w_name)
    if wt is None:
        raise _fail(onnx_node, "its weights are float: the int8 engine needs them quantized "
                               "(DequantizeLinear of an int8 initializer)")
    if wt.q.dtype != np.int8:
        raise _fail(onnx_node, f"weights of type {wt.q.dtype}: only int8 weights convert")
    if np.any(wt.zero != 0):
        raise _fail(onnx_node, "asymmetric weights (a zero point other than 0): the int8 engine takes "
                               "symmetric weights (weight_type=QInt8, zero point 0)")
    w4, _ = _weight4(layer, model.specs[node.inputs[0]])
    n_out = w4.shape[0]
    if wt.scale.size == 1:
        s_w = np.full(n_out, float(wt.scale.reshape(-1)[0]), np.float32)
    else:
        out_axis = {"Conv": 0, "MatMul": 1}.get(onnx_node.op_type)
        if onnx_node.op_type == "Gemm":
            trans = any(a.name == "transB" and a.i for a in onnx_node.attribute)
            out_axis = 0 if trans else 1
        if wt.axis % wt.q.ndim != out_axis or wt.scale.size != n_out:
            raise _fail(onnx_node, f"weights quantized along axis {wt.axis} ({wt.scale.size} scales): the int8 "
                                   f"engine takes one scale per output channel (axis {out_axis})")
        s_w = wt.scale.reshape(-1).astype(np.float32)
    ratio = w4 / s_w.astype(np.float64).reshape(-1, 1, 1, 1)
    wq = np.rint(ratio)
    if not np.allclose(ratio, wq, atol=1e-3):
        raise _fail(onnx_node, "its weights are not the file's int8 values times their scales (alpha != 1?)")
    if np.abs(wq).max(initial=0) > Q.QMAX:
        raise _fail(onnx_node, "int8 weights of -128: the int8 engine's symmetric weights lie in [-127, 127] "
                               "(as onnxruntime's symmetric QInt8 weights do)")
    wq = wq.astype(np.int8)
    src = model.nodes[node.inputs[0]].name
    if src not in tensors:
        raise _fail(onnx_node, "its input is not quantized (no QuantizeLinear before it)")
    s_in = tensors[src].scale
    b_name = onnx_node.input[2] if len(onnx_node.input) > 2 and onnx_node.input[2] else None
    bias = np.zeros(n_out, np.int32)
    if b_name is not None:
        bt = st.weights.get(b_name)
        if bt is not None:
            if bt.q.dtype != np.int32 or np.any(bt.zero != 0) or bt.q.size != n_out:
                raise _fail(onnx_node, f"bias of type {bt.q.dtype} with zero point {np.ravel(bt.zero)[:1]}: "
                                       f"expected int32, zero point 0, one per output channel")
            want = s_in * s_w.astype(np.float64)
            got = np.broadcast_to(bt.scale.astype(np.float64).reshape(-1), (n_out,))
            if not np.allclose(got, want, rtol=1e-5, atol=0):
                raise _fail(onnx_node, "its int32 bias has a scale other than input scale x weight scale")
            bias = bt.q.reshape(-1).astype(np.int32)
        else:  # a float bias: quantized at s_in * s_w here
            b = np.asarray(layer.bias, np.float64)
            bias = np.clip(np.rint(b / (s_in * s_w.astype(np.float64))), Q.INT32_MIN, Q.INT32_MAX).astype(np.int32)
    return wq, s_w, bias


def _check_int8(qm, seed: int) -> str:
    """The int8 stream equals the integer reference on random input, bit for bit."""
    rng = np.random.default_rng(seed + 1)
    n = qm.window + 2 * max(qm.hop, 1) + 8
    x = rng.standard_normal((n,) + tuple(qm.frame_shape)).astype(np.float32)
    want = qm.int_output.out.dequantize(qm.forward_int(x))
    stream = qm.stream()
    got = stream.push_many(x)
    if qm.tail:
        ref = qm.forward(x)
        ok = got.shape == ref.shape and np.allclose(got, ref, rtol=1e-5, atol=1e-6)
    else:
        ok = got.shape == want.shape and np.array_equal(got, want)
    if not ok:
        raise ModelFormatError("the imported int8 model streams other values than its integer reference: "
                               "please report this")
    return (f"  check: int8 stream vs integer reference on {len(got)} windows of random input: "
            + ("equal (float tail within float32 rounding)" if qm.tail else "bit-exact"))
