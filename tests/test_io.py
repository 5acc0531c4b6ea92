"""Model files (.npz format v1): round trips are bit-exact, and every broken or hostile
file gives one clear ModelFormatError (generated here at run time, never another type)."""
import io
import json
import pickle
import sys
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import deepshift_edge as dse
from deepshift_edge.data import examples
from deepshift_edge.formats import npz as dio
from deepshift_edge.nn import layers as _L

import strategies


# ----------------------------------------------------------------------------- models
def _all_layer_models():
    """Models that together use every layer type and option of format v1."""
    rng = np.random.default_rng(1)

    def bn(n, two_d=False):
        layer = (dse.BatchNorm2d if two_d else dse.BatchNorm1d)(n, eps=1e-3)
        layer.weight = rng.uniform(0.5, 2, n)
        layer.bias = rng.standard_normal(n)
        layer.running_mean = rng.standard_normal(n)
        layer.running_var = rng.uniform(0.5, 2, n)
        return layer

    return {
        "tcn_residual": dse.Sequential([
            dse.Conv1d(3, 8, 3, padding="causal", seed=1), bn(8), dse.ReLU(),
            dse.Residual([dse.Conv1d(8, 8, 3, dilation=2, padding="causal", seed=2), dse.GELU(),
                          dse.Dropout(0.1)]),
            dse.Residual([dse.Conv1d(8, 4, 3, dilation=4, seed=3), dse.Tanh()],
                         skip=dse.Conv1d(8, 4, 1, bias=False, seed=4)),
            dse.LastFrame(), dse.Linear(4, 5, seed=5), dse.Softmax()], in_features=3, window=40),
        "pools_strides": dse.Sequential([
            dse.Conv1d(4, 6, 5, stride=2, groups=2, seed=1), dse.LeakyReLU(0.2),
            dse.MaxPool1d(3, stride=2, dilation=2), dse.Conv1d(6, 6, 3, groups=6, bias=False, seed=2),
            dse.HardSwish(), dse.AvgPool1d(2), dse.SiLU(), dse.Sigmoid(), dse.Hardsigmoid(), dse.Mish(),
            dse.ELU(0.5), dse.CELU(2.0), dse.SELU(), dse.Softsign(), dse.Softplus(2.0, 10.0),
            dse.Hardtanh(-2.0, 3.0), dse.PReLU(6), dse.GlobalMaxPool(),
            dse.Linear(6, 3, bias=False, seed=3), dse.ReLU6(), dse.PReLU()], in_features=4, window=60),
        "two_d": dse.Sequential([
            dse.Conv2d(2, 4, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), seed=1),
            bn(4, True), dse.ReLU(), dse.MaxPool2d((2, 2)),
            dse.Conv2d(4, 4, 3, padding=(1, "causal"), groups=2, seed=2), dse.AvgPool2d((1, 2), (1, 1)),
            dse.Identity(), dse.LastFrame(), dse.Flatten(), dse.Linear(4 * 5, 3, seed=3),
            dse.GELU(approximate="tanh")], in_features=(2, 20), window=30),
        "flatten_head": dse.Sequential([dse.Conv1d(2, 3, 2, seed=1), dse.Flatten(),
                                        dse.Linear(3 * 7, 2, seed=2)], in_features=2, window=8),
        "gap_2d": dse.Sequential([dse.Conv2d(1, 3, (3, 3), seed=1), dse.GlobalAvgPool()],
                                 in_features=(1, 6), window=9),
        "no_head": dse.Sequential([dse.Conv1d(1, 2, 2, seed=7)], in_features=1),
        "stream_exact_only": dse.Sequential([dse.Conv1d(2, 2, 3, padding="causal", seed=1),
                                             dse.GlobalAvgPool()], in_features=2, window=10),
        **{f"example_{name}": make() for name, make in examples.EXAMPLES.items()},
    }


ALL = _all_layer_models()


