"""Long runs and priming (issue 6): warm_up, the NaN/Inf policy, and the soak test.

* ``warm_up(history)`` equals a stream that saw every frame of ``history``: the same
  first output and bit-identical outputs afterwards, for any history length (shorter
  than the window, exactly the window, not a multiple of the hop) in both modes;
* NaN/Inf are refused (policy: reject) with StreamInputError, the state untouched;
* the soak test (``-m slow``) pushes 10 million frames through a model with strides,
  a residual block and a global average (running sums) and checks against the offline
  reference, memory and the 64-bit frame counter. Run it with ``-s`` to see the figures.
  Memory is the C heap in use (glibc's mallinfo2) and Python's allocated blocks, and RSS
  except under user-mode emulation (qemu-user), whose RSS is mostly the emulator's.
"""
from __future__ import annotations

import gc
import os
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import deepshift_edge as dse

from reliability_models import NAMES, assert_outputs_equal, frames, make, push_each, same_state
from strategies import models as random_models
from strategies import randomize

MODES = ("dense", "decimated")
HYPO = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                   HealthCheck.filter_too_much])


# ---------------------------------------------------------------------------- warm_up
def history_lengths(model):
    w, h = model.window, model.hop
    return sorted({1, 2, h - 1, h + 1, w - 2, w - 1, w, w + 1, w + h - 1, w + h + 1,
                   2 * w + 3, 3 * w + h + 1} - {0, -1})


def check_warm_up(model, mode, x, n, after=None):
    full = push_each(model.stream(mode=mode), x)
    after = len(x) - n if after is None else after
    s = model.stream(mode=mode)
    s.push_many(frames(model, 5, seed=123))   # warm_up starts from scratch whatever came before
    y0 = s.warm_up(x[:n])
    assert s.frames == n
    assert (y0 is None) == (full[n - 1] is None), f"n={n}: first output {y0} vs {full[n - 1]}"
    if y0 is not None:
        np.testing.assert_array_equal(y0, full[n - 1], err_msg=f"n={n}: output of the last history frame")
        assert np.array_equal(s.out[0], y0) and s.ready[0]
    assert_outputs_equal(push_each(s, x[n:n + after]), full[n:n + after], f"{mode} after warm_up({n})")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", NAMES)
def test_warm_up_equals_a_stream_that_saw_the_history(name, mode):
    model = make(name)
    ns = history_lengths(model)
    x = frames(model, max(ns) + 2 * model.window + 2 * model.hop, seed=11)
    for n in ns:
        check_warm_up(model, mode, x, n, after=2 * model.window + 2 * model.hop)


@settings(max_examples=40, **HYPO)
@given(data=st.data())
def test_warm_up_random_models(data):
    model, _, seed = data.draw(random_models(allow_stream_exact=False))
    mode = data.draw(st.sampled_from(MODES))
    n = data.draw(st.integers(1, 3 * model.window + 2 * model.hop))
    x = frames(model, n + model.window + 2 * model.hop, seed=seed % 1000)
    check_warm_up(model, mode, x, n)


def test_warm_up_refusals_leave_the_stream_untouched():
    model = make("strided-gap")
    s = model.stream()
    s.push_many(frames(model, 40, seed=12))
    before = s.state()
    history = frames(model, 50, seed=13)
    for bad in (history[:, :2], history[None], history[0], np.zeros((0, 4), np.float32), "abc", None,
                history.astype(complex), np.where(np.arange(50)[:, None] == 30, np.nan, history),
                np.where(np.arange(50)[:, None] == 49, np.inf, history)):
        with pytest.raises(dse.StreamInputError):
            s.warm_up(bad)
        assert same_state(s.state(), before)
    with pytest.raises(dse.StreamInputError):
        model.stream(batch=2).warm_up(history)
    # an empty history is the fresh stream
    assert s.warm_up(np.zeros((0, 3), np.float32)) is None and s.frames == 0
    assert same_state(s.state(), model.stream().state())


