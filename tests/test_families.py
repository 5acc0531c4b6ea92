"""The architectures of tests/families.py, written as their authors write them, through
``from_torch`` with both PyTorch exporters: each streams what PyTorch computes on every
window (float64 PyTorch as the reference; error <= 1e-5 of the output scale), in dense and
decimated mode, and behaves as a stream should (push vs push_many, batch, reset, state
snapshots, warm_up). Recurrent models are refused by name.

``python tests/test_families.py`` prints the table: family, exporter, window, hop, nodes,
max error (dense and decimated) relative to the output scale.
"""
import copy
import functools
import os
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

import deepshift_edge as dse  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from families import FAMILIES, PER_POSITION, REFUSED, STREAMED, build  # noqa: E402

pytestmark = pytest.mark.torch

EXPORTERS = ("dynamo", "torchscript")
TOLERANCE = 1e-5  # max |stream - PyTorch| / max |PyTorch output|


def _need(exporter):
    if exporter == "dynamo":
        pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript")


@functools.lru_cache(maxsize=None)
def converted(name, exporter):
    """(model, float64 PyTorch module) for a family, converted once per exporter."""
    fam = FAMILIES[name]
    module = build(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, report = dse.from_torch(module, fam.in_features, fam.window, time_axis=fam.time_axis,
                                       dynamo=exporter == "dynamo", return_report=True)
    return model, report, copy.deepcopy(module).double().eval()


def frames(model, n_extra=None, seed=0):
    n = model.window + (3 * model.hop + 10 if n_extra is None else n_extra)
    return np.random.default_rng(seed).standard_normal((n,) + model.frame_shape).astype(np.float32)


def torch_windows(name, ref, x):
    """PyTorch on every window of ``x`` (one batch of windows), in the family's layout; the
    newest position for per-position families."""
    fam = FAMILIES[name]
    w = fam.window
    wins = np.stack([np.moveaxis(x[i:i + w].astype(np.float64), 0, -1) for i in range(len(x) - w + 1)])
    rank = wins.ndim
    wins = np.ascontiguousarray(np.moveaxis(wins, -1, fam.time_axis % rank))
    with torch.no_grad():
        y = ref(torch.from_numpy(wins)).numpy()
    if fam.per_position:
        y = y[..., -1]
    return y


def relative_error(got, want):
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.max(np.abs(got - want))) / float(np.max(np.abs(want)))


# ----------------------------------------------------------------------------- against PyTorch
@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", STREAMED)
def test_family_streams_what_pytorch_computes_on_every_window(name, exporter):
    _need(exporter)
    model, report, ref = converted(name, exporter)
    assert "window-exact" in report and "max |error|" in report
    x = frames(model)
    want = torch_windows(name, ref, x).reshape((-1,) + tuple(model.output_shape))
    # the family is not degenerate: its output follows the input, not only the biases
    assert float(np.max(want.std(axis=0))) > 0.02 * float(np.max(np.abs(want)))
    dense = model.stream().push_many(x)
    assert relative_error(dense, want) <= TOLERANCE
    decimated = model.stream(mode="decimated").push_many(x)
    assert relative_error(decimated, want[::model.hop]) <= TOLERANCE
    if FAMILIES[name].per_position:
        assert "the stream gives the newest one" in report


@pytest.mark.parametrize("exporter", EXPORTERS)
# torch's exporters warn about recurrent layers (batch sizes, tracing): the module is refused anyway
@pytest.mark.filterwarnings("ignore:Exporting a model to ONNX with a batch_size other than 1:UserWarning")
@pytest.mark.filterwarnings("ignore:Converting a tensor to a Python boolean:torch.jit.TracerWarning")
@pytest.mark.filterwarnings("ignore:The tensor attributes self.*were assigned during export:UserWarning")
@pytest.mark.parametrize("name", REFUSED)
def test_recurrent_families_are_refused_by_name(name, exporter):
    _need(exporter)
    fam = FAMILIES[name]
    with pytest.raises(dse.ModelFormatError, match=rf"\({fam.refused}\): unsupported op '{fam.refused}': "
                                                   rf"recurrent layers"):
        dse.from_torch(build(name), fam.in_features, fam.window, dynamo=exporter == "dynamo")


