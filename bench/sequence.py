"""O(T²) vs O(T): a per-position network over a whole recording, re-run on every prefix
versus streamed (semantics='sequence'), with the same compiled kernels, in one run.

    python bench/sequence.py [--lengths 256,512,1024,2048,4096] [--out bench/out]

For each model and recording length T: the total time to produce every position's output
for every prefix length 1..T (what an offline loop does when each new frame arrives: run the
network on everything so far), and the total time of one stream over the T frames plus its
flush (CPU time of this process: the loops are single-threaded, and a busy machine's
preemptions do not count). The exponents come from a least-squares fit of log(time) on log(T). Writes
sequence.json and sequence.png (needs matplotlib) to --out and prints a table with the
machine and kernel path.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

import deepshift_edge as dse
from deepshift_edge.tools.bench import machine_info


def tcn(c=8, levels=4, k=3):
    """Bai et al.'s TCN written for whole recordings: causal dilated convs, residual adds."""
    x = dse.Input(4)
    h = dse.Conv1d(4, c, 1)(x)
    for i in range(levels):
        d = 2 ** i
        y = dse.ReLU()(dse.Conv1d(c, c, k, dilation=d, padding="causal")(h))
        y = dse.ReLU()(dse.Conv1d(c, c, k, dilation=d, padding="causal")(y))
        h = dse.ReLU()(dse.Add()(y, h))
    return dse.Model(x, dse.Conv1d(c, 3, 1)(h), semantics="sequence")


def wavenet(c=8, layers=5):
    """Gated causal dilated convs (tanh * sigmoid) with residual and summed skip outputs."""
    x = dse.Input(2)
    h = dse.Conv1d(2, c, 1)(x)
    skips = []
    for i in range(layers):
        both = dse.Conv1d(c, 2 * c, 2, dilation=2 ** i, padding="causal")(h)
        g = dse.Mul()(dse.Tanh()(dse.ChannelSlice(0, c)(both)), dse.Sigmoid()(dse.ChannelSlice(c, 2 * c)(both)))
        skips.append(dse.Conv1d(c, c, 1)(g))
        h = dse.Add()(dse.Conv1d(c, c, 1)(g), h)
    out = dse.ReLU()(dse.Add()(*skips))
    return dse.Model(x, dse.Conv1d(c, 4, 1)(out), semantics="sequence")


def same_stack(c=16, depth=4, k=5):
    """A plain 'same'-padded conv stack labelling every frame (the right padding delays each
    position by (k-1)/2 frames per layer)."""
    x = dse.Input(6)
    h = x
    for i in range(depth):
        h = dse.ReLU()(dse.Conv1d(6 if i == 0 else c, c, k, padding="same")(h))
    return dse.Model(x, dse.Conv1d(c, 5, 1)(h), semantics="sequence")


MODELS = {"tcn": tcn, "wavenet": wavenet, "same-stack": same_stack}


def streamed_total(model, x) -> float:
    stream = model.stream()
    t0 = time.process_time()
    for frame in x:
        stream.push(frame)
    stream.flush()
    return time.process_time() - t0


def prefixes_total(model, x) -> float:
    """Every prefix x[:t] run offline with the same kernels (a fresh stream over all of it,
    then its flush): the loop a user without streaming would write."""
    stream = model.stream()
    t0 = time.process_time()
    for t in range(model._min_window(1), len(x) + 1):
        stream.reset()
        stream.push_many(x[:t])
        stream.flush()
    return time.process_time() - t0


def fit_exponent(lengths, times) -> float:
    return float(np.polyfit(np.log(lengths), np.log(times), 1)[0])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", default="256,512,1024,2048,4096")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    args = ap.parse_args(argv)
    lengths = [int(v) for v in args.lengths.split(",")]
    info = machine_info()
    print(f"# {info['cpu']}; kernels {info['isa']}; Python {info['python']}; NumPy {info['numpy']}")
    results = {"machine": info, "models": {}}
    rng = np.random.default_rng(0)
    print(f"{'model':>12} {'T':>6} {'prefixes s':>11} {'streamed s':>11} {'ratio':>8}")
    for name, make in MODELS.items():
        model = make()
        x = rng.standard_normal((max(lengths),) + model.frame_shape).astype(np.float32)
        # the stream equals the offline run over the whole recording (checked before timing)
        s = model.stream()
        got = np.concatenate([s.push_many(x[:200]), s.flush()])
        want = model.forward(x[:200])
        assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max()), name
        rows = []
        for T in lengths:
            pre = prefixes_total(model, x[:T])
            st = min(streamed_total(model, x[:T]) for _ in range(7))  # best of 7: machine noise
            rows.append({"T": T, "prefixes_s": pre, "streamed_s": st})
            print(f"{name:>12} {T:>6} {pre:>11.4f} {st:>11.5f} {pre / st:>8.0f}")
        e_pre = fit_exponent(lengths, [r["prefixes_s"] for r in rows])
        e_st = fit_exponent(lengths, [r["streamed_s"] for r in rows])
        # the slope between the two longest recordings: fixed costs (a flush, call overheads)
        # flatten the fit at small T, so the asymptotic exponent shows at the top end
        top_pre = fit_exponent(lengths[-2:], [r["prefixes_s"] for r in rows[-2:]])
        top_st = fit_exponent(lengths[-2:], [r["streamed_s"] for r in rows[-2:]])
        print(f"{name:>12}  fitted exponents: every prefix T^{e_pre:.2f}, streamed T^{e_st:.2f}; "
              f"between the two longest: T^{top_pre:.2f} vs T^{top_st:.2f}")
        results["models"][name] = {"rows": rows, "exponent_prefixes": e_pre, "exponent_streamed": e_st,
                                   "exponent_prefixes_top": top_pre, "exponent_streamed_top": top_st,
                                   "macs_per_frame": model.stream().plan.macs_per_frame()}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "sequence.json"), "w") as f:
        json.dump(results, f, indent=1)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib absent: no plot)", file=sys.stderr)
        return 0
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, res in results["models"].items():
        T = [r["T"] for r in res["rows"]]
        line, = ax.loglog(T, [r["prefixes_s"] for r in res["rows"]], "o-",
                          label=f"{name}: every prefix, T^{res['exponent_prefixes']:.2f}")
        ax.loglog(T, [r["streamed_s"] for r in res["rows"]], "s--", color=line.get_color(),
                  label=f"{name}: streamed, T^{res['exponent_streamed']:.2f}")
    ax.set_xlabel("recording length T (frames)")
    ax.set_ylabel("total seconds for outputs at every frame")
    ax.set_title("Per-position networks: re-run on every prefix vs streamed")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "sequence.png"), dpi=110)
    print(f"wrote {os.path.join(args.out, 'sequence.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
