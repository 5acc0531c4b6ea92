"""Export a deepshift_edge model to a TFLite (LiteRT) flatbuffer, without TensorFlow.

Used as the LiteRT column of the benchmark and by anyone who wants to run the same
window network in a TFLite interpreter. The ``.tflite`` bytes are written directly
with the ``flatbuffers`` builder and the flatc-generated TFLite schema code that
``ai-edge-litert`` ships (``ai_edge_litert.schema_py_generated``) or, without the
runtime, the ``tflite`` package: both are optional and imported only when
:func:`to_tflite` is called.

The graph computes one window, float32, batch 1:

* input ``x``: ``(1, W, *frame_shape)``, the window as frames (oldest first), i.e.
  ``x[t-W+1 : t+1][None]``;
* output ``y``: ``(1, *model.output_shape)``, what ``model.forward_window`` returns.

Inside, data is NHWC with N = 1, H = features (1 for 1-D models), W = time and
C = channels. Layer -> TFLite builtin ops:

=====================================  ===================================================
Conv1d / Conv2d, groups = 1            CONV_2D (PAD first for any zero padding)
Conv with groups = in_channels         DEPTHWISE_CONV_2D (channel multiplier out/in)
Conv with other groups                 SPLIT, one CONV_2D per group, CONCATENATION
BatchNorm right after a conv           folded into the conv's weights (float64)
other BatchNorm                        MUL + ADD (per-channel scale and shift)
ReLU / ReLU6 after conv, Linear, add   fused activation; elsewhere RELU / RELU6
LeakyReLU, Sigmoid, Tanh, HardSwish    LEAKY_RELU, LOGISTIC, TANH, HARD_SWISH
GELU (exact or tanh)                   GELU (approximate = False / True)
SiLU, Hardsigmoid, Mish                LOGISTIC+MUL; ADD+RELU6+MUL; EXP+ADD+LOG+TANH+MUL
Softmax                                SOFTMAX (beta 1, over channels)
MaxPool / AvgPool (1-D and 2-D)        MAX_POOL_2D / AVERAGE_POOL_2D, VALID
MaxPool1d with dilation > 1            STRIDED_SLICE per tap + MAXIMUM
Linear before the head (per frame)     CONV_2D with a 1x1 kernel
Linear after the head                  FULLY_CONNECTED
LastFrame                              SLICE + RESHAPE
GlobalAvgPool / GlobalMaxPool          MEAN / REDUCE_MAX over (H, W)
Flatten                                TRANSPOSE to (C, F, T) order + RESHAPE
Residual                               body, skip (or identity), SLICE (right-aligned
                                       crop of the skip), ADD
Identity, Dropout                      nothing
=====================================  ===================================================

A layer with no mapping raises ``NotImplementedError`` naming it.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from ..nn import layers as L
from ..nn import merge as M

__all__ = ["to_tflite"]


def _schema():
    """The flatc-generated TFLite schema module: ai_edge_litert's, else the tflite package."""
    try:
        from ai_edge_litert import schema_py_generated as schema
        return schema
    except ImportError:
        pass
    try:
        import tflite as schema
    except ImportError as exc:
        raise ImportError("deepshift_edge.tflite_export needs the TFLite schema code: "
                          "pip install ai-edge-litert (or: pip install tflite flatbuffers)",
                          name=exc.name) from exc
    return schema


# ----------------------------------------------------------------------------- graph
class _Op:
    __slots__ = ("code", "inputs", "outputs", "options", "opts")

    def __init__(self, code, inputs, outputs, options=None, opts=None):
        self.code = code          # BuiltinOperator name, e.g. "CONV_2D"
        self.inputs = inputs      # tensor indices (-1: optional input absent)
        self.outputs = outputs
        self.options = options    # BuiltinOptions table name, e.g. "Conv2DOptions"
        self.opts = opts or {}    # field name (schema spelling) -> value


