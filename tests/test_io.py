"""Model files (.npz): format v2 is written for every model and read back bit-exact (graph
models of every node type and padding form, Sequential models as Sequential); v1 files still
load; every broken or hostile file of either version gives one clear ModelFormatError
(generated here at run time, never another type)."""
import glob
import io
import json
import os
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
from deepshift_edge.nn import merge as _M

import strategies
from graph_models import graph_models, random_graphs

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)


# ----------------------------------------------------------------------------- models
def _all_layer_models():
    """Sequential models that together use every layer type and option."""
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
        "causal_gap": dse.Sequential([dse.Conv1d(2, 2, 3, padding="causal", seed=1),
                                      dse.GlobalAvgPool()], in_features=2, window=10),
        # what format v1 cannot hold: 'same' and explicit paddings, padded pools, strided
        # residual blocks with a skip of several layers, Pad/Crop/ChannelSlice/FrameFlatten
        "padded_residual": dse.Sequential([
            dse.Conv1d(3, 6, 3, padding="same", seed=1), dse.Pad(1, 2), dse.Crop(1, 0),
            dse.Residual([dse.Conv1d(6, 8, 3, stride=2, padding=1, seed=2), bn(8), dse.ReLU()],
                         skip=[dse.Conv1d(6, 8, 1, stride=2, seed=3), bn(8), dse.ReLU()]),
            dse.Residual([dse.Conv1d(8, 8, 3, padding=(2, 0), seed=4)], skip=[dse.Identity()]),
            dse.MaxPool1d(3, stride=1, padding=1, ceil_mode=True),
            dse.AvgPool1d(2, padding=1, count_include_pad=False), dse.ChannelSlice(2, 7),
            dse.GlobalAvgPool(), dse.Linear(5, 3, seed=5)], in_features=3, window=20),
        "padded_2d_sequence": dse.Sequential([
            dse.Conv2d(2, 4, 3, padding="same", seed=1), dse.MaxPool2d((2, 1), padding=(1, 0)),
            dse.FrameFlatten(), dse.Conv1d(4 * 4, 3, 3, padding="same", seed=2)],
            in_features=(2, 6), window=8, semantics="sequence"),
        **{f"example_{name}": make() for name, make in examples.EXAMPLES.items()},
    }


ALL = _all_layer_models()
GRAPHS = graph_models()
EVERY = {**{f"seq_{k}": v for k, v in ALL.items()}, **{f"graph_{k}": v for k, v in GRAPHS.items()}}


def _same_layer(x, y):
    assert type(x) is type(y)
    if isinstance(x, (list, tuple)):  # a residual skip of several layers
        assert len(x) == len(y)
        for u, v in zip(x, y):
            _same_layer(u, v)
        return
    assert x.config() == y.config()
    if isinstance(x, dse.Residual):
        assert len(x.body) == len(y.body)
        for u, v in zip(x.body, y.body):
            _same_layer(u, v)
        assert (x.skip is None) == (y.skip is None)
        if x.skip is not None:
            _same_layer(x.skip, y.skip)
        return
    px, py = x.params(), y.params()
    assert px.keys() == py.keys()
    for k in px:
        assert py[k].dtype == np.float32
        assert np.array_equal(px[k].view(np.uint32), py[k].view(np.uint32)), k  # bit-exact


def _assert_same_model(a, b):
    assert type(a) is type(b)
    assert a.in_features == b.in_features and a.window == b.window and a.semantics == b.semantics
    assert a.receptive_field == b.receptive_field and a.hop == b.hop and a.delay == b.delay
    assert a.output_shape == b.output_shape and a.equivalence == b.equivalence
    assert a._implicit_head == b._implicit_head
    assert ([(n.name, n.inputs, type(n.layer)) for n in a.nodes]
            == [(n.name, n.inputs, type(n.layer)) for n in b.nodes])
    for x, y in zip(a.nodes[1:], b.nodes[1:]):
        _same_layer(x.layer, y.layer)
    if isinstance(a, dse.Sequential):
        assert len(a.layers) == len(b.layers)
        for x, y in zip(a.layers, b.layers):
            _same_layer(x, y)


def _node_types(model) -> set:
    return {"Input"} | {type(n.layer).__name__ for n in model.nodes[1:]}


def _padding_forms(models) -> set:
    """(type, axis, form) of every padding, ceil_mode and count_include_pad the models use."""
    def form(v):
        return v if isinstance(v, str) else "int" if isinstance(v, int) else "pair"

    seen = set()
    for model in models:
        for node in model.nodes[1:]:
            cfg, kind = node.layer.config(), type(node.layer).__name__
            pad = cfg.get("padding", "valid")
            if kind.endswith("2d") and isinstance(pad, list):
                seen |= {(kind, "feature", form(pad[0])), (kind, "time", form(pad[1]))}
            else:
                seen.add((kind, "time", form(pad)))
            seen |= {(kind, k, cfg[k]) for k in ("ceil_mode", "count_include_pad") if k in cfg}
    return seen


def test_every_layer_type_is_covered():
    """A new layer or operator class must be added to the format (this test names it), and
    the models here use every node type, padding form and pool option of format v2."""
    classes = {obj.__name__ for mod in (dse, _L, _M) for obj in vars(mod).values()
               if isinstance(obj, type) and issubclass(obj, _L.Layer) and not obj.__name__.startswith("_")}
    classes -= {"Layer"}
    assert classes - {"Residual"} <= set(dio._SCHEMA_V2), classes - set(dio._SCHEMA_V2)
    assert "Residual" not in dio._SCHEMA_V2  # v2 holds a residual block as its nodes
    used = set().union(*(_node_types(m) for m in EVERY.values()))
    assert set(dio._SCHEMA_V2) <= used, set(dio._SCHEMA_V2) - used
    forms = _padding_forms(EVERY.values())
    want = {("Conv1d", "time", f) for f in ("valid", "causal", "same", "int", "pair")}
    want |= {("Conv2d", "feature", f) for f in ("int", "pair", "same")}
    want |= {("Conv2d", "time", f) for f in ("int", "pair", "same", "causal")}
    want |= {("MaxPool1d", "time", f) for f in ("valid", "int")} | {("AvgPool1d", "time", f) for f in ("int", "pair", "same")}
    want |= {("MaxPool2d", "feature", "int"), ("MaxPool2d", "time", "int"), ("AvgPool2d", "time", "same"),
             ("MaxPool1d", "ceil_mode", True), ("AvgPool1d", "ceil_mode", True), ("MaxPool2d", "ceil_mode", True),
             ("AvgPool1d", "count_include_pad", False), ("AvgPool2d", "count_include_pad", False)}
    assert want <= forms, want - forms
    assert {m.semantics for m in EVERY.values()} == {"window", "sequence"}
    assert any(m._implicit_head for m in GRAPHS.values())


