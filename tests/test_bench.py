"""The benchmark's machinery (not its speed): columns agree before they are timed,
the table and JSON come out, and a column that disagrees is caught."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from deepshift_edge.tools import bench
from deepshift_edge.data import examples

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_model_reports_every_column():
    result = bench.bench_model(examples.tiny(), frames=50, recompute_frames=10,
                               columns=["recompute", "numpy"], per_layer=True)
    cols = result["columns"]
    assert set(cols) == {"streamed", "recompute", "numpy"}
    for name in ("recompute", "numpy"):
        assert cols[name]["max_abs_error_vs_streamed"] < 1e-5
        assert cols[name]["p50_us"] > 0 and cols[name]["n"] == 10
    assert cols["streamed"]["n"] == 50
    assert len(result["per_op"]) == len(examples.tiny().stream().plan.ops)
    json.dumps(result)  # JSON-able
    table = bench.format_table(result)
    assert "streamed push (dense)" in table and "p99 µs" in table


def test_disagreeing_column_is_reported_not_timed(monkeypatch):
    def wrong(model, x, check_idx, streamed):
        return (lambda i: None), bench._agree("wrong", streamed + 1.0, streamed)

    monkeypatch.setitem(bench.COLUMNS, "wrong", ("a wrong runtime", wrong))
    result = bench.bench_model(examples.tiny(), frames=20, recompute_frames=5, columns=["wrong"])
    assert "disagrees" in result["columns"]["wrong"]["skipped"]


def test_missing_runtime_is_skipped(monkeypatch):
    def absent(model, x, check_idx, streamed):
        raise ImportError("no module", name="nonexistent_runtime")

    monkeypatch.setitem(bench.COLUMNS, "absent", ("absent runtime", absent))
    result = bench.bench_model(examples.tiny(), frames=20, recompute_frames=5, columns=["absent"])
    assert "not installed" in result["columns"]["absent"]["skipped"]


def test_cadence_mode_sleeps_between_frames():
    us = bench._time_frames(lambda i: None, list(range(20)), rate=2000.0)
    assert len(us) == 20  # the sleeps are not part of the timings
    import time
    t0 = time.perf_counter()
    bench._time_frames(lambda i: None, list(range(20)), rate=2000.0)
    assert time.perf_counter() - t0 >= 20 / 2000.0 * 0.9


@pytest.mark.parametrize("columns", ["pytorch", "onnxruntime", "litert"])
def test_optional_runtimes_agree_when_installed(columns):
    if columns == "litert":
        pytest.importorskip("ai_edge_litert.interpreter")
        pytest.importorskip("flatbuffers")
    else:
        pytest.importorskip("torch")
    if columns == "onnxruntime":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnx")
    result = bench.bench_model(examples.activity_cnn(), frames=20, recompute_frames=5, columns=[columns])
    col = result["columns"][columns]
    assert "skipped" not in col, col
    assert col["max_abs_error_vs_streamed"] < 1e-4


@pytest.mark.parametrize("name,layer", [("tiny", 0), ("spectrogram", -2), ("kws", 0)])
def test_litert_column_catches_a_wrong_export(monkeypatch, name, layer):
    """The LiteRT column checks its outputs before timing: a .tflite of a model with one
    output channel of a layer scaled by 5% is reported as disagreeing, not timed."""
    pytest.importorskip("ai_edge_litert.interpreter")
    pytest.importorskip("flatbuffers")
    from deepshift_edge.convert import tflite_export

    real = tflite_export.to_tflite

    def wrong(model):
        twin = examples.EXAMPLES[name]()
        wrong_layer = twin.layers[layer]
        w = wrong_layer.weight.copy()
        w[0] *= 1.05
        wrong_layer.weight = w
        return real(twin)

    monkeypatch.setattr(tflite_export, "to_tflite", wrong)
    result = bench.bench_model(examples.EXAMPLES[name](), frames=20, recompute_frames=5, columns=["litert"])
    assert "disagrees" in result["columns"]["litert"]["skipped"]


def test_agreement_is_judged_against_how_much_outputs_vary():
    rng = np.random.default_rng(0)
    want = 1 / 12 + 1e-4 * rng.standard_normal((30, 12))  # near-uniform probabilities
    bench._agree("float32 rounding", want + 1e-9, want)  # passes
    with pytest.raises(AssertionError, match="of how much the outputs vary"):
        bench._agree("wrong by 1e-6", want + 1e-6 * rng.standard_normal(want.shape), want)


def test_litert_column_skipped_without_the_runtime(monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # import fails
    result = bench.bench_model(examples.tiny(), frames=20, recompute_frames=5, columns=["litert"])
    skipped = result["columns"]["litert"]["skipped"]
    assert skipped.startswith("not installed") and "ai_edge_litert" in skipped
    assert result["columns"]["litert"]["label"].startswith("LiteRT")


def test_cli_bench_writes_json(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "deepshift_edge", "bench", "tiny", "--frames", "30",
                           "--recompute-frames", "5", "--columns", "recompute", "--json", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["columns"]["recompute"]["n"] == 5
    assert "full-window recompute" in proc.stdout


@pytest.mark.skipif(not os.path.exists(os.path.join(ROOT, "bench", "run.py")),
                    reason="bench/ is not shipped in the sdist or to wheel tests")
def test_bench_script_quick_run(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "run.py"), "--quick", "--only", "tiny",
                           "--no-sweep", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["push_many"]["tiny"]["ratio"] > 0
    assert (tmp_path / "results.md").read_text().startswith("# deepshift_edge benchmark")
