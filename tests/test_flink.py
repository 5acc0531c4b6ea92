"""deepshift_edge.flink on a real local Flink mini-cluster (issue 14).

Each job runs in a child process (tests/flink_job.py: its own JVM, the cluster PyFlink
starts in-process), over a bounded source of N sensors x M blocks of frames, keyed by
sensor id through the library's operator, every output appended to files by the sink.

* restart: checkpoints every 100 ms, a failure injected once mid-stream after checkpoints
  completed; Flink restarts the job from its latest checkpoint (its log says which) and
  every restarted task takes its sensors' streams from keyed state (none starts fresh).
  Every (sensor, frame) output equals the single-process run bit for bit, and the outputs
  replayed after the restart are identical to the first ones.
* rescale: a run at parallelism 2 stopped with a savepoint, resumed from it at parallelism
  3 (each sensor's state moves with its key group): again every output bit for bit.

Skipped, saying why, where PyFlink or a Java runtime is missing; .ci/run installs both
(PyFlink in its own venv: it pins NumPy and protobuf below the test venv's) and sets
DSE_REQUIRE_FLINK=1, which turns the skip into a failure.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

try:
    import pyflink  # noqa: F401
    _missing = None
except ImportError:
    _missing = ("PyFlink is not installed (pip install 'deepshift-edge[flink]'; .ci/run runs this "
                "file in a venv of its own)")
if _missing is None and shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    _missing = "no Java runtime (PyFlink starts a JVM): apt-get install openjdk-17-jre-headless"
if _missing:
    if os.environ.get("DSE_REQUIRE_FLINK"):  # .ci/run: it installed both, so this is a failure
        raise RuntimeError(f"DSE_REQUIRE_FLINK is set but {_missing}")
    pytest.skip(_missing, allow_module_level=True)

import deepshift_edge as dse  # noqa: E402

from flink_job import make_frames, sensor_id  # noqa: E402

pytestmark = pytest.mark.flink
HERE = os.path.dirname(os.path.abspath(__file__))
SENSORS, BLOCKS, BLOCK_FRAMES = 4, 100, 8


def _model():
    return dse.Sequential([dse.Conv1d(5, 40, 3, seed=1), dse.ReLU(), dse.Conv1d(40, 24, 2, dilation=2, seed=2),
                           dse.ReLU6(), dse.Conv1d(24, 32, 3, groups=2, seed=3), dse.ReLU(), dse.GlobalAvgPool(),
                           dse.Linear(32, 6, seed=4)], in_features=5, window=14)


def _reference(model):
    """{(sensor, frame): output bytes} of lone streams fed every block in order."""
    ref = {}
    for s in range(SENSORS):
        st = model.stream(block=BLOCK_FRAMES)
        for b in range(BLOCKS):
            x = make_frames(s, b, BLOCK_FRAMES, model.frame_shape)
            for j, f in enumerate(x):
                y = st.push(f)
                if y is not None:
                    ref[(sensor_id(s), b * BLOCK_FRAMES + j)] = y.tobytes()
    return ref


def _job(tmp, *args, timeout=900):
    env = dict(os.environ, FLINK_LOG_DIR=str(tmp / "logs"))
    cmd = [sys.executable, os.path.join(HERE, "flink_job.py"), "--model", str(tmp.parent / "model.npz"),
           "--sensors", str(SENSORS), "--blocks", str(BLOCKS), "--block-frames", str(BLOCK_FRAMES), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=HERE)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def _outputs(out_dir, output_shape):
    """[(sensor, frame, output bytes)], one per output the sink wrote (duplicates kept)."""
    rows = []
    size = int(np.prod(output_shape)) * 4
    for path in glob.glob(os.path.join(out_dir, "out-*.txt")):
        with open(path) as fh:
            for line in fh:
                sensor, frame, count, blob = line.split()
                raw = bytes.fromhex(blob)
                assert len(raw) == int(count) * size
                for k in range(int(count)):
                    rows.append((sensor, int(frame) + k, raw[k * size:(k + 1) * size]))
    return rows


def _check_against(rows, ref):
    seen = {}
    for sensor, frame, blob in rows:
        key = (sensor, frame)
        assert key in ref, f"output for {key}, which has none in the single-process run"
        assert blob == ref[key], f"{key}: differs from the single-process run"
        seen[key] = seen.get(key, 0) + 1
    missing = sorted(set(ref) - set(seen))
    assert not missing, f"{len(missing)} outputs missing, e.g. {missing[:3]}"
    return seen


def _stats(d):
    return [json.load(open(p)) for p in glob.glob(os.path.join(d, "op-*.json"))]


def _log(tmp) -> str:
    return "".join(open(p, errors="replace").read() for p in glob.glob(str(tmp / "logs" / "*.log")))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flink")
    model = _model()
    dse.save(model, tmp / "model.npz")
    return tmp, model, _reference(model)


# A race in PyFlink's Beam runner, not in this package: when the injected failure cancels the
# tasks, two closes of a slot's shared Python environment can both unref it; the second throws
# in the exception handler, which kills the mini-cluster's only TaskManager, and the restart
# then waits five minutes for slots that never come (2 of 3 runs on 2026-12-03's machine, CI's
# among them). flink_job.py now gives the source's Python task a slot of its own (0 of 6 runs
# since); should the race still come, the test runs the job once more, and only then.
BEAM_CLOSE_RACE = ("Reference count must not be negative", "TaskManager #0 failed")


def _restart_run(tmp, attempt):
    run = tmp / f"restart-{attempt}"
    for d in ("out", "ckpt", "logs", "stats"):
        (run / d).mkdir(parents=True)
    return run


def test_failure_restarts_from_checkpoint_bit_exact(setup):
    tmp, model, ref = setup
    for attempt in (1, 2):  # a second, fresh run only after the Beam race above, nothing else
        run = _restart_run(tmp, attempt)
        try:
            report = _job(run, "--out", str(run / "out"), "--ckpt", str(run / "ckpt"), "--parallelism", "2",
                          "--fail-once", str(run / "marker"), "--stats", str(run / "stats"))
            break
        except AssertionError:
            if attempt == 2 or not all(sig in _log(run) for sig in BEAM_CLOSE_RACE):
                raise
            warnings.warn("PyFlink's Beam runner killed the TaskManager while closing the failed tasks "
                          "(BEAM_CLOSE_RACE); running the job once more")
    assert report["failed_once"], f"the failure was not injected: {report}"
    marker = json.loads((run / "marker").read_text())
    restored = [int(m) for m in re.findall(r"Restoring job \w+ from Checkpoint (\d+)", _log(run))]
    assert restored and restored[0] >= 2, f"no restore from a checkpoint in Flink's log ({report}, {marker})"
    seen = _check_against(_outputs(run / "out", model.output_shape), ref)
    replayed = sorted(k for k, n in seen.items() if n > 1)
    # resumed from a checkpoint, not from the start: the restarted tasks took every sensor's
    # stream from the checkpoint's keyed state (a restart from scratch would start them fresh)
    stats = [s for s in _stats(run / "stats") if s["after_failure"]]
    assert sum(s["restored"] for s in stats) == SENSORS and sum(s["joined"] for s in stats) == 0, stats
    print(f"\nrestart: failure at {marker['sensor']} frame {marker['frame']}, restored from checkpoint "
          f"{restored[0]}, {len(replayed)} outputs replayed (identical), {report['seconds']:.1f} s")


def test_rescale_through_a_savepoint_bit_exact(setup):
    tmp, model, ref = setup
    run = tmp / "rescale"
    for d in ("out", "ckpt", "sp", "logs", "stats"):
        (run / d).mkdir(parents=True)
    total = len(ref) // BLOCK_FRAMES  # about the output records of the whole stream
    first = _job(run, "--out", str(run / "out"), "--ckpt", str(run / "ckpt"), "--parallelism", "2",
                 "--savepoint-after", str(total // 3), "--savepoint-dir", str(run / "sp"))
    assert first["savepoint"], first
    rows_a = _outputs(run / "out", model.output_shape)
    assert 0 < len(rows_a) < len(ref), "the first run should stop mid-stream"
    second = _job(run, "--out", str(run / "out"), "--ckpt", str(run / "ckpt"), "--parallelism", "3",
                  "--restore", first["savepoint"], "--stats", str(run / "stats"))
    stats = _stats(run / "stats")  # the second run's three tasks, each restoring its sensors
    assert sum(s["restored"] for s in stats) == SENSORS and sum(s["joined"] for s in stats) == 0, stats
    assert re.search(r"Restoring job \w+ from Savepoint", _log(run)), "no restore from the savepoint"
    seen = _check_against(_outputs(run / "out", model.output_shape), ref)
    print(f"\nrescale 2 -> 3 through {first['savepoint']}: {len(rows_a)} outputs before the stop, "
          f"{sum(seen.values()) - len(rows_a)} after; {sum(n > 1 for n in seen.values())} duplicated; "
          f"{first['seconds']:.1f} s + {second['seconds']:.1f} s")
