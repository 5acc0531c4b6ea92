"""`deepshift-edge run`: frames from stdin / CSV / .npy, one prediction per output line."""
import io
import json
import os
import select
import subprocess
import sys
import time

import numpy as np
import pytest

import deepshift_edge as dse
from deepshift_edge.data import datasets
from deepshift_edge.data import examples
from deepshift_edge.tools.cli import main
from deepshift_edge.tools.run import MalformedFrame, parse_frame

SHIPPED = datasets.data_path("basicmotions_test.npy")


def _run(argv, monkeypatch, capsys, stdin=b""):
    """main(['run', ...]) in-process with a fake stdin; (status, stdout, stderr)."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    status = main(["run"] + argv)
    out, err = capsys.readouterr()
    return status, out, err


def _csv(out):
    lines = out.splitlines()
    return lines[0].split(","), [line.split(",") for line in lines[1:]]


def _lines(frames, fmt="{:.7g}"):
    return "".join(",".join(fmt.format(float(v)) for v in row) + "\n" for row in frames)


@pytest.fixture(scope="module")
def bm():
    model = dse.load("basicmotions")
    x = np.load(SHIPPED)
    return model, x, model.stream().push_many(x)


def test_shipped_example_npy_matches_the_stream_and_the_offline_model(bm, monkeypatch, capsys):
    model, x, streamed = bm
    status, out, err = _run(["basicmotions", "--input", "basicmotions"], monkeypatch, capsys)
    assert status == 0
    header, rows = _csv(out)
    assert header == ["frame", "row", "class", "label", "score"]
    assert len(rows) == len(x) - model.window + 1 == len(streamed)
    frames = [int(r[0]) for r in rows]
    assert frames == list(range(model.window - 1, len(x))) == [int(r[1]) for r in rows]
    assert [int(r[2]) for r in rows] == list(streamed.argmax(1))
    assert [r[3] for r in rows] == [datasets.LABELS["basicmotions"][k] for k in streamed.argmax(1)]
    np.testing.assert_allclose([float(r[4]) for r in rows], streamed.max(1), rtol=1e-5)
    offline = model.forward(x)
    assert (offline.argmax(1) == streamed.argmax(1)).all()
    assert "400 frames pushed, 361 outputs" in err


def test_stdin_csv_with_header_comments_and_malformed_lines_skips_them(bm, monkeypatch, capsys):
    model, x, streamed = bm
    x = x[:60]
    clean = "ax,ay,az,gx,gy,gz\n" + _lines(x)
    lines = clean.splitlines(keepends=True)
    bad = {5: "1,2,abc,4,5,6\n", 9: "1,2,3\n", 12: "nan,1,2,3,4,5\n", 20: "\n", 21: "# a comment\n",
           30: "1,,3,4,5,6\n", 41: "[1, 2, 3, 4, 5, \"x\"]\n", 50: "1,2,3,4,5,6,7\n"}
    for i in sorted(bad, reverse=True):
        lines.insert(i, bad[i])
    noisy = "".join(lines).encode() + b"\xff\xfe,1,2\n"  # a line that is not UTF-8, at the end
    status, out, err = _run(["basicmotions", "--input", "-"], monkeypatch, capsys, noisy)
    assert status == 0
    header, rows = _csv(out)
    assert header == ["frame", "line", "class", "label", "score"]
    # The stream never loses its place: same frames, same predictions as the clean input.
    ref = model.stream().push_many(x.astype(np.float32))
    assert [int(r[0]) for r in rows] == list(range(model.window - 1, 60))
    assert [int(r[2]) for r in rows] == list(ref.argmax(1))
    np.testing.assert_allclose([float(r[4]) for r in rows], ref.max(1), rtol=1e-4)
    # ... and `line` points at the input line each frame came from.
    text = "".join(lines).splitlines()
    for r in rows:
        fields = text[int(r[1]) - 1].split(",")
        np.testing.assert_allclose([float(v) for v in fields], x[int(r[0])], rtol=1e-6)
    msgs = [m for m in err.splitlines() if "(skipped)" in m]
    at = {text: lines.index(text) + 1 for text in bad.values()}
    expected = {at[bad[5]]: "field 3 ('abc') is not a number", at[bad[9]]: "expected 6 values, got 3",
                at[bad[12]]: "value 1 is nan", at[bad[30]]: "field 2 is empty", at[bad[41]]: "numbers only",
                at[bad[50]]: "expected 6 values, got 7", len(lines) + 1: "not valid UTF-8"}
    assert len(msgs) == len(expected), err
    for lineno, why in expected.items():
        assert any(m.startswith(f"deepshift-edge run: stdin, line {lineno}: ") and why in m for m in msgs), (lineno, err)
    assert "7 malformed line(s)" in err and "60 frames pushed, 21 outputs" in err


def test_on_error_stop_exits_1_after_the_outputs_so_far(bm, monkeypatch, capsys):
    model, x, streamed = bm
    text = _lines(x[:45]) + "oops\n" + _lines(x[45:50])
    status, out, err = _run(["basicmotions", "-i", "-", "--on-error", "stop"], monkeypatch, capsys,
                            text.encode())
    assert status == 1
    _, rows = _csv(out)
    assert [int(r[0]) for r in rows] == list(range(39, 45))
    assert "line 46: field 1 ('oops') is not a number (stopping)" in err
    assert "45 frames pushed, 6 outputs, 1 malformed line(s) (46)" in err


def test_jsonl_latency_and_json_array_lines(bm, monkeypatch, capsys):
    model, x, streamed = bm
    text = "".join(json.dumps([float(v) for v in row]) + "\n" for row in x[:50])
    status, out, err = _run(["basicmotions", "-i", "-", "--format", "jsonl", "--latency"], monkeypatch,
                            capsys, text.encode())
    assert status == 0
    recs = [json.loads(line) for line in out.splitlines()]
    assert [r["frame"] for r in recs] == list(range(39, 50))
    assert [r["line"] for r in recs] == list(range(40, 51))
    assert [r["class"] for r in recs] == list(streamed[:11].argmax(1))
    assert all(set(r) == {"frame", "line", "class", "label", "score", "latency_us"} for r in recs)
    assert all(r["latency_us"] > 0 for r in recs)
    assert "push latency over the last 50 frames (µs): p50" in err


def test_values_for_a_model_without_softmax_csv_and_jsonl(tmp_path, monkeypatch, capsys):
    model = examples.tiny()
    path = tmp_path / "tiny.npz"
    dse.save(model, path)
    x = np.random.default_rng(0).standard_normal((12, 3)).astype(np.float32)
    ref = model.forward(x)
    status, out, _ = _run([str(path), "-i", "-"], monkeypatch, capsys, _lines(x, "{!r}").encode())
    assert status == 0
    header, rows = _csv(out)
    assert header == ["frame", "line"] + [f"y{i}" for i in range(8)]
    np.testing.assert_allclose(np.array([r[2:] for r in rows], dtype=float), ref, rtol=1e-4, atol=1e-5)
    # whitespace-separated values and JSON lines output
    text = "".join(" ".join(repr(float(v)) for v in row) + "\n" for row in x)
    status, out, _ = _run([str(path), "-i", "-", "--format", "jsonl"], monkeypatch, capsys, text.encode())
    recs = [json.loads(line) for line in out.splitlines()]
    np.testing.assert_allclose([r["values"] for r in recs], ref, rtol=1e-4, atol=1e-5)
    # --output class on a non-softmax model: argmax of the values
    status, out, _ = _run([str(path), "-i", "-", "--output", "class"], monkeypatch, capsys, text.encode())
    _, rows = _csv(out)
    assert [int(r[2]) for r in rows] == list(ref.argmax(1))


def test_2d_frames_from_csv_and_npy(tmp_path, monkeypatch, capsys):
    model = dse.Sequential([dse.Conv2d(2, 3, (3, 2)), dse.ReLU(), dse.LastFrame(), dse.Flatten()],
                           in_features=(2, 5))
    dse.save(model, tmp_path / "m.npz")
    x = np.random.default_rng(1).standard_normal((9, 2, 5)).astype(np.float32)
    ref = model.forward(x).reshape(len(x) - model.window + 1, -1)
    status, out, _ = _run([str(tmp_path / "m.npz"), "-i", "-"], monkeypatch, capsys,
                          _lines(x.reshape(9, -1), "{!r}").encode())
    assert status == 0
    _, rows = _csv(out)
    np.testing.assert_allclose(np.array([r[2:] for r in rows], dtype=float), ref, rtol=1e-4, atol=1e-5)
    for arr in (x, x.reshape(9, 10).astype(np.float64)):
        np.save(tmp_path / "x.npy", arr)
        status, out2, _ = _run([str(tmp_path / "m.npz"), "-i", str(tmp_path / "x.npy")], monkeypatch, capsys)
        assert status == 0
        assert [r[2:] for r in _csv(out2)[1]] == [r[2:] for r in rows]


def test_csv_file_input_and_nan_rows_in_npy(bm, tmp_path, monkeypatch, capsys):
    model, x, streamed = bm
    (tmp_path / "in.csv").write_text(_lines(x[:45]))
    status, out, _ = _run(["basicmotions", "-i", str(tmp_path / "in.csv")], monkeypatch, capsys)
    assert status == 0 and [int(r[2]) for r in _csv(out)[1]] == list(streamed[:6].argmax(1))
    y = x[:46].copy()
    y[3, 2] = np.nan
    np.save(tmp_path / "nan.npy", y)
    status, out, err = _run(["basicmotions", "-i", str(tmp_path / "nan.npy")], monkeypatch, capsys)
    assert status == 0 and "row 3: the frame holds NaN or Inf" in err
    ref = model.stream().push_many(np.delete(y, 3, axis=0))
    _, rows = _csv(out)
    assert [int(r[0]) for r in rows] == list(range(39, 45)) and [int(r[1]) for r in rows] == list(range(40, 46))
    assert [int(r[2]) for r in rows] == list(ref.argmax(1))


def test_rate_paces_the_frames(tmp_path, monkeypatch, capsys):
    model = examples.tiny()
    dse.save(model, tmp_path / "t.npz")
    np.save(tmp_path / "x.npy", np.zeros((21, 3), np.float32))
    t0 = time.perf_counter()
    status, out, _ = _run([str(tmp_path / "t.npz"), "-i", str(tmp_path / "x.npy"), "--rate", "100"],
                          monkeypatch, capsys)
    elapsed = time.perf_counter() - t0
    assert status == 0 and len(out.splitlines()) == 1 + 21 - model.window + 1
    assert elapsed >= 0.19  # 21 ticks of 10 ms


def test_decimated_mode_outputs_every_hop(bm, monkeypatch, capsys):
    model, x, _ = bm
    assert model.hop == 4
    status, out, _ = _run(["basicmotions", "-i", "basicmotions", "--mode", "decimated"], monkeypatch, capsys)
    frames = [int(r[0]) for r in _csv(out)[1]]
    assert status == 0 and frames == list(range(39, 400, 4))


def test_usage_errors(tmp_path, monkeypatch, capsys):
    status, _, err = _run([str(tmp_path / "missing.npz"), "-i", "-"], monkeypatch, capsys)
    assert status == 1 and "No such file" in err
    status, _, err = _run(["basicmotions", "-i", str(tmp_path / "missing.csv")], monkeypatch, capsys)
    assert status == 1 and "missing.csv" in err
    np.save(tmp_path / "bad.npy", np.zeros((10, 4)))
    status, _, err = _run(["basicmotions", "-i", str(tmp_path / "bad.npy")], monkeypatch, capsys)
    assert status == 1 and "expected an array of shape (T, 6)" in err and "(10, 4)" in err
    status, _, err = _run(["basicmotions", "-i", "-", "--labels", "a,b"], monkeypatch, capsys)
    assert status == 2 and "--labels gives 2 names for the 4 classes of basicmotions" in err
    status, _, err = _run(["basicmotions", "-i", "-", "--rate", "0"], monkeypatch, capsys)
    assert status == 2 and "--rate" in err
    status, out, _ = _run(["basicmotions", "-i", "basicmotions", "--labels", "s,r,w,b"], monkeypatch, capsys)
    assert status == 0 and _csv(out)[1][0][3] == "s"


def test_parse_frame():
    np.testing.assert_array_equal(parse_frame(" 1, 2 ;3 ", 3), [1, 2, 3])
    np.testing.assert_array_equal(parse_frame("1 2\t3", 3), [1, 2, 3])
    np.testing.assert_array_equal(parse_frame("[[1, 2], [3, 4]]", 4), [1, 2, 3, 4])
    for text, why in [("1,2", "expected 3 values, got 2"), ("1,x,3", "field 2 ('x')"),
                      ("1,inf,3", "value 2 is inf"), ("[1, 2", "not a valid JSON array"), (",1,2", "field 1 is empty")]:
        with pytest.raises(MalformedFrame, match=why.replace("(", r"\(").replace(")", r"\)")):
            parse_frame(text, 3)


def test_other_subcommands_accept_the_shipped_model_name(capsys):
    assert main(["inspect", "basicmotions"]) == 0
    assert "equivalence: window-exact" in capsys.readouterr().out


# ----------------------------------------------------------------------------- a real pipe
def _readline(proc, timeout=20.0) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "no output line within the timeout: output not flushed per line?"
    return proc.stdout.readline().decode()


def test_subprocess_pipe_answers_each_line_as_it_arrives(bm):
    """Write one line at a time and wait for its prediction before writing the next: this
    only works if `run` reads stdin line by line and flushes stdout after every output."""
    model, x, streamed = bm
    proc = subprocess.Popen([sys.executable, "-m", "deepshift_edge", "run", "basicmotions", "--input", "-",
                             "--format", "jsonl"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": ""})
    try:
        for row in x[:model.window - 1]:
            proc.stdin.write(_lines([row]).encode())
        proc.stdin.flush()
        got = []
        for i, row in enumerate(x[model.window - 1:model.window + 9]):
            proc.stdin.write(_lines([row]).encode())
            if i == 3:
                proc.stdin.write(b"not,a,frame\n")  # skipped, the next line still answers
            proc.stdin.flush()
            got.append(json.loads(_readline(proc)))
        proc.stdin.close()
        rest = proc.stdout.read()
        assert proc.wait(timeout=20) == 0
        err = proc.stderr.read().decode()
    finally:
        proc.kill()
    assert rest == b""
    assert [r["frame"] for r in got] == list(range(model.window - 1, model.window + 9))
    assert [r["class"] for r in got] == list(streamed[:10].argmax(1))
    assert "line 44: field 1 ('not') is not a number (skipped)" in err
    assert "49 frames pushed, 10 outputs" in err


def test_subprocess_reader_going_away_is_quiet(tmp_path):
    np.save(tmp_path / "long.npy", np.tile(np.load(SHIPPED), (50, 1)))
    proc = subprocess.Popen([sys.executable, "-m", "deepshift_edge", "run", "basicmotions", "-i",
                             str(tmp_path / "long.npy")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert _readline(proc).startswith("frame,row,class")
    proc.stdout.close()  # like `| head -1`
    assert proc.wait(timeout=60) == 0
    assert "Traceback" not in proc.stderr.read().decode()


def test_empty_input_prints_the_header_and_ctrl_c_stops_cleanly(bm, monkeypatch, capsys):
    model, x, streamed = bm
    status, out, err = _run(["basicmotions", "-i", "-"], monkeypatch, capsys, b"")
    assert status == 0 and out == "frame,line,class,label,score\n" and "0 frames pushed, 0 outputs" in err

    class Interrupted(io.BytesIO):  # Ctrl-C while waiting for the 45th line
        def readline(self, *a):
            line = super().readline(*a)
            if not line:
                raise KeyboardInterrupt
            return line

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(Interrupted(_lines(x[:44]).encode())))
    assert main(["run", "basicmotions", "-i", "-", "--latency"]) == 130
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 1 + 5 and "44 frames pushed, 5 outputs" in err and "p50" in err


# ----------------------------------------------------------------------------- inputs that hold no frame
def test_a_binary_input_is_refused_before_any_line(tmp_path, monkeypatch, capsys):
    model_file = datasets.data_path("basicmotions_cnn.npz")
    status, out, err = _run(["basicmotions", "-i", model_file], monkeypatch, capsys)
    assert status == 1 and out == ""
    assert f"{model_file} holds a zip archive (a .npz model file?), not frames" in err
    assert "not valid UTF-8" not in err
    noise = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    (tmp_path / "noise.bin").write_bytes(noise)
    status, out, err = _run(["basicmotions", "-i", str(tmp_path / "noise.bin")], monkeypatch, capsys)
    assert status == 1 and "noise.bin holds binary data, not frames" in err and len(err.splitlines()) == 1
    status, out, err = _run(["basicmotions", "-i", "-"], monkeypatch, capsys, noise)  # through a pipe
    assert status == 1 and "stdin holds binary data, not frames" in err
    assert "not valid UTF-8" not in err


def test_a_npy_file_under_another_name_is_read_as_one(bm, tmp_path, monkeypatch, capsys):
    model, x, streamed = bm
    with open(tmp_path / "frames.dat", "wb") as fh:
        np.save(fh, x[:50])
    status, out, _ = _run(["basicmotions", "-i", str(tmp_path / "frames.dat")], monkeypatch, capsys)
    assert status == 0 and [int(r[2]) for r in _csv(out)[1]] == list(streamed[:11].argmax(1))


def test_no_valid_frame_exits_1_and_says_so(monkeypatch, capsys):
    status, _, err = _run(["basicmotions", "-i", "-"], monkeypatch, capsys, b"a,b\n1,2\n3,4\n")
    assert status == 1
    assert "no valid frame in stdin: every line was malformed" in err
    # one good frame among bad ones is a normal run
    status, _, _ = _run(["basicmotions", "-i", "-"], monkeypatch, capsys, b"1,2\n1,2,3,4,5,6\n")
    assert status == 0


def _timestamped(tmp_path, x, header=True):
    lines = ["time,ax,ay,az,gx,gy,gz"] if header else []
    lines += [f"2024-05-01T10:00:{i / 10:04.1f}," + ",".join(f"{v:.7g}" for v in row) for i, row in enumerate(x)]
    path = tmp_path / "ts.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_columns_pick_the_frame_out_of_wider_lines(bm, tmp_path, monkeypatch, capsys):
    model, x, streamed = bm
    path = _timestamped(tmp_path, x[:50])
    status, _, err = _run(["basicmotions", "-i", str(path)], monkeypatch, capsys)
    assert status == 1  # every line has a timestamp in front: the error points at --columns
    assert "the line has 7 fields for a frame of 6: pick the frame's fields with --columns" in err
    assert "e.g. --columns 2-7" in err
    want = list(streamed[:11].argmax(1))
    for spec in ("2-7", "ax,ay,az,gx,gy,gz", "2,3,4,gx,6-7"):
        status, out, err = _run(["basicmotions", "-i", str(path), "--columns", spec], monkeypatch, capsys)
        assert status == 0, (spec, err)
        rows = _csv(out)[1]
        assert [int(r[2]) for r in rows] == want and [int(r[1]) for r in rows] == list(range(41, 52))
    # the same selection from standard input and from a wider .npy array
    status, out, _ = _run(["basicmotions", "-i", "-", "--columns", "gx,gy,gz,ax,ay,az"], monkeypatch, capsys,
                          path.read_bytes())
    swapped = model.stream().push_many(np.ascontiguousarray(x[:50][:, [3, 4, 5, 0, 1, 2]]))
    assert status == 0 and [int(r[2]) for r in _csv(out)[1]] == list(swapped.argmax(1))
    np.save(tmp_path / "wide.npy", np.hstack([np.arange(50.0)[:, None], x[:50]]))
    status, out, _ = _run(["basicmotions", "-i", str(tmp_path / "wide.npy"), "--columns", "2-7"], monkeypatch,
                          capsys)
    assert status == 0 and [int(r[2]) for r in _csv(out)[1]] == want


@pytest.mark.parametrize("spec, header, status, why", [
    ("2-6", True, 2, "--columns picks 5 fields, but a frame of basicmotions has 6 values"),
    ("ax,ay,az,gx,gy,gq", True, 1, "no column 'gq' in the header of"),
    ("ax,ay,az,gx,gy,gz", False, 1, "has no header line to find them in; give field numbers"),
    ("0-5", True, 1, "1 <= FIRST <= LAST, got 0-5"),
    ("2,2,3,4,5,6", True, 1, "names a field twice"),
    ("3-8", True, 0, "the line has 7 fields; --columns needs field 8"),
])
def test_columns_errors(bm, tmp_path, monkeypatch, capsys, spec, header, status, why):
    path = _timestamped(tmp_path, bm[1][:45], header)
    got, _, err = _run(["basicmotions", "-i", str(path), "--columns", spec], monkeypatch, capsys)
    assert why in err, err
    assert got == (1 if status == 0 else status)  # 3-8: every line malformed, so no valid frame


def test_a_text_value_past_float32_range_is_malformed_not_inf(monkeypatch, capsys):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        status, _, err = _run(["basicmotions", "-i", "-"], monkeypatch, capsys, b"1,2,3,1e300,5,6\n")
    assert status == 1 and "stdin, line 1: value 4 (1e+300) overflows float32" in err
