"""Threads (issue 6).

* Two streams in two threads give exactly the outputs of a single-threaded run (the
  speed-up is measured by bench/threads.py, never asserted here).
* One stream hammered from two threads: every call either raises StreamBusyError or
  runs whole; afterwards the stream equals a fresh stream fed exactly the frames that
  were accepted, in the order they were applied.
* push_many racing push is memory-safe (it used to size its output before taking the
  busy guard: a segfault, see test_push_many_racing_push_is_memory_safe).
* reset/restore racing push leave a state that one of the two orders gives; warm_up
  racing push is an expected failure for now (warm_up is three guarded steps, not one).
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import deepshift_edge as dse
from deepshift_edge.data import examples
from deepshift_edge.engine import stream as stream_mod

from reliability_models import assert_outputs_equal, make, push_each, same_state

HERE = os.path.dirname(os.path.abspath(__file__))


def _run_threads(*targets):
    errors = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread hangs"
    if errors:
        raise errors[0]


# ---------------------------------------------------------------------------- (a) one stream per thread
@pytest.mark.parametrize("name", ["kws", "tiny", "strided-gap"])
def test_two_streams_in_two_threads_equal_single_threaded(name):
    model = {"kws": examples.kws_tcn, "tiny": examples.tiny}.get(name, lambda: make(name))()
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((model.window + 300,) + tuple(model.frame_shape)).astype(np.float32)
          for _ in range(2)]
    want = [push_each(model.stream(), x) for x in xs]
    want_many = [model.stream(mode="decimated").push_many(x) for x in xs]
    got, got_many = [None, None], [None, None]
    streams = [model.stream() for _ in range(2)]
    barrier = threading.Barrier(2)

    def worker(i):
        def run():
            barrier.wait()
            got[i] = push_each(streams[i], xs[i])
            s = model.stream(mode="decimated")
            got_many[i] = np.concatenate([s.push_many(xs[i][j:j + 37]) for j in range(0, len(xs[i]), 37)])
        return run

    _run_threads(worker(0), worker(1))
    for i in range(2):
        assert_outputs_equal(got[i], want[i], f"{name} thread {i}")
        np.testing.assert_array_equal(got_many[i], want_many[i])


# ---------------------------------------------------------------------------- (b) one stream, two threads
class LoggingStream(stream_mod.Stream):
    """Records the order in which frames are applied. `_coerce_frame` runs inside push's
    critical section (after the busy flag is set, before the kernel), for every input that
    is not a float32 array; no other push can run between it and the kernel."""

    def __init__(self, *args, **kwargs):
        self.applied = []
        super().__init__(*args, **kwargs)

    def _coerce_frame(self, x):
        self.applied.append(x.tag)
        return super()._coerce_frame(x)


class Tagged(np.ndarray):
    """A float64 frame that carries (thread, index)."""


def _tagged(frame, tag):
    t = np.asarray(frame, dtype=np.float64).view(Tagged)
    t.tag = tag
    return t


def test_one_stream_hammered_from_two_threads_push():
    model = examples.kws_tcn()   # GIL released around the kernel: real contention
    s = LoggingStream(model)
    assert s.plan.macs_per_frame() >= stream_mod.RELEASE_GIL_MACS   # push releases the GIL
    rng = np.random.default_rng(1)
    n = 400
    xs = [rng.standard_normal((n, 40)) for _ in range(2)]
    ok = [[], []]
    busy = [0, 0]
    barrier = threading.Barrier(2)

    def worker(i):
        def run():
            jitter = np.random.default_rng(10 + i).random(n) < 0.3
            barrier.wait()
            for j in range(n):
                if jitter[j]:
                    time.sleep(0)   # let the other thread in at varying moments
                try:
                    y = s.push(_tagged(xs[i][j], (i, j)))
                except dse.StreamBusyError:
                    busy[i] += 1
                    continue
                ok[i].append(j)
                assert y is None or y.shape == (12,)
        return run

    _run_threads(worker(0), worker(1))
    applied = s.applied
    print(f"\naccepted {len(ok[0])} + {len(ok[1])} pushes, refused {busy[0]} + {busy[1]} with StreamBusyError")
    assert sum(busy) > 0, "no contention: the test did not exercise the guard"
    assert ok[0] and ok[1]
    # every accepted push applied exactly once, every refused one never, each thread in order
    for i in range(2):
        assert [j for (t, j) in applied if t == i] == ok[i]
    assert s.frames == len(applied) == len(ok[0]) + len(ok[1])
    # the stream equals a fresh one fed the accepted frames in the order they were applied
    fresh = model.stream()
    accepted = np.array([xs[t][j] for (t, j) in applied], dtype=np.float32)
    fresh.push_many(accepted)
    assert same_state(s.state(), fresh.state())
    more = rng.standard_normal((50, 40)).astype(np.float32)
    assert_outputs_equal(push_each(s, more), push_each(fresh, more), "after the hammering")


def test_one_stream_hammered_with_push_and_push_many(monkeypatch):
    """Thread A pushes single frames, thread B blocks of 1..3 frames (push_many always
    releases the GIL; push does here because RELEASE_GIL_MACS is 0). Frame values are their
    ids; a Flatten model with a long window returns the whole accepted history in order."""
    monkeypatch.setattr(stream_mod, "RELEASE_GIL_MACS", 0)
    w = 4096
    model = dse.Sequential([dse.Flatten()], 1, w)
    s = model.stream(block=3)
    s.push_many(np.zeros((w - 1, 1), np.float32))   # outputs from the next frame on
    ok_a, ok_b = [], []
    busy = [0, 0]
    barrier = threading.Barrier(2)

    def pusher():
        jitter = np.random.default_rng(4).random(1501) < 0.3
        barrier.wait()
        for j in range(1, 1501):
            if jitter[j]:
                time.sleep(0)
            try:
                s.push(np.array([j], np.float32))
                ok_a.append(j)
            except dse.StreamBusyError:
                busy[0] += 1

    def blocks():
        barrier.wait()
        rng = np.random.default_rng(2)
        j = 100_000
        for _ in range(700):
            if rng.random() < 0.3:
                time.sleep(0)
            k = int(rng.integers(1, 4))
            block = np.arange(j, j + k, dtype=np.float32)[:, None]
            try:
                out = s.push_many(block)
                ok_b.append(list(range(j, j + k)))
                assert out.shape == (k, w)
                assert list(out[-1, -k:]) == list(range(j, j + k))   # its own block, newest last
            except dse.StreamBusyError:
                busy[1] += 1
            j += k

    _run_threads(pusher, blocks)
    n_acc = len(ok_a) + sum(len(b) for b in ok_b)
    print(f"\naccepted {len(ok_a)} pushes and {len(ok_b)} blocks ({n_acc} frames); busy: {busy}")
    assert sum(busy) > 0 and ok_a and ok_b
    assert n_acc < w - 2
    history = s.push(np.array([-1], np.float32)).copy()
    history = history[history != 0][:-1]                   # drop the zero padding and the sentinel
    assert len(history) == n_acc and s.frames == w - 1 + n_acc + 1
    # thread A's frames in order; each block contiguous, blocks in order
    assert [v for v in history if v < 100_000] == ok_a
    flat_b = [v for v in history if v >= 100_000]
    assert flat_b == [v for b in ok_b for v in b]
    pos = {v: i for i, v in enumerate(history)}
    for b in ok_b:
        assert [pos[v] for v in b] == list(range(pos[b[0]], pos[b[0]] + len(b))), f"block {b} interleaved"
    fresh = model.stream(block=3)
    fresh.push_many(np.zeros((w - 1, 1), np.float32))
    fresh.push_many(np.asarray(history, np.float32)[:, None])
    fresh.push(np.array([-1], np.float32))
    assert same_state(s.state(), fresh.state())


RACE = textwrap.dedent("""
    import sys, threading, time
    import numpy as np
    import deepshift_edge as dse
    sys.setswitchinterval(1e-6)
    model = dse.Sequential([dse.Conv1d(2, 2, 2, stride=2), dse.LastFrame()], 2, 4)   # hop 2
    s = model.stream(mode="decimated")
    frame, block = np.ones(2, np.float32), np.ones((1, 2), np.float32)
    done = [0, 0]
    other = []
    stop = time.perf_counter() + float(sys.argv[1])
    def pusher():
        while time.perf_counter() < stop:
            try:
                s.push(frame); done[0] += 1
            except dse.StreamBusyError:
                pass
    def many():
        while time.perf_counter() < stop:
            try:
                out = s.push_many(block); done[1] += 1
                assert out.shape[0] <= 1
            except dse.StreamBusyError:
                pass
            except Exception as exc:
                other.append(repr(exc))
    ts = [threading.Thread(target=pusher), threading.Thread(target=many)]
    [t.start() for t in ts]; [t.join() for t in ts]
    assert not other, other[:3]
    assert s.frames == sum(done), (s.frames, done)
    print("ok", done)
