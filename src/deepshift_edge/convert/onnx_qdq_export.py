"""Write a :class:`~deepshift_edge.QuantizedModel` as a QDQ ONNX graph: the same quantized model
(its own scales, zero points, int8 weights and int32 biases), on the whole window, for
onnxruntime to run (the bench's ``onnxruntime_int8`` column).

Each int8 operator becomes ``DequantizeLinear`` of its inputs, the float op, and a
``QuantizeLinear`` with the operator's output parameters, as onnxruntime's own quantizer writes
it; onnxruntime fuses these into its int8 kernels (QLinearConv, QGemm, ...). Fused ReLU/ReLU6
clamps above the zero point are a Relu/Clip before the QuantizeLinear. The 256-entry tables of
other activations are a ``Gather`` on the int8 table, so they are the model's bit for bit. The
float tail (Softmax) runs on the dequantized output. The graph has two outputs: ``y`` (float,
what the model outputs) and ``q`` (int8, what its int8 part ends in: for comparisons with
:meth:`~deepshift_edge.QuantizedModel.forward_int`).

Input: one window as ``(1, C, W)`` or ``(1, C, F, W)``. Only ``onnx`` is needed.
"""
from __future__ import annotations

import numpy as np

from ..errors import ModelError
from ..nn import layers as L
from ..nn import merge as M
from ..quant.qmodel import (ADD, CONCAT, CONV, GMAX, GMEAN, HEAD_FLAT, HEAD_LAST, LUT, MOVE, MUL, POOL)

__all__ = ["to_onnx_qdq"]

_BIG = 1 << 30


