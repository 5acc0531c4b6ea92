"""Every conv-kernel path this machine can run passes the stream checks (issue 15).

The extension picks its kernels once, at the first call: AVX-512 (16 floats) where the
CPU has x86-64-v4, else AVX2 (8 floats), else the baseline width (SSE2 / NEON, 4 floats).
``DSE_KERNELS=baseline|avx2|avx512`` caps that choice, so each path runs here in a child
process: the stream-vs-reference checks and the bit-exact push vs push_many checks of
test_stream_api.py (each path adds every output's terms in one order, whatever the entry
point). The path the parent process already runs is not repeated. A path the CPU (or a
-DDSE_NO_CLONES build) lacks is skipped, saying so.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import deepshift_edge as dse
from deepshift_edge.engine import _kernels

HERE = os.path.dirname(os.path.abspath(__file__))
PATHS = {"baseline": ("sse2", "neon", "scalar"), "avx2": ("avx2",), "avx512": ("avx512",)}


def _isa_under(path: str) -> str:
    env = dict(os.environ, DSE_KERNELS=path)
    out = subprocess.run([sys.executable, "-c", "from deepshift_edge.engine import _kernels as k; "
                          "print(k.kernel_isa())"], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_default_is_the_best_path_and_the_switch_caps_it():
    here = _kernels.kernel_isa()
    assert os.environ.get("DSE_KERNELS") or _isa_under("avx512") == here
    assert _isa_under("baseline").startswith(PATHS["baseline"])
    assert _isa_under("nonsense") == _isa_under("avx512")  # an unknown value caps nothing


@pytest.mark.parametrize("path", list(PATHS))
def test_every_kernel_path_passes_the_stream_checks(path):
    isa = _isa_under(path)
    if not isa.startswith(PATHS[path]):
        pytest.skip(f"DSE_KERNELS={path} runs {isa!r} here (CPU or build lacks {path})")
    if isa == _kernels.kernel_isa():
        pytest.skip(f"{isa} is this process's path: the rest of the suite runs it")
    env = dict(os.environ, DSE_KERNELS=path)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
           os.path.join(HERE, "test_stream_vs_reference.py"), os.path.join(HERE, "test_stream_api.py"),
           os.path.join(HERE, "test_kernel_paths.py") + "::test_odd_widths_push_equals_push_many",
           os.path.join(HERE, "test_kernel_paths.py") + "::test_odd_batches_equal_lone_streams",
           os.path.join(HERE, "test_kernel_paths.py") + "::test_push_kernel_passes_and_unfused_epilogues",
           os.path.join(HERE, "test_kernel_paths.py") + "::test_read_floats_sums_every_element",
           os.path.join(HERE, "test_kernel_paths.py") + "::test_wide_pools_match_the_reference_and_push_many",
           os.path.join(HERE, "test_running_mean.py"), os.path.join(HERE, "test_pool.py")]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=HERE)
    assert r.returncode == 0, f"{isa}:\n{r.stdout[-4000:]}\n{r.stderr[-2000:]}"
    assert " passed" in r.stdout and " failed" not in r.stdout


def test_odd_widths_push_equals_push_many():
    """Output counts that leave a partial block and an odd block count (AVX-512's push_many
    pairs blocks), frame runs that leave every remainder of a pass (8, 6, 4, 2, 1)."""
    rng = np.random.default_rng(15)
    model = dse.Sequential([dse.Conv1d(5, 40, 3, seed=1), dse.ReLU(), dse.Conv1d(40, 17, 2, dilation=2, seed=2),
                            dse.Conv1d(17, 48, 1, seed=3), dse.ReLU(), dse.Conv1d(48, 7, 3, seed=4)],
                           in_features=5, window=12)
    x = rng.standard_normal((200, 5)).astype(np.float32)
    s = model.stream()
    single = np.stack([np.array(s.push(f)) for f in x][model.window - 1:])  # push reuses its out row
    for block in (1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 64):
        s = model.stream()
        many = np.concatenate([s.push_many(x[i:i + block]) for i in range(0, len(x), block)])
        np.testing.assert_array_equal(many, single, err_msg=f"{_kernels.kernel_isa()}, block {block}")


def test_push_kernel_passes_and_unfused_epilogues():
    """push runs a 1-D conv column through the push kernel (up to eight blocks a pass, the
    bias/ReLU epilogue fused, the twin row written by the kernel); anything else in the
    epilogue (a scale, PReLU, tanh) runs after it. Block counts that take every pass size
    (9 = 8 + 1, 7 = 4 + 2 + 1), a grouped conv, no bias: push equals push_many bit for bit
    and the float64 reference to float32 rounding."""
    rng = np.random.default_rng(16)
    model = dse.Sequential([dse.Conv1d(3, 130, 3, seed=1), dse.ReLU(),
                            dse.Conv1d(130, 100, 2, dilation=2, bias=False, seed=2), dse.PReLU(100, 0.1),
                            dse.Conv1d(100, 40, 1, groups=4, seed=3), dse.Tanh(),
                            dse.Conv1d(40, 20, 2, seed=4), dse.BatchNorm1d(20), dse.Conv1d(20, 5, 2, seed=5)],
                           in_features=3, window=10)
    x = rng.standard_normal((120, 3)).astype(np.float32)
    s = model.stream()
    single = np.stack([np.array(s.push(f)) for f in x][model.window - 1:])
    many = model.stream().push_many(x)
    np.testing.assert_array_equal(many, single, err_msg=_kernels.kernel_isa())
    want = np.stack([model.forward_window(x[t - model.window + 1:t + 1].astype(np.float64))
                     for t in range(model.window - 1, len(x))]).reshape(single.shape)
    np.testing.assert_allclose(single, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))


WIDE_POOLS = {
    # 37 channels: two blocks of 16 and 5 left over; 16: one block exactly; 1-D max and average
    "1d": lambda: dse.Sequential([dse.Conv1d(3, 37, 2, seed=1), dse.MaxPool1d(2), dse.Conv1d(37, 16, 1, seed=2),
                                  dse.AvgPool1d(3, stride=2, padding=1), dse.Conv1d(16, 4, 1, seed=3)],
                                 in_features=3, window=14),
    # 2-D, padded feature windows (taps outside the frame are skipped), count_include_pad both ways
    "2d": lambda: dse.Sequential([dse.Conv2d(2, 20, (3, 3), padding=(1, 1), seed=1), dse.ReLU(),
                                  dse.MaxPool2d((2, 3), stride=(1, 2), padding=(0, 1)),
                                  dse.Conv2d(20, 33, (1, 2), seed=2),
                                  dse.AvgPool2d((2, 2), stride=(2, 1), padding=(0, 1)),
                                  dse.AvgPool2d((1, 3), stride=(1, 1), padding=(0, 1), count_include_pad=False),
                                  dse.GlobalAvgPool()], in_features=(2, 9), window=12),
}


@pytest.mark.parametrize("name", list(WIDE_POOLS))
def test_wide_pools_match_the_reference_and_push_many(name):
    """Pools over 16 channels and more run _pool.h's blocks of 16 (the max a select, the sum one
    tap at a time, in the scalar loop's order), with the channels left over after the blocks:
    the float64 reference to float32 rounding, push_many bit for bit."""
    model = WIDE_POOLS[name]()
    rng = np.random.default_rng(17)
    x = rng.standard_normal((60,) + tuple(model.frame_shape)).astype(np.float32)
    s = model.stream()
    single = np.stack([np.array(y) for y in (s.push(f) for f in x) if y is not None])
    np.testing.assert_array_equal(model.stream().push_many(x), single, err_msg=_kernels.kernel_isa())
    w = model.window
    want = np.stack([model.forward_window(x[t - w + 1:t + 1].astype(np.float64)) for t in range(w - 1, len(x))])
    np.testing.assert_allclose(single, want.reshape(single.shape), rtol=1e-4,
                               atol=1e-4 * max(1.0, float(np.abs(want).max())), err_msg=_kernels.kernel_isa())


@pytest.mark.parametrize("n", [0, 1, 5, 63, 64, 65, 1000, 4099])
def test_read_floats_sums_every_element(n):
    """The bench's memory floor reads every float once (vector body, then the tail)."""
    w = np.random.default_rng(n).uniform(0.5, 1.5, n).astype(np.float32)
    assert _kernels.read_floats(w) == pytest.approx(float(w.astype(np.float64).sum()), rel=1e-5, abs=1e-6)
    with pytest.raises(TypeError, match="float32"):
        _kernels.read_floats(w.astype(np.float64))


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
@pytest.mark.parametrize("offset", [0, 1, 4, 16, 60])
def test_cache_aligned_copies_to_a_64_byte_start(dtype, offset):
    """Conv weights are handed to the kernels from a 64-byte boundary (one zmm row of a block
    per cache line); the copy keeps dtype and every element, and an aligned array is kept."""
    itemsize = np.dtype(dtype).itemsize
    base = np.arange(400, dtype=dtype)
    head = (-base.ctypes.data) % 64 // itemsize  # base[head] sits on a 64-byte boundary
    a = base[head + offset:head + offset + 300]
    out = _kernels.cache_aligned(a)
    assert out.ctypes.data % 64 == 0 and out.dtype == dtype
    np.testing.assert_array_equal(out, a)
    assert (out is a) == (offset * itemsize % 64 == 0)
    assert _kernels.cache_aligned(a[:0]).size == 0


