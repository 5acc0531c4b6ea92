"""int8 streams equal the integer reference bit for bit (quant.QuantizedModel.forward_int):
random graph models with padding of every kind, strides, branches and heads, quantized on
random calibration frames; push, push_many, both modes, batches; every int8 kernel path this
CPU has (DSE_QKERNELS, in a child process)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import event, given, note, settings

import deepshift_edge as dse
from deepshift_edge.engine import _kernels
from deepshift_edge.quant import quantize
from graph_strategies import graph_models, randomize_graph
from test_stream_vs_reference import HYPO


def quantized(model, seed):
    rng = np.random.default_rng(seed)
    calib = rng.standard_normal((model.window + 40,) + model.frame_shape).astype(np.float32)
    return quantize(model, calib)


def quantized_or_event(model, seed):
    """quantized(), or None (a hypothesis event saying why) for a drawn graph int8 cannot
    express (e.g. a per-channel PReLU on its own, a 3-input Mul)."""
    try:
        return quantized(model, seed)
    except dse.ModelError as exc:
        event(f"not quantized: {str(exc)[:50]}")
        return None


def check_bit_exact(qm, x):
    """Every output of every way to stream equals the reference's, bit for bit."""
    model = qm.model
    want_all = qm.forward_dequantized(x) if not qm.tail else None
    for mode in ("dense", "decimated"):
        hop = 1 if mode == "dense" else model.hop
        stream = qm.stream(mode=mode)
        pushed = [y.copy() for y in (stream.push(f) for f in x) if y is not None]
        many = qm.stream(mode=mode, block=5).push_many(x)
        assert len(pushed) == len(many)
        if pushed:
            np.testing.assert_array_equal(np.array(pushed), many)  # push == push_many
        batch = qm.stream(mode=mode, batch=2)
        outs, ready = batch.push_many(np.stack([x, x], axis=1))
        np.testing.assert_array_equal(outs[ready[:, 0], 0], many)
        np.testing.assert_array_equal(outs[:, 1], outs[:, 0])
        if want_all is not None:
            want = want_all[::hop]
            assert many.shape == want.shape
            np.testing.assert_array_equal(many, want)  # == the integer reference
        else:  # a float tail (Softmax) after the dequantized int8 part
            np.testing.assert_allclose(many, qm.forward(x)[::hop], rtol=1e-5, atol=1e-6)


@settings(max_examples=40, **HYPO)
@given(drawn=graph_models(heads=("last", "avg", "max", "flatten"), max_blocks=2))
def test_random_graphs_int8_stream_equals_integer_reference(drawn):
    model, head, seed = drawn
    qm = quantized_or_event(model, seed)
    if qm is None:
        return
    note(repr(model))
    x = np.random.default_rng(seed ^ 1).standard_normal(
        (model.window + 2 * model.hop + 6,) + model.frame_shape).astype(np.float32)
    check_bit_exact(qm, x)


def _model_of_every_int8_op():
    x = dse.Input((2, 5))
    h = dse.ReLU()(dse.BatchNorm2d(4)(dse.Conv2d(2, 4, (3, 3), padding=(1, "same"))(x)))
    h = dse.AvgPool2d((2, 2), stride=(1, 1), padding=(1, 1), count_include_pad=False)(h)
    flat = dse.FrameFlatten()(dse.MaxPool2d((2, 1), padding=(1, 0))(h))
    c = flat_ch = 4 * 4
    a = dse.Conv1d(flat_ch, 8, 3, padding=2, dilation=2)(flat)
    gate = dse.Mul()(dse.Tanh()(dse.ChannelSlice(0, 4)(a)), dse.Sigmoid()(dse.ChannelSlice(4, 8)(a)))
    body = dse.Conv1d(4, 4, 3, stride=2, padding=1, groups=2)(gate)
    skip = dse.Conv1d(4, 4, 1, stride=2)(gate)
    res = dse.ReLU()(dse.Add()(body, skip))
    cat = dse.Concat()(dse.ELU()(res), dse.Conv1d(4, 4, 3, padding="same", groups=4)(dse.Pad(1, 0)(res)))
    y = dse.Linear(8, 3)(dse.GlobalAvgPool()(cat))
    del c
    model = dse.Model(x, y, window=24)
    rng = np.random.default_rng(4)
    randomize_graph(model, rng)  # the same weights in every process
    bn = model.nodes[2].layer
    bn.running_mean, bn.running_var = rng.standard_normal(4) * 0.2, rng.uniform(0.5, 2, 4)
    return model


