"""GlobalAvgPool streams as running sums (O(C) per frame whatever the window).

They must not drift: adding and subtracting in float64 loses the low bits of small
values next to huge ones, so every slot is re-summed exactly every n updates."""
import numpy as np
import pytest

import deepshift_edge as dse


def _outputs(stream, x):
    out = []
    for f in x:
        y = stream.push(f)
        out.append(None if y is None else y.astype(np.float64))
    return out


@pytest.mark.parametrize("channels", [2, 37])  # 37: _pool.h's blocks of 16 channels and 5 left over
@pytest.mark.parametrize("mode", ["dense", "decimated"])
def test_huge_values_leave_no_trace_once_resummed(mode, channels):
    # GAP straight on the input: the average of the window, in float64, exactly.
    w = 8
    model = dse.Sequential([dse.AvgPool1d(1, stride=2), dse.GlobalAvgPool()], in_features=channels, window=w)
    x = np.ones((200, channels), np.float32)
    x[40:48] = 1e30  # cancellation of 1e30 in float64 leaves errors of ~1e14
    x[100:] = np.arange(100, dtype=np.float32)[:, None] * 1e-3
    outs = _outputs(model.stream(mode=mode), x)
    ref = model.forward(x)
    n = model.specs[1].length
    # After the spike left the window, at most one re-sum period (n updates per slot)
    # later the running sum is exact again.
    settle = 48 + w + 2 * n * model.hop
    for t in range(settle, len(x)):
        if outs[t] is not None:
            np.testing.assert_allclose(outs[t], ref[t - w + 1], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("mode", ["dense", "decimated"])
def test_no_drift_over_many_frames_with_spikes(mode):
    rng = np.random.default_rng(0)
    model = dse.Sequential([dse.Conv1d(3, 4, 3, stride=2, seed=1), dse.ReLU(), dse.GlobalAvgPool()],
                           in_features=3, window=33)
    frames = 60_000
    x = rng.standard_normal((frames, 3)).astype(np.float32)
    x[rng.integers(0, frames, 200)] *= 1e4  # sensor glitches
    stream = model.stream(mode=mode)
    got = stream.push_many(x)
    ref_rows = np.arange(frames - model.window + 1)
    if mode == "decimated":
        ref_rows = ref_rows[::model.hop]
    assert len(got) == len(ref_rows)
    for k in np.linspace(0, len(ref_rows) - 1, 60).astype(int):
        i = ref_rows[k]
        ref = model.forward_window(x[i:i + model.window])
        np.testing.assert_allclose(got[k], ref, rtol=1e-5, atol=1e-5 * (1 + np.abs(ref).max()))


def test_running_sums_are_part_of_the_snapshot():
    model = dse.Sequential([dse.Conv1d(2, 3, 3, seed=2), dse.GlobalAvgPool()], in_features=2, window=20)
    x = np.random.default_rng(1).standard_normal((90, 2)).astype(np.float32)
    a = model.stream()
    a.push_many(x[:50])
    snap = a.state()
    assert any(k.startswith("aux.") for k in snap)
    b = model.stream()
    b.restore(snap)
    np.testing.assert_array_equal(a.push_many(x[50:]), b.push_many(x[50:]))
