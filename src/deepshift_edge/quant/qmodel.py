"""Quantized models: a float graph model turned into int8 operators, with their readable
integer reference (int64 NumPy arithmetic, written for clarity).

``quantize(model, calibration)`` folds BatchNorm into the convs, fuses ReLU/ReLU6 into their
producers as clamps, calibrates every remaining tensor's range on the calibration frames
(min/max, or a percentile), and quantizes weights per output channel. Operators after the
last one int8 can express (Softmax) form a float *tail* run on the dequantized values.
:meth:`QuantizedModel.forward_int` is the oracle the int8 stream is held to, bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from ..errors import ModelError
from ..nn import layers as L
from ..nn import merge as M
from ..nn.graph import Model
from . import scheme as Q

# Fused int8 operator kinds.
CONV, POOL, GMAX, GMEAN, ADD, MUL, CONCAT, LUT, MOVE, HEAD_LAST, HEAD_FLAT = (
    "conv", "pool", "gmax", "gmean", "add", "mul", "concat", "lut", "move", "last", "flatten")

_CLAMPS = (L.ReLU6, L.ReLU)


@dataclass
class QNode:
    """One int8 operator: reads `inputs` (indices of earlier QNodes), writes one tensor
    with parameters `out`."""

    name: str
    kind: str
    inputs: List[int]
    layer: Optional[L.Layer]  # the float layer it comes from (geometry: kernel, stride, padding)
    out: Optional[Q.QParams] = None
    weight: Optional[np.ndarray] = None    # int8, PyTorch's 2-D layout (out, in/groups, kf, kt)
    w_scale: Optional[np.ndarray] = None   # float32 per output channel
    bias: Optional[np.ndarray] = None      # int32 per output channel, at s_in * s_w
    m0: Optional[np.ndarray] = None        # requantization multipliers (per channel or per input)
    shift: Optional[np.ndarray] = None
    lo: int = Q.QMIN                       # clamp of a fused ReLU / ReLU6
    hi: int = Q.QMAX
    table: Optional[np.ndarray] = None     # LUT: int8[256] indexed by q + 128
    table_given: bool = False              # LUT: the table came with the model (an imported
                                           # file's own integer op), not from the float function
    model_nodes: List[int] = field(default_factory=list)  # the float nodes it stands for
    float_weight: Optional[np.ndarray] = None  # conv weights after BatchNorm folding (float32)
    float_bias: Optional[np.ndarray] = None
    rounding: str = "double"  # conv requantization: gemmlowp's two steps, "single" (LiteRT's FC) or
                              # "float" (onnxruntime's and XNNPACK's float32 scale, ties to even;
                              # convs, global means, Mul)
    fscale: Optional[np.ndarray] = None  # "float": the float32 scales (quantize.set_rounding)


@dataclass
class QuantizedModel:
    """An int8 model: ``qnodes`` (node 0 quantizes the input frames) and a float tail."""

    model: Model
    qnodes: List[QNode]
    tail: List[int]  # float model nodes run after the int8 part, in float, on its dequantized output
    calibration: dict

    def __getattr__(self, name):
        """The float model's description (window, hop, specs, layers, output_shape, ...): the
        int8 model computes the same network."""
        if name.startswith("_") or name in ("model", "qnodes", "tail", "calibration"):
            raise AttributeError(name)
        return getattr(self.model, name)

    @property
    def window(self):
        return self.model.window

    @property
    def hop(self):
        return self.model.hop

    @property
    def in_features(self):
        return self.model.in_features

    @property
    def labels(self):
        return self.model.labels

    @labels.setter
    def labels(self, value):
        self.model.labels = value

    @property
    def metadata(self):
        return self.model.metadata

    @metadata.setter
    def metadata(self, value):
        self.model.metadata = value

    def save(self, path) -> None:
        """Write the model (float model + int8 parameters, docs/format.md); ``dse.load`` reads it
        back as a QuantizedModel."""
        from ..formats.npz import save
        save(self, path)

    @property
    def frame_shape(self):
        return self.model.frame_shape

    @property
    def output_shape(self):
        return self.model.output_shape

    @property
    def int_output(self) -> QNode:
        return self.qnodes[-1]

    # ------------------------------------------------------------------ the integer reference
    def forward_int_window(self, window_frames) -> np.ndarray:
        """The int8 network on one window (W, *frame_shape) of float32 frames: the int8 values
        of the last int8 operator (its QParams dequantize them)."""
        x = np.asarray(window_frames, dtype=np.float32)
        self._check_window(x)
        return self._forward_q(self.qnodes[0].out.quantize(np.moveaxis(x, 0, -1)))

    def forward_int_window_q(self, window_q) -> np.ndarray:
        """The same network on a window of int8 frames, already at the input's QParams (what
        an ``io="int8"`` stream takes)."""
        q = np.asarray(window_q)
        if q.dtype != np.int8:
            raise ModelError(f"expected an int8 window, got dtype {q.dtype}")
        self._check_window(q)
        return self._forward_q(np.moveaxis(q, 0, -1))

    def _check_window(self, x):
        if x.shape != (self.window,) + tuple(self.frame_shape):
            raise ModelError(f"expected a window of shape {(self.window,) + tuple(self.frame_shape)}, "
                             f"got {x.shape}")

    def _forward_q(self, q_in) -> np.ndarray:
        values = [np.asarray(q_in).astype(np.int64)]
        for qn in self.qnodes[1:]:
            values.append(_run(qn, [values[i] for i in qn.inputs], [self.qnodes[i] for i in qn.inputs]))
        return values[-1].astype(np.int8)

    def forward_int(self, x) -> np.ndarray:
        """int8 outputs of every window of the sequence x (T, *frame_shape): float32 frames,
        quantized at the input's QParams, or int8 frames already at them."""
        w = self.window
        if isinstance(x, np.ndarray) and x.dtype == np.int8:
            return np.stack([self.forward_int_window_q(x[i:i + w]) for i in range(len(x) - w + 1)])
        x = np.asarray(x, dtype=np.float32)
        return np.stack([self.forward_int_window(x[i:i + w]) for i in range(len(x) - w + 1)])

    @property
    def input_qparams(self):
        """(scale, zero_point) of the input: int8 frames for an ``io="int8"`` stream are
        ``round(x / scale) + zero_point``, clamped (``input_qparams`` and ``QParams.quantize``)."""
        return self.qnodes[0].out

    @property
    def output_qparams(self):
        """QParams of the int8 output (what an ``io="int8"`` stream returns): real value
        ``scale * (q - zero_point)``."""
        return self.int_output.out

    def stream(self, batch: Optional[int] = None, mode: str = "dense", block: int = 64,
               io: str = "float32", tail: bool = True):
        """An int8 stream: rings hold int8, frames (float32) are quantized as they arrive, the
        output is dequantized (then the float tail, if any).

        ``io="int8"``: frames are int8 at :attr:`input_qparams` and the output is the int8
        values of the last operator (:attr:`output_qparams`), no float conversion either side
        (a model with a float tail needs ``tail=False``). Batched rows without an output hold
        0 there (no NaN in int8): read ``stream.ready``.

        ``tail=False``: leave the float tail (a final Softmax) out; the output is the int8
        part's (the logits: the same argmax), dequantized or, with ``io="int8"``, as int8.
        """
        from ..engine.stream import Stream
        from .plan import build_quantized_plan
        return Stream(self.model, batch=batch, mode=mode, block=block,
                      plan=build_quantized_plan(self, mode, block, io, tail), io=io)

    def forward_dequantized(self, x) -> np.ndarray:
        """The int8 reference's output dequantized in float32, exactly as the stream does it
        (equal bit for bit to an int8 stream without a float tail)."""
        return self.int_output.out.dequantize(self.forward_int(x))

    def forward(self, x) -> np.ndarray:
        """float outputs: the dequantized int8 output, then the float tail (float64)."""
        q = self.forward_int(x)
        y = self.int_output.out.dequantize(q).astype(np.float64)
        for i in self.tail:
            node = self.model.nodes[i]
            y = np.stack([node.layer.forward(v) for v in y])
        return y


