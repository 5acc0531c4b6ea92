"""StreamPool (issue 14): many sensors' streams by id over one batched stream.

The contract: a sensor's outputs are bit for bit those of a lone ``model.stream()`` fed the
same frames, whatever other sensors share its batched call, which slot it got, when it
joined, and who left before; one sensor's snapshot moves between pools and lone streams.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import deepshift_edge as dse
from deepshift_edge.engine import state as dse_state

from strategies import cases

HYPO = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                   HealthCheck.filter_too_much])
MODES = ("dense", "decimated")
UNIVERSE = ["a", "b", 3, 4, ("c", 5), 6, 7]


def _kws_like():
    """A small TCN with 16+ channels: the streams kernel's full blocks, a partial block, bias
    and ReLU fused into its stores, ReLU6 after it."""
    return dse.Sequential([dse.Conv1d(5, 40, 3), dse.ReLU(), dse.Conv1d(40, 24, 2, dilation=2), dse.ReLU6(),
                           dse.Conv1d(24, 32, 3, groups=2), dse.ReLU(), dse.GlobalAvgPool(), dse.Linear(32, 6)],
                          in_features=5, window=14)


def _check(out, ready, i, want, what):
    if want is None:
        assert not ready[i], what
        assert np.isnan(out[i]).all(), what
    else:
        assert ready[i], what
        np.testing.assert_array_equal(out[i], want, err_msg=what)


def _run_schedule(model, mode, capacity, data, rng, steps):
    """Random pushes (ids in any order, some repeated, some new), leaves, snapshots and
    restores; every output checked against lone streams fed the same frames."""
    pool = dse.StreamPool(model, capacity=capacity, mode=mode)
    refs = {}     # id -> lone stream: the reference
    saved = []    # (snapshot bytes, the reference's state at that moment)
    for step in range(steps):
        action = data.draw(st.sampled_from(["push"] * 5 + ["leave", "snapshot", "restore"]), label="action")
        if action == "push":
            ids = data.draw(st.lists(st.sampled_from(UNIVERSE), max_size=capacity + 3), label="ids")
            frames = rng.standard_normal((len(ids),) + tuple(model.frame_shape)).astype(np.float32)
            new = {s for s in ids if s not in pool}
            if len(new) > capacity - len(pool):
                before = {s: pool.frames(s) for s in pool.ids}
                with pytest.raises(dse.PoolFullError):
                    pool.push(ids, frames)
                assert {s: pool.frames(s) for s in pool.ids} == before  # nothing pushed, nobody joined
                continue
            out, ready = pool.push(ids, frames)
            assert out.shape == (len(ids),) + tuple(model.output_shape) and ready.shape == (len(ids),)
            for i, s in enumerate(ids):
                if s not in refs:
                    refs[s] = model.stream(mode=mode, block=1)
                y = refs[s].push(frames[i])
                _check(out, ready, i, None if y is None else y.copy(), f"step {step}, sensor {s!r}, call {ids}")
        elif action == "leave" and len(pool):
            s = data.draw(st.sampled_from(pool.ids), label="leaves")
            pool.leave(s)
            del refs[s]
            assert s not in pool
        elif action == "snapshot" and len(pool):
            s = data.draw(st.sampled_from(pool.ids), label="snapshot of")
            blob = pool.snapshot(s)
            assert isinstance(blob, bytes)
            ref_state = refs[s].state()
            got = dse_state.from_bytes(blob)
            assert set(got) == set(ref_state)
            for k in ref_state:  # the very snapshot a lone stream would have taken
                np.testing.assert_array_equal(got[k], ref_state[k], err_msg=k)
            saved.append((blob, ref_state))
        elif action == "restore" and saved:
            blob, ref_state = saved[data.draw(st.integers(0, len(saved) - 1), label="which snapshot")]
            s = data.draw(st.sampled_from(UNIVERSE), label="restored as")
            if s not in pool and len(pool) == capacity:
                with pytest.raises(dse.PoolFullError):
                    pool.restore(s, blob)
                continue
            pool.restore(s, blob)
            refs[s] = model.stream(mode=mode, block=1)
            refs[s].restore(ref_state)
        assert sorted(map(repr, pool.ids)) == sorted(map(repr, refs))
        for s in pool.ids:
            assert pool.frames(s) == refs[s].frames
    return pool


@settings(max_examples=30, **HYPO)
@given(case=cases(allow_stream_exact=False, max_body=3), mode=st.sampled_from(MODES),
       capacity=st.integers(1, 6), data=st.data())
def test_random_models_pool_equals_lone_streams(case, mode, capacity, data):
    note(repr(case))
    _run_schedule(case.model, mode, capacity, data, np.random.default_rng(case.seed % 1000),
                  data.draw(st.integers(1, 30), label="steps"))


@settings(max_examples=20, **HYPO)
@given(mode=st.sampled_from(MODES), capacity=st.integers(2, 7), data=st.data())
def test_wide_model_pool_equals_lone_streams(mode, capacity, data):
    """Enough channels for the streams kernel's full blocks; up to 7 sensors per call (every
    remainder of an 8-, 6-, 4-, 2-stream pass)."""
    _run_schedule(_kws_like(), mode, capacity, data, np.random.default_rng(capacity), 40)


def test_results_do_not_depend_on_partners():
    """The same sensor, the same frames: alone, or with 0..15 different partners each call,
    in another slot, at another position in the call: the same bits."""
    model = _kws_like()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60,) + tuple(model.frame_shape)).astype(np.float32)
    lone = model.stream()
    want = np.stack([np.full(model.output_shape, np.nan, np.float32) if (y := lone.push(f)) is None else y.copy()
                     for f in x])
    for capacity, seed in ((1, 1), (16, 2), (16, 3), (5, 4)):
        pool = dse.StreamPool(model, capacity=capacity)
        prng = np.random.default_rng(seed)
        for k in range(capacity - 1):  # partners in the lower slots, at other frames
            n = int(prng.integers(0, 20))
            pool.push([f"p{k}"] * n, prng.standard_normal((n,) + tuple(model.frame_shape)).astype(np.float32))
        got = []
        for t in range(len(x)):
            others = [f"p{k}" for k in range(capacity - 1) if prng.random() < 0.6]
            ids = others + ["me"]
            prng.shuffle(ids)
            frames = prng.standard_normal((len(ids),) + tuple(model.frame_shape)).astype(np.float32)
            frames[ids.index("me")] = x[t]
            out, ready = pool.push(ids, frames)
            got.append(out[ids.index("me")])
        np.testing.assert_array_equal(np.stack(got), want, err_msg=f"capacity {capacity}")


def test_join_leave_slots_and_reset():
    model = _kws_like()
    pool = dse.StreamPool(model, capacity=2)
    x = np.random.default_rng(1).standard_normal((30, 2, 5)).astype(np.float32)
    pool.push(["a", "b"], x[0])
    assert pool.ids == ["a", "b"] and pool.slot("a") == 0 and pool.slot("b") == 1 and len(pool) == 2
    with pytest.raises(dse.PoolFullError):
        pool.push(["c"], x[1, :1])
    with pytest.raises(ValueError):
        pool.join("a")
    pool.leave("a")
    assert "a" not in pool and pool.ids == ["b"]
    with pytest.raises(KeyError):
        pool.slot("a")
    with pytest.raises(KeyError):
        pool.leave("a")
    # a new id takes the freed slot in the fresh state, whatever "a" left there
    outs = [pool.push(["c"], x[t, :1]) for t in range(1, 30)]
    lone = model.stream()
    for t, (out, ready) in zip(range(1, 30), outs):
        y = lone.push(x[t, 0])
        _check(out, ready, 0, None if y is None else y.copy(), f"frame {t}")
    assert pool.slot("c") == 0 and pool.frames("c") == 29 and pool.frames("b") == 1
    strict = dse.StreamPool(model, capacity=2, auto_join=False)
    with pytest.raises(KeyError, match="join"):
        strict.push(["z"], x[0, :1])
    assert strict.join("z") == 0
    strict.push(["z"], x[0, :1])


def test_bad_input_changes_nothing():
    model = _kws_like()
    pool = dse.StreamPool(model, capacity=3)
    x = np.random.default_rng(2).standard_normal((3, 5)).astype(np.float32)
    pool.push(["a"], x[:1])
    snap = pool.snapshot("a")
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(dse.StreamInputError, match="non-finite"):
        pool.push(["a", "b", "c"], bad)
    with pytest.raises(dse.StreamInputError, match="shape"):
        pool.push(["a", "b"], x)
    with pytest.raises(dse.StreamInputError):
        pool.push_many("a", np.full((4, 5), np.inf, np.float32))
    assert pool.ids == ["a"] and pool.snapshot("a") == snap


def test_repeated_ids_push_in_order_and_push_many():
    model = _kws_like()
    rng = np.random.default_rng(3)
    xa = rng.standard_normal((40, 5)).astype(np.float32)
    xb = rng.standard_normal((40, 5)).astype(np.float32)
    lone_a = model.stream()
    want_a = [None if (y := lone_a.push(f)) is None else y.copy() for f in xa]
    lone_b = model.stream()
    want_b = [None if (y := lone_b.push(f)) is None else y.copy() for f in xb]
    pool = dse.StreamPool(model, capacity=4, block=8)
    # 20 frames of a and 10 of b, randomly interleaved (each sensor's in order), in one call
    frames = np.concatenate([xa[:20], xb[:10]])
    ids = ["a"] * 20 + ["b"] * 10
    which = rng.permutation(ids)
    ka = kb = 0
    seq = []
    for s_ in which:
        seq.append(ka if s_ == "a" else 20 + kb)
        ka, kb = ka + (s_ == "a"), kb + (s_ == "b")
    out, ready = pool.push([ids[j] for j in seq], frames[seq])
    ka = kb = 0
    for r, j in enumerate(seq):
        if j < 20:
            _check(out, ready, r, want_a[ka], f"a frame {ka}")
            ka += 1
        else:
            _check(out, ready, r, want_b[kb], f"b frame {kb}")
            kb += 1
    # the rest as blocks: push_many per sensor equals the pushes
    got_a = pool.push_many("a", xa[20:])
    np.testing.assert_array_equal(got_a, np.stack([w for w in want_a[20:] if w is not None]))
    got_b = pool.push_many("b", xb[10:])
    np.testing.assert_array_equal(got_b, np.stack([w for w in want_b[10:] if w is not None]))
    assert pool.push_many("a", np.zeros((0, 5), np.float32)).shape == (0, 6)
    assert pool.frames("a") == 40 and pool.frames("b") == 40


def test_snapshot_moves_between_pools_and_lone_streams():
    model = _kws_like()
    rng = np.random.default_rng(4)
    x = rng.standard_normal((50, 5)).astype(np.float32)
    src = dse.StreamPool(model, capacity=3)
    src.push(["x", "y"], rng.standard_normal((2, 5)).astype(np.float32))  # a partner in slot 0
    for f in x[:30]:
        src.push(["y"], f[None])
    blob = src.snapshot("y")
    lone = model.stream(block=1)
    lone.restore(dse_state.from_bytes(blob))
    dst = dse.StreamPool(model, capacity=8)
    dst.push(["q", "r", "s"], rng.standard_normal((3, 5)).astype(np.float32))
    dst.restore("moved", blob)
    assert dst.frames("moved") == 31 and dst.slot("moved") == 3
    for f in x[30:]:
        a, ra = src.push(["y"], f[None])
        b, rb = dst.push(["moved", "q"], np.stack([f, f]))
        y = lone.push(f)
        _check(a, ra, 0, None if y is None else y.copy(), "source pool")
        _check(b, rb, 0, None if y is None else y.copy(), "destination pool")
    # a lone stream's own snapshot restores into a pool too
    dst.restore("from-lone", dse_state.to_bytes(lone.state()))
    assert dst.snapshot("from-lone") == dse_state.to_bytes(lone.state())


def test_snapshot_refused_for_another_model_or_layout():
    model = _kws_like()
    pool = dse.StreamPool(model, capacity=2)
    pool.push(["a"], np.ones((1, 5), np.float32))
    before = pool.snapshot("a")
    other = dse.Sequential([dse.Conv1d(5, 4, 3), dse.GlobalAvgPool()], in_features=5, window=14)
    foreign = dse_state.to_bytes(other.stream(block=1).state())
    with pytest.raises(dse.StateError, match="different model"):
        pool.restore("a", foreign)
    with pytest.raises(dse.StateError, match="layout"):
        pool.restore("a", dse_state.to_bytes(model.stream(block=64).state()))
    with pytest.raises(dse.StateError, match="layout"):  # the pool's own batched stream's
        pool.restore("a", dse_state.to_bytes(pool._stream.state()))
    with pytest.raises(dse.StateError, match="not a readable snapshot"):
        pool.restore("a", b"PK\x03\x04 not a zip at all")
    with pytest.raises(dse.StateError):
        pool.restore("new", foreign)
    assert pool.snapshot("a") == before and pool.ids == ["a"]  # untouched, nobody joined


def test_sequence_models_are_refused():
    model = dse.Sequential([dse.Conv1d(2, 3, 3, padding="same")], in_features=2, window=5,
                           semantics="sequence")
    with pytest.raises(dse.ModelError, match="window models"):
        dse.StreamPool(model, capacity=2)
    with pytest.raises(ValueError):
        dse.StreamPool(_kws_like(), capacity=0)


def test_int8_pool_equals_lone_int8_streams():
    model = _kws_like()
    x = np.random.default_rng(5).standard_normal((200, 5)).astype(np.float32)
    q = dse.quantize(model, x[:100])
    pool = dse.StreamPool(q, capacity=3)
    lone = q.stream()
    for t in range(60):
        pair = [("a", x[t]), ("b", x[t + 100])][::-1 if t % 2 else 1]
        out, ready = pool.push([s for s, _ in pair], np.stack([f for _, f in pair]))
        y = lone.push(x[t])
        _check(out, ready, t % 2, None if y is None else y.copy(), f"frame {t}")
    restored = q.stream(block=1)
    restored.restore(dse_state.from_bytes(pool.snapshot("a")))
    assert restored.frames == 60


def test_the_pool_never_imports_flink():
    """deepshift_edge.flink is an optional extra: the core and the pool never import it."""
    import subprocess
    import sys
    code = ("import sys, numpy as np, deepshift_edge as dse; "
            "m = dse.Sequential([dse.Conv1d(2, 3, 2)], in_features=2, window=4); "
            "p = dse.StreamPool(m, capacity=3); p.push(['a', 'b'], np.ones((2, 2), np.float32)); "
            "p.restore('c', p.snapshot('a')); "
            "bad = [k for k in sys.modules if k.startswith(('pyflink', 'deepshift_edge.flink'))]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