def test_every_v1_layer_type_is_covered():
    used = set()

    def collect(layer):
        used.add(type(layer).__name__)
        if isinstance(layer, dse.Residual):
            for sub in layer.body + layer.skip_layers:
                collect(sub)

    for model in _v1_models().values():
        for layer in model.layers:
            collect(layer)
    assert set(dio._SCHEMA_V1) <= used, set(dio._SCHEMA_V1) - used


def _stream_all(model, x, mode):
    s = model.stream(mode=mode)
    out = s.push_many(x)
    if model.semantics == "sequence" and hasattr(s, "flush"):
        out = np.concatenate([out, s.flush()])
    return out


@pytest.mark.parametrize("name", sorted(EVERY))
def test_round_trip_bit_exact_and_streams_identically(name, tmp_path):
    model = EVERY[name]
    path = tmp_path / "m.npz"
    dse.save(model, path)
    assert path.exists() and not list(tmp_path.glob(".dse-*"))  # no temp file left behind
    back = dse.load(path)
    _assert_same_model(model, back)
    assert type(back) is (dse.Sequential if isinstance(model, dse.Sequential) else dse.Model)
    # a second round trip writes the same description
    assert dio.describe(model)[0] == dio.describe(back)[0]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((model.window + 25,) + model.frame_shape).astype(np.float32)
    assert np.array_equal(model.forward(x), back.forward(x))
    modes = ("dense",) if model.semantics == "sequence" else ("dense", "decimated")
    for mode in modes:
        a, b = _stream_all(model, x, mode), _stream_all(back, x, mode)
        assert a.shape == b.shape and a.shape[0] > 0
        assert np.array_equal(a, b)


def test_v2_file_layout_is_plain(tmp_path):
    path = tmp_path / "m.npz"
    model = GRAPHS["wavenet"]
    dse.save(model, path)
    with np.load(path, allow_pickle=False) as npz:
        assert npz["__model__"].dtype.kind == "U" and npz["__model__"].shape == ()
        doc = json.loads(str(npz["__model__"]))
        keys = set(npz.files)
    assert doc["format"] == "deepshift-edge-model" and doc["format_version"] == 2
    assert doc["producer"].startswith("deepshift_edge ")
    assert doc["semantics"] == "window" and "sequential" not in doc and "layers" not in doc
    assert doc["in_features"] == 3 and doc["window"] == 16
    nodes = doc["nodes"]
    assert nodes[0] == {"name": "audio", "type": "Input"}
    assert [list(n)[:3] for n in nodes[1:]] == [["name", "type", "inputs"]] * (len(nodes) - 1)
    by_name = {n["name"]: n for n in nodes}
    assert by_name["gate0"]["type"] == "Mul" and len(by_name["gate0"]["inputs"]) == 2
    assert by_name["skip_sum"]["inputs"] == ["skip0", "skip1", "skip2"]
    assert by_name["front"]["padding"] == "causal" and by_name["front"]["inputs"] == ["audio"]
    # the implicit LastFrame is not written; the last node is the output
    assert model.nodes[-1].name == "last_frame" and "last_frame" not in by_name
    assert nodes[-1]["type"] == "Conv1d"
    assert {"nodes.front.weight", "nodes.front.bias", "nodes.skip0.weight"} <= keys
    assert not any(k.startswith("nodes.res0") for k in keys)  # Add: no parameters
    n_params = sum(len(n.layer.params()) for n in model.nodes[1:])
    assert len(keys) == 1 + n_params
    # a Sequential: its expanded nodes, marked
    doc = dio.describe(ALL["tcn_residual"])[0]
    assert doc["sequential"] is True
    assert [n["name"] for n in doc["nodes"]][:6] == ["input", "layers.0", "layers.1", "layers.2",
                                                      "layers.3.body.0", "layers.3.body.1"]
    assert "layers.4.skip" in [n["name"] for n in doc["nodes"]]
    assert "nodes.layers.4.skip.weight" in dio.describe(ALL["tcn_residual"])[1]


def test_save_to_file_object_and_path_without_suffix(tmp_path):
    for model in (ALL["no_head"], GRAPHS["gated_chunk"]):
        buf = io.BytesIO()
        dse.save(model, buf)
        buf.seek(0)
        _assert_same_model(model, dse.load(buf))
        dse.save(model, tmp_path / "model.bin")  # no .npz appended
        assert (tmp_path / "model.bin").exists()
        _assert_same_model(model, dse.load(tmp_path / "model.bin"))


