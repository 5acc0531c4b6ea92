"""Throughput of one Flink slot running deepshift_edge.flink's operator (issue 14).

    python bench/flink_slot.py                      # kws, 64 sensors, blocks of 1, 16, 64 frames
    python bench/flink_slot.py --model activity --blocks 16,64

Needs PyFlink and Java (run it from the venv .ci/run makes for PyFlink, or any venv with
``pip install -e ".[flink]"``). Each configuration is one job on a local mini-cluster
(tests/flink_job.py) at parallelism 1 with checkpoints every second: a bounded source of
sensors x records, the records' frames drawn in the source's Python map, keyed by sensor
id into the operator, outputs dropped. Reported per configuration:

* operator: frames/s inside the operator's process_element (restore-if-needed, push_many,
  snapshot, state update, output record), from its own timer;
* slot: frames/s of the whole chain in the slot (Flink's record transport, the source's
  map, key-by, operator), first to last record of the operator;
* bytes of keyed state per sensor (the snapshot the operator writes per record).

One run, side by side; the CPU, kernel path and the operator's work without Flink (push_many + snapshot
per record, in this process) are printed with them. Writes bench/out/flink_slot.json.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
JOB = os.path.join(HERE, "..", "tests", "flink_job.py")


def lone_rate(model, block, sensors):
    """frames/s of push_many(block) on lone streams, snapshot to bytes after each block:
    the operator's work without Flink."""
    from deepshift_edge.engine.pool import StreamPool
    pool = StreamPool(model, capacity=sensors, block=8)  # the operator's
    rng = np.random.default_rng(0)
    x = rng.standard_normal((sensors, 8, block) + tuple(model.frame_shape)).astype(np.float32)
    ids = [f"s{i}" for i in range(sensors)]
    t0 = time.perf_counter()
    for k in range(8):
        for i, s in enumerate(ids):
            pool.push_many(s, x[i, k])
            pool.snapshot(s)
    return 8 * sensors * block / (time.perf_counter() - t0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="kws")
    ap.add_argument("--sensors", type=int, default=64)
    ap.add_argument("--frames", type=int, default=8192, help="frames per sensor")
    ap.add_argument("--blocks", default="1,16,64", help="frames per record")
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    args = ap.parse_args(argv)

    import deepshift_edge as dse
    from deepshift_edge.engine import _kernels
    from deepshift_edge.tools.bench import machine_info

    path = os.path.join(HERE, "models", f"{args.model}.npz")
    model = dse.load(path)
    info = machine_info()
    info["kernel_isa"] = _kernels.kernel_isa()
    import pyflink.version
    info["pyflink"] = pyflink.version.__version__
    java = subprocess.run(["java", "-version"], capture_output=True, text=True)
    info["java"] = (java.stderr or java.stdout).splitlines()[0] if java.returncode == 0 else "?"
    print(f"CPU {info['cpu']}, kernels {info['kernel_isa']}, PyFlink {info['pyflink']}, {info['java']}", flush=True)
    rows = []
    for block in [int(b) for b in args.blocks.split(",")]:
        frames = args.frames if block > 1 else min(args.frames, 1024)  # one frame a record: slow
        n_blocks = max(1, frames // block)
        with tempfile.TemporaryDirectory() as tmp:
            stats, ckpt = os.path.join(tmp, "stats"), os.path.join(tmp, "ckpt")
            os.makedirs(stats)
            os.makedirs(ckpt)
            cmd = [sys.executable, JOB, "--model", path, "--sensors", str(args.sensors), "--blocks", str(n_blocks),
                   "--block-frames", str(block), "--sleep-ms", "0", "--parallelism", "1", "--stats", stats,
                   "--ckpt", ckpt, "--checkpoint-ms", "1000", "--bundle", "1000"]
            env = dict(os.environ, FLINK_LOG_DIR=os.path.join(tmp, "logs"))
            t0 = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True, env=env)
            wall = time.perf_counter() - t0
            if r.returncode != 0:
                print(r.stdout[-2000:], r.stderr[-4000:])
                return 1
            op = [json.load(open(p)) for p in glob.glob(os.path.join(stats, "op-*.json"))]
            records = sum(o["records"] for o in op)
            fr = sum(o["frames"] for o in op)
            busy = sum(o["busy_s"] for o in op)
            span = max(o["span_s"] for o in op)
        pool = dse.StreamPool(model, capacity=1, block=8)  # the operator's (--stream-block)
        pool.join("s")
        state_bytes = len(pool.snapshot("s"))
        row = {"frames_per_record": block, "sensors": args.sensors, "records": records, "frames": fr,
               "operator_frames_per_s": fr / busy, "slot_frames_per_s": fr / span,
               "operator_us_per_record": busy / records * 1e6, "slot_records_per_s": records / span,
               "state_bytes_per_sensor": state_bytes, "job_wall_s": wall,
               "no_flink_frames_per_s": lone_rate(model, block, min(args.sensors, 16))}
        rows.append(row)
        print(f"{args.model} {block:3d} frames/record: operator {row['operator_frames_per_s']:,.0f} frames/s "
              f"({row['operator_us_per_record']:.0f} µs/record), slot {row['slot_frames_per_s']:,.0f} frames/s "
              f"({row['slot_records_per_s']:,.0f} records/s); without Flink {row['no_flink_frames_per_s']:,.0f} "
              f"frames/s; state {state_bytes:,} B/sensor; job {wall:.0f} s", flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "flink_slot.json"), "w") as fh:
        json.dump({"command": "python bench/flink_slot.py " + " ".join(argv or sys.argv[1:]), "machine": info,
                   "model": args.model, "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
