"""The benchmark's machinery (not its speed): columns agree before they are timed,
the table and JSON come out, and a column that disagrees is caught."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import deepshift_edge as dse
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
    for name in ("recompute", "numpy"):  # "x stream": against the stream timed right after the column
        assert cols[name]["streamed_beside_p50_us"] > 0
        assert cols[name]["speedup_of_streaming_p50"] == cols[name]["p50_us"] / cols[name]["streamed_beside_p50_us"]
    assert len(result["per_op"]) == len(examples.tiny().stream().plan.ops)
    json.dumps(result)  # JSON-able
    table = bench.format_table(result)
    assert "streamed push (dense)" in table and "p99 µs" in table and "stream µs" in table


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


def _wrong_twin(name, layer):
    """The example with one output channel of one layer scaled by 5%."""
    twin = examples.EXAMPLES[name]()
    wrong_layer = twin.layers[layer]
    w = wrong_layer.weight.copy()
    w[0] *= 1.05
    wrong_layer.weight = w
    return twin


def _no_litert_torch():
    raise ImportError("litert_torch", name="litert_torch")


@pytest.mark.parametrize("name,layer", [("tiny", 0), ("spectrogram", -2), ("kws", 0)])
def test_litert_column_catches_a_wrong_export(monkeypatch, name, layer):
    """The LiteRT column checks its outputs before timing: a .tflite of a model with one
    output channel of a layer scaled by 5% is reported as disagreeing, not timed (here the
    hand-built flatbuffer, the fallback when litert-torch is absent)."""
    pytest.importorskip("ai_edge_litert.interpreter")
    pytest.importorskip("flatbuffers")
    from deepshift_edge.convert import tflite_export

    real, used = tflite_export.to_tflite, []
    monkeypatch.setattr(tflite_export, "to_tflite", lambda model: used.append(1) or real(_wrong_twin(name, layer)))
    monkeypatch.setattr(bench, "_litert_torch_model", lambda model: _no_litert_torch())
    result = bench.bench_model(examples.EXAMPLES[name](), frames=20, recompute_frames=5, columns=["litert"])
    assert "disagrees" in result["columns"]["litert"]["skipped"]
    assert used  # the hand-built flatbuffer was the one checked


# ------------------------------------------------------------------ peers built from the PyTorch twin
PEERS = {"litert": ("ai_edge_litert.interpreter", "litert_torch"),
         "executorch": ("executorch.runtime",), "executorch_stream": ("executorch.runtime",),
         "tract": ("tract", "onnx")}


def _need(column):
    pytest.importorskip("torch")
    for mod in PEERS[column]:
        pytest.importorskip(mod)


@pytest.mark.parametrize("column", list(PEERS))
def test_peers_agree_on_a_streamable_model(column):
    """kws: causal dilated convs, a last-frame head, Linear + Softmax after it."""
    _need(column)
    result = bench.bench_model(examples.kws_tcn(), frames=20, recompute_frames=5, columns=[column])
    col = result["columns"][column]
    assert "skipped" not in col, col
    assert col["n"] > 0 and col["max_abs_error_vs_streamed"] < 1e-4
    if column == "litert":
        assert "litert-torch" in col["label"]


@pytest.mark.parametrize("column", list(PEERS))
def test_peers_catch_a_wrong_model(monkeypatch, column):
    """Every peer built from the PyTorch twin is checked before it is timed: a twin with one
    weight row 5% off is reported as disagreeing (the streaming peers too)."""
    _need(column)
    real = bench._torch_module
    monkeypatch.setattr(bench, "_torch_module", lambda model: real(_wrong_twin("tiny", 0)))
    result = bench.bench_model(examples.tiny(), frames=20, recompute_frames=5, columns=[column])
    assert "disagrees" in result["columns"][column].get("skipped", ""), result["columns"][column]


@pytest.mark.parametrize("column", ["tract", "executorch_stream"])
def test_streaming_peers_say_why_they_cannot_express_a_model(column):
    _need(column)
    result = bench.bench_model(examples.activity_cnn(), frames=20, recompute_frames=5, columns=[column])
    skipped = result["columns"][column]["skipped"]
    assert skipped.startswith("cannot express this model") and "GlobalAvgPool" in skipped


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
    # the int8 section (a child process per kernel path) has a test of its own below: together
    # they took longer than this timeout under an emulated ARM root
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "run.py"), "--quick", "--only", "tiny",
                           "--no-sweep", "--no-int8", "--columns", "recompute", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["push_many"]["tiny"]["ratio"] > 0
    assert (tmp_path / "results.md").read_text().startswith("# deepshift_edge benchmark")


def test_best_peer_is_the_fastest_float_runtime_beside_the_stream(monkeypatch):
    """The int8 columns and the recompute/NumPy yardsticks are not peers; a skipped peer is not
    counted; the ratio is the one taken beside the stream, not against its first p50."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "bench"))
    import run
    col = lambda p50, beside: {"p50_us": p50, "speedup_of_streaming_p50": p50 / beside}  # noqa: E731
    result = {"columns": {"streamed": {"p50_us": 1.0}, "recompute": col(2.0, 1.0), "int8": col(0.5, 1.0),
                          "litert": col(12.0, 1.0), "tract": col(15.0, 2.0),
                          "executorch_stream": {"label": "x", "skipped": "cannot express"}}}
    assert run.best_peer(result) == ("tract", 15.0, 7.5)
    assert run.best_peer({"columns": {"streamed": {"p50_us": 1.0}, "recompute": col(2.0, 1.0)}}) is None