def _assert_same_model(a, b):
    assert type(a) is type(b)
    assert a.in_features == b.in_features and a.window == b.window
    assert a.receptive_field == b.receptive_field and a.hop == b.hop
    assert a.output_shape == b.output_shape and a.equivalence == b.equivalence
    assert len(a.layers) == len(b.layers)

    def same_layer(x, y):
        assert type(x) is type(y)
        assert x.config() == y.config()
        if isinstance(x, dse.Residual):
            assert len(x.body) == len(y.body)
            for u, v in zip(x.body, y.body):
                same_layer(u, v)
            assert (x.skip is None) == (y.skip is None)
            if x.skip is not None:
                same_layer(x.skip, y.skip)
            return
        px, py = x.params(), y.params()
        assert px.keys() == py.keys()
        for k in px:
            assert py[k].dtype == np.float32
            assert np.array_equal(px[k].view(np.uint32), py[k].view(np.uint32)), k  # bit-exact

    for x, y in zip(a.layers, b.layers):
        same_layer(x, y)


def test_every_layer_type_is_covered():
    """A new layer class must be added to the format (this test names it)."""
    used = set()

    def collect(layer):
        used.add(type(layer).__name__)
        if isinstance(layer, dse.Residual):
            for sub in layer.body + ([layer.skip] if layer.skip else []):
                collect(sub)

    for model in ALL.values():
        for layer in model.layers:
            collect(layer)
    layer_classes = {n for n in _L.__all__ if isinstance(getattr(_L, n), type)
                     and issubclass(getattr(_L, n), _L.Layer) and n != "Layer"}
    assert layer_classes <= set(dio._SCHEMA), layer_classes - set(dio._SCHEMA)
    assert set(dio._SCHEMA) <= used, set(dio._SCHEMA) - used


@pytest.mark.parametrize("name", sorted(ALL))
def test_round_trip_bit_exact_and_streams_identically(name, tmp_path):
    model = ALL[name]
    path = tmp_path / "m.npz"
    dse.save(model, path)
    assert path.exists() and not list(tmp_path.glob(".dse-*"))  # no temp file left behind
    back = dse.load(path)
    _assert_same_model(model, back)
    # a second round trip writes the same description
    doc1 = dio.describe(model)[0]
    doc2 = dio.describe(back)[0]
    assert doc1 == doc2
    rng = np.random.default_rng(0)
    x = rng.standard_normal((model.window + 25,) + model.frame_shape).astype(np.float32)
    assert np.array_equal(model.forward(x), back.forward(x))
    if model.equivalence != "window-exact":
        with pytest.raises(dse.NotStreamableError):
            back.stream()
        return
    for mode in ("dense", "decimated"):
        a = model.stream(mode=mode).push_many(x)
        b = back.stream(mode=mode).push_many(x)
        assert a.shape == b.shape and a.shape[0] > 0
        assert np.array_equal(a, b)


def test_file_layout_is_plain(tmp_path):
    path = tmp_path / "m.npz"
    dse.save(ALL["tcn_residual"], path)
    with np.load(path, allow_pickle=False) as npz:
        assert npz["__model__"].dtype.kind == "U" and npz["__model__"].shape == ()
        doc = json.loads(str(npz["__model__"]))
        keys = set(npz.files)
    assert doc["format"] == "deepshift-edge-model" and doc["format_version"] == 1
    assert doc["producer"].startswith("deepshift_edge ")
    assert {"layers.0.weight", "layers.0.bias", "layers.1.running_var", "layers.3.body.0.weight",
            "layers.4.skip.weight", "layers.6.weight"} <= keys
    assert "layers.4.skip.bias" not in keys  # bias=False: no array
    assert doc["layers"][4]["skip"]["type"] == "Conv1d"


def test_save_to_file_object_and_path_without_suffix(tmp_path):
    buf = io.BytesIO()
    dse.save(ALL["no_head"], buf)
    buf.seek(0)
    _assert_same_model(ALL["no_head"], dse.load(buf))
    dse.save(ALL["no_head"], tmp_path / "model.bin")  # no .npz appended
    assert (tmp_path / "model.bin").exists()
    _assert_same_model(ALL["no_head"], dse.load(tmp_path / "model.bin"))