def test_every_int8_op_streams_bit_exact():
    model = _model_of_every_int8_op()
    qm = quantized(model, 3)
    kinds = {q.kind for q in qm.qnodes}
    assert kinds >= {"conv", "pool", "mul", "add", "concat", "lut", "move", "gmean"}, kinds
    x = np.random.default_rng(5).standard_normal((80,) + model.frame_shape).astype(np.float32)
    check_bit_exact(qm, x)
    stream = qm.stream()
    assert any(s.left or s.right for s in model.specs if not s.is_vector)  # strips in int8 too
    # the first conv (2 input channels, 3x3 taps with strips) runs with its taps merged
    assert [o.label for o in stream.plan.ops if o.qmerged] == ["node conv2d_1 (Conv2d)", "node conv2d_1 (Conv2d) strips"]
    ring_i8 = sum(r.nbytes for r, nd in zip(stream._buffers()[0], stream.plan.nodes) if nd.dtype == "int8")
    assert ring_i8 > 0


def test_the_comparison_can_fail():
    """One weight off by one step changes outputs: bit-exactness is a real check."""
    model = _model_of_every_int8_op()
    qm = quantized(model, 3)
    x = np.random.default_rng(5).standard_normal((80,) + model.frame_shape).astype(np.float32)
    want = qm.forward_dequantized(x)
    conv = next(q for q in qm.qnodes if q.kind == "conv")
    conv.weight = conv.weight.copy()
    conv.weight.flat[0] = np.int8(max(-127, int(conv.weight.flat[0]) - 5))
    assert not np.array_equal(qm.stream().push_many(x), want)


def _model_of_depthwise(c=20):
    """Depthwise convs (weights [chunk][channel], dse_qdw) of more channels than a vector holds
    and not a multiple of it (the AVX2 kernel's 16 and its plain-C tail), and convs of a single
    input channel (a whole DOT4 quad / PMADDWD pair per tap), each causal (run_qconv) and 'same',
    whose window end is recomputed as strips (run_qconv_rows)."""
    x = dse.Input((1, 6))
    h = dse.ReLU()(dse.Conv2d(1, c, 3, padding=(1, (2, 0)), seed=5)(x))
    h = dse.ReLU()(dse.Conv2d(c, c, 3, padding=(1, (2, 0)), groups=c, seed=1)(h))
    h = dse.Conv2d(c, c, 3, padding=(1, "same"), groups=c, seed=2)(h)
    h = dse.Add()(h, dse.Conv2d(1, c, (3, 2), padding=(1, "same"), seed=6)(x))
    return dse.Model(x, dse.Linear(c, 3, seed=4)(dse.GlobalAvgPool()(h)), window=12)


def test_depthwise_int8_stream_equals_the_reference():
    qm = quantized(_model_of_depthwise(), 2)
    assert sum(q.kind == "conv" and q.layer.__class__.__name__ == "Conv2d" for q in qm.qnodes) == 4
    x = np.random.default_rng(6).standard_normal((50,) + qm.model.frame_shape).astype(np.float32)
    check_bit_exact(qm, x)