def test_summary_takes_the_runs_best_gemm_peak_for_every_model(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "bench"))
    import run
    pm = lambda g: {"gemm_peak_gflops": g, "weight_read_floor_us": 2.0, "push_us_per_frame": 3.0,  # noqa: E731
                    "push_many_us_per_frame": 1.5}
    report = {"push_many": {"a": pm(100.0), "b": pm(50.0)},
              "models": {"a": {"model": {"macs_per_frame_streamed": 50_000}, "columns": {"tract": {"label": "T"}},
                               "best_peer": {"column": "tract", "p50_us": 40.0, "over_stream_beside": 12.5}},
                         "b": {"model": {"macs_per_frame_streamed": 100_000}, "columns": {}}}}
    lines = run.summary_lines(report)
    assert "100 GFLOP/s" in lines[1]
    assert "| a | T, 40.00 | 12.5x | 1.000 | 2.000 | 3.00 (3.00x, 1.50x) | 1.50 (1.50x) |" in lines
    assert "| b | - | - | 2.000 | 2.000 | 3.00 (1.50x, 1.50x) | 1.50 (0.75x) |" in lines


def test_bench_int8_section_runs_every_path(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "bench"))
    import run
    runs = run.int8_section(["tiny"], 50, 1)
    assert set(runs) == {"default", *run.INT8_PATHS}
    for path, r in runs.items():
        assert "models" in r, (path, r)
        m = r["models"]["tiny"]
        assert m["int8_push_us"] > 0 and m["fp32_push_us"] > 0
        assert m["int8_ring_bytes"] < m["fp32_ring_bytes"]
    lines = "\n".join(run.int8_lines(runs))
    assert "| tiny |" in lines and "int8 kernels picked here" in lines


def test_jitter_finds_a_periodic_slow_frame():
    us = np.ones(4096)
    us[3::64] = 5.0  # one frame in 64 five times slower: p99 catches it, and so does its phase
    j = bench._jitter(us, 0, 4)
    assert j["slowest_phase_median_over_p50"]["64"] == 5.0
    assert j["slowest_phase_median_over_p50"]["4"] == 1.0
    noise = np.random.default_rng(0).exponential(1.0, 4096) + 1.0
    assert max(bench._jitter(noise, 0, 4)["slowest_phase_median_over_p50"].values()) < 1.3
    # a slow frame every 56 (a running mean's re-sum period) hides from mod 4 and mod 64 ...
    us = np.ones(4096)
    us[10::56] = 3.0
    j = bench._jitter(us, 0, 4, {56})
    assert j["slowest_phase_median_over_p50"]["64"] < 1.5 and j["slowest_phase_median_over_p50"]["56"] == 3.0


def test_resum_periods_are_the_running_means_slot_cycles():
    model = dse.Sequential([dse.Conv1d(2, 3, 3), dse.MaxPool1d(2), dse.Conv1d(3, 4, 2), dse.GlobalAvgPool()],
                           in_features=2, window=32)
    plan = model.stream().plan
    (op,) = [op for op in plan.ops if op.kind == 9]  # RMEAN
    assert bench._resum_periods(plan) == {op.npos * op.nslots} and op.nslots == 2
    assert bench._resum_periods(dse.Sequential([dse.Conv1d(2, 3, 3)], in_features=2, window=8).stream().plan) == set()


def test_columns_and_stream_alternate_in_slices_with_items_in_order():
    """A column's calls run in order (a streaming peer's frames stay in sequence), in five
    slices, each followed by at least 200 pushes of the frames in turn."""
    log = []
    col, beside = bench._time_alternating(lambda i: log.append(("col", i)), range(1000),
                                          lambda f: log.append(("push", f)), [7, 8, 9], None)
    assert [i for kind, i in log if kind == "col"] == list(range(1000))
    pushes = [f for kind, f in log if kind == "push"]
    assert pushes == [7, 8, 9] * 333 + [7]
    runs = [kind for k, (kind, _) in enumerate(log) if k == 0 or log[k - 1][0] != kind]
    assert runs == ["col", "push"] * 5
    assert len(col) == 1000 and len(beside) == 1000
    few = bench._time_alternating(lambda i: None, range(3), lambda f: None, [1], None)
    assert len(few[0]) == 3 and len(few[1]) == 3 * 200  # a slice per item, 200 pushes after each


