"""Many sensors per process (issue 14): frames/s of batched streams and of the pool, per B.

    python bench/fleet.py                       # every bench model, B = 1, 4, 16, 64
    python bench/fleet.py --only kws --calls 400
    python bench/fleet.py --quick               # a smoke run

For each bench model (bench/models/*.npz) and each B, in one run, side by side:

* ``lone``: B unbatched streams, one ``push`` each per round (what serving B sensors costs
  without batching: B matrix-vector products and B Python calls);
* ``batched``: one ``model.stream(batch=B, block=1)``, one ``push`` of (B, *frame) per
  round (the interior convs run as one small GEMM for the B streams: _gemv.h
  dse_gemv_streams; block=1, the pool's default, keeps the rings to what push needs: the
  default block=64 adds 63 rows to every ring, which for B streams spills the caches:
  ``batched64`` is the same with that default);
* ``pool``: ``StreamPool(model, capacity=B)``, one ``push(ids, frames)`` per round with the
  B sensor ids in a new random order every round (the id lookups and output copies included).

Each figure is the median over repeats of the per-round p50 (perf_counter_ns around every
call), per frame; p90/p99 are per round. frames/s = B / p50 round. The GEMM fraction is
2 x MACs per frame x frames/s over the single-core fp32 GEMM peak measured in the same run
(bench/run.py's gemm_peak: NumPy's BLAS, one thread, 1024^3). Then two threads (GIL
released in the kernel above RELEASE_GIL_MACS) and two processes, each with its own
batched stream, on the machine's 2 cores: aggregate frames/s over the same wall time.
Writes bench/out/fleet.json and fleet.md.
"""
from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import deepshift_edge as dse  # noqa: E402
from deepshift_edge.engine import _kernels  # noqa: E402
from deepshift_edge.tools.bench import machine_info  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = ["kws", "activity", "spectrogram", "tiny"]
BATCHES = [1, 4, 16, 64]


def load(name):
    path = os.path.join(HERE, "models", f"{name}.npz")
    if not os.path.exists(path):
        sys.path.insert(0, os.path.join(HERE, "models"))
        from build import build  # noqa: E402
        build()
    return dse.load(path)


def _frames(model, rounds, batch, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rounds, batch) + tuple(model.frame_shape)).astype(np.float32)


def _time_rounds(fn, items) -> np.ndarray:
    clock = time.perf_counter_ns
    out = np.empty(len(items))
    for k, item in enumerate(items):
        t0 = clock()
        fn(item)
        out[k] = clock() - t0
    return out


def _sides(model, batch, x):
    """(name, per-round callable, items) for each side, fresh streams warmed by a window."""
    warm = model.window + 1
    lone = [model.stream() for _ in range(batch)]
    for s, col in zip(lone, np.swapaxes(x[:warm], 0, 1)):
        s.push_many(np.ascontiguousarray(col))

    def lone_round(frames):
        for s, f in zip(lone, frames):
            s.push(f)

    st = model.stream(batch=batch, block=1)  # the pool's block: push alone needs no block rows
    st.push_many(np.ascontiguousarray(x[:warm]))
    st64 = model.stream(batch=batch)  # model.stream()'s default block=64: 63 more rows per ring
    st64.push_many(np.ascontiguousarray(x[:warm]))
    pool = dse.StreamPool(model, capacity=batch)
    ids = [f"sensor-{i}" for i in range(batch)]
    for t in range(warm):
        pool.push(ids, x[t])
    rng = np.random.default_rng(batch)
    orders = [rng.permutation(batch) for _ in range(16)]
    pool_items = []
    for t in range(warm, len(x)):
        o = orders[t % 16]
        pool_items.append(([ids[i] for i in o], np.ascontiguousarray(x[t][o])))
    timed = x[warm:]
    return [("lone", lone_round, timed), ("batched", st.push, timed), ("batched64", st64.push, timed),
            ("pool", lambda item: pool.push(*item), pool_items)]


def measure(model, batch, rounds, repeats):
    """{side: {p50_us_per_frame, p90_us_round, p99_us_round, frames_per_s}}: the median
    over repeats of each side's per-round percentiles; sides alternate within a repeat."""
    per = {}
    for r in range(repeats):
        x = _frames(model, model.window + 1 + rounds, batch, seed=r)
        for name, fn, items in _sides(model, batch, x):
            ns = _time_rounds(fn, items)
            per.setdefault(name, []).append(np.percentile(ns, [50, 90, 99]) / 1000.0)
    out = {}
    for name, rows in per.items():
        p50, p90, p99 = np.median(np.array(rows), axis=0)
        out[name] = {"p50_us_per_frame": p50 / batch, "p50_us_round": p50, "p90_us_round": p90,
                     "p99_us_round": p99, "frames_per_s": batch / (p50 * 1e-6)}
    return out