def test_save_refuses_non_finite_and_foreign_layers(tmp_path):
    model = dse.Sequential([dse.Conv1d(1, 1, 2, seed=0)], in_features=1)
    model.layers[0].weight[0, 0, 0] = np.nan
    with pytest.raises(dse.ModelError, match=r"nodes\.layers\.0\.weight.*non-finite"):
        dse.save(model, tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()

    class MyReLU(dse.ReLU):
        pass

    with pytest.raises(dse.ModelError, match="MyReLU"):
        dse.save(dse.Sequential([dse.Conv1d(1, 1, 2), MyReLU()], in_features=1), tmp_path / "m.npz")
    x = dse.Input(1)
    with pytest.raises(dse.ModelError, match=r"nodes\.mine: cannot save.*MyReLU"):
        dse.save(dse.Model(x, MyReLU()(x, name="mine")), tmp_path / "m.npz")
    with pytest.raises(dse.ModelError, match="Model or Sequential"):
        dse.save("not a model", tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()


def test_missing_file_is_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        dse.load(tmp_path / "nope.npz")


def test_input_only_model_round_trips(tmp_path):
    x = dse.Input((2, 3))
    model = dse.Model(x, x, window=1)
    dse.save(model, tmp_path / "m.npz")
    back = dse.load(tmp_path / "m.npz")
    _assert_same_model(model, back)
    assert back.output_shape == (2, 3)


def test_hand_written_graph_in_any_topological_order(tmp_path):
    """Nodes may come in any order that lists each node after the ones it reads; the
    defaults may be omitted, and so may semantics and the derived values."""
    doc = {"format": "deepshift-edge-model", "format_version": 2, "producer": "by hand",
           "in_features": 2, "window": 6,
           "nodes": [{"name": "x", "type": "Input"},
                     {"name": "b", "type": "Conv1d", "inputs": ["x"], "in_channels": 2,
                      "out_channels": 2, "kernel_size": 3, "padding": "same", "bias": False},
                     {"name": "a", "type": "Tanh", "inputs": ["x"]},
                     {"name": "sum", "type": "Add", "inputs": ["a", "b"]},
                     {"name": "out", "type": "GlobalAvgPool", "inputs": ["sum"]}]}
    w = np.arange(12, dtype=np.float32).reshape(2, 2, 3) / 10
    np.savez(tmp_path / "hand.npz", __model__=np.array(json.dumps(doc)), **{"nodes.b.weight": w})
    model = dse.load(tmp_path / "hand.npz")
    assert type(model) is dse.Model and model.semantics == "window" and model.window == 6
    assert {n.name for n in model.nodes} == {"x", "a", "b", "sum", "out"}
    layer = {n.name: n.layer for n in model.nodes}["b"]
    assert np.array_equal(layer.weight, w) and layer.bias is None
    x = np.random.default_rng(0).standard_normal((6, 2))
    want = (np.tanh(x.T) + layer.forward(x.T)).mean(axis=1)
    np.testing.assert_allclose(model.forward_window(x), want, rtol=1e-12)
    # saved again, it round-trips in the model's own (depth-first) order
    buf = io.BytesIO()
    dse.save(model, buf)
    buf.seek(0)
    _assert_same_model(model, dse.load(buf))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategies.models())
def test_round_trip_random_sequential_models(drawn):
    model = drawn[0]
    buf = io.BytesIO()
    dse.save(model, buf)
    buf.seek(0)
    back = dse.load(buf)
    _assert_same_model(model, back)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.filter_too_much])
@given(random_graphs())
def test_round_trip_random_graph_models(model):
    buf = io.BytesIO()
    dse.save(model, buf)
    buf.seek(0)
    back = dse.load(buf)
    _assert_same_model(model, back)
    x = np.random.default_rng(0).standard_normal((model.window + 3,) + model.frame_shape)
    assert np.array_equal(model.forward(x), back.forward(x))


# ----------------------------------------------------------------------------- format v1
def _v1_models():
    """The models above that format v1 can hold."""
    out = {}
    for name, model in ALL.items():
        try:
            dio.describe_v1(model)
        except dse.ModelError:
            continue
        out[name] = model
    return out


def _v1_bytes(model) -> bytes:
    doc, arrays = dio.describe_v1(model)
    buf = io.BytesIO()
    dio._write(doc, arrays, buf)
    return buf.getvalue()


@pytest.mark.parametrize("name", sorted(_v1_models()))
def test_v1_files_load_as_before(name):
    model = ALL[name]
    back = dse.load(io.BytesIO(_v1_bytes(model)))
    _assert_same_model(model, back)


def test_v1_cannot_hold_the_new_forms():
    for name in ("padded_residual", "padded_2d_sequence"):
        with pytest.raises(dse.ModelError, match="format v1 (cannot hold|holds only)"):
            dio.describe_v1(ALL[name])
    with pytest.raises(dse.ModelError, match="only a deepshift_edge Sequential"):
        dio.describe_v1(GRAPHS["wavenet"])


SHIPPED_V1 = sorted(glob.glob(os.path.join(ROOT, "bench", "models", "*.npz"))) + [
    os.path.join(ROOT, "src", "deepshift_edge", "data", "basicmotions_cnn.npz")]


@pytest.mark.parametrize("path", SHIPPED_V1, ids=os.path.basename)
def test_shipped_v1_files_load_and_resave_as_v2(path, tmp_path):
    with np.load(path, allow_pickle=False) as npz:
        assert json.loads(str(npz["__model__"]))["format_version"] == 1
    model = dse.load(path)
    assert type(model) is dse.Sequential
    dse.save(model, tmp_path / "v2.npz")
    back = dse.load(tmp_path / "v2.npz")
    _assert_same_model(model, back)
    x = np.random.default_rng(0).standard_normal((model.window + 5,) + model.frame_shape).astype(np.float32)
    assert np.array_equal(model.stream().push_many(x), back.stream().push_many(x))


def test_v1_file_layout(tmp_path):
    data = _v1_bytes(ALL["tcn_residual"])
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        doc = json.loads(str(npz["__model__"]))
        keys = set(npz.files)
    assert doc["format_version"] == 1
    assert {"layers.0.weight", "layers.0.bias", "layers.1.running_var", "layers.3.body.0.weight",
            "layers.4.skip.weight", "layers.6.weight"} <= keys
    assert "layers.4.skip.bias" not in keys  # bias=False: no array
    assert doc["layers"][4]["skip"]["type"] == "Conv1d"


def test_hand_written_minimal_v1_file(tmp_path):
    """Defaults may be omitted, derived values too."""
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


# ----------------------------------------------------------------------------- broken files: v1
def _base():
    """(doc, arrays) of a small valid v1 model with a residual block and a batch norm."""
    model = dse.Sequential([
        dse.Conv1d(2, 4, 3, seed=1), dse.BatchNorm1d(4), dse.ReLU(),
        dse.Residual([dse.Conv1d(4, 4, 3, padding="causal", seed=2)], skip=dse.Conv1d(4, 4, 1, seed=3)),
        dse.GlobalAvgPool(), dse.Linear(4, 3, seed=4)], in_features=2, window=8)
    doc, arrays = dio.describe_v1(model)
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
    "unknown version": (lambda: _edit(lambda d, a: _deep(d, ["format_version"], 3)),
                        r"format_version: this deepshift_edge reads format versions 1 and 2, the file has 3"),
    "v1 file marked v2": (lambda: _edit(lambda d, a: _deep(d, ["format_version"], 2)),
                          r"__model__: unknown keys \['layers'\] for format v2"),
    "v1 file with nodes": (lambda: _edit(lambda d, a: _deep(d, ["nodes"], [])),
                           r"__model__: unknown keys \['nodes'\] for format v1"),
    "version as float": (lambda: _edit(lambda d, a: _deep(d, ["format_version"], 1.0)),
                         r"format_version.*has 1\.0"),
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
    "graph op in v1": (lambda: _edit(lambda d, a: _deep(d, ["layers", 2, "type"], "Add")),
                       r"layers\.2: unknown layer type 'Add'; format v1 knows"),
    "v2 padding in v1": (lambda: _edit(lambda d, a: _deep(d, ["layers", 0, "padding"], [1, 1])),
                         r"layers\.0\.padding \(Conv1d\): expected one of \['valid', 'causal'\], got \[1, 1\]"),
    "v2 2-D padding in v1": (lambda: _file(
        {"format": "deepshift-edge-model", "format_version": 1, "producer": "x", "in_features": [1, 4],
         "window": 4, "layers": [{"type": "Conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": 3,
                                  "padding": 1, "bias": False}]},
        {"layers.0.weight": np.ones((1, 1, 3, 3), np.float32)}),
        r"layers\.0\.padding \(Conv2d\): expected an integer for both axes \(v1 has no symmetric time "
        r"padding\) in \[0, 0\], got 1"),
    "v2 pool padding in v1": (lambda: _edit(lambda d, a: _deep(d, ["layers", 2], {"type": "MaxPool1d", "kernel_size": 1, "padding": 0})),
                              r"layers\.2: unknown keys \['padding'\] for MaxPool1d"),
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



