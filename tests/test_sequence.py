"""semantics='sequence': a fully convolutional model streamed over a whole recording equals
the offline network run once over all of it, every position, the last ones included (they
come from flush(), computed with the right edge's zeros)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import event, given, note, settings
from hypothesis import strategies as st

import deepshift_edge as dse
from graph_strategies import graph_models, randomize_graph
from test_stream_vs_reference import HYPO, abs_tolerance, assert_close


def as_sequence(model) -> dse.Model:
    nodes = model.nodes[:-1] if model._implicit_head else model.nodes
    return dse.Model.from_nodes(model.in_features, nodes, semantics="sequence")


def stream_recording(model, x, how="push", batch=None):
    """Every output position the stream gives for recording x, flush included."""
    stream = model.stream(batch=batch)
    if how == "push":
        outs = []
        for frame in x:
            y = stream.push(frame if batch is None else np.stack([frame] * batch))
            if y is not None:
                outs.append((y if batch is None else y[0]).copy())
        body = np.array(outs).reshape((-1,) + tuple(model.output_shape))
    else:
        cut = len(x) // 3
        body = np.concatenate([stream.push_many(x[:cut]), stream.push_many(x[cut:])])
    tail = stream.flush()
    if batch is not None:
        tail = tail[0]
    return np.concatenate([body, tail]), stream


def check_sequence(model, x):
    ref = model.forward(x)
    atol = abs_tolerance(ref)
    for how in ("push", "push_many"):
        got, stream = stream_recording(model, x, how)
        assert got.shape == ref.shape, (how, got.shape, ref.shape)
        for j in range(len(ref)):
            assert_close(got[j], ref[j], atol, f"{how}: position {j} of {len(ref)}")
        with pytest.raises(dse.StreamInputError, match="flushed"):
            stream.push(x[0])
        stream.reset()  # a new recording gives the same outputs
        again = stream.push_many(x)
        np.testing.assert_array_equal(again, got[:len(again)])


def _model():
    x = dse.Input(2)
    h = dse.ReLU()(dse.Conv1d(2, 3, 3, padding="same")(x))
    return randomize_graph(dse.Model(x, dse.Conv1d(3, 2, 5, padding=2)(h), semantics="sequence"),
                           np.random.default_rng(0))


@pytest.mark.parametrize("frames", [7, 8, 12, 40])
def test_same_padded_stack_is_exact_to_the_last_frame(frames):
    model = _model()
    x = np.random.default_rng(frames).standard_normal((frames, 2)).astype(np.float32)
    check_sequence(model, x)
    stream = model.stream()
    assert stream.delay == 3  # 1 + 2 frames of right padding: each position waits for them


def test_batched_sequence_streams_flush_each_recording():
    model = _model()
    x = np.random.default_rng(5).standard_normal((20, 2)).astype(np.float32)
    want, _ = stream_recording(model, x)
    got, _ = stream_recording(model, x, batch=3)
    np.testing.assert_array_equal(got, want)


def test_sequence_refusals_are_clear():
    model = _model()
    with pytest.raises(dse.ModelError, match="leave mode at its default"):
        model.stream(mode="decimated")
    x = dse.Input(2)
    valid = dse.Model(x, dse.Conv1d(2, 2, 5)(x), semantics="sequence")
    s = valid.stream()
    s.push_many(np.zeros((3, 2), np.float32))
    with pytest.raises(dse.StreamInputError, match="holds 3 frames; the network needs at least 5"):
        s.flush()
    with pytest.raises(dse.ModelError, match="without a head|has a head"):
        dse.Model(x, dse.GlobalAvgPool()(dse.Conv1d(2, 2, 3)(x)), semantics="sequence")
    window = dse.Model(x, dse.Conv1d(2, 2, 3)(x))
    with pytest.raises(dse.StreamInputError, match="semantics='sequence'"):
        window.stream().flush()


def test_tcn_chomp_and_pad_fold_into_the_conv():
    """A TCN's conv with (k-1)d zeros on both sides followed by a chomp of (k-1)d on the right,
    and an F.pad before a valid conv, are the conv's own padding in sequence semantics."""
    x = dse.Input(3)
    h = dse.Crop(0, 4)(dse.Conv1d(3, 4, 3, dilation=2, padding=4)(x))
    h = dse.Conv1d(4, 2, 3)(dse.Pad(2, 0)(dse.ReLU()(h)))
    model = randomize_graph(dse.Model(x, h, semantics="sequence"), np.random.default_rng(1))
    check_sequence(model, np.random.default_rng(2).standard_normal((25, 3)).astype(np.float32))


@settings(max_examples=60, **HYPO)
@given(drawn=graph_models(heads=("none",)), frames=st.integers(0, 30))
def test_random_fully_convolutional_graphs(drawn, frames):
    window_model, _, seed = drawn
    try:
        model = as_sequence(window_model)
        model.stream()
    except dse.ModelError as exc:  # a standalone Pad/Crop, strided branches that drift
        event(f"refused: {str(exc)[:60]}")
        assert "semantics='sequence'" in str(exc)
        return
    randomize_graph(model, np.random.default_rng(seed))
    n = model._min_window(1) + frames
    x = np.random.default_rng(seed ^ 7).standard_normal((n,) + model.frame_shape).astype(np.float32)
    note(repr(model))
    event(f"hop={model.hop}")
    check_sequence(model, x)
