"""The `deepshift-edge` command: demo, inspect, convert (in-process and as a subprocess)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import deepshift_edge as dse
from deepshift_edge.data import examples
from deepshift_edge.tools.cli import main
from deepshift_edge.tools.inspect import model_report


def test_inspect_table_and_numbers(tmp_path, capsys):
    path = tmp_path / "tiny.npz"
    dse.save(examples.tiny(), path)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    # tiny: Conv1d(3->8, k3) then Conv1d(8->8, k3), window 5: positions 3 and 1.
    # recompute = 3*3*8*3 + 3*8*8*1 = 216 + 192 = 408; streamed = 72 + 192 = 264 per frame
    for text in ("Conv1d 3->8 k=3", "(8, 3)", "(8, 1)", "receptive field: 5 frames", "window: 5",
                 "hop: 1", "delay: 0", "408 multiply-adds per output", "264 MACs/frame",
                 "1.5x fewer", "parameters: 280"):
        assert text in out, (text, out)
    stream = examples.tiny().stream()
    assert f"buffers {stream.buffer_bytes:,} bytes" in out
    from deepshift_edge.engine import state
    pool = dse.StreamPool(examples.tiny(), capacity=1)  # a sensor's keyed state (docs/fleet.md)
    pool.join("s")
    assert f"{len(pool.snapshot('s')):,} at block 1 (StreamPool's default)" in out
    assert f"{len(state.to_bytes(examples.tiny().stream(block=8).state())):,} at block 8" in out


def test_inspect_recompute_matches_plan_for_stride_free_models():
    """Without strides every op runs once per frame and computes `length` positions per window."""
    model = examples.kws_tcn()
    plan = model.stream().plan
    report = model_report(model)
    assert f"{plan.macs_per_frame():,.0f} MACs/frame" in report
    ops = {op.label.split()[1]: op.macs for op in plan.ops}
    assert ops  # labels are "layer i Name"


@pytest.mark.parametrize("name", sorted(examples.EXAMPLES))
def test_inspect_every_example(name, tmp_path, capsys):
    model = examples.EXAMPLES[name]()
    dse.save(model, tmp_path / "m.npz")
    assert main(["inspect", str(tmp_path / "m.npz")]) == 0
    out = capsys.readouterr().out
    assert f"hop: {model.hop}" in out and "MACs/frame" in out
    if model.hop > 1:
        assert "mode='decimated'" in out


def test_inspect_residual_with_strips(tmp_path, capsys):
    model = dse.Sequential([dse.Residual([dse.Conv1d(2, 3, 3, padding="causal")], skip=dse.Conv1d(2, 3, 1)),
                            dse.GlobalAvgPool()], in_features=2, window=10)
    dse.save(model, tmp_path / "m.npz")
    assert main(["inspect", str(tmp_path / "m.npz")]) == 0
    out = capsys.readouterr().out
    assert "layers.0.body.0" in out and "layers.0.skip" in out and "window-exact" in out
    row = next(line for line in out.splitlines() if "layers.0.body.0" in line)
    assert " 2|0 " in row  # causal k3: the first two positions of each window read its zeros
    assert "without the strips" in out


def test_inspect_errors_are_reported_not_raised(tmp_path, capsys):
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    assert main(["inspect", str(tmp_path / "bad.npz")]) == 1
    assert "not a deepshift_edge model" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "missing.npz")]) == 1
    assert "No such file" in capsys.readouterr().err


def _onnx_file(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["a"], name="conv"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["y"], name="gap")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "T"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 1])], initializer=inits)
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    path = tmp_path / "m.onnx"
    onnx.save(proto, str(path))
    return path


def test_convert_then_inspect(tmp_path, capsys):
    src = _onnx_file(tmp_path)
    assert main(["convert", str(src), str(tmp_path / "m.npz"), "--window", "12"]) == 0
    out = capsys.readouterr().out
    assert "max |error|" in out and "wrote" in out
    model = dse.load(tmp_path / "m.npz")
    assert model.window == 12 and model.output_shape == (4,)
    assert main(["convert", str(src), str(tmp_path / "m2.npz")]) == 1  # symbolic time axis
    assert "the time axis (2) is symbolic; pass window= (deepshift-edge convert: --window)" in capsys.readouterr().err
    # the time axis by name or index
    assert main(["convert", str(src), str(tmp_path / "m3.npz"), "--window", "8", "--time-axis", "T"]) == 0
    assert main(["convert", str(src), str(tmp_path / "m4.npz"), "--window", "8", "--time-axis", "-1"]) == 0
    assert dse.load(tmp_path / "m4.npz").window == 8
    capsys.readouterr()
    assert main(["convert", str(src), str(tmp_path / "m5.npz"), "--window", "8", "--time-axis", "F"]) == 1
    assert "no axis is named 'F'" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")  # the test makes a TorchScript file
def test_convert_torchscript_file(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    nn = torch.nn
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv1d(3, 8, 3, dilation=2), nn.SiLU(), nn.Conv1d(8, 4, 3),
                           nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    src = tmp_path / "model.pt"
    torch.jit.script(module).save(str(src))
    assert main(["convert", str(src), str(tmp_path / "m.npz"), "--window", "16", "--in-features", "3"]) == 0
    assert "max |error|" in capsys.readouterr().out
    model = dse.load(tmp_path / "m.npz")
    x = np.random.default_rng(0).standard_normal((20, 3)).astype(np.float32)
    with torch.no_grad():
        want = np.stack([module(torch.from_numpy(np.ascontiguousarray(x[i:i + 16].T[None]))).numpy()[0]
                         for i in range(5)])
    np.testing.assert_allclose(model.stream().push_many(x), want, rtol=1e-4, atol=1e-5)
    # missing options and non-TorchScript files are explained
    assert main(["convert", str(src), str(tmp_path / "m2.npz"), "--window", "16"]) == 1
    assert "needs --window and --in-features" in capsys.readouterr().err
    torch.save(module.state_dict(), str(tmp_path / "weights.pt"))
    assert main(["convert", str(tmp_path / "weights.pt"), str(tmp_path / "m3.npz"), "--window", "16",
                 "--in-features", "3"]) == 1
    assert "not a TorchScript archive" in capsys.readouterr().err


def test_console_script_subprocess(tmp_path):
    src = _onnx_file(tmp_path)
    exe = os.path.join(os.path.dirname(sys.executable), "deepshift-edge")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "deepshift_edge"]
    r = subprocess.run(cmd + ["convert", str(src), str(tmp_path / "m.npz"), "--window", "9"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "deepshift_edge", "inspect", str(tmp_path / "m.npz")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "GlobalAvgPool" in r.stdout and "window: 9" in r.stdout


def test_demo_still_works(capsys):
    assert main(["demo", "--model", "tiny", "--frames", "200", "--recompute-frames", "20"]) == 0
    assert "max |error|" in capsys.readouterr().out


# ----------------------------------------------------------------------------- model names
from deepshift_edge.data import datasets  # noqa: E402


@pytest.mark.parametrize("name", sorted(datasets.model_names()))
def test_every_builtin_name_works_in_every_command_and_in_load(name, capsys):
    """One resolver: a name accepted by one command is accepted by all of them and by load."""
    model = dse.load(name)
    if name in datasets.MODELS:
        want = dse.load(datasets.data_path(datasets.MODELS[name]))
    else:
        want = examples.EXAMPLES[name]()
        assert "random" in model.metadata["weights"]
    x = np.random.default_rng(1).standard_normal((model.window + 3,) + model.frame_shape)
    np.testing.assert_array_equal(model.forward(x), want.forward(x))
    assert main(["inspect", name]) == 0
    assert "receptive field" in capsys.readouterr().out
    assert main(["bench", name, "--frames", "20", "--recompute-frames", "3", "--columns", "recompute"]) == 0
    assert "streamed push" in capsys.readouterr().out
    assert main(["demo", "--model", name, "--frames", str(model.window + 5), "--recompute-frames", "2"]) == 0
    assert f"model '{name}'" in capsys.readouterr().out


def test_unknown_model_name_lists_the_builtin_ones(capsys):
    for argv in (["inspect", "no-such-model"], ["bench", "no-such-model"], ["demo", "--model", "no-such-model"],
                 ["run", "no-such-model", "--input", "-"]):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert "'no-such-model'" in err and "not a built-in model name" in err, err
        for name in datasets.model_names():
            assert name in err
    with pytest.raises(FileNotFoundError, match="built-in: basicmotions, tiny"):
        dse.load("no-such-model")


def test_an_existing_file_wins_over_a_builtin_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    other = dse.Sequential([dse.Conv1d(2, 1, 2)], in_features=2)
    dse.save(other, "tiny")  # a file called like a built-in example
    assert dse.load("tiny").frame_shape == (2,)
    assert datasets.resolve_model("tiny") == datasets.ModelRef("tiny", None)


# ----------------------------------------------------------------------------- help text, pipes
def test_top_level_help_is_plain_text_listing_every_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for markup in ("``", ":mod:", ":data:", ":func:", "* "):
        assert markup not in out, markup
    for command in ("demo", "inspect", "convert", "bench", "run"):
        assert f"\n    {command} " in out, command
    assert "basicmotions" in out and "deepshift-edge COMMAND --help" in out
    assert max(len(line) for line in out.splitlines()) <= 100


def test_every_option_of_every_command_has_help():
    import argparse

    from deepshift_edge.tools.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == {"demo", "inspect", "convert", "bench", "run", "quantize"}
    for name, command in sub.choices.items():
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, (name, action.dest)


@pytest.mark.parametrize("argv", [["inspect", "basicmotions"], ["demo", "--model", "tiny", "--frames", "100",
                                                                   "--recompute-frames", "5"],
                                  ["bench", "tiny", "--frames", "50", "--recompute-frames", "5",
                                   "--columns", "recompute"]])
def test_a_reader_that_goes_away_is_not_an_error(argv):
    """`deepshift-edge inspect ... | head -1`: the pipe closes before the output is written."""
    proc = subprocess.Popen([sys.executable, "-m", "deepshift_edge"] + argv, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the command writes anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert "Broken pipe" not in err and "Traceback" not in err and "Exception ignored" not in err, err


def _onnx_graph_file(tmp_path, op="Relu"):
    """A residual block (a graph, not a chain): conv(pads 1, 1) -> op -> + x -> global max."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((3, 3, 3)).astype(np.float32), "w")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="conv", pads=[1, 1]),
             helper.make_node(op, ["a"], ["r"], name="act"),
             helper.make_node("Add", ["r", "x"], ["s"], name="add"),
             helper.make_node("GlobalMaxPool", ["s"], ["y"], name="gmp")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 10])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 1])], initializer=inits)
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    path = tmp_path / f"graph_{op}.onnx"
    onnx.save(proto, str(path))
    return path