# ----------------------------------------------------------------------------- broken files: v2
def _base2_model():
    x = dse.Input(2, name="x")
    c = dse.Conv1d(2, 4, 3, padding="same", seed=1)(x, name="conv")
    n = dse.BatchNorm1d(4)(c, name="bn")
    a = dse.Tanh()(dse.ChannelSlice(0, 2)(n, name="lo"), name="tanh")
    b = dse.Sigmoid()(dse.ChannelSlice(2, 4)(n, name="hi"), name="sig")
    g = dse.Mul()(a, b, name="gate")
    p = dse.MaxPool1d(3, stride=1, padding=1)(g, name="pool")
    s = dse.Add()(p, g, name="sum")
    y = dse.Linear(2, 3, seed=2)(dse.GlobalAvgPool()(s, name="gap"), name="fc")
    return dse.Model(x, y, window=8)


def _base_seq_model():
    return dse.Sequential([dse.Conv1d(2, 4, 3, seed=1), dse.ReLU(),
                           dse.Residual([dse.Conv1d(4, 4, 3, padding="same", seed=2)],
                                        skip=dse.Conv1d(4, 4, 1, seed=3)),
                           dse.GlobalAvgPool(), dse.Linear(4, 3, seed=4)], in_features=2, window=8)


def _base2(model=None):
    doc, arrays = dio.describe(model or _base2_model())
    return json.loads(json.dumps(doc)), dict(arrays)


def _edit2(fn, model=None):
    doc, arrays = _base2(model)
    fn(doc, arrays)
    return _file(doc, arrays)


def _seq(fn):
    return _edit2(fn, _base_seq_model())


def _node(doc, name):
    return next(n for n in doc["nodes"] if n["name"] == name)


def _set(name, key, value):
    return lambda d, a: _node(d, name).__setitem__(key, value)


def _replace(name, entry):
    """Put ``entry`` (keeping the name and inputs) in place of node ``name``."""
    def fn(d, a):
        i = next(i for i, n in enumerate(d["nodes"]) if n["name"] == name)
        d["nodes"][i] = {"name": name, "inputs": d["nodes"][i]["inputs"], **entry}
    return fn


def _rename(old, new):
    def fn(d, a):
        for n in d["nodes"]:
            if n["name"] == old:
                n["name"] = new
            n["inputs"] = [new if r == old else r for r in n.get("inputs", [])]
        for k in [k for k in a if k.startswith(f"nodes.{old}.")]:
            a[f"nodes.{new}." + k.rsplit(".", 1)[1]] = a.pop(k)
    return fn


def _conv2d_file(padding) -> bytes:
    doc = {"format": "deepshift-edge-model", "format_version": 2, "producer": "x", "in_features": [1, 4],
           "window": 4, "nodes": [{"name": "x", "type": "Input"},
                                  {"name": "c", "type": "Conv2d", "inputs": ["x"], "in_channels": 1,
                                   "out_channels": 1, "kernel_size": 3, "padding": padding, "bias": False},
                                  {"name": "gap", "type": "GlobalAvgPool", "inputs": ["c"]}]}
    return _file(doc, {"nodes.c.weight": np.ones((1, 1, 3, 3), np.float32)})


def _chain_file(n, node) -> bytes:
    """A v2 file whose nodes are the Input and then ``n`` copies of ``node`` in a chain."""
    nodes = [{"name": "x", "type": "Input"}]
    for i in range(n):
        nodes.append({"name": f"n{i}", "inputs": [nodes[-1]["name"]], **node})
    doc = {"format": "deepshift-edge-model", "format_version": 2, "producer": "x", "in_features": 1,
           "window": 1, "nodes": nodes}
    return _file(doc, {})


def _wide_add_file(k) -> bytes:
    doc = {"format": "deepshift-edge-model", "format_version": 2, "producer": "x", "in_features": 1,
           "window": 1, "nodes": [{"name": "x", "type": "Input"},
                                  {"name": "sum", "type": "Add", "inputs": ["x"] * k}]}
    return _file(doc, {})