# ---------------------------------------------------------------------------- NaN / Inf: rejected
@pytest.mark.parametrize("name", ["strided-gap", "2d-gap", "residual-causal-last"])
def test_non_finite_frames_are_refused_and_change_nothing(name):
    model = make(name)
    x = frames(model, 3 * model.window, seed=14)
    want = push_each(model.stream(), x)
    s = model.stream()
    k = model.window + 2
    push_each(s, x[:k])
    before = s.state()
    size = int(np.prod(model.frame_shape))
    for value in (np.nan, np.inf, -np.inf):
        for pos in (0, size // 2, size - 1):
            bad = x[k].copy()
            bad.reshape(-1)[pos] = value
            with pytest.raises(dse.StreamInputError, match="non-finite"):
                s.push(bad)
            with pytest.raises(dse.StreamInputError, match="non-finite"):
                s.push(bad.astype(np.float64))     # the slow path too
            block = x[k:k + 5].copy()
            block[3] = bad
            with pytest.raises(dse.StreamInputError, match="non-finite"):
                s.push_many(block)
            assert same_state(s.state(), before)
    huge = x[k].astype(np.float64)
    huge.reshape(-1)[0] = 1e39                 # finite in float64, inf in float32
    with pytest.raises(dse.StreamInputError, match=r"holds 1e\+39 at index \(0,?.*overflows float32"):
        s.push(huge)
    assert same_state(s.state(), before)
    # subnormals and negative zero are finite: accepted
    tiny = x[k].copy()
    tiny.reshape(-1)[0] = np.float32(1e-42)
    tiny.reshape(-1)[-1] = -0.0
    s2 = model.stream()
    s2.restore(before)
    s2.push(tiny)
    # the refused frames left no trace: the stream continues as if they never came
    assert_outputs_equal(push_each(s, x[k:]), want[k:], "after refused NaN/Inf")


def test_non_finite_in_one_batch_element_refuses_the_whole_push():
    model = make("strided-gap")
    s = model.stream(batch=3)
    x = frames(model, 40, seed=15, batch=3)
    s.push_many(x[:35])
    before = s.state()
    bad = x[35].copy()
    bad[2, 1] = np.nan
    with pytest.raises(dse.StreamInputError):
        s.push(bad)
    block = x[35:].copy()
    block[-1, 0, 0] = -np.inf
    with pytest.raises(dse.StreamInputError):
        s.push_many(block)
    assert same_state(s.state(), before)


# ---------------------------------------------------------------------------- soak
def soak_model():
    """Strides (hop 4), a residual block with an identity skip, max pooling, and a global
    average over 12 body positions (running sums, one per stride phase in dense mode)."""
    model = dse.Sequential([
        dse.Conv1d(4, 8, 3, stride=2), dse.ReLU(),
        dse.Residual([dse.Conv1d(8, 8, 3), dse.ReLU(), dse.Conv1d(8, 8, 3)]),
        dse.MaxPool1d(2), dse.Conv1d(8, 8, 3), dse.ReLU(),
        dse.GlobalAvgPool(), dse.Linear(8, 4)], 4, 64)
    randomize(model, np.random.default_rng(2026))
    return model


def _rss_bytes() -> int:
    """Resident set size, after handing freed heap back to the OS (glibc), so that what is
    left is memory in use rather than malloc's free lists."""
    gc.collect()
    try:
        import ctypes
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _heap_bytes():
    """Bytes in use in the C heap (glibc mallinfo2: allocated chunks + mmapped ones), or None
    where glibc does not say. Every allocation of the library, NumPy and Python goes through
    here or through Python's own arenas (sys.getallocatedblocks); an emulator's memory does
    not: qemu-user's translated code and bookkeeping are in the host process, not in the
    guest's heap."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                      "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = MallInfo2
    info = fn()
    return int(info.uordblks + info.hblkhd)


def _user_mode_emulated() -> bool:
    """True when this process seems to run under user-mode emulation (qemu-user via
    binfmt_misc), where RSS is the emulator's: it grows with qemu's code cache and its
    bookkeeping (measured under emulated armhf: +2.2 MB over 300 plain NumPy allocations
    that leave RSS flat natively). qemu up to 8.0 shows the host's /proc/cpuinfo, so an
    ARM process seeing an x86 CPU (or the reverse) is emulated; QEMU_* variables also say so."""
    import platform
    if any(k.startswith("QEMU_") for k in os.environ):
        return True
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read().lower()
    except OSError:
        return False
    x86 = "vendor_id" in text and "\nflags" in text
    arm = "cpu implementer" in text or "cpu architecture" in text
    machine = platform.machine().lower()
    if machine.startswith(("arm", "aarch64")):
        return x86 and not arm
    if machine in ("x86_64", "amd64", "i686", "i386"):
        return arm and not x86
    return False


def soak(mode: str, total: int, block: int = 1 << 16, samples_per_block: int = 2, seed: int = 0):
    """Stream `total` frames in push_many blocks; compare sampled windows with the offline
    reference. Returns the figures (deviations, memory at 1/10 and at the end)."""
    model = soak_model()
    s = model.stream(mode=mode)
    w, hop = model.window, s.hop
    rng = np.random.default_rng(seed)
    n_blocks = -(-total // block) + 1
    dev = np.zeros(n_blocks * samples_per_block)      # preallocated: the loop allocates nothing lasting
    at = np.zeros(n_blocks * samples_per_block, dtype=np.int64)
    ref_scale = np.zeros(n_blocks * samples_per_block)
    mem = {}
    checkpoint = total // 10
    t0 = 0
    i = 0
    start = time.perf_counter()
    tail = 3 * w   # the last frames go through push(), one by one
    while t0 < total - tail:
        n = min(block, total - tail - t0)
        # noise on a slowly wandering offset, with rare 1e3 spikes: stress for running sums
        x = rng.standard_normal((n, 4), dtype=np.float32)
        x += np.float32(3.0 * np.sin(2 * np.pi * t0 / 1.7e6))
        spikes = rng.integers(0, n, size=2)
        x[spikes] *= np.float32(1e3)
        out = s.push_many(x)
        ts = np.arange(t0, t0 + n)
        emitted = ts[(ts >= w - 1) & ((ts - (w - 1)) % hop == 0)]
        assert len(out) == len(emitted)
        # sample windows inside this block (ends spread over it)
        cands = np.flatnonzero((emitted - t0 >= w - 1))
        for j in rng.choice(cands, size=min(samples_per_block, len(cands)), replace=False):
            t = int(emitted[j])
            ref = model.forward_window(x[t - t0 - w + 1:t - t0 + 1])
            dev[i] = np.max(np.abs(out[j].astype(np.float64) - ref))
            ref_scale[i] = max(1.0, float(np.max(np.abs(ref))))
            at[i] = t
            i += 1
        t0 += n
        if t0 >= checkpoint and "first" not in mem:
            del x, out, ts, emitted, cands
            mem["first"] = (t0, _rss_bytes(), sys.getallocatedblocks(), _heap_bytes())
    x = rng.standard_normal((tail, 4), dtype=np.float32)
    for f in x:
        y = s.push(f)
    t0 += tail
    ref = model.forward_window(x[-w:])
    dev[i] = np.max(np.abs(y.astype(np.float64) - ref))
    ref_scale[i] = max(1.0, float(np.max(np.abs(ref))))
    at[i] = t0 - 1
    i += 1
    del x, out, ts, emitted, cands, y
    mem["last"] = (t0, _rss_bytes(), sys.getallocatedblocks(), _heap_bytes())
    seconds = time.perf_counter() - start
    return dict(stream=s, dev=dev[:i], at=at[:i], rel=dev[:i] / ref_scale[:i], mem=mem, seconds=seconds)


def check_soak(mode, total, check_memory=True):
    r = soak(mode, total)
    s, rel, at = r["stream"], r["rel"], r["at"]
    (f0, rss0, blk0, heap0), (f1, rss1, blk1, heap1) = r["mem"]["first"], r["mem"]["last"]
    emulated = _user_mode_emulated()
    early, late = rel[at < total // 10], rel[at >= total - total // 10]
    print(f"\nsoak {mode}: {s.frames:,} frames in {r['seconds']:.1f} s "
          f"({r['seconds'] / s.frames * 1e9:.0f} ns/frame); {len(rel)} windows vs model.forward: "
          f"max abs deviation {r['dev'].max():.3g}, max relative {rel.max():.3g} "
          f"(first 10%: {early.max():.3g}, last 10%: {late.max():.3g}); "
          f"RSS {rss0 / 2**20:.2f} MiB at frame {f0:,} -> {rss1 / 2**20:.2f} MiB at {f1:,}"
          f"{' (user-mode emulation: the emulator is in it, not asserted)' if emulated else ''}; "
          + (f"heap in use {heap0 / 2**20:.2f} -> {heap1 / 2**20:.2f} MiB; " if heap0 is not None else "")
          + f"allocated blocks {blk0} -> {blk1}")
    # 64-bit counter, no wrap
    assert s.frames == total and isinstance(s.frames, int)
    assert s.state()["state"].dtype == np.int64 and int(s.state()["state"][0, 0]) == total
    # within float32 error everywhere, and no drift: the end is no worse than the start
    assert rel.max() < 2e-5, rel.max()
    assert late.max() <= 4 * early.max() + 1e-6, (early.max(), late.max())
    # no growth (only meaningful over many blocks: the short run just prints it)
    # What the library holds: the C heap (glibc) and Python's blocks; RSS too, natively.
    if check_memory:
        assert blk1 - blk0 <= 64, (blk0, blk1)
        if heap0 is not None:
            assert heap1 - heap0 <= 1 << 20, (heap0, heap1)
        if not emulated:
            assert rss1 - rss0 <= 1 << 20, (rss0, rss1)
    return r


def test_heap_measure_sees_an_allocation():
    """The soak's memory measure is real: 16 MiB held by NumPy shows in it, and goes when freed.
    (Garbage from earlier tests is collected first: freeing it meanwhile would mask the growth.)"""
    import gc
    gc.collect()
    h0 = _heap_bytes()
    if h0 is None:
        pytest.skip("no glibc mallinfo2 here: the soak checks RSS and Python's blocks only")
    a = np.ones(4 << 20, np.float32)
    assert _heap_bytes() - h0 >= (15 << 20)
    del a
    assert _heap_bytes() - h0 < 2 << 20


@pytest.mark.parametrize("mode", MODES)
def test_soak_short(mode):
    """The soak machinery on 300k frames (runs in the default, non-slow selection)."""
    check_soak(mode, 300_000, check_memory=False)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_soak_10_million_frames(mode):
    check_soak(mode, 10_000_000)
