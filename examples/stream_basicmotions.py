"""Stream the 40 held-out BasicMotions recordings frame by frame through the shipped model.

    python examples/stream_basicmotions.py [--model path/to/model.npz]

Needs only deepshift_edge (and NumPy). For every recording it pushes the 100 frames one at
a time and compares every streamed output with the offline network run on the window
ending at that frame (``model.forward``, the float64 NumPy reference): accuracy of both,
their agreement, then per-frame latency of ``push`` next to a full-window recompute with
the same compiled kernels, measured in the same run on the same frames.
"""
from __future__ import annotations

import argparse
import platform

import numpy as np

import deepshift_edge as dse
from deepshift_edge.data import datasets
from deepshift_edge.tools.timing import recompute_timer, summarize, time_calls


def evaluate(model, recordings: np.ndarray, labels: np.ndarray) -> dict:
    """Streamed and offline predictions of every window of every recording (N, T, C)."""
    stream = model.stream()
    streamed, offline = [], []
    for rec in recordings:
        stream.reset()
        outs = []
        for frame in rec:                      # frame by frame, as from a sensor
            y = stream.push(frame)
            if y is not None:
                outs.append(y.copy())          # push reuses its output array
        streamed.append(outs)
        offline.append(model.forward(rec))     # row i: the network on frames i .. i+W-1
    streamed = np.asarray(streamed, dtype=np.float64)     # (N, T-W+1, classes)
    offline = np.asarray(offline)
    truth = labels[:, None]
    return {
        "streamed": streamed, "offline": offline,
        "acc_windows_streamed": float((streamed.argmax(-1) == truth).mean()),
        "acc_windows_offline": float((offline.argmax(-1) == truth).mean()),
        # One decision per recording: the mean of its window probabilities.
        "acc_recordings_streamed": float((streamed.mean(1).argmax(-1) == labels).mean()),
        "acc_recordings_offline": float((offline.mean(1).argmax(-1) == labels).mean()),
        "same_class": float((streamed.argmax(-1) == offline.argmax(-1)).mean()),
        "max_abs_error": float(np.abs(streamed - offline).max()),
        "windows": int(streamed.shape[0] * streamed.shape[1]),
    }


def latency(model, frames: np.ndarray, recompute_frames: int = 1000) -> dict:
    """Per-frame µs: streamed push vs recomputing the whole window, on the same frames."""
    x = np.ascontiguousarray(frames, dtype=np.float32)
    w = model.window
    stream = model.stream()
    stream.push_many(x[:w - 1])
    streamed = time_calls(stream.push, x[w - 1:])
    idx = np.arange(w - 1, min(len(x), w - 1 + recompute_frames))
    recompute = time_calls(recompute_timer(model, x), idx)
    return {"streamed_us": streamed, "recompute_us": recompute,
            "streamed": summarize(streamed), "recompute": summarize(recompute)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="basicmotions", help="a .npz model or a shipped name")
    args = parser.parse_args(argv)
    model = dse.load(args.model)
    data = datasets.load_basicmotions()

    r = evaluate(model, data.x_test, data.y_test)
    n = len(data.y_test)
    print(f"{n} held-out recordings, {r['windows']} windows of {model.window} frames "
          f"({model.window / data.rate_hz:g} s at {data.rate_hz:g} Hz)")
    print(f"  {'':28s}{'windows':>10s}{'recordings':>12s}")
    print(f"  {'accuracy, streamed (push)':28s}{r['acc_windows_streamed']:10.1%}{r['acc_recordings_streamed']:12.1%}")
    print(f"  {'accuracy, offline (forward)':28s}{r['acc_windows_offline']:10.1%}{r['acc_recordings_offline']:12.1%}")
    print(f"  same class streamed vs offline: {r['same_class']:.1%} of windows; max |error| of "
          f"the probabilities: {r['max_abs_error']:.1e}")
    assert r["same_class"] == 1.0 and r["max_abs_error"] < 1e-4, "streamed and offline disagree"

    lat = latency(model, data.x_test.reshape(-1, data.x_test.shape[-1]))
    print(f"\nper-frame latency (µs), Python {platform.python_version()} on {platform.machine()}:")
    print(f"  {'':26s}{'p50':>9s}{'p90':>9s}{'p99':>9s}{'max':>9s}{'frames':>8s}")
    for name, s in (("streamed (push)", lat["streamed"]), ("full-window recompute", lat["recompute"])):
        print(f"  {name:26s}{s['p50_us']:9.1f}{s['p90_us']:9.1f}{s['p99_us']:9.1f}{s['max_us']:9.1f}{s['n']:8d}")
    print(f"  streaming is {lat['recompute']['p50_us'] / lat['streamed']['p50_us']:.1f}x faster (median)")
    return {**r, **lat}


if __name__ == "__main__":
    main()
