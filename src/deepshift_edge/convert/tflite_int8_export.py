"""Write a :class:`~deepshift_edge.QuantizedModel` as a full-integer ``.tflite`` flatbuffer:
the same int8 model (its own scales, zero points, int8 weights and int32 biases) on one window,
for LiteRT to run (the bench's ``litert_int8`` column). No TensorFlow: the flatbuffer is
written with the schema code :mod:`tflite_export` uses.

Input ``x``: float32 ``(1, W, *frame_shape)``, the frames as they come; ``QUANTIZE`` at the
model's input parameters. Outputs: ``y`` (float32, the model's output: ``DEQUANTIZE`` of the
int8 part, then the float tail) and ``q`` (int8, what the int8 part ends in, for comparison
with :meth:`~deepshift_edge.QuantizedModel.forward_int`).

int8 operator -> TFLite (NHWC, H = features, W = time):

==================  ===========================================================================
conv (Conv1d/2d)    PAD at the input's zero point for any padding, then CONV_2D (per-channel
                    int8 filter, int32 bias at s_in * s_w), DEPTHWISE_CONV_2D for a depthwise
                    conv, SPLIT + CONV_2D + CONCATENATION for other groups
conv (Linear)       after the head: FULLY_CONNECTED (per-channel int8 weights), which LiteRT
                    requantizes with single rounding (the Linear's own, as quantize() makes it);
                    a twice-rounded one (rounding "double") a 1x1 CONV_2D on (1, 1, 1, C), as
                    per frame
ReLU / ReLU6 clamp  the fused activation of the producing op
pool                MAX_POOL_2D / AVERAGE_POOL_2D (VALID; same parameters in and out, then an
                    int8 QUANTIZE to the pool's own)
gmean / gmax        MEAN / REDUCE_MAX over (H, W)
add / mul           ADD / MUL (TFLite's integer scheme, which is the model's)
concat              QUANTIZE of each input to the output's parameters, CONCATENATION
lut                 GATHER of the model's own 256-entry table at CAST(q) + 128: its values exactly
last / flatten      SLICE + RESHAPE / TRANSPOSE + RESHAPE
Pad / Crop / slice  PAD / SLICE
Softmax (tail)      SOFTMAX in float after DEQUANTIZE
==================  ===========================================================================

Where LiteRT's kernels round otherwise than the model's fixed point (XNNPACK requantizes in
float; its pools divide their own way), outputs may differ by a least significant bit: the
bench reports how many windows are exact.
"""
from __future__ import annotations

import numpy as np

from ..errors import ModelError
from ..nn import layers as L
from ..nn import merge as M
from ..quant.qmodel import (ADD, CONCAT, CONV, GMAX, GMEAN, HEAD_FLAT, HEAD_LAST, LUT, MOVE, MUL, POOL)
from . import tflite_export as T

__all__ = ["to_tflite_int8"]

# TFLite op versions of the int8 kernels (per-channel CONV_2D/DEPTHWISE are version 3)
_VERSIONS = {"CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 5, "ADD": 2, "MUL": 2, "QUANTIZE": 2, "DEQUANTIZE": 2,
             "MAX_POOL_2D": 2, "AVERAGE_POOL_2D": 2, "MEAN": 2, "REDUCE_MAX": 2, "TRANSPOSE": 2,
             "SLICE": 2, "PAD": 2, "CONCATENATION": 2, "SPLIT": 2, "GATHER": 2, "RESHAPE": 1,
             "SOFTMAX": 1, "CAST": 1}


class _QGraph(T._Graph):
    """A _Graph whose tensors may carry int8 quantization parameters."""

    def __init__(self):
        super().__init__()
        self.quant = {}  # tensor index -> (scales, zero points, quantized dimension)

    def qtensor(self, shape, name, qp, dtype="INT8", data=None) -> int:
        t = self.tensor(shape, name, dtype, data)
        self.quant[t] = ([float(qp.scale)], [int(qp.zero_point)], 0)
        return t

    def qop(self, code, inputs, out_shape, qp, name, options=None, **opts) -> int:
        out = self.qtensor(out_shape, name, qp)
        self.ops.append(T._Op(code, list(inputs), [out], options, opts))
        return out


