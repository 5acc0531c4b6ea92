"""Import of .tflite files (``dse.from_tflite``), held against LiteRT's interpreter running the same
file on every window.

Models: the Keras-built fixtures in tests/data/tflite (written by tests/make_tflite_fixtures.py
with TensorFlow; its version is in manifest.json): a 1-D HAR CNN, ARM's DS-CNN for keyword
spotting, Edge Impulse's default 1-D conv classifier and a Keras TCN, each float32 and full
integer; and random architectures written by our own ``to_tflite`` (float).

What is asserted:

* float: every streamed window equals LiteRT on that window within 1e-5 of the output scale,
  and the converted model's float64 reference;
* int8: the int8 model carries the file's own scales and zero points (compared tensor by tensor
  with the file); its stream is its integer reference bit for bit. Imported with the default
  ``arithmetic="xnnpack"`` (float32 requantization of convolutions, FULLY_CONNECTED, MEAN, MUL,
  ties to even, as LiteRT's default XNNPACK delegate), every operator and every window's int8
  logits equal LiteRT's default interpreter bit for bit; with ``arithmetic="reference"``
  (gemmlowp's fixed point), TFLite's reference kernels (BUILTIN_REF) bit for bit;
* what does not convert is refused by op name (``ModelFormatError``).

``python tests/test_tflite_import.py`` prints the table: model, float/int8, max error vs
LiteRT, exact / +-1 counts, microseconds per frame streamed vs LiteRT on the full window.
"""
from __future__ import annotations

import json
import os
import sys
import time
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, note, settings
from hypothesis import strategies as st

import deepshift_edge as dse
from deepshift_edge.quant import qmodel as QM

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data", "tflite")
sys.path.insert(0, HERE)

pytest.importorskip("tflite")
pytest.importorskip("onnx")

FAMILIES = ["har_cnn", "ds_cnn", "ei_conv1d", "tcn", "keras_ops", "conv2d_stereo"]
HYPO = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                   HealthCheck.filter_too_much])


def path(name):
    return os.path.join(DATA, name + ".tflite")