def test_interleaved_jitter_tells_the_streams_tail_from_the_machines(monkeypatch):
    """A push with one slow frame in 25 has a tail; the fixed-work call timed between its
    pushes has none. A fake clock (1 ns per reading, plus what the fake push spends) keeps the
    test free of real timing."""
    now = [0]

    def clock():
        now[0] += 1
        return now[0]

    calls = []

    def push(frame):
        calls.append(frame)
        now[0] += 1000 if frame % 25 == 0 else 100

    monkeypatch.setattr(bench.time, "perf_counter_ns", clock)
    j = bench._interleaved_jitter(push, list(range(1000)), macs=300)
    assert calls == list(range(1000))
    assert j["push_p99_over_p50"] == pytest.approx(1001 / 101)
    assert j["control_p99_over_p50"] == 1.0
    lines = bench.format_table({"machine": {"deepshift_edge": "x", "python": "3", "numpy": "2", "cpu": "c",
                                            "isa": "i", "debug_build": False},
                                "model": {"frame_shape": [1], "output_shape": [1], "window": 1,
                                          "receptive_field": 1, "hop": 1, "macs_per_frame_streamed": 1},
                                "mode": "dense", "rate_hz": None, "columns": {},
                                "jitter": {"p99_over_p50": 1.0, "slowest_phase_median_over_p50": {},
                                           "interleaved": j}})
    assert "p99/p50 push 9.91, the fixed-work call 1.00" in lines


@pytest.mark.parametrize("name", ["kws", "activity", "spectrogram"])
def test_onnxruntime_int8_column_runs_the_same_quantized_model(name):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    result = bench.bench_model(examples.EXAMPLES[name](), frames=20, recompute_frames=5,
                               columns=["int8", "onnxruntime_int8"])
    col = result["columns"]["onnxruntime_int8"]
    assert "skipped" not in col, col
    assert "int8 vs reference" in col["label"] and "max 0 LSB" in col["label"] or "max 1 LSB" in col["label"]
    assert col["max_abs_error_vs_streamed"] < 0.1  # quantization error of the same int8 model


def test_onnxruntime_int8_column_catches_a_wrong_model(monkeypatch):
    """The int8 agreement check fails when the QDQ graph is not the int8 model's."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from deepshift_edge.convert import onnx_qdq_export
    real = onnx_qdq_export.to_onnx_qdq

    def wrong(qmodel, **kw):
        qmodel.qnodes[1].bias = qmodel.qnodes[1].bias + 2000
        try:
            return real(qmodel, **kw)
        finally:
            qmodel.qnodes[1].bias = qmodel.qnodes[1].bias - 2000

    monkeypatch.setattr(onnx_qdq_export, "to_onnx_qdq", wrong)
    result = bench.bench_model(examples.activity_cnn(), frames=20, recompute_frames=5,
                               columns=["onnxruntime_int8"])
    assert "LSB from the int8 reference" in result["columns"]["onnxruntime_int8"]["skipped"]


@pytest.mark.parametrize("name", ["kws", "activity", "spectrogram", "tiny"])
def test_litert_int8_column_runs_the_same_quantized_model(name):
    pytest.importorskip("ai_edge_litert.interpreter")
    pytest.importorskip("flatbuffers")
    result = bench.bench_model(examples.EXAMPLES[name](), frames=20, recompute_frames=5,
                               columns=["int8", "litert_int8"])
    col = result["columns"]["litert_int8"]
    assert "skipped" not in col, col
    assert "reference kernels:" in col["label"] and "XNNPACK:" in col["label"]
    assert col["max_abs_error_vs_streamed"] < 0.1  # quantization error of the same int8 model


def test_litert_int8_column_catches_a_wrong_model(monkeypatch):
    """The int8 agreement check fails when the .tflite is not the int8 model's."""
    pytest.importorskip("ai_edge_litert.interpreter")
    pytest.importorskip("flatbuffers")
    from deepshift_edge.convert import tflite_int8_export
    real = tflite_int8_export.to_tflite_int8

    def wrong(qmodel):
        conv = qmodel.qnodes[1]
        right = conv.weight
        conv.weight = np.clip(right.astype(int) + 20, -127, 127).astype(np.int8)
        try:
            return real(qmodel)
        finally:
            conv.weight = right

    monkeypatch.setattr(tflite_int8_export, "to_tflite_int8", wrong)
    result = bench.bench_model(examples.kws_tcn(), frames=20, recompute_frames=5, columns=["litert_int8"])
    assert "LSB from the int8 reference" in result["columns"]["litert_int8"]["skipped"]