_PATH_PROBE = """
import numpy as np, sys
sys.path.insert(0, {tests!r})
from deepshift_edge.engine import _kernels
import test_quant_stream as T
print(_kernels.qkernel_isa())
model = T._model_of_every_int8_op()
qm = T.quantized(model, 3)
x = np.random.default_rng(5).standard_normal((80,) + model.frame_shape).astype(np.float32)
T.check_bit_exact(qm, x)
T.check_requantize_probe()  # this path's vector requantization on its edge cases
outs = [qm.stream().push_many(x)]
fq = T.float_rounded(T.quantized(model, 3))  # onnxruntime's float requantization
T.check_bit_exact(fq, x)
outs.append(fq.stream().push_many(x).ravel())
dq = T.quantized(T._model_of_depthwise(), 2)  # depthwise: 16-channel vectors and a tail
dx = np.random.default_rng(6).standard_normal((50,) + dq.model.frame_shape).astype(np.float32)
T.check_bit_exact(dq, dx)
outs.append(dq.stream().push_many(dx).ravel())
# strip convs batched by rows (plan.row_tables): groups and channel counts not a multiple of 4,
# where the kernel layouts' block strides differ
import test_strip_rows as S
for name in S.MODELS:
    sq = T.quantized(S._model(name), 11)
    sx = S._frames(sq.model, 2 * sq.model.hop + 15, seed=4)
    T.check_bit_exact(sq, sx)
    outs.append(sq.stream().push_many(sx).ravel())
# 2-D convs whose feature positions run as rows (run_qconv_interior, run_qconv_merged_rows)
for cfg in T.CONV2D_POSITIONS:
    pq = T.quantized(T._model_of_2d_positions(*cfg), 7)
    px = np.random.default_rng(8).standard_normal((30,) + pq.model.frame_shape).astype(np.float32)
    T.check_bit_exact(pq, px)
    outs.append(pq.stream().push_many(px).ravel())
np.save({out!r}, np.concatenate([o.ravel() for o in outs]))
"""

# (in channels, out channels, groups, feature stride, feature dilation, feature padding,
# time padding): fewer than 4 input channels take the merged path, the others the interior
# batch with the edge positions one at a time; 'same' time padding adds strip rows.
CONV2D_POSITIONS = [
    (1, 16, 1, 1, 1, 1, "causal"),
    (3, 20, 1, 2, 1, 1, "causal"),
    (2, 8, 1, 1, 2, 2, "same"),
    (5, 17, 1, 1, 1, 0, "causal"),
    (8, 32, 2, 2, 1, 1, "same"),
    (6, 24, 3, 1, 2, (1, 2), "causal"),
]


def _model_of_2d_positions(cin, cout, groups, sf, df, pf, pt, fin=13):
    x = dse.Input((cin, fin))
    h = dse.ReLU()(dse.Conv2d(cin, cout, 3, stride=(sf, 1), dilation=(df, 1), padding=(pf, pt),
                              groups=groups, seed=cin + 3)(x))
    h = dse.Conv2d(cout, 12, (3, 2), padding=(1, "causal"), seed=cout)(h)
    return dse.Model(x, dse.Linear(12, 3, seed=2)(dse.GlobalAvgPool()(h)), window=9)


def _interior(op):
    """Feature positions whose taps all lie inside the frame (the kernels' interior)."""
    return sum(all(0 <= fo * op.sf - op.pf + k * op.df < op.fin for k in range(op.kf)) for fo in range(op.fout))


@pytest.mark.parametrize("cfg", CONV2D_POSITIONS, ids=lambda c: "-".join(map(str, c)).replace(" ", ""))
def test_2d_conv_positions_batched_equal_the_reference(cfg):
    qm = quantized(_model_of_2d_positions(*cfg), 7)
    first = [o for o in qm.stream().plan.ops if o.kind == 20][0]  # QCONV: the first Conv2d
    assert first.fout > 1 and _interior(first) >= 2 and bool(first.qmerged) == (cfg[0] < 4)
    x = np.random.default_rng(8).standard_normal((30,) + qm.model.frame_shape).astype(np.float32)
    check_bit_exact(qm, x)


