"""The Flink jobs of tests/test_flink.py, run as a script in a child process (its own JVM):

    python tests/flink_job.py --model m.npz --out DIR --parallelism 2 --fail-once MARKER
    python tests/flink_job.py --model m.npz --out DIR --parallelism 2 --savepoint-after 120
    python tests/flink_job.py --model m.npz --out DIR --parallelism 3 --restore SAVEPOINT

A bounded source of `sensors` x `blocks` records (NumberSequenceSource, parallelism 1, so
each sensor's records keep their order), sensors interleaved as a fleet sends them, each
record a block of frames from make_frames(); keyed by sensor id through
deepshift_edge.flink's operator; every output record appended to a file in DIR by the
sink (a side effect, at least once: what a restart replays shows up twice).

--fail-once: the operator raises once, at a record of the second half, after at least
two checkpoints have completed (the first is taken as the job starts) (the marker file records that it did); the job restarts
from the latest checkpoint (fixed-delay restart strategy).
--savepoint-after K: stop the job with a savepoint once K output records are written;
prints the savepoint's path. --restore PATH: start from that savepoint.
Prints one JSON line: what happened, the wall time and the records per second.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

import numpy as np

FRAME_SEED = 1_000_003


def make_frames(sensor: int, block: int, block_frames: int, frame_shape) -> np.ndarray:
    """The frames of sensor `sensor`'s block `block`: the same in the job and the reference."""
    rng = np.random.default_rng(sensor * FRAME_SEED + block)
    return rng.standard_normal((block_frames,) + tuple(frame_shape)).astype(np.float32)


def sensor_id(i: int) -> str:
    return f"sensor-{i:03d}"


def completed_checkpoints(ckpt_dir: str) -> int:
    """The id of the latest completed checkpoint (Flink keeps only the latest; ids count
    from 1), 0 if none."""
    ids = [int(os.path.basename(os.path.dirname(p))[4:])
           for p in glob.glob(os.path.join(ckpt_dir, "*", "chk-*", "_metadata"))]
    return max(ids, default=0)