# ----------------------------------------------------------------------------- as streams
@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", STREAMED)
def test_family_push_equals_push_many_and_reset_starts_over(name, exporter):
    _need(exporter)
    model = converted(name, exporter)[0]
    x = frames(model, seed=1)
    stream = model.stream()
    one = [y.copy() for y in map(stream.push, x) if y is not None]
    stream.reset()
    many = stream.push_many(x)
    scale = float(np.max(np.abs(many)))
    np.testing.assert_allclose(np.stack(one), many, rtol=0, atol=1e-6 * scale)
    np.testing.assert_array_equal(model.stream().push_many(x), many)


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", STREAMED)
def test_family_batch_equals_independent_streams(name, exporter):
    _need(exporter)
    model = converted(name, exporter)[0]
    xs = [frames(model, seed=10 + b) for b in range(3)]
    out, ready = model.stream(batch=3).push_many(np.ascontiguousarray(np.stack(xs, axis=1)))
    for b, x in enumerate(xs):
        single = model.stream().push_many(x)
        scale = float(np.max(np.abs(single)))
        np.testing.assert_allclose(out[ready[:, b], b], single, rtol=0, atol=1e-6 * scale)


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", STREAMED)
def test_family_state_snapshot_and_warm_up(name, exporter):
    _need(exporter)
    model = converted(name, exporter)[0]
    x = frames(model, seed=2)
    full = model.stream().push_many(x)
    k = model.window + model.hop + 1  # mid-stream, between two strided columns
    first = model.stream()
    first.push_many(x[:k])
    snap = first.state()
    rest = first.push_many(x[k:])
    resumed = model.stream()
    resumed.restore(snap)
    np.testing.assert_array_equal(resumed.push_many(x[k:]), rest)
    # warm_up on recorded history: the output of its last frame, then the same future
    warm = model.stream()
    last = warm.warm_up(x[:k])
    scale = float(np.max(np.abs(full)))
    np.testing.assert_allclose(last, full[k - model.window], rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(warm.push_many(x[k:]), full[len(full) - len(rest):], rtol=0, atol=1e-6 * scale)


@pytest.mark.parametrize("name", STREAMED)
def test_family_survives_the_model_file(name):
    import io

    model = converted(name, "torchscript")[0]
    buf = io.BytesIO()
    dse.save(model, buf)
    buf.seek(0)
    x = frames(model, seed=4)
    np.testing.assert_array_equal(dse.load(buf).stream().push_many(x), model.stream().push_many(x))


@pytest.mark.parametrize("mode", ["dense", "decimated"])
@pytest.mark.parametrize("name", ["inception_time", "wavenet", "ecg_resnet"])
def test_family_push_allocates_nothing(name, mode):
    # graph models with edge strips ('same' padding), gates, concats, strided residuals
    from test_zero_alloc import _baseline, _measure

    model = converted(name, "torchscript")[0]
    stream = model.stream(mode=mode)
    frame = np.random.default_rng(1).standard_normal(model.frame_shape).astype(np.float32)
    for _attempt in range(3):  # a thread left over from another test may allocate: best of three
        base = _baseline()
        got = _measure(stream.push, frame, frames=3000)
        if got == base:
            break
    assert got == base, f"push allocates: (peak, current, blocks) {got} vs {base} for len()"


# ----------------------------------------------------------------------------- sequence semantics
@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", PER_POSITION)
def test_per_position_family_streams_the_whole_recording(name, exporter):
    """semantics='sequence': every position of the whole recording as PyTorch computes it over
    all of it, the last ones (past the last frame's right padding) from flush()."""
    _need(exporter)
    fam = FAMILIES[name]
    module = build(name)
    model = dse.from_torch(module, fam.in_features, fam.window, time_axis=fam.time_axis,
                           dynamo=exporter == "dynamo", semantics="sequence")
    x = np.random.default_rng(3).standard_normal((5 * fam.window,) + model.frame_shape).astype(np.float32)
    stream = model.stream()
    got = np.concatenate([stream.push_many(x), stream.flush()])
    with torch.no_grad():
        want = copy.deepcopy(module).double()(torch.from_numpy(np.moveaxis(x, 0, -1)[None].astype(np.float64)))
    want = np.moveaxis(want.numpy()[0], -1, 0)
    assert relative_error(got, want) <= TOLERANCE


# ----------------------------------------------------------------------------- the table
def table() -> str:
    rows = [f"{'family':20s} {'exporter':12s} {'window':>6s} {'hop':>4s} {'nodes':>6s} "
            f"{'dense err':>10s} {'decim. err':>10s}"]
    for name in STREAMED:
        for exporter in EXPORTERS:
            model, _, ref = converted(name, exporter)
            x = frames(model)
            want = torch_windows(name, ref, x).reshape((-1,) + tuple(model.output_shape))
            dense = relative_error(model.stream().push_many(x), want)
            dec = relative_error(model.stream(mode="decimated").push_many(x), want[::model.hop])
            rows.append(f"{name:20s} {exporter:12s} {model.window:6d} {model.hop:4d} {len(model.nodes):6d} "
                        f"{dense:10.1e} {dec:10.1e}")
    for name in REFUSED:
        fam = FAMILIES[name]
        for exporter in EXPORTERS:
            try:
                dse.from_torch(build(name), fam.in_features, fam.window, dynamo=exporter == "dynamo")
                rows.append(f"{name:20s} {exporter:12s} NOT REFUSED")
            except dse.ModelFormatError as exc:
                rows.append(f"{name:20s} {exporter:12s} refused: {str(exc)[:70]}")
    return "\n".join(rows)


if __name__ == "__main__":  # pragma: no cover
    print(table())
