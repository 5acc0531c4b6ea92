"""docs/tutorial.md runs as written: every ```python block (in one namespace) and every
```bash block (a shell, with this interpreter's scripts on PATH), in order, in one temporary
directory. A block after ``<!-- slow -->`` (the training) runs only in the slow test; the
fast test runs all the others, on the untrained network. ```console blocks (installation)
are not run: the test environment is that installation.

docs/make_figures.py draws the tutorial's pictures."""
import os
import re
import subprocess
import sys

import pytest

DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "docs")
BLOCK = re.compile(r"(<!-- slow -->\s*\n)?```(python|bash|console)\n(.*?)```", re.S)


def blocks():
    with open(os.path.join(DOCS, "tutorial.md"), encoding="utf-8") as fh:
        text = fh.read()
    return [(lang, code, bool(slow)) for slow, lang, code in BLOCK.findall(text)]


def run_tutorial(tmp_path, include_slow):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    namespace = {"__name__": "__tutorial__"}
    outputs = []
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for i, (lang, code, slow) in enumerate(blocks()):
            if lang == "console" or (slow and not include_slow):
                continue
            if lang == "python":
                exec(compile(code, f"tutorial.md block {i}", "exec"), namespace)
            else:
                proc = subprocess.run(["bash", "-euo", "pipefail", "-c", code], env=env, cwd=tmp_path,
                                      capture_output=True, text=True, timeout=300)
                assert proc.returncode == 0, f"block {i} failed:\n{code}\n{proc.stdout}\n{proc.stderr}"
                outputs.append(proc.stdout)
    finally:
        os.chdir(cwd)
    return namespace, outputs


def test_tutorial_has_five_steps_and_one_slow_block():
    with open(os.path.join(DOCS, "tutorial.md"), encoding="utf-8") as fh:
        steps = re.findall(r"^## (\d)\. ", fh.read(), re.M)
    assert steps == ["1", "2", "3", "4", "5"]
    assert [lang for lang, _, slow in blocks() if slow] == ["python"]
    for picture in ("streamed_predictions.png", "latency_hist.png"):
        assert os.path.exists(os.path.join(DOCS, picture))


@pytest.mark.torch
def test_tutorial_runs_as_written_without_training(tmp_path):
    ns, outputs = run_tutorial(tmp_path, include_slow=False)
    assert ns["model"].equivalence == "window-exact" and ns["total"] == 40 * 61
    assert (tmp_path / "motions.npz").exists() and (tmp_path / "walking.csv").exists()
    inspect, run_cmds, bench = outputs
    assert "receptive field" in inspect
    assert run_cmds.count('"latency_us"') == 3 and len(run_cmds.splitlines()) == 5
    assert "full-window recompute" in bench


@pytest.mark.slow
@pytest.mark.torch
def test_tutorial_runs_as_written_with_training(tmp_path):
    ns, outputs = run_tutorial(tmp_path, include_slow=True)
    assert ns["accuracy"] >= 0.9, ns["accuracy"]
    assert ns["activity"] == "Badminton"  # data.x_test[30] is a badminton recording
    labels = [line.split(",")[3] for line in outputs[1].splitlines()[-2:]]
    assert labels == ["Walking", "Walking"]  # walking.csv is data.x_test[20]


def test_make_figures(tmp_path):
    pytest.importorskip("matplotlib")
    sys.path.insert(0, DOCS)
    try:
        import make_figures
    finally:
        sys.path.remove(DOCS)
    lat = make_figures.main(["--out", str(tmp_path)])
    for name in ("streamed_predictions.png", "latency_hist.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert lat["recompute"]["p50_us"] > lat["streamed"]["p50_us"]