class _Writer:
    def __init__(self):
        from onnx import helper, numpy_helper

        self.h, self.nh = helper, numpy_helper
        self.nodes, self.inits = [], []
        self.n = 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, arr, base):
        name = self.name(base)
        self.inits.append(self.nh.from_array(np.asarray(arr), name))
        return name

    def op(self, op_type, inputs, base, **attrs):
        out = self.name(base)
        self.nodes.append(self.h.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def q(self, x, qp, base):
        s = self.const(np.float32(qp.scale), f"{base}_scale")
        z = self.const(np.int8(qp.zero_point), f"{base}_zero_point")
        return self.op("QuantizeLinear", [x, s, z], f"{base}_q"), (s, z)

    def dq(self, q, sz, base):
        return self.op("DequantizeLinear", [q, sz[0], sz[1]], f"{base}_dq")


def to_onnx_qdq(qmodel, opset: int = 17, int8_output: bool = True) -> bytes:
    """The QuantizedModel as a QDQ ONNX graph (bytes); ModelError for what it cannot write.
    ``int8_output=False`` leaves out the ``q`` output (a plain QDQ file, as
    :func:`~deepshift_edge.from_onnx` imports it back: the same int8 model; tables excepted,
    which the importer reads as onnxruntime writes them, a float op between DQ and Q)."""
    from onnx import TensorProto, helper

    model = qmodel.model
    specs = model.specs
    w = _Writer()
    fshape = tuple(model.frame_shape)
    x_in = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *fshape, model.window])
    two_d = len(fshape) == 2
    vals = {}   # qnode index -> (int8 tensor name, (scale, zp) names)
    spec_of = {}
    for k, qn in enumerate(qmodel.qnodes):
        base = qn.name.replace("/", "_")
        spec = specs[qn.model_nodes[-1]]
        spec_of[k] = spec
        if k == 0:
            vals[k] = w.q("x", qn.out, "input")
            continue
        ins = [w.dq(vals[j][0], vals[j][1], base) for j in qn.inputs]
        layer = qn.layer
        if qn.kind == CONV:
            y = _conv(w, qn, ins[0], specs[model.nodes[qn.model_nodes[0]].inputs[0]],
                      qmodel.qnodes[qn.inputs[0]].out.scale, base)
        elif qn.kind == POOL:
            y = _pool(w, layer, ins[0], two_d and spec.features is not None, base)
        elif qn.kind in (GMAX, GMEAN):
            pooled = w.op("GlobalMaxPool" if qn.kind == GMAX else "GlobalAveragePool", ins, base)
            y = w.op("Flatten", [pooled], base, axis=1)
        elif qn.kind == HEAD_LAST:
            src = spec_of[qn.inputs[0]]
            idx = w.const(np.int64(-1), f"{base}_last")
            axis = 3 if src.features is not None else 2
            y = w.op("Gather", [ins[0], idx], base, axis=axis)
            if src.features is not None:
                y = w.op("Flatten", [y], base, axis=1)
        elif qn.kind == HEAD_FLAT:
            y = w.op("Flatten", ins, base, axis=1)
        elif qn.kind == MOVE:
            y = _move(w, layer, ins[0], spec_of[qn.inputs[0]], base)
        elif qn.kind in (ADD, MUL, CONCAT):
            parts = _aligned(w, ins, [spec_of[j] for j in qn.inputs], base)
            if qn.kind == CONCAT:
                y = w.op("Concat", parts, base, axis=1)
            else:
                y = parts[0]
                for p in parts[1:]:
                    y = w.op("Add" if qn.kind == ADD else "Mul", [y, p], base)
        elif qn.kind == LUT:  # the model's own table: Gather(table, q + 128)
            q_in = vals[qn.inputs[0]][0]
            idx = w.op("Cast", [q_in], base, to=TensorProto.INT32)
            idx = w.op("Add", [idx, w.const(np.int32(128), f"{base}_offset")], base)
            table = w.const(np.asarray(qn.table, np.int8), f"{base}_table")
            vals[k] = (w.op("Gather", [table, idx], base, axis=0), _params(w, qn.out, base))
            continue
        else:  # pragma: no cover - every int8 kind is above
            raise ModelError(f"to_onnx_qdq: no ONNX form for int8 operator {qn.kind}")
        if qn.lo > -128 or qn.hi < 127:  # a fused ReLU/ReLU6 above the output's range
            lo = np.float32(qn.out.real_of(qn.lo))
            hi = np.float32(qn.out.real_of(qn.hi))
            y = w.op("Clip", [y, w.const(lo, f"{base}_lo"), w.const(hi, f"{base}_hi")], base)
        vals[k] = w.q(y, qn.out, base)
    last = len(qmodel.qnodes) - 1
    q_out, sz = vals[last]
    y = w.dq(q_out, sz, "output")
    for i in qmodel.tail:
        layer = model.nodes[i].layer
        if not isinstance(layer, L.Softmax):
            raise ModelError(f"to_onnx_qdq: float tail layer {type(layer).__name__} has no ONNX form here")
        y = w.op("Softmax", [y], "softmax", axis=1)
    w.nodes.append(helper.make_node("Identity", [y], ["y"], name="y"))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if int8_output:
        w.nodes.append(helper.make_node("Identity", [q_out], ["q"], name="q"))
        outputs.append(helper.make_tensor_value_info("q", TensorProto.INT8, None))
    graph = helper.make_graph(w.nodes, "deepshift_edge_int8", [x_in], outputs, w.inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="deepshift_edge")
    proto.ir_version = 8
    return proto.SerializeToString()


def _params(w, qp, base):
    return (w.const(np.float32(qp.scale), f"{base}_scale"), w.const(np.int8(qp.zero_point), f"{base}_zero_point"))


def _conv(w, qn, x, in_spec, s_in, base):
    layer = qn.layer
    c_out = qn.weight.shape[0]
    s_w = np.asarray(qn.w_scale, np.float32)
    zeros8 = np.zeros(c_out, np.int8)
    if isinstance(layer, L.Linear):
        wq = qn.weight[:, :, 0, 0]
        wt = w.op("DequantizeLinear", [w.const(wq, f"{base}_w"), w.const(s_w, f"{base}_ws"),
                                       w.const(zeros8, f"{base}_wz")], base, axis=0)
        b = _bias(w, qn, s_in, base)
        return w.op("Gemm", [x, wt, b], base, transB=1)
    if isinstance(layer, L._BatchNorm):
        if in_spec.is_vector:
            raise ModelError("to_onnx_qdq: a BatchNorm on a vector has no ONNX form here")
        kind_2d = in_spec.features is not None
        wq = qn.weight.reshape((c_out, 1, 1, 1) if kind_2d else (c_out, 1, 1))
        pads, strides, dil, group = ([0, 0, 0, 0] if kind_2d else [0, 0]), None, None, c_out
        kernel = [1, 1] if kind_2d else [1]
        strides = dil = [1] * len(kernel)
    else:
        kind_2d = isinstance(layer, L.Conv2d)
        wq = qn.weight if kind_2d else qn.weight[:, :, 0, :]
        if kind_2d:
            pads = [layer.pad_f[0], layer.pad_t[0], layer.pad_f[1], layer.pad_t[1]]
            strides, dil = [layer.s_f, layer.s_t], [layer.d_f, layer.d_t]
        else:
            pads = [layer.pad_t[0], layer.pad_t[1]]
            strides, dil = [layer.s_t], [layer.d_t]
        group = layer.groups
        kernel = list(wq.shape[2:])
    wt = w.op("DequantizeLinear", [w.const(np.ascontiguousarray(wq, np.int8), f"{base}_w"),
                                   w.const(s_w, f"{base}_ws"), w.const(zeros8, f"{base}_wz")], base, axis=0)
    b = _bias(w, qn, s_in, base)
    return w.op("Conv", [x, wt, b], base, kernel_shape=kernel, pads=[int(p) for p in pads],
                strides=[int(s) for s in strides], dilations=[int(d) for d in dil], group=int(group))


