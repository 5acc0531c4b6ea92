"""Per-frame cost of single push() calls vs push_many(64), on the same frames, in one run.

    PYTHONPATH=src python bench/push_many_ratio.py [--frames 2048] [--repeats 7] [--block 64]

For every bench model: each repeat makes a fresh warm stream for each side, times every
push() call and every push_many(block) call (divided by its frame count), and keeps the
p50 per frame; the table shows the median over repeats. Single pushes and push_many
alternate within each repeat, so machine noise hits both sides alike. The ratio
(push / push_many) is what issue 4 asks to be >= 3 on kws.
"""
from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402

import numpy as np  # noqa: E402

import deepshift_edge as dse  # noqa: E402
from deepshift_edge.tools.bench import _time_frames  # noqa: E402  the bench's per-call timing loop

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = ["kws", "activity", "spectrogram", "tiny"]


def _per_call_us(model, warm, method: str, items) -> np.ndarray:
    """µs of each `stream.<method>(item)` call on a fresh stream warmed with `warm`."""
    s = model.stream()
    s.push_many(warm)
    return _time_frames(getattr(s, method), items, rate=None)


def measure(model, frames: int, block: int, repeats: int):
    rng = np.random.default_rng(1)
    w = model.window
    x = rng.standard_normal((w + frames,) + tuple(model.frame_shape)).astype(np.float32)
    warm, timed = x[:w], x[w:]
    blocks = [np.ascontiguousarray(timed[i:i + block]) for i in range(0, frames - block + 1, block)]
    single, many = [], []
    for _ in range(repeats):  # fresh warm streams each repeat; single pushes, then blocks
        single.append(np.median(_per_call_us(model, warm, "push", timed)))
        many.append(np.median(_per_call_us(model, warm, "push_many", blocks) / block))
    return float(np.median(single)), float(np.median(many))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--models", nargs="*", default=MODELS)
    args = ap.parse_args(argv)
    print(f"deepshift_edge from {os.path.dirname(dse.__file__)}"
          + (" (DEBUG BUILD)" if dse.debug_build() else ""))
    print(f"{'model':12s}{'push µs/frame':>15s}{'push_many(' + str(args.block) + ') µs/frame':>24s}{'ratio':>8s}")
    for name in args.models:
        model = dse.load(os.path.join(HERE, "models", f"{name}.npz"))
        single, many = measure(model, args.frames, args.block, args.repeats)
        print(f"{name:12s}{single:15.3f}{many:24.3f}{single / many:8.2f}", flush=True)


if __name__ == "__main__":
    main()