""")


def test_push_many_racing_push_is_memory_safe(tmp_path):
    """Regression: push_many sized its output from the frame count *before* taking the busy
    guard; a push from another thread in between made the kernel write past the array (or
    to NULL). Killed the interpreter with SIGSEGV within a second."""
    script = tmp_path / "race.py"
    script.write_text(RACE)
    proc = subprocess.run([sys.executable, str(script), "3"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stderr[-2000:]}"
    assert proc.stdout.startswith("ok")


def _racing_pusher(stream, frame_for, delays, go, done, stop):
    """Thread body for the race tests: each round, wait at `go`, spin for that round's
    delay, push one frame (StreamBusyError is an allowed outcome), then wait at `done`;
    return once `stop[0]` is set."""
    def pusher():
        i = 0
        while True:
            go.wait()
            if stop[0]:
                return
            t_end = time.perf_counter() + delays[i % len(delays)]
            while time.perf_counter() < t_end:
                pass
            try:
                stream.push(frame_for(i))
            except dse.StreamBusyError:
                pass
            i += 1
            done.wait()
    return pusher


@pytest.mark.parametrize("op", ["reset", "restore"])
def test_reset_or_restore_racing_push_never_leaves_an_impossible_state(op):
    """Rounds of one push racing one reset (restore of a fresh snapshot), started together
    with a random offset; after each round the state must be one that some order of the two
    calls gives. Runs until a bad round or for 2.5 s. (Before b9fe64f reset/restore checked the
    busy flag without holding it: about one round in ten left an impossible state.)"""
    model = examples.kws_tcn()
    s = model.stream()
    L0 = s.plan.nodes[0].ring
    x = np.random.default_rng(3).standard_normal((64, 40)).astype(np.float32)
    fresh_snap = model.stream().state()
    go, done = threading.Barrier(2), threading.Barrier(2)
    bad = []
    rounds = [0]
    stop = [False]
    rng = np.random.default_rng(4)
    if op == "restore":   # restore first checks the snapshot, then copies: aim the push there
        from deepshift_edge.engine import state as dse_state
        t0 = time.perf_counter()
        for _ in range(5):
            dse_state.check(s, fresh_snap)
        tc = (time.perf_counter() - t0) / 5
        delays = rng.uniform(0.7 * tc, 1.2 * tc + 5e-5, 1 << 16)
    else:
        delays = rng.uniform(0, 1e-4, 1 << 16)
    deadline = time.perf_counter() + 2.5
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)

    pusher = _racing_pusher(s, lambda i: x[i % 64], delays, go, done, stop)

    def other():
        while True:
            stop[0] = bool(bad) or time.perf_counter() > deadline
            go.wait()
            if stop[0]:
                return
            try:
                s.reset() if op == "reset" else s.restore(fresh_snap)
            except dse.StreamBusyError:
                pass
            done.wait()
            rounds[0] += 1
            snap = s.state()
            st, ring0 = snap["state"][0], snap["ring.0"][0]
            # after {reset, push} in either order: frames 0 with an empty ring, or frames 1
            # with the input head at 1 and one frame in the ring
            if not ((st[0] == 0 and not ring0.any() and not st[1:].any()) or (st[0] == 1 and st[1] == 1 % L0)):
                bad.append((rounds[0], st.tolist()))
            if not bad:   # start the next round from a fresh stream
                s.reset()

    try:
        _run_threads(pusher, other)
    finally:
        sys.setswitchinterval(old)
    assert not bad, f"round {bad[0][0]}: {op} racing push left a state no order of the two gives: {bad[0][1]}"


def test_warm_up_racing_push_gives_one_of_the_two_orders(monkeypatch):
    """warm_up(history) racing push(frame): afterwards the stream must be either
    warm_up(history) then push(frame), or just warm_up(history) (push before it, or refused),
    or the state before plus the frame (warm_up refused), or the state before. Nothing else."""
    monkeypatch.setattr(stream_mod, "RELEASE_GIL_MACS", 0)   # a tiny model, GIL released in push
    model = make("strided-gap")
    rng = np.random.default_rng(5)
    history = rng.standard_normal((model.window + 7, 3)).astype(np.float32)
    frame = rng.standard_normal(3).astype(np.float32)
    ref = model.stream()
    ref.warm_up(history)
    warm = ref.state()
    ref.push(frame)
    warm_then_push = ref.state()
    s = model.stream()
    scratch = model.stream()
    go, done = threading.Barrier(2), threading.Barrier(2)
    delays = rng.uniform(0, 3e-4, 1 << 16)
    deadline = time.perf_counter() + 2.0
    stop, bad, rounds = [False], [], [0]
    outcomes = {"warm+push": 0, "warm": 0, "start+push": 0, "start": 0}
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)

    pusher = _racing_pusher(s, lambda i: frame, delays, go, done, stop)

    def warmer():
        while True:
            stop[0] = bool(bad) or time.perf_counter() > deadline
            start = s.state()
            scratch.restore(start)
            scratch.push(frame)
            start_then_push = scratch.state()
            go.wait()
            if stop[0]:
                return
            try:
                s.warm_up(history)
            except dse.StreamBusyError:
                pass
            done.wait()
            rounds[0] += 1
            now = s.state()
            for name, snap in (("warm+push", warm_then_push), ("warm", warm), ("start+push", start_then_push),
                               ("start", start)):
                if same_state(now, snap):
                    outcomes[name] += 1
                    break
            else:
                bad.append((rounds[0], now["state"].tolist()))

    try:
        _run_threads(pusher, warmer)
    finally:
        sys.setswitchinterval(old)
    print(f"\n{rounds[0]} rounds: {outcomes}")
    assert not bad, f"round {bad[0][0]}: warm_up racing push left a state no order gives: {bad[0][1]}"


def test_warm_up_holds_the_guard_between_its_steps():
    """Deterministic form of the race above: a push that lands between warm_up's internal
    steps (modelled by a hook on _run_block, which warm_up calls after resetting the rings
    and setting the counter) must raise StreamBusyError, as it would if another thread sent
    it then. If warm_up is rewritten, move the hook to whatever runs between its steps."""
    model = make("strided-gap")
    frame = np.ones(3, np.float32)
    landed = []

    class Hooked(stream_mod.Stream):
        def _run_block(self, block, out, ready, *guard):
            try:
                self.push(frame)          # "another thread" pushes now
                landed.append(True)
            except dse.StreamBusyError:
                landed.append(False)
            return super()._run_block(block, out, ready, *guard)

    s = Hooked(model)
    s.warm_up(np.zeros((model.window + 5, 3), np.float32))
    assert landed == [False], "a push ran in the middle of warm_up"