BROKEN_V2 = {
    # --- top level
    "no nodes": (lambda: _edit2(lambda d, a: d.pop("nodes")), r"__model__\.nodes: missing"),
    "nodes not a list": (lambda: _edit2(lambda d, a: _deep(d, ["nodes"], {"x": 1})),
                         r"__model__\.nodes: expected a non-empty list of nodes, the Input first, got \{'x': 1\}"),
    "nodes empty": (lambda: _edit2(lambda d, a: _deep(d, ["nodes"], [])), r"__model__\.nodes: expected a non-empty"),
    "v1 key in v2": (lambda: _edit2(lambda d, a: _deep(d, ["layers"], [])),
                     r"__model__: unknown keys \['layers'\] for format v2"),
    "version as string": (lambda: _edit2(lambda d, a: _deep(d, ["format_version"], "2")),
                          r"format_version: this deepshift_edge reads format versions 1 and 2, the file has '2'"),
    "bad semantics": (lambda: _edit2(lambda d, a: _deep(d, ["semantics"], "stream")),
                      r"__model__\.semantics: expected 'window' or 'sequence', got 'stream'"),
    "sequence with a head": (lambda: _edit2(lambda d, a: _deep(d, ["semantics"], "sequence")),
                             r"__model__\.semantics: inconsistent model: semantics='sequence' is for fully "
                             r"convolutional models.*\(GlobalAvgPool\)"),
    "sequential not bool": (lambda: _edit2(lambda d, a: _deep(d, ["sequential"], 1)),
                            r"__model__\.sequential: expected true or false, got 1"),
    "derived mismatch": (lambda: _edit2(lambda d, a: _deep(d, ["receptive_field"], 99)),
                         r"__model__\.receptive_field: the file declares 99 but the model gives 5"),
    "output shape mismatch": (lambda: _edit2(lambda d, a: _deep(d, ["output_shape"], [4])),
                              r"__model__\.output_shape: the file declares \[4\] but the model gives \[3\]"),
    # --- node names and types
    "node not an object": (lambda: _edit2(lambda d, a: _deep(d, ["nodes", 3], "ReLU")),
                           r"nodes\[3\]: expected an object \{\"name\": \.\.\., \"type\": \.\.\., \"inputs\": \[\.\.\.\]\}, got str"),
    "missing name": (lambda: _edit2(lambda d, a: d["nodes"][2].pop("name")), r"nodes\[2\]: missing \"name\""),
    "bad name": (lambda: _edit2(lambda d, a: _deep(d, ["nodes", 2, "name"], "a/b")),
                 r"nodes\[2\]\.name: expected 1-128 characters of letters, digits, _ \. : -, got 'a/b'"),
    "long name": (lambda: _edit2(lambda d, a: _deep(d, ["nodes", 2, "name"], "n" * 129)),
                  r"nodes\[2\]\.name: expected 1-128 characters.*got 'nnnn.*\.\.\."),
    "name not a string": (lambda: _edit2(lambda d, a: _deep(d, ["nodes", 2, "name"], 7)),
                          r"nodes\[2\]\.name: expected 1-128 characters.*got 7"),
    "duplicate name": (lambda: _edit2(_set("hi", "name", "lo")),
                       r"nodes\.lo: two nodes are named 'lo' \(nodes 3 and 5\); node names must be unique"),
    "missing type": (lambda: _edit2(lambda d, a: _node(d, "tanh").pop("type")),
                     r"nodes\.tanh: missing \"type\" \(a string such as \"Conv1d\"\), got None"),
    "unknown type": (lambda: _edit2(_set("tanh", "type", "Swish")),
                     r"nodes\.tanh: unknown node type 'Swish'; format v2 knows Add, AvgPool1d"),
    "Residual node": (lambda: _edit2(_set("tanh", "type", "Residual")),
                      r"nodes\.tanh: unknown node type 'Residual' \(a residual block is its nodes: the body, "
                      r"the skip and an Add\)"),
    "first not Input": (lambda: _edit2(_set("x", "type", "ReLU")),
                        r"nodes\.x: the first node must be the Input, got ReLU"),
    "second Input": (lambda: _edit2(_replace("tanh", {"type": "Input"})),
                     r"nodes\.tanh: a second Input \(node 4\); a model has exactly one input, the first node"),
    "Input reads": (lambda: _edit2(_set("x", "inputs", ["x"])),
                    r"nodes\.x\.inputs \(Input\): the Input reads no node, got \['x'\]"),
    "Input key": (lambda: _edit2(_set("x", "in_features", 2)),
                  r"nodes\.x: unknown keys \['in_features'\] for Input \(expected name, type, inputs\)"),
    # --- edges
    "missing inputs": (lambda: _edit2(lambda d, a: _node(d, "bn").pop("inputs")),
                       r"nodes\.bn: BatchNorm1d needs \"inputs\", the names of the nodes it reads"),
    "inputs not a list": (lambda: _edit2(_set("bn", "inputs", "conv")),
                          r"nodes\.bn\.inputs \(BatchNorm1d\): expected a list of node names, got 'conv'"),
    "inputs not names": (lambda: _edit2(_set("bn", "inputs", [1])),
                         r"nodes\.bn\.inputs \(BatchNorm1d\): expected a list of node names, got \[1\]"),
    "reads a later node": (lambda: _edit2(_set("conv", "inputs", ["fc"])),
                           r"nodes\.conv\.inputs \(Conv1d\): reads 'fc', which is not listed before it: nodes "
                           r"are in topological order, each reading only nodes above it \(no cycles\)"),
    "reads itself": (lambda: _edit2(_set("conv", "inputs", ["conv"])),
                     r"nodes\.conv\.inputs \(Conv1d\): reads 'conv', which is not listed before it"),
    "reads an unknown node": (lambda: _edit2(_set("conv", "inputs", ["nope"])),
                              r"nodes\.conv\.inputs \(Conv1d\): reads 'nope', but there is no node of that name"),
    "Add of one": (lambda: _edit2(_set("sum", "inputs", ["pool"])),
                   r"nodes\.sum\.inputs \(Add\): Add joins two or more nodes, got 1 input$"),
    "Concat of none": (lambda: _edit2(lambda d, a: (_set("sum", "type", "Concat")(d, a), _set("sum", "inputs", [])(d, a))),
                       r"nodes\.sum\.inputs \(Concat\): Concat joins two or more nodes, got 0 inputs"),
    "Conv of two": (lambda: _edit2(_set("conv", "inputs", ["x", "x"])),
                    r"nodes\.conv\.inputs \(Conv1d\): Conv1d reads exactly one node, got 2: \['x', 'x'\]"),
    "unused node": (lambda: _edit2(lambda d, a: d["nodes"].insert(1, {"name": "extra", "type": "ReLU", "inputs": ["x"]})),
                    r"nodes\.extra: not used by the output, the last node 'fc'; every node must lead to it"),
    "output not last": (lambda: _edit2(lambda d, a: d["nodes"].append({"name": "tail", "type": "ReLU", "inputs": ["gap"]})),
                        r"nodes\.fc: not used by the output, the last node 'tail'"),
    # --- hyper-parameters
    "unknown node key": (lambda: _edit2(_set("conv", "padd", 1)),
                         r"nodes\.conv: unknown keys \['padd'\] for Conv1d \(expected name, type, inputs, in_channels"),
    "missing hyper-parameter": (lambda: _edit2(lambda d, a: _node(d, "conv").pop("kernel_size")),
                                r"nodes\.conv: Conv1d needs \"kernel_size\""),
    "padding word": (lambda: _edit2(_set("conv", "padding", "full")),
                     r"nodes\.conv\.padding \(Conv1d\): padding must be 'valid', 'causal', 'same', an integer "
                     r">= 0 or a pair \[left, right\], got 'full'"),
    "padding triple": (lambda: _edit2(_set("conv", "padding", [1, 1, 1])),
                       r"nodes\.conv\.padding \(Conv1d\): padding must be .*got \[1, 1, 1\]"),
    "negative padding": (lambda: _edit2(_set("conv", "padding", [-1, 0])),
                         r"nodes\.conv\.padding \(Conv1d\): expected padding left in \[0, 1048576\], got -1"),
    "padding bool": (lambda: _edit2(_set("conv", "padding", True)),
                     r"nodes\.conv\.padding \(Conv1d\): padding must be .*got True"),
    "huge padding": (lambda: _edit2(_set("conv", "padding", 10 ** 9)),
                     r"nodes\.conv\.padding \(Conv1d\): expected padding \(an integer\) in \[0, 1048576\], got 1000000000"),
    "same with stride": (lambda: _edit2(_set("conv", "stride", 2)),
                         r"nodes\.conv \(Conv1d\): Conv1d: padding='same' needs stride 1 \(as in PyTorch\), got stride 2"),
    "pool padding over half": (lambda: _edit2(_set("pool", "padding", 2)),
                               r"nodes\.pool \(MaxPool1d\): MaxPool1d: time padding \(2, 2\) must be at most half the kernel"),
    "ceil_mode not bool": (lambda: _edit2(_set("pool", "ceil_mode", "yes")),
                           r"nodes\.pool\.ceil_mode \(MaxPool1d\): expected true or false, got 'yes'"),
    "count_include_pad on max": (lambda: _edit2(_set("pool", "count_include_pad", False)),
                                 r"nodes\.pool: unknown keys \['count_include_pad'\] for MaxPool1d"),
    "avg pool option": (lambda: _edit2(_replace("pool", {"type": "AvgPool1d", "kernel_size": 3, "stride": 1,
                                                         "padding": 1, "count_include_pad": 0})),
                        r"nodes\.pool\.count_include_pad \(AvgPool1d\): expected true or false, got 0"),
    "groups": (lambda: _edit2(_set("conv", "groups", 3)),
               r"nodes\.conv\.groups \(Conv1d\): groups=3 must divide in_channels=2 and out_channels=4"),
    "huge channels": (lambda: _edit2(lambda d, a: (_set("conv", "in_channels", 60000)(d, a),
                                                   _set("conv", "out_channels", 60000)(d, a))),
                      r"nodes\.conv\.weight: the model would need more than 33,554,432 parameters"),
    "absurd channels": (lambda: _edit2(_set("conv", "out_channels", 10 ** 12)),
                        r"nodes\.conv\.out_channels \(Conv1d\): expected an integer in \[1, 65536\], got 1000000000000"),
    "huge dilation": (lambda: _edit2(_set("conv", "dilation", 10 ** 6)),
                      r"nodes\.conv\.kernel_size \(Conv1d\): time extent \(kernel-1\)\*dilation\+1 = 2000001 exceeds the cap"),
    "slice reversed": (lambda: _edit2(lambda d, a: (_set("hi", "start", 3)(d, a), _set("hi", "stop", 2)(d, a))),
                       r"nodes\.hi \(ChannelSlice\): ChannelSlice: stop \(2\) must be > start \(3\)"),
    "slice start negative": (lambda: _edit2(_set("hi", "start", -1)),
                             r"nodes\.hi\.start \(ChannelSlice\): expected an integer in \[0, 65536\], got -1"),
    "Pad huge": (lambda: _edit2(_replace("pool", {"type": "Pad", "left": 2 ** 21})),
                 r"nodes\.pool\.left \(Pad\): expected an integer in \[0, 1048576\], got 2097152"),
    "Hardtanh order": (lambda: _edit2(_replace("tanh", {"type": "Hardtanh", "min_val": 1, "max_val": 0})),
                       r"nodes\.tanh \(Hardtanh\): Hardtanh: min_val must be < max_val"),
    "Conv2d feature causal": (lambda: _conv2d_file(["causal", 0]),
                              r"nodes\.c \(Conv2d\): Conv2d: causal padding applies to time, not to features"),
    "Conv2d padding triple": (lambda: _conv2d_file([0, 0, 0]),
                              r"nodes\.c\.padding \(Conv2d\): expected 'valid', 'causal', 'same', an integer >= 0 "
                              r"or \[feature_pad, time_pad\], got \[0, 0, 0\]"),
    "Conv2d time padding": (lambda: _conv2d_file([0, "full"]),
                            r"nodes\.c\.padding \(Conv2d\): time padding must be 'valid', 'causal', 'same'.*got 'full'"),
    "Conv2d feature padding": (lambda: _conv2d_file([[1, 2, 3], 0]),
                               r"nodes\.c\.padding \(Conv2d\): feature padding must be .*got \[1, 2, 3\]"),
    # --- the model as a whole (the node is named)
    "slice beyond channels": (lambda: _edit2(_set("hi", "stop", 9)),
                              r"nodes\.hi: inconsistent model: node hi \(ChannelSlice\): ChannelSlice\(2, 9\) of 4 channels"),
    "merge of two shapes": (lambda: _edit2(_set("lo", "stop", 1)),
                            r"nodes\.gate: inconsistent model: node gate \(Mul\): Mul needs inputs of one per-frame "
                            r"shape, got \(1,\), \(2,\)"),
    "merge of two strides": (lambda: _edit2(_set("pool", "stride", 2)),
                             r"nodes\.sum: inconsistent model: node sum \(Add\): Add joins branches that advance "
                             r"at different strides"),
    "window too short": (lambda: _edit2(lambda d, a: (_set("conv", "padding", "valid")(d, a), _deep(d, ["window"], 2))),
                         r"nodes\.conv: inconsistent model: node conv \(Conv1d\): .*make the window longer"),
    "in_features mismatch": (lambda: _edit2(lambda d, a: _deep(d, ["in_features"], 3)),
                             r"nodes\.conv: inconsistent model: node conv \(Conv1d\): Conv1d expects 2 input "
                             r"channels, got 3"),
    "2-D frames into Conv1d": (lambda: _edit2(lambda d, a: _deep(d, ["in_features"], [2, 3])),
                               r"nodes\.conv: inconsistent model: node conv \(Conv1d\): Conv1d needs 1-D frames"),
    "second head": (lambda: _edit2(lambda d, a: (d["nodes"].insert(-1, {"name": "gap2", "type": "GlobalAvgPool",
                                                                        "inputs": ["gap"]}),
                                                 _set("fc", "inputs", ["gap2"])(d, a))),
                    r"nodes\.gap2: inconsistent model: node gap2 \(GlobalAvgPool\): GlobalAvgPool reduces the "
                    r"time axis, but its input already has no time axis"),
    "Crop leaves nothing": (lambda: _edit2(_replace("pool", {"type": "Crop", "left": 100})),
                            r"nodes\.pool: inconsistent model: node pool \(Crop\): Crop\(100, 0\) of 8 positions leaves none"),
    "window needs gigabytes": (lambda: _chain_file(3000, {"type": "Pad", "left": 1 << 20, "right": 1 << 20}),
                               r"__model__: one window needs .* activations \(cap 67,108,864\)"),
    "too many nodes": (lambda: _chain_file(5000, {"type": "ReLU"}),
                       r"__model__\.nodes: 5,001 nodes \(at most 4,096\)"),
    "too many edges": (lambda: _wide_add_file(70000), r"nodes\.sum\.inputs: more than 65,536 node inputs"),
    # --- Sequential marked files
    "sequential on a graph": (lambda: _edit2(lambda d, a: _deep(d, ["sequential"], True)),
                              r"__model__\.sequential: true, but the nodes are not a layer list as dse\.Sequential "
                              r"expands it: node 'conv' is not named layers\.<i>.*without \"sequential\" the file "
                              r"loads as a graph model"),
    "sequential reordered": (lambda: _seq(lambda d, a: _node(d, "layers.2.add")["inputs"].reverse()),
                             r"__model__\.sequential: .*node 5 \('layers\.2\.add'\) is not dse\.Sequential's "
                             r"node 5 \('layers\.2\.add' reading \['layers\.2\.body\.0', 'layers\.2\.skip'\]\)"),
    "sequential gap": (lambda: _seq(_rename("layers.3", "layers.7")),
                       r"__model__\.sequential: .*no node for layer 3"),
    "sequential residual without add": (lambda: _seq(_rename("layers.2.add", "layers.5")),
                                        r"__model__\.sequential: .*the residual block layers\.2 needs body nodes"),
    "sequential two skips": (lambda: _seq(lambda d, a: (
        d["nodes"].insert(4, {"name": "layers.2.skip.0", "type": "ReLU", "inputs": ["layers.1"]}),
        _node(d, "layers.2.add")["inputs"].append("layers.2.skip.0"))),
        r"__model__\.sequential: .*the skip of layers\.2 is layers\.2\.skip or layers\.2\.skip\.0, "
        r"layers\.2\.skip\.1, \.\.\., not both"),
    # --- arrays
    "missing array": (lambda: _edit2(lambda d, a: a.pop("nodes.conv.bias")),
                      r"nodes\.conv\.bias: missing array \(expected float32 of shape \(4,\)\)"),
    "extra array": (lambda: _edit2(lambda d, a: _deep(a, ["nodes.tanh.weight"], np.ones(2, np.float32))),
                    r"nodes\.tanh\.weight: unexpected array \(no parameter of the model has this name\)"),
    "v1 array name": (lambda: _edit2(lambda d, a: _deep(a, ["layers.0.weight"], a.pop("nodes.conv.weight"))),
                      r"nodes\.conv\.weight: missing array \(expected float32 of shape \(4, 2, 3\)\)"),
    "bias present but bias=false": (lambda: _edit2(_set("conv", "bias", False)),
                                    r"nodes\.conv\.bias: unexpected array"),
    "wrong shape": (lambda: _edit2(lambda d, a: _deep(a, ["nodes.fc.weight"], np.zeros((3, 3), np.float32))),
                    r"nodes\.fc\.weight: expected shape \(3, 2\), got \(3, 3\)"),
    "float64 weights": (lambda: _edit2(lambda d, a: _deep(a, ["nodes.fc.weight"], np.zeros((3, 2)))),
                        r"nodes\.fc\.weight: expected dtype float32, got float64"),
    "huge declared array": (lambda: _edit2(lambda d, a: _deep(a, ["nodes.conv.weight"], _huge_header_member())),
                            r"nodes\.conv\.weight: expected shape \(4, 2, 3\), got \(1000000, 1000000\)"),
    "NaN weight": (lambda: _edit2(lambda d, a: a["nodes.bn.weight"].__setitem__(1, np.nan)),
                   r"nodes\.bn\.weight: non-finite weight nan at index \(1,\); expected finite float32 values"),
    "negative variance": (lambda: _edit2(lambda d, a: a["nodes.bn.running_var"].__setitem__(0, -1)),
                          r"nodes\.bn\.running_var: negative variance -1\.0 at index \(0,\)"),
}