def test_save_refuses_non_finite_and_foreign_layers(tmp_path):
    model = dse.Sequential([dse.Conv1d(1, 1, 2, seed=0)], in_features=1)
    model.layers[0].weight[0, 0, 0] = np.nan
    with pytest.raises(dse.ModelError, match=r"layers\.0\.weight.*non-finite"):
        dse.save(model, tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()

    class MyReLU(dse.ReLU):
        pass

    with pytest.raises(dse.ModelError, match="MyReLU"):
        dse.save(dse.Sequential([dse.Conv1d(1, 1, 2), MyReLU()], in_features=1), tmp_path / "m.npz")
    with pytest.raises(dse.ModelError, match="Sequential"):
        dse.save("not a model", tmp_path / "m.npz")


def test_missing_file_is_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        dse.load(tmp_path / "nope.npz")


def test_hand_written_minimal_file(tmp_path):
    """The example of docs/format.md: defaults may be omitted, derived values too."""
    doc = {"format": "deepshift-edge-model", "format_version": 1, "producer": "by hand",
           "in_features": 2, "window": 4,
           "layers": [{"type": "Conv1d", "in_channels": 2, "out_channels": 1, "kernel_size": 3},
                      {"type": "ReLU"}, {"type": "GlobalAvgPool"}]}
    w = np.arange(6, dtype=np.float32).reshape(1, 2, 3) / 10
    b = np.array([0.5], np.float32)
    np.savez(tmp_path / "hand.npz", __model__=np.array(json.dumps(doc)),
             **{"layers.0.weight": w, "layers.0.bias": b})
    model = dse.load(tmp_path / "hand.npz")
    assert model.window == 4 and model.output_shape == (1,)
    assert np.array_equal(model.layers[0].weight, w)
    # big-endian and Fortran-ordered float32 arrays are read too
    np.savez(tmp_path / "be.npz", __model__=np.array(json.dumps(doc)),
             **{"layers.0.weight": np.asfortranarray(w.astype(">f4")), "layers.0.bias": b.astype(">f4")})
    back = dse.load(tmp_path / "be.npz")
    assert np.array_equal(back.layers[0].weight, w) and back.layers[0].weight.dtype == np.float32
    # the JSON may also be stored as UTF-8 bytes (dtype 'S')
    np.savez(tmp_path / "bytes.npz", __model__=np.array(json.dumps(doc).encode()),
             **{"layers.0.weight": w, "layers.0.bias": b})
    assert dse.load(tmp_path / "bytes.npz").window == 4


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategies.models(legacy=True))  # format v1: valid/causal padding only
def test_round_trip_random_models(drawn):
    model = drawn[0]
    buf = io.BytesIO()
    dse.save(model, buf)
    buf.seek(0)
    back = dse.load(buf)
    _assert_same_model(model, back)


# ----------------------------------------------------------------------------- broken files
def _base():
    """(doc, arrays) of a small valid model with a residual block and a batch norm."""
    model = dse.Sequential([
        dse.Conv1d(2, 4, 3, seed=1), dse.BatchNorm1d(4), dse.ReLU(),
        dse.Residual([dse.Conv1d(4, 4, 3, padding="causal", seed=2)], skip=dse.Conv1d(4, 4, 1, seed=3)),
        dse.GlobalAvgPool(), dse.Linear(4, 3, seed=4)], in_features=2, window=8)
    doc, arrays = dio.describe(model)
    return json.loads(json.dumps(doc)), dict(arrays)


def _npy(arr, **kw) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, **kw)
    return buf.getvalue()