# ----------------------------------------------------------------------------- 2 cores
def _prepare(model, batch, rounds, seed):
    """A warm batched stream and its frames: everything but the timed loop."""
    st = model.stream(batch=batch, block=1)
    x = _frames(model, rounds, batch, seed)
    st.push_many(np.ascontiguousarray(x[:model.window + 1]))
    return st, x


def _timed(st, x, cpu=None):
    """Wall seconds of pushing x; with cpu (a list), appends the CPU seconds this thread
    got meanwhile (less than the wall time: other processes shared its core)."""
    push = st.push
    c0 = time.thread_time()
    t0 = time.perf_counter()
    for f in x:
        push(f)
    wall = time.perf_counter() - t0
    if cpu is not None:
        cpu.append(time.thread_time() - c0)
    return wall


def two_threads(model, batch, rounds):
    """Aggregate frames/s of 2 threads, one batched stream each, started together once both
    are ready (the GIL is released inside the kernel above RELEASE_GIL_MACS per call)."""
    work = [_prepare(model, batch, rounds, seed=10 + i) for i in range(2)]
    res = [None, None]
    cpu = []
    barrier = threading.Barrier(2)

    def run(i):
        barrier.wait()
        res[i] = _timed(*work[i], cpu=cpu)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "frames_per_s": 2 * rounds * batch / wall,
            "per_thread_frames_per_s": [rounds * batch / r for r in res],
            "cpu_share": sum(cpu) / sum(res), "frames_per_cpu_s": 2 * rounds * batch / sum(cpu)}


def _proc(name, batch, rounds, seed, barrier, q):
    model = load(name)
    _timed(*_prepare(model, batch, min(rounds, 200), seed))  # warm caches, pages
    work = _prepare(model, batch, rounds, seed)
    barrier.wait()
    t0 = time.time()
    cpu = []
    el = _timed(*work, cpu=cpu)
    q.put((t0, t0 + el, el, cpu[0]))


def two_processes(name, batch, rounds):
    """Aggregate frames/s of 2 processes, one batched stream each, started together once both
    are ready: the work of both over the span from the first start to the last end."""
    ctx = mp.get_context("fork")
    barrier, q = ctx.Barrier(2), ctx.Queue()
    ps = [ctx.Process(target=_proc, args=(name, batch, rounds, 20 + i, barrier, q)) for i in range(2)]
    for p in ps:
        p.start()
    got = [q.get() for _ in ps]
    for p in ps:
        p.join()
    span = max(g[1] for g in got) - min(g[0] for g in got)
    return {"span_s": span, "frames_per_s": 2 * rounds * batch / span,
            "per_process_frames_per_s": [rounds * batch / g[2] for g in got],
            "cpu_share": sum(g[3] for g in got) / sum(g[2] for g in got),
            "frames_per_cpu_s": 2 * rounds * batch / sum(g[3] for g in got)}


def gemm_peak():
    sys.path.insert(0, HERE)
    from run import gemm_peak as peak  # bench/run.py: the same yardstick as the main bench
    return peak()


