"""The int8 scheme and its integer reference (deepshift_edge.quant).

The fixed-point helpers are checked against a second, independent implementation of
gemmlowp's arithmetic in plain Python integers; the quantized reference against the float
model it came from (the shipped BasicMotions model: accuracy within one point of float)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import deepshift_edge as dse
from deepshift_edge.quant import quantize
from deepshift_edge.quant import scheme as Q


# ---------------------------------------------------------------------------- gemmlowp, by hand
def _srdhm(a: int, b: int) -> int:
    """SaturatingRoundingDoublingHighMul as gemmlowp writes it, in Python ints."""
    if a == b == -(1 << 31):
        return (1 << 31) - 1
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    v = ab + nudge
    q = abs(v) >> 31  # C++ division truncates toward zero
    return q if v >= 0 else -q


def _rdbp(x: int, e: int) -> int:
    mask = (1 << e) - 1
    rem = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if rem > threshold else 0)


def _mbqm(x: int, m0: int, shift: int) -> int:
    left, right = max(shift, 0), max(-shift, 0)
    return _rdbp(_srdhm(x * (1 << left), m0), right)


@settings(max_examples=300, deadline=None)
@given(x=st.integers(-(1 << 24), 1 << 24), real=st.floats(1e-7, 8.0))
def test_multiply_by_quantized_multiplier_matches_gemmlowp(x, real):
    m0, shift = Q.quantize_multiplier(real)
    got = int(Q.multiply_by_quantized_multiplier(np.array([x]), m0, shift)[0])
    assert got == _mbqm(x, m0, shift)
    assert abs(got - x * real) <= 1 + abs(x * real) * 2.0 ** -30  # one rounding, about


@settings(max_examples=200, deadline=None)
@given(real=st.floats(1e-9, 1e6))
def test_quantize_multiplier_represents_the_real(real):
    m0, shift = Q.quantize_multiplier(real)
    if m0 == 0:
        assert real < 2.0 ** -31
        return
    assert (1 << 30) <= m0 < (1 << 31)
    assert abs(m0 * 2.0 ** (shift - 31) - real) <= real * 2.0 ** -30


def test_rounding_is_half_away_from_zero():
    assert Q.rounding_divide_by_pot(np.array([5, -5, 6, -6, 7, -7]), 1).tolist() == [3, -3, 3, -3, 4, -4]
    assert Q.round_half_away_div(np.array([5, -5, 4, -4]), 2).tolist() == [3, -3, 2, -2]
    p = Q.QParams(0.5, 3)
    assert p.quantize(np.array([0.25, -0.25, 0.75, 100.0, -100.0])).tolist() == [4, 2, 5, 127, -128]


def test_qparams_hold_zero_exactly():
    for lo, hi in [(-1.0, 3.0), (0.0, 6.0), (-5.0, -1.0), (2.0, 9.0)]:
        p = Q.choose_qparams(lo, hi)
        assert Q.QMIN <= p.zero_point <= Q.QMAX
        assert p.dequantize(np.array([p.zero_point]))[0] == 0.0  # zero padding is representable


def test_accumulators_saturate_as_the_core_does():
    assert Q.requantize(np.array([[1 << 33]]), [1 << 30], [0], 0)[0, 0] == 127
    assert Q.saturate_int32(np.array([-(1 << 40)]))[0] == Q.INT32_MIN


# ---------------------------------------------------------------------------- the shipped model
@pytest.mark.slow
def test_basicmotions_int8_accuracy_within_one_point_of_float():
    from deepshift_edge.data.datasets import load_basicmotions
    model = dse.load("basicmotions")
    data = load_basicmotions()
    qmodel = quantize(model, list(data.x_train))
    agree = total = right_f = right_q = 0
    for rec, label in zip(data.x_test, data.y_test):
        f = model.forward(rec).argmax(1)
        q = qmodel.forward(rec).argmax(1)
        agree += int((f == q).sum())
        right_f += int((f == label).sum())
        right_q += int((q == label).sum())
        total += len(f)
    assert abs(right_q - right_f) / total <= 0.01
    assert agree / total >= 0.99


def test_int8_reference_follows_the_float_model():
    """A model of every int8 operator: dequantized outputs within a few steps of float."""
    rng = np.random.default_rng(0)
    x = dse.Input(3)
    h = dse.ReLU()(dse.BatchNorm1d(8)(dse.Conv1d(3, 8, 3, padding="same")(x)))
    gate = dse.Mul()(dse.Tanh()(dse.ChannelSlice(0, 4)(h)), dse.Sigmoid()(dse.ChannelSlice(4, 8)(h)))
    body = dse.Conv1d(4, 4, 3, stride=2, padding=1)(gate)
    skip = dse.AvgPool1d(2, padding=1, count_include_pad=False)(gate)
    res = dse.ReLU()(dse.Add()(body, skip))
    cat = dse.Concat()(dse.MaxPool1d(3, 1, padding=1)(res), dse.ELU()(dse.Conv1d(4, 2, 1)(res)))
    y = dse.Softmax()(dse.Linear(6, 3)(dse.GlobalAvgPool()(cat)))
    model = dse.Model(x, y, window=20)
    bn = model.nodes[2].layer
    bn.running_mean, bn.running_var = rng.standard_normal(8) * 0.1, rng.uniform(0.5, 2, 8)
    frames = rng.standard_normal((300, 3)).astype(np.float32)
    qmodel = quantize(model, frames[:200])
    assert [q.kind for q in qmodel.qnodes].count("lut") == 3  # tanh, sigmoid, ELU
    f = model.forward(frames[200:])
    q = qmodel.forward(frames[200:])
    assert np.abs(f - q).max() < 0.05, np.abs(f - q).max()
    assert (f.argmax(1) == q.argmax(1)).mean() > 0.9


def test_input_quantizer_rounds_ties_as_the_reference():
    """The compiled input quantizer (no libm call) against QParams.quantize on exact ties
    (k + 0.5) * scale, their float32 neighbours, and values past the int8 range."""
    from deepshift_edge.engine._kernels import quantize_input_probe
    from deepshift_edge.quant.scheme import QParams
    rng = np.random.default_rng(3)
    for scale, zp in ((0.5, 0), (0.25, -3), (float(np.float32(0.0371)), 17), (1.0, -128), (0.125, 127)):
        q = QParams(scale, zp)
        k = np.arange(-300, 300, dtype=np.float32)
        ties = ((k + np.float32(0.5)) * np.float32(scale)).astype(np.float32)
        x = np.concatenate([ties, np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf)),
                            (rng.standard_normal(2000) * 200 * scale).astype(np.float32),
                            np.array([1e30, -1e30, 3e38, -3e38, 0.0, -0.0], np.float32)]).astype(np.float32)
        got = np.frombuffer(quantize_input_probe(np.ascontiguousarray(x), np.float32(scale), zp), np.int8)
        np.testing.assert_array_equal(got, q.quantize(x))
        # and it can fail: rounding ties to even differs on these inputs
        with np.errstate(over="ignore"):
            v = x.astype(np.float32) / np.float32(scale)
        to_even = np.clip(np.rint(v.astype(np.float64)) + zp, -128, 127).astype(np.int8)
        assert not np.array_equal(got, to_even)


def test_int8_average_pool_is_the_rounded_mean_of_the_stored_integers():
    """The average pool's output is round_half_away(sum(q) / n), as TFLite's int8 AVERAGE_POOL
    (not zp + round(sum(q - zp) / n), which breaks ties the other way where the two signs
    differ): pools of 2 over every pair of int8 values, with a few zero points."""
    from deepshift_edge.nn import layers as L
    from deepshift_edge.quant.qmodel import POOL, QNode, _run
    a, b = np.meshgrid(np.arange(-128, 128), np.arange(-128, 128))
    x = np.stack([a.ravel(), b.ravel()], axis=1).astype(np.int64)  # (65536 channels, 2 positions)
    layer = L.AvgPool1d(2)
    for zp in (-128, -24, 0, 3, 127):
        src = QNode("x", "input", [], None, out=Q.QParams(0.01, zp))
        qn = QNode("pool", POOL, [0], layer, out=src.out)
        got = _run(qn, [x], [src])[:, 0]
        s = x.sum(axis=1)
        want = np.where(s >= 0, (s + 1) // 2, -((-s + 1) // 2))  # C: (s +- 1) / 2, toward zero
        np.testing.assert_array_equal(got, want)
        ties = (s % 2 != 0) & ((s - 2 * zp) * (s) < 0)
        assert zp == 0 or ties.any()  # the cases where the two roundings differ are in the grid


@given(st.floats(1e-3, 0.2), st.integers(-128, 127), st.floats(1e-3, 0.2), st.integers(-128, 127))
@settings(max_examples=200, deadline=None)
def test_tflite_hard_swish_table_is_within_one_lsb_of_the_function(s_in, z_in, s_out, z_out):
    """LiteRT's 16-bit fixed-point HARD_SWISH (quant.tflite_arith), as a table: within one
    output LSB of x * relu6(x + 3) / 6 rounded once (LiteRT itself is the exact oracle, in
    tests/test_tflite_import.py); a scale LiteRT refuses is refused by name."""
    from deepshift_edge.errors import ModelError
    from deepshift_edge.quant.tflite_arith import hard_swish_table
    if s_in / 128 > s_out:
        with pytest.raises(ModelError, match="HARD_SWISH"):
            hard_swish_table(s_in, z_in, s_out, z_out)
        return
    t = hard_swish_table(s_in, z_in, s_out, z_out).astype(np.int64)
    x = (np.arange(-128, 128) - z_in) * np.float64(np.float32(s_in))
    exact = np.clip(np.round(x * np.clip(x + 3, 0, 6) / 6 / np.float32(s_out)) + z_out, -128, 127)
    assert np.abs(t - exact).max() <= 1