def _bias(w, qn, s_in, base):
    """The int32 bias, dequantized at s_in * s_w (what onnxruntime's fusion reads as int32)."""
    scale = (np.float32(s_in) * np.asarray(qn.w_scale, np.float32)).astype(np.float32)
    return w.op("DequantizeLinear", [w.const(np.asarray(qn.bias, np.int32), f"{base}_b"),
                                     w.const(scale, f"{base}_bs"),
                                     w.const(np.zeros(len(scale), np.int32), f"{base}_bz")], base, axis=0)


def _pool(w, layer, x, two_d, base):
    if two_d:
        kernel = [layer.k_f, layer.k_t]
        strides = [layer.s_f, layer.s_t]
        pads = [layer.pad_f[0], layer.pad_t[0], layer.pad_f[1], layer.pad_t[1]]
        dil = [1, layer.d_t]
    else:
        kernel, strides = [layer.k_t], [layer.s_t]
        pads, dil = [layer.pad_t[0], layer.pad_t[1]], [layer.d_t]
    attrs = dict(kernel_shape=kernel, strides=strides, pads=[int(p) for p in pads],
                 ceil_mode=int(bool(layer.ceil_mode)))
    if layer.op == "max":
        if any(d != 1 for d in dil):
            attrs["dilations"] = dil
        return w.op("MaxPool", [x], base, **attrs)
    return w.op("AveragePool", [x], base, count_include_pad=int(bool(layer.count_include_pad)), **attrs)


def _time_slice(w, x, lo, hi, axis, base):
    return w.op("Slice", [x, w.const(np.array([lo], np.int64), f"{base}_s"),
                          w.const(np.array([hi], np.int64), f"{base}_e"),
                          w.const(np.array([axis], np.int64), f"{base}_a")], base)


def _aligned(w, ins, specs, base):
    """Inputs of a merge cut to their common newest positions (as the int8 reference aligns them)."""
    if any(s.is_vector for s in specs):
        return ins
    n = min(s.length for s in specs)
    out = []
    for x, s in zip(ins, specs):
        axis = 3 if s.features is not None else 2
        out.append(x if s.length == n else _time_slice(w, x, s.length - n, _BIG, axis, base))
    return out


def _move(w, layer, x, spec, base):
    axis = 3 if spec.features is not None else 2
    if isinstance(layer, M.Pad):
        rank = axis + 1
        pads = [0] * (2 * rank)
        pads[axis], pads[rank + axis] = layer.left, layer.right
        return w.op("Pad", [x, w.const(np.array(pads, np.int64), f"{base}_pads")], base)
    if isinstance(layer, M.Crop):
        return _time_slice(w, x, layer.left, spec.length - layer.right, axis, base)
    if isinstance(layer, M.ChannelSlice):
        return _time_slice(w, x, layer.start, layer.stop, 1, base)
    if isinstance(layer, M.FrameFlatten):
        if spec.features is None:
            return x
        shape = np.array([1, spec.channels * spec.features, spec.length], np.int64)
        return w.op("Reshape", [x, w.const(shape, f"{base}_shape")], base)
    if isinstance(layer, L.Flatten):
        return w.op("Flatten", [x], base, axis=1)
    return x  # Identity, Dropout
