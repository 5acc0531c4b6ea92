"""The benchmark: per-frame latency of the reference models, every alternative side by side.

    python bench/run.py                 # everything: tables, JSON, sweep plot (bench/out/)
    python bench/run.py --quick         # fewer frames, for a smoke run
    python bench/run.py --only kws      # one model

All figures of one report come from one run of this script, on one machine, one thread
per runtime. Each column first checks that its outputs agree with the streamed ones.
"""
from __future__ import annotations

import os

# One thread for every runtime (NumPy's BLAS included), set before NumPy loads.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import deepshift_edge as dse  # noqa: E402
from deepshift_edge.tools.bench import _time_frames, bench_model, format_table, machine_info  # noqa: E402
from deepshift_edge.tools.timing import summarize  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = ["tiny", "kws", "activity", "spectrogram"]


def load_models(names):
    sys.path.insert(0, os.path.join(HERE, "models"))
    from build import build  # noqa: E402  (bench/models/build.py)

    missing = [n for n in names if not os.path.exists(os.path.join(HERE, "models", f"{n}.npz"))]
    if missing:
        build()
    return {n: dse.load(os.path.join(HERE, "models", f"{n}.npz")) for n in names}


def push_many_ratio(model, frames: int, block: int = 64, repeats: int = 5) -> dict:
    """Per-frame cost of push_many(block of 64) vs single pushes, same frames: the medians of
    bench/push_many_ratio.py (per-call p50 of each side on fresh warm streams, median over
    repeats), so that push here is the same kind of figure as the table's streamed p50."""
    from push_many_ratio import measure  # bench/push_many_ratio.py
    single_us, many_us = measure(model, frames, block, repeats)
    return {"push_us_per_frame": single_us, "push_many_us_per_frame": many_us, "block": block,
            "ratio": single_us / many_us}


