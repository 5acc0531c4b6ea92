"""The integer arithmetic of int8 streaming: TFLite's scheme (Jacob et al. 2018, gemmlowp).

* activations: per-tensor asymmetric int8, ``real = scale * (q - zero_point)``, q in [-128, 127];
* weights: per-output-channel symmetric int8 (zero point 0), scale ``max|w| / 127``;
* biases: int32 at scale ``s_in * s_w[c]``;
* accumulation in int32; requantization by a fixed-point multiplier ``M0 * 2^(shift-31)``
  (``M0`` in [2^30, 2^31)) applied with gemmlowp's rounding: a saturating rounding doubling
  high multiply, then a rounding right shift (round half away from zero at each step).

These are the same operations, in the same order, as TFLite's reference kernels
(``MultiplyByQuantizedMultiplier``), so a model quantized elsewhere maps onto them and the
compiled kernels can match this module bit for bit. Everything here works on NumPy int64
arrays and saturates at the int32 range where the compiled core does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ModelError

QMIN, QMAX = -128, 127
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


@dataclass(frozen=True)
class QParams:
    """Per-tensor affine quantization of an int8 tensor."""

    scale: float
    zero_point: int

    def quantize(self, x) -> np.ndarray:
        """float32 values to int8: round(x / scale) half away from zero, + zero point, clamped.
        Computed as the compiled core does: a float32 division, then C's roundf."""
        with np.errstate(over="ignore"):  # past float32: inf, which saturates like any large value
            v = np.asarray(x, dtype=np.float32) / np.float32(self.scale)
        r = np.floor(np.abs(v.astype(np.float64)) + 0.5) * np.sign(v)
        return np.clip(r + self.zero_point, QMIN, QMAX).astype(np.int8)

    def dequantize(self, q) -> np.ndarray:
        """int8 to float32: (q - zero_point) * scale, in float32 (as the core does)."""
        return (np.asarray(q, dtype=np.int32) - self.zero_point).astype(np.float32) * np.float32(self.scale)

    def real_of(self, q: int) -> float:
        return self.scale * (q - self.zero_point)


def choose_qparams(lo: float, hi: float) -> QParams:
    """Asymmetric int8 parameters whose range covers [lo, hi] and holds 0 exactly (so that
    zero padding is representable: the zero point)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ModelError(f"calibration range [{lo}, {hi}] is not finite")
    if hi - lo < 1e-12:
        return QParams(1.0, 0)
    scale = (hi - lo) / (QMAX - QMIN)
    zero = int(round(QMIN - lo / scale))
    return QParams(float(np.float32(scale)), int(min(max(zero, QMIN), QMAX)))


def weight_scales(w: np.ndarray) -> np.ndarray:
    """Per-output-channel symmetric scales (axis 0 is the output channel)."""
    m = np.abs(w.reshape(w.shape[0], -1)).max(axis=1).astype(np.float64)
    return np.where(m > 0, m / QMAX, 1.0).astype(np.float32)


def quantize_weights(w: np.ndarray, scales: np.ndarray) -> np.ndarray:
    shape = (-1,) + (1,) * (w.ndim - 1)
    v = w.astype(np.float64) / scales.astype(np.float64).reshape(shape)
    return np.clip(np.floor(np.abs(v) + 0.5) * np.sign(v), -QMAX, QMAX).astype(np.int8)


def quantize_multiplier(real: float) -> tuple:
    """(M0, shift) with real = M0 * 2^(shift - 31), M0 in [2^30, 2^31): TFLite's
    QuantizeMultiplier. A zero multiplier is (0, 0)."""
    if real < 0 or not math.isfinite(real):
        raise ModelError(f"a requantization multiplier must be finite and >= 0, got {real}")
    if real == 0:
        return 0, 0
    mantissa, exponent = math.frexp(real)  # real = mantissa * 2^exponent, mantissa in [0.5, 1)
    m0 = int(round(mantissa * (1 << 31)))
    if m0 == 1 << 31:
        m0 //= 2
        exponent += 1
    if exponent < -31:  # too small to represent: the product is 0
        return 0, 0
    if exponent > 30:
        raise ModelError(f"requantization multiplier {real} is too large (> 2^30)")
    return m0, exponent


def mean_multiplier(real: float, count: int) -> tuple:
    """(M0, shift) of a mean over `count` values, ``real`` = s_in / s_out, as TFLite's int8
    MEAN (reference_ops::QuantizedMeanOrSum): quantize s_in / s_out, then fold 1/count into it
    in integers, ``M0 * 2^k // count`` with ``2^k`` the largest power of two <= count (k at most
    32 and 31 + shift), and ``shift - k``. Not normalized to [2^30, 2^31): MultiplyByQuantized-
    Multiplier does not need it. Using TFLite's derivation makes a global mean the same integers
    as LiteRT's (quantize_multiplier(real / count) differs from it in the last bit of M0)."""
    m0, shift = quantize_multiplier(real)
    if m0 == 0:
        return 0, 0
    k = min(int(count).bit_length() - 1, 32, 31 + shift)
    return int((m0 << k) // int(count)), shift - k


def saturate_int32(x: np.ndarray) -> np.ndarray:
    """Clamp to the int32 range, as the compiled core does before a requantization (quantize()
    refuses layers whose accumulators could get there, so this only defines the edge)."""
    return np.clip(np.asarray(x, dtype=np.int64), INT32_MIN, INT32_MAX)


def _trunc_div(a: np.ndarray, d: int) -> np.ndarray:
    """C integer division (toward zero) of int64 arrays by a positive d."""
    q = np.abs(a) // d
    return np.where(a < 0, -q, q)


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: int) -> np.ndarray:
    """gemmlowp's SaturatingRoundingDoublingHighMul on int32 values (held as int64)."""
    a = np.asarray(a, dtype=np.int64)
    ab = a * np.int64(b)
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    out = _trunc_div(ab + nudge, 1 << 31)
    return np.where((a == INT32_MIN) & (b == INT32_MIN), np.int64(INT32_MAX), out)


