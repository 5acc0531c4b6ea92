"""Per-frame latency measurement shared by `deepshift-edge demo`/`bench` and bench/.

Times are wall-clock nanoseconds around one call, summarised as percentiles in µs.
Everything compared in one report is measured in the same run, on the same frames.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np

__all__ = ["time_calls", "summarize", "stream_timer", "recompute_timer"]


def time_calls(fn: Callable, frames: Sequence, repeat: int = 1) -> np.ndarray:
    """Call fn(frame) for every frame; return per-call durations in µs."""
    clock = time.perf_counter_ns
    out = np.empty(len(frames) * repeat)
    k = 0
    for _ in range(repeat):
        for frame in frames:
            t0 = clock()
            fn(frame)
            out[k] = clock() - t0
            k += 1
    return out / 1000.0


def summarize(us: np.ndarray) -> dict:
    """p50/p90/p99/max in µs and frames per second (from the median)."""
    p50, p90, p99 = np.percentile(us, [50, 90, 99])
    return {"p50_us": float(p50), "p90_us": float(p90), "p99_us": float(p99),
            "max_us": float(us.max()), "fps": float(1e6 / p50) if p50 > 0 else float("inf"),
            "n": int(len(us))}


def stream_timer(model, mode: str = "dense"):
    """A callable pushing one frame into a warm stream of `model`."""
    return model.stream(mode=mode).push


def recompute_timer(model, sequence: np.ndarray):
    """A callable that recomputes the whole window ending at frame index i with the
    same compiled kernels (a fresh decimated stream fed the W frames: every layer
    computes only the positions the offline network computes)."""
    stream = model.stream(mode="decimated")
    w = model.window

    def run(i):
        stream.reset()
        return stream.push_many(sequence[i - w + 1:i + 1])

    return run
