"""The TFLite export (``deepshift_edge.convert.tflite_export.to_tflite``) run by LiteRT equals the
float64 NumPy reference ``model.forward`` on every window.

The .tflite bytes are written without TensorFlow (flatbuffers + the schema code that
ai-edge-litert ships); these tests run them in ``ai_edge_litert.interpreter`` (one
thread, its default XNNPACK delegate) and skip when it is not installed. Models are the
random architectures of ``strategies.py`` (every layer kind, strides, dilations, groups,
causal/valid, 1-D and 2-D, every head), explicit cases for each op mapping, and the four
bench models. Tolerance as in test_stream_vs_reference: LiteRT computes in float32.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import deepshift_edge as dse
from deepshift_edge.data import examples
from deepshift_edge.nn import layers as L
from deepshift_edge.convert.tflite_export import to_tflite

from strategies import HEADS, activation_model, cases, head_model, randomize

RTOL = 1e-4
ATOL_REL = 1e-4
ATOL_FLOOR = 1e-7
HYPO = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                   HealthCheck.filter_too_much])


def _interpreter(model):
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    pytest.importorskip("flatbuffers")
    interp = litert.Interpreter(model_content=to_tflite(model), num_threads=1)
    interp.allocate_tensors()
    return interp


def run_litert(model, x: np.ndarray) -> np.ndarray:
    """LiteRT on every window x[i : i+W]: (T-W+1, *output_shape), like model.forward."""
    interp = _interpreter(model)
    (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
    w = model.window
    assert tuple(inp["shape"]) == (1, w) + tuple(model.frame_shape)
    assert tuple(out["shape"]) == (1,) + tuple(model.output_shape)
    rows = []
    for i in range(len(x) - w + 1):
        interp.set_tensor(inp["index"], np.ascontiguousarray(x[i:i + w][None], dtype=np.float32))
        interp.invoke()
        rows.append(interp.get_tensor(out["index"])[0].copy())
    return np.array(rows).reshape((-1,) + tuple(model.output_shape))


def assert_matches_reference(model, x, shift_check=True):
    got = run_litert(model, x)
    ref = model.forward(x)
    atol = ATOL_REL * float(np.max(np.abs(ref), initial=0.0)) + ATOL_FLOOR
    err = np.abs(got - ref)
    bound = RTOL * np.abs(ref) + atol
    assert np.all(err <= bound), (f"LiteRT differs from the reference: max |error| {err.max():.3g}, "
                                  f"worst error/tolerance {np.max(err / bound):.3g}\n{model!r}")
    if shift_check and len(ref) >= 2:
        # when adjacent windows differ clearly, the comparison one window off must fail
        moves = np.abs(np.diff(ref, axis=0))
        if moves.max() > 20 * (atol + RTOL * np.abs(ref).max()):
            assert not np.all(np.abs(got[1:] - ref[:-1]) <= bound[:-1])
    return float(err.max(initial=0.0))


def _frames(model, seed=0, extra=6, scale=1.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((model.window + extra,) + tuple(model.frame_shape)) * scale).astype(np.float32)


# ----------------------------------------------------------------------------- random architectures
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("dims", [1, 2])
@settings(max_examples=15, **HYPO)
@given(data=st.data())
def test_random_models_match_reference(dims, head, data):
    pytest.importorskip("ai_edge_litert.interpreter")
    case = data.draw(cases(dims=(dims,), heads=(head,), legacy=True), label="case")
    note(repr(case))
    assert_matches_reference(case.model, case.x[:case.model.window + 8])


@settings(max_examples=20, **HYPO)
@given(case=cases(heads=("none", "last"), force_causal=True, legacy=True))
def test_random_causal_models_match_reference(case):
    pytest.importorskip("ai_edge_litert.interpreter")
    note(repr(case))
    assert_matches_reference(case.model, case.x[:case.model.window + 8])


# ----------------------------------------------------------------------------- each mapping
ACTIVATIONS = {
    "relu": dse.ReLU, "relu6": dse.ReLU6, "leaky": lambda: dse.LeakyReLU(0.2),
    "leaky_negative": lambda: dse.LeakyReLU(-0.5), "leaky_steep": lambda: dse.LeakyReLU(1.5),
    "sigmoid": dse.Sigmoid, "tanh": dse.Tanh, "hardswish": dse.HardSwish, "gelu": dse.GELU,
    "gelu_tanh": lambda: dse.GELU("tanh"), "softmax": dse.Softmax, "silu": dse.SiLU,
    "hardsigmoid": dse.Hardsigmoid, "mish": dse.Mish,
}


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_each_activation(act):
    """After a conv (fused for ReLU/ReLU6), a pool, a residual add, and on the vector."""
    model = activation_model(ACTIVATIONS[act])
    assert_matches_reference(model, _frames(model, scale=2.0))


@pytest.mark.parametrize("head", ["none", "last", "avg", "max", "flatten"])
@pytest.mark.parametrize("dims", [1, 2])
def test_each_head(head, dims):
    model = head_model(head, dims)
    assert_matches_reference(model, _frames(model))


def _bn(cls, n, seed):
    rng = np.random.default_rng(seed)
    bn = cls(n, eps=1e-3)
    bn.weight, bn.bias = rng.uniform(0.5, 1.5, n), rng.normal(0, 0.3, n)
    bn.running_mean, bn.running_var = rng.normal(0, 0.3, n), rng.uniform(0.5, 2.0, n)
    return bn


MAPPINGS = {
    # convs: groups -> CONV_2D / DEPTHWISE_CONV_2D / SPLIT+CONV_2D+CONCATENATION; causal -> PAD
    "conv1d_grouped_causal_strided": lambda: dse.Sequential(
        [dse.Conv1d(4, 6, 3, stride=2, padding="causal", dilation=2, groups=2, seed=1), dse.ReLU(),
         dse.LastFrame()], in_features=4, window=13),
    "conv1d_depthwise_multiplier": lambda: dse.Sequential(
        [dse.Conv1d(3, 6, 4, dilation=3, groups=3, bias=False, seed=1), dse.ReLU6()], in_features=3, window=12),
    "conv2d_grouped_feature_pad": lambda: dse.Sequential(
        [dse.Conv2d(4, 4, (3, 2), stride=(2, 1), padding=(2, "causal"), dilation=(2, 3), groups=4, seed=1),
         dse.Conv2d(4, 2, (2, 2), groups=2, seed=2), dse.GlobalMaxPool()], in_features=(4, 7), window=12),
    # zero padding inside the window (PAD then VALID): 'same', symmetric, asymmetric, strided
    "conv1d_padding_inside_window": lambda: dse.Sequential(
        [dse.Conv1d(3, 4, 3, padding="same", seed=1), dse.ReLU(), dse.Conv1d(4, 4, 5, stride=2, padding=2, seed=2),
         dse.Conv1d(4, 3, 4, padding=(1, 2), dilation=2, seed=3), dse.Tanh(), dse.GlobalAvgPool()],
        in_features=3, window=16),
    "conv2d_padding_inside_window": lambda: dse.Sequential(
        [dse.Conv2d(1, 4, (3, 5), stride=(2, 2), padding=(1, 2), seed=1), dse.ReLU(),
         dse.Conv2d(4, 4, (3, 3), padding=((0, 2), "same"), groups=4, seed=2), dse.GlobalAvgPool()],
        in_features=(1, 6), window=14),
    # BatchNorm folded into the conv before it, and standalone (MUL + ADD) after a pool
    "batchnorm_folded_and_standalone": lambda: dse.Sequential(
        [dse.Conv1d(2, 3, 3, seed=1), _bn(dse.BatchNorm1d, 3, 1), dse.ReLU(), dse.AvgPool1d(2),
         _bn(dse.BatchNorm1d, 3, 2), dse.GlobalAvgPool(), _bn(dse.BatchNorm1d, 3, 3)], in_features=2, window=12),
    "batchnorm2d_on_last_frame": lambda: dse.Sequential(
        [dse.Conv2d(2, 3, (2, 2), seed=1), dse.LastFrame(), _bn(dse.BatchNorm2d, 3, 4), dse.Sigmoid(),
         dse.Flatten(), dse.Linear(12, 2, seed=2)], in_features=(2, 5), window=6),
    # pools: dilated max pool (STRIDED_SLICE taps + MAXIMUM), stride > kernel, 2-D pools
    "maxpool1d_dilated": lambda: dse.Sequential(
        [dse.Conv1d(2, 3, 1, seed=1), dse.MaxPool1d(3, stride=2, dilation=2), dse.MaxPool1d(1, stride=3)],
        in_features=2, window=17),
    "pools2d": lambda: dse.Sequential(
        [dse.Conv2d(1, 2, 1, seed=1), dse.MaxPool2d((2, 3), stride=(1, 2)), dse.AvgPool2d((2, 1), stride=(2, 3)),
         dse.Flatten()], in_features=(1, 6), window=11),
    # per-frame Linear (1x1 CONV_2D) and per-frame Softmax; Linear without bias after the head
    "linear_per_frame": lambda: dse.Sequential(
        [dse.Linear(3, 4, seed=1), dse.Softmax(), dse.Conv1d(4, 2, 2, seed=2), dse.Flatten(),
         dse.Linear(10, 3, bias=False, seed=3), dse.ReLU()], in_features=3, window=6),
    # residuals: identity skip, 1x1 conv skip, Linear skip, cropped skip, 2-D
    "residual_1d": lambda: dse.Sequential(
        [dse.Conv1d(2, 3, 1, seed=1),
         dse.Residual([dse.Conv1d(3, 3, 3, dilation=2, seed=2), dse.ReLU()]), dse.ReLU(),
         dse.Residual([dse.Conv1d(3, 4, 2, padding="causal", seed=3), dse.Tanh()], skip=dse.Conv1d(3, 4, 1, seed=4)),
         dse.Residual([dse.Conv1d(4, 2, 3, seed=5)], skip=dse.Linear(4, 2, seed=6)),
         dse.LastFrame()], in_features=2, window=12),
    "residual_2d": lambda: dse.Sequential(
        [dse.Residual([dse.Conv2d(2, 3, (3, 2), padding=(1, 0), seed=1), dse.ReLU()],
                      skip=dse.Conv2d(2, 3, 1, bias=False, seed=2)), dse.Identity(), dse.Dropout(0.2)],
        in_features=(2, 4), window=5),
}


@pytest.mark.parametrize("case", sorted(MAPPINGS))
def test_each_mapping(case):
    model = MAPPINGS[case]()
    randomize(model, np.random.default_rng(sorted(MAPPINGS).index(case)))
    assert_matches_reference(model, _frames(model, extra=8))


@pytest.mark.parametrize("name", sorted(examples.EXAMPLES))
def test_bench_models(name):
    model = examples.EXAMPLES[name]()
    assert_matches_reference(model, _frames(model, extra=4))


# ----------------------------------------------------------------------------- the file itself
def test_unsupported_layer_raises_with_its_name():
    """Needs no optional package: the graph is built before the schema code is imported."""

    class Wobble(L._PerFrame):
        def forward(self, x):
            return np.asarray(x, dtype=np.float64) * 2.0

    model = dse.Sequential([dse.Conv1d(2, 2, 2, seed=1), Wobble()], in_features=2)
    with pytest.raises(NotImplementedError, match="Wobble"):
        to_tflite(model)


def test_padded_pool_is_refused_by_name():
    """TFLite pools pad VALID or SAME only; PyTorch's padding/ceil_mode are neither."""
    model = dse.Sequential([dse.Conv1d(2, 2, 1, seed=1), dse.MaxPool1d(3, stride=1, padding=1)], in_features=2,
                           window=8)
    with pytest.raises(NotImplementedError, match="MaxPool1d with padding"):
        to_tflite(model)