class _Graph:
    """Tensors and ops of one subgraph, before serialization."""

    def __init__(self):
        self.tensors: list = []   # (shape, "FLOAT32"|"INT32", bytes or None, name)
        self.ops: List[_Op] = []

    def tensor(self, shape, name, dtype="FLOAT32", data=None) -> int:
        self.tensors.append((tuple(int(s) for s in shape), dtype, data, name))
        return len(self.tensors) - 1

    def const(self, arr, name) -> int:
        arr = np.asarray(arr)
        if arr.dtype == np.int8:
            arr, dtype = np.ascontiguousarray(arr), "INT8"
        elif arr.dtype.kind in "iu":
            arr, dtype = np.ascontiguousarray(arr, dtype="<i4"), "INT32"
        else:
            arr, dtype = np.ascontiguousarray(arr, dtype="<f4"), "FLOAT32"
        return self.tensor(arr.shape, name, dtype, arr.tobytes())

    def op(self, code, inputs, out_shape, name, options=None, **opts) -> tuple:
        out = self.tensor(out_shape, name)
        op = _Op(code, list(inputs), [out], options, opts)
        self.ops.append(op)
        return out, op

    def shape(self, t) -> tuple:
        return self.tensors[t][0]


class _Value:
    """The running value: a tensor and how to read it.

    kind 'time': (1, H, W, C) NHWC; 'vec': (1, C); 'vec2': (1, F, C), the (C, F) output
    of LastFrame on a 2-D model, channels last.
    """

    def __init__(self, t, kind):
        self.t = t
        self.kind = kind


# Ops whose fused activation every TFLite kernel honours (CONCATENATION has the option but
# its builtin kernel rejects any activation and XNNPACK ignores it).
_FUSABLE = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD"}


class _Builder:
    """What the float and the int8 exporter share (self.g a _Graph): unique tensor names and
    the float RESHAPE / TRANSPOSE of the input layout."""

    def name(self, what):
        self.n += 1
        return f"{what}_{self.n}"

    def _reshape(self, t, shape, what="reshape"):
        shp = self.g.const(np.array(shape, dtype=np.int32), self.name(what + "_shape"))
        return self.g.op("RESHAPE", [t, shp], shape, self.name(what))[0]

    def _transpose(self, t, perm, what="transpose"):
        shape = tuple(self.g.shape(t)[p] for p in perm)
        p = self.g.const(np.array(perm, dtype=np.int32), self.name(what + "_perm"))
        return self.g.op("TRANSPOSE", [t, p], shape, self.name(what), "TransposeOptions")[0]


