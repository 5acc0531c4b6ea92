"""Draw the tutorial's pictures from the shipped BasicMotions model and recordings.

    python docs/make_figures.py [--out docs]

* ``streamed_predictions.png``: the 400-frame held-out recording shipped with the package
  (Standing, Walking, Running, Badminton, 10 s each) and the class probabilities the
  stream returns at every frame, next to the activity actually recorded.
* ``latency_hist.png``: per-frame latency of ``stream.push`` next to recomputing the whole
  40-frame window, measured in one run on the 40 held-out recordings.

Needs matplotlib (``pip install "deepshift-edge[bench]"``).
"""
from __future__ import annotations

import argparse
import os
import platform

import numpy as np

import deepshift_edge as dse
from deepshift_edge.data import datasets
from deepshift_edge.tools.timing import recompute_timer, summarize, time_calls

HERE = os.path.dirname(os.path.abspath(__file__))
SEGMENTS = ("Standing", "Walking", "Running", "Badminton")   # order of basicmotions_test.npy
COLORS = {"Standing": "tab:blue", "Running": "tab:red", "Walking": "tab:green", "Badminton": "tab:purple"}


def predictions_figure(model, path: str) -> None:
    import matplotlib.pyplot as plt

    x = np.load(datasets.data_path("basicmotions_test.npy"))
    labels = datasets.LABELS["basicmotions"]
    rate = 10.0
    stream = model.stream()
    probs = np.full((len(x), len(labels)), np.nan)
    for t, frame in enumerate(x):
        y = stream.push(frame)
        if y is not None:
            probs[t] = y
    time_s = np.arange(len(x)) / rate
    fig, (ax0, ax1, ax2) = plt.subplots(3, 1, figsize=(9, 6.2), sharex=True,
                                        gridspec_kw={"height_ratios": [1.1, 1.1, 1.3]})
    for c, name in enumerate(("ax", "ay", "az")):
        ax0.plot(time_s, x[:, c], lw=0.8, label=name)
    for c, name in enumerate(("gx", "gy", "gz")):
        ax1.plot(time_s, x[:, 3 + c], lw=0.8, label=name)
    ax0.set_ylabel("acceleration\n(m/s²)")
    ax1.set_ylabel("rotation\n(rad/s)")
    for k, name in enumerate(labels):
        ax2.plot(time_s, probs[:, k], color=COLORS[name], lw=1.5, label=name)
    ax2.set_ylabel("streamed\nprobability")
    ax2.set_ylim(-0.03, 1.03)
    ax2.set_xlabel(f"time (s) at {rate:g} frames/s; an output every frame once the first "
                   f"{model.window} frames are in")
    seg = len(x) // len(SEGMENTS)
    for i, name in enumerate(SEGMENTS):
        for ax in (ax0, ax1, ax2):
            ax.axvspan(i * seg / rate, (i + 1) * seg / rate, color=COLORS[name], alpha=0.07, lw=0)
        ax0.text((i + 0.5) * seg / rate, 1.02, f"recorded: {name}", transform=ax0.get_xaxis_transform(),
                 ha="center", va="bottom", fontsize=9, color=COLORS[name])
    ax2.axvspan(0, (model.window - 1) / rate, color="0.85", lw=0)
    ax2.text((model.window - 1) / rate / 2, 0.5, "filling\nthe window", ha="center", va="center", fontsize=8)
    for ax in (ax0, ax1):
        ax.legend(loc="upper right", fontsize=7, ncol=3, framealpha=0.8)
    ax2.legend(loc="center right", fontsize=7, ncol=2, framealpha=0.9)
    fig.suptitle("BasicMotions held-out recording, streamed frame by frame (each output = the "
                 f"network on the last {model.window} frames)", fontsize=10, y=0.995)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def latency_figure(model, path: str) -> dict:
    import matplotlib.pyplot as plt

    data = datasets.load_basicmotions()
    x = np.ascontiguousarray(data.x_test.reshape(-1, data.x_test.shape[-1]))
    w = model.window
    stream = model.stream()
    stream.push_many(x[:w - 1])
    streamed = time_calls(stream.push, x[w - 1:])
    recompute = time_calls(recompute_timer(model, x), np.arange(w - 1, len(x)))
    s, r = summarize(streamed), summarize(recompute)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    lo = max(min(streamed.min(), recompute.min()) * 0.8, 0.1)
    hi = max(streamed.max(), recompute.max()) * 1.2
    bins = np.geomspace(lo, hi, 80)
    ax.hist(streamed, bins=bins, alpha=0.75, color="tab:blue",
            label=f"streamed push: p50 {s['p50_us']:.1f} µs, p99 {s['p99_us']:.1f} µs")
    ax.hist(recompute, bins=bins, alpha=0.75, color="tab:orange",
            label=f"full-window recompute: p50 {r['p50_us']:.1f} µs, p99 {r['p99_us']:.1f} µs")
    for v, c in ((s["p50_us"], "tab:blue"), (r["p50_us"], "tab:orange")):
        ax.axvline(v, color=c, ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("per-frame latency (µs, log scale)")
    ax.set_ylabel("frames")
    ax.set_title(f"{len(streamed):,} frames of the 40 held-out recordings, one thread, Python "
                 f"{platform.python_version()} on {platform.machine()}: streaming is "
                 f"{r['p50_us'] / s['p50_us']:.0f}x faster (median)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {"streamed": s, "recompute": r}


def main(argv=None) -> dict:
    import matplotlib
    matplotlib.use("Agg")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=HERE, help="folder for the PNG files")
    parser.add_argument("--model", default="basicmotions", help="a .npz model or a shipped name")
    args = parser.parse_args(argv)
    model = dse.load(args.model)
    os.makedirs(args.out, exist_ok=True)
    predictions_figure(model, os.path.join(args.out, "streamed_predictions.png"))
    lat = latency_figure(model, os.path.join(args.out, "latency_hist.png"))
    print(f"wrote streamed_predictions.png and latency_hist.png in {args.out}")
    return lat


if __name__ == "__main__":
    main()