# ---------------------------------------------------------------------------- the reference ops
def _zero_padded(x: np.ndarray, pad_f, pad_t, value: int) -> np.ndarray:
    widths = [(0, 0)] * (x.ndim - 2) + [tuple(pad_f), tuple(pad_t)] if x.ndim == 3 else \
        [(0, 0), tuple(pad_t)]
    return np.pad(x, widths, constant_values=value)


def _aligned(xs):
    n = min(x.shape[-1] for x in xs)
    return [x[..., x.shape[-1] - n:] for x in xs]


def _run(qn: QNode, xs: List[np.ndarray], ins: List[QNode]) -> np.ndarray:
    """One int8 operator on int64 arrays holding int8 values (PyTorch layout, no batch)."""
    layer = qn.layer
    zin = ins[0].out.zero_point if ins else 0
    if qn.kind == CONV:
        x = xs[0]
        two_d = x.ndim == 3
        x3 = x if two_d else (x[:, None, None] if x.ndim == 1 else x[:, None, :])
        w4 = qn.weight.astype(np.int64)  # (out, in/groups, kf, kt)
        if isinstance(layer, L.Linear) or isinstance(layer, L._BatchNorm):
            k_f = k_t = s_f = s_t = d_f = d_t = 1
            pad_f = pad_t = (0, 0)
            groups = 1 if isinstance(layer, L.Linear) else w4.shape[0]
        else:
            k_f, k_t, s_f, s_t, d_f, d_t = layer.k_f, layer.k_t, layer.s_f, layer.s_t, layer.d_f, layer.d_t
            pad_f, pad_t, groups = layer.pad_f, layer.pad_t, layer.groups
        xp = np.pad(x3, ((0, 0), tuple(pad_f), tuple(pad_t)), constant_values=zin) - zin
        c_in, f_in, t_in = xp.shape
        c_out = w4.shape[0]
        f_out = (f_in - (k_f - 1) * d_f - 1) // s_f + 1
        t_out = (t_in - (k_t - 1) * d_t - 1) // s_t + 1
        cin_g, cout_g = c_in // groups, c_out // groups
        acc = np.zeros((c_out, f_out, t_out), dtype=np.int64)
        for g in range(groups):
            xs_g = xp[g * cin_g:(g + 1) * cin_g]
            ws = w4[g * cout_g:(g + 1) * cout_g]
            for kf in range(k_f):
                for kt in range(k_t):
                    patch = xs_g[:, kf * d_f: kf * d_f + (f_out - 1) * s_f + 1: s_f,
                                 kt * d_t: kt * d_t + (t_out - 1) * s_t + 1: s_t]
                    acc[g * cout_g:(g + 1) * cout_g] += np.einsum("oc,cft->oft", ws[:, :, kf, kt], patch)
        acc += qn.bias.astype(np.int64)[:, None, None]
        if qn.rounding == "float":
            y = Q.requantize_float(np.moveaxis(acc, 0, -1), qn.fscale, qn.out.zero_point, qn.lo, qn.hi)
        else:
            y = Q.requantize(np.moveaxis(acc, 0, -1), qn.m0, qn.shift, qn.out.zero_point, qn.lo, qn.hi,
                             rounding=qn.rounding)
        y = np.moveaxis(y.astype(np.int64), -1, 0)
        if x.ndim == 1:
            return y[:, 0, 0]
        return y if two_d else y[:, 0, :]
    if qn.kind == POOL:
        x = xs[0]
        two_d = x.ndim == 3
        x3 = x if two_d else x[:, None, :]
        c, f_in, t_in = x3.shape
        f_out = L.output_length(f_in, layer.k_f, 1, layer.s_f, layer.pad_f[0], layer.pad_f[1], layer.ceil_mode)
        t_out = L.output_length(t_in, layer.k_t, layer.d_t, layer.s_t, layer.pad_t[0], layer.pad_t[1],
                                layer.ceil_mode)
        fw = L._pool_windows(f_in, layer.k_f, 1, layer.s_f, layer.pad_f, f_out)
        tw = L._pool_windows(t_in, layer.k_t, layer.d_t, layer.s_t, layer.pad_t, t_out)
        out = np.empty((c, f_out, t_out), dtype=np.int64)
        for fo, (fi, f_div) in enumerate(fw):
            for to, (ti, t_div) in enumerate(tw):
                patch = x3[:, fi][:, :, ti].reshape(c, -1)
                if layer.op == "max":
                    out[:, fo, to] = patch.max(axis=1)
                else:
                    div = f_div * t_div if layer.count_include_pad else len(fi) * len(ti)
                    # the mean of the stored integers, rounded half away from zero (TFLite's
                    # int8 average pool; padding counted by count_include_pad holds the zero point)
                    out[:, fo, to] = Q.round_half_away_div((patch - zin).sum(axis=1) + div * zin, div)
        out = np.clip(out, Q.QMIN, Q.QMAX)
        return out if two_d else out[:, 0, :]
    if qn.kind == GMAX:
        x = xs[0]
        return x.reshape(x.shape[0], -1).max(axis=1)
    if qn.kind == GMEAN:
        x = xs[0]
        total = (x.reshape(x.shape[0], -1) - zin).sum(axis=1)
        if qn.rounding == "float":
            return Q.requantize_float(total, qn.fscale, qn.out.zero_point).astype(np.int64)
        return Q.requantize(total[None, :], qn.m0, qn.shift, qn.out.zero_point)[0].astype(np.int64)
    if qn.kind == HEAD_LAST:
        return xs[0][..., -1]
    if qn.kind == HEAD_FLAT:
        return xs[0].reshape(-1)
    if qn.kind == ADD:
        vector = xs[0].ndim == 1
        parts = xs if vector else _aligned(xs)
        total = 0
        for x, inp, m0, sh in zip(parts, ins, qn.m0[:-1], qn.shift[:-1]):
            shifted = (x - inp.out.zero_point) * (1 << 20)
            total = total + Q.multiply_by_quantized_multiplier(shifted, int(m0), int(sh))
        y = Q.multiply_by_quantized_multiplier(total, int(qn.m0[-1]), int(qn.shift[-1])) + qn.out.zero_point
        return np.clip(y, qn.lo, qn.hi)
    if qn.kind == MUL:
        vector = xs[0].ndim == 1
        a, b = xs if vector else _aligned(xs)
        prod = (a - ins[0].out.zero_point) * (b - ins[1].out.zero_point)
        if qn.rounding == "float":
            return Q.requantize_float(prod[..., None], qn.fscale, qn.out.zero_point)[..., 0].astype(np.int64)
        y = Q.multiply_by_quantized_multiplier(prod, int(qn.m0[0]), int(qn.shift[0])) + qn.out.zero_point
        return np.clip(y, Q.QMIN, Q.QMAX)
    if qn.kind == CONCAT:
        vector = xs[0].ndim == 1
        parts = []
        for x, inp, m0, sh in zip(xs if vector else _aligned(xs), ins, qn.m0, qn.shift):
            y = Q.multiply_by_quantized_multiplier(x - inp.out.zero_point, int(m0), int(sh)) + qn.out.zero_point
            parts.append(np.clip(y, Q.QMIN, Q.QMAX))
        return np.concatenate(parts, axis=0)
    if qn.kind == LUT:
        return qn.table.astype(np.int64)[xs[0] + 128]
    if qn.kind == MOVE:  # data movement: Pad (the zero point), Crop, slices, reshapes
        x = xs[0]
        if isinstance(layer, M.Pad):
            return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(layer.left, layer.right)],
                          constant_values=ins[0].out.zero_point)
        if isinstance(layer, M.Crop):
            return x[..., layer.left:x.shape[-1] - layer.right]
        if isinstance(layer, M.ChannelSlice):
            return x[layer.start:layer.stop]
        if isinstance(layer, M.FrameFlatten):
            return x.reshape(-1, x.shape[-1]) if x.ndim == 3 else x
        if isinstance(layer, L.Flatten):
            return x.reshape(-1)
        return x  # Identity, Dropout
    raise ModelError(f"{qn.name}: no int8 operator {qn.kind}")  # pragma: no cover
