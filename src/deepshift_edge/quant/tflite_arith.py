"""TFLite's integer arithmetic where it is not the generic scheme's (``scheme.py``), for int8
models imported from .tflite files to equal LiteRT's builtin kernels bit for bit.

HARD_SWISH: LiteRT computes it in 16-bit fixed point (``reference_ops::HardSwish``,
tensorflow/lite/kernels/internal/reference/hard_swish.h, with the parameters of
``HardSwishPrepare`` in activations.cc), not as the exact function rounded once. As a unary
int8 operator it is a function of 256 inputs, so the engine's lookup table, filled by this
arithmetic, reproduces it exactly.
"""
from __future__ import annotations

import numpy as np

from ..errors import ModelError
from . import scheme as Q

_I16_MIN, _I16_MAX = -(1 << 15), (1 << 15) - 1


def _srdhm16(a, b):
    """gemmlowp's SaturatingRoundingDoublingHighMul on int16 values."""
    a = np.asarray(a, np.int64)
    ab = a * int(b)
    nudge = np.where(ab >= 0, 1 << 14, 1 - (1 << 14))
    out = Q._trunc_div(ab + nudge, 1 << 15)
    return np.where((a == _I16_MIN) & (b == _I16_MIN), _I16_MAX, out)


def _sdhm16(a, b):
    """TFLite's SaturatingDoublingHighMul (hard_swish.h): the same, truncating toward zero."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    out = Q._trunc_div(a * b, 1 << 15)
    return np.where((a == b) & (a == _I16_MIN), _I16_MAX, out)


def _sat_left_shift16(v, amount):
    return np.clip(np.asarray(v, np.int64) * (1 << amount), _I16_MIN, _I16_MAX)


def _int16_multiplier(real) -> tuple:
    """QuantizeMultiplier, then DownScaleInt32ToInt16Multiplier: (M0 as int16, exponent)."""
    m0, exponent = Q.quantize_multiplier(float(real))
    if m0 >= (1 << 31) - 1 - (1 << 15):
        return _I16_MAX, exponent
    return (m0 + (1 << 15)) >> 16, exponent


def hard_swish_table(in_scale: float, in_zero: int, out_scale: float, out_zero: int) -> np.ndarray:
    """int8[256], indexed by q + 128: LiteRT's int8 HARD_SWISH of every input value."""
    f32 = np.float32
    hires_input_scale = f32(1.0 / 128.0) * f32(in_scale)  # float32, as HardSwishPrepare
    out_m, out_e = _int16_multiplier(np.float64(hires_input_scale / f32(out_scale)))
    if out_e > 0:
        raise ModelError(f"HARD_SWISH: input scale / 128 over output scale {out_scale:g} is above 1 "
                         f"(LiteRT refuses it: output multiplier exponent {out_e} > 0)")
    relu_m, relu_e = _int16_multiplier(np.float64(hires_input_scale / f32(3.0 / 32768.0)))
    q = np.arange(-128, 128, dtype=np.int64)
    x = q - int(in_zero)
    hires = x * (1 << 7)  # |x| <= 255: fits int16
    preshift_out = _srdhm16(hires, out_m)
    relu = hires
    if relu_e > 0:
        relu = _sat_left_shift16(relu, relu_e - 1)
    relu = _srdhm16(relu, relu_m)
    if relu_e > 0:
        relu = _sat_left_shift16(relu, 1)
    if relu_e < 0:
        relu = Q.rounding_divide_by_pot(relu, -relu_e)
    relu = (relu + (1 << 15)) >> 1
    y = _sdhm16(relu, preshift_out)
    y = Q.rounding_divide_by_pot(y, -out_e) + int(out_zero)
    return np.clip(y, Q.QMIN, Q.QMAX).astype(np.int8)