class _Params:
    """Stand-in QParams for tensors that are not one of the model's (e.g. a pool before the
    QUANTIZE to the pool's own parameters)."""

    def __init__(self, scale, zero_point):
        self.scale, self.zero_point = scale, zero_point


class _Int8Exporter(T._Builder):
    def __init__(self, qmodel):
        self.qm = qmodel
        self.model = qmodel.model
        self.two_d = len(self.model.frame_shape) == 2
        self.g = _QGraph()
        self.n = 0

    # ------------------------------------------------------------------ helpers
    def spec(self, k):
        """The float model's spec of int8 node k's value (features None: a 1-D value)."""
        return self.model.specs[self.qm.qnodes[k].model_nodes[-1]] if k else self.model.specs[0]

    def i32(self, arr, what):
        return self.g.const(np.asarray(arr, np.int32), self.name(what))

    def reshape(self, t, shape, qp, what="reshape"):
        return self.g.qop("RESHAPE", [t, self.i32(shape, what + "_shape")], shape, qp, self.name(what))

    def transpose(self, t, perm, qp, what="transpose"):
        shape = tuple(self.g.shape(t)[p] for p in perm)
        return self.g.qop("TRANSPOSE", [t, self.i32(perm, what + "_perm")], shape, qp, self.name(what),
                          "TransposeOptions")

    def slice(self, t, begin, size, qp, what="slice"):
        return self.g.qop("SLICE", [t, self.i32(begin, what + "_begin"), self.i32(size, what + "_size")],
                          tuple(size), qp, self.name(what), "SliceOptions")

    def requant(self, t, qp_in, qp_out, what="requantize"):
        """int8 -> int8 at other parameters (QUANTIZE), or t itself when they are the same."""
        if float(qp_in.scale) == float(qp_out.scale) and int(qp_in.zero_point) == int(qp_out.zero_point):
            return t
        return self.g.qop("QUANTIZE", [t], self.g.shape(t), qp_out, self.name(what))

    @staticmethod
    def activation(qn) -> str:
        """The fused activation whose quantized range is the node's clamp [lo, hi]."""
        if qn.lo <= -128 and qn.hi >= 127:
            return "NONE"
        zp, s = qn.out.zero_point, qn.out.scale
        relu_lo = max(-128, zp)
        if qn.lo == relu_lo and qn.hi == 127:
            return "RELU"
        if qn.lo == relu_lo and qn.hi == min(127, zp + int(round(6.0 / s))):
            return "RELU6"
        raise ModelError(f"to_tflite (int8): node {qn.name}: clamp [{qn.lo}, {qn.hi}] is neither TFLite's "
                         f"RELU nor RELU6 range at its output parameters")

    # ------------------------------------------------------------------ operators
    def conv(self, qn, t, qp_in):
        layer = qn.layer
        g = self.g
        wq = np.asarray(qn.weight, np.int8)  # (O, I/g, kf, kt)
        o = wq.shape[0]
        s_w = np.asarray(qn.w_scale, np.float64)
        bias = np.asarray(qn.bias, np.int32)
        act = self.activation(qn)
        if isinstance(layer, L.Linear) and len(g.shape(t)) == 2 and qn.rounding == "double":
            # LiteRT's FULLY_CONNECTED rounds once: a twice-rounded Linear is a 1x1 CONV_2D
            t = self.reshape(t, (1, 1, 1, g.shape(t)[1]), qp_in, "vector")
        if isinstance(layer, L.Linear) and len(g.shape(t)) == 2:  # after the head: FULLY_CONNECTED
            f = g.tensor(wq.shape[:2], self.name("fc_weights"), "INT8",
                         np.ascontiguousarray(wq[:, :, 0, 0], np.int8).tobytes())
            g.quant[f] = ([float(v) for v in s_w], [0] * o, 0)
            bt = g.tensor((o,), self.name("fc_bias"), "INT32", np.ascontiguousarray(bias, "<i4").tobytes())
            g.quant[bt] = ([float(qp_in.scale) * float(v) for v in s_w], [0] * o, 0)
            return g.qop("FULLY_CONNECTED", [t, f, bt], (1, o), qn.out, self.name("fc"), "FullyConnectedOptions",
                         FusedActivationFunction=act, KeepNumDims=False)
        if isinstance(layer, L.Linear):  # per frame: a 1x1 CONV_2D
            kf = kt = sf = st = df = dt = 1
            groups, pad_f, pad_t = 1, (0, 0), (0, 0)
        elif isinstance(layer, L._BatchNorm):
            kf = kt = sf = st = df = dt = 1
            groups, pad_f, pad_t = o, (0, 0), (0, 0)
            if len(g.shape(t)) != 4:
                raise ModelError(f"to_tflite (int8): node {qn.name}: a BatchNorm on a vector has no form here")
        elif isinstance(layer, L.Conv2d):
            kf, kt, sf, st, df, dt = layer.k_f, layer.k_t, layer.s_f, layer.s_t, layer.d_f, layer.d_t
            groups, pad_f, pad_t = layer.groups, tuple(layer.pad_f), tuple(layer.pad_t)
        else:
            kf, kt, sf, st, df, dt = 1, layer.k_t, 1, layer.s_t, 1, layer.d_t
            groups, pad_f, pad_t = layer.groups, (0, 0), tuple(layer.pad_t)
        if pad_f != (0, 0) or pad_t != (0, 0):  # zeros are the input's zero point (PAD int8 pads with it)
            shape = tuple(d + a + b for d, (a, b) in zip(g.shape(t), [(0, 0), pad_f, pad_t, (0, 0)]))
            t = g.qop("PAD", [t, self.i32([[0, 0], list(pad_f), list(pad_t), [0, 0]], "conv_pad")], shape, qp_in,
                      self.name("conv_pad"), "PadOptions")
        _, h, w, c = g.shape(t)
        ho = (h - (kf - 1) * df - 1) // sf + 1
        wo = (w - (kt - 1) * dt - 1) // st + 1
        common = dict(Padding="VALID", StrideW=st, StrideH=sf, DilationWFactor=dt, DilationHFactor=df,
                      FusedActivationFunction=act)
        out_shape = (1, ho, wo, o)

        def filt(arr, scales, dim, what):
            f = g.tensor(arr.shape, self.name(what), "INT8", np.ascontiguousarray(arr, np.int8).tobytes())
            g.quant[f] = ([float(v) for v in scales], [0] * len(scales), dim)
            return f

        def bias_t(b, scales, what):
            bt = g.tensor(b.shape, self.name(what), "INT32", np.ascontiguousarray(b, "<i4").tobytes())
            g.quant[bt] = ([float(qp_in.scale) * float(v) for v in scales], [0] * len(scales), 0)
            return bt

        if groups == c and c > 1 and o % c == 0 and wq.shape[1] == 1:  # depthwise
            f = filt(wq.transpose(1, 2, 3, 0), s_w, 3, "dw_filter")  # (1, kf, kt, O)
            return g.qop("DEPTHWISE_CONV_2D", [t, f, bias_t(bias, s_w, "dw_bias")], out_shape, qn.out,
                         self.name("dwconv"), "DepthwiseConv2DOptions", DepthMultiplier=o // c, **common)
        if groups == 1:
            f = filt(wq.transpose(0, 2, 3, 1), s_w, 0, "filter")  # OHWI
            return g.qop("CONV_2D", [t, f, bias_t(bias, s_w, "bias")], out_shape, qn.out, self.name("conv"),
                         "Conv2DOptions", **common)
        cg, og = c // groups, o // groups
        axis = self.i32(np.array(3).reshape(()), "split_axis")
        parts = [g.qtensor((1, h, w, cg), self.name("split"), qp_in) for _ in range(groups)]
        g.ops.append(T._Op("SPLIT", [axis, t], parts, "SplitOptions", {"NumSplits": groups}))
        outs = []
        for i, p in enumerate(parts):
            sl = slice(i * og, (i + 1) * og)
            f = filt(wq[sl].transpose(0, 2, 3, 1), s_w[sl], 0, "filter")
            outs.append(g.qop("CONV_2D", [p, f, bias_t(bias[sl], s_w[sl], "bias")], (1, ho, wo, og), qn.out,
                              self.name("conv"), "Conv2DOptions", **common))
        return g.qop("CONCATENATION", outs, out_shape, qn.out, self.name("concat"), "ConcatenationOptions",
                     Axis=3, FusedActivationFunction="NONE")

    def pool(self, qn, t, qp_in):
        layer = qn.layer
        _, h, w, c = self.g.shape(t)
        kf, kt, sf, st, dt = layer.k_f, layer.k_t, layer.s_f, layer.s_t, layer.d_t
        if tuple(layer.pad_t) != (0, 0) or tuple(layer.pad_f) != (0, 0) or layer.ceil_mode or dt != 1:
            raise ModelError(f"to_tflite (int8): node {qn.name}: TFLite's pools know VALID/SAME only (no "
                             f"PyTorch padding, ceil_mode or dilation)")
        code = "MAX_POOL_2D" if layer.op == "max" else "AVERAGE_POOL_2D"
        ho, wo = (h - kf) // sf + 1, (w - kt) // st + 1
        y = self.g.qop(code, [t], (1, ho, wo, c), qp_in, self.name(code.lower()), "Pool2DOptions", Padding="VALID",
                       StrideW=st, StrideH=sf, FilterWidth=kt, FilterHeight=kf, FusedActivationFunction="NONE")
        return self.requant(y, qp_in, qn.out, "pool_requantize")

    def global_pool(self, qn, t):
        code = "REDUCE_MAX" if qn.kind == GMAX else "MEAN"
        return self.g.qop(code, [t, self.i32([1, 2], "reduce_axes")], (1, self.g.shape(t)[3]), qn.out,
                          self.name(code.lower()), "ReducerOptions", KeepDims=False)

    def last(self, qn, t, qp_in, two_d):
        _, h, w, c = self.g.shape(t)
        y = self.slice(t, [0, 0, w - 1, 0], [1, h, 1, c], qp_in, "last_frame")
        if two_d:  # the (C, F) frame, channels last: (1, F, C) -> (1, C, F) at the end
            return self.reshape(y, (1, h, c), qp_in, "last_frame")
        return self.reshape(y, (1, c), qp_in, "last_frame")

    def flatten(self, t, qp):
        shape = self.g.shape(t)
        if len(shape) == 4:  # (1, H=F, W=T, C) -> C order of (C[, F], T)
            t = self.transpose(t, [0, 3, 1, 2], qp, "flatten")
        elif len(shape) == 3:  # (1, F, C) -> (1, C, F)
            t = self.transpose(t, [0, 2, 1], qp, "flatten")
        return self.reshape(t, (1, int(np.prod(self.g.shape(t)))), qp, "flatten")

    def move(self, qn, t, qp_in):
        layer = qn.layer
        shape = self.g.shape(t)
        if isinstance(layer, M.Pad):
            new = (shape[0], shape[1], shape[2] + layer.left + layer.right, shape[3])
            return self.g.qop("PAD", [t, self.i32([[0, 0], [0, 0], [layer.left, layer.right], [0, 0]], "pad")],
                              new, qp_in, self.name("pad"), "PadOptions")
        if isinstance(layer, M.Crop):
            n = shape[2] - layer.left - layer.right
            return self.slice(t, [0, 0, layer.left, 0], [1, shape[1], n, shape[3]], qp_in, "crop")
        if isinstance(layer, M.ChannelSlice):
            if len(shape) == 4:
                return self.slice(t, [0, 0, 0, layer.start], [1, shape[1], shape[2], layer.stop - layer.start],
                                  qp_in, "channels")
            return self.slice(t, [0, layer.start], [1, layer.stop - layer.start], qp_in, "channels")
        if isinstance(layer, M.FrameFlatten):
            if shape[1] == 1:
                return t
            y = self.transpose(t, [0, 2, 3, 1], qp_in, "frame_flatten")  # (1, T, C, F): C-major per frame
            _, tt, cc, ff = self.g.shape(y)
            return self.reshape(y, (1, 1, tt, cc * ff), qp_in, "frame_flatten")
        if isinstance(layer, L.Flatten):
            return self.flatten(t, qp_in)
        if isinstance(layer, (L.Identity, L.Dropout)) or layer is None:
            return t
        raise ModelError(f"to_tflite (int8): node {qn.name}: no TFLite form for {type(layer).__name__}")

    def aligned(self, ts, qps):
        """Merge inputs cut to their common newest positions (as the int8 reference aligns them)."""
        shapes = [self.g.shape(t) for t in ts]
        if any(len(s) != 4 for s in shapes):
            return ts
        n = min(s[2] for s in shapes)
        return [t if s[2] == n else self.slice(t, [0, 0, s[2] - n, 0], [1, s[1], n, s[3]], qp, "align")
                for t, s, qp in zip(ts, shapes, qps)]

    def lut(self, qn, t):
        """The model's own table, exactly: GATHER(table, CAST(q) + 128)."""
        g = self.g
        shape = g.shape(t)
        idx = g.tensor(shape, self.name("lut_index"), "INT32")
        g.ops.append(T._Op("CAST", [t], [idx]))
        idx, _ = g.op("ADD", [idx, self.i32(np.array([128]), "lut_offset")], shape, self.name("lut_index"),
                      "AddOptions", FusedActivationFunction="NONE")
        g.tensors[idx] = (shape, "INT32", None, g.tensors[idx][3])
        table = g.tensor((256,), self.name("lut_table"), "INT8",
                         np.ascontiguousarray(qn.table, np.int8).tobytes())
        g.quant[table] = ([float(qn.out.scale)], [int(qn.out.zero_point)], 0)
        return g.qop("GATHER", [table, idx], shape, qn.out, self.name("lut"), "GatherOptions", Axis=0)

    # ------------------------------------------------------------------ whole model
    def build(self):
        m, g, qm = self.model, self.g, self.qm
        frame = tuple(m.frame_shape)
        x = g.tensor((1, m.window) + frame, "x")
        q0 = qm.qnodes[0].out
        if self.two_d:
            t = self._transpose(x, [0, 3, 1, 2], "to_nhwc")  # float (1, W, C, F) -> (1, F, W, C)
        else:
            t = self._reshape(x, (1, 1, m.window, frame[0]), "to_nhwc")
        vals = {0: g.qop("QUANTIZE", [t], g.shape(t), q0, self.name("quantize"))}
        for k, qn in enumerate(qm.qnodes[1:], start=1):
            ins = [vals[j] for j in qn.inputs]
            qps = [qm.qnodes[j].out for j in qn.inputs]
            if qn.kind == CONV:
                y = self.conv(qn, ins[0], qps[0])
                if len(g.shape(ins[0])) == 2 and len(g.shape(y)) == 4:  # a vector Linear as a 1x1 conv
                    y = self.reshape(y, (1, g.shape(y)[3]), qn.out, "vector")
            elif qn.kind == POOL:
                y = self.pool(qn, ins[0], qps[0])
            elif qn.kind in (GMAX, GMEAN):
                y = self.global_pool(qn, ins[0])
            elif qn.kind == HEAD_LAST:
                y = self.last(qn, ins[0], qps[0], self.spec(qn.inputs[0]).features is not None)
            elif qn.kind == HEAD_FLAT:
                y = self.flatten(ins[0], qps[0])
            elif qn.kind == MOVE:
                y = self.move(qn, ins[0], qps[0])
            elif qn.kind in (ADD, MUL):
                if len(ins) != 2:  # a chain of ADDs would requantize in between: other integers
                    raise ModelError(f"to_tflite (int8): node {qn.name}: an int8 {qn.kind} of {len(ins)} inputs; "
                                     f"TFLite's ADD/MUL take two")
                a, b = self.aligned(ins, qps)
                act = self.activation(qn)
                code, opt = ("ADD", "AddOptions") if qn.kind == ADD else ("MUL", "MulOptions")
                y = g.qop(code, [a, b], g.shape(a), qn.out, self.name(code.lower()), opt, FusedActivationFunction=act)
            elif qn.kind == CONCAT:
                parts = [self.requant(p, qp, qn.out, "concat_in") for p, qp in zip(self.aligned(ins, qps), qps)]
                shape = list(g.shape(parts[0]))
                shape[-1] = sum(g.shape(p)[-1] for p in parts)
                y = g.qop("CONCATENATION", parts, tuple(shape), qn.out, self.name("concat"), "ConcatenationOptions",
                          Axis=len(shape) - 1, FusedActivationFunction="NONE")
            elif qn.kind == LUT:
                y = self.lut(qn, ins[0])
            else:
                raise ModelError(f"to_tflite (int8): no TFLite form for int8 operator {qn.kind} ({qn.name})")
            if qn.kind not in (CONV, ADD, MUL) and (qn.lo > -128 or qn.hi < 127):
                raise ModelError(f"to_tflite (int8): node {qn.name}: a clamp after {qn.kind} has no fused form")
            vals[k] = y
        q = vals[len(qm.qnodes) - 1]
        if len(g.shape(q)) == 4:  # the implicit last frame of a model without a head
            q = self.last(qm.qnodes[-1], q, qm.qnodes[-1].out, self.spec(len(qm.qnodes) - 1).features is not None)
        if len(g.shape(q)) == 3:
            q = self.transpose(q, [0, 2, 1], qm.qnodes[-1].out, "to_cf")  # (1, F, C) -> (1, C, F)
        want = (1,) + tuple(m.output_shape)
        if g.shape(q) != want:
            q = self.reshape(q, want, qm.qnodes[-1].out, "q")
        y, _ = g.op("DEQUANTIZE", [q], want, "dequantize")
        for i in qm.tail:
            layer = m.nodes[i].layer
            if not isinstance(layer, L.Softmax) or len(want) != 2:
                raise ModelError(f"to_tflite (int8): float tail layer {type(layer).__name__} has no form here")
            y, _ = g.op("SOFTMAX", [y], want, self.name("softmax"), "SoftmaxOptions", Beta=1.0)
        g.tensors[q] = (g.tensors[q][0], "INT8", None, "q")
        g.tensors[y] = g.tensors[y][:3] + ("y",)
        return x, y, q


def to_tflite_int8(qmodel, int8_output: bool = True) -> bytes:
    """The full-integer ``.tflite`` flatbuffer (bytes) of ``qmodel`` on one window: input float32
    ``(1, W, *frame_shape)``, outputs ``y`` (float32) and ``q`` (int8; ``int8_output=False``
    leaves it out: a one-output file, as :func:`~deepshift_edge.from_tflite` reads it back).
    ModelError for an operator it cannot write."""
    exporter = _Int8Exporter(qmodel)
    x, y, q = exporter.build()
    S = T._schema()
    from .._version import __version__
    return T._serialize(S, exporter.g, [x], [y, q] if int8_output else [y],
                        f"deepshift_edge {__version__} int8", quant=exporter.g.quant, versions=_VERSIONS)
