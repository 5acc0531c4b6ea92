"""Class names and free-form metadata in model files: kept by save/load, validated both ways,
shown by `inspect`, used by `run`, accepted by from_onnx/from_torch and `convert`."""
import json

import numpy as np
import pytest

import deepshift_edge as dse
from deepshift_edge.data import datasets
from deepshift_edge.formats import npz as dio
from deepshift_edge.tools.cli import main, parse_metadata

LABELS = ["rest", "walk", "run"]
META = {"name": "gait", "sample_rate_hz": 50, "gain": 1.5, "units": "g", "calibrated": True,
        "notes": None}


def _classifier():
    return dse.Sequential([dse.Conv1d(2, 4, 3, seed=0), dse.ReLU(), dse.GlobalAvgPool(),
                           dse.Linear(4, 3, seed=1), dse.Softmax()], in_features=2, window=6)


def _doc(path):
    with np.load(path) as f:
        return json.loads(str(f["__model__"]))


def test_round_trip_from_arguments_and_from_the_model(tmp_path):
    model = _classifier()
    assert model.labels is None and model.metadata == {}
    dse.save(model, tmp_path / "a.npz", labels=LABELS, metadata=META)
    back = dse.load(tmp_path / "a.npz")
    assert back.labels == tuple(LABELS) and back.metadata == META
    assert _doc(tmp_path / "a.npz")["format_version"] == 2
    # the model's own attributes are saved when no argument is given; arguments win
    dse.save(back, tmp_path / "b.npz")
    again = dse.load(tmp_path / "b.npz")
    assert again.labels == tuple(LABELS) and again.metadata == META
    dse.save(back, tmp_path / "c.npz", labels=["x", "y", "z"])
    assert dse.load(tmp_path / "c.npz").labels == ("x", "y", "z")


def test_a_model_without_them_writes_neither_key(tmp_path):
    dse.save(_classifier(), tmp_path / "m.npz")
    doc = _doc(tmp_path / "m.npz")
    assert "labels" not in doc and "metadata" not in doc
    back = dse.load(tmp_path / "m.npz")
    assert back.labels is None and back.metadata == {}


def test_the_shipped_model_carries_its_class_names_and_provenance():
    model = dse.load("basicmotions")
    assert model.labels == datasets.LABELS["basicmotions"] == datasets.load_basicmotions().labels
    assert model.metadata["sample_rate_hz"] == 10 and "BSD-3-Clause" in model.metadata["trained_on"]


@pytest.mark.parametrize("labels, metadata, match", [
    (["a", "b"], None, r"labels: expected 3 class names \(one per output value\), got 2"),
    ("abc", None, "labels: expected a list of class names"),
    (["a", 2, "c"], None, r"labels\[1\]: expected a string, got int"),
    (["a", "", "c"], None, r"labels\[1\]: expected 1 to 200 printable characters"),
    (["a", "b\nc", "d"], None, r"labels\[1\]: expected 1 to 200 printable characters"),
    (["a", "x" * 201, "c"], None, r"labels\[1\]: expected 1 to 200"),
    (["a", "b", "a"], None, r"labels\[2\]: 'a' is also label 0"),
    (None, ["name"], "metadata: expected an object of names to values, got list"),
    (None, {"rate": [1, 2]}, "metadata.rate: expected a string, a number, true/false or null, got list"),
    (None, {"rate": float("nan")}, "metadata.rate: expected a finite number"),
    (None, {"": 1}, "metadata: keys must be strings of 1 to 64"),
    (None, {f"k{i}": i for i in range(65)}, r"metadata: 65 entries \(at most 64\)"),
    (None, {"notes": "x" * 4097}, "metadata.notes: a string of 4,097 characters"),
    (None, {f"k{i}": "x" * 4000 for i in range(5)}, "metadata: 20,[0-9]+ characters as JSON"),
])
def test_bad_labels_and_metadata_are_refused_on_save(tmp_path, labels, metadata, match):
    with pytest.raises(dse.ModelError, match=match):
        dse.save(_classifier(), tmp_path / "m.npz", labels=labels, metadata=metadata)
    assert not (tmp_path / "m.npz").exists()


def test_labels_need_a_vector_output(tmp_path):
    seq = dse.Sequential([dse.Conv2d(1, 2, (1, 3))], in_features=(1, 4), window=5)  # output (2, 4)
    with pytest.raises(dse.ModelError, match=r"labels name the entries of a vector output, but this "
                                             r"model outputs shape \(2, 4\)"):
        dse.save(seq, tmp_path / "m.npz", labels=[str(i) for i in range(8)])