def test_odd_batches_equal_lone_streams():
    """Batched push runs the interior convs for all streams in one pass of the streams kernel
    (issue 14): batch sizes that leave every remainder of a pass (8, 6, 4, 2, 1), streams at
    different frames (so their ring heads differ), grouped and 2-D convs; every element bit
    for bit its own lone stream."""
    rng = np.random.default_rng(14)
    models = [
        dse.Sequential([dse.Conv1d(5, 40, 3, seed=1), dse.ReLU(), dse.Conv1d(40, 17, 2, dilation=2, seed=2),
                        dse.Conv1d(17, 48, 1, seed=3), dse.ReLU(), dse.Conv1d(48, 8, 3, groups=4, seed=4)],
                       in_features=5, window=12),
        dse.Sequential([dse.Conv2d(2, 12, (2, 3), padding=(0, 1), seed=5), dse.ReLU(),
                        dse.Conv2d(12, 20, (3, 2), seed=6), dse.GlobalAvgPool()],
                       in_features=(2, 7), window=8),
    ]
    for model in models:
        n = 60
        for batch in (2, 3, 5, 7, 9, 13, 16, 17):
            x = rng.standard_normal((n, batch) + tuple(model.frame_shape)).astype(np.float32)
            start = rng.integers(0, 9, size=batch)  # element b starts at frame start[b]
            want = []
            for b in range(batch):
                s = model.stream()
                want.append({t: np.array(y) for t in range(start[b], n)
                             if (y := s.push(x[t, b])) is not None})
            s = model.stream(batch=batch)
            for t in range(n):
                late = [b for b in range(batch) if start[b] == t]
                if late:
                    s.reset(late)
                s.push(x[t])
                for b in range(batch):
                    if t in want[b]:
                        assert s.ready[b]
                        np.testing.assert_array_equal(s.out[b], want[b][t],
                                                      err_msg=f"{_kernels.kernel_isa()}, B={batch}, b={b}, t={t}")
                    elif t >= start[b]:
                        assert not s.ready[b]


