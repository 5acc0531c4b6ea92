"""The full-integer TFLite export (``to_tflite(qmodel)``, convert/tflite_int8_export.py) run by
LiteRT against the int8 reference ``qmodel.forward_int``.

With LiteRT's reference kernels (``OpResolverType.BUILTIN_REF``) the same integers come out
on every window: TFLite computes every operator the file holds the way the model does (convs,
Linear, pools, means, add, mul, concat, tables, the heads), so that is checked bit for bit.
With the default XNNPACK delegate (what users run), which requantizes in float, outputs are
within a few LSB.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import event, given, note, settings

import deepshift_edge as dse
from deepshift_edge.convert.tflite_export import to_tflite
from deepshift_edge.data import examples
from graph_strategies import graph_models
from test_quant_stream import _model_of_every_int8_op, quantized, quantized_or_event
from test_stream_vs_reference import HYPO

litert = pytest.importorskip("ai_edge_litert.interpreter")
pytest.importorskip("flatbuffers")


def run_int8(qm, x, reference_kernels=True):
    """LiteRT's int8 output ``q`` and float output ``y`` on every window of x."""
    kwargs = dict(experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF) if reference_kernels else {}
    interp = litert.Interpreter(model_content=to_tflite(qm), num_threads=1, **kwargs)
    interp.allocate_tensors()
    (inp,) = interp.get_input_details()
    outs = {o["name"]: o for o in interp.get_output_details()}
    assert outs["q"]["dtype"] == np.int8 and outs["y"]["dtype"] == np.float32
    w = qm.window
    qs, ys = [], []
    for i in range(len(x) - w + 1):
        interp.set_tensor(inp["index"], np.ascontiguousarray(x[i:i + w][None], np.float32))
        interp.invoke()
        qs.append(interp.get_tensor(outs["q"]["index"]).copy())
        ys.append(interp.get_tensor(outs["y"]["index"]).copy())
    return np.array(qs), np.array(ys)


def lsb(qm, x, q):
    ref = qm.forward_int(x)
    return np.abs(q.reshape(ref.shape).astype(np.int64) - ref).reshape(len(ref), -1).max(axis=1)


def frames(qm, n, seed):
    return np.random.default_rng(seed).standard_normal((n,) + qm.frame_shape).astype(np.float32)


def has_a_mean(qm) -> bool:
    return any(q.kind == "gmean" or (q.kind == "pool" and q.layer.op != "max") for q in qm.qnodes)


@pytest.mark.parametrize("name", ["tiny", "kws_tcn", "spectrogram_cnn", "activity_cnn"])
def test_bench_models_equal_the_int8_reference_in_tflites_own_kernels(name):
    qm = quantized(getattr(examples, name)(), 1)
    x = frames(qm, qm.window + 30, 2)
    q, y = run_int8(qm, x)
    d = lsb(qm, x, q)
    # every window, activity_cnn's GlobalAvgPool too: its multiplier is derived as TFLite's MEAN
    # derives it (scheme.mean_multiplier)
    assert d.max() == 0, d
    # the float output of the windows with the same integers: the dequantized int8 output, then
    # Softmax, as the stream computes it
    same = d == 0
    assert same.sum() >= len(d) // 3
    np.testing.assert_allclose(y.reshape((len(d),) + qm.output_shape)[same], qm.forward(x)[same],
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["tiny", "kws_tcn", "spectrogram_cnn", "activity_cnn"])
def test_bench_models_with_xnnpack_within_two_lsb(name):
    qm = quantized(getattr(examples, name)(), 1)
    x = frames(qm, qm.window + 30, 3)
    q, _ = run_int8(qm, x, reference_kernels=False)
    assert lsb(qm, x, q).max() <= 2