def litert(name_or_bytes, xnnpack=True):
    lite = pytest.importorskip("ai_edge_litert.interpreter")
    kw = dict(num_threads=1, experimental_preserve_all_tensors=True)
    if not xnnpack:  # the builtin kernels (TFLite's reference requantization: gemmlowp fixed point)
        kw["experimental_op_resolver_type"] = lite.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    src = dict(model_content=name_or_bytes) if isinstance(name_or_bytes, bytes) else \
        dict(model_path=path(name_or_bytes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "preserve_all_tensors is for debugging"
        it = lite.Interpreter(**src, **kw)
    it.allocate_tensors()
    return it


def file_window(model, window):
    """A window (W, *frame_shape) of our frames in the file's input layout, batch 1."""
    if window.ndim == 3:  # our (C, F) frames -> Keras' (T, F, C)
        window = np.moveaxis(window, 1, -1)
    return window


def run_litert(it, x, w, *, tensors=()):
    """LiteRT on every window x[i:i+W]: (float outputs, {tensor: [int arrays]})."""
    (inp,), (out,) = it.get_input_details(), it.get_output_details()
    ys, kept = [], {t: [] for t in tensors}
    for i in range(len(x) - w + 1):
        win = file_window(None, x[i:i + w]).reshape(inp["shape"])
        if inp["dtype"] != np.float32:
            s, z = inp["quantization"]
            win = np.clip(np.rint(win / s) + z, -128, 127).astype(inp["dtype"])
        it.set_tensor(inp["index"], np.ascontiguousarray(win))
        it.invoke()
        y = it.get_tensor(out["index"]).astype(np.float64)
        if out["dtype"] != np.float32:
            s, z = out["quantization"]
            y = (y - z) * s
        ys.append(y.reshape(-1))
        for t in tensors:
            kept[t].append(it.get_tensor(t).astype(np.int64).copy())
    return np.array(ys), kept


def frames(model, n, seed=0):
    return np.random.default_rng(seed).standard_normal((model.window + n,) + tuple(model.frame_shape)) \
        .astype(np.float32)


_CACHE = {}


def imported(name, arithmetic="xnnpack"):
    if (name, arithmetic) not in _CACHE:
        _CACHE[name, arithmetic] = dse.from_tflite(path(name), return_report=True, arithmetic=arithmetic)
    return _CACHE[name, arithmetic]


def test_fixtures_record_their_tensorflow():
    with open(os.path.join(DATA, "manifest.json")) as fh:
        manifest = json.load(fh)
    assert manifest["tensorflow"].count(".") >= 1
    for name in manifest["files"]:
        assert os.path.exists(os.path.join(DATA, name)), name


# ----------------------------------------------------------------------------- float
@pytest.mark.parametrize("family", FAMILIES)
def test_float_families_match_litert_on_every_window(family):
    model, report = imported(family + "_float")
    assert isinstance(model, (dse.Model, dse.Sequential))
    assert "stream" in report and "error" in report  # from_onnx's streamed == offline check ran
    x = frames(model, 40, seed=3)
    got = model.stream().push_many(x).reshape(len(x) - model.window + 1, -1)
    theirs, _ = run_litert(litert(family + "_float"), x, model.window)
    scale = float(np.abs(theirs).max())
    err = float(np.abs(got - theirs).max())
    assert err <= 1e-5 * scale, f"{family}: max error {err:.3g} vs LiteRT (output scale {scale:.3g})"
    ref = model.forward(x).reshape(got.shape)
    assert np.abs(got - ref).max() <= 1e-5 * scale
    # the comparison can fail: one window off it does
    if np.abs(np.diff(theirs, axis=0)).max() > 100 * 1e-5 * scale:
        assert np.abs(got[1:] - theirs[:-1]).max() > 1e-5 * scale
    # decimated mode streams the same windows
    dec = model.stream(mode="decimated").push_many(x)
    if model.hop > 1:
        np.testing.assert_allclose(dec.reshape(-1, got.shape[1]), got[::model.hop][:len(dec)], rtol=1e-5,
                                   atol=1e-6 * scale)


def test_window_other_than_the_files():
    """The TCN (causal convolutions, last time step) does not depend on the window length."""
    model = dse.from_tflite(path("tcn_float"), window=64)
    assert model.window == 64
    qm = dse.from_tflite(path("tcn_int8"), window=64)
    assert isinstance(qm, dse.QuantizedModel) and qm.window == 64
    x = frames(qm, 3)
    np.testing.assert_array_equal(qm.stream().push_many(x), qm.forward_dequantized(x))
    with pytest.raises(dse.ModelFormatError, match="RESHAPE|Reshape|shape"):
        dse.from_tflite(path("har_cnn_float"), window=80)  # Flatten + Dense: the file's 64 only


# ----------------------------------------------------------------------------- int8
def int8_logits_tensor(name):
    """The file's last int8 tensor: the DEQUANTIZE's input (the SOFTMAX's input if a softmax ends it)."""
    from deepshift_edge.convert.tflite_import import _File, _read
    f = _File(_read(path(name)))
    prod = {o: op for op in f.ops for o in op.outputs}
    out = f.outputs[0]
    for op_name in ("DEQUANTIZE", "SOFTMAX"):
        if out in prod and prod[out].name == op_name:
            out = prod[out].inputs[0]
    return f, out


def ours_layout(arr, shape):
    """A LiteRT NHWC tensor (batch 1) in the int8 engine's layout ((C, T), (C, F, T), (C,))."""
    a = arr[0]
    while a.ndim > len(shape) and a.shape[0] == 1:
        a = a[0]
    a = np.transpose(a)
    return a if a.shape == tuple(shape) else None


def per_operator(qm, it, x):
    """Every int8 operator (with the ops between it and the file's tensors it reads), fed
    LiteRT's int8 inputs: max |ours - LiteRT| per operator."""
    mapped = qm.tflite_tensors
    _, kept = run_litert(it, x, qm.window, tensors=sorted(set(mapped.values())))
    worst = {}
    for k in range(len(x) - qm.window + 1):
        vals = []
        for j, qn in enumerate(qm.qnodes):
            # (a flattened window: the element order is the engine's own, the next Linear's
            # columns permuted to match; compared through that Linear)
            theirs = kept[mapped[qn.name]][k] if qn.name in mapped and qn.kind != "flatten" else None
            if j == 0:
                own = qm.qnodes[0].out.quantize(np.moveaxis(x[k:k + qm.window], 0, -1)).astype(np.int64)
            else:
                own = QM._run(qn, [vals[i] for i in qn.inputs], [qm.qnodes[i] for i in qn.inputs])
            if theirs is not None:
                t = ours_layout(theirs, own.shape)
                if t is not None:
                    if j > 0:
                        worst[qn.name] = max(worst.get(qn.name, 0), int(np.abs(own - t).max()))
                    own = t
            vals.append(own)
    return worst


def fully_connected_tensors(f):
    """Tensors a FULLY_CONNECTED computes, also through the reshapes around a Dense applied
    per frame (Keras' RESHAPE (T, C) -> FULLY_CONNECTED -> RESHAPE back)."""
    prod = {o: op for op in f.ops for o in op.outputs}
    out = set()
    for i, op in prod.items():
        while op is not None and op.name in ("RESHAPE", "SQUEEZE", "EXPAND_DIMS"):
            op = prod.get(op.inputs[0])
        if op is not None and op.name == "FULLY_CONNECTED":
            out.add(i)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_int8_families_equal_tflites_reference_kernels(family):
    """Imported with arithmetic="reference", the int8 logits are TFLite's reference kernels'
    (BUILTIN_REF) on every window, bit for bit: its convolutions round as gemmlowp does, its
    FULLY_CONNECTED once (imported as rounding="single"), its HARD_SWISH is 16-bit fixed point
    (imported as its own table), its average pool is the rounded mean of the stored integers."""
    lite = pytest.importorskip("ai_edge_litert.interpreter")
    name = family + "_int8"
    qm, _ = imported(name, "reference")
    f, logits = int8_logits_tensor(name)
    fc_tensors = fully_connected_tensors(f)
    fc = [qn for qn in qm.qnodes if qm.tflite_tensors.get(qn.name) in fc_tensors]
    assert all(qn.rounding == "single" for qn in fc)
    assert all(qn.rounding == "double" for qn in qm.qnodes if qn.kind == "conv" and qn not in fc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        it = lite.Interpreter(model_path=path(name), num_threads=1, experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=lite.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    x = frames(qm, 40, seed=5)
    ours = qm.forward_int(x).reshape(len(x) - qm.window + 1, -1).astype(np.int64)
    _, kept = run_litert(it, x, qm.window, tensors=[logits])
    np.testing.assert_array_equal(np.array(kept[logits]).reshape(ours.shape), ours)


@pytest.mark.parametrize("family", FAMILIES)
def test_int8_families_match_litert(family):
    name = family + "_int8"
    qm, report = imported(name)
    assert isinstance(qm, dse.QuantizedModel), type(qm)
    assert "bit-exact" in report or "equal" in report
    f, logits = int8_logits_tensor(name)
    # the file's own parameters, not re-quantized: every int8 operator's output is a tensor of
    # the file with exactly its scale and zero point, and the last one is the logits tensor
    assert qm.tflite_tensors, "no int8 operator maps onto a tensor of the file"
    for qn in qm.qnodes:
        if qn.name in qm.tflite_tensors:
            t = f.tensors[qm.tflite_tensors[qn.name]]
            assert qn.out.scale == pytest.approx(float(t.scale[0]), rel=1e-7) and qn.out.zero_point == int(t.zero[0])
    assert qm.tflite_tensors.get(qm.int_output.name) == logits
    x = frames(qm, 40, seed=5)
    # the int8 stream is its integer reference, bit for bit
    got = qm.stream().push_many(x)
    if qm.tail:
        np.testing.assert_allclose(got, qm.forward(x), rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_array_equal(got, qm.forward_dequantized(x))
    ours = qm.forward_int(x).reshape(len(x) - qm.window + 1, -1).astype(np.int64)
    # imported with LiteRT's default arithmetic (XNNPACK's: convolutions, FULLY_CONNECTED, MEAN
    # and MUL requantized in float32, ties to even): every int8 operator, fed LiteRT's own int8
    # inputs, gives XNNPACK's output exactly, and within one LSB of the builtin kernels'
    assert {qn.rounding for qn in qm.qnodes if qn.kind in ("conv", "gmean", "mul")} == {"float"}
    ops = per_operator(qm, litert(name), x[:qm.window + 8])
    assert ops and max(ops.values()) == 0, ops
    ops = per_operator(qm, litert(name, xnnpack=False), x[:qm.window + 8])
    assert ops and max(ops.values()) <= 1, ops
    # end to end: the int8 logits of every window equal XNNPACK's, bit for bit
    ys, kept = run_litert(litert(name), x, qm.window, tensors=[logits])
    diff = np.abs(np.array(kept[logits]).reshape(ours.shape) - ours).max(axis=1)
    assert diff.max() == 0, f"{name}: vs XNNPACK {np.bincount(diff)}"
    # the float output (a softmax after the logits: float tail on the dequantized logits vs
    # LiteRT's int8 softmax at 1/256) within an LSB of the output
    out_lsb = 1 / 256 if qm.tail else qm.int_output.out.scale
    assert np.abs(got.reshape(ys.shape) - ys).max() <= (diff.max() + 1) * out_lsb * 1.5 + 1e-6


def test_int8_input_and_output():
    """inference_input_type/output int8: frames are float, quantized with the file's input parameters."""
    qm = imported("har_cnn_int8io", "reference")[0]
    q_float = imported("har_cnn_int8", "reference")[0]
    assert qm.qnodes[0].out == q_float.qnodes[0].out
    x = frames(qm, 20, seed=2)
    np.testing.assert_array_equal(qm.forward_int(x), q_float.forward_int(x))
    ys, _ = run_litert(litert("har_cnn_int8io", xnnpack=False), x, qm.window)
    assert np.abs(qm.stream().push_many(x) - ys).max() <= 2 / 256


def test_int8_saves_and_loads(tmp_path):
    qm = imported("tcn_int8")[0]
    qm.save(tmp_path / "m.npz")
    back = dse.load(tmp_path / "m.npz")
    x = frames(qm, 10)
    np.testing.assert_array_equal(back.stream().push_many(x), qm.stream().push_many(x))


def test_imported_tables_are_kept_by_the_model_file(tmp_path):
    """keras_ops' HARD_SWISH table (LiteRT's fixed point, not the function's) survives save and
    load; a table of the wrong shape or type, or for a node that is no int8 activation, is
    refused by name."""
    qm = imported("keras_ops_int8")[0]
    given = [qn for qn in qm.qnodes if qn.kind == "lut" and qn.table_given]
    assert len(given) == 1 and isinstance(given[0].layer, dse.nn.layers.HardSwish)
    qm.save(tmp_path / "m.npz")
    back = dse.load(tmp_path / "m.npz")
    bt = [qn for qn in back.qnodes if qn.kind == "lut" and qn.table_given]
    assert len(bt) == 1
    np.testing.assert_array_equal(bt[0].table, given[0].table)
    x = frames(qm, 10)
    np.testing.assert_array_equal(back.forward_int(x), qm.forward_int(x))
    np.testing.assert_array_equal(back.stream().push_many(x), qm.stream().push_many(x))
    # without the stored table the file gets the float function's own, which differs from
    # LiteRT's somewhere (or the test proves nothing)
    with np.load(tmp_path / "m.npz") as z:
        members = {k: z[k] for k in z.files}
    key = [k for k in members if k.endswith(".table")]
    assert len(key) == 1
    del members[key[0]]
    np.savez(tmp_path / "exact.npz", **members)
    exact = [qn for qn in dse.load(tmp_path / "exact.npz").qnodes if qn.kind == "lut"
             and qn.name == given[0].name][0]
    assert not exact.table_given and (exact.table != given[0].table).any()
    conv = [k for k in members if k.endswith(".weight")][0][len("quant."):-len(".weight")]
    for name, arr, match in ((key[0], np.zeros(255, np.int8), "256"), (key[0], np.zeros(256, np.int16), "int8"),
                             ("quant." + conv + ".table", np.zeros(256, np.int8), "activation")):
        np.savez(tmp_path / "bad.npz", **{**members, name: arr})
        with pytest.raises(dse.ModelFormatError, match=match):
            dse.load(tmp_path / "bad.npz")


# ----------------------------------------------------------------------------- refusals
def test_dynamic_range_model_is_refused():
    with pytest.raises(dse.ModelFormatError, match="dynamic-range"):
        dse.from_tflite(path("har_cnn_dynamic"))


def test_unsupported_op_is_named():
    from deepshift_edge.convert.tflite_export import to_tflite
    model = dse.Sequential([dse.Conv1d(2, 3, 3), dse.MaxPool1d(2, dilation=2), dse.GlobalAvgPool()],
                           in_features=2, window=16)
    with pytest.raises(dse.ModelFormatError, match="unsupported op 'MAXIMUM'"):
        dse.from_tflite(to_tflite(model))


def test_not_a_tflite_file():
    with pytest.raises(dse.ModelFormatError, match="TFL3"):
        dse.from_tflite(b"\x00" * 64)
    with pytest.raises(dse.ModelFormatError):
        dse.from_tflite(open(path("tcn_float"), "rb").read()[:300])
    with pytest.raises(OSError):
        dse.from_tflite("/nonexistent/model.tflite")


@pytest.mark.parametrize("kw, match", [(dict(window=0), "window must be an integer"),
                                       (dict(window="64"), "window must be an integer"),
                                       (dict(time_axis="t"), "time_axis must be an axis index"),
                                       (dict(time_axis=0), "time_axis 0"),
                                       (dict(channels_axis=1.5), "channels_axis must be")])
def test_bad_arguments_say_what_was_expected(kw, match):
    with pytest.raises(dse.ModelFormatError, match=match):
        dse.from_tflite(path("ds_cnn_float" if "channels_axis" in kw else "tcn_float"), **kw)
    with pytest.raises(dse.ModelFormatError, match="a path or the file's bytes, got int"):
        dse.from_tflite(3)


def test_cli_converts_a_tflite_file(tmp_path, capsys):
    from deepshift_edge.__main__ import main
    out = tmp_path / "m.npz"
    assert main(["convert", path("ei_conv1d_int8"), str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    back = dse.load(out)
    qm = imported("ei_conv1d_int8")[0]
    x = frames(qm, 5)
    np.testing.assert_array_equal(back.stream().push_many(x), qm.stream().push_many(x))
    assert {q.rounding for q in back.qnodes if q.kind == "conv"} == {"float"}  # XNNPACK's, kept by the file
    # --arithmetic reference: TFLite's reference kernels' integers
    assert main(["convert", path("ei_conv1d_int8"), str(out), "--arithmetic", "reference"]) == 0
    ref = dse.load(out)
    assert "float" not in {q.rounding for q in ref.qnodes}
    np.testing.assert_array_equal(ref.forward_int(x), imported("ei_conv1d_int8", "reference")[0].forward_int(x))
    with pytest.raises(ValueError, match="arithmetic must be one of"):
        dse.from_tflite(path("ei_conv1d_int8"), arithmetic="fixed")


def test_import_does_not_load_the_schema_or_tensorflow():
    import subprocess
    code = ("import sys, deepshift_edge; bad = [m for m in ('tflite', 'onnx', 'tensorflow', 'ai_edge_litert') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- our own exporter, round trip
@settings(max_examples=100, **HYPO)
@given(data=st.data())
def test_random_models_round_trip_through_to_tflite(data):
    """random architectures -> to_tflite -> from_tflite: the stream equals the original model's
    float64 reference and LiteRT on every window."""
    from strategies import cases
    from deepshift_edge.convert.tflite_export import to_tflite
    dims = data.draw(st.sampled_from([1, 2]), label="dims")
    case = data.draw(cases(dims=(dims,), legacy=True), label="case")
    model = case.model
    # Degenerate windows (1 frame of 1 channel: every axis of size 1) leave the reshapes of
    # to_tflite's graph ambiguous (which size-1 axis is time?); they are not what files hold.
    assume(model.window >= 3 and int(np.prod(model.frame_shape)) >= 2)
    note(repr(model))
    blob = to_tflite(model)
    try:
        back = dse.from_tflite(blob, channels_axis=2 if dims == 2 else None)
    except dse.ModelFormatError as exc:
        # refused only by name, for what the importer does not take (MAXIMUM: a dilated max pool)
        assert "unsupported op 'MAXIMUM'" in str(exc), str(exc)
        event("refused: MAXIMUM")
        return
    event(f"converted ({dims}-D)")
    x = case.x[:model.window + 6]
    got = back.stream().push_many(x).reshape(len(x) - model.window + 1, -1)
    ref = model.forward(x).reshape(got.shape)
    scale = float(np.abs(ref).max(initial=0)) + 1e-30
    assert np.abs(got - ref).max() <= 1e-4 * scale + 1e-7
    it = litert(blob)
    (inp,), (out,) = it.get_input_details(), it.get_output_details()
    rows = []
    for i in range(len(x) - model.window + 1):
        it.set_tensor(inp["index"], np.ascontiguousarray(x[i:i + model.window][None]))
        it.invoke()
        rows.append(it.get_tensor(out["index"]).reshape(-1).astype(np.float64))
    assert np.abs(got - np.array(rows)).max() <= 1e-4 * scale + 1e-7


# ----------------------------------------------------------------------------- PyTorch via litert-torch
_LT = {}


def litert_torch_file(name):
    """tests/families.py's PyTorch module `name` converted by litert-torch: (family, .tflite bytes, module)."""
    lt = pytest.importorskip("litert_torch")
    torch = pytest.importorskip("torch")
    import tempfile
    import families as FM
    if name not in _LT:
        f = FM.FAMILIES[name]
        fs = (f.in_features,) if isinstance(f.in_features, int) else tuple(f.in_features)
        module = FM.build(name)
        with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
            warnings.simplefilter("ignore")
            em = lt.convert(module, (torch.zeros((1,) + fs + (f.window,)),))
            em.export(os.path.join(tmp, "m.tflite"))
            with open(os.path.join(tmp, "m.tflite"), "rb") as fh:
                _LT[name] = (f, fh.read(), module)
    return _LT[name]


# PyTorch families (channels first, time last) that litert-torch converts; its graphs keep the
# module's (1, C, T) / (1, C, F, T) input and transpose to NHWC inside.
LITERT_TORCH = ["har_cnn", "bai_tcn", "wavenet", "tc_resnet", "ds_cnn", "matchboxnet", "crnn_front",
                "causal_gap", "halfk_stack", "bai_tcn_seq"]


@pytest.mark.parametrize("name", LITERT_TORCH)
def test_litert_torch_models_match_litert_and_torch(name):
    torch = pytest.importorskip("torch")
    f, blob, module = litert_torch_file(name)
    rank = 3 if isinstance(f.in_features, int) else 4
    model = dse.from_tflite(blob, time_axis=rank - 1, channels_axis=1 if rank == 4 else None)
    x = frames(model, 12, seed=7)
    got = model.stream().push_many(x).reshape(len(x) - model.window + 1, -1)
    it = litert(blob)
    (inp,), (out,) = it.get_input_details(), it.get_output_details()
    theirs, want = [], []
    for i in range(len(got)):
        win = np.ascontiguousarray(np.moveaxis(x[i:i + model.window], 0, -1)[None])
        it.set_tensor(inp["index"], win)
        it.invoke()
        y = it.get_tensor(out["index"])
        with torch.no_grad():
            t = module(torch.from_numpy(win)).numpy()
        if f.per_position:  # a sequence model: the newest position of the window
            y, t = y[..., -1], t[..., -1]
        theirs.append(y.reshape(-1))
        want.append(t.reshape(-1))
    theirs, want = np.array(theirs, np.float64), np.array(want, np.float64)
    scale = float(np.abs(want).max())
    assert np.abs(got - theirs).max() <= 1e-5 * scale, f"{name}: vs LiteRT {np.abs(got - theirs).max():.3g}"
    assert np.abs(got - want).max() <= 1e-5 * scale, f"{name}: vs torch {np.abs(got - want).max():.3g}"


@pytest.mark.parametrize("name, op", [("pytorch_tcn_skips", "Concat"), ("eegnet", "GREATER_EQUAL")])
def test_litert_torch_refusals_are_named(name, op):
    f, blob, _ = litert_torch_file(name)
    with pytest.raises(dse.ModelFormatError, match=op):
        dse.from_tflite(blob, time_axis=2 if isinstance(f.in_features, int) else 3,
                        channels_axis=None if isinstance(f.in_features, int) else 1)


# ----------------------------------------------------------------------------- the table
def _median_us(fn, n):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e6


def table(frames_timed=2000):
    rows = []
    for family in FAMILIES:
        for kind in ("float", "int8"):
            name = f"{family}_{kind}"
            m = dse.from_tflite(path(name))
            x = frames(m, 60, seed=11)
            got = m.stream().push_many(x).reshape(len(x) - m.window + 1, -1)
            it = litert(name)
            ys, _ = run_litert(it, x, m.window)
            err = float(np.abs(got - ys).max())
            counts = ["-", "-"]
            if kind == "int8":
                _, logits = int8_logits_tensor(name)
                cols = []
                for xnn in (True, False):  # each against the arithmetic imported for it
                    mm = m if xnn else dse.from_tflite(path(name), arithmetic="reference")
                    ours = mm.forward_int(x).reshape(got.shape[0], -1).astype(np.int64)
                    _, kept = run_litert(litert(name, xnnpack=xnn), x, m.window, tensors=[logits])
                    d = np.abs(np.array(kept[logits]).reshape(ours.shape) - ours).max(axis=1)
                    c = np.bincount(d, minlength=3)
                    cols.append(f"{c[0]}/{c[1]}/{c[2:].sum()}")
                counts = cols
            # timing: stream.push of one reused frame; LiteRT invoke on the full window (1 thread)
            s = m.stream()
            y = frames(m, frames_timed, seed=12)
            s.push_many(y[:m.window])
            frame = np.ascontiguousarray(y[m.window])
            push = _median_us(lambda: s.push(frame), frames_timed)
            plain = pytest.importorskip("ai_edge_litert.interpreter").Interpreter(model_path=path(name), num_threads=1)
            plain.allocate_tensors()
            inp = plain.get_input_details()[0]
            win = np.zeros(inp["shape"], inp["dtype"])
            plain.set_tensor(inp["index"], win)
            invoke = _median_us(plain.invoke, frames_timed)
            rows.append((family, kind, len(ys), err, counts, push, invoke))
    return rows


if __name__ == "__main__":
    import ai_edge_litert
    manifest = json.load(open(os.path.join(DATA, "manifest.json")))
    print(f"TensorFlow {manifest['tensorflow']} (fixtures), ai-edge-litert {ai_edge_litert.__version__}, "
          f"windows of random input")
    print("| model | kind | windows | max error vs LiteRT (output) | int8 logits vs XNNPACK (default "
          "import): exact/±1/>1 | vs optimized builtin kernels (arithmetic='reference') | µs/frame streamed (push, "
          "median) | LiteRT µs/window (invoke, median, 1 thread) |")
    print("|---|---|---|---|---|---|---|---|")
    for family, kind, n, err, counts, push, invoke in table():
        print(f"| {family} | {kind} | {n} | {err:.2g} | {counts[0]} | {counts[1]} | {push:.1f} | {invoke:.1f} |")
