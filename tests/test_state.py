"""Stream snapshots (issue 6): state(), restore(), save_state()/load_state().

* restore continues *bit-identically* (same kernels, same float32 data, same order);
* a snapshot of another model, shape, mode, batch or block is refused with StateError
  and leaves the stream exactly as it was;
* a corrupted snapshot file (truncated, flipped bytes, wrong dtypes, out-of-range ring
  heads, pickled or object arrays, ...) raises StateError, never another exception;
* saving is atomic: a child process killed with SIGKILL while it streams and saves
  leaves a snapshot that resumes exactly, and an exception in the middle of a save
  leaves the previous file intact.
"""
from __future__ import annotations

import io
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import deepshift_edge as dse
from deepshift_edge.engine import state as dse_state

from reliability_models import (CORE, NAMES, assert_outputs_equal, frames, make, push_each,
                                same_state)
from strategies import models as random_models

MODES = ("dense", "decimated")
HYPO = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                   HealthCheck.filter_too_much])
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def n_frames(model) -> int:
    return 3 * model.window + 5 * model.hop + 7


def split_points(model, total):
    """Before the window is full, at the first output, odd phases, after ring wrap-around."""
    w, h = model.window, model.hop
    return sorted({0, 1, w - 2, w - 1, w, w + h - 1, w + 2 * h + 1, total // 2, total - 3} & set(range(total)))


# ---------------------------------------------------------------------------- bit-identical restore
@pytest.mark.parametrize("block", [1, 5, 64])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", NAMES)
def test_restore_continues_bit_identically(name, mode, block, tmp_path):
    model = make(name)
    x = frames(model, n_frames(model), seed=1)
    want = push_each(model.stream(mode=mode, block=block), x)
    for k in split_points(model, len(x)):
        src = model.stream(mode=mode, block=block)
        src.push_many(x[:k])
        snap = src.state()
        assert snap["state"].dtype == np.int64 and int(snap["state"][0, 0]) == k

        fresh = model.stream(mode=mode, block=block)
        fresh.restore(snap)
        assert fresh.frames == k
        assert_outputs_equal(push_each(fresh, x[k:]), want[k:], f"{name} restored at {k}")

        # the snapshot is a copy: the source keeps running, then rewinds to it
        push_each(src, x[k:])
        src.push_many(frames(model, 7, seed=99))
        src.restore(snap)
        assert_outputs_equal(push_each(src, x[k:]), want[k:], f"{name} rewound to {k}")

    # through a file, continuing with push_many in blocks that straddle the internal block
    k = split_points(model, len(x))[-2]
    src = model.stream(mode=mode, block=block)
    push_each(src, x[:k])
    src.save_state(tmp_path / "s.npz")
    dst = model.stream(mode=mode, block=block)
    dst.load_state(tmp_path / "s.npz")
    got = [dst.push_many(x[i:i + 3]) for i in range(k, len(x), 3)]
    want_rows = [w for w in want[k:] if w is not None]
    np.testing.assert_array_equal(np.concatenate(got).reshape((-1,) + model.output_shape),
                                  np.array(want_rows).reshape((-1,) + model.output_shape))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", CORE)
def test_restore_batched_with_per_element_resets(name, mode, tmp_path):
    model = make(name)
    B = 3
    x = frames(model, n_frames(model), seed=2, batch=B)
    resets = {11: 1, 23: [0, 2], 2 * model.window + 1: 2}   # frame -> elements reset before it

    def run(stream, start, stop):
        outs, ready = [], []
        for t in range(start, stop):
            if t in resets:
                stream.reset(resets[t])
            y = stream.push(x[t])
            outs.append(None if y is None else y.copy())
            ready.append(stream.ready.copy())
        return outs, ready

    want, want_ready = run(model.stream(batch=B, mode=mode), 0, len(x))
    for k in (5, 12, 24, model.window + 1, 2 * model.window + 1, len(x) - 2):
        src = model.stream(batch=B, mode=mode)
        run(src, 0, k)
        frames_at_k = src.frames.copy()
        src.save_state(tmp_path / "b.npz")
        dst = model.stream(batch=B, mode=mode)
        dst.load_state(tmp_path / "b.npz")
        np.testing.assert_array_equal(dst.frames, frames_at_k)
        assert dst.frames.dtype == np.int64
        got, got_ready = run(dst, k, len(x))
        assert_outputs_equal(got, want[k:], f"{name} batched, restored at {k}")  # NaN rows equal
        np.testing.assert_array_equal(np.array(got_ready), np.array(want_ready[k:]))


@settings(max_examples=40, **HYPO)
@given(data=st.data())
def test_restore_random_models(data):
    model, _, seed = data.draw(random_models(allow_stream_exact=False))
    mode = data.draw(st.sampled_from(MODES))
    block = data.draw(st.sampled_from([1, 3, 64]))
    x = frames(model, n_frames(model), seed=seed % 1000)
    k = data.draw(st.integers(0, len(x) - 1))
    want = push_each(model.stream(mode=mode, block=block), x)
    src = model.stream(mode=mode, block=block)
    src.push_many(x[:k])
    dst = model.stream(mode=mode, block=block)
    dst.restore(src.state())
    assert_outputs_equal(push_each(dst, x[k:]), want[k:], f"restored at {k}")


def test_frame_counter_is_64_bit_across_2_to_the_32():
    """Counters and phases stay exact past 2**31 and 2**32 (also where Py_ssize_t is 32-bit):
    a snapshot moved forward by a multiple of every period continues exactly, and the
    emission pattern follows the true 64-bit frame number."""
    model = make("residual-gap")  # hop 3: 2**32 is not a multiple of any period
    for mode in MODES:
        x = frames(model, n_frames(model), seed=3)
        k = model.window + 4
        want = push_each(model.stream(mode=mode), x)
        src = model.stream(mode=mode)
        src.push_many(x[:k])
        snap = src.state()
        for base in (2 ** 31 - 2, 2 ** 32 - 1, 2 ** 40 + 1):
            shift = base - base % 9 + 9   # a multiple of hop * nslots
            moved = dict(snap, state=snap["state"].copy())
            moved["state"][:, 0] += shift
            dst = model.stream(mode=mode)
            dst.restore(moved)
            assert dst.frames == k + shift and isinstance(dst.frames, int)
            assert_outputs_equal(push_each(dst, x[k:]), want[k:], f"{mode} at {k + shift}")
            assert dst.frames == len(x) + shift
            assert dst.state()["state"].dtype == np.int64


# ---------------------------------------------------------------------------- refused snapshots
def _other_streams():
    base = make("strided-gap")
    other_weights = make("strided-gap")
    other_weights.layers[0].weight = other_weights.layers[0].weight * 1.0001
    other_window = dse.Sequential(make("strided-gap").layers, 3, 35)
    yield "other weights", other_weights.stream()
    yield "other architecture", make("residual-gap").stream()
    yield "other window", other_window.stream()
    yield "other mode", base.stream(mode="decimated")
    yield "batched", base.stream(batch=1)
    yield "other batch", base.stream(batch=2)
    yield "other block", base.stream(block=8)
    yield "2-D model", make("2d-gap").stream()


def test_snapshot_of_another_model_or_layout_is_refused_untouched(tmp_path):
    model = make("strided-gap")
    x = frames(model, 120, seed=4)
    want = push_each(model.stream(), x)
    for what, other in _other_streams():
        other.push_many(frames(other.model, 50, seed=5, batch=other.batch if other.batched else None))
        foreign = other.state()
        other.save_state(tmp_path / "foreign.npz")
        s = model.stream()
        s.push_many(x[:60])
        before = s.state()
        with pytest.raises(dse.StateError):
            s.restore(foreign)
        with pytest.raises(dse.StateError):
            s.load_state(tmp_path / "foreign.npz")
        assert same_state(s.state(), before), what
        assert_outputs_equal(push_each(s, x[60:]), want[60:], f"after refusing {what}")


def test_graph_wiring_is_part_of_the_fingerprint():
    """Two graphs with the same layers, weights and buffers that differ only in which node
    an Add reads (or in a node's name) are different models: their snapshots do not mix."""
    def build(wiring, name="relu"):
        x = dse.Input(2)
        c = dse.Conv1d(2, 2, 1, seed=1)(x, name="c")
        r = dse.ReLU()(c, name=name)
        return dse.Model(x, dse.Add()(*{"c+r": (c, r), "r+r": (r, r)}[wiring], name="sum"), window=3)

    a, b, renamed = build("c+r"), build("r+r"), build("c+r", name="act")
    assert [type(n).__name__ for n in a.layers] == [type(n).__name__ for n in b.layers]
    prints = {dse_state.model_fingerprint(m) for m in (a, b, renamed)}
    assert len(prints) == 3
    assert dse_state.model_fingerprint(build("c+r")) == dse_state.model_fingerprint(a)
    s = b.stream()
    s.push_many(frames(b, 5, seed=1))
    before = s.state()
    with pytest.raises(dse.StateError):
        s.restore(a.stream().state())
    assert same_state(s.state(), before)


def _corruptions(snap: dict):
    """(description, corrupted snapshot dict) pairs: every one must raise StateError."""
    def edit(**changes):
        out = {k: np.array(v, copy=True) for k, v in snap.items()}
        for k, v in changes.items():
            if v is None:
                del out[k]
            else:
                out[k] = v
        return out

    st_ = snap["state"]
    rings = sorted(k for k in snap if k.startswith("ring."))
    aux = sorted(k for k in snap if k.startswith("aux."))
    ring_len = snap[rings[1]].shape[1] // 2  # node 1's L
    bad_states = {
        "state int32": st_.astype(np.int32), "state float64": st_.astype(np.float64),
        "state uint64": st_.astype(np.uint64), "state 1-D": st_[0],
        "state extra column": np.concatenate([st_, st_[:, :1]], axis=1),
        "negative frame count": np.where(np.arange(st_.shape[1]) == 0, -1, st_),
        "frame count near 2**63": np.where(np.arange(st_.shape[1]) == 0, 2 ** 63 - 3, st_),
        "head == L": np.where(np.arange(st_.shape[1]) == 2, ring_len, st_),
        "head huge": np.where(np.arange(st_.shape[1]) == 2, 2 ** 40, st_),
        "head negative": np.where(np.arange(st_.shape[1]) == 1, -1, st_),
    }
    for what, v in bad_states.items():
        yield what, edit(state=np.asarray(v))
    yield "ring float64", edit(**{rings[0]: snap[rings[0]].astype(np.float64)})
    yield "ring float16", edit(**{rings[0]: snap[rings[0]].astype(np.float16)})
    yield "ring shorter", edit(**{rings[0]: snap[rings[0]][:, :-1]})
    yield "ring transposed", edit(**{rings[0]: snap[rings[0]].T})
    yield "ring object", edit(**{rings[0]: snap[rings[0]].astype(object)})
    yield "ring ragged list", edit(**{rings[0]: [[1.0], [1.0, 2.0]]})
    yield "ring missing", edit(**{rings[-1]: None})
    yield "extra ring", edit(**{f"ring.{len(rings)}": snap[rings[0]]})
    yield "state missing", edit(state=None)
    for k in aux:
        a = snap[k]
        yield f"{k} other dtype", edit(**{k: a.astype(np.float32 if a.dtype == np.float64 else np.int32)})
        yield f"{k} missing", edit(**{k: None})
        if a.dtype == np.float64:
            yield f"{k} NaN", edit(**{k: np.full_like(a, np.nan)})
        else:
            yield f"{k} negative count", edit(**{k: np.full_like(a, -5)})
    yield "version 2", edit(version=np.array(2, dtype=np.int64))
    yield "version string", edit(version=np.array("abc"))
    yield "version float", edit(version=np.array(1.5))
    yield "version NaN", edit(version=np.array(np.nan))
    yield "version None", edit(version=np.array(None, dtype=object))
    yield "version 1-D", edit(version=np.array([1], dtype=np.int64))
    yield "format", edit(format=np.array("deepshift_edge.model"))
    yield "format missing", edit(format=None)
    yield "model fingerprint", edit(model=np.array("0" * 64))
    yield "layout", edit(layout=np.array(str(snap["layout"]).replace('"dense"', '"decimated"')))
    yield "layout garbage", edit(layout=np.array(b"\xff\x00"))


@pytest.mark.parametrize("name", CORE)
def test_corrupted_snapshots_are_refused_untouched(name, tmp_path):
    model = make(name)
    s = model.stream()
    s.push_many(frames(model, 2 * model.window + 3, seed=6))
    good = s.state()
    before = s.state()
    seen = 0
    for what, bad in _corruptions(good):
        with pytest.raises(dse.StateError):
            s.restore(bad)
        assert same_state(s.state(), before), what
        # the same through a file (object arrays need pickle to be written at all)
        path = tmp_path / "bad.npz"
        np.savez(path, **{k: np.asarray(v, dtype=object) if isinstance(v, list) else v
                          for k, v in bad.items()})
        with pytest.raises(dse.StateError):
            s.load_state(path)
        assert same_state(s.state(), before), what
        seen += 1
    assert seen >= 30
    for junk in (None, [], "state.npz", np.zeros(3), 5, {"a": 1}, {}):
        with pytest.raises(dse.StateError):
            s.restore(junk)
    assert same_state(s.state(), before)


def _file_bytes(stream) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **stream.state())
    return buf.getvalue()


def _expect_refused_or_valid(s, path, before, x):
    """load_state (path) or from_bytes + restore (bytes): StateError (state untouched), or a
    valid snapshot that streams."""
    try:
        if isinstance(path, bytes):
            s.restore(dse_state.from_bytes(path))
        else:
            s.load_state(path)
    except dse.StateError:
        assert same_state(s.state(), before)
        return False
    s.push_many(x)   # whatever the values, the stream must keep working
    for f in x[:3]:
        s.push(f)
    s.restore(before)
    return True


@pytest.mark.parametrize("writer", ["np.savez", "to_bytes"])
@pytest.mark.parametrize("name", ["strided-gap", "2d-gap"])
def test_corrupted_snapshot_files(name, writer, tmp_path):
    """np.savez's archives (ZIP64 extras: read by np.load) and to_bytes' (stored members:
    read by state.from_bytes' own parser), corrupted, through a file and through bytes."""
    model = make(name)
    s = model.stream()
    x = frames(model, 2 * model.window + 3, seed=7)
    s.push_many(x)
    before = s.state()
    raw = _file_bytes(s) if writer == "np.savez" else dse_state.to_bytes(before)
    path = tmp_path / "snap.npz"

    # every truncation point near the start and the end, and a spread in between
    cuts = sorted(set(range(0, 64)) | set(range(len(raw) - 64, len(raw))) |
                  set(range(0, len(raw), max(1, len(raw) // 300))))
    for cut in cuts:
        path.write_bytes(raw[:cut])
        with pytest.raises(dse.StateError):
            s.load_state(path)
        with pytest.raises(dse.StateError):
            s.restore(dse_state.from_bytes(raw[:cut]))
        assert same_state(s.state(), before)

    # flipped bytes: refused, or (a flip inside float data) a valid snapshot
    rng = random.Random(8)
    accepted = 0
    for i in range(200):
        data = bytearray(raw)
        for _ in range(rng.choice([1, 1, 2, 8])):
            pos = rng.randrange(len(data))
            data[pos] = rng.randrange(256) if rng.random() < 0.5 else data[pos] ^ (1 << rng.randrange(8))
        path.write_bytes(bytes(data))
        accepted += _expect_refused_or_valid(s, path, before, x[:10])
        accepted += _expect_refused_or_valid(s, bytes(data), before, x[:10])
    assert accepted < 400

    # not an .npz at all
    for content in (b"", b"\x00" * 100, b"PK\x03\x04" + b"\x00" * 40, b"hello",
                    pickle.dumps(before), pickle.dumps(before, protocol=0)):
        path.write_bytes(content)
        with pytest.raises(dse.StateError):
            s.load_state(path)
        with pytest.raises(dse.StateError):
            dse_state.from_bytes(content)
    np.save(tmp_path / "plain.npy", before["state"])       # a .npy, not an .npz
    with pytest.raises(dse.StateError):
        s.load_state(tmp_path / "plain.npy")
    # pickled (object) arrays inside the zip are never unpickled
    np.savez(path, **dict(before, state=np.array([pickle.dumps(before)], dtype=object)))
    with pytest.raises(dse.StateError, match="pickle|not a readable|object"):
        s.load_state(path)
    # a zip whose member declares a huge array but holds a few bytes
    with zipfile.ZipFile(path, "w") as zf:
        for k, v in before.items():
            if k != "ring.0":
                with zf.open(k + ".npy", "w") as fh:
                    np.lib.format.write_array(fh, np.asarray(v))
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (1 << 40,)})
        zf.writestr("ring.0.npy", header.getvalue() + b"\x00" * 64)
    with pytest.raises(dse.StateError):
        s.load_state(path)
    with pytest.raises(dse.StateError):
        s.load_state(tmp_path)   # a directory
    with pytest.raises(FileNotFoundError):
        s.load_state(tmp_path / "missing.npz")
    assert same_state(s.state(), before)


def test_snapshot_bytes_are_the_file_and_refuse_garbage(tmp_path):
    """state.to_bytes holds what save()'s file holds, and each reads the other's (for
    keyed state stores: deepshift_edge.flink); from_bytes refuses what is not a snapshot
    with StateError, never unpickling."""
    model = make("strided-gap")
    s = model.stream()
    x = frames(model, 2 * model.window + 3, seed=9)
    s.push_many(x)
    blob = dse_state.to_bytes(s.state())
    s.save_state(tmp_path / "snap.npz")
    assert same_state(dse_state.from_bytes((tmp_path / "snap.npz").read_bytes()), s.state())
    (tmp_path / "b.npz").write_bytes(blob)
    assert same_state(dse_state.load(tmp_path / "b.npz"), s.state())
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:  # a plain .npz
        assert same_state({k: npz[k] for k in npz.files}, s.state())
    t = model.stream()
    t.restore(dse_state.from_bytes(blob))
    assert same_state(t.state(), s.state())
    before = s.state()
    for bad in (b"", blob[:len(blob) // 2], b"hello", pickle.dumps(before), bytearray(blob[:-30])):
        with pytest.raises(dse.StateError):
            dse_state.from_bytes(bad)
    with pytest.raises(dse.StateError, match="bytes"):
        dse_state.from_bytes("a string")


def test_int8_streams_restore_their_snapshots():
    """int8 plans keep int8 rings: their snapshots restore (the check compared every ring
    with float32 and refused them)."""
    model = dse.Sequential([dse.Conv1d(5, 8, 3), dse.ReLU(), dse.Conv1d(8, 4, 2, dilation=2), dse.GlobalAvgPool()],
                           in_features=5, window=9)
    x = np.random.default_rng(0).standard_normal((80, 5)).astype(np.float32)
    q = dse.quantize(model, x)
    s = q.stream()
    s.push_many(x[:40])
    t = q.stream()
    t.restore(dse_state.from_bytes(dse_state.to_bytes(s.state())))
    np.testing.assert_array_equal(t.push_many(x[40:]), s.push_many(x[40:]))
    other = q.stream()
    snap = s.state()
    snap["ring.0"] = snap["ring.0"].astype(np.float32)
    with pytest.raises(dse.StateError, match="ring.0"):
        other.restore(snap)


# ---------------------------------------------------------------------------- atomic save
def test_exception_mid_save_leaves_previous_snapshot(tmp_path, monkeypatch):
    model = make("residual-gap")
    s = model.stream()
    x = frames(model, 100, seed=9)
    s.push_many(x[:40])
    path = tmp_path / "s.npz"
    s.save_state(path)
    old = s.state()
    s.push_many(x[40:])

    real_savez = np.savez

    def savez_half(fh, **arrays):   # writes part of the archive, then dies
        buf = io.BytesIO()
        real_savez(buf, **arrays)
        fh.write(buf.getvalue()[:len(buf.getvalue()) // 2])
        raise RuntimeError("power lost")

    def replace_fails(src, dst):
        raise OSError(28, "No space left on device")

    def fsync_fails(fd):
        raise OSError(5, "Input/output error")

    def interrupted(fh, **arrays):
        fh.write(b"PK\x03\x04partial")
        raise KeyboardInterrupt

    for what, target, attr, fake, exc in [
            ("savez raises halfway", np, "savez", savez_half, RuntimeError),
            ("Ctrl-C in savez", np, "savez", interrupted, KeyboardInterrupt),
            ("rename fails", os, "replace", replace_fails, OSError),
            ("fsync fails", os, "fsync", fsync_fails, OSError)]:
        with monkeypatch.context() as mp:
            mp.setattr(target, attr, fake)
            with pytest.raises(exc):
                s.save_state(path)
        assert sorted(os.listdir(tmp_path)) == ["s.npz"], f"{what}: temporary file left behind"
        fresh = model.stream()
        fresh.load_state(path)
        assert same_state(fresh.state(), old), what
        assert_outputs_equal(push_each(fresh, x[40:]), push_each(_restored(model, old), x[40:]), what)
    s.save_state(path)   # and a normal save still replaces it
    assert int(dse_state.load(path)["state"][0, 0]) == 100


def _restored(model, snap, mode="dense"):
    s = model.stream(mode=mode)
    s.restore(snap)
    return s


CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import numpy as np
    from reliability_models import make, frames
    name, mode, every, path, period = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    model = make(name)
    s = model.stream(mode=mode)
    x = frames(model, period, seed=10)
    t = 0
    saves = 0
    while True:
        for _ in range(every):
            s.push(x[t % period])
            t += 1
        s.save_state(path)
        saves += 1
        if saves == 3:
            print("saving", flush=True)
""")


@pytest.mark.parametrize("name,mode,every", [("strided-gap", "dense", 7), ("residual-gap", "decimated", 5),
                                             ("2d-gap", "dense", 3)])
def test_sigkill_mid_stream_resumes_from_last_snapshot(name, mode, every, tmp_path):
    """A child streams and saves every few frames; SIGKILL at a random moment (most of
    its time is spent saving). The file must load, and resuming from the frame count it
    holds must give exactly the outputs of an uninterrupted run."""
    model = make(name)
    period = 997  # the child streams x[t % period]
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=TESTS_DIR))
    path = tmp_path / "state.npz"
    rng = random.Random(f"{name}{mode}")
    mid_save = 0
    for round_ in range(2):
        child = subprocess.Popen([sys.executable, str(script), name, mode, str(every), str(path), str(period)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = child.stdout.readline()
            assert line.strip() == "saving", child.stderr.read()
            time.sleep(rng.uniform(0.05, 0.5))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
            child.stdout.close()
            child.stderr.close()
        assert child.returncode == -signal.SIGKILL
        mid_save += any(f.startswith(".dse-state-") for f in os.listdir(tmp_path))
        for f in os.listdir(tmp_path):  # litter of the killed save (see the report)
            if f.startswith(".dse-state-"):
                os.unlink(tmp_path / f)

        snap = dse_state.load(path)
        k = int(snap["state"][0, 0])   # the snapshot's own frame counter
        assert k >= 3 * every and k % every == 0
        x = frames(model, period, seed=10)
        total = k + 2 * model.window + 5
        xs = x[np.arange(total) % period]
        ref = model.stream(mode=mode)
        ref.push_many(xs[:k])
        want = push_each(ref, xs[k:])
        resumed = model.stream(mode=mode)
        resumed.load_state(path)
        assert resumed.frames == k
        assert_outputs_equal(push_each(resumed, xs[k:]), want, f"{name} resumed at {k}")
        path.unlink()
    print(f"\n{name}: {mid_save} of 2 kills landed mid-save")