@settings(max_examples=25, **HYPO)
@given(drawn=graph_models(heads=("last", "avg", "max", "flatten"), max_blocks=2))
def test_random_int8_graphs_in_tflites_own_kernels(drawn):
    model, head, seed = drawn
    qm = quantized_or_event(model, seed)
    if qm is None:
        return
    note(repr(model))
    try:
        content = to_tflite(qm)
    except dse.ModelError as exc:  # e.g. a padded pool, which TFLite's pools cannot express
        event(f"not written: {str(exc)[:60]}")
        return
    assert content[4:8] == b"TFL3"
    x = frames(qm, model.window + model.hop + 4, seed ^ 5)
    q, _ = run_int8(qm, x)
    d = lsb(qm, x, q)
    # average pools (the rounded mean of the stored integers) and global means (TFLite's
    # multiplier) included
    event("with a mean or an average pool" if has_a_mean(qm) else "without")
    assert d.max() == 0, d


def test_every_int8_op_in_tflite():
    qm = quantized(_model_of_every_int8_op(), 3)
    try:
        to_tflite(qm)
    except dse.ModelError as exc:  # its pools are padded: TFLite's know VALID/SAME only
        assert "VALID/SAME" in str(exc)
    else:  # pragma: no cover - the model is built with padded pools
        raise AssertionError("a padded pool was written")


def test_wrong_weight_is_caught():
    """One int8 weight off changes TFLite's integers: the comparison can fail."""
    qm = quantized(examples.kws_tcn(), 1)
    x = frames(qm, qm.window + 5, 4)
    conv = next(q for q in qm.qnodes if q.kind == "conv")
    conv.weight = conv.weight.copy()
    conv.weight.flat[:64] = np.clip(conv.weight.flat[:64].astype(int) + 20, -127, 127)
    qm_ref = quantized(examples.kws_tcn(), 1)
    q, _ = run_int8(qm, x)
    assert lsb(qm_ref, x, q).max() > 0


def _read_back(qm):
    from deepshift_edge.convert.tflite_int8_export import to_tflite_int8
    axes = {"channels_axis": 2} if len(qm.frame_shape) == 2 else {}  # our input is (1, W, C, F)
    # arithmetic="reference": the exported model's own (gemmlowp's) rounding, not XNNPACK's
    return dse.from_tflite(to_tflite_int8(qm, int8_output=False), window=qm.window, arithmetic="reference", **axes)


@pytest.mark.parametrize("name", ["tiny", "kws_tcn", "spectrogram_cnn", "activity_cnn"])
def test_bench_models_read_back_by_from_tflite_are_the_same_int8_model(name):
    """to_tflite(qmodel) then from_tflite: the file's own parameters, the same integers."""
    pytest.importorskip("tflite")
    pytest.importorskip("onnx")
    qm = quantized(getattr(examples, name)(), 1)
    back = _read_back(qm)
    assert isinstance(back, dse.QuantizedModel)
    x = frames(qm, qm.window + 20, 6)
    np.testing.assert_array_equal(back.forward_int(x), qm.forward_int(x))
    np.testing.assert_array_equal(back.stream().push_many(x), qm.stream().push_many(x))


@settings(max_examples=40, **HYPO)
@given(drawn=graph_models(heads=("last", "avg", "max", "flatten"), max_blocks=2))
def test_random_int8_graphs_read_back_by_from_tflite(drawn):
    pytest.importorskip("tflite")
    pytest.importorskip("onnx")
    model, head, seed = drawn
    if model.window == 1 and int(np.prod(model.frame_shape)) == 1:
        event("every axis of size 1: which is time is ambiguous in the file")
        return
    try:
        qm = quantized(model, seed)
        back = _read_back(qm)
    except (dse.ModelError, dse.ModelFormatError) as exc:  # not quantized, written, or read (a table)
        event(f"{type(exc).__name__}: {str(exc)[:60]}")
        return
    note(repr(model))
    x = frames(qm, model.window + model.hop + 4, seed ^ 7)
    got, want = back.forward_int(x), qm.forward_int(x)
    # a (C, 1) output reads back as (C,): a size-1 feature axis is not told from none in NHWC
    np.testing.assert_array_equal(got.reshape(len(got), -1), want.reshape(len(want), -1))
    event("read back")