@pytest.mark.parametrize("case", sorted(BROKEN) + [f"v2: {k}" for k in sorted(BROKEN_V2)])
def test_broken_file_gives_clear_error(case, tmp_path):
    make, pattern = BROKEN_V2[case[4:]] if case.startswith("v2: ") else BROKEN[case]
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
    assert len(str(info.value)) < 2000, str(info.value)[:300]
    # the same from a file object
    with pytest.raises(dse.ModelFormatError):
        dse.load(io.BytesIO(data))


def test_bases_of_broken_files_are_valid():
    assert dse.load(io.BytesIO(_good())).output_shape == (3,)
    deflated = _zip({"__model__": np.array(json.dumps(_base()[0])), **_base()[1]}, zipfile.ZIP_DEFLATED)
    assert dse.load(io.BytesIO(deflated)).output_shape == (3,)
    for model in (_base2_model(), _base_seq_model()):
        back = dse.load(io.BytesIO(_file(*_base2(model))))
        _assert_same_model(model, back)
    assert type(dse.load(io.BytesIO(_conv2d_file([1, "same"])))) is dse.Model
    assert dse.load(io.BytesIO(_chain_file(4000, {"type": "ReLU"}))).window == 1
    assert dse.load(io.BytesIO(_wide_add_file(60000))).output_shape == (1,)