def numpy_matvec_us(model, repeats: int = 20000) -> float:
    """p50 of one NumPy float32 matrix-vector product holding as many weights as the
    model streams per frame (the issue's yardstick for the kws TCN)."""
    macs = int(model.stream().plan.macs_per_frame())
    rows = 64
    mat = np.random.default_rng(2).standard_normal((rows, max(macs // rows, 1))).astype(np.float32)
    vec = np.ones(mat.shape[1], np.float32)
    out = np.empty(rows, np.float32)
    times = np.empty(repeats)
    clock = time.perf_counter_ns
    for i in range(repeats):
        t0 = clock()
        np.matmul(mat, vec, out=out)
        times[i] = clock() - t0
    return float(np.median(times) / 1000)


# The float runtimes a user could pick instead of the stream (issue 15's "best peer"): not the
# recompute/NumPy yardsticks, not the int8 columns (a different model).
PEERS = ("executorch_stream", "tract", "litert", "executorch", "onnxruntime", "pytorch")


def best_peer(result: dict):
    """(column name, its p50 µs, its p50 over the stream's timed in alternation with it) of the
    fastest float peer that ran, or None."""
    ran = [(name, c) for name, c in result["columns"].items() if name in PEERS and "skipped" not in c]
    if not ran:
        return None
    name, c = min(ran, key=lambda nc: nc[1]["speedup_of_streaming_p50"])
    return name, c["p50_us"], c["speedup_of_streaming_p50"]


def summary_lines(report: dict) -> list:
    """One table over the run: each model's best float peer (beside the stream), and push /
    push_many against the FLOP bound at the run's best GEMM peak (a peak is the best the core
    did: one slow minute of the GEMM must not make the bound look easy) and the memory floor."""
    peak = max(pm["gemm_peak_gflops"] for pm in report["push_many"].values())
    out = ["## Summary\n", f"FLOP bound at the run's best single-core GEMM peak, {peak:.0f} GFLOP/s.", "",
           "| model | best float peer, p50 µs | its p50 / the stream's beside it | FLOP bound µs | "
           "memory floor µs | push µs (x FLOP bound, x floor) | push_many(64) µs (x FLOP bound) |",
           "|---|---|---|---|---|---|---|"]
    for name, pm in report["push_many"].items():
        bound = 2 * report["models"][name]["model"]["macs_per_frame_streamed"] / (peak * 1e9) * 1e6
        peer = report["models"][name].get("best_peer")
        cells = [f"{report['models'][name]['columns'][peer['column']]['label']}, {peer['p50_us']:.2f}",
                 f"{peer['over_stream_beside']:.1f}x"] if peer else ["-", "-"]
        floor, push, many = pm["weight_read_floor_us"], pm["push_us_per_frame"], pm["push_many_us_per_frame"]
        out.append(f"| {name} | {cells[0]} | {cells[1]} | {bound:.3f} | {floor:.3f} | {push:.2f} "
                   f"({push / bound:.2f}x, {push / floor:.2f}x) | {many:.2f} ({many / bound:.2f}x) |")
    return out + [""]


def weight_read_us(macs: int, repeats: int = 20000) -> float:
    """p50 of one `read_floats` call over one float32 per MAC: what a push's weights cost just
    to stream in, on the kernel path push runs, through the same kind of Python call. Timed in
    a loop, like push, so the bytes sit where a push finds them (L2 for the kws TCN's 280 KB);
    64-byte aligned, as a stream holds its conv weights (cache_aligned)."""
    from deepshift_edge.engine._kernels import cache_aligned, read_floats
    w = cache_aligned(np.random.default_rng(3).standard_normal(max(int(macs), 1)).astype(np.float32))
    return float(np.median(_time_frames(read_floats, [w] * repeats, rate=None)))


# ----------------------------------------------------------------------------- FLOP bound
_GEMM = r"""
import json, sys, time, numpy as np
n = int(sys.argv[1])
rng = np.random.default_rng(0)
a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
c = np.empty_like(a)
for _ in range(3):
    np.matmul(a, b, out=c)
ts = []
for _ in range(15):
    t0 = time.perf_counter(); np.matmul(a, b, out=c); ts.append(time.perf_counter() - t0)
kernel = "?"
try:
    from threadpoolctl import threadpool_info
    kernel = ", ".join(f"{i['internal_api']} {i.get('architecture', '')}".strip() for i in threadpool_info())
except ImportError:
    pass
print(json.dumps({"gflops": 2 * n ** 3 / float(np.median(ts)) / 1e9, "kernel": kernel}))
"""


def gemm_peak(n: int = 1024) -> dict:
    """Single-core fp32 GEMM GFLOP/s (NumPy's BLAS, one thread, n^3, median of 15), in a
    child process with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset so OpenBLAS picks its own
    kernel for this CPU (some machines pin an older one: Haswell runs AVX2 only), and as
    this process has it; the larger is the peak. The FLOP bound of a model is
    2 x MACs / peak: the yardstick issue 15 sets (push within 2.5x, push_many within 1.5x)."""
    import subprocess
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env["OPENBLAS_NUM_THREADS"] = "1"
    runs = []
    for e in (env, dict(os.environ, OPENBLAS_NUM_THREADS="1")):
        out = subprocess.run([sys.executable, "-c", _GEMM, str(n)], env=e, capture_output=True, text=True)
        if out.returncode == 0:
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    best = max(runs, key=lambda r: r["gflops"])
    return {"gflops": best["gflops"], "kernel": best["kernel"], "all": runs}


# ----------------------------------------------------------------------------- scaling sweep
def conv_stack(window):
    """Plain conv stack: 4 valid convs (32 ch, kernel 3), global average over the window."""
    layers = [dse.Conv1d(8, 32, 3, seed=1), dse.ReLU()]
    for i in range(3):
        layers += [dse.Conv1d(32, 32, 3, seed=2 + i), dse.ReLU()]
    return dse.Sequential(layers + [dse.GlobalAvgPool(), dse.Linear(32, 4, seed=9)], in_features=8,
                          window=window)


def strided_net(window):
    """Strided/pooled network: conv, stride-2 max pool, conv, stride-2 max pool, conv, global average."""
    return dse.Sequential([
        dse.Conv1d(8, 32, 5, seed=1), dse.ReLU(), dse.MaxPool1d(2),
        dse.Conv1d(32, 32, 5, seed=2), dse.ReLU(), dse.MaxPool1d(2),
        dse.Conv1d(32, 32, 3, seed=3), dse.ReLU(), dse.GlobalAvgPool(), dse.Linear(32, 4, seed=9)],
        in_features=8, window=window)


def sweep(windows, frames, recompute_frames):
    rows = []
    for family, factory in (("conv stack", conv_stack), ("strided/pooled", strided_net)):
        for w in windows:
            if family != "conv stack" and w < 32:
                continue  # the strided network needs 28 frames
            model = factory(w)
            r = bench_model(model, frames=frames, recompute_frames=recompute_frames, columns=["recompute"])
            s, rc = r["columns"]["streamed"], r["columns"]["recompute"]
            rows.append({"family": family, "window": w, "stream_p50_us": s["p50_us"],
                         "recompute_p50_us": rc["p50_us"], "speedup": rc["p50_us"] / s["p50_us"],
                         "macs_streamed": r["model"]["macs_per_frame_streamed"]})
            print(f"  {family:15s} W={w:5d}  stream {s['p50_us']:8.2f} µs  recompute {rc['p50_us']:10.1f} µs"
                  f"  x{rows[-1]['speedup']:.1f}", flush=True)
    return rows


def plot_sweep(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for family in dict.fromkeys(r["family"] for r in rows):
        pts = [r for r in rows if r["family"] == family]
        ax.loglog([r["window"] for r in pts], [r["speedup"] for r in pts], "o-", label=family)
    ws = np.array(sorted({r["window"] for r in rows}), dtype=float)
    ax.loglog(ws, ws / ws[0] * min(r["speedup"] for r in rows if r["window"] == ws[0]), ":",
              color="gray", label="slope 1 (linear in W)")
    ax.set_xlabel("window W (frames)")
    ax.set_ylabel("speed-up of streaming over recompute (p50)")
    ax.set_title("Deep Shifting: per-frame saving vs window")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


# ----------------------------------------------------------------------------- int8
_INT8_PROBE = r"""
import json, os, sys
import numpy as np
sys.path.insert(0, {here!r})
import deepshift_edge as dse
from deepshift_edge.engine import _kernels
from push_many_ratio import _per_call_us
frames, repeats = {frames}, {repeats}
out = {{"qkernel_isa": _kernels.qkernel_isa(), "kernel_isa": _kernels.kernel_isa(), "models": {{}}}}
for name in {names!r}:
    model = dse.load(os.path.join({here!r}, "models", name + ".npz"))
    w = model.window
    x = np.random.default_rng(1).standard_normal((w + 400 + frames,) + tuple(model.frame_shape)).astype(np.float32)
    qmodel = dse.quantize(model, x[:w + 400])
    warm, timed = x[:w], x[w:w + frames]
    f32, i8 = [], []
    for _ in range(repeats):  # alternate, so that machine noise hits both alike
        f32.append(float(np.median(_per_call_us(model, warm, "push", timed))))
        i8.append(float(np.median(_per_call_us(qmodel, warm, "push", timed))))
    out["models"][name] = {{"fp32_push_us": float(np.median(f32)), "int8_push_us": float(np.median(i8)),
                           "fp32_ring_bytes": int(model.stream().buffer_bytes),
                           "int8_ring_bytes": int(qmodel.stream().buffer_bytes)}}
print(json.dumps(out))
"""

INT8_PATHS = ("scalar", "c16", "avxvnni", "avx512vnni")
# the float path of a CPU whose best int8 path is the key (x86-64): fp32 beside each int8 path
# is what that CPU would run (an AVX-VNNI or AVX2 CPU has no AVX-512; SSE2 is the baseline)
FLOAT_PATH_OF = {"scalar": "baseline", "c16": "avx2", "avxvnni": "avx2", "avx512vnni": None}


def int8_section(names, frames: int, repeats: int = 5) -> dict:
    """Per-frame push int8 vs fp32 per bench model (p50 per call, median over alternating
    repeats), ring bytes, on the int8 kernel path this CPU picks and on each path forced with
    DSE_QKERNELS (one child process per path; a path the CPU lacks falls back, and says so)."""
    import subprocess
    runs = {}
    probe = _INT8_PROBE.format(here=HERE, frames=frames, repeats=repeats, names=list(names))
    for path in (None,) + INT8_PATHS:
        env = dict(os.environ)
        env.pop("DSE_QKERNELS", None)
        if path:
            env["DSE_QKERNELS"] = path
            if FLOAT_PATH_OF.get(path):
                env["DSE_KERNELS"] = FLOAT_PATH_OF[path]
        proc = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            runs[path or "default"] = {"error": proc.stderr.strip().splitlines()[-1:]}
            continue
        runs[path or "default"] = json.loads(proc.stdout.strip().splitlines()[-1])
    return runs


def int8_lines(runs) -> list:
    lines = []
    d = runs.get("default", {})
    if "models" in d:
        lines += [f"int8 kernels picked here: {d['qkernel_isa']} (fp32: {d['kernel_isa']})", "",
                  "| model | fp32 push µs | int8 push µs | fp32 / int8 | fp32 ring bytes | int8 ring bytes | ratio |",
                  "|---|---|---|---|---|---|---|"]
        for name, m in d["models"].items():
            lines.append(f"| {name} | {m['fp32_push_us']:.2f} | {m['int8_push_us']:.2f} | "
                         f"{m['fp32_push_us'] / m['int8_push_us']:.2f} | {m['fp32_ring_bytes']:,} | "
                         f"{m['int8_ring_bytes']:,} | {m['fp32_ring_bytes'] / max(m['int8_ring_bytes'], 1):.2f} |")
    lines += ["", "Per forced path (DSE_QKERNELS, a child process each; fp32 measured beside it on the float "
              "path a CPU with that int8 path has: DSE_KERNELS=baseline for scalar, avx2 for c16 and avxvnni):", "",
              "| DSE_QKERNELS | path taken | fp32 path | " + " | ".join(f"{n} int8 µs (fp32/int8)" for n in d.get("models", {}))
              + " |", "|---|---|---|" + "---|" * len(d.get("models", {}))]
    for path, r in runs.items():
        if path == "default":
            continue
        if "models" not in r:
            lines.append(f"| {path} | failed: {r.get('error')} |")
            continue
        cells = [f"{m['int8_push_us']:.2f} ({m['fp32_push_us'] / m['int8_push_us']:.2f}x)" for m in r["models"].values()]
        lines.append(f"| {path} | {r['qkernel_isa']} | {r['kernel_isa']} | " + " | ".join(cells) + " |")
    lines += ["", "ARM timings need ARM hardware: the emulated ARM runs check the bits, not the speed.", ""]
    return lines


def slope(rows, family):
    pts = [r for r in rows if r["family"] == family]
    w = np.log([r["window"] for r in pts])
    s = np.log([r["speedup"] for r in pts])
    return float(np.polyfit(w, s, 1)[0])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer frames (smoke run)")
    ap.add_argument("--only", default=None, help="comma-separated model names")
    ap.add_argument("--rate", type=float, default=1000.0, help="cadence-mode rate in Hz")
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--no-int8", action="store_true", help="skip the int8 section (per-path child processes)")
    ap.add_argument("--columns", default=None, help="comma-separated subset of the columns (default: all)")
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    names = args.only.split(",") if args.only else MODELS
    frames, rec = (400, 40) if args.quick else (5000, 300)
    models = load_models(names)
    report = {"machine": machine_info(), "command": "python bench/run.py" + (" --quick" if args.quick else ""),
              "models": {}, "push_many": {}, "cadence": {}}
    lines = [f"# deepshift_edge benchmark\n\n`{report['command']}`\n"]
    for name, model in models.items():
        print(f"== {name}", flush=True)
        r = bench_model(model, frames=frames, recompute_frames=rec, per_layer=True,
                        columns=args.columns.split(",") if args.columns else None)
        report["models"][name] = r
        table = format_table(r)
        peer = best_peer(r)
        if peer:
            r["best_peer"] = dict(zip(("column", "p50_us", "over_stream_beside"), peer))
            table += (f"\nbest float peer: {r['columns'][peer[0]]['label']}, p50 {peer[1]:.2f} µs = "
                      f"{peer[2]:.1f}x the stream timed in alternation with it")
        print(table, flush=True)
        c = bench_model(model, frames=min(frames, 1000), recompute_frames=min(rec, 100),
                        rate=args.rate, columns=["onnxruntime"])
        report["cadence"][name] = c
        print(f"-- cadence {args.rate:g} Hz:\n" + "\n".join(format_table(c).splitlines()[3:]), flush=True)
        pm = push_many_ratio(model, 1024 if args.quick else 4096)
        reps = 2000 if args.quick else 20000  # --quick: a smoke run (minutes under an emulated ARM root)
        pm["numpy_matvec_same_weights_us"] = numpy_matvec_us(model, reps)
        peak = gemm_peak(256 if args.quick else 1024)  # next to the push/push_many figures: the VM's speed drifts
        bound = 2 * r["model"]["macs_per_frame_streamed"] / (peak["gflops"] * 1e9) * 1e6
        macs = r["model"]["macs_per_frame_streamed"]
        floor = weight_read_us(macs, reps)
        pm.update(gemm_peak_gflops=peak["gflops"], gemm_kernel=peak["kernel"], flop_bound_us=bound,
                  p50_over_flop_bound=r["columns"]["streamed"]["p50_us"] / bound,
                  push_over_flop_bound=pm["push_us_per_frame"] / bound,
                  push_many_over_flop_bound=pm["push_many_us_per_frame"] / bound,
                  weight_read_floor_us=floor, p50_over_read_floor=r["columns"]["streamed"]["p50_us"] / floor,
                  push_over_read_floor=pm["push_us_per_frame"] / floor)
        report["push_many"][name] = pm
        flop = (f"FLOP bound at the same-run GEMM peak ({peak['gflops']:.0f} GFLOP/s, {peak['kernel']}, "
                f"one thread): {bound:.3f} µs; push {pm['push_over_flop_bound']:.2f}x it, push_many(64) "
                f"{pm['push_many_over_flop_bound']:.2f}x, streamed p50 {pm['p50_over_flop_bound']:.2f}x\n"
                f"memory floor (one read_floats call over the frame's {4 * macs / 1024:,.1f} KiB of fp32 weights, "
                f"same kernel path): {floor:.3f} µs = {floor / bound:.2f}x the FLOP bound; push "
                f"{pm['push_over_read_floor']:.2f}x it, streamed p50 {pm['p50_over_read_floor']:.2f}x")
        print(f"-- push_many(64): {pm['push_many_us_per_frame']:.2f} µs/frame vs push "
              f"{pm['push_us_per_frame']:.2f} µs/frame: x{pm['ratio']:.2f}; one NumPy matvec over as many "
              f"weights: {pm['numpy_matvec_same_weights_us']:.2f} µs\n-- {flop}", flush=True)
        lines += [f"## {name}\n", "```", table, "", f"cadence {args.rate:g} Hz (sleep between frames):",
                  *format_table(c).splitlines()[3:],
                  f"push_many(64): {pm['push_many_us_per_frame']:.2f} µs/frame vs single push "
                  f"{pm['push_us_per_frame']:.2f} µs/frame (x{pm['ratio']:.2f})",
                  f"one NumPy matvec over as many weights: {pm['numpy_matvec_same_weights_us']:.2f} µs",
                  flop, "```", ""]
    section = summary_lines(report)
    print("\n".join(section), flush=True)
    lines += section
    if not args.no_int8:
        print("== int8 vs fp32 (per kernel path)", flush=True)
        runs = int8_section(names, 1024 if args.quick else 4096, 3 if args.quick else 5)
        report["int8"] = runs
        section = int8_lines(runs)
        print("\n".join(section), flush=True)
        lines += ["## int8 vs fp32 (per-frame push, ring memory, per kernel path)\n", *section]
    if not args.no_sweep:
        print("== scaling sweep", flush=True)
        windows = [16, 32, 64, 128] if args.quick else [16, 32, 64, 128, 256, 512, 1024]
        rows = sweep(windows, 300 if args.quick else 2000, 20 if args.quick else 100)
        report["sweep"] = rows
        png = plot_sweep(rows, os.path.join(args.out, "sweep.png"))
        slopes = {f: slope(rows, f) for f in dict.fromkeys(r["family"] for r in rows)}
        report["sweep_loglog_slopes"] = slopes
        lines += ["## Scaling sweep (speed-up of streaming over full-window recompute, p50)\n",
                  "| family | W | stream µs | recompute µs | speed-up |", "|---|---|---|---|---|"]
        lines += [f"| {r['family']} | {r['window']} | {r['stream_p50_us']:.2f} | {r['recompute_p50_us']:.1f} | "
                  f"{r['speedup']:.1f} |" for r in rows]
        lines += ["", "log-log slope of speed-up vs W: " +
                  ", ".join(f"{f}: {s:.2f}" for f, s in slopes.items()),
                  "" if png else "(matplotlib not installed: no plot)", ""]
    with open(os.path.join(args.out, "results.json"), "w") as fh:
        json.dump(report, fh, indent=2)
    with open(os.path.join(args.out, "results.md"), "w") as fh:
        fh.write("\n".join(lines))
    print(f"wrote {args.out}/results.json, results.md" + ("" if args.no_sweep else ", sweep.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
