"""PyTorch as a second, independent oracle (docs/semantics.md).

Every case builds a deepshift_edge ``Sequential``, rebuilds the *same* network in
PyTorch from the public hyper-parameters (PyTorch argument names) and weights (copied
with ``torch.from_numpy``), runs torch on every window of a random sequence at once
(windows batched as (N, C, W) or (N, C, F, W)), and checks

* ``model.forward(x)`` (the float64 NumPy reference) against torch in float64, tightly;
* the dense stream (``model.stream()``, frame by frame with ``push`` and in one block
  with ``push_many``) against torch, to float32 accuracy;
* the decimated stream (``model.stream(mode='decimated')``), whose outputs occur only at
  frames ``t >= W-1`` with ``(t - (W-1)) % hop == 0``.

Every comparison also checks that the reference is *not* matched when shifted by one
frame, so the tolerances are known to catch an off-by-one in time.

Conventions mirrored in torch (see docs/semantics.md):
* Conv2d windows are NCHW with H = features, W = time; pairs are (feature, time);
* ``padding='causal'`` = left zero padding of (k-1)*dilation frames, then a valid conv;
* Pools have no padding, stride defaults to the kernel;
* ``Linear`` before the head acts on each frame's channels (1-D models);
* ``Softmax`` is over channels (dim 1);
* heads: LastFrame = x[..., -1]; GlobalAvg/MaxPool = AdaptiveAvg/MaxPool(1) + flatten;
  Flatten = C-order flatten of (C[, F], T); no head = implicit LastFrame;
* ``Residual``: body(x) + skip(x)[..., -n:] (right-aligned crop).
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

import deepshift_edge as dse  # noqa: E402
from deepshift_edge.errors import ModelError, NotStreamableError  # noqa: E402

pytestmark = pytest.mark.torch

torch.set_num_threads(1)

# Tolerances. The NumPy reference and torch both run in float64 on the same float32
# parameters, so they agree to rounding. The streams compute in float32.
REF_RTOL, REF_ATOL = 1e-9, 1e-12
STREAM_RTOL = 1e-5
STREAM_ATOL_REL = 2e-6  # absolute term, relative to the largest |output| of the case

# comparison name -> (max |error|, max fraction of the tolerance used); printed by the
# last test (run pytest with -s to see it)
_MAX_ERR: dict = {}


# ----------------------------------------------------------------------------- torch twins
from deepshift_edge.convert.torch_export import to_torch  # noqa: E402

from strategies import activation_model, head_model  # noqa: E402


def torch_twin(model: dse.Sequential) -> nn.Module:
    return to_torch(model, dtype="float64")


def torch_windows(model, x: np.ndarray) -> np.ndarray:
    """Run the torch twin on every window x[i:i+W], batched: (T-W+1, *output_shape)."""
    xt = torch.from_numpy(np.asarray(x, dtype=np.float64))
    windows = xt.unfold(0, model.window, 1).contiguous()  # (N, C[, F], W)
    assert windows.shape[1:] == tuple(model.frame_shape) + (model.window,)
    with torch.no_grad():
        y = torch_twin(model)(windows)
    return y.numpy()


# ----------------------------------------------------------------------------- helpers
def _bn(cls, n, rng, eps=1e-5):
    bn = cls(n, eps=eps)
    bn.weight = rng.uniform(0.5, 1.5, n)
    bn.bias = rng.normal(0, 0.3, n)
    bn.running_mean = rng.normal(0, 0.3, n)
    bn.running_var = rng.uniform(0.5, 2.0, n)
    return bn


def _frames(model, rng, extra):
    t = model.window + extra
    return rng.standard_normal((t,) + tuple(model.frame_shape)).astype(np.float32)


def _assert_close(name, got, want_all, rtol, atol, rows=None):
    """got[i] must match want_all[rows[i]] (default: all rows), and must NOT match the
    window one frame later (want_all[rows[i] + 1]): else these tolerances could not
    catch an off-by-one frame."""
    got = np.asarray(got, dtype=np.float64)
    want_all = np.asarray(want_all, dtype=np.float64)
    rows = np.arange(len(want_all)) if rows is None else np.asarray(rows)
    want = want_all[rows]
    assert got.shape == want.shape, (name, got.shape, want.shape)
    err = np.abs(got - want)
    used = err / (atol + rtol * np.abs(want))  # fraction of the tolerance used
    old = _MAX_ERR.get(name, (0.0, 0.0))
    _MAX_ERR[name] = (max(old[0], float(err.max(initial=0.0))), max(old[1], float(used.max(initial=0.0))))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=name)
    keep = rows + 1 < len(want_all)
    if keep.sum() >= 2:
        nxt = want_all[rows[keep] + 1]
        shifted = np.abs(got[keep] - nxt) - (atol + rtol * np.abs(nxt))
        assert shifted.max() > 0, f"{name}: output equals the next window's"


def _stream_atol(want):
    return STREAM_ATOL_REL * max(1.0, float(np.abs(want).max(initial=0.0)))


def check_model(model: dse.Sequential, seed: int = 0, extra: int | None = None, name: str = "case"):
    """The whole oracle check for one model."""
    rng = np.random.default_rng(seed)
    hop = model.hop
    if extra is None:
        extra = max(12, 3 * hop + 4)
    x = _frames(model, rng, extra)
    n = x.shape[0] - model.window + 1
    want = torch_windows(model, x)
    assert want.shape == (n,) + tuple(model.output_shape)

    # (a) offline reference vs torch, both float64
    ref = model.forward(x)
    _assert_close(f"{name}:forward", ref, want, REF_RTOL, REF_ATOL)

    if model.equivalence != "window-exact":
        with pytest.raises(NotStreamableError):
            model.stream()
        return

    atol = _stream_atol(want)
    # (b) dense stream, push by push
    s = model.stream()
    dense = []
    for t in range(x.shape[0]):
        out = s.push(x[t])
        if t < model.window - 1:
            assert out is None, f"{name}: output before the window is full (t={t})"
        else:
            assert out is not None, f"{name}: no dense output at t={t}"
            dense.append(np.array(out, copy=True))
    _assert_close(f"{name}:dense", np.stack(dense), want, STREAM_RTOL, atol)

    # dense stream, one block
    block = model.stream().push_many(x)
    _assert_close(f"{name}:dense-block", block, want, STREAM_RTOL, atol)

    # (c) decimated stream
    s = model.stream(mode="decimated")
    assert s.hop == hop
    dec, times = [], []
    for t in range(x.shape[0]):
        out = s.push(x[t])
        emits = t >= model.window - 1 and (t - (model.window - 1)) % hop == 0
        if not emits:
            assert out is None, f"{name}: decimated output at t={t} (hop {hop})"
        else:
            assert out is not None, f"{name}: no decimated output at t={t} (hop {hop})"
            dec.append(np.array(out, copy=True))
            times.append(t)
    assert len(dec) >= 2
    rows = np.asarray(times) - (model.window - 1)
    _assert_close(f"{name}:decimated", np.stack(dec), want, STREAM_RTOL, atol, rows)
    block = model.stream(mode="decimated").push_many(x)
    _assert_close(f"{name}:decimated-block", block, want, STREAM_RTOL, atol, rows)


# ----------------------------------------------------------------------------- explicit cases
def _case_conv1d_valid_dilated(rng):
    return dse.Sequential([dse.Conv1d(3, 8, 3, seed=1), dse.ReLU(),
                           dse.Conv1d(8, 6, 3, dilation=2, seed=2), dse.Tanh(),
                           dse.Conv1d(6, 4, 2, dilation=4, bias=False, seed=3)], in_features=3)


def _case_conv1d_causal_bn(rng):
    return dse.Sequential([dse.Conv1d(3, 8, 3, padding="causal", dilation=2, seed=1),
                           _bn(dse.BatchNorm1d, 8, rng), dse.LeakyReLU(0.2),
                           dse.Conv1d(8, 5, 4, padding="causal", seed=2), dse.LastFrame(),
                           dse.Linear(5, 3, seed=3)], in_features=3, window=20)


def _case_groups_depthwise_1d(rng):
    return dse.Sequential([dse.Conv1d(4, 8, 3, groups=2, seed=1), dse.ReLU6(),
                           dse.Conv1d(8, 8, 5, groups=8, dilation=2, seed=2),
                           _bn(dse.BatchNorm1d, 8, rng), dse.HardSwish(),
                           dse.Conv1d(8, 6, 1, seed=3), dse.GlobalAvgPool()], in_features=4, window=24)


def _case_strides_pools_1d(rng):
    return dse.Sequential([dse.Conv1d(2, 6, 3, stride=2, seed=1), dse.ReLU(),
                           dse.MaxPool1d(2), dse.Conv1d(6, 6, 3, seed=2), dse.Sigmoid(),
                           dse.AvgPool1d(3, stride=2), dse.Conv1d(6, 4, 2, seed=3),
                           dse.GlobalAvgPool(), dse.Linear(4, 5, seed=4), dse.Softmax()],
                          in_features=2)


def _case_maxpool_dilated_stride(rng):
    return dse.Sequential([dse.Conv1d(3, 5, 2, seed=1), dse.MaxPool1d(3, stride=2, dilation=2),
                           _bn(dse.BatchNorm1d, 5, rng), dse.GELU(),
                           dse.Conv1d(5, 4, 3, dilation=2, stride=3, seed=2),
                           dse.GlobalMaxPool()], in_features=3, window=40)


def _case_tcn_identity_causal(rng):
    blocks = []
    for i, d in enumerate((1, 2, 4)):
        blocks.append(dse.Residual([dse.Conv1d(6, 6, 3, padding="causal", dilation=d, seed=10 + i),
                                    _bn(dse.BatchNorm1d, 6, rng), dse.ReLU(),
                                    dse.Conv1d(6, 6, 3, padding="causal", dilation=d, seed=20 + i),
                                    dse.ReLU()]))
    return dse.Sequential([dse.Conv1d(3, 6, 1, seed=1)] + blocks + [dse.LastFrame(), dse.Linear(6, 2, seed=2)],
                          in_features=3, window=30)


def _case_tcn_valid_skip(rng):
    return dse.Sequential([
        dse.Residual([dse.Conv1d(3, 8, 3, seed=1), dse.Tanh(), dse.Conv1d(8, 8, 3, dilation=2, seed=2)],
                     skip=dse.Conv1d(3, 8, 1, seed=3)),
        dse.ReLU(),
        dse.Residual([dse.Conv1d(8, 8, 2, dilation=4, seed=4), dse.GELU("tanh")]),
        dse.Residual([dse.Conv1d(8, 4, 3, padding="causal", seed=5)], skip=dse.Conv1d(8, 4, 1, seed=6)),
        dse.GlobalAvgPool(), dse.Linear(4, 3, seed=7)], in_features=3, window=20)


def _case_residual_after_stride(rng):
    return dse.Sequential([dse.Conv1d(2, 4, 2, stride=2, seed=1),
                           dse.Residual([dse.Conv1d(4, 4, 3, dilation=2, seed=2), dse.ReLU()]),
                           dse.AvgPool1d(2),
                           dse.Residual([dse.Conv1d(4, 5, 2, seed=3)], skip=dse.Conv1d(4, 5, 1, seed=4)),
                           dse.Flatten(), dse.Linear(5 * 3, 2, seed=5)],
                          in_features=2, window=24)


def _case_per_frame_linear_softmax(rng):
    return dse.Sequential([dse.Conv1d(3, 6, 2, seed=1), dse.Linear(6, 4, seed=2), dse.Softmax(),
                           _bn(dse.BatchNorm1d, 4, rng), dse.Conv1d(4, 3, 3, seed=3),
                           dse.Dropout(0.3), dse.Identity(), dse.Flatten()], in_features=3, window=8)


def _case_flatten_strided_head(rng):
    return dse.Sequential([dse.Conv1d(2, 3, 3, stride=2, seed=1), dse.ReLU(), dse.Flatten(),
                           dse.Linear(3 * 4, 4, seed=2), dse.Tanh()], in_features=2, window=10)


def _case_bn_after_pool_and_add(rng):
    return dse.Sequential([dse.Conv1d(3, 4, 2, seed=1), dse.MaxPool1d(2, stride=1),
                           _bn(dse.BatchNorm1d, 4, rng), dse.ReLU6(),
                           dse.Residual([dse.Conv1d(4, 4, 2, seed=2)]), _bn(dse.BatchNorm1d, 4, rng),
                           dse.GlobalMaxPool(), _bn(dse.BatchNorm1d, 4, rng), dse.Sigmoid()],
                          in_features=3, window=9)


def _case_vector_tail_1d(rng):
    # per-vector ops straight after the head, no Linear in between
    return dse.Sequential([dse.Conv1d(3, 4, 3, seed=1), dse.GlobalMaxPool(), dse.Softmax(),
                           _bn(dse.BatchNorm1d, 4, rng), dse.ReLU6(), dse.Linear(4, 2, seed=2)],
                          in_features=3, window=7)


def _case_vector_tail_2d(rng):
    # LastFrame on a 2-D model gives (C, F); BatchNorm2d/activations act on it, Flatten then Softmax
    return dse.Sequential([dse.Conv2d(2, 3, (2, 3), padding=(1, 0), seed=1), dse.LastFrame(),
                           _bn(dse.BatchNorm2d, 3, rng), dse.Tanh(), dse.Flatten(), dse.Softmax()],
                          in_features=(2, 4), window=5)


def _case_extreme_values(rng):
    # all-negative inputs to max pools (a 0 floor or init would show), and logits around
    # +200 into Softmax (exp overflows float32 unless the max is subtracted)
    c1 = dse.Conv1d(2, 3, 2, seed=1)
    c1.bias = np.array([-50.0, -100.0, -1e4])
    lin = dse.Linear(3, 4, seed=2)
    lin.weight = lin.weight * np.array([2.0, 0.1, 1e-4])  # logits spread ~1, not ~1e4
    lin.bias = lin.bias + 200.0
    return dse.Sequential([c1, dse.MaxPool1d(2, stride=1), dse.GlobalMaxPool(), lin, dse.Softmax()],
                          in_features=2, window=9)


def _case_extreme_values_2d(rng):
    c1 = dse.Conv2d(1, 2, (2, 2), padding=(1, 0), seed=1)
    c1.bias = np.array([-30.0, 30.0])
    return dse.Sequential([c1, dse.MaxPool2d(2, stride=(1, 1)), dse.Conv2d(2, 2, 1, seed=2),
                           dse.GlobalMaxPool()], in_features=(1, 4), window=6)


def _case_causal_global_pool(rng):
    # zero padding inside the window read by a global head: forward = torch windows,
    # the stream must refuse (stream-exact, not window-exact).
    return dse.Sequential([dse.Conv1d(2, 4, 3, padding="causal", seed=1), dse.ReLU(),
                           dse.GlobalAvgPool()], in_features=2, window=8)


# -- 2-D
def _case_conv2d_bn_pool(rng):
    return dse.Sequential([dse.Conv2d(2, 6, 3, padding=(1, 0), seed=1), _bn(dse.BatchNorm2d, 6, rng),
                           dse.ReLU(), dse.MaxPool2d(2),
                           dse.Conv2d(6, 6, (2, 3), dilation=(1, 2), groups=3, seed=2), dse.GELU(),
                           dse.GlobalAvgPool(), dse.Linear(6, 4, seed=3), dse.Softmax()],
                          in_features=(2, 8))


def _case_conv2d_causal_lastframe(rng):
    return dse.Sequential([dse.Conv2d(1, 4, (3, 3), padding=(1, "causal"), seed=1), dse.Tanh(),
                           dse.Conv2d(4, 4, (3, 2), padding=(0, "causal"), dilation=(1, 3), groups=4,
                                      seed=2), dse.LastFrame()], in_features=(1, 6), window=12)


def _case_conv2d_lastframe_flatten(rng):
    return dse.Sequential([dse.Conv2d(2, 3, (2, 2), padding=(1, "causal"), seed=1), dse.LeakyReLU(0.05),
                           dse.LastFrame(), dse.Flatten(), dse.Linear(3 * 6, 4, seed=2), dse.HardSwish()],
                          in_features=(2, 5), window=6)


def _case_conv2d_strides_avgpool_flatten(rng):
    return dse.Sequential([dse.Conv2d(2, 4, (3, 2), stride=(2, 2), seed=1), dse.ReLU6(),
                           dse.AvgPool2d((2, 3), stride=(1, 2)), dse.Conv2d(4, 3, (1, 2), seed=2),
                           dse.Flatten()], in_features=(2, 9), window=None)


def _case_conv2d_depthwise_maxhead(rng):
    return dse.Sequential([dse.Conv2d(3, 6, 1, seed=1), dse.Sigmoid(),
                           dse.Conv2d(6, 6, 3, padding=(1, 0), groups=6, dilation=(2, 2), seed=2),
                           _bn(dse.BatchNorm2d, 6, rng), dse.MaxPool2d((1, 2), stride=(1, 1)),
                           dse.GlobalMaxPool(), dse.Linear(6, 3, seed=3)], in_features=(3, 7), window=12)


def _case_conv2d_residual(rng):
    return dse.Sequential([
        dse.Residual([dse.Conv2d(2, 4, 3, padding=(1, "causal"), seed=1), dse.ReLU(),
                      dse.Conv2d(4, 4, (3, 2), padding=(1, 0), dilation=(1, 2), seed=2)],
                     skip=dse.Conv2d(2, 4, 1, seed=3)),
        dse.Residual([dse.Conv2d(4, 4, (1, 3), groups=2, seed=4), dse.GELU("tanh")]),
        dse.Conv2d(4, 2, (2, 1), stride=(2, 1), seed=5)], in_features=(2, 6), window=10)


def _case_conv2d_stride_time_decimated(rng):
    return dse.Sequential([dse.Conv2d(1, 4, (3, 4), stride=(1, 2), padding=(1, 0), seed=1), dse.ReLU(),
                           dse.MaxPool2d((2, 3), stride=(2, 3)), dse.Conv2d(4, 4, (2, 2), seed=2),
                           _bn(dse.BatchNorm2d, 4, rng), dse.Tanh(), dse.GlobalAvgPool()],
                          in_features=(1, 8), window=30)


def _case_conv2d_causal_global(rng):
    return dse.Sequential([dse.Conv2d(1, 2, (1, 3), padding=(0, "causal"), seed=1),
                           dse.GlobalMaxPool()], in_features=(1, 3), window=5)


CASES = {k[len("_case_"):]: v for k, v in globals().items() if k.startswith("_case_")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_explicit_case(case):
    rng = np.random.default_rng(1234)
    model = CASES[case](rng)
    check_model(model, seed=sorted(CASES).index(case), name=case)


ACTIVATIONS = {
    "relu": dse.ReLU, "relu6": dse.ReLU6, "leaky": lambda: dse.LeakyReLU(0.3), "sigmoid": dse.Sigmoid,
    "tanh": dse.Tanh, "hardswish": dse.HardSwish, "hardsigmoid": dse.Hardsigmoid,
    "silu": dse.SiLU, "mish": dse.Mish, "gelu": dse.GELU, "gelu_tanh": lambda: dse.GELU("tanh"),
    "softmax": dse.Softmax,
}


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_each_activation(act):
    """Each activation after a conv (fused), after a pool, after a residual add, and on the vector."""
    model = activation_model(ACTIVATIONS[act])
    check_model(model, seed=7, name=f"act-{act}")


@pytest.mark.parametrize("head", ["none", "last", "avg", "max", "flatten"])
@pytest.mark.parametrize("dims", [1, 2])
def test_each_head(head, dims):
    model = head_model(head, dims)
    check_model(model, seed=3, name=f"head-{head}-{dims}d")


# ----------------------------------------------------------------------------- random cases
_ACT_MAKERS = [dse.ReLU, dse.ReLU6, lambda: dse.LeakyReLU(0.1), dse.Sigmoid, dse.Tanh, dse.HardSwish,
               dse.Hardsigmoid, dse.SiLU, dse.Mish, dse.GELU, lambda: dse.GELU("tanh")]


def _make_random(seed: int, two_d: bool) -> dse.Sequential:
    rng = np.random.default_rng(seed)
    for _ in range(50):
        sub = np.random.default_rng(rng.integers(1 << 31))
        try:
            model = _build_random(sub, two_d)
        except ModelError:
            continue
        # reject degenerate draws (e.g. a ReLU that zeroes everything): their output
        # barely changes from one window to the next, so they cannot catch a time error
        x = _frames(model, np.random.default_rng(0), 24)
        y = torch_windows(model, x)
        moves = np.abs(np.diff(y, axis=0)).reshape(len(y) - 1, -1).max(axis=1)
        if np.mean(moves > 1e-2) < 0.8:
            continue
        return model
    raise AssertionError("no valid random model")  # pragma: no cover


def _random_act(rng):
    return _ACT_MAKERS[int(rng.integers(len(_ACT_MAKERS)))]()


def _random_conv(rng, cin, cout, two_d, seeds, stride_t=1, causal=False, k_max=4):
    """A random Conv1d/Conv2d; groups = 1, a common divisor, or depthwise."""
    divisors = [g for g in range(1, min(cin, cout) + 1) if cin % g == 0 and cout % g == 0]
    g = int(rng.choice(divisors)) if rng.random() < 0.4 else 1
    k = int(rng.integers(1, k_max + 1))
    d = int(rng.integers(1, 4)) if k > 1 else 1
    if two_d:
        kf = int(rng.integers(1, 4))
        return dse.Conv2d(cin, cout, (kf, k),
                          stride=(int(rng.integers(1, 3)), stride_t),
                          padding=(int(rng.integers(0, kf)), "causal" if causal else 0),
                          dilation=(int(rng.integers(1, 3)), d), groups=g, seed=next(seeds))
    return dse.Conv1d(cin, cout, k, stride=stride_t, padding="causal" if causal else "valid",
                      dilation=d, groups=g, seed=next(seeds))


def _build_random(rng, two_d):
    c = int(rng.integers(1, 5))
    f = int(rng.integers(3, 9)) if two_d else None
    layers, total_stride, has_causal = [], 1, False
    seeds = iter(range(1, 1000))
    cur = c
    for _ in range(int(rng.integers(1, 7))):
        kind = str(rng.choice(["conv", "conv", "pool", "res", "res"] + ([] if two_d else ["perframe"])))
        if kind == "conv":
            cout = int(rng.integers(1, 8))
            s = int(rng.choice([1, 1, 2, 3])) if total_stride < 6 else 1
            causal = bool(rng.random() < 0.3)
            layers.append(_random_conv(rng, cur, cout, two_d, seeds, stride_t=s, causal=causal))
            has_causal |= causal
            total_stride *= s
            cur = cout
        elif kind == "pool":
            k = int(rng.integers(1, 5))
            s = int(rng.integers(1, k + 1)) if total_stride < 6 else 1
            mx = bool(rng.random() < 0.5)
            if two_d:
                kf = int(rng.integers(1, 3))
                sf = int(rng.integers(1, kf + 1))
                layers.append((dse.MaxPool2d if mx else dse.AvgPool2d)((kf, k), stride=(sf, s)))
            elif mx:
                layers.append(dse.MaxPool1d(k, stride=s, dilation=int(rng.integers(1, 3))))
            else:
                layers.append(dse.AvgPool1d(k, stride=s))
            total_stride *= s
        elif kind == "perframe":  # 1-D only: per-frame Linear, maybe Softmax over channels
            cout = int(rng.integers(2, 6))
            layers.append(dse.Linear(cur, cout, seed=next(seeds)))
            if rng.random() < 0.4:
                layers.append(dse.Softmax())
            cur = cout
        else:  # residual block: 1-2 convs (feature size kept in 2-D), identity or 1x1 skip
            cout = int(rng.integers(1, 6))
            causal = bool(rng.random() < 0.5)
            has_causal |= causal
            body, mid = [], cur
            for j in range(int(rng.integers(1, 3))):
                out = cout if j == 1 or rng.random() < 0.5 else int(rng.integers(1, 6))
                conv = _random_conv(rng, mid, out, two_d, seeds, causal=causal)
                if two_d:  # keep the feature count: odd feature kernel, 'same' feature padding
                    kf = int(rng.choice([1, 3]))
                    conv = dse.Conv2d(mid, out, (kf, conv.kernel_size[1]),
                                      padding=((kf - 1) // 2, "causal" if causal else 0),
                                      dilation=(1, conv.dilation[1]), groups=conv.groups, seed=next(seeds))
                body.append(conv)
                if rng.random() < 0.3:
                    body.append(_bn(dse.BatchNorm2d if two_d else dse.BatchNorm1d, out, rng))
                if rng.random() < 0.6:
                    body.append(_random_act(rng))
                mid = out
            if mid != cout:
                body.append((dse.Conv2d if two_d else dse.Conv1d)(mid, cout, 1, seed=next(seeds)))
            skip = (dse.Conv2d if two_d else dse.Conv1d)(cur, cout, 1, bias=bool(rng.random() < 0.5),
                                                        seed=next(seeds))
            if cout == cur and rng.random() < 0.6:
                skip = None
            layers.append(dse.Residual(body, skip=skip))
            cur = cout
        if rng.random() < 0.3:
            layers.append(_bn(dse.BatchNorm2d if two_d else dse.BatchNorm1d, cur, rng))
        if rng.random() < 0.6:
            layers.append(_random_act(rng))
    head = str(rng.choice(["none", "last", "avg", "max", "flatten"]))
    if has_causal and head in ("avg", "max", "flatten") and rng.random() < 0.75:
        head = "last"  # mostly keep causal models streamable
    layers += {"none": [], "last": [dse.LastFrame()], "avg": [dse.GlobalAvgPool()],
               "max": [dse.GlobalMaxPool()], "flatten": [dse.Flatten()]}[head]
    in_features = (c, f) if two_d else c
    probe = dse.Sequential(layers, in_features=in_features)
    # Mostly a window >= the receptive field (so causal models stream window-exactly);
    # sometimes the smallest window that fits (causal padding then reaches the head).
    base = probe.window if rng.random() < 0.15 else max(probe.window, probe.receptive_field)
    window = base + int(rng.integers(0, 2 * probe.hop + 2))
    model = dse.Sequential(layers, in_features=in_features, window=window)
    # optional vector tail: Linear (+ activation/Softmax) on a 1-D output
    if len(model.output_shape) == 1 and head != "none" and rng.random() < 0.7:
        n = model.output_shape[0]
        r = rng.random()
        tail = [dse.Linear(n, int(rng.integers(2 if r < 0.3 else 1, 5)), seed=next(seeds))]
        if r < 0.3:  # Softmax over >= 2 channels (over 1 it is constant)
            tail.append(dse.Softmax())
        elif r < 0.6:
            tail.append(_random_act(rng))
        model = dse.Sequential(layers + tail, in_features=in_features, window=window)
    return model


RANDOM_SEEDS = list(range(60))


@pytest.mark.parametrize("two_d", [False, True], ids=["1d", "2d"])
@pytest.mark.parametrize("seed", RANDOM_SEEDS)
def test_random_model(seed, two_d):
    model = _make_random(1000 + seed, two_d)
    check_model(model, seed=seed, name=f"random-{seed}-{'2d' if two_d else '1d'}")


def test_default_window_is_receptive_field_for_causal_tcn():
    layers = [dse.Conv1d(2, 4, 3, padding="causal", seed=1)] + [
        dse.Residual([dse.Conv1d(4, 4, 3, padding="causal", dilation=d, seed=10 + d), dse.ReLU()])
        for d in (1, 2, 4)]
    model = dse.Sequential(layers + [dse.LastFrame()], in_features=2)  # window: the default
    assert model.receptive_field == 1 + 2 * (1 + 1 + 2 + 4)
    assert model.window >= model.receptive_field, (model.window, model.receptive_field)
    check_model(model, name="default-window-tcn")  # streams, and equals torch on W-frame windows


def test_print_max_errors():
    """Runs last (file order): prints the max error of each comparison kind (pytest -s)."""
    kinds = {}
    for key, (err, used) in _MAX_ERR.items():
        kind = key.rsplit(":", 1)[1]
        e, u = kinds.get(kind, (0.0, 0.0))
        kinds[kind] = (max(e, err), max(u, used))
    print("\nmax |error| (fraction of tolerance used) by comparison:",
          ", ".join(f"{k}: {e:.3g} ({u:.2f})" for k, (e, u) in sorted(kinds.items())))