def test_limits_can_be_raised_for_trusted_files(tmp_path):
    model = dse.Sequential([dse.Conv1d(2, 4, 3, seed=0)], in_features=2, window=3)
    dse.save(model, tmp_path / "m.npz")
    with pytest.raises(dse.ModelFormatError, match=r"nodes\.layers\.0\.weight: the model would need more than 10 parameters"):
        dse.load(tmp_path / "m.npz", limits={"params": 10})
    assert dse.load(tmp_path / "m.npz", limits={"params": 100}).window == 3
    with pytest.raises(dse.ModelFormatError, match=r"__model__\.nodes: 2 nodes \(at most 1\)"):
        dse.load(tmp_path / "m.npz", limits={"nodes": 1})
    graph = io.BytesIO(_file(*_base2()))
    with pytest.raises(dse.ModelFormatError, match=r"nodes\.gate\.inputs: more than 7 node inputs"):
        dse.load(graph, limits={"edges": 7})
    graph.seek(0)
    with pytest.raises(dse.ModelFormatError, match=r"nodes\.conv\.out_channels \(Conv1d\): expected an integer in \[1, 3\], got 4"):
        dse.load(graph, limits={"channels": 3})
    with pytest.raises(ValueError, match="unknown limits"):
        dse.load(tmp_path / "m.npz", limits={"bogus": 1})