def rounding_divide_by_pot(x: np.ndarray, exponent: int) -> np.ndarray:
    """gemmlowp's RoundingDivideByPOT: x / 2^exponent rounded half away from zero."""
    x = np.asarray(x, dtype=np.int64)
    if exponent == 0:
        return x
    mask = np.int64((1 << exponent) - 1)
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0).astype(np.int64)
    return (x >> exponent) + (remainder > threshold).astype(np.int64)


def multiply_by_quantized_multiplier(x, m0: int, shift: int) -> np.ndarray:
    """TFLite's MultiplyByQuantizedMultiplier(x, M0, shift) on int32 values (as int64)."""
    x = np.asarray(x, dtype=np.int64)
    left = shift if shift > 0 else 0
    right = 0 if shift > 0 else -shift
    shifted = saturate_int32(x * np.int64(1 << left))
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, m0), right)


def multiply_by_quantized_multiplier_single(x, m0: int, shift: int) -> np.ndarray:
    """TFLite's single-rounding MultiplyByQuantizedMultiplier (TFLITE_SINGLE_ROUNDING):
    ``(x * M0 + 2^(30 - shift)) >> (31 - shift)``, the exact product rounded once, half up. It
    differs from the double rounding above where SaturatingRoundingDoublingHighMul lands on a
    half that RoundingDivideByPOT then rounds away (about one output in 2^right). LiteRT's
    FULLY_CONNECTED kernels round so; its convolutions round twice."""
    x = np.asarray(x, dtype=np.int64)
    if m0 == 0:
        return np.zeros_like(x)
    total = 31 - int(shift)  # 1..62: shift is in [-31, 30]
    return (x * np.int64(m0) + (np.int64(1) << np.int64(total - 1))) >> np.int64(total)


ROUNDINGS = ("double", "single", "float")  # gemmlowp's two steps (the default); TFLite's single
# step; onnxruntime's / XNNPACK's float32 product rounded half to even (requantize_float)


def float_scales(s_in: float, w_scale, s_out: float) -> np.ndarray:
    """The float32 requantization scales of a conv, ``(s_in * s_w) / s_out`` in float32 in that
    order, as onnxruntime's QLinearConv and XNNPACK compute them from the same three numbers."""
    with np.errstate(over="ignore", under="ignore"):
        return (np.float32(s_in) * np.asarray(w_scale, dtype=np.float32)) / np.float32(s_out)


def mean_float_scale(s_in: float, s_out: float, count: int) -> np.ndarray:
    """The float32 scale of a mean over `count` values, ``s_in / (s_out * count)`` in float32, as
    onnxruntime's QLinearGlobalAveragePool computes it (one value, as an array of one)."""
    with np.errstate(over="ignore", under="ignore", divide="ignore"):
        return np.array([np.float32(s_in) / (np.float32(s_out) * np.float32(count))], dtype=np.float32)


def requantize_float(acc, scale, zero_point: int, lo: int = QMIN, hi: int = QMAX) -> np.ndarray:
    """int32 accumulators to int8 as onnxruntime (MlasRequantizeOutput) and XNNPACK's "fp32"
    requantization do it: float32(acc) * scale in float32, clamped to [lo - zp, hi - zp], rounded
    to nearest with ties to even, plus the zero point. `scale` is float32, per channel along the
    last axis or one value."""
    acc = saturate_int32(acc)
    with np.errstate(over="ignore"):
        v = acc.astype(np.float32) * np.asarray(scale, dtype=np.float32)
    v = np.clip(v, np.float32(lo - zero_point), np.float32(hi - zero_point))
    return (np.rint(v).astype(np.int64) + zero_point).astype(np.int8)


def requantize(acc, m0, shift, zero_point: int, lo: int = QMIN, hi: int = QMAX,
               rounding: str = "double") -> np.ndarray:
    """int32 accumulators to int8: zero_point + acc * M, clamped to [lo, hi]. m0/shift may be
    per channel (arrays along the last axis). rounding: "double" (gemmlowp) or "single"."""
    acc = saturate_int32(acc)
    m0 = np.broadcast_to(np.asarray(m0, dtype=np.int64), acc.shape[-1:])
    shift = np.broadcast_to(np.asarray(shift, dtype=np.int64), acc.shape[-1:])
    mbqm = multiply_by_quantized_multiplier_single if rounding == "single" else multiply_by_quantized_multiplier
    out = np.empty(acc.shape, dtype=np.int64)
    for c in range(acc.shape[-1]):
        out[..., c] = mbqm(acc[..., c], int(m0[c]), int(shift[c]))
    return np.clip(out + zero_point, lo, hi).astype(np.int8)


def round_half_away_div(acc: np.ndarray, count) -> np.ndarray:
    """acc / count rounded half away from zero (TFLite's integer average pool)."""
    acc = np.asarray(acc, dtype=np.int64)
    count = np.asarray(count, dtype=np.int64)
    half = count // 2
    return np.where(acc >= 0, (acc + half) // count, -((-acc + half) // count))