@pytest.mark.parametrize("key, value, match", [
    ("labels", ["a", "b"], r"__model__\.labels: expected 3 class names"),
    ("labels", {"0": "a"}, r"__model__\.labels: expected a list of class names \(strings\), got dict"),
    ("metadata", {"rate": {"nested": 1}}, r"__model__\.metadata\.rate: expected a string, a number"),
    ("metadata", "gait", r"__model__\.metadata: expected an object"),
    ("metdata", {}, r"__model__: unknown keys \['metdata'\]"),
])
def test_bad_labels_and_metadata_in_a_file_are_refused_on_load(tmp_path, key, value, match):
    path = tmp_path / "m.npz"
    dse.save(_classifier(), path)
    with np.load(path) as f:
        members = dict(f.items())
    doc = json.loads(str(members["__model__"]))
    doc[key] = value
    members["__model__"] = np.array(json.dumps(doc))
    np.savez(path, **members)
    with pytest.raises(dse.ModelFormatError, match=match):
        dse.load(path)


def test_inspect_shows_them_and_run_prints_the_label_column(tmp_path, capsys, monkeypatch):
    path = tmp_path / "m.npz"
    dse.save(_classifier(), path, labels=LABELS, metadata=META)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "labels (3): rest, walk, run" in out
    assert "metadata name: gait" in out and "metadata sample_rate_hz: 50" in out
    assert "metadata calibrated: true" in out and "metadata notes: null" in out
    frames = np.random.default_rng(0).standard_normal((8, 2))
    np.save(tmp_path / "x.npy", frames)
    assert main(["run", str(path), "--input", str(tmp_path / "x.npy")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "frame,row,class,label,score"
    want = dse.load(path).stream().push_many(frames.astype(np.float32)).argmax(1)
    assert [line.split(",")[3] for line in lines[1:]] == [LABELS[k] for k in want]
    # --labels overrides the file's; a wrong count is an error naming the model
    assert main(["run", str(path), "--input", str(tmp_path / "x.npy"), "--labels", "A,B,C"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split(",")[3] in "ABC"
    assert main(["run", str(path), "--input", str(tmp_path / "x.npy"), "--labels", "A,B"]) == 2
    assert f"--labels gives 2 names for the 3 classes of {path}" in capsys.readouterr().err


def test_parse_metadata_keeps_json_scalars_and_strings():
    got = parse_metadata(["name=gait", "rate=50", "gain=1.5", "ok=true", "none=null", 'version="1.10"',
                          "units=m/s^2", "expr=a=b", "list=[1,2]", "nan=NaN"])
    assert got == {"name": "gait", "rate": 50, "gain": 1.5, "ok": True, "none": None,
                   "version": "1.10", "units": "m/s^2", "expr": "a=b", "list": "[1,2]", "nan": "NaN"}
    with pytest.raises(dse.ModelError, match="expected KEY=VALUE, got 'novalue'"):
        parse_metadata(["novalue"])


def _onnx_classifier(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    nn = torch.nn
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                        nn.Linear(4, 3), nn.Softmax(dim=1)).eval()
    return net


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")  # the test makes a TorchScript file
def test_from_torch_and_convert_take_labels_and_metadata(tmp_path, capsys):
    net = _onnx_classifier(tmp_path)
    model = dse.from_torch(net, in_features=2, window=6, labels=LABELS, metadata={"name": "gait"})
    assert model.labels == tuple(LABELS) and model.metadata == {"name": "gait"}
    with pytest.raises(dse.ModelError, match="labels: expected 3 class names"):
        dse.from_torch(net, in_features=2, window=6, labels=["a"])
    import torch
    torch.jit.script(net).save(str(tmp_path / "net.pt"))
    assert main(["convert", str(tmp_path / "net.pt"), str(tmp_path / "m.npz"), "--window", "6",
                 "--in-features", "2", "--labels", "rest, walk,run", "--metadata", "name=gait",
                 "--metadata", "sample_rate_hz=50"]) == 0
    back = dse.load(tmp_path / "m.npz")
    assert back.labels == tuple(LABELS) and back.metadata == {"name": "gait", "sample_rate_hz": 50}
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "net.pt"), str(tmp_path / "m2.npz"), "--window", "6",
                 "--in-features", "2", "--labels", "a,b"]) == 1
    assert "labels: expected 3 class names (one per output value), got 2" in capsys.readouterr().err
    assert not (tmp_path / "m2.npz").exists()


def test_limits_are_documented_in_the_format():
    import os
    with open(os.path.join(os.path.dirname(__file__), os.pardir, "docs", "format.md"), encoding="utf-8") as fh:
        text = fh.read()
    for key in ("| `labels` |", "| `metadata` |"):
        assert key in text
    for cap in ("label_chars", "metadata_keys", "metadata_key_chars", "metadata_value_chars", "metadata_chars"):
        assert str(dio.ANNOTATION_LIMITS[cap]) in text.replace(",", ""), cap
