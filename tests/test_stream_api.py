"""Stream API contract: push_many == pushes, reset == fresh, batches == independent streams.

These run the same compiled kernels on the same float32 data in the same order, so
every comparison here is *bit-exact* (``np.testing.assert_array_equal``, which treats
NaN == NaN, as the batched outputs use NaN for rows without an output).

Reminder: ``push()`` returns the same preallocated array every time (overwritten by
the next push), so every output that is kept is copied.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import deepshift_edge as dse

from strategies import cases, expected_output_frames, push_all, randomize

MODES = ("dense", "decimated")
HYPO = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                   HealthCheck.filter_too_much])


def _flatten_linear(stack, in_features, window, n_out):
    probe = dse.Sequential(stack, in_features, window)
    return dse.Sequential(list(stack) + [dse.Linear(int(np.prod(probe.output_shape)), n_out)],
                          in_features, window)


MODELS = {
    "1d-strided-global": lambda: dse.Sequential(
        [dse.Conv1d(2, 3, 3, stride=2), dse.ReLU(), dse.AvgPool1d(2, stride=3), dse.GlobalAvgPool(),
         dse.Linear(3, 2), dse.Softmax()], 2, 15),
    "1d-flatten-hop4": lambda: _flatten_linear(
        [dse.Conv1d(2, 2, 2, stride=2, groups=2), dse.MaxPool1d(2), dse.Flatten()], 2, 13, 3),
    "2d-lastframe-CF": lambda: dse.Sequential(
        [dse.Conv2d(2, 3, (3, 2), stride=(1, 2), padding=(1, 0)), dse.BatchNorm2d(3), dse.GELU(),
         dse.LastFrame()], (2, 4), 7),
    "2d-global-max-strided": lambda: dse.Sequential(
        [dse.Conv2d(1, 2, (2, 3), stride=(2, 3), dilation=(1, 1)), dse.MaxPool2d((1, 2)),
         dse.GlobalMaxPool()], (1, 5)),
    "2d-kernel1-feature-pad": lambda: dse.Sequential(
        [dse.Conv2d(2, 3, (1, 2), padding=(1, 0)), dse.Conv2d(3, 2, (1, 1), stride=(2, 1), padding=(2, 0)),
         dse.LastFrame()], (2, 1), 3),
    "residual-causal": lambda: dse.Sequential(
        [dse.Residual([dse.Conv1d(2, 3, 3, padding="causal"), dse.Tanh(),
                       dse.Conv1d(3, 3, 2, dilation=2, padding="causal")], skip=dse.Conv1d(2, 3, 1)),
         dse.LastFrame()], 2, 6),
    "window1": lambda: dse.Sequential([dse.Linear(3, 2), dse.ReLU6()], 3),
    # 16+ output channels: the conv kernel's full-block stores (bias + ReLU fused into them,
    # or ReLU6 applied after), a partial last block (40 = 16 + 16 + 8), groups of 16
    "1d-wide-blocks": lambda: dse.Sequential(
        [dse.Conv1d(5, 40, 3), dse.ReLU(), dse.Conv1d(40, 32, 2, dilation=2, groups=2), dse.ReLU(),
         dse.Conv1d(32, 32, 2, bias=False), dse.BatchNorm1d(32), dse.ReLU6(),
         dse.Conv1d(32, 20, 1), dse.LastFrame(), dse.Linear(20, 18)], 5, 9),
    "2d-wide-blocks": lambda: dse.Sequential(
        [dse.Conv2d(2, 24, (2, 3), padding=(1, 0)), dse.ReLU(), dse.Conv2d(24, 16, (3, 2), stride=(2, 1)),
         dse.LastFrame()], (2, 6), 6),
}
MODEL_NAMES = sorted(MODELS)


def make(name):
    model = MODELS[name]()
    seed = zlib.crc32(name.encode())
    randomize(model, np.random.default_rng(seed))
    assert model.equivalence == "window-exact"
    return model


def frames_for(model, n, seed, batch=None):
    rng = np.random.default_rng(seed)
    shape = (n,) + ((batch,) if batch is not None else ()) + tuple(model.frame_shape)
    return rng.standard_normal(shape).astype(np.float32)


def n_frames_for(model):
    return 2 * model.window + 4 * model.hop + 3


def single_pushes(model, x, mode):
    """(T, ...) -> stacked outputs of frame-by-frame pushes, and their frames."""
    outs = push_all(model.stream(mode=mode), x)
    frames = sorted(outs)
    stacked = np.stack([outs[t] for t in frames]) if frames else \
        np.empty((0,) + tuple(model.output_shape), np.float32)
    return stacked, frames


def chunk_bounds(n, size):
    return [(i, min(i + size, n)) for i in range(0, n, size)]


def chunk_size(spec, model, block=64, n=None):
    """Chunk sizes named relative to the window and to the stream's internal block."""
    sizes = {"W": model.window, "W+1": model.window + 1, "4*block+3": 4 * block + 3, "all": n}
    return sizes.get(spec, spec) or 1