def test_convert_refuses_with_the_reason_and_writes_nothing(tmp_path, capsys):
    src = _onnx_graph_file(tmp_path, op="Cos")
    target = tmp_path / "m.npz"
    assert main(["convert", str(src), str(target)]) == 1
    assert "(Cos): unsupported op 'Cos'" in capsys.readouterr().err
    assert not target.exists()


def test_convert_never_writes_a_file_that_streams_differently(tmp_path, capsys, monkeypatch):
    # a model file that loads but would stream differently on the device is not written
    import deepshift_edge.formats.npz as npz

    src = _onnx_file(tmp_path)
    real_load = npz.load

    def load_and_tamper(path, **kw):
        model = real_load(path, **kw)
        model.layers[0].bias = model.layers[0].bias + 1.0
        return model
    monkeypatch.setattr(npz, "load", load_and_tamper)
    target = tmp_path / "m.npz"
    assert main(["convert", str(src), str(target), "--window", "12"]) == 1
    assert "streams differently" in capsys.readouterr().err and not target.exists()


def test_convert_a_graph_model(tmp_path, capsys):
    src = _onnx_graph_file(tmp_path)
    target = tmp_path / "g.npz"
    code = main(["convert", str(src), str(target)])
    err = capsys.readouterr().err
    assert code == 0, err
    model = dse.load(target)
    x = np.random.default_rng(0).standard_normal((20, 3)).astype(np.float32)
    np.testing.assert_array_equal(model.stream().push_many(x), dse.from_onnx(str(src)).stream().push_many(x))