def gemm_two_processes() -> float:
    """Aggregate GFLOP/s of bench/run.py's one-thread GEMM in 2 processes at once: what the
    2 cores give a compute-bound load together (the yardstick for the 2-worker rows)."""
    import subprocess
    sys.path.insert(0, HERE)
    from run import _GEMM
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    ps = [subprocess.Popen([sys.executable, "-c", _GEMM], env=env, stdout=subprocess.PIPE, text=True)
          for _ in range(2)]
    return sum(json.loads(p.communicate()[0].strip().splitlines()[-1])["gflops"] for p in ps)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=None, help="comma-separated model names")
    ap.add_argument("--calls", type=int, default=300, help="timed rounds per side per repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    args = ap.parse_args(argv)
    names = args.only.split(",") if args.only else MODELS
    batches = [int(b) for b in args.batches.split(",")]
    calls, repeats = (60, 2) if args.quick else (args.calls, args.repeats)
    os.makedirs(args.out, exist_ok=True)
    cmd = "python bench/fleet.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    info = machine_info()
    info["kernel_isa"] = _kernels.kernel_isa()
    info["load_average_at_start"] = os.getloadavg()
    peak = gemm_peak()
    peak["two_processes_gflops"] = gemm_two_processes()
    report = {"command": cmd, "machine": info, "gemm_peak": peak, "models": {}}
    lines = ["# deepshift_edge fleet benchmark (issue 14)", "", f"`{cmd}`", "",
             f"CPU {info['cpu']}, {info['cores']} cores, kernels {info['kernel_isa']}, {info['system']}; "
             f"same-run single-core GEMM peak {peak['gflops']:.0f} GFLOP/s ({peak['kernel']}); the same GEMM "
             f"in 2 processes at once: {peak['two_processes_gflops']:.0f} GFLOP/s together.", ""]
    print(lines[4], flush=True)
    for name in names:
        model = load(name)
        macs = float(model.stream().plan.macs_per_frame())
        rows = {}
        for b in batches:
            # fewer rounds for large B: every side pushes B frames a round
            r = max(20, calls * 4 // max(b, 4)) if b > 4 else calls
            m = measure(model, b, r, repeats)
            for side in m.values():
                side["gemm_fraction"] = 2 * macs * side["frames_per_s"] / (peak["gflops"] * 1e9)
            rows[b] = m
            print(f"{name:12s} B={b:3d}  " + "  ".join(
                f"{k} {v['p50_us_per_frame']:.3f} us/frame ({v['frames_per_s'] / 1e3:.0f} k/s, "
                f"{100 * v['gemm_fraction']:.0f}%)" for k, v in m.items()), flush=True)
        cores = {}
        for b in (1, 16, 64):
            if b not in batches:
                continue
            n = max(1000, 400000 // b) if not args.quick else 100  # ~1 s of work per worker
            cpu1 = []
            one = _timed(*_prepare(model, b, n, seed=5), cpu=cpu1)
            cores[b] = {"one_thread_frames_per_s": n * b / one, "one_thread_cpu_share": cpu1[0] / one,
                        "threads": two_threads(model, b, n), "processes": two_processes(name, b, n)}
            c = cores[b]
            print(f"{name:12s} B={b:3d}  2 cores: one thread {c['one_thread_frames_per_s'] / 1e3:.0f} k/s "
                  f"(CPU share {c['one_thread_cpu_share']:.2f}), "
                  f"2 threads {c['threads']['frames_per_s'] / 1e3:.0f} k/s (share {c['threads']['cpu_share']:.2f}), "
                  f"2 processes {c['processes']['frames_per_s'] / 1e3:.0f} k/s (share "
                  f"{c['processes']['cpu_share']:.2f})", flush=True)
        report["models"][name] = {"macs_per_frame": macs, "batches": rows, "two_cores": cores,
                                  "bytes_per_stream": dse.StreamPool(model, capacity=1).bytes_per_stream}
        lines += [f"## {name} ({macs:.0f} MACs/frame)", "",
                  "| B | side | µs/frame (p50) | round p90 µs | round p99 µs | frames/s | GEMM peak |",
                  "|---|---|---|---|---|---|---|"]
        for b, m in rows.items():
            for side, v in m.items():
                lines.append(f"| {b} | {side} | {v['p50_us_per_frame']:.3f} | {v['p90_us_round']:.1f} | "
                             f"{v['p99_us_round']:.1f} | {v['frames_per_s']:,.0f} | {100 * v['gemm_fraction']:.0f}% |")
        if cores:
            lines += ["", "Two workers on the 2 cores, each with its own batched stream (CPU share: CPU "
                      "seconds each worker got per wall second; below 1, other processes had part of its core):",
                      "", "| B | one thread frames/s (share) | 2 threads (share) | 2 processes (share) | "
                      "frames per CPU-second: 1 thread / 2 threads / 2 processes |", "|---|---|---|---|---|"]
            for b, c in cores.items():
                t, p = c["threads"], c["processes"]
                lines.append(f"| {b} | {c['one_thread_frames_per_s']:,.0f} ({c['one_thread_cpu_share']:.2f}) | "
                             f"{t['frames_per_s']:,.0f} ({t['cpu_share']:.2f}) | {p['frames_per_s']:,.0f} "
                             f"({p['cpu_share']:.2f}) | {c['one_thread_frames_per_s'] / c['one_thread_cpu_share']:,.0f}"
                             f" / {t['frames_per_cpu_s']:,.0f} / {p['frames_per_cpu_s']:,.0f} |")
        lines.append("")
    info["load_average_at_end"] = os.getloadavg()
    lines.append(f"Load average (1, 5, 15 min) at the start {info['load_average_at_start']}, at the end "
                 f"{info['load_average_at_end']}: other processes share the 2 cores.")
    with open(os.path.join(args.out, "fleet.json"), "w") as fh:
        json.dump(report, fh, indent=2)
    with open(os.path.join(args.out, "fleet.md"), "w") as fh:
        fh.write("\n".join(lines))
    print(f"wrote {args.out}/fleet.json, fleet.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
