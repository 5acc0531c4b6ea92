"""Two builds of the package side by side: per-frame push p50 of each, alternating, one run.

    python bench/ab_builds.py OLD_SRC NEW_SRC [--models kws,tiny] [--rounds 8] [--int8]

OLD_SRC and NEW_SRC are `src` directories holding a built package (e.g. a `git worktree` of the
old commit, built with `python setup.py build_ext --inplace`). Each round times, in a fresh
child process per build (old, then new), every push of 2,048 random frames ten times over on a
warm stream, and keeps the p50; the table gives the median over rounds and new/old. Alternating
the builds inside every round makes the machine's drift hit both alike (on a shared VM it moves
by tens of percent over minutes, more than most changes being measured). --int8 times the int8
stream instead: each child quantizes the model on its own random frames (the same seed in both
builds, so the same int8 model) as the bench's int8 section does.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = r"""
import sys, time
import numpy as np
import deepshift_edge as dse
model = dse.load(sys.argv[1])
if sys.argv[2] == "int8":
    from deepshift_edge.tools.bench import _quantized
    calib = np.random.default_rng(1).standard_normal((model.window + 2048,) + tuple(model.frame_shape))
    model = _quantized(model, calib.astype(np.float32))
s = model.stream()
frames = list(np.random.default_rng(0).standard_normal((2048,) + tuple(model.frame_shape)).astype(np.float32))
for f in frames:
    s.push(f)
clock = time.perf_counter_ns
ns = []
for _ in range(10):
    for f in frames:
        t0 = clock()
        s.push(f)
        ns.append(clock() - t0)
print(float(np.median(ns)) / 1000)
"""


def p50_us(src: str, model_path: str, kind: str = "fp32") -> float:
    env = dict(os.environ, PYTHONPATH=src, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", CHILD, model_path, kind], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"child failed with PYTHONPATH={src}:\n{out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old_src")
    ap.add_argument("new_src")
    ap.add_argument("--models", default="kws,tiny,activity,spectrogram")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--int8", action="store_true", help="time the int8 stream of each model")
    args = ap.parse_args(argv)
    kind = "int8" if args.int8 else "fp32"
    print(f"{'model':12s}{'old p50 µs':>12s}{'new p50 µs':>12s}{'new/old':>9s}   ({kind} push, median of {args.rounds} rounds)")
    for name in args.models.split(","):
        path = os.path.join(HERE, "models", f"{name}.npz")
        old, new = [], []
        for _ in range(args.rounds):
            old.append(p50_us(args.old_src, path, kind))
            new.append(p50_us(args.new_src, path, kind))
        o, n = statistics.median(old), statistics.median(new)
        print(f"{name:12s}{o:12.3f}{n:12.3f}{n / o:9.3f}", flush=True)


if __name__ == "__main__":
    main()