def check_requantize_probe(seed: int = 0):
    """The compiled requantization against quant.scheme.requantize: right shifts 0..31 and
    left shifts up to 30, multipliers at both ends of [2^30, 2^31) and 0, accumulators at the
    int32 edges and exact rounding ties of every shift, clamps narrower than int8."""
    from deepshift_edge.engine._kernels import requantize_probe, requantize_scalar_probe
    from deepshift_edge.quant import scheme as Q
    rng = np.random.default_rng(seed)
    n = 4099  # not a multiple of any vector width: the scalar tail too
    shift = rng.integers(-31, 1, n)
    left = rng.random(n) < 0.1
    shift[left] = rng.integers(1, 31, int(left.sum()))
    m0 = rng.integers(1 << 30, 1 << 31, n)
    m0[::7], m0[1::11], m0[2::13] = (1 << 30), (1 << 31) - 1, 0
    acc = rng.integers(-(1 << 31), 1 << 31, n)
    small = rng.random(n) < 0.5
    acc[small] = rng.integers(-5000, 5000, int(small.sum()))
    r = -shift  # ties of the rounding shift: odd multiples of 2^(r-1), signs both ways
    ties = (rng.random(n) < 0.2) & (r > 0)
    acc[ties] = (2 * rng.integers(-50, 50, int(ties.sum())) + 1) << (r[ties] - 1)
    acc[:4] = [-(1 << 31), (1 << 31) - 1, 0, -1]
    bias = np.zeros(n, np.int64)
    bias[n // 2:] = rng.integers(-1000, 1000, n - n // 2)
    total = np.clip(acc + bias, -(1 << 31), (1 << 31) - 1)
    bias = total - acc  # acc + bias fits int32, as quantize() guarantees
    for zp, lo, hi in ((0, -128, 127), (-7, -128, 127), (100, -128, 127), (-128, -128, -28), (3, 3, 127)):
        got = np.frombuffer(requantize_probe(*(np.ascontiguousarray(a, np.int32) for a in (acc, bias, m0, shift)),
                                             zp, lo, hi), np.int8)
        want = np.array([Q.requantize(np.array([total[i]]), int(m0[i]), int(shift[i]), zp, lo, hi)[0]
                         for i in range(n)], np.int8)
        np.testing.assert_array_equal(got, want)
        ops = np.frombuffer(requantize_scalar_probe(*(np.ascontiguousarray(a, np.int32) for a in (total, m0, shift)),
                                                    zp, lo, hi), np.int8)
        np.testing.assert_array_equal(ops, want)
        # single rounding (a Linear after the head, LiteRT's FULLY_CONNECTED)
        got1 = np.frombuffer(requantize_probe(*(np.ascontiguousarray(a, np.int32) for a in (acc, bias, m0, shift)),
                                              zp, lo, hi, True), np.int8)
        want1 = np.array([Q.requantize(np.array([total[i]]), int(m0[i]), int(shift[i]), zp, lo, hi,
                                       rounding="single")[0] for i in range(n)], np.int8)
        np.testing.assert_array_equal(got1, want1)
    # float requantization (onnxruntime's, XNNPACK's): float32 scales over many magnitudes,
    # products exactly on halves (scales 2^-k times odd multiples of 2^(k-1)), the int32 edges
    scale = (10.0 ** rng.uniform(-9, 1, n)).astype(np.float32)
    k = rng.integers(1, 12, n)
    on_half = rng.random(n) < 0.3
    scale[on_half] = np.float32(2.0) ** -k[on_half].astype(np.float32)
    acc_f = acc.copy()
    acc_f[on_half] = (2 * rng.integers(-200, 200, int(on_half.sum())) + 1) << (k[on_half] - 1)
    total_f = np.clip(acc_f + bias, -(1 << 31), (1 << 31) - 1)
    bias_f = total_f - acc_f
    for zp, lo, hi in ((0, -128, 127), (-7, -128, 127), (100, -128, 127), (-128, -128, -28), (3, 3, 127)):
        got_f = np.frombuffer(requantize_probe(*(np.ascontiguousarray(a, np.int32) for a in (acc_f, bias_f)),
                                               scale.view(np.int32), np.zeros(n, np.int32), zp, lo, hi,
                                               float_scales=True), np.int8)
        np.testing.assert_array_equal(got_f, Q.requantize_float(total_f, scale, zp, lo, hi))


def float_rounded(qm):
    """qm with every conv, Linear and global mean requantized in float (quantize.set_rounding),
    as an imported ONNX QDQ model is."""
    from deepshift_edge.quant.quantize import set_rounding
    names = [qm.model.nodes[q.model_nodes[0]].name for q in qm.qnodes if q.kind in ("conv", "gmean")]
    set_rounding(qm, names, "float")
    return qm


def test_float_requantization_rounds_halves_to_even():
    """acc * 0.5 on odd acc is a half: onnxruntime's float requantization takes the even
    neighbour (1.5 -> 2, 2.5 -> 2, -0.5 -> 0), gemmlowp's the one above (2.5 -> 3, 0.5 -> 1)."""
    from deepshift_edge.engine._kernels import requantize_probe
    from deepshift_edge.quant import scheme as Q
    acc = np.array([3, 5, -1, -3, 7, 1, 301, -301], np.int32)
    half = np.full(8, 0.5, np.float32)
    got = np.frombuffer(requantize_probe(acc, np.zeros(8, np.int32), half.view(np.int32), np.zeros(8, np.int32),
                                         0, -128, 127, float_scales=True), np.int8)
    assert list(got) == [2, 2, 0, -2, 4, 0, 127, -128]
    assert list(Q.requantize_float(acc, half, 0)) == list(got)
    m0, shift = Q.quantize_multiplier(0.5)
    gemmlowp = list(Q.requantize(acc[:6], m0, shift, 0))
    assert gemmlowp[1] == 3 and gemmlowp[5] == 1 and gemmlowp != list(got[:6])  # 2.5 -> 3, 0.5 -> 1


def test_every_int8_op_streams_bit_exact_with_float_requantization(tmp_path):
    """The same model with its convs, Linear and mean requantized in float (an imported ONNX
    QDQ model's arithmetic): every way to stream equals the reference, the model file keeps
    which nodes round so, and the integers differ from gemmlowp's somewhere (the mode is used)."""
    model = _model_of_every_int8_op()
    x = np.random.default_rng(5).standard_normal((80,) + model.frame_shape).astype(np.float32)
    fq = float_rounded(quantized(model, 3))
    assert {q.kind for q in fq.qnodes if q.rounding == "float"} == {"conv", "gmean"}
    check_bit_exact(fq, x)
    fq.save(tmp_path / "f.npz")
    back = dse.load(tmp_path / "f.npz")
    assert [q.rounding for q in back.qnodes] == [q.rounding for q in fq.qnodes]
    np.testing.assert_array_equal(back.stream().push_many(x), fq.stream().push_many(x))
    big = np.random.default_rng(9).standard_normal((400,) + model.frame_shape).astype(np.float32) * 3
    assert not np.array_equal(fq.forward_int(big), quantized(model, 3).forward_int(big))


def test_requantization_equals_the_reference():
    check_requantize_probe()


def test_requantize_probe_can_fail():
    """Rounding the shift's ties half to even (not away from zero) gives other integers: the
    probe's comparison can fail. M = 2^30 * 2^(-1-31) = 1/4: 4k + 2 is k + 1/2 after it."""
    from deepshift_edge.engine._kernels import requantize_probe
    acc = np.array([2, -2, 6, -6, 10, -10, 14, -14], np.int32)
    m0, shift = np.full(8, 1 << 30, np.int32), np.full(8, -1, np.int32)
    got = np.frombuffer(requantize_probe(acc, np.zeros(8, np.int32), m0, shift, 0, -128, 127), np.int8)
    assert list(got) == [1, -1, 2, -2, 3, -3, 4, -4]  # half away from zero
    assert list(np.round(acc / 4).astype(int)) != list(got)  # half to even: 0, 2, 2, 4 ...


def test_single_and_double_rounding_differ_where_the_first_rounding_lands_on_a_half():
    """acc 4179 at M0 1447001360, shift -9 (har_cnn's FULLY_CONNECTED as Keras wrote it): the
    exact product is 5.4997; rounded once, 5 (LiteRT's FULLY_CONNECTED); gemmlowp's high
    multiply gives 2816 = 5.5 * 2^9, which its shift rounds away from zero: 6."""
    from deepshift_edge.engine._kernels import requantize_probe
    from deepshift_edge.quant import scheme as Q
    args = [np.array([v], np.int32) for v in (4179, 0, 1447001360, -9)]
    assert Q.requantize(np.array([4179]), 1447001360, -9, 0, rounding="single")[0] == 5
    assert Q.requantize(np.array([4179]), 1447001360, -9, 0)[0] == 6
    assert np.frombuffer(requantize_probe(*args, 0, -128, 127, True), np.int8)[0] == 5
    assert np.frombuffer(requantize_probe(*args, 0, -128, 127), np.int8)[0] == 6


def test_quantize_rounds_linear_heads_once_and_streams_them_so():
    from deepshift_edge.data import examples
    qm = quantized(examples.kws_tcn(), 1)
    heads = [q for q in qm.qnodes if q.kind == "conv" and q.layer.__class__.__name__ == "Linear"]
    assert heads and all(q.rounding == "single" for q in heads)
    assert all(q.rounding == "double" for q in qm.qnodes if q.kind == "conv" and q not in heads)
    x = np.random.default_rng(3).standard_normal((qm.window + 30,) + qm.frame_shape).astype(np.float32)
    check_bit_exact(qm, x)
    # and the rounding is the stream's: the other one gives other integers on some window
    # (checked on the reference: flipping it changes forward_int somewhere, or the test is moot)
    for q in heads:
        q.rounding = "double"
    double = qm.forward_int(x)
    for q in heads:
        q.rounding = "single"
    single = qm.forward_int(x)
    if not np.array_equal(double, single):
        np.testing.assert_array_equal(qm.stream().push_many(x), qm.forward_dequantized(x))


def _paths():
    isa = _kernels.qkernel_isa()
    paths = ["scalar"]
    if "avx" in isa or "sse" in isa:
        paths += ["c16", "avxvnni", "avx512vnni"]
    if "neon" in isa:
        paths += ["c16", "dotprod"]
    return paths


@pytest.mark.parametrize("path", _paths())
def test_every_kernel_path_gives_the_same_bits(path, tmp_path):
    here = os.path.dirname(os.path.abspath(__file__))
    outs = {}
    for name, env_path in (("forced", path), ("default", None)):
        env = dict(os.environ)
        env.pop("DSE_QKERNELS", None)
        if env_path:
            env["DSE_QKERNELS"] = env_path
        out = tmp_path / f"{name}.npy"
        proc = subprocess.run([sys.executable, "-c", _PATH_PROBE.format(tests=here, out=str(out))],
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs[name] = (proc.stdout.strip().splitlines()[0], np.load(out))
    np.testing.assert_array_equal(outs["forced"][1], outs["default"][1])


def test_add_with_fused_relu_saves_and_loads(tmp_path):
    """Regression: a model file keeps the parameters of an int8 operator's last float node (the
    ReLU fused into an Add), and loading asked for the Add's own as well: every quantized
    residual Add + ReLU failed to load ('no scale and zero point for node ...')."""
    x = dse.Input(3)
    h = dse.ReLU()(dse.Add()(dse.Conv1d(3, 4, 3, padding="causal")(x), dse.Conv1d(3, 4, 1)(x)))
    m = dse.Model(x, dse.Linear(4, 2)(dse.GlobalAvgPool()(h)), window=16)
    rng = np.random.default_rng(0)
    for node in m.nodes[1:]:
        for k, v in node.layer.params().items():
            setattr(node.layer, k, rng.standard_normal(v.shape).astype(np.float32))
    q = dse.quantize(m, [rng.standard_normal((64, 3)).astype(np.float32)])
    assert any(qn.kind == "add" and len(qn.model_nodes) == 2 for qn in q.qnodes)  # the ReLU is fused
    q.save(tmp_path / "q.npz")
    back = dse.load(tmp_path / "q.npz")
    frames = rng.standard_normal((40, 3)).astype(np.float32)
    np.testing.assert_array_equal(back.stream().push_many(frames), q.stream().push_many(frames))


def test_single_rounding_is_kept_by_the_model_file(tmp_path):
    """A file records which convs round once; loading gives them back, and a bad entry is
    refused by name before any kernel sees it."""
    import json
    from deepshift_edge.data import examples
    qm = quantized(examples.kws_tcn(), 1)
    single = sorted(qm.model.nodes[q.model_nodes[0]].name for q in qm.qnodes if q.rounding == "single")
    assert single
    qm.save(tmp_path / "q.npz")
    back = dse.load(tmp_path / "q.npz")
    assert sorted(back.model.nodes[q.model_nodes[0]].name for q in back.qnodes if q.rounding == "single") == single
    # a file naming a node that is no conv, or not a list
    with np.load(tmp_path / "q.npz") as z:
        members = {k: z[k] for k in z.files}
    doc = json.loads(str(members["__model__"]))

    def holder(d):
        if isinstance(d, dict):
            if "quantization" in d:
                return d
            for v in d.values():
                h = holder(v)
                if h is not None:
                    return h
        return None
    h = holder(doc)
    assert h is not None and h["quantization"]["single_rounding"] == single
    for bad in (["no such node"], "layers.13", [3]):
        h["quantization"]["single_rounding"] = bad
        np.savez(tmp_path / "bad.npz", **{**members, "__model__": np.array(json.dumps(doc))})
        with pytest.raises(dse.ModelFormatError, match="single_rounding"):
            dse.load(tmp_path / "bad.npz")


def test_float_rounding_is_checked_by_the_model_file(tmp_path):
    """A file's float_rounding names convs, Linears, global means or Muls; anything else, or a
    node listed under both roundings, is refused by name before any kernel sees it."""
    import json
    fq = float_rounded(quantized(_model_of_every_int8_op(), 3))
    fq.save(tmp_path / "f.npz")
    with np.load(tmp_path / "f.npz") as z:
        members = {k: z[k] for k in z.files}
    doc = json.loads(str(members["__model__"]))
    section = doc["quantization"] if "quantization" in doc else next(
        v["quantization"] for v in doc.values() if isinstance(v, dict) and "quantization" in v)
    names = section["float_rounding"]
    assert len(names) == sum(q.rounding == "float" for q in fq.qnodes)
    relu = next(n.name for n in fq.model.nodes if isinstance(n.layer, dse.ReLU))
    for bad, match in (([relu], "float_rounding"), ("x", "float_rounding"),
                       (None, "both single_rounding and float_rounding")):
        section["float_rounding"] = names if bad is None else bad
        section["single_rounding"] = names[:1] if bad is None else []
        np.savez(tmp_path / "bad.npz", **{**members, "__model__": np.array(json.dumps(doc))})
        with pytest.raises(dse.ModelFormatError, match=match):
            dse.load(tmp_path / "bad.npz")