@pytest.mark.parametrize("frame_shape", [(5,), (1, 5), (2, 3)])
def test_misaligned_float32_input_is_copied_not_read_in_place(frame_shape):
    """A float32 view at an odd byte offset (np.frombuffer(buf, offset=1)) is valid NumPy
    input; reading floats from it faulted on 32-bit ARM (SIGBUS, found by test_fuzz under
    emulated armhf). push, push_many and warm_up give the same as for an aligned copy."""
    c = frame_shape[0]
    if len(frame_shape) == 1:
        model = dse.Sequential([dse.Conv1d(c, 8, 3, seed=1), dse.ReLU(), dse.Conv1d(8, 4, 2, seed=2)],
                               in_features=c, window=6)
    else:
        model = dse.Sequential([dse.Conv2d(c, 8, (2, 2), seed=1), dse.ReLU(), dse.GlobalAvgPool()],
                               in_features=frame_shape, window=6)
    x = np.random.default_rng(3).standard_normal((20,) + frame_shape).astype(np.float32)

    def odd(a):
        buf = bytearray(a.nbytes + 1)
        v = np.frombuffer(buf, dtype=np.float32, count=a.size, offset=1).reshape(a.shape)
        v[...] = a
        assert not v.flags.aligned
        return v

    ref = model.stream()
    want = [None if (y := ref.push(f)) is None else np.array(y) for f in x]
    s = model.stream()
    got = [None if (y := s.push(odd(f))) is None else np.array(y) for f in x]
    for g, w in zip(got, want):
        assert (g is None) == (w is None) and (g is None or np.array_equal(g, w))
    many = model.stream().push_many(odd(x))
    np.testing.assert_array_equal(many, np.stack([w for w in want if w is not None]))
    y0 = model.stream().warm_up(odd(x))
    np.testing.assert_array_equal(y0, want[-1])
