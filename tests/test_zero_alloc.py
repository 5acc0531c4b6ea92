"""push() with a reused float32 C-contiguous frame performs no heap allocation.

The zero-allocation promise: tracemalloc's peak does not move across 10,000 frames and
sys.getallocatedblocks() is unchanged. The loop below is driven by itertools.repeat so
the measuring code itself allocates nothing; a control run with a function that does
allocate proves the measurement can fail.
"""
import itertools
import sys
import tracemalloc

import numpy as np
import pytest

import deepshift_edge as dse

FRAMES = 10_000


def _measure(fn, arg, frames=FRAMES):
    for _ in itertools.repeat(None, 300):  # warm caches, fill the window
        fn(arg)
    tracemalloc.start()
    try:
        blocks0 = sys.getallocatedblocks()
        current0 = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in itertools.repeat(None, frames):
            fn(arg)
        current1, peak = tracemalloc.get_traced_memory()
        blocks1 = sys.getallocatedblocks()
    finally:
        tracemalloc.stop()
    return peak - current0, current1 - current0, blocks1 - blocks0


def _baseline():
    return _measure(len, np.zeros(3, np.float32))


def _models():
    one_d = dse.Sequential([
        dse.Conv1d(3, 8, 3, stride=2), dse.ReLU(), dse.MaxPool1d(2),
        dse.Residual([dse.Conv1d(8, 8, 3, dilation=2), dse.GELU()]),
        dse.Conv1d(8, 4, 3, groups=4), dse.BatchNorm1d(4), dse.GlobalAvgPool(),
        dse.Linear(4, 3), dse.Softmax()], in_features=3, window=40)
    two_d = dse.Sequential([
        dse.Conv2d(2, 4, (3, 2), padding=(1, 0)), dse.HardSwish(), dse.MaxPool2d(2),
        dse.Flatten(), dse.Linear(4 * 2 * 4, 2)], in_features=(2, 5), window=9)
    # A graph with padding inside the window (strips recomputed every frame), a gate, a
    # strided residual with a pooled skip, a concatenation and a global average over strips.
    x = dse.Input(3)
    h = dse.Conv1d(3, 8, 5, padding="same")(x)
    gate = dse.Mul()(dse.Tanh()(dse.ChannelSlice(0, 4)(h)), dse.Sigmoid()(dse.ChannelSlice(4, 8)(h)))
    body = dse.Conv1d(4, 4, 3, stride=2, padding=1)(gate)
    skip = dse.MaxPool1d(2, padding=1)(gate)
    res = dse.Add()(body, skip)
    cat = dse.Concat()(dse.Conv1d(4, 2, 3, padding=(2, 0))(res), dse.AvgPool1d(3, 1, padding=1)(res))
    graph = dse.Model(x, dse.Linear(6, 2)(dse.GlobalAvgPool()(cat)), window=24)
    seq = dse.Model(x, dse.Conv1d(3, 2, 3, padding="same")(dse.Pad(1, 0)(x)), semantics="sequence")
    # the same graph in int8: byte rings, zero-point strips, requantization, a float tail
    frames = np.random.default_rng(2).standard_normal((200, 3)).astype(np.float32)
    int8 = dse.quantize(dse.Model(x, dse.Softmax()(dse.Linear(6, 2)(dse.GlobalAvgPool()(cat))), window=24), frames)
    return {"1d": one_d, "2d": two_d, "graph-strips": graph, "sequence": seq, "int8-graph": int8,
            "int8-io": int8}


@pytest.mark.parametrize("name", ["1d", "2d", "graph-strips", "sequence", "int8-graph", "int8-io"])
@pytest.mark.parametrize("mode", ["dense", "decimated"])
@pytest.mark.parametrize("batch", [None, 3])
def test_push_allocates_nothing(name, mode, batch):
    model = _models()[name]
    if name == "sequence" and mode != "dense":
        pytest.skip("semantics='sequence' has one mode")
    specs = model.model.specs if name.startswith("int8") else model.specs
    assert not name.endswith("graph-strips") or any(s.left or s.right for s in specs if not s.is_vector)
    shape = model.frame_shape if batch is None else (batch,) + model.frame_shape
    frame = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    if name == "int8-io":  # int8 frames in, int8 logits out
        stream = model.stream(batch=batch, mode=mode, io="int8", tail=False)
        frame = model.input_qparams.quantize(frame).astype(np.int8)
    else:
        stream = model.stream(batch=batch, mode=mode)
    # tracemalloc sees every thread: a thread left over from another test (or the
    # interpreter) can allocate during a run. Take the best of three runs; a push that
    # allocates fails all three.
    for _attempt in range(3):
        base_peak, base_current, base_blocks = _baseline()
        peak, current, blocks = _measure(stream.push, frame)
        if (peak, current, blocks) == (base_peak, base_current, base_blocks):
            break
    assert stream.frames is not None
    assert current == base_current, "push leaves allocated memory behind"
    assert peak == base_peak, f"push allocates temporarily ({peak - base_peak} bytes at peak)"
    assert blocks == base_blocks, f"push changes the number of allocated blocks by {blocks - base_blocks}"


def test_measurement_detects_an_allocating_function():
    # The same harness must see a function that allocates a little per call.
    frame = np.zeros(3, np.float32)
    peak, _, _ = _measure(lambda a: a + 1.0, frame, frames=100)
    assert peak > _baseline()[0]
