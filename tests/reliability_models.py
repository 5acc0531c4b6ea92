"""Fixed models and helpers shared by the reliability tests (state, soak, fuzz, threads).

Every model has seeded random weights (``strategies.randomize``) and is window-exact.
Between them they cover strides (hop 2..6), dense and decimated schedules, residual
blocks, 2-D frames, and every head with its own per-stream state: the running sums of
GlobalAvgPool, GlobalMaxPool, Flatten and LastFrame.
"""
from __future__ import annotations

import zlib

import numpy as np

import deepshift_edge as dse

from strategies import randomize

MODELS = {
    # strided convs + max pool, global average (running sums) on a hop-4 body
    "strided-gap": lambda: dse.Sequential(
        [dse.Conv1d(3, 6, 3, stride=2), dse.ReLU(), dse.MaxPool1d(2), dse.Conv1d(6, 5, 3), dse.ReLU(),
         dse.GlobalAvgPool(), dse.Linear(5, 3)], 3, 31),
    # stride 3, a residual block with a delayed 1x1 skip, global average
    "residual-gap": lambda: dse.Sequential(
        [dse.Conv1d(2, 4, 3, stride=3), dse.ReLU(),
         dse.Residual([dse.Conv1d(4, 4, 3), dse.Tanh(), dse.Conv1d(4, 4, 2, dilation=2)],
                      skip=dse.Conv1d(4, 4, 1)),
         dse.GlobalAvgPool(), dse.Linear(4, 2)], 2, 29),
    # causal TCN block, newest frame out
    "residual-causal-last": lambda: dse.Sequential(
        [dse.Residual([dse.Conv1d(2, 3, 3, padding="causal"), dse.Tanh(),
                       dse.Conv1d(3, 3, 2, dilation=2, padding="causal")], skip=dse.Conv1d(2, 3, 1)),
         dse.LastFrame()], 2, 6),
    # hop 6 (stride 2 then pool 3), flatten head
    "strided-flatten": lambda: dse.Sequential(
        [dse.Conv1d(2, 3, 2, stride=2), dse.MaxPool1d(3), dse.Flatten(), dse.Linear(6, 3)], 2, 13),
    # global max over a strided, dilated body
    "strided-gmax": lambda: dse.Sequential(
        [dse.Conv1d(3, 4, 3, stride=2, dilation=2), dse.GELU(), dse.AvgPool1d(2), dse.GlobalMaxPool(),
         dse.Softmax()], 3, 24),
    # 2-D frames (C=2, F=6): feature padding, time stride 2, pooling, global average
    "2d-gap": lambda: dse.Sequential(
        [dse.Conv2d(2, 4, (3, 3), stride=(1, 2), padding=(1, 0)), dse.BatchNorm2d(4), dse.ReLU(),
         dse.MaxPool2d((2, 2)), dse.Conv2d(4, 3, (1, 2)), dse.GlobalAvgPool(), dse.Linear(3, 2)],
        (2, 6), 20),
    # 2-D frames, (C, F) output of the newest position
    "2d-last": lambda: dse.Sequential(
        [dse.Conv2d(1, 3, (3, 2), stride=(1, 2), padding=(1, 0)), dse.ReLU(), dse.LastFrame()], (1, 5), 7),
}
NAMES = sorted(MODELS)
# A subset for the slower tests: strides, residuals, running sums, 2-D.
CORE = ["strided-gap", "residual-gap", "2d-gap", "residual-causal-last"]


def make(name: str) -> dse.Sequential:
    model = MODELS[name]()
    randomize(model, np.random.default_rng(zlib.crc32(name.encode())))
    assert model.equivalence == "window-exact", name
    return model


def frames(model, n: int, seed: int, batch=None, scale: float = 1.0) -> np.ndarray:
    """(n, [batch,] *frame_shape) float32 standard normal frames."""
    rng = np.random.default_rng(seed)
    shape = (n,) + ((batch,) if batch is not None else ()) + tuple(model.frame_shape)
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def push_each(stream, x) -> list:
    """Push frames one by one: a list with a copy of each output, or None."""
    out = []
    for f in x:
        y = stream.push(f)
        out.append(None if y is None else y.copy())
    return out


def assert_outputs_equal(got: list, want: list, what: str = ""):
    """Bit-identical, frame by frame (None where there is no output)."""
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        assert (a is None) == (b is None), f"{what}: frame {i}: output {a} vs {b}"
        if a is not None:
            np.testing.assert_array_equal(a, b, err_msg=f"{what}: frame {i}")


def same_state(a: dict, b: dict) -> bool:
    """Two snapshots (stream.state()) hold exactly the same keys and values."""
    if set(a) != set(b):
        return False
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        if x.dtype != y.dtype or x.shape != y.shape:
            return False
        if x.dtype.kind == "f":
            if not np.array_equal(x, y, equal_nan=True):
                return False
        elif not np.array_equal(x, y):
            return False
    return True