def _zip(members, compression=zipfile.ZIP_STORED) -> bytes:
    """members: name (without .npy) -> array, or bytes (raw member content)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, value in members.items():
            data = value if isinstance(value, bytes) else _npy(value)
            zf.writestr(name if name.endswith((".npy", ".txt")) else name + ".npy", data)
    return buf.getvalue()


def _file(doc=None, arrays=None, model_value=None, **extra) -> bytes:
    base_doc, base_arrays = _base()
    doc = base_doc if doc is None else doc
    arrays = base_arrays if arrays is None else arrays
    members = {"__model__": np.array(json.dumps(doc)) if model_value is None else model_value}
    members.update(arrays)
    members.update(extra)
    return _zip(members)


def _edit(fn):
    doc, arrays = _base()
    fn(doc, arrays)
    return _file(doc, arrays)


def _deep(d, path, value):
    for p in path[:-1]:
        d = d[p]
    d[path[-1]] = value


def _huge_header_member(descr="<f4", shape=(1000000, 1000000)):
    """A .npy member whose header declares a huge array (10^12 floats) but holds 16 bytes."""
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + b"\0" * 16


def _good() -> bytes:
    return _file()


def _truncated_member():
    raw = _npy(_base()[1]["layers.0.weight"])
    return _file(**{"layers.0.weight": raw[:-5]})


def _flip_data_byte() -> bytes:
    raw = bytearray(_good())
    # corrupt one data byte of a stored member (after its 128-byte .npy header): CRC mismatch
    name = b"layers.5.bias.npy"
    idx = bytes(raw).find(name) + len(name) + 128 + 2
    raw[idx] ^= 0x01
    return bytes(raw)


def _dup_zip() -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("__model__.npy", _npy(np.array("{}")))
            zf.writestr("__model__.npy", _npy(np.array("{}")))
    return buf.getvalue()


BROKEN = {
    # --- not a model at all
    "empty file": (lambda: b"", "empty file"),
    "text file": (lambda: b"hello, this is not a model\n", "expected a .npz"),
    "raw pickle": (lambda: pickle.dumps({"layers": []}), "pickled data"),
    "single npy": (lambda: _npy(np.zeros(3, np.float32)), "single .npy"),
    "truncated file": (lambda: _good()[: len(_good()) // 2], "not a readable zip"),
    "truncated end": (lambda: _good()[:-10], "not a readable zip"),
    "zip of text": (lambda: _zip({"notes.txt": b"hi"}), "not a .npy array"),
    "no __model__": (lambda: _zip({"weights": np.zeros(2, np.float32)}), "no '__model__'"),
    "empty zip": (lambda: _zip({}), "no '__model__'"),
    "duplicate member": (lambda: _dup_zip(), "appears twice"),
    "crc error": (_flip_data_byte, "corrupt archive"),
    # --- pickles and hostile headers
    "pickled object weight": (lambda: _file(**{"layers.0.weight": _npy(
        np.array([{"evil": 1}], dtype=object), allow_pickle=True)}), "Python objects"),
    "pickled object __model__": (lambda: _file(model_value=_npy(
        np.array(["x", 1], dtype=object), allow_pickle=True)), "Python objects"),
    "huge declared array": (lambda: _file(**{"layers.0.weight": _huge_header_member()}),
                            r"layers\.0\.weight: expected shape \(4, 2, 3\)"),
    "huge declared json": (lambda: _file(model_value=_huge_header_member("<U99999999", ())),
                           "JSON description of"),
    "structured dtype": (lambda: _file(**{"layers.0.weight": np.zeros(
        (4, 2, 3), dtype=[("a", "<f4")])}), "plain dtype"),
    "truncated member": (_truncated_member, "truncated"),
    # --- JSON
    "json garbage": (lambda: _file(model_value=np.array("{not json")), "not valid JSON"),
    "json list": (lambda: _file(model_value=np.array("[1, 2]")), "expected a JSON object"),
    "json NaN": (lambda: _edit(lambda d, a: _deep(d, ["layers", 1, "eps"], float("nan"))),
                 "not valid JSON"),
    "json too deep": (lambda: _file(model_value=np.array("[" * 100000 + "]" * 100000)),
                      "nested too deeply|not valid JSON"),
    "json too large": (lambda: _file(model_value=np.array(" " * (2 << 20) + "{}")),
                       "JSON description of"),
    "json number array": (lambda: _file(model_value=np.zeros(3, np.float32)),
                          "0-d string array"),
    "huge integer": (lambda: _file(model_value=np.array(json.dumps(_base()[0]).replace(
        '"window": 8', '"window": ' + "9" * 5000))), "not valid JSON"),
    # --- top level
    "unknown version": (lambda: _edit(lambda d, a: _deep(d, ["format_version"], 2)),
                        r"format_version.*version 1.*has 2"),
    "version as string": (lambda: _edit(lambda d, a: _deep(d, ["format_version"], "1")),
                          "format_version"),
    "wrong format name": (lambda: _edit(lambda d, a: _deep(d, ["format"], "keras")),
                          r"__model__\.format: expected 'deepshift-edge-model'"),
    "no producer": (lambda: _edit(lambda d, a: d.pop("producer")), r"producer"),
    "unknown top key": (lambda: _edit(lambda d, a: _deep(d, ["extra"], 1)), r"unknown keys \['extra'\]"),
    "window zero": (lambda: _edit(lambda d, a: _deep(d, ["window"], 0)), r"window: expected an integer"),
    "huge window": (lambda: _edit(lambda d, a: _deep(d, ["window"], 10 ** 9)), r"window"),
    "window too short": (lambda: _edit(lambda d, a: _deep(d, ["window"], 2)),
                         r"node layers\.0 \(Conv1d\).*make the window longer"),
    "window needs gigabytes": (lambda: _file(
        {"format": "deepshift-edge-model", "format_version": 1, "producer": "x", "in_features": 256,
         "window": 1 << 20, "layers": [{"type": "Conv1d", "in_channels": 256, "out_channels": 256,
                                        "kernel_size": 1, "bias": False}]},
        {"layers.0.weight": np.zeros((256, 256, 1), np.float32)}), "activations"),
    "hop mismatch": (lambda: _edit(lambda d, a: _deep(d, ["hop"], 2)), r"hop: the file declares 2"),
    "in_features bool": (lambda: _edit(lambda d, a: _deep(d, ["in_features"], True)), "in_features"),
    "in_features triple": (lambda: _edit(lambda d, a: _deep(d, ["in_features"], [1, 2, 3])),
                           "in_features"),
    "layers not a list": (lambda: _edit(lambda d, a: _deep(d, ["layers"], {"0": "ReLU"})),
                          r"layers: expected a list"),
    # --- layers
    "unknown layer": (lambda: _edit(lambda d, a: _deep(d, ["layers", 2, "type"], "Swish")),
                      r"layers\.2: unknown layer type 'Swish'"),
    "layer not object": (lambda: _edit(lambda d, a: _deep(d, ["layers", 2], "ReLU")),
                         r"layers\.2: expected an object"),
    "unknown layer key": (lambda: _edit(lambda d, a: _deep(d, ["layers", 0, "padd"], "valid")),
                          r"layers\.0: unknown keys \['padd'\]"),
    "missing hyper-parameter": (lambda: _edit(lambda d, a: d["layers"][0].pop("kernel_size")),
                                r"layers\.0: Conv1d needs \"kernel_size\""),
    "kernel zero": (lambda: _edit(lambda d, a: _deep(d, ["layers", 0, "kernel_size"], 0)),
                    r"layers\.0\.kernel_size \(Conv1d\): expected an integer"),
    "bias as string": (lambda: _edit(lambda d, a: _deep(d, ["layers", 0, "bias"], "yes")),
                       r"layers\.0\.bias \(Conv1d\): expected true or false"),
    "bad padding": (lambda: _edit(lambda d, a: _deep(d, ["layers", 0, "padding"], "same")),
                    r"layers\.0\.padding \(Conv1d\): expected one of"),
    "negative eps": (lambda: _edit(lambda d, a: _deep(d, ["layers", 1, "eps"], -1)),
                     r"layers\.1\.eps \(BatchNorm1d\): expected a number > 0"),
    "groups divisor": (lambda: _edit(lambda d, a: _deep(d, ["layers", 0, "groups"], 3)),
                       r"layers\.0\.groups \(Conv1d\): groups=3 must divide"),
    "huge channels": (lambda: _edit(lambda d, a: (_deep(d, ["layers", 0, "in_channels"], 60000),
                                                  _deep(d, ["layers", 0, "out_channels"], 60000))),
                      r"layers\.0\.weight: the model would need more than"),
    "absurd channels": (lambda: _edit(lambda d, a: _deep(d, ["layers", 0, "out_channels"], 10 ** 12)),
                        r"layers\.0\.out_channels"),
    "huge dilation": (lambda: _edit(lambda d, a: _deep(d, ["layers", 3, "body", 0, "dilation"], 10 ** 6)),
                      r"layers\.3\.body\.0\.kernel_size.*extent"),
    "channel mismatch": (lambda: _edit(lambda d, a: (_deep(d, ["layers", 5, "in_features"], 5),
                                                     _deep(a, ["layers.5.weight"], np.zeros((3, 5), np.float32)))),
                         r"node layers\.5 \(Linear\): Linear expects 5 features, got 4"),
    "nested residual": (lambda: _edit(lambda d, a: _deep(d, ["layers", 3, "body"],
                                                         [{"type": "Residual", "body": [{"type": "ReLU"}]}])),
                        r"layers\.3\.body\.0: a Residual block cannot hold another Residual"),
    "head inside residual": (lambda: _edit(lambda d, a: (_deep(d, ["layers", 3, "body"], [{"type": "LastFrame"}]),
                                                         a.pop("layers.3.body.0.weight"), a.pop("layers.3.body.0.bias"))),
                             r"layers\.3 \(Residual\): Residual: LastFrame is not allowed"),
    "stride in residual": (lambda: _edit(lambda d, a: _deep(d, ["layers", 3, "body", 0, "stride"], 2)),
                           r"node layers\.3\.add \(Add\): Add joins branches that advance at different strides"),
    "empty residual": (lambda: _edit(lambda d, a: _deep(d, ["layers", 3, "body"], [])),
                       r"layers\.3\.body: expected a non-empty list"),
    # --- arrays
    "missing array": (lambda: _edit(lambda d, a: a.pop("layers.3.skip.bias")),
                      r"layers\.3\.skip\.bias: missing array \(expected float32 of shape \(4,\)\)"),
    "extra array": (lambda: _edit(lambda d, a: _deep(a, ["layers.2.weight"], np.ones(4, np.float32))),
                    r"layers\.2\.weight: unexpected array"),
    "bias present but bias=false": (lambda: _edit(lambda d, a: _deep(d, ["layers", 0, "bias"], False)),
                                    r"layers\.0\.bias: unexpected array"),
    "wrong shape": (lambda: _edit(lambda d, a: _deep(a, ["layers.0.weight"], np.zeros((4, 2, 2), np.float32))),
                    r"layers\.0\.weight: expected shape \(4, 2, 3\), got \(4, 2, 2\)"),
    "float64 weights": (lambda: _edit(lambda d, a: _deep(a, ["layers.0.weight"], np.zeros((4, 2, 3)))),
                        r"layers\.0\.weight: expected dtype float32, got float64"),
    "int weights": (lambda: _edit(lambda d, a: _deep(a, ["layers.5.bias"], np.zeros(3, np.int32))),
                    r"layers\.5\.bias: expected dtype float32, got int32"),
    "float16 weights": (lambda: _edit(lambda d, a: _deep(a, ["layers.5.bias"], np.zeros(3, np.float16))),
                        r"layers\.5\.bias: expected dtype float32"),
    "NaN weight": (lambda: _edit(lambda d, a: a["layers.3.body.0.weight"].__setitem__((1, 2, 0), np.nan)),
                   r"layers\.3\.body\.0\.weight: non-finite weight nan at index \(1, 2, 0\)"),
    "Inf bias": (lambda: _edit(lambda d, a: a["layers.5.bias"].__setitem__(2, -np.inf)),
                 r"layers\.5\.bias: non-finite weight -inf at index \(2,\)"),
    "negative variance": (lambda: _edit(lambda d, a: a["layers.1.running_var"].__setitem__(0, -1)),
                          r"layers\.1\.running_var: negative variance"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_file_gives_clear_error(case, tmp_path):
    make, pattern = BROKEN[case]
    data = make()
    path = tmp_path / "broken.npz"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(dse.ModelFormatError, match=pattern) as info:
            dse.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(info.value, ValueError) and isinstance(info.value, dse.DeepShiftError)
    assert peak < 64 * 2 ** 20, f"{case}: loading a broken file allocated {peak:,} bytes"
    # the same from a file object
    with pytest.raises(dse.ModelFormatError):
        dse.load(io.BytesIO(data))


def test_base_of_broken_files_is_valid():
    assert dse.load(io.BytesIO(_good())).output_shape == (3,)
    deflated = _zip({"__model__": np.array(json.dumps(_base()[0])), **_base()[1]}, zipfile.ZIP_DEFLATED)
    assert dse.load(io.BytesIO(deflated)).output_shape == (3,)


def test_limits_can_be_raised_for_trusted_files(tmp_path):
    model = dse.Sequential([dse.Conv1d(2, 4, 3, seed=0)], in_features=2, window=3)
    dse.save(model, tmp_path / "m.npz")
    with pytest.raises(dse.ModelFormatError, match="parameters"):
        dse.load(tmp_path / "m.npz", limits={"params": 10})
    assert dse.load(tmp_path / "m.npz", limits={"params": 100}).window == 3
    with pytest.raises(ValueError, match="unknown limits"):
        dse.load(tmp_path / "m.npz", limits={"bogus": 1})


def _mutations(data: bytes):
    return st.one_of(
        st.integers(0, len(data)).map(lambda n: data[:n]),  # truncation anywhere
        st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(1, 255)), min_size=1,
                 max_size=4).map(lambda flips: _flip(data, flips)),
    )


def _flip(data, flips):
    raw = bytearray(data)
    for i, x in flips:
        raw[i] ^= x
    return bytes(raw)


_GOOD = _good()
_GOOD_DEFLATED = _zip({"__model__": np.array(json.dumps(_base()[0])), **_base()[1]}, zipfile.ZIP_DEFLATED)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_mutations(_GOOD), _mutations(_GOOD_DEFLATED)))
def test_fuzzed_files_never_raise_anything_else(data):
    try:
        model = dse.load(io.BytesIO(data))
    except dse.ModelFormatError:
        return
    # a mutation that survived validation is still a consistent model
    for layer in model.layers:
        for arr in layer.params().values():
            assert np.isfinite(arr).all()


def test_loading_never_imports_onnx_or_torch():
    code = ("import sys, deepshift_edge as dse, io; m = dse.Sequential([dse.Conv1d(1, 1, 2)], "
            "in_features=1); b = io.BytesIO(); dse.save(m, b); b.seek(0); dse.load(b); "
            "assert 'onnx' not in sys.modules and 'torch' not in sys.modules, "
            "[k for k in sys.modules if k.startswith(('onnx', 'torch'))]")
    import subprocess
    subprocess.run([sys.executable, "-c", code], check=True)


def test_docs_examples_load(tmp_path, monkeypatch):
    """The JSON and the hand-writing recipe of docs/format.md are valid files."""
    import pathlib
    import re
    text = (pathlib.Path(__file__).parents[1] / "docs" / "format.md").read_text()
    doc = json.loads(re.search(r"```json\n(.*?)```", text, re.S).group(1))
    arrays = {"layers.0.weight": np.ones((32, 6, 5), np.float32), "layers.0.bias": np.zeros(32, np.float32),
              "layers.3.body.0.weight": np.ones((32, 32, 3), np.float32),
              "layers.3.body.0.bias": np.zeros(32, np.float32),
              "layers.5.weight": np.ones((6, 32), np.float32), "layers.5.bias": np.zeros(6, np.float32)}
    np.savez(tmp_path / "doc.npz", __model__=np.array(json.dumps(doc)), **arrays)
    model = dse.load(tmp_path / "doc.npz")
    assert model.equivalence == "window-exact" and model.output_shape == (6,)
    recipe = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "np.savez" in b][0]
    monkeypatch.chdir(tmp_path)
    exec(recipe, {})
    assert dse.load(tmp_path / "hand.npz").window == 4


def test_content_errors_name_the_file_first(tmp_path):
    path = tmp_path / "mine.npz"
    dse.save(examples.tiny(), path)
    with np.load(path) as f:
        members = dict(f.items())
    members["layers.0.weight"] = members["layers.0.weight"][..., :2]
    np.savez(path, **members)
    with pytest.raises(dse.ModelFormatError) as err:
        dse.load(path)
    assert str(err.value).startswith(f"{path}: layers.0.weight: expected shape (8, 3, 3), got (8, 3, 2)")
    with open(path, "rb") as fh:  # a file object with a name is named too
        with pytest.raises(dse.ModelFormatError, match=r"mine\.npz: layers\.0\.weight: expected shape"):
            dse.load(fh)
    with pytest.raises(dse.ModelFormatError, match=r"^<file object>: layers\.0\.weight"):
        dse.load(io.BytesIO(path.read_bytes()))
    (tmp_path / "junk.npz").write_bytes(b"\x01\x02junk")
    with pytest.raises(dse.ModelFormatError) as err:  # no Python bytes repr in the message
        dse.load(tmp_path / "junk.npz")
    assert "found bytes 01 02 6a 75 ('..ju')" in str(err.value) and "b'" not in str(err.value)
