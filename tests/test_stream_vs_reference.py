"""The stream contract (docs/semantics.md): streaming equals the offline reference.

For a model with window ``W``, ``model.forward(x)`` row ``i`` is the network run on
``x[i : i+W]``, i.e. the output at frame ``t = i + W - 1``. A stream must return

* ``mode='dense'``: an output for every frame ``t >= W-1``, equal to ``forward(x)[t-W+1]``;
* ``mode='decimated'``: outputs exactly at the frames ``t >= W-1`` with
  ``(t - (W-1)) % model.hop == 0``, equal to the same reference rows;
* ``None`` at every other frame.

Values are compared float32 (stream) against float64 (reference) with

    |got - ref| <= RTOL * |ref| + ATOL_REL * max|reference| + ATOL_FLOOR

The observed error on the generated models is ~3e-7 of the output scale, so this
leaves a wide margin for float32 rounding while a wrong frame, phase or tap, which
moves the output by O(scale), fails by orders of magnitude. Several tests below
check exactly that: the comparison *fails* against a shifted reference, a wrong
phase, reversed taps or one weight perturbed by 1%.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

import deepshift_edge as dse
from deepshift_edge import NotStreamableError

from strategies import (HEADS, cases, expected_output_frames, has_time_padding, push_all,
                        randomize)

RTOL = 1e-4
ATOL_REL = 1e-4
ATOL_FLOOR = 1e-7
MODES = ("dense", "decimated")

HYPO = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                   HealthCheck.filter_too_much])


# ---------------------------------------------------------------------------- comparison helpers
def abs_tolerance(ref: np.ndarray) -> float:
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    return ATOL_REL * scale + ATOL_FLOOR


def hop_of(model, mode: str) -> int:
    return 1 if mode == "dense" else model.hop


def compare_outputs(outs: dict, ref: np.ndarray, model, mode: str, n_frames: int,
                    shift: int = 0) -> float:
    """Assert that ``outs`` ({frame: output}) is exactly what the contract asks for.

    ``shift`` compares frame t with reference row ``t - W + 1 + shift`` instead (used
    only by the tests that show this comparison can fail). Returns the worst
    error/tolerance ratio (<= 1 when it passes).
    """
    w = model.window
    want = expected_output_frames(n_frames, w, hop_of(model, mode))
    assert sorted(outs) == want, (f"{mode}: outputs at frames {sorted(outs)}, expected {want} "
                                  f"(W={w}, hop={model.hop})")
    atol = abs_tolerance(ref)
    worst = 0.0
    for t in want:
        row = t - w + 1 + shift
        if 0 <= row < len(ref):
            assert outs[t].shape == tuple(model.output_shape), (outs[t].shape, model.output_shape)
            worst = max(worst, assert_close(outs[t], ref[row], atol, f"{mode}: frame t={t} (reference "
                                            f"row {row}, W={w}, hop={model.hop})"))
    return worst


def assert_close(got: np.ndarray, exp: np.ndarray, atol: float, what: str) -> float:
    """|got - exp| <= RTOL*|exp| + atol elementwise (NaN fails); returns the worst error/bound."""
    assert got.shape == exp.shape, (what, got.shape, exp.shape)
    err = np.abs(got.astype(np.float64) - exp)
    bound = RTOL * np.abs(exp) + atol
    if not np.all(err <= bound):
        i = np.unravel_index(np.argmax(np.where(np.isnan(err), np.inf, err - bound)), err.shape)
        raise AssertionError(f"{what} differs at index {tuple(map(int, i))}: stream {got[i]!r}, "
                             f"reference {exp[i]!r}, |diff| {err[i]:.3g} > tolerance {bound[i]:.3g}")
    return float(np.max(err / bound)) if err.size else 0.0


def check_stream(model, x: np.ndarray, mode: str, ref: np.ndarray = None, block: int = 1) -> float:
    """Push ``x`` frame by frame through a fresh stream and compare with the reference.

    ``block=1`` (the default here) sizes every ring buffer exactly for its readers (larger
    blocks add rows for push_many), so a ring one row too short shows up.
    """
    if ref is None:
        ref = model.forward(x)
    stream = model.stream(mode=mode, block=block)
    assert stream.window == model.window
    assert stream.hop == hop_of(model, mode)
    outs = {}
    for t in range(len(x)):
        y = stream.push(x[t])
        assert stream.frames == t + 1
        if y is not None:
            assert isinstance(y, np.ndarray) and y.dtype == np.float32
            assert y.shape == tuple(model.output_shape)
            assert bool(stream.ready[0])
            outs[t] = y.copy()
        else:
            assert not bool(stream.ready[0])
    return compare_outputs(outs, ref, model, mode, len(x))


def check_push_many(model, x: np.ndarray, mode: str, ref: np.ndarray = None, block: int = 64) -> float:
    """The whole sequence in one push_many (op by op over blocks of ``block`` frames)."""
    if ref is None:
        ref = model.forward(x)
    stream = model.stream(mode=mode, block=block)
    got = stream.push_many(x)
    frames = expected_output_frames(len(x), model.window, hop_of(model, mode))
    assert got.shape == (len(frames),) + tuple(model.output_shape) and got.dtype == np.float32
    assert stream.frames == len(x)
    return compare_outputs(dict(zip(frames, got)), ref, model, mode, len(x))


def shift_would_be_detected(ref: np.ndarray) -> bool:
    """True when adjacent reference rows differ by far more than the tolerance."""
    if len(ref) < 2:
        return False
    diff = float(np.max(np.abs(np.diff(ref, axis=0))))
    return diff > 20 * (abs_tolerance(ref) + RTOL * float(np.max(np.abs(ref))))


def check_case(case) -> None:
    model, x = case.model, case.x
    note(repr(case))
    event(f"head={case.head}, hop>1={model.hop > 1}, equivalence={model.equivalence}")
    if not case.streamable:
        # zero padding inside the window reaches what the head reads: must refuse, not differ
        for mode in MODES:
            with pytest.raises(NotStreamableError):
                model.stream(mode=mode)
        return
    ref = model.forward(x)
    assert ref.shape == (len(x) - model.window + 1,) + tuple(model.output_shape)
    assert np.isfinite(ref).all()
    for mode in MODES:
        check_stream(model, x, mode, ref, block=1)
        # one push_many over the whole sequence; internal block 1..9 or the default 64
        check_push_many(model, x, mode, ref, block=case.seed % 9 + 1 if case.seed % 3 else 64)
    if shift_would_be_detected(ref):
        # the same comparison, one frame off, must fail: the tolerance is tight enough
        outs = push_all(model.stream(), x)
        for shift in (-1, 1):
            with pytest.raises(AssertionError, match="differs"):
                compare_outputs(outs, ref, model, "dense", len(x), shift=shift)


# ---------------------------------------------------------------------------- property tests
# One test per (frame kind, head) so every head gets its share of examples (Hypothesis's
# choices are far from uniform); ~24 examples each, 240 in all.
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("dims", [1, 2])
@settings(max_examples=24, **HYPO)
@given(data=st.data())
def test_random_models_stream_equals_reference(dims, head, data):
    check_case(data.draw(cases(dims=(dims,), heads=(head,)), label="case"))


@settings(max_examples=30, **HYPO)
@given(case=cases(heads=("none", "last"), force_causal=True))
def test_random_causal_models_with_last_frame_head(case):
    """Causal TCN-style stacks read only the newest position: window-exact once the window
    covers the receptive field (the generator lengthens it), and then equal to the reference."""
    check_case(case)


@settings(max_examples=30, **HYPO)
@given(case=cases(heads=("avg", "max", "flatten"), force_causal=True, max_body=3))
def test_causal_padding_under_whole_window_head_streams_exactly(case):
    """Zero padding inside the window that the head sees is part of Net(window): the strips
    it reaches are recomputed for every window, so these stream exactly too."""
    assert case.model.equivalence == "window-exact"
    check_case(case)


# ---------------------------------------------------------------------------- explicit edge cases
def _flatten_linear(stack, in_features, window, n_out, tail=()):
    """stack + [Linear(flattened size, n_out), *tail]; the size depends on the window."""
    probe = dse.Sequential(stack, in_features, window)
    return dse.Sequential(list(stack) + [dse.Linear(int(np.prod(probe.output_shape)), n_out)]
                          + list(tail), in_features, window)


def _m(layers, in_features, window=None):
    return dse.Sequential(layers, in_features, window)


EDGE_CASES = {
    # kernel 1 (per-frame convs), with and without extra window
    "kernel1": lambda: _m([dse.Conv1d(3, 2, 1), dse.ReLU(), dse.Conv1d(2, 2, 1, bias=False)], 3),
    "kernel1-window6": lambda: _m([dse.Conv1d(3, 2, 1), dse.GlobalAvgPool()], 3, 6),
    "kernel1-stride3": lambda: _m([dse.Conv1d(2, 3, 1, stride=3), dse.Conv1d(3, 2, 2),
                                   dse.GlobalAvgPool()], 2),
    # stride larger than the kernel, conv and pool
    "stride>kernel": lambda: _flatten_linear(
        [dse.Conv1d(2, 3, 2, stride=3), dse.ReLU(), dse.MaxPool1d(2, stride=3), dse.Conv1d(3, 2, 1),
         dse.Flatten()], 2, 23, 3),
    "avgpool-stride!=kernel": lambda: _m([dse.AvgPool1d(3, stride=2), dse.Conv1d(2, 2, 2),
                                          dse.AvgPool1d(2, stride=3), dse.GlobalMaxPool()], 2),
    "maxpool-dilated-stride1": lambda: _m([dse.MaxPool1d(3, stride=1, dilation=3), dse.Conv1d(2, 1, 2)], 2),
    # dilation larger than the (window of the) later layers; effective kernel == window
    "dilation>later-window": lambda: _m([dse.Conv1d(2, 3, 2, stride=2), dse.Conv1d(3, 2, 3, dilation=6),
                                        dse.GlobalMaxPool()], 2),
    "dilation9-then-k3": lambda: _m([dse.Conv1d(1, 2, 2, dilation=9), dse.Conv1d(2, 1, 3)], 1),
    "dilation-eff-kernel-is-window": lambda: _m([dse.Conv1d(2, 2, 3, dilation=11), dse.Flatten()], 2),
    "dilation-after-stride4": lambda: _m([dse.Conv1d(2, 2, 1, stride=4), dse.Conv1d(2, 2, 2, dilation=5),
                                         dse.LastFrame()], 2, 25),
    # groups, depthwise, channel multiplier
    "groups": lambda: _m([dse.Conv1d(4, 6, 3, groups=2), dse.ReLU(), dse.Conv1d(6, 3, 2, groups=3, bias=False),
                          dse.GlobalAvgPool()], 4, 9),
    "depthwise": lambda: _m([dse.Conv1d(3, 3, 3, groups=3), dse.Tanh()], 3),
    "depthwise-multiplier": lambda: _m([dse.Conv1d(3, 6, 2, dilation=2, groups=3), dse.Conv1d(6, 6, 3, groups=6),
                                       dse.GlobalAvgPool()], 3),
    "depthwise-strided-causal": lambda: _m([dse.Conv1d(3, 3, 3, groups=3, stride=2, padding="causal"),
                                           dse.LastFrame()], 3, 9),
    "groups-2d": lambda: _m([dse.Conv2d(4, 4, (3, 2), padding=(1, 0), groups=2),
                             dse.Conv2d(4, 8, (1, 2), groups=4), dse.GlobalMaxPool()], (4, 3)),
    # one channel, one feature
    "one-channel": lambda: _m([dse.Conv1d(1, 1, 4, dilation=3), dse.Sigmoid()], 1),
    "one-channel-2d-one-feature": lambda: _m([dse.Conv2d(1, 1, (1, 3)), dse.LastFrame()], (1, 1)),
    "one-channel-2d-feature-pad": lambda: _m([dse.Conv2d(1, 1, 3, padding=(1, 0)), dse.Flatten()], (1, 1)),
    # odd windows with strides (several phases of the pooling grid)
    "odd-window-7": lambda: _m([dse.Conv1d(2, 2, 3, stride=2), dse.AvgPool1d(2, stride=1),
                                dse.GlobalAvgPool()], 2, 7),
    "odd-window-9": lambda: _m([dse.Conv1d(2, 2, 3, stride=2), dse.AvgPool1d(2, stride=1),
                                dse.GlobalAvgPool()], 2, 9),
    "odd-window-13": lambda: _m([dse.Conv1d(2, 2, 3, stride=2), dse.AvgPool1d(2, stride=1),
                                 dse.GlobalAvgPool()], 2, 13),
    "odd-window-flatten-hop4": lambda: _flatten_linear(
        [dse.Conv1d(2, 2, 2, stride=2), dse.MaxPool1d(2), dse.Flatten()], 2, 15, 2, [dse.Softmax()]),
    # 2-D: feature padding, stride, dilation; pools; (C, F) output
    "2d-feature-pad-stride": lambda: _flatten_linear(
        [dse.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 0)), dse.ReLU(), dse.MaxPool2d((2, 2)),
         dse.Conv2d(3, 2, (2, 2), dilation=(1, 2), padding=(2, 0)), dse.Flatten()], (2, 7), None, 3),
    "2d-feature-dilation-time-stride": lambda: _m(
        [dse.Conv2d(2, 2, (2, 3), dilation=(2, 1), stride=(1, 2)), dse.BatchNorm2d(2), dse.GELU(),
         dse.AvgPool2d((1, 2), stride=(1, 1)), dse.GlobalMaxPool()], (2, 5)),
    "2d-pad-wider-than-kernel": lambda: _m([dse.Conv2d(1, 2, (2, 2), padding=(3, 0)), dse.LastFrame()],
                                           (1, 2)),
    "2d-kernel1-feature-pad": lambda: _m([dse.Conv2d(2, 3, (1, 2), padding=(1, 0)), dse.ReLU(),
                                          dse.Conv2d(3, 2, (1, 1), stride=(2, 1), padding=(2, 0)),
                                          dse.Flatten()], (2, 1), 3),
    "2d-output-only-in-padding": lambda: _m([dse.Conv2d(2, 3, (1, 2)),
                                             dse.Conv2d(3, 2, (1, 1), stride=(3, 1), padding=(1, 0)),
                                             dse.LastFrame()], (2, 1)),
    "2d-avgpool-stride-over-features": lambda: _m(
        [dse.AvgPool2d((2, 3), stride=(3, 2)), dse.Conv2d(2, 2, (1, 2)), dse.GlobalAvgPool()], (2, 7)),
    "2d-lastframe-CF-output": lambda: _m([dse.Conv2d(2, 3, (3, 2), padding=(1, 0)), dse.LastFrame(),
                                          dse.BatchNorm2d(3), dse.HardSwish()], (2, 5)),
    "2d-lastframe-flatten-linear": lambda: _m(
        [dse.Conv2d(2, 2, (2, 2), stride=(2, 2)), dse.LastFrame(), dse.Flatten(), dse.Linear(4, 3),
         dse.Softmax()], (2, 5), 6),
    "2d-causal-lastframe": lambda: _m(
        [dse.Conv2d(2, 2, (1, 3), padding=(0, "causal")),
         dse.Conv2d(2, 2, (3, 2), stride=(1, 2), padding=(1, "causal")), dse.LastFrame()], (2, 4), 8),
    # residual blocks: valid body (right-aligned crop of the skip), causal body
    "residual-valid-identity": lambda: _m(
        [dse.Conv1d(2, 3, 1), dse.Residual([dse.Conv1d(3, 3, 3), dse.ReLU(), dse.Conv1d(3, 3, 2, dilation=2)]),
         dse.GlobalAvgPool()], 2),
    "residual-valid-conv-skip-flatten": lambda: _m(
        [dse.Residual([dse.Conv1d(2, 4, 3), dse.BatchNorm1d(4)], skip=dse.Conv1d(2, 4, 1)), dse.Flatten()],
        2, 6),
    "residual-valid-window-larger": lambda: _m(
        [dse.Residual([dse.Conv1d(2, 2, 3, dilation=2), dse.Tanh()]), dse.Residual([dse.Conv1d(2, 2, 2)]),
         dse.GlobalMaxPool()], 2, 11),
    "residual-causal-body": lambda: _m(
        [dse.Residual([dse.Conv1d(2, 3, 3, padding="causal"), dse.ReLU(),
                       dse.Conv1d(3, 3, 2, dilation=2, padding="causal")], skip=dse.Conv1d(2, 3, 1)),
         dse.LastFrame()], 2, 5),
    "residual-causal-stack": lambda: _m(
        [dse.Conv1d(2, 3, 1),
         dse.Residual([dse.Conv1d(3, 3, 2, dilation=1, padding="causal"), dse.ReLU()]),
         dse.Residual([dse.Conv1d(3, 3, 2, dilation=2, padding="causal"), dse.ReLU()]),
         dse.Residual([dse.Conv1d(3, 3, 2, dilation=4, padding="causal"), dse.ReLU()]),
         dse.LastFrame(), dse.Linear(3, 2)], 2, 8),
    "residual-after-stride": lambda: _m(
        [dse.Conv1d(2, 2, 2, stride=2), dse.Residual([dse.Conv1d(2, 2, 3), dse.Tanh()]),
         dse.GlobalMaxPool()], 2, 11),
    "residual-linear-skip": lambda: _m(
        [dse.Residual([dse.Conv1d(2, 3, 2), dse.ReLU()], skip=dse.Linear(2, 3)), dse.LastFrame()], 2),
    "residual-2d": lambda: _m(
        [dse.Residual([dse.Conv2d(2, 3, (3, 2), padding=(1, 0)), dse.ReLU()], skip=dse.Conv2d(2, 3, 1)),
         dse.GlobalAvgPool()], (2, 4)),
    # per-frame layers, window 1, no layers at all
    "per-frame-linear-softmax": lambda: _m([dse.Linear(3, 4), dse.Softmax(), dse.Conv1d(4, 2, 2)], 3),
    "window1-relu": lambda: _m([dse.ReLU()], 2),
    "empty-1d": lambda: _m([], 3),
    "empty-2d": lambda: _m([], (2, 3)),
    "empty-window5-avg": lambda: _m([dse.GlobalAvgPool()], (2, 3), 5),
    "head-then-bn-act": lambda: _m([dse.Conv1d(2, 3, 2), dse.GlobalAvgPool(), dse.BatchNorm1d(3),
                                    dse.LeakyReLU(0.2), dse.Linear(3, 2), dse.Sigmoid()], 2, 4),
}


def _edge_input(model, seed):
    rng = np.random.default_rng(seed)
    n = model.window - 1 + 3 * model.hop + 5 + model.window  # rings wrap at least once
    return rng.standard_normal((n,) + model.frame_shape).astype(np.float32)


def _edge_model(name):
    model = EDGE_CASES[name]()
    seed = zlib.crc32(name.encode())
    randomize(model, np.random.default_rng(seed))
    return model, _edge_input(model, seed + 1)


PATHS = {
    "push": lambda model, x, mode: check_stream(model, x, mode, block=1),
    "push-block64": lambda model, x, mode: check_stream(model, x, mode, block=64),
    "push_many-block4": lambda model, x, mode: check_push_many(model, x, mode, block=4),
    "push_many-block64": lambda model, x, mode: check_push_many(model, x, mode, block=64),
}


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_edge_case_stream_equals_reference(name, mode, path):
    model, x = _edge_model(name)
    assert model.equivalence == "window-exact", model._why_not_window_exact
    PATHS[path](model, x, mode)


ACTIVATIONS = [dse.ReLU(), dse.ReLU6(), dse.LeakyReLU(), dse.LeakyReLU(-0.3), dse.Sigmoid(), dse.Tanh(),
               dse.HardSwish(), dse.GELU(), dse.GELU(approximate="tanh"), dse.Softmax(), dse.Identity(),
               dse.Dropout(0.2)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("act", ACTIVATIONS, ids=repr)
def test_each_activation_before_and_after_head(act, mode):
    """Fused into a conv epilogue, after a pool (copy op) and after the head; inputs scaled so
    every activation sees both its saturated and its linear range."""
    model = _m([dse.Conv1d(2, 4, 2, stride=2), act, dse.MaxPool1d(2, stride=1), act, dse.GlobalAvgPool(),
                dse.Linear(4, 3), act], 2, 9)
    randomize(model, np.random.default_rng(7))
    x = _edge_input(model, 8) * 4
    check_stream(model, x, mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("head", [dse.LastFrame, dse.GlobalAvgPool, dse.GlobalMaxPool, dse.Flatten])
@pytest.mark.parametrize("window", [None, 14, 15, 16, 17])
def test_heads_after_strided_body_every_window_phase(head, window, mode):
    """hop 4: windows 14..17 put the last pooling position at every phase of the grid."""
    stack = [dse.Conv1d(2, 3, 3, stride=2), dse.ReLU(), dse.AvgPool1d(3, stride=2), head()]
    model = _flatten_linear(stack, 2, window, 2, [dse.Softmax()])
    randomize(model, np.random.default_rng(11))
    assert model.hop == 4
    check_stream(model, _edge_input(model, 12), mode)


@pytest.mark.parametrize("name", ["odd-window-flatten-hop4", "residual-causal-stack", "2d-feature-pad-stride",
                                  "dilation-after-stride4", "odd-window-13", "groups",
                                  "2d-feature-dilation-time-stride"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", ["push", "push_many"])
def test_long_stream_matches_reference_at_sampled_frames(name, mode, path):
    """Thousands of frames (every ring wraps many times): sampled outputs still equal the
    offline network run on their window."""
    model, _ = _edge_model(name)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3000,) + model.frame_shape).astype(np.float32)
    want = expected_output_frames(len(x), model.window, hop_of(model, mode))
    if path == "push":
        outs = push_all(model.stream(mode=mode, block=1), x)
    else:
        stream = model.stream(mode=mode, block=5)
        got = np.concatenate([stream.push_many(x[i:i + 333]) for i in range(0, len(x), 333)])
        outs = dict(zip(want, got))
    assert sorted(outs) == want
    picks = sorted(set(rng.choice(want, size=25, replace=False).tolist()) | {want[0], want[-1]})
    w = model.window
    ref = np.stack([model.forward_window(x[t - w + 1:t + 1]) for t in picks])
    atol = abs_tolerance(ref)
    for t, exp in zip(picks, ref):
        assert_close(outs[t], exp, atol, f"{mode}: frame t={t}")


# ---------------------------------------------------------------------------- padding the head reads
PADDING_THE_HEAD_READS = {
    "causal-global-avg": lambda: _m([dse.Conv1d(2, 2, 3, padding="causal"), dse.GlobalAvgPool()], 2, 8),
    "causal-global-max-2d": lambda: _m([dse.Conv2d(2, 2, (1, 2), padding=(0, "causal")), dse.GlobalMaxPool()],
                                       (2, 3), 6),
    "causal-then-valid-flatten": lambda: _m([dse.Conv1d(2, 2, 2, padding="causal"), dse.Conv1d(2, 2, 3),
                                             dse.Flatten()], 2, 7),
    "causal-residual-global": lambda: _m([dse.Residual([dse.Conv1d(2, 2, 3, padding="causal")]),
                                          dse.GlobalAvgPool()], 2, 9),
    "causal-last-frame-window-too-short": lambda: _m([dse.Conv1d(2, 2, 3, dilation=2, padding="causal"),
                                                      dse.LastFrame()], 2, 4),
}


@pytest.mark.parametrize("name", sorted(PADDING_THE_HEAD_READS))
def test_zero_padding_seen_by_the_head_streams_exactly(name):
    """Models the engine used to refuse: every window sees its own zeros at its edges."""
    model = PADDING_THE_HEAD_READS[name]()
    assert model.equivalence == "window-exact"
    randomize(model, np.random.default_rng(7))
    x = _edge_input(model, 5)
    for mode in MODES:
        check_stream(model, x, mode)
        check_push_many(model, x, mode, block=3)


def test_causal_last_frame_streams_exactly_below_and_at_receptive_field():
    stack = [dse.Conv1d(2, 2, 3, dilation=2, padding="causal"), dse.LastFrame()]
    for window in (4, 5):  # 5 is the receptive field: the newest position sees no padding
        model = _m(stack, 2, window)
        assert model.receptive_field == 5 and model.equivalence == "window-exact"
        randomize(model, np.random.default_rng(3))
        for mode in MODES:
            check_stream(model, _edge_input(model, 4), mode)


def test_default_window_of_causal_model_is_its_receptive_field():
    model = _m([dse.Conv1d(1, 1, 3, padding="causal"), dse.LastFrame()], 1)
    assert model.receptive_field == 3
    assert model.window >= model.receptive_field
    assert model.equivalence == "window-exact"
    model.stream()


# ---------------------------------------------------------------------------- the tests can fail
SENSITIVE = ["odd-window-13", "stride>kernel", "2d-feature-pad-stride", "residual-causal-body", "groups",
             "dilation>later-window"]


@pytest.mark.parametrize("name", SENSITIVE)
def test_comparison_rejects_off_by_one_frame(name):
    model, x = _edge_model(name)
    ref = model.forward(x)
    assert shift_would_be_detected(ref)
    outs = push_all(model.stream(), x)
    compare_outputs(outs, ref, model, "dense", len(x))  # the right rows match ...
    for shift in (-1, 1):  # ... rows one frame early or late do not
        with pytest.raises(AssertionError, match="differs"):
            compare_outputs(outs, ref, model, "dense", len(x), shift=shift)


@pytest.mark.parametrize("name", ["odd-window-13", "stride>kernel", "dilation-after-stride4"])
def test_comparison_rejects_wrong_decimation_phase(name):
    model, x = _edge_model(name)
    assert model.hop > 1
    ref = model.forward(x)
    outs = push_all(model.stream(mode="decimated"), x)
    compare_outputs(outs, ref, model, "decimated", len(x))
    for shift in range(1, model.hop):  # same frames, values of another phase of the grid
        with pytest.raises(AssertionError, match="differs"):
            compare_outputs(outs, ref, model, "decimated", len(x), shift=shift)
    moved = {t + 1: y for t, y in outs.items() if t + 1 < len(x)}  # outputs on the wrong frames
    with pytest.raises(AssertionError, match="outputs at frames"):
        compare_outputs(moved, ref, model, "decimated", len(x))


def test_comparison_rejects_reversed_taps_and_small_weight_error():
    """A kernel reading its taps in the wrong order, or one weight off by 1%, is caught."""
    model = _m([dse.Conv1d(2, 3, 3, dilation=2), dse.ReLU(), dse.Conv1d(3, 2, 2), dse.GlobalAvgPool()], 2, 10)
    randomize(model, np.random.default_rng(21))
    x = _edge_input(model, 22)
    outs = push_all(model.stream(), x)
    compare_outputs(outs, model.forward(x), model, "dense", len(x))

    conv = model.layers[0]
    original = conv.weight.copy()
    conv.weight = original[..., ::-1]
    with pytest.raises(AssertionError, match="differs"):
        compare_outputs(outs, model.forward(x), model, "dense", len(x))
    bumped = original.copy()
    bumped.flat[np.argmax(np.abs(bumped))] *= 1.01  # one weight off by 1%
    conv.weight = bumped
    with pytest.raises(AssertionError, match="differs"):
        compare_outputs(outs, model.forward(x), model, "dense", len(x))
    conv.weight = original
    compare_outputs(outs, model.forward(x), model, "dense", len(x))


def test_comparison_rejects_wrong_output_frames_and_nan():
    model, x = _edge_model("groups")
    ref = model.forward(x)
    outs = push_all(model.stream(), x)
    missing = dict(outs)
    missing.pop(max(missing))
    with pytest.raises(AssertionError, match="outputs at frames"):
        compare_outputs(missing, ref, model, "dense", len(x))
    early = dict(outs)
    early[model.window - 2] = outs[model.window - 1]
    with pytest.raises(AssertionError, match="outputs at frames"):
        compare_outputs(early, ref, model, "dense", len(x))
    nan = {t: y.copy() for t, y in outs.items()}
    nan[max(nan)][0] = np.nan
    with pytest.raises(AssertionError, match="differs"):
        compare_outputs(nan, ref, model, "dense", len(x))