def test_missing_schema_code_is_an_import_error(monkeypatch):
    for name in ("ai_edge_litert", "ai_edge_litert.schema_py_generated", "tflite"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    with pytest.raises(ImportError, match="pip install"):
        to_tflite(examples.tiny())


def test_schema_modules_write_the_same_bytes(monkeypatch):
    """ai_edge_litert's schema code and the tflite package's give byte-identical files,
    so the exporter also works with only `tflite` + `flatbuffers` installed (no runtime)."""
    pytest.importorskip("flatbuffers")
    litert_schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    tflite_schema = pytest.importorskip("tflite")
    from deepshift_edge.convert import tflite_export
    model = examples.spectrogram_cnn()
    monkeypatch.setattr(tflite_export, "_schema", lambda: litert_schema)
    a = to_tflite(model)
    monkeypatch.setattr(tflite_export, "_schema", lambda: tflite_schema)
    b = to_tflite(model)
    assert a == b and a[4:8] == b"TFL3"


def test_wrong_weight_is_caught():
    """The comparison is tight enough to see one weight off by 1%."""
    model = examples.tiny()
    x = _frames(model, extra=8)
    twin = examples.tiny()
    w = twin.layers[2].weight.copy()
    w[3, 2, 1] *= 1.01
    twin.layers[2].weight = w
    got, ref = run_litert(twin, x), model.forward(x)
    atol = ATOL_REL * float(np.abs(ref).max()) + ATOL_FLOOR
    assert not np.all(np.abs(got - ref) <= RTOL * np.abs(ref) + atol)
