"""Command line: ``deepshift-edge demo`` (and ``python -m deepshift_edge demo``)."""
from __future__ import annotations

import argparse
import platform
import sys

import numpy as np


def _demo(args) -> int:
    from . import __version__, examples
    from .timing import recompute_timer, summarize, time_calls

    model = examples.EXAMPLES[args.model]()
    rng = np.random.default_rng(0)
    # A synthetic "sensor": slow oscillations plus noise, one frame per step.
    t = np.arange(args.frames)[:, None]
    shape = model.frame_shape
    n_feat = int(np.prod(shape))
    phases = rng.uniform(0, 2 * np.pi, n_feat)
    signal = np.sin(0.05 * t * (1 + np.arange(n_feat)) / n_feat + phases) + 0.3 * rng.standard_normal((args.frames, n_feat))
    x = np.ascontiguousarray(signal.reshape((args.frames,) + shape), dtype=np.float32)

    print(f"deepshift_edge {__version__} demo on Python {platform.python_version()} ({platform.machine()})")
    print(f"model '{args.model}': frame {shape} -> output {model.output_shape}, window {model.window}, "
          f"receptive field {model.receptive_field}, hop {model.hop}")
    stream = model.stream()
    plan = stream.plan
    print(f"streamed multiply-adds per frame: {plan.macs_per_frame():,.0f}; stream buffers: "
          f"{stream.buffer_bytes:,} bytes")

    # 1. The stream equals the offline network on the window ending at every frame.
    n_check = min(args.frames, model.window + 50)
    ref = model.forward(x[:n_check])
    got = []
    for frame in x[:n_check]:
        y = stream.push(frame)
        if y is not None:
            got.append(y.copy())
    err = float(np.max(np.abs(np.array(got) - ref)))
    print(f"streamed vs offline reference on {len(got)} windows: max |error| = {err:.2e}")
    if not err <= 1e-4:
        print("ERROR: streamed outputs differ from the offline network", file=sys.stderr)
        return 1

    # 2. Per-frame latency, streamed vs recomputing the whole window, in one run.
    stream.reset()
    for frame in x[:model.window]:
        stream.push(frame)
    frames = x[model.window:]
    streamed = summarize(time_calls(stream.push, frames))
    idx = np.arange(model.window, min(args.frames, model.window + args.recompute_frames))
    recompute = summarize(time_calls(recompute_timer(model, x), idx))
    print(f"\nper-frame latency (µs), {len(frames)} streamed frames, {len(idx)} recomputed windows:")
    print(f"  {'':24s}{'p50':>10s}{'p90':>10s}{'p99':>10s}{'max':>10s}")
    for name, s in (("streamed (push)", streamed), ("full-window recompute", recompute)):
        print(f"  {name:24s}{s['p50_us']:10.2f}{s['p90_us']:10.2f}{s['p99_us']:10.2f}{s['max_us']:10.1f}")
    print(f"  speed-up of streaming (median): {recompute['p50_us'] / streamed['p50_us']:.1f}x")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="deepshift-edge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="stream a built-in example model, check it, time it")
    demo.add_argument("--model", default="activity", choices=["tiny", "kws", "activity", "spectrogram"])
    demo.add_argument("--frames", type=int, default=3000, help="synthetic frames to stream")
    demo.add_argument("--recompute-frames", type=int, default=300,
                      help="windows to recompute for the comparison")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