def build(env, args, frame_shape):
    from pyflink.common import Types, WatermarkStrategy
    from pyflink.datastream.connectors.number_seq import NumberSequenceSource
    from pyflink.datastream.functions import MapFunction

    from deepshift_edge import flink as dse_flink

    n_sensors, n_blocks, bf, sleep = args.sensors, args.blocks, args.block_frames, args.sleep_ms / 1000.0
    frame_size = int(np.prod(frame_shape))

    def to_record(n):
        if sleep:
            time.sleep(sleep)  # a fleet's pace: checkpoints land mid-stream
        s, b = n % n_sensors, n // n_sensors
        return dse_flink.frames_record(sensor_id(s), b * bf, make_frames(s, b, bf, frame_shape))

    class FailOnce(dse_flink.StreamFunction):
        """The library's operator, failing once mid-stream after checkpoints completed."""

        def __init__(self, model, marker, ckpt_dir, from_block, stats_dir, **kw):
            super().__init__(model, **kw)
            self.marker, self.ckpt_dir, self.from_block, self.stats_dir = marker, ckpt_dir, from_block, stats_dir

        def open(self, runtime_context):
            super().open(runtime_context)
            self.busy_ns, self.n_records, self.n_frames = 0, 0, 0
            self.first = self.last = None
            self.subtask = runtime_context.get_index_of_this_subtask()
            self.after_failure = bool(self.marker) and os.path.exists(self.marker)  # a restarted task

        def process_element(self, value, ctx):
            if (self.marker and value[1] >= self.from_block * bf and not os.path.exists(self.marker)
                    and completed_checkpoints(self.ckpt_dir) >= 2):
                with open(self.marker, "w") as fh:
                    fh.write(json.dumps({"sensor": value[0], "frame": value[1], "pid": os.getpid(),
                                         "checkpoints": completed_checkpoints(self.ckpt_dir)}))
                raise RuntimeError("injected failure (tests/flink_job.py --fail-once)")
            t0 = time.perf_counter_ns()
            out = list(super().process_element(value, ctx))
            t1 = time.perf_counter_ns()
            self.busy_ns += t1 - t0
            self.n_records += 1
            self.n_frames += len(value[2]) // (4 * frame_size)
            self.first = t0 if self.first is None else self.first
            self.last = t1
            yield from out

        def close(self):
            if self.stats_dir and self.n_records:
                with open(os.path.join(self.stats_dir, f"op-{self.subtask}-{os.getpid()}.json"), "w") as fh:
                    json.dump({"records": self.n_records, "frames": self.n_frames, "busy_s": self.busy_ns / 1e9,
                               "span_s": (self.last - self.first) / 1e9, "joined": self.joined,
                               "restored": self.restored, "after_failure": self.after_failure}, fh)
            super().close()

    class WriteLines(MapFunction):
        def __init__(self, out_dir):
            self.out_dir = out_dir

        def open(self, runtime_context):
            name = f"out-{os.getpid()}-{runtime_context.get_index_of_this_subtask()}-{time.time_ns()}.txt"
            self.fh = open(os.path.join(self.out_dir, name), "a")

        def map(self, rec):
            self.fh.write(f"{rec[0]} {rec[1]} {rec[2]} {bytes(rec[3]).hex()}\n")
            self.fh.flush()
            return rec[2]

        def close(self):
            self.fh.close()

    src = env.from_source(NumberSequenceSource(0, n_sensors * n_blocks - 1), WatermarkStrategy.no_watermarks(),
                          "records").uid("records").set_parallelism(1)
    records = src.map(to_record, output_type=dse_flink.FRAMES_TYPE).uid("frames").set_parallelism(1)
    # The source's Python map in a slot of its own (see main: one slot more than the parallelism):
    # two Python tasks sharing a slot share its Python environment, and when the injected failure
    # cancels both, PyFlink's Beam runner can close that environment twice ("Reference count must
    # not be negative"), which kills the mini-cluster's only TaskManager: the restart then waits
    # for slots that never come. Seen in 2 of 3 restart runs on 2026-12-03's machine, none since.
    src.slot_sharing_group("source")
    records.slot_sharing_group("source")
    keyed = records.key_by(lambda r: r[0], key_type=Types.STRING())
    fn = FailOnce(args.model, args.fail_once, args.ckpt, n_blocks // 2, args.stats, block=args.stream_block,
                  cache=args.cache)
    outs = keyed.process(fn, output_type=dse_flink.OUTPUTS_TYPE).uid("deepshift_edge.stream").name("dse")
    outs.slot_sharing_group("default")  # else it inherits its input's group
    if args.out:
        outs.map(WriteLines(args.out), output_type=Types.INT()).uid("sink")
    else:  # throughput runs: drop the outputs (a filter that keeps none)
        outs.filter(lambda r: False).uid("sink")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", default=None, help="the sink's directory (none: outputs dropped)")
    ap.add_argument("--stats", default=None, help="directory for the operator's own timings")
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--parallelism", type=int, default=2)
    ap.add_argument("--checkpoint-ms", type=int, default=100)
    ap.add_argument("--sensors", type=int, default=4)
    ap.add_argument("--blocks", type=int, default=100)
    ap.add_argument("--block-frames", type=int, default=8)
    ap.add_argument("--sleep-ms", type=float, default=8.0)
    ap.add_argument("--cache", type=int, default=1024)
    ap.add_argument("--stream-block", type=int, default=8, help="the operator's block (rows per ring)")
    ap.add_argument("--bundle", type=int, default=8, help="python.fn-execution.bundle.size")
    ap.add_argument("--fail-once", default=None, help="marker file")
    ap.add_argument("--savepoint-after", type=int, default=0)
    ap.add_argument("--savepoint-dir", default=None)
    ap.add_argument("--restore", default=None)
    args = ap.parse_args(argv)

    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    import deepshift_edge as dse

    frame_shape = dse.load(args.model).frame_shape
    conf = Configuration()
    conf.set_string("execution.checkpointing.interval", f"{args.checkpoint_ms} ms")
    conf.set_string("execution.checkpointing.dir", "file://" + os.path.abspath(args.ckpt))
    conf.set_string("restart-strategy.type", "fixed-delay")
    conf.set_string("restart-strategy.fixed-delay.attempts", "2")
    conf.set_string("restart-strategy.fixed-delay.delay", "200 ms")
    # Small Python bundles: the source waits for the Python operators (instead of queueing
    # the whole bounded input in front of them), so a checkpoint barrier passes within a few
    # records and checkpoints land mid-stream.
    conf.set_string("python.fn-execution.bundle.size", str(args.bundle))
    conf.set_string("python.fn-execution.bundle.time", "20")
    if args.savepoint_dir:
        conf.set_string("execution.checkpointing.savepoint-dir", "file://" + os.path.abspath(args.savepoint_dir))
    if args.restore:
        conf.set_string("execution.state-recovery.path", args.restore)
    # the source's group takes one slot, the operator's group one per parallel instance
    conf.set_string("taskmanager.numberOfTaskSlots", str(args.parallelism + 1))
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(args.parallelism)
    env.set_max_parallelism(128)  # key groups: the same in every run, whatever the parallelism
    # The Python workers start `python` from PATH unless told: this venv's may not be on it.
    env.set_python_executable(sys.executable)
    build(env, args, frame_shape)
    t0 = time.perf_counter()
    report = {"parallelism": args.parallelism}
    if args.savepoint_after:
        client = env.execute_async("deepshift_edge fleet (savepoint)")
        deadline = time.time() + 300
        while _lines(args.out) < args.savepoint_after:
            if time.time() > deadline:
                raise SystemExit("no output before the deadline")
            time.sleep(0.05)
        from deepshift_edge.flink import stop_with_savepoint
        report["savepoint"] = stop_with_savepoint(client, "file://" + os.path.abspath(args.savepoint_dir))
        report["lines_at_stop"] = _lines(args.out)
    else:
        env.execute("deepshift_edge fleet")
    report["seconds"] = time.perf_counter() - t0
    report["records"] = args.sensors * args.blocks
    report["failed_once"] = bool(args.fail_once and os.path.exists(args.fail_once))
    report["completed_checkpoints"] = completed_checkpoints(args.ckpt)
    print(json.dumps(report), flush=True)


def _lines(out_dir) -> int:
    n = 0
    for p in glob.glob(os.path.join(out_dir, "out-*.txt")):
        with open(p) as fh:
            n += sum(1 for _ in fh)
    return n


if __name__ == "__main__":
    sys.exit(main())
