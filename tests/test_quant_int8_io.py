"""int8 in, int8 out (``qmodel.stream(io="int8")``): frames already quantized at the input's
parameters go straight into the int8 rings, the output is the last int8 operator's values.
Held bit for bit against the integer reference run on the same int8 frames, by push,
push_many, batched push and warm_up; bad input refused with the state untouched."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import event, given, note, settings

import deepshift_edge as dse
from deepshift_edge.data import examples
from graph_strategies import graph_models
from test_quant_stream import _model_of_every_int8_op, quantized, quantized_or_event
from test_stream_vs_reference import HYPO


def int8_frames(qm, n, seed):
    x = np.random.default_rng(seed).standard_normal((n,) + qm.frame_shape).astype(np.float32)
    return qm.input_qparams.quantize(x).astype(np.int8)


def check_int8_io(qm, xq):
    tail = not qm.tail  # a float tail (Softmax) must be left out for int8 output
    want = qm.forward_int(xq)
    assert want.dtype == np.int8
    for mode in ("dense", "decimated"):
        hop = 1 if mode == "dense" else qm.model.hop
        stream = qm.stream(mode=mode, io="int8", tail=tail)
        pushed = [y.copy() for y in (stream.push(f) for f in xq) if y is not None]
        assert all(y.dtype == np.int8 for y in pushed)
        np.testing.assert_array_equal(np.array(pushed).reshape(want[::hop].shape), want[::hop])
        many = qm.stream(mode=mode, io="int8", tail=tail, block=5).push_many(xq)
        assert many.dtype == np.int8
        np.testing.assert_array_equal(many, want[::hop])
        batch = qm.stream(mode=mode, io="int8", tail=tail, batch=2)
        outs, ready = batch.push_many(np.stack([xq, xq], axis=1))
        assert outs.dtype == np.int8
        np.testing.assert_array_equal(outs[ready[:, 0], 0], want[::hop])
        assert not outs[~ready].any()  # rows without an output hold 0 (int8 has no NaN)
    # the float-I/O stream of the same model, on the dequantized frames, agrees
    float_in = qm.input_qparams.dequantize(xq)
    logits = qm.stream(tail=False).push_many(float_in)
    np.testing.assert_array_equal(logits, qm.output_qparams.dequantize(want))


@settings(max_examples=25, **HYPO)
@given(drawn=graph_models(heads=("last", "avg", "max", "flatten"), max_blocks=2))
def test_random_graphs_int8_io_equals_integer_reference(drawn):
    model, head, seed = drawn
    qm = quantized_or_event(model, seed)
    if qm is None:
        return
    note(repr(model))
    if qm.tail and tuple(model.specs[model.nodes[min(qm.tail)].inputs[0]].shape) != model.output_shape:
        with pytest.raises(dse.ModelError, match="changes the output's shape"):
            qm.stream(io="int8", tail=False)
        event("float tail changes the shape: refused")
        return
    check_int8_io(qm, int8_frames(qm, model.window + 2 * model.hop + 6, seed ^ 1))


def test_every_int8_op_int8_io():
    qm = quantized(_model_of_every_int8_op(), 3)
    check_int8_io(qm, int8_frames(qm, 80, 5))


@pytest.mark.parametrize("name", ["kws_tcn", "activity_cnn", "spectrogram_cnn", "tiny"])
def test_bench_models_int8_logits(name):
    """The shipped example models end in Softmax: tail=False gives the int8 logits, whose
    argmax is the float-tailed stream's class."""
    model = getattr(examples, name)()
    qm = quantized(model, 2)
    xq = int8_frames(qm, model.window + 40, 7)
    check_int8_io(qm, xq)
    probs = qm.stream().push_many(qm.input_qparams.dequantize(xq))
    logits = qm.stream(io="int8", tail=False).push_many(xq)
    if qm.tail:
        np.testing.assert_array_equal(probs.argmax(-1), logits.argmax(-1))


def test_int8_stream_refuses_floats_and_out_of_range_values_state_untouched():
    qm = quantized(_model_of_every_int8_op(), 3)
    xq = int8_frames(qm, 30, 1)
    stream = qm.stream(io="int8")
    for f in xq[:10]:
        stream.push(f)
    before = stream.state()
    with pytest.raises(dse.StreamInputTypeError, match=r"io='int8'.*input_qparams.*got dtype float32"):
        stream.push(xq[10].astype(np.float32))
    with pytest.raises(dse.StreamInputError, match=r"int8 values \(-128..127\), got values from"):
        stream.push(np.full(qm.frame_shape, 200, np.int16))
    with pytest.raises(dse.StreamInputError, match=r"expected a frame of shape"):
        stream.push(xq[10, :1])
    with pytest.raises(dse.StreamInputTypeError, match="int8"):
        stream.push_many(xq.astype(np.float64))
    after = stream.state()
    assert before.keys() == after.keys()
    for k in before:
        np.testing.assert_array_equal(np.asarray(before[k]), np.asarray(after[k]))
    # integers that fit int8 are taken as int8, non-contiguous arrays too
    ok = qm.stream(io="int8")
    ref = qm.stream(io="int8")
    for f in xq:
        a = ok.push(f.astype(np.int32)[..., ::1].T.copy().T)
        b = ref.push(f)
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(a, b)


def test_int8_io_warm_up_matches_pushing():
    qm = quantized(_model_of_every_int8_op(), 3)
    xq = int8_frames(qm, qm.window + 9, 2)
    s = qm.stream(io="int8")
    y = s.warm_up(xq)
    assert y.dtype == np.int8
    np.testing.assert_array_equal(y, qm.forward_int(xq)[-1])


def test_int8_io_refusals_name_the_way_out():
    qm = quantized(examples.kws_tcn(), 1)
    assert qm.tail
    with pytest.raises(dse.ModelError, match=r"float tail .*Softmax.*tail=False.*io='float32'"):
        qm.stream(io="int8")
    with pytest.raises(dse.ModelError, match=r"io must be 'float32' or 'int8', got 'uint8'"):
        qm.stream(io="uint8")
