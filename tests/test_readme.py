"""README.md and docs/ say what the program does: the README's Python blocks run as printed
(in order, one namespace, in a temporary directory), every `deepshift-edge ...` command line in
the README and docs parses with the real argument parser, every relative link points at a file,
and what the docs claim about `run`'s columns and the converter holds."""
import os
import re
import shlex

import numpy as np
import pytest

import deepshift_edge as dse
from deepshift_edge.tools.cli import build_parser, main

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
if not os.path.exists(os.path.join(ROOT, "README.md")):  # a test run from copied tests/ only
    pytest.skip("README.md is not beside tests/", allow_module_level=True)
DOCS = [os.path.join(ROOT, "README.md")] + sorted(
    os.path.join(ROOT, "docs", f) for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md"))
BLOCK = re.compile(r"```(python|bash|console)\n(.*?)```", re.S)


def _read(path):
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def _blocks(path, lang):
    return [code for kind, code in BLOCK.findall(_read(path)) if kind == lang]


def test_readme_python_blocks_run_as_printed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    blocks = _blocks(os.path.join(ROOT, "README.md"), "python")
    assert len(blocks) >= 2
    ns = {"__name__": "__readme__"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"README.md python block {i}", "exec"), ns)
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "Badminton"  # the shipped model on the shipped recording's last frames
    assert ns["y"].shape == (361, 4) and ns["model"].labels[3] == "Badminton"


def test_ten_lines_outputs_a_probability_vector(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns = {}
    exec(compile(_blocks(os.path.join(ROOT, "README.md"), "python")[0], "ten lines", "exec"), ns)
    assert ns["y"] is not None and ns["y"].shape == (4,)
    np.testing.assert_allclose(ns["y"].sum(), 1.0, rtol=1e-5)


def _command_lines():
    """Every `deepshift-edge ...` command in a bash block of the README and docs."""
    for path in DOCS:
        for code in _blocks(path, "bash"):
            for line in code.replace("\\\n", " ").splitlines():
                line = line.split(" #")[0].strip()
                for part in re.split(r"\s*(?:&&|\|)\s*", line):
                    if part.startswith("deepshift-edge "):
                        yield os.path.basename(path), part


@pytest.mark.parametrize("where, command", list(_command_lines()))
def test_documented_commands_parse(where, command):
    argv = shlex.split(re.sub(r"\[[^\]]*\]", "", command))[1:]  # optional parts: [--time-axis time]
    args = build_parser().parse_args(argv)  # an unknown option or command exits 2 here
    assert args.command == argv[0]


@pytest.mark.parametrize("path", DOCS, ids=os.path.basename)
def test_relative_links_point_at_files(path):
    text = _read(path)
    assert "DESIGN" not in text, "DESIGN.md is not in the repository"
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target:
            continue
        assert os.path.exists(os.path.join(os.path.dirname(path), target)), (path, target)


def test_run_columns_are_the_documented_ones(tmp_path, monkeypatch, capsys):
    """README: `frame`, then `row` (.npy) or `line` (CSV, stdin), `class`, `label` only with class
    names, `score`, `latency_us` with --latency; other models `y0, y1, ...`."""
    import io
    import sys

    x = np.load(os.path.join(os.path.dirname(dse.__file__), "data", "basicmotions_test.npy"))[:41]
    np.save(tmp_path / "x.npy", x)
    np.savetxt(tmp_path / "x.csv", x, delimiter=",")

    def header(argv, stdin=b""):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
        assert main(["run"] + argv) == 0
        return capsys.readouterr().out.splitlines()[0]

    assert header(["basicmotions", "-i", "basicmotions", "--latency"]) == "frame,row,class,label,score,latency_us"
    assert header(["basicmotions", "-i", str(tmp_path / "x.npy")]) == "frame,row,class,label,score"
    assert header(["basicmotions", "-i", str(tmp_path / "x.csv")]) == "frame,line,class,label,score"
    assert header(["basicmotions", "-i", "-"], (tmp_path / "x.csv").read_bytes()) == "frame,line,class,label,score"
    unlabelled = dse.load("basicmotions")
    unlabelled.labels = None
    dse.save(unlabelled, tmp_path / "plain.npz")
    assert header([str(tmp_path / "plain.npz"), "-i", str(tmp_path / "x.npy")]) == "frame,row,class,score"
    assert header(["tiny", "-i", "-"], b"1,2,3\n") == "frame,line," + ",".join(f"y{i}" for i in range(8))


def test_sequential_help_documents_equivalence():
    doc = dse.Sequential.__doc__
    for word in ("equivalence", "window-exact", "receptive_field", "hop", "delay", "strips",
                 "labels", "metadata"):
        assert word in doc, word


def test_the_converter_converts_padding_the_head_reads_and_it_streams_exactly():
    """docs/tutorial.md and docs/semantics.md: zero padding the head reads is converted, and the
    stream recomputes the strips it reaches for every window: equal to PyTorch on each window."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")

    class CausalThenMean(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(6, 8, 5)

        def forward(self, x):
            return self.conv(torch.nn.functional.pad(x, (4, 0))).mean(-1)

    module = CausalThenMean().eval()
    model, report = dse.from_torch(module, in_features=6, window=40, return_report=True)
    assert model.equivalence == "window-exact" and "window-exact" in report
    x = np.random.default_rng(0).standard_normal((60, 6)).astype(np.float32)
    got = model.stream().push_many(x)
    with torch.no_grad():
        want = np.stack([module(torch.from_numpy(x[i:i + 40].T[None].copy())).numpy()[0]
                         for i in range(len(x) - 39)])
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max() + 1e-6