# 1..8 and 13 hit every frames-per-pass tail of the conv kernel (6, 4, 2, 1 frames per pass)
CHUNKS = [1, 2, 3, 4, 5, 6, 7, 8, 13, "W", "W+1", "4*block+3", "all"]
BLOCKS = [1, 3, 64]  # push_many runs up to `block` frames op by op (64 is the default)


# ---------------------------------------------------------------------------- push_many
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", CHUNKS)
@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_push_many_in_chunks_equals_single_pushes(name, block, size, mode):
    model = make(name)
    x = frames_for(model, n_frames_for(model) + 4 * block, 1)
    expected, frames = single_pushes(model, x, mode)
    assert frames == expected_output_frames(len(x), model.window, 1 if mode == "dense" else model.hop)

    stream = model.stream(mode=mode, block=block)
    parts = []
    for lo, hi in chunk_bounds(len(x), chunk_size(size, model, block, len(x))):
        got = stream.push_many(x[lo:hi])
        assert got.dtype == np.float32 and got.shape[1:] == tuple(model.output_shape)
        assert len(got) == sum(lo <= t < hi for t in frames)  # exactly this chunk's outputs
        assert stream.frames == hi
        parts.append(got.copy())
    np.testing.assert_array_equal(np.concatenate(parts), expected)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("block", [1, 2, 64])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_single_pushes_do_not_depend_on_block(name, block, mode):
    """`block` only sizes the rings for push_many; push() gives the same bits."""
    model = make(name)
    x = frames_for(model, n_frames_for(model), 12)
    expected, frames = single_pushes(model, x, mode)
    got = push_all(model.stream(mode=mode, block=block), x)
    assert sorted(got) == frames
    np.testing.assert_array_equal(np.stack([got[t] for t in frames]), expected)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("block", [2, 64])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_push_and_push_many_interleaved(name, block, mode):
    """Alternating single pushes and blocks: same outputs, and the stream's `out`/`ready`
    after a block describe its last frame, so the next push continues seamlessly."""
    model = make(name)
    x = frames_for(model, n_frames_for(model), 2)
    expected, frames = single_pushes(model, x, mode)
    by_frame = dict(zip(frames, expected))
    stream = model.stream(mode=mode, block=block)
    got = {}
    t, i = 0, 0
    sizes = [1, 3, 1, 1, model.window, 2, 1, 5]
    while t < len(x):
        size = min(sizes[i % len(sizes)], len(x) - t)
        i += 1
        if size == 1:
            y = stream.push(x[t])
            if y is not None:
                got[t] = y.copy()
        else:
            block = stream.push_many(x[t:t + size])
            mine = [f for f in frames if t <= f < t + size]
            assert len(block) == len(mine)
            got.update({f: row.copy() for f, row in zip(mine, block)})
            last = t + size - 1
            assert bool(stream.ready[0]) == (last in by_frame)
            if last in by_frame:
                np.testing.assert_array_equal(stream.out[0], by_frame[last])
        t += size
        assert stream.frames == t
    assert sorted(got) == frames
    np.testing.assert_array_equal(np.stack([got[f] for f in frames]), expected)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_push_many_empty_block(name):
    model = make(name)
    stream = model.stream()
    stream.push_many(frames_for(model, 3, 3))
    got = stream.push_many(np.empty((0,) + tuple(model.frame_shape), np.float32))
    assert got.shape == (0,) + tuple(model.output_shape)
    assert stream.frames == 3