def test_optional_top_level_keys_slot_in(monkeypatch):
    """Optional keys that every version may carry (class labels, metadata) plug into
    _TOP_ANY: known to both versions, checked once the model is built, set on it."""
    def check(value, model):
        if not isinstance(value, str):
            raise dse.ModelFormatError(f"__model__.note: expected a string, got {value!r}")
        return f"{value} for {model.output_shape}"

    monkeypatch.setitem(dio._TOP_ANY, "note", check)
    for doc, arrays in (_base(), _base2()):
        assert not hasattr(dse.load(io.BytesIO(_file(doc, arrays))), "note")
        doc["note"] = "hi"
        assert dse.load(io.BytesIO(_file(doc, arrays))).note == "hi for (3,)"
        doc["note"] = 1
        with pytest.raises(dse.ModelFormatError, match=r"__model__\.note: expected a string, got 1"):
            dse.load(io.BytesIO(_file(doc, arrays)))


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
_GOOD_V2 = _file(*_base2())
_GOOD_V2_DEFLATED = _zip({"__model__": np.array(json.dumps(_base2()[0])), **_base2()[1]}, zipfile.ZIP_DEFLATED)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_mutations(_GOOD), _mutations(_GOOD_DEFLATED), _mutations(_GOOD_V2),
                 _mutations(_GOOD_V2_DEFLATED)))
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
            "x = dse.Input(1); g = dse.Model(x, dse.Add()(x, dse.Conv1d(1, 1, 1)(x))); "
            "b = io.BytesIO(); dse.save(g, b); b.seek(0); dse.load(b); "
            "assert 'onnx' not in sys.modules and 'torch' not in sys.modules, "
            "[k for k in sys.modules if k.startswith(('onnx', 'torch'))]")
    import subprocess
    subprocess.run([sys.executable, "-c", code], check=True)


def _docs():
    with open(os.path.join(ROOT, "docs", "format.md")) as fh:
        return fh.read()


def test_docs_examples_load(tmp_path, monkeypatch):
    """The JSON examples (v2, then v1) and the hand-writing recipe of docs/format.md are valid files."""
    import re
    text = _docs()
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", text, re.S)]
    v2, v1 = blocks[0], blocks[1]
    assert v2["format_version"] == 2 and v1["format_version"] == 1
    arrays = {"nodes.conv.weight": np.ones((16, 6, 3), np.float32), "nodes.conv.bias": np.zeros(16, np.float32),
              "nodes.fc.weight": np.ones((4, 8), np.float32), "nodes.fc.bias": np.zeros(4, np.float32)}
    np.savez(tmp_path / "v2.npz", __model__=np.array(json.dumps(v2)), **arrays)
    model = dse.load(tmp_path / "v2.npz")
    assert type(model) is dse.Model and model.output_shape == (4,)
    assert {n["name"] for n in v2["nodes"]} == {n.name for n in model.nodes}
    # what the docs show is what save writes for that model
    doc = dio.describe(model)[0]
    assert {k: v for k, v in doc.items() if k != "producer"} == {k: v for k, v in v2.items() if k != "producer"}
    arrays = {"layers.0.weight": np.ones((32, 6, 5), np.float32), "layers.0.bias": np.zeros(32, np.float32),
              "layers.3.body.0.weight": np.ones((32, 32, 3), np.float32),
              "layers.3.body.0.bias": np.zeros(32, np.float32),
              "layers.5.weight": np.ones((6, 32), np.float32), "layers.5.bias": np.zeros(6, np.float32)}
    np.savez(tmp_path / "v1.npz", __model__=np.array(json.dumps(v1)), **arrays)
    model = dse.load(tmp_path / "v1.npz")
    assert type(model) is dse.Sequential and model.output_shape == (6,)
    recipe = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "np.savez" in b][0]
    monkeypatch.chdir(tmp_path)
    exec(recipe, {})
    assert dse.load(tmp_path / "hand.npz").window == 4


def test_content_errors_name_the_file_first(tmp_path):
    path = tmp_path / "mine.npz"
    dse.save(examples.tiny(), path)
    with np.load(path) as f:
        members = dict(f.items())
    members["nodes.layers.0.weight"] = members["nodes.layers.0.weight"][..., :2]
    np.savez(path, **members)
    with pytest.raises(dse.ModelFormatError) as err:
        dse.load(path)
    assert str(err.value).startswith(f"{path}: nodes.layers.0.weight: expected shape (8, 3, 3), got (8, 3, 2)")
    with open(path, "rb") as fh:  # a file object with a name is named too
        with pytest.raises(dse.ModelFormatError, match=r"mine\.npz: nodes\.layers\.0\.weight: expected shape"):
            dse.load(fh)
    with pytest.raises(dse.ModelFormatError, match=r"^<file object>: nodes\.layers\.0\.weight"):
        dse.load(io.BytesIO(path.read_bytes()))
    (tmp_path / "junk.npz").write_bytes(b"\x01\x02junk")
    with pytest.raises(dse.ModelFormatError) as err:  # no Python bytes repr in the message
        dse.load(tmp_path / "junk.npz")
    assert "found bytes 01 02 6a 75 ('..ju')" in str(err.value) and "b'" not in str(err.value)


def test_docs_name_every_node_type_and_limit():
    text = _docs()
    for kind in dio._SCHEMA_V2:
        assert f"`{kind}`" in text, kind
    for name in dio.LIMITS:
        assert f"`{name}`" in text, name