class _Exporter(_Builder):
    def __init__(self, model):
        self.model = model
        self.two_d = len(model.frame_shape) == 2
        self.g = _Graph()
        self.n = 0

    # ------------------------------------------------------------------ helpers
    def _slice(self, t, begin, size, what="slice"):
        b = self.g.const(np.array(begin, dtype=np.int32), self.name(what + "_begin"))
        s = self.g.const(np.array(size, dtype=np.int32), self.name(what + "_size"))
        return self.g.op("SLICE", [t, b, s], size, self.name(what), "SliceOptions")[0]

    def _pad(self, t, pads, what="pad"):
        shape = tuple(d + a + b for d, (a, b) in zip(self.g.shape(t), pads))
        p = self.g.const(np.array(pads, dtype=np.int32), self.name(what + "_paddings"))
        return self.g.op("PAD", [t, p], shape, self.name(what), "PadOptions")[0]

    def _mul(self, a, b, what):
        return self.g.op("MUL", [a, b], self.g.shape(a), self.name(what + "_mul"), "MulOptions",
                         FusedActivationFunction="NONE")[0]

    def _channelwise(self, t, scale, shift, what):
        """y = x * scale + shift per channel (the last axis)."""
        s = self.g.const(np.asarray(scale, np.float32), self.name(what + "_scale"))
        t, _ = self.g.op("MUL", [t, s], self.g.shape(t), self.name(what + "_mul"), "MulOptions",
                         FusedActivationFunction="NONE")
        b = self.g.const(np.asarray(shift, np.float32), self.name(what + "_shift"))
        return self.g.op("ADD", [t, b], self.g.shape(t), self.name(what + "_add"), "AddOptions",
                         FusedActivationFunction="NONE")

    # ------------------------------------------------------------------ convolution
    def conv(self, t, layer, weight=None, bias=None):
        """Conv1d/Conv2d (weight/bias override: folded BatchNorm), NHWC in and out."""
        _, h, w, c = self.g.shape(t)
        if isinstance(layer, L.Conv2d):
            kf, kt, sf, st, df, dt = layer.k_f, layer.k_t, layer.s_f, layer.s_t, layer.d_f, layer.d_t
        else:
            kf, kt, sf, st, df, dt = 1, layer.kernel_size, 1, layer.stride, 1, layer.dilation
        wt = np.asarray(layer.weight if weight is None else weight, dtype=np.float64)
        if wt.ndim == 3:
            wt = wt[:, :, None, :]  # (O, I/g, 1, k)
        o = wt.shape[0]
        b = np.zeros(o) if (bias is None and layer.bias is None) else np.asarray(
            layer.bias if bias is None else bias, dtype=np.float64)
        # zero padding of either axis, any side (causal, 'same', symmetric): an explicit PAD,
        # then a VALID conv -- the window network pads the window's edges, as PyTorch does
        pad_f = tuple(getattr(layer, "pad_f", (0, 0)))
        pad_t = tuple(layer.pad_t)
        if pad_f != (0, 0) or pad_t != (0, 0):
            t = self._pad(t, [[0, 0], list(pad_f), list(pad_t), [0, 0]], "conv_pad")
            _, h, w, c = self.g.shape(t)
        ho = (h - (kf - 1) * df - 1) // sf + 1
        wo = (w - (kt - 1) * dt - 1) // st + 1
        groups = layer.groups
        common = dict(Padding="VALID", StrideW=st, StrideH=sf, DilationWFactor=dt, DilationHFactor=df,
                      FusedActivationFunction="NONE")
        if groups == 1:
            return self._conv2d(t, wt, b, (1, ho, wo, o), common)
        if groups == c:
            filt = self.g.const(wt.transpose(1, 2, 3, 0), self.name("dw_filter"))  # (1, kf, kt, O)
            bias_t = self.g.const(b, self.name("dw_bias"))
            return self.g.op("DEPTHWISE_CONV_2D", [t, filt, bias_t], (1, ho, wo, o), self.name("dwconv"),
                             "DepthwiseConv2DOptions", DepthMultiplier=o // c, **common)
        # general groups: split the channels, one conv per group, concatenate
        axis = self.g.const(np.array(3, dtype=np.int32).reshape(()), self.name("split_axis"))
        cg, og = c // groups, o // groups
        parts = [self.g.tensor((1, h, w, cg), self.name("split")) for _ in range(groups)]
        self.g.ops.append(_Op("SPLIT", [axis, t], parts, "SplitOptions", {"NumSplits": groups}))
        outs = [self._conv2d(p, wt[i * og:(i + 1) * og], b[i * og:(i + 1) * og], (1, ho, wo, og), common)[0]
                for i, p in enumerate(parts)]
        return self.g.op("CONCATENATION", outs, (1, ho, wo, o), self.name("concat"), "ConcatenationOptions",
                         Axis=3, FusedActivationFunction="NONE")

    def _conv2d(self, t, wt, b, out_shape, opts):
        filt = self.g.const(wt.transpose(0, 2, 3, 1), self.name("filter"))  # OHWI
        bias_t = self.g.const(b, self.name("bias"))
        return self.g.op("CONV_2D", [t, filt, bias_t], out_shape, self.name("conv"), "Conv2DOptions", **opts)

    # ------------------------------------------------------------------ pooling
    def pool(self, t, layer):
        _, h, w, c = self.g.shape(t)
        kf, kt, sf, st, dt = layer.k_f, layer.k_t, layer.s_f, layer.s_t, layer.d_t
        if tuple(layer.pad_t) != (0, 0) or tuple(layer.pad_f) != (0, 0) or layer.ceil_mode:
            # TFLite's pools know only VALID/SAME; PyTorch's padding and ceil_mode differ from both
            raise NotImplementedError(f"to_tflite: no TFLite mapping for a {type(layer).__name__} with padding "
                                      f"{tuple(layer.pad_f)}/{tuple(layer.pad_t)} or ceil_mode")
        ho = (h - kf) // sf + 1
        wo = (w - (kt - 1) * dt - 1) // st + 1
        if layer.op == "max" and dt > 1 and kt > 1:
            out = None
            for i in range(kt):  # one strided slice per tap, then their maximum
                begin = self.g.const(np.array([0, 0, i * dt, 0], np.int32), self.name("tap_begin"))
                end = self.g.const(np.array([1, h, i * dt + (wo - 1) * st + 1, c], np.int32),
                                   self.name("tap_end"))
                strides = self.g.const(np.array([1, 1, st, 1], np.int32), self.name("tap_strides"))
                tap, _ = self.g.op("STRIDED_SLICE", [t, begin, end, strides], (1, h, wo, c), self.name("tap"),
                                   "StridedSliceOptions")
                out = tap if out is None else self.g.op("MAXIMUM", [out, tap], (1, h, wo, c), self.name("max"),
                                                        "MaximumMinimumOptions")[0]
            return out
        code = "MAX_POOL_2D" if layer.op == "max" else "AVERAGE_POOL_2D"
        return self.g.op(code, [t], (1, ho, wo, c), self.name(code.lower()), "Pool2DOptions",
                         Padding="VALID", StrideW=st, StrideH=sf, FilterWidth=kt, FilterHeight=kf,
                         FusedActivationFunction="NONE")[0]

    # ------------------------------------------------------------------ layers
    def activation(self, t, layer):
        shape = self.g.shape(t)
        if isinstance(layer, L.ReLU6):
            return self.g.op("RELU6", [t], shape, self.name("relu6"))[0]
        if isinstance(layer, L.ReLU):
            return self.g.op("RELU", [t], shape, self.name("relu"))[0]
        if isinstance(layer, L.LeakyReLU):
            return self.g.op("LEAKY_RELU", [t], shape, self.name("leaky_relu"), "LeakyReluOptions",
                             Alpha=layer.negative_slope)[0]
        if isinstance(layer, L.Sigmoid):
            return self.g.op("LOGISTIC", [t], shape, self.name("sigmoid"))[0]
        if isinstance(layer, L.Tanh):
            return self.g.op("TANH", [t], shape, self.name("tanh"))[0]
        if isinstance(layer, L.HardSwish):
            return self.g.op("HARD_SWISH", [t], shape, self.name("hard_swish"), "HardSwishOptions")[0]
        if isinstance(layer, L.GELU):
            return self.g.op("GELU", [t], shape, self.name("gelu"), "GeluOptions",
                             Approximate=layer.approximate == "tanh")[0]
        if isinstance(layer, L.SiLU):  # x * sigmoid(x)
            sig = self.g.op("LOGISTIC", [t], shape, self.name("silu_sigmoid"))[0]
            return self._mul(t, sig, "silu")
        if isinstance(layer, L.Hardsigmoid):  # relu6(x + 3) / 6
            c = shape[-1]
            y, _ = self._channelwise(t, np.ones(c), np.full(c, 3.0), "hardsigmoid_in")
            y = self.g.op("RELU6", [y], shape, self.name("hardsigmoid_relu6"))[0]
            return self._channelwise(y, np.full(c, 1.0 / 6.0), np.zeros(c), "hardsigmoid_out")[0]
        if isinstance(layer, L.Mish):  # x * tanh(log(1 + exp(x))); TFLite has no softplus
            e = self.g.op("EXP", [t], shape, self.name("mish_exp"))[0]
            e, _ = self._channelwise(e, np.ones(shape[-1]), np.ones(shape[-1]), "mish_1p")
            sp = self.g.op("LOG", [e], shape, self.name("mish_log"))[0]
            th = self.g.op("TANH", [sp], shape, self.name("mish_tanh"))[0]
            return self._mul(t, th, "mish")
        if isinstance(layer, L.Softmax):
            return self.g.op("SOFTMAX", [t], shape, self.name("softmax"), "SoftmaxOptions", Beta=1.0)[0]
        return None

    def layers(self, v: _Value, layers) -> _Value:
        """Emit a list of layers (the model's, or a residual body); folds BatchNorm into a
        preceding conv and fuses ReLU/ReLU6 into the op that produced the value."""
        fusable: Optional[_Op] = None  # never across a residual's input: both branches read it
        i = 0
        while i < len(layers):
            layer = layers[i]
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            op = None
            if isinstance(layer, (L.ReLU, L.ReLU6)) and fusable is not None \
                    and fusable.outputs[0] == v.t and fusable.opts.get("FusedActivationFunction") == "NONE":
                fusable.opts["FusedActivationFunction"] = "RELU6" if isinstance(layer, L.ReLU6) else "RELU"
                fusable = None
                i += 1
                continue
            if isinstance(layer, (L.Conv1d, L.Conv2d)):
                weight = bias = None
                if isinstance(nxt, L._BatchNorm) and nxt.num_features == layer.out_channels:
                    scale, shift = nxt.scale_shift()
                    weight = np.asarray(layer.weight, np.float64) * scale.reshape((-1,) + (1,) * (layer.weight.ndim - 1))
                    b0 = np.zeros(layer.out_channels) if layer.bias is None else np.asarray(layer.bias, np.float64)
                    bias = b0 * scale + shift
                    i += 1
                v.t, op = self.conv(v.t, layer, weight, bias)
            elif isinstance(layer, L._Pool):
                v.t = self.pool(v.t, layer)
            elif isinstance(layer, L._BatchNorm):
                scale, shift = layer.scale_shift()
                v.t, _ = self._channelwise(v.t, scale, shift, self.name("batchnorm"))
            elif isinstance(layer, L.Linear):
                v.t, op = self.linear(v, layer)
            elif isinstance(layer, (L.Identity, L.Dropout)):
                pass
            elif isinstance(layer, L._Activation):
                out = self.activation(v.t, layer)
                if out is None:
                    raise NotImplementedError(f"to_tflite: no TFLite mapping for layer {type(layer).__name__}")
                v.t = out
            elif isinstance(layer, M.Residual):
                v.t, op = self.residual(v, layer)
            elif isinstance(layer, (L.LastFrame, L.GlobalAvgPool, L.Flatten)):
                self.head(v, layer)
            else:
                raise NotImplementedError(f"to_tflite: no TFLite mapping for layer {type(layer).__name__}")
            fusable = op if op is not None and op.code in _FUSABLE else None
            i += 1
        return v

    def linear(self, v, layer):
        w = np.asarray(layer.weight, np.float64)
        b = np.zeros(layer.out_features) if layer.bias is None else np.asarray(layer.bias, np.float64)
        if v.kind == "time":  # per frame: a 1x1 convolution over channels
            _, h, wd, _ = self.g.shape(v.t)
            return self._conv2d(v.t, w[:, :, None, None], b, (1, h, wd, layer.out_features),
                                dict(Padding="VALID", StrideW=1, StrideH=1, DilationWFactor=1, DilationHFactor=1,
                                     FusedActivationFunction="NONE"))
        if v.kind != "vec":
            raise NotImplementedError("to_tflite: Linear on a (C, F) value")  # the model rejects it anyway
        wt = self.g.const(w, self.name("fc_weights"))
        bt = self.g.const(b, self.name("fc_bias"))
        return self.g.op("FULLY_CONNECTED", [v.t, wt, bt], (1, layer.out_features), self.name("fc"),
                         "FullyConnectedOptions", FusedActivationFunction="NONE", KeepNumDims=False)

    def residual(self, v, layer):
        x = v.t
        body = self.layers(_Value(x, "time"), layer.body).t
        if layer.skip is None:
            skip = x
        else:
            skip = self.layers(_Value(x, "time"), [layer.skip]).t
        _, h, wb, c = self.g.shape(body)
        crop = self.g.shape(skip)[2] - wb
        if crop:
            skip = self._slice(skip, [0, 0, crop, 0], [1, h, wb, c], "skip_crop")
        return self.g.op("ADD", [body, skip], (1, h, wb, c), self.name("residual_add"), "AddOptions",
                         FusedActivationFunction="NONE")

    def head(self, v, layer):
        g = self.g
        if isinstance(layer, L.Flatten):
            if v.kind == "time":
                t = self._transpose(v.t, [0, 3, 1, 2], "flatten")  # (1, C, H, W): C order of (C[, F], T)
                v.t = self._reshape(t, (1, int(np.prod(g.shape(t)))), "flatten")
            elif v.kind == "vec2":
                t = self._transpose(v.t, [0, 2, 1], "flatten")  # (1, C, F)
                v.t = self._reshape(t, (1, int(np.prod(g.shape(t)))), "flatten")
            v.kind = "vec"
            return
        _, h, w, c = g.shape(v.t)
        if isinstance(layer, L.LastFrame):
            t = self._slice(v.t, [0, 0, w - 1, 0], [1, h, 1, c], "last_frame")
            if self.two_d:
                v.t, v.kind = self._reshape(t, (1, h, c), "last_frame"), "vec2"
            else:
                v.t, v.kind = self._reshape(t, (1, c), "last_frame"), "vec"
            return
        code = "REDUCE_MAX" if isinstance(layer, L.GlobalMaxPool) else "MEAN"
        axes = g.const(np.array([1, 2], np.int32), self.name("reduce_axes"))
        v.t, _ = g.op(code, [v.t, axes], (1, c), self.name(code.lower()), "ReducerOptions", KeepDims=False)
        v.kind = "vec"

    # ------------------------------------------------------------------ whole model
    def build(self):
        m = self.model
        frame = tuple(m.frame_shape)
        x = self.g.tensor((1, m.window) + frame, "x")
        if self.two_d:
            t = self._transpose(x, [0, 3, 1, 2], "to_nhwc")  # (1, W, C, F) -> (1, F, W, C)
        else:
            t = self._reshape(x, (1, 1, m.window, frame[0]), "to_nhwc")
        v = self.layers(_Value(t, "time"), m.layers)
        if v.kind == "time":  # the implicit LastFrame
            self.head(v, L.LastFrame())
        if v.kind == "vec2":
            v.t = self._transpose(v.t, [0, 2, 1], "to_cf")  # (1, F, C) -> (1, C, F)
        want = (1,) + tuple(m.output_shape)
        if self.g.shape(v.t) != want:  # pragma: no cover - a bug in the shape bookkeeping
            raise AssertionError(f"to_tflite: output shape {self.g.shape(v.t)}, expected {want}")
        if v.t == x or any(v.t in op.inputs for op in self.g.ops):
            v.t = self._reshape(v.t, want, "y")  # the output is produced by an op of its own
        return x, v.t


# ----------------------------------------------------------------------------- serialization
def _ivec(b, values):
    b.StartVector(4, len(values), 4)
    for val in reversed(values):
        b.PrependInt32(int(val))
    return b.EndVector()


def _offvec(b, offsets):
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _bytes(b, data, alignment=16):
    b.StartVector(1, len(data), alignment)
    b.head = b.head - len(data)
    b.Bytes[b.head:b.head + len(data)] = data
    return b.EndVector()


def _table(S, b, name, fields):
    getattr(S, f"{name}Start")(b)
    for field, value in fields.items():
        if isinstance(value, str):  # an enum member, e.g. Padding VALID, activation RELU
            enum = {"Padding": S.Padding}.get(field, S.ActivationFunctionType)
            value = getattr(enum, value)
        getattr(S, f"{name}Add{field}")(b, value)
    return getattr(S, f"{name}End")(b)


def _fvec(b, values):
    b.StartVector(4, len(values), 4)
    for val in reversed(values):
        b.PrependFloat32(float(val))
    return b.EndVector()


def _i64vec(b, values):
    b.StartVector(8, len(values), 8)
    for val in reversed(values):
        b.PrependInt64(int(val))
    return b.EndVector()


def _quantization(S, b, scales, zero_points, dim):
    sc, zp = _fvec(b, scales), _i64vec(b, zero_points)
    S.QuantizationParametersStart(b)
    S.QuantizationParametersAddScale(b, sc)
    S.QuantizationParametersAddZeroPoint(b, zp)
    S.QuantizationParametersAddQuantizedDimension(b, int(dim))
    return S.QuantizationParametersEnd(b)


def _serialize(S, g: _Graph, inputs, outputs, description: str, quant=None, versions=None) -> bytes:
    """quant: tensor index -> (scales, zero points, quantized dimension) of int8 tensors and
    their int32 biases; versions: op code -> its TFLite version (1 where absent)."""
    import flatbuffers

    quant, versions = quant or {}, versions or {}

    b = flatbuffers.Builder(1 << 16)
    # buffers: 0 is the empty sentinel every non-constant tensor points at
    datas = [None] + [data for (_, _, data, _) in g.tensors if data is not None]
    buf_offs = []
    for data in datas:
        vec = _bytes(b, data) if data else None
        S.BufferStart(b)
        if vec is not None:
            S.BufferAddData(b, vec)
        buf_offs.append(S.BufferEnd(b))
    tensor_offs, k = [], 0
    for ti, (shape, dtype, data, name) in enumerate(g.tensors):
        name_off = b.CreateString(name)
        shape_off = _ivec(b, shape)
        q_off = _quantization(S, b, *quant[ti]) if ti in quant else None
        if data is not None:
            k += 1
        S.TensorStart(b)
        if q_off is not None:
            S.TensorAddQuantization(b, q_off)
        S.TensorAddShape(b, shape_off)
        S.TensorAddType(b, getattr(S.TensorType, dtype))
        S.TensorAddBuffer(b, k if data is not None else 0)
        S.TensorAddName(b, name_off)
        tensor_offs.append(S.TensorEnd(b))
    codes = sorted({op.code for op in g.ops})
    code_offs = []
    for code in codes:
        num = getattr(S.BuiltinOperator, code)
        S.OperatorCodeStart(b)
        S.OperatorCodeAddDeprecatedBuiltinCode(b, min(num, 127))  # 127: look at builtin_code
        S.OperatorCodeAddBuiltinCode(b, num)
        S.OperatorCodeAddVersion(b, versions.get(code, 1))
        code_offs.append(S.OperatorCodeEnd(b))
    op_offs = []
    for op in g.ops:
        ins, outs = _ivec(b, op.inputs), _ivec(b, op.outputs)
        opt = _table(S, b, op.options, op.opts) if op.options else None
        S.OperatorStart(b)
        S.OperatorAddOpcodeIndex(b, codes.index(op.code))
        S.OperatorAddInputs(b, ins)
        S.OperatorAddOutputs(b, outs)
        if opt is not None:
            S.OperatorAddBuiltinOptionsType(b, getattr(S.BuiltinOptions, op.options))
            S.OperatorAddBuiltinOptions(b, opt)
        op_offs.append(S.OperatorEnd(b))
    tensors_vec, ops_vec = _offvec(b, tensor_offs), _offvec(b, op_offs)
    in_vec, out_vec = _ivec(b, inputs), _ivec(b, outputs)
    sg_name = b.CreateString("main")
    S.SubGraphStart(b)
    S.SubGraphAddTensors(b, tensors_vec)
    S.SubGraphAddInputs(b, in_vec)
    S.SubGraphAddOutputs(b, out_vec)
    S.SubGraphAddOperators(b, ops_vec)
    S.SubGraphAddName(b, sg_name)
    subgraph = S.SubGraphEnd(b)
    codes_vec, sg_vec, bufs_vec = _offvec(b, code_offs), _offvec(b, [subgraph]), _offvec(b, buf_offs)
    desc = b.CreateString(description)
    S.ModelStart(b)
    S.ModelAddVersion(b, 3)
    S.ModelAddOperatorCodes(b, codes_vec)
    S.ModelAddSubgraphs(b, sg_vec)
    S.ModelAddDescription(b, desc)
    S.ModelAddBuffers(b, bufs_vec)
    b.Finish(S.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def to_tflite(model) -> bytes:
    """The ``.tflite`` flatbuffer (bytes) computing ``model`` on one window, float32 (a
    :class:`~deepshift_edge.QuantizedModel`: full-integer, see :mod:`tflite_int8_export`).

    Input ``(1, W, *frame_shape)`` (frames oldest first), output ``(1, *output_shape)``.
    Needs ``flatbuffers`` and the TFLite schema code (``ai-edge-litert`` or ``tflite``),
    not TensorFlow. Raises ``NotImplementedError`` for a layer it cannot map.
    """
    from ..quant.qmodel import QuantizedModel
    if isinstance(model, QuantizedModel):  # full-integer: its own scales, zero points and weights
        from .tflite_int8_export import to_tflite_int8
        return to_tflite_int8(model)
    exporter = _Exporter(model)
    x, y = exporter.build()  # before the imports: an unsupported layer is reported even without them
    S = _schema()
    from .._version import __version__
    return _serialize(S, exporter.g, [x], [y], f"deepshift_edge {__version__}")