@settings(max_examples=50, **HYPO)
@given(case=cases(allow_stream_exact=False), mode=st.sampled_from(MODES),
       block=st.sampled_from([1, 2, 3, 4, 5, 7, 8, 64]), data=st.data())
def test_random_models_random_chunks(case, mode, block, data):
    model, x = case.model, case.x
    note(repr(case))
    expected, frames = single_pushes(model, x, mode)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(x) - 1), max_size=8), label="cuts")) \
        if len(x) > 1 else []
    stream = model.stream(mode=mode, block=block)
    parts = [stream.push_many(x[lo:hi]).copy() for lo, hi in zip([0] + cuts, cuts + [len(x)])]
    np.testing.assert_array_equal(np.concatenate(parts), expected)
    assert stream.frames == len(x)


# ---------------------------------------------------------------------------- reset
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("before", [0, 1, "W-1", "W", "W+hop+1", "3W"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_reset_equals_fresh_stream(name, before, mode):
    model = make(name)
    w, hop = model.window, model.hop
    n_before = {"W-1": w - 1, "W": w, "W+hop+1": w + hop + 1, "3W": 3 * w}.get(before, before)
    x = frames_for(model, n_frames_for(model), 4)
    fresh = push_all(model.stream(mode=mode), x)

    stream = model.stream(mode=mode)
    junk = frames_for(model, n_before, 5) * 10
    push_all(stream, junk)
    stream.reset()
    assert stream.frames == 0
    assert not stream.ready.any()
    after = push_all(stream, x)
    assert sorted(after) == sorted(fresh)
    for t in fresh:
        np.testing.assert_array_equal(after[t], fresh[t])

    # reset after a block, then a block: same again
    stream.push_many(junk)
    stream.reset()
    block = stream.push_many(x)
    np.testing.assert_array_equal(block, np.stack([fresh[t] for t in sorted(fresh)]))


# ---------------------------------------------------------------------------- batches
def _unbatched_outputs(model, xb, mode):
    """Per element b of a (T, B, ...) block: {t: output} of its own unbatched stream."""
    return [push_all(model.stream(mode=mode), np.ascontiguousarray(xb[:, b])) for b in range(xb.shape[1])]


def _check_batched_push(y, stream, model, t, expected_rows):
    """expected_rows: {b: expected output} for the elements that must have one at frame t."""
    batch = stream.batch
    if not expected_rows:
        assert y is None, f"frame {t}: no element has an output, push must return None"
        assert not stream.ready.any()
        return
    assert y is not None and y.dtype == np.float32
    assert y.shape == (batch,) + tuple(model.output_shape)
    np.testing.assert_array_equal(stream.ready, [b in expected_rows for b in range(batch)])
    for b in range(batch):
        if b in expected_rows:
            np.testing.assert_array_equal(y[b], expected_rows[b], err_msg=f"frame {t}, element {b}")
        else:
            assert np.isnan(y[b]).all(), f"frame {t}: element {b} has no output, its row must be NaN"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_batch_elements_equal_their_own_streams(name, batch, mode):
    model = make(name)
    xb = frames_for(model, n_frames_for(model), 6, batch=batch)
    singles = _unbatched_outputs(model, xb, mode)
    stream = model.stream(batch=batch, mode=mode)
    assert stream.batched and stream.batch == batch
    for t in range(len(xb)):
        y = stream.push(xb[t])
        _check_batched_push(y, stream, model, t, {b: s[t] for b, s in enumerate(singles) if t in s})
        np.testing.assert_array_equal(stream.frames, np.full(batch, t + 1))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("which", [1, [0, 2]])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_batch_reset_one_element(name, which, mode):
    """Resetting element(s) leaves the others untouched; the reset ones restart like fresh
    streams (so for a while only some rows are ready; in decimated mode the phases differ)."""
    model = make(name)
    batch = 3
    n = n_frames_for(model)
    k = model.window + model.hop // 2 + 1  # reset mid-stream, at an odd phase
    xb = frames_for(model, n, 7, batch=batch)
    reset_rows = [which] if isinstance(which, int) else which
    expected = []
    for b, full in enumerate(_unbatched_outputs(model, xb, mode)):
        if b in reset_rows:  # fresh stream fed the frames from the reset on
            restarted = push_all(model.stream(mode=mode), np.ascontiguousarray(xb[k:, b]))
            full = {t: y for t, y in full.items() if t < k}
            full.update({t + k: y for t, y in restarted.items()})
        expected.append(full)

    stream = model.stream(batch=batch, mode=mode)
    for t in range(n):
        if t == k:
            stream.reset(which)
            assert not stream.ready[reset_rows].any()
            counts = np.full(batch, k)
            counts[reset_rows] = 0
            np.testing.assert_array_equal(stream.frames, counts)
        y = stream.push(xb[t])
        _check_batched_push(y, stream, model, t, {b: e[t] for b, e in enumerate(expected) if t in e})
    counts = np.full(batch, n)
    counts[reset_rows] = n - k
    np.testing.assert_array_equal(stream.frames, counts)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", CHUNKS)
@pytest.mark.parametrize("block", [1, 64])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_batched_push_many_equals_batched_pushes(name, block, size, mode):
    model = make(name)
    batch = 3
    n = n_frames_for(model) + 4 * block
    k = model.window + 1
    xb = frames_for(model, n, 8, batch=batch)
    nan_row = np.full((batch,) + tuple(model.output_shape), np.nan, np.float32)

    # expected: frame-by-frame batched pushes, element 2 reset at frame k
    ref_stream = model.stream(batch=batch, mode=mode)
    exp_out, exp_ready = [], []
    for t in range(n):
        if t == k:
            ref_stream.reset(2)
        y = ref_stream.push(xb[t])
        exp_out.append(nan_row if y is None else y.copy())
        exp_ready.append(ref_stream.ready.copy())
    exp_out, exp_ready = np.stack(exp_out), np.stack(exp_ready)
    assert exp_ready.any()
    assert model.window == 1 or not exp_ready.all()  # mixed readiness after the reset

    stream = model.stream(batch=batch, mode=mode, block=block)
    outs, readies = [], []
    step = chunk_size(size, model, block, n)
    bounds = chunk_bounds(k, step) + [(lo + k, hi + k) for lo, hi in chunk_bounds(n - k, step)]
    for lo, hi in bounds:
        if lo == k:
            stream.reset(2)
        out, ready = stream.push_many(xb[lo:hi])
        assert out.shape == (hi - lo, batch) + tuple(model.output_shape) and out.dtype == np.float32
        assert ready.shape == (hi - lo, batch) and ready.dtype == np.bool_
        np.testing.assert_array_equal(stream.ready, ready[-1])
        outs.append(out.copy())
        readies.append(ready.copy())
    np.testing.assert_array_equal(np.concatenate(readies), exp_ready)
    np.testing.assert_array_equal(np.concatenate(outs), exp_out)
    expected_frames = np.full(batch, n)
    expected_frames[2] = n - k
    np.testing.assert_array_equal(stream.frames, expected_frames)


@settings(max_examples=25, **HYPO)
@given(case=cases(allow_stream_exact=False, max_body=3), mode=st.sampled_from(MODES),
       batch=st.integers(1, 4), data=st.data())
def test_random_models_batch_with_random_resets(case, mode, batch, data):
    """Random model, B streams, random per-element resets: each element equals its own
    unbatched stream restarted at its reset frames."""
    model = case.model
    note(repr(case))
    n = len(case.x)
    xb = frames_for(model, n, case.seed % 1000, batch=batch)
    resets = data.draw(st.lists(st.tuples(st.integers(1, max(1, n - 1)), st.integers(0, batch - 1)),
                                max_size=3), label="resets (frame, element)")
    reset_at = {}
    for t, b in resets:
        reset_at.setdefault(t, set()).add(b)
    expected = []
    for b in range(batch):
        starts = [0] + sorted(t for t, rows in reset_at.items() if b in rows)
        outs = {}
        for lo, hi in zip(starts, starts[1:] + [n]):
            part = push_all(model.stream(mode=mode), np.ascontiguousarray(xb[lo:hi, b]))
            outs.update({t + lo: y for t, y in part.items()})
        expected.append(outs)
    stream = model.stream(batch=batch, mode=mode)
    for t in range(n):
        if t in reset_at:
            stream.reset(sorted(reset_at[t]))
        y = stream.push(xb[t])
        _check_batched_push(y, stream, model, t, {b: e[t] for b, e in enumerate(expected) if t in e})


# ---------------------------------------------------------------------------- small things
def test_frames_counter():
    model = make("1d-strided-global")
    stream = model.stream()
    assert stream.frames == 0 and isinstance(stream.frames, int)
    x = frames_for(model, 40, 9)
    for t in range(5):
        stream.push(x[t])
        assert stream.frames == t + 1
    stream.push_many(x[5:17])
    assert stream.frames == 17
    stream.reset()
    assert stream.frames == 0
    stream.reset(0)  # index 0 is the only stream of an unbatched one
    assert stream.frames == 0

    b = model.stream(batch=2)
    assert isinstance(b.frames, np.ndarray) and b.frames.dtype == np.int64
    np.testing.assert_array_equal(b.frames, [0, 0])
    b.push(np.stack([x[0], x[1]]))
    b.push_many(np.stack([x[:4], x[4:8]], axis=1))
    np.testing.assert_array_equal(b.frames, [5, 5])
    b.reset(1)
    np.testing.assert_array_equal(b.frames, [5, 0])
    b.push(np.stack([x[0], x[1]]))
    np.testing.assert_array_equal(b.frames, [6, 1])
    b.reset()
    np.testing.assert_array_equal(b.frames, [0, 0])
    with pytest.raises(IndexError):
        b.reset(2)


@pytest.mark.parametrize("batch", [None, 2])
def test_push_returns_the_same_preallocated_array(batch):
    """Documented: the output array is reused, its contents change on the next push."""
    model = make("2d-lastframe-CF")
    x = frames_for(model, model.window + 2, 10, batch=batch)
    stream = model.stream(batch=batch)
    for t in range(model.window - 1):
        assert stream.push(x[t]) is None
    y1 = stream.push(x[model.window - 1])
    kept = y1.copy()
    y2 = stream.push(x[model.window])
    assert np.shares_memory(y1, y2)
    assert not np.array_equal(y1, kept)  # overwritten: callers must copy


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_push_converts_other_inputs_like_float32(name):
    """float64, lists and non-contiguous views take the slow path but give the same
    (bit-identical) outputs as float32 C-contiguous frames."""
    model = make(name)
    x = frames_for(model, n_frames_for(model), 11)
    expected = push_all(model.stream(), x)
    wide = np.empty(x.shape + (2,), np.float32)
    wide[..., 0] = x
    variants = {
        "float64": [f.astype(np.float64) for f in x],
        "list": [f.tolist() for f in x],
        "strided": [wide[t, ..., 0] for t in range(len(x))],
    }
    for kind, frames in variants.items():
        stream = model.stream()
        got = {}
        for t, f in enumerate(frames):
            y = stream.push(f)
            if y is not None:
                got[t] = y.copy()
        assert sorted(got) == sorted(expected), kind
        for t in expected:
            np.testing.assert_array_equal(got[t], expected[t], err_msg=kind)
