"""from_onnx / from_torch: the stream equals onnxruntime (and PyTorch) on the window
ending at every frame; unsupported graphs give a ModelFormatError naming op and node."""
import importlib.util
import io
import sys

import numpy as np
import pytest

import deepshift_edge as dse

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

RNG = np.random.default_rng(0)


def _init(name, arr):
    return numpy_helper.from_array(np.asarray(arr, np.float32), name)


def _graph(nodes, inits, in_shape, out_shape=None, opset=17, extra_inits=()):
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        initializer=list(inits) + list(extra_inits))
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _ints(name, values):
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


def _compare_with_ort(proto, window, frames=None):
    """Stream vs onnxruntime on every window (an output with a time axis: its newest position)."""
    data = proto.SerializeToString()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    model = dse.from_onnx(data, window=window)
    shape = model.frame_shape
    n = window + 12 if frames is None else frames
    x = RNG.standard_normal((n,) + shape).astype(np.float32)
    got = model.stream().push_many(x)
    want = []
    for i in range(n - window + 1):
        win = np.ascontiguousarray(np.moveaxis(x[i:i + window], 0, -1)[None])
        y = sess.run(None, {sess.get_inputs()[0].name: win})[0]
        if y.size != int(np.prod(model.output_shape)):  # per position: the stream gives the newest
            y = y[..., -1]
        want.append(y.reshape(model.output_shape))
    want = np.stack(want)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    return model


def _conv(name, inp, out, c_in, c_out, k, **attrs):
    w = RNG.standard_normal((c_out, c_in // attrs.get("group", 1)) + tuple(np.atleast_1d(k))) * 0.3
    b = RNG.standard_normal(c_out) * 0.1
    node = helper.make_node("Conv", [inp, f"{name}.w", f"{name}.b"], [out], name=name, **attrs)
    return node, [_init(f"{name}.w", w), _init(f"{name}.b", b)]


# ----------------------------------------------------------------------------- onnx.helper graphs
def test_conv_relu_bn_pool_gap_gemm_softmax():
    n1, i1 = _conv("c1", "x", "a", 3, 6, 3, dilations=[2])
    bn = [_init("s", RNG.uniform(0.5, 2, 6)), _init("bb", RNG.standard_normal(6)),
          _init("m", RNG.standard_normal(6)), _init("v", RNG.uniform(0.5, 2, 6))]
    nodes = [n1, helper.make_node("BatchNormalization", ["a", "s", "bb", "m", "v"], ["b"], name="bn"),
             helper.make_node("Relu", ["b"], ["c"], name="relu"),
             helper.make_node("MaxPool", ["c"], ["d"], kernel_shape=[2], strides=[2], name="pool"),
             helper.make_node("AveragePool", ["d"], ["e"], kernel_shape=[2], strides=[1], name="apool"),
             helper.make_node("GlobalAveragePool", ["e"], ["f"], name="gap"),
             helper.make_node("Flatten", ["f"], ["g"], name="flat"),
             helper.make_node("Gemm", ["g", "W", "B"], ["h"], transB=1, name="fc"),
             helper.make_node("Softmax", ["h"], ["y"], axis=-1, name="sm")]
    inits = i1 + bn + [_init("W", RNG.standard_normal((4, 6))), _init("B", RNG.standard_normal(4))]
    _compare_with_ort(_graph(nodes, inits, [1, 3, 24]), 24)


def test_causal_tcn_with_chomp_and_right_aligned_residual_crop():
    # block 1: symmetric-padded conv + chomp Slice (PyTorch TCN), identity skip
    c1, i1 = _conv("c1", "x", "a", 4, 4, 3, pads=[2, 2])
    # block 2: valid conv, skip cropped to the newest positions (Slice on time)
    c2, i2 = _conv("c2", "r1", "d", 4, 4, 3, dilations=[2])
    nodes = [c1, helper.make_node("Slice", ["a", "zero", "m2", "ax"], ["b"], name="chomp"),
             helper.make_node("Relu", ["b"], ["c"], name="relu1"),
             helper.make_node("Add", ["c", "x"], ["r1"], name="add1"),
             c2, helper.make_node("Tanh", ["d"], ["e"], name="tanh"),
             helper.make_node("Slice", ["r1", "four", "big", "ax"], ["skip"], name="crop"),
             helper.make_node("Add", ["skip", "e"], ["r2"], name="add2"),
             helper.make_node("Slice", ["r2", "m1", "big", "ax"], ["last"], name="lastframe"),
             helper.make_node("Flatten", ["last"], ["y"], name="flat")]
    consts = [_ints("zero", [0]), _ints("m2", [-2]), _ints("ax", [2]), _ints("four", [4]),
              _ints("big", [2 ** 62]), _ints("m1", [-1])]
    model = _compare_with_ort(_graph(nodes, i1 + i2 + consts, [1, 4, 16]), 16)
    # a graph: the chomp folds into the conv (causal padding: no position reads the future)
    assert isinstance(model, dse.Model) and not isinstance(model, dse.Sequential)
    convs = [lay for lay in model.layers if isinstance(lay, dse.Conv1d)]
    assert convs[0].padding == "causal" and sum(isinstance(lay, dse.Add) for lay in model.layers) == 2


def test_conv2d_and_gather_last_frame_and_reducemean():
    c1, i1 = _conv("c1", "x", "a", 2, 4, (3, 2), pads=[1, 0, 1, 0], strides=[2, 1])
    nodes = [c1, helper.make_node("LeakyRelu", ["a"], ["b"], alpha=0.1, name="lrelu"),
             helper.make_node("ReduceMean", ["b", "axes"], ["c"], keepdims=0, name="mean"),
             helper.make_node("Sigmoid", ["c"], ["y"], name="sig")]
    _compare_with_ort(_graph(nodes, i1 + [_ints("axes", [2, 3])], [1, 2, 10, 12], opset=18), 12)
    c1, i1 = _conv("c1", "x", "a", 2, 3, 2)
    nodes = [c1, helper.make_node("Gather", ["a", "idx"], ["b"], axis=2, name="last"),
             helper.make_node("Clip", ["b", "lo", "hi"], ["y"], name="relu6")]
    extra = [_ints("idx", -1), _init("lo", 0.0), _init("hi", 6.0)]
    _compare_with_ort(_graph(nodes, i1 + extra, [1, 2, 9]), 9)


def test_per_channel_constants_fold_into_conv():
    c1, i1 = _conv("c1", "x", "a", 2, 3, 3)
    nodes = [c1, helper.make_node("Mul", ["a", "k"], ["b"], name="mul"),
             helper.make_node("Add", ["b", "off"], ["c"], name="add"),
             helper.make_node("GlobalMaxPool", ["c"], ["y"], name="gmp")]
    extra = [_init("k", RNG.uniform(0.5, 2, (3, 1))), _init("off", RNG.standard_normal((1, 3, 1)))]
    _compare_with_ort(_graph(nodes, i1 + extra, [1, 2, 8]), 8)


def test_window_defaults_to_input_length_and_symbolic_needs_window():
    c1, i1 = _conv("c1", "x", "a", 2, 2, 3)
    c1 = [c1, helper.make_node("GlobalAveragePool", ["a"], ["y"], name="gap")]
    proto = _graph(c1, i1, [1, 2, 7])
    assert dse.from_onnx(proto).window == 7
    sym = _graph(c1, i1, [1, 2, "T"])
    with pytest.raises(dse.ModelFormatError, match="symbolic; pass window="):
        dse.from_onnx(sym)
    assert dse.from_onnx(sym, window=5).window == 5


@pytest.mark.parametrize("nodes,inits", [
    # symmetric time padding (the zeros at both window edges are part of the window network)
    ([helper.make_node("Conv", ["x", "w"], ["a"], name="c", pads=[2, 2]),
      helper.make_node("Relu", ["a"], ["y"], name="r")], [_init("w", RNG.standard_normal((2, 2, 3)))]),
    ([helper.make_node("Conv", ["x", "w"], ["y"], name="c", pads=[1, 0])], [_init("w", RNG.standard_normal((2, 2, 3)))]),
    ([helper.make_node("Conv", ["x", "w"], ["y"], name="c", auto_pad="SAME_UPPER", kernel_shape=[4])],
     [_init("w", RNG.standard_normal((2, 2, 4)))]),
    ([helper.make_node("Conv", ["x", "w"], ["y"], name="c", auto_pad="SAME_LOWER", kernel_shape=[4], strides=[2])],
     [_init("w", RNG.standard_normal((2, 2, 4)))]),
    # an output that keeps the time axis: the newest position per window
    ([helper.make_node("Relu", ["x"], ["y"], name="r")], []),
    ([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3], pads=[1, 1], name="mp")], []),
    ([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3], pads=[1, 1], strides=[2], ceil_mode=1,
                       count_include_pad=0, name="ap")], []),
    ([helper.make_node("Mul", ["x", "x"], ["y"], name="sq")], []),
    ([helper.make_node("Sigmoid", ["x"], ["s"], name="s1"), helper.make_node("Relu", ["x"], ["r"], name="r1"),
      helper.make_node("Mul", ["s", "r"], ["y"], name="gate")], []),
    # the mean of three branches, a Cast to float on the way
    ([helper.make_node("Relu", ["x"], ["r"], name="r"), helper.make_node("Tanh", ["x"], ["t"], name="t"),
      helper.make_node("Conv", ["x", "w"], ["c"], name="c", pads=[1, 1]),
      helper.make_node("Cast", ["c"], ["cf"], to=1, name="cast"),
      helper.make_node("Mean", ["r", "t", "cf"], ["y"], name="mean")], [_init("w", RNG.standard_normal((2, 2, 3)))]),
    ([helper.make_node("Pad", ["x", "pads"], ["p"], name="pad"), helper.make_node("MaxPool", ["p"], ["y"],
                                                                                 kernel_shape=[2], name="mp")],
     [_ints("pads", [0, 0, 3, 0, 0, 1])]),
])
def test_formerly_refused_graphs_stream_like_onnxruntime(nodes, inits):
    _compare_with_ort(_graph(nodes, inits, [1, 2, 10]), 10)


@pytest.mark.parametrize("nodes,inits,pattern", [
    ([helper.make_node("Cos", ["x"], ["y"], name="weird")], [], r"'weird' \(Cos\): unsupported op 'Cos'"),
    ([helper.make_node("Softmax", ["x"], ["y"], axis=2, name="sm")], [],
     r"'sm' \(Softmax\): Softmax over axis 2 of shape \(1, 2, 10\) before the head: only over the channels"),
    ([helper.make_node("Exp", ["x"], ["y"], name="e")], [],
     r"ONNX nodes \['e'\]: the elementwise subgraph on 'x' does not convert: nodes \['e'\]: it is not a "
     r"per-channel scale and shift followed by one of the engine's activations \(ReLU, .*closest: "),
    ([helper.make_node("Mul", ["x", "k"], ["y"], name="m")], [_init("k", np.arange(10.0).reshape(1, 1, 10))],
     r"'m' \(Mul\): elementwise constants must be per channel"),
    ([helper.make_node("Div", ["x", "x"], ["s"], name="d"), helper.make_node("Sqrt", ["s"], ["y"], name="q")], [],
     r"ONNX nodes \['d', 'q'\]: .*closest: "),
    # the first unsupported op is named before any layout complaint
    ([helper.make_node("Transpose", ["x"], ["t"], perm=[2, 0, 1], name="tr"),
      helper.make_node("Conv", ["t", "w"], ["c"], name="c"),
      helper.make_node("LSTM", ["c", "W", "R"], ["y"], name="rnn", hidden_size=2)],
     [_init("w", np.ones((2, 2, 3))), _init("W", np.ones((1, 8, 2))), _init("R", np.ones((1, 8, 2)))],
     r"'rnn' \(LSTM\): unsupported op 'LSTM': recurrent layers"),
    ([helper.make_node("Conv", ["x", "w"], ["y"], name="c", auto_pad=b"SAME_SIDEWAYS")], [_init("w", np.ones((2, 2, 3)))],
     r"'c' \(Conv\): auto_pad='SAME_SIDEWAYS' is not supported$"),
    ([helper.make_node("Pad", ["x", "pads"], ["y"], name="p", mode="reflect")], [_ints("pads", [0, 0, 1, 0, 0, 1])],
     r"'p' \(Pad\): Pad mode 'reflect' value None: only zero padding streams"),
])
def test_unsupported_graphs_name_op_and_node(nodes, inits, pattern):
    with pytest.raises(dse.ModelFormatError, match=pattern) as info:
        dse.from_onnx(_graph(nodes, inits, [1, 2, 10]))
    assert "b'" not in str(info.value)  # no Python bytes reprs in messages


def test_unreadable_onnx(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"not an onnx file at all")
    with pytest.raises(dse.ModelFormatError, match="not a readable ONNX model"):
        dse.from_onnx(str(tmp_path / "bad.onnx"))


# ----------------------------------------------------------------------------- torch
torch = pytest.importorskip("torch")
nn = torch.nn


class Chomp(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.n = n

    def forward(self, x):
        return x[:, :, :-self.n]


class TCNBlock(nn.Module):
    def __init__(self, c_in, c_out, k, d):
        super().__init__()
        pad = (k - 1) * d
        self.net = nn.Sequential(nn.Conv1d(c_in, c_out, k, padding=pad, dilation=d), Chomp(pad),
                                 nn.BatchNorm1d(c_out), nn.ReLU(), nn.Dropout(0.2))
        self.down = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x):
        return self.net(x) + (x if self.down is None else self.down(x))


class TCN(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(TCNBlock(5, 8, 3, 1), TCNBlock(8, 8, 3, 2), TCNBlock(8, 8, 3, 4))
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.blocks(x)[:, :, -1])


def _randomize_bn(module):
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_()


TORCH_MODELS = {
    "cnn": (lambda: nn.Sequential(nn.Conv1d(3, 8, 5, stride=2), nn.BatchNorm1d(8), nn.ReLU6(),
                                  nn.MaxPool1d(2), nn.Conv1d(8, 8, 3, groups=4), nn.GELU(),
                                  nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, 4), nn.Softmax(-1)),
            3, 40),
    "tcn": (TCN, 5, 30),
    "cnn2d": (lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=(1, 0)), nn.BatchNorm2d(4), nn.Hardswish(),
                                    nn.MaxPool2d(2), nn.Conv2d(4, 6, (3, 3), padding=(1, 0)), nn.Tanh(),
                                    nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(6, 5)), (1, 12), 20),
    "gelu_tanh_leaky": (lambda: nn.Sequential(nn.Conv1d(2, 4, 3, dilation=3), nn.GELU(approximate="tanh"),
                                              nn.Conv1d(4, 4, 1), nn.LeakyReLU(0.3), nn.Sigmoid(),
                                              nn.Flatten(), nn.Linear(4 * 5, 2)), 2, 11),
    # opset 17: tanh-GELU is exported as Pow/Tanh/Mul/Add, SiLU as Sigmoid+Mul
    "silu_gelu_tanh_opset17": (lambda: nn.Sequential(nn.Conv1d(3, 6, 3), nn.GELU(approximate="tanh"),
                                                     nn.Conv1d(6, 6, 3, dilation=2), nn.SiLU(),
                                                     nn.Conv1d(6, 4, 1), nn.Hardsigmoid(), nn.Mish(),
                                                     nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 3)),
                               3, 16),
}


EXPORTERS = ("dynamo", "torchscript")


def _need(exporter):
    if exporter == "dynamo":
        pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript")


@pytest.mark.torch
@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", sorted(TORCH_MODELS))
def test_from_torch_matches_torch_and_onnxruntime(name, exporter):
    _need(exporter)
    make, in_features, window = TORCH_MODELS[name]
    torch.manual_seed(0)
    module = make()
    _randomize_bn(module)
    module.eval()
    opset = 20 if name == "gelu_tanh_leaky" else 17  # tanh-GELU is a native op from opset 20
    if exporter == "dynamo":
        opset = max(opset, 18)  # the dynamo exporter writes opset 18 and later
    model, report = dse.from_torch(module, in_features=in_features, window=window, return_report=True,
                                   opset=opset, dynamo=exporter == "dynamo")
    assert "max |error|" in report and "window-exact" in report
    x = RNG.standard_normal((window + 15,) + model.frame_shape).astype(np.float32)
    got = model.stream().push_many(x)
    with torch.no_grad():
        want = np.stack([module(torch.from_numpy(np.ascontiguousarray(np.moveaxis(x[i:i + window], 0, -1)[None])))
                         .numpy().reshape(model.output_shape) for i in range(len(x) - window + 1)])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)
    # and it survives the file format
    buf = io.BytesIO()
    dse.save(model, buf)
    buf.seek(0)
    np.testing.assert_array_equal(dse.load(buf).stream().push_many(x), got)


# ----------------------------------------------------------------------------- layouts
def _onnx_window(x_win, t_axis, rank):
    """Frames (W, C[, F]) -> one ONNX input with time on `t_axis`."""
    canonical = np.moveaxis(x_win, 0, -1)[None]  # (1, C[, F], W)
    return np.ascontiguousarray(np.moveaxis(canonical, -1, t_axis))


class ChannelsLast(nn.Module):
    """Takes (B, T, C): a per-frame Linear, then convs over time, the last frame, a head."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 6)
        self.conv = nn.Conv1d(6, 6, 3, dilation=2)
        self.conv2 = nn.Conv1d(6, 5, 2)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        h = torch.relu(self.proj(x)).transpose(1, 2)
        h = torch.softmax(nn.functional.silu(self.conv(h)), dim=1)  # per-frame softmax before the head
        h = self.conv2(h).transpose(1, 2)
        return self.head(h[:, -1, :])


class ChannelsLastFlatten(nn.Module):
    """(B, T, C) -> conv -> back to (B, T', C) -> flatten the whole window -> Linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 4, 3)
        self.fc = nn.Linear(4 * 8, 2)

    def forward(self, x):
        h = torch.tanh(self.conv(x.transpose(1, 2))).transpose(1, 2)
        return self.fc(h.reshape(1, -1))


class TimeMajorSpectrogram(nn.Module):
    """Takes (B, 1, T, F), the torchaudio layout: kernels are (time, feature)."""

    def __init__(self, flatten):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, (3, 3), padding=(0, 1), dilation=(2, 1))
        self.pool = nn.MaxPool2d((1, 2))
        self.c2 = nn.Conv2d(4, 5, (2, 3), stride=(1, 2))
        self.flatten = flatten
        self.fc = nn.Linear(5 * 2 * 2 if flatten else 5, 3)  # (C, T=2, F=2) at window 7

    def forward(self, x):
        h = self.c2(self.pool(nn.functional.gelu(self.c1(x))))
        h = h.flatten(1) if self.flatten else h.mean(dim=(2, 3))
        return self.fc(h)


class CRNNTimeMajor(nn.Module):
    """(B, 1, T, F) -> 2-D convs -> permute to (B, T, C, F) -> reshape (B, T, C*F) -> per-frame
    Linear -> transpose -> Conv1d: the frames flatten in C order whatever the transposes."""

    def __init__(self):
        super().__init__()
        self.cnn = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d((1, 2)))
        self.proj, self.conv, self.fc = nn.Linear(3 * 4, 6), nn.Conv1d(6, 5, 3, padding=1), nn.Linear(5, 2)

    def forward(self, x):
        h = self.cnn(x)
        b, c, t, f = h.shape
        h = torch.relu(self.proj(h.permute(0, 2, 1, 3).reshape(b, t, c * f))).transpose(1, 2)
        return self.fc(self.conv(h).mean(-1))


LAYOUT_MODELS = {  # module, in_features, window, time axis
    "crnn_time_major_reshape": (CRNNTimeMajor, (1, 8), 10, 2),
    "channels_last": (ChannelsLast, 4, 12, 1),
    "channels_last_flatten": (ChannelsLastFlatten, 3, 10, 1),
    "time_major_2d_mean": (lambda: TimeMajorSpectrogram(False), (1, 12), 10, 2),
    "time_major_2d_flatten": (lambda: TimeMajorSpectrogram(True), (1, 12), 7, 2),
}


@pytest.mark.torch
@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", sorted(LAYOUT_MODELS))
def test_time_axis_not_last_matches_torch_and_onnxruntime(name, exporter):
    _need(exporter)
    make, in_features, window, t_axis = LAYOUT_MODELS[name]
    torch.manual_seed(1)
    module = make().eval()
    model = dse.from_torch(module, in_features=in_features, window=window, time_axis=t_axis,
                           dynamo=exporter == "dynamo")
    x = RNG.standard_normal((window + 9,) + model.frame_shape).astype(np.float32)
    got = model.stream().push_many(x)
    rank = len(model.frame_shape) + 2
    with torch.no_grad():
        want = np.stack([module(torch.from_numpy(_onnx_window(x[i:i + window], t_axis, rank))).numpy()
                         .reshape(model.output_shape) for i in range(len(x) - window + 1)])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)


def _named_time_graph(dim_names):
    c1, i1 = _conv("c1", "t", "a", 3, 4, 2)
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1], name="tr"), c1,
             helper.make_node("ReduceMax", ["a"], ["y"], axes=[2], keepdims=0, name="max")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dim_names)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=i1)
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return proto


def test_a_time_axis_named_like_time_is_found_by_name():
    proto = _named_time_graph([1, "frames", 3])
    model = dse.from_onnx(proto, window=9)
    assert model.frame_shape == (3,) and model.window == 9
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = RNG.standard_normal((15, 3)).astype(np.float32)
    want = np.stack([sess.run(None, {"x": x[i:i + 9][None]})[0][0] for i in range(7)])
    np.testing.assert_allclose(model.stream().push_many(x), want, rtol=1e-5, atol=1e-6)
    # an explicit name or index works too; a wrong one says what exists
    assert dse.from_onnx(_named_time_graph([1, "len", 3]), window=9, time_axis="len").window == 9
    assert dse.from_onnx(_named_time_graph([1, 9, 3]), time_axis=1).frame_shape == (3,)
    with pytest.raises(dse.ModelFormatError, match=r"no axis is named 'time'; the symbolic axis names are \['len'\]"):
        dse.from_onnx(_named_time_graph([1, "len", 3]), window=9, time_axis="time")
    with pytest.raises(dse.ModelFormatError, match=r"time on axis 0 of 3; expected \(1, C, T\) or \(1, T, C\)"):
        dse.from_onnx(_named_time_graph([1, 9, 3]), time_axis=0)


@pytest.mark.parametrize("perm,pattern", [
    ([1, 0, 2], r"'c' \(Conv\): Conv on a tensor of shape \(2, 1, 10\) whose channels are on axis 0"),
    ([0, 2, 1], r"'c' \(Conv\): Conv on a tensor of shape \(1, 10, 2\) whose channels are on axis 2: .*"
                r"transpose first \(a module that takes \(B, T, C\) frames needs time_axis=1\)"),
])
def test_convs_after_unstreamable_transposes_are_refused(perm, pattern):
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=perm, name="tr"),
             helper.make_node("Conv", ["t", "w"], ["y"], name="c")]
    with pytest.raises(dse.ModelFormatError, match=pattern):
        dse.from_onnx(_graph(nodes, [_init("w", np.ones((2, 2, 3)))], [1, 2, 10]))


def test_conv_on_channels_last_data_is_refused():
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="c")]
    with pytest.raises(dse.ModelFormatError, match=r"'c' \(Conv\): Conv on a tensor of shape \(1, 10, 2\) whose "
                                                   r"channels are on axis 2"):
        dse.from_onnx(_graph(nodes, [_init("w", np.ones((2, 10, 3)))], [1, 10, 2]), time_axis=1)


def test_from_torch_is_quiet_about_the_exporter_it_chooses():
    """from_torch uses torch's TorchScript-based exporter on purpose; PyTorch's notices about
    that choice (deprecation, logging hook) are not the user's concern and must not leak."""
    import warnings

    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    net = torch.nn.Sequential(torch.nn.Conv1d(2, 3, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool1d(1),
                              torch.nn.Flatten()).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = dse.from_torch(net, in_features=2, window=5, dynamo=False)
    assert model.output_shape == (3,)


def test_flatten_of_a_one_channel_window_is_the_flatten_head():
    # (1, 1, T) -> (1, T): the channel axis of size 1 goes with the whole window (a hypothesis find)
    c1, i1 = _conv("c1", "x", "a", 1, 1, 1)
    nodes = [c1, helper.make_node("Flatten", ["a"], ["y"], name="flat")]
    model = _compare_with_ort(_graph(nodes, i1, [1, 1, 3]), 3)
    assert isinstance(model.layers[-1], dse.Flatten)


@pytest.mark.torch
@pytest.mark.parametrize("exporter", EXPORTERS)
def test_a_channels_last_module_without_time_axis_gets_a_hint(exporter):
    _need(exporter)
    with pytest.raises(dse.ModelFormatError, match=r"the module fails on a window of shape \(1, 4, 12\): "
                                                   r"RuntimeError: .*pass time_axis=1") as info:
        dse.from_torch(ChannelsLast().eval(), in_features=4, window=12, dynamo=exporter == "dynamo")
    assert "Traceback" not in str(info.value) and info.value.__cause__ is None


@pytest.mark.torch
def test_the_dynamo_exporter_is_the_default_and_needs_onnxscript(monkeypatch):
    # a plain CNN exported as torch 2.13 does by default (its Unsqueeze before the head was
    # refused before graph models); without onnxscript the error says what to install
    module = nn.Sequential(nn.Conv1d(3, 4, 3, padding="same"), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
                           nn.Flatten(), nn.Linear(4, 2)).eval()
    if importlib.util.find_spec("onnxscript") is not None:
        model = dse.from_torch(module, in_features=3, window=10)
        x = RNG.standard_normal((14, 3)).astype(np.float32)
        with torch.no_grad():
            want = np.stack([module(torch.from_numpy(np.ascontiguousarray(x[i:i + 10].T[None]))).numpy()[0]
                             for i in range(5)])
        np.testing.assert_allclose(model.stream().push_many(x), want, rtol=1e-5, atol=1e-6)
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(ImportError, match="needs onnxscript: pip install onnxscript, or pass dynamo=False"):
        dse.from_torch(module, in_features=3, window=10)
    assert dse.from_torch(module, in_features=3, window=10, dynamo=False).window == 10


@pytest.mark.parametrize("n,k,s,p,op", [(3, 2, 2, 1, "MaxPool"), (4, 1, 2, 0, "MaxPool"), (3, 2, 2, 1, "AveragePool"),
                                        (7, 2, 3, 1, "AveragePool")])
def test_ceil_mode_windows_starting_in_the_right_padding_are_dropped_as_pytorch_does(n, k, s, p, op):
    # onnx's shape inference counts a last window that would start in the right padding;
    # PyTorch and onnxruntime drop it (a hypothesis find): the converter follows them, and the
    # shapes after it (a conv here) are right too
    extra = {"count_include_pad": 1} if op == "AveragePool" else {}
    c1, i1 = _conv("c1", "p", "y", 2, 3, 1)
    nodes = [helper.make_node(op, ["x"], ["p"], kernel_shape=[k], strides=[s], pads=[p, p], ceil_mode=1,
                              name="pool", **extra), c1]
    model = _compare_with_ort(_graph(nodes, i1, [1, 2, n]), n)
    x = RNG.standard_normal((n + 4, 2)).astype(np.float32)
    pool = nn.MaxPool1d(k, s, p, ceil_mode=True) if op == "MaxPool" else nn.AvgPool1d(k, s, p, ceil_mode=True)
    with torch.no_grad():
        lengths = {pool(torch.from_numpy(np.ascontiguousarray(x[:n].T[None]))).shape[-1]}
    assert lengths == {model.specs[1].length}


class MultiScaleHeads(nn.Module):
    """Two branches pooled three ways, the vectors concatenated after the heads."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv1d(3, 4, 3, padding=1), nn.Conv1d(3, 5, 7, padding=3)
        self.fc = nn.Linear(4 + 5 + 4, 2)

    def forward(self, x):
        a, b = torch.relu(self.a(x)), torch.tanh(self.b(x))
        return self.fc(torch.cat([a.mean(-1), b.amax(-1), a[:, :, -1]], dim=1))


PADDING_AND_ACTIVATION_MODULES = {  # the activations and pools of issue 11, as nn modules write them
    "prelu": lambda: nn.Sequential(nn.Conv1d(3, 4, 3, padding=1), nn.PReLU(4), nn.AdaptiveMaxPool1d(1), nn.Flatten()),
    "prelu_shared": lambda: nn.Sequential(nn.Conv1d(3, 4, 3), nn.PReLU(), nn.Flatten()),
    "softplus_beta": lambda: nn.Sequential(nn.Conv1d(3, 4, 3, padding="same"), nn.Softplus(beta=2.0),
                                           nn.AdaptiveAvgPool1d(1), nn.Flatten()),
    "hardtanh": lambda: nn.Sequential(nn.Conv1d(3, 4, 3), nn.Hardtanh(-0.5, 0.7), nn.AdaptiveAvgPool1d(1), nn.Flatten()),
    "celu_selu_softsign_elu": lambda: nn.Sequential(nn.Conv1d(3, 4, 3), nn.CELU(0.6), nn.Conv1d(4, 4, 1), nn.SELU(),
                                                    nn.Conv1d(4, 4, 1), nn.Softsign(), nn.Conv1d(4, 4, 1),
                                                    nn.ELU(0.8), nn.AdaptiveAvgPool1d(1), nn.Flatten()),
    "avgpool_padding": lambda: nn.Sequential(nn.Conv1d(3, 4, 3), nn.AvgPool1d(3, 2, padding=1, count_include_pad=False),
                                             nn.AvgPool1d(3, 1, padding=1), nn.Flatten()),
    "maxpool_ceil": lambda: nn.Sequential(nn.Conv1d(3, 4, 3), nn.MaxPool1d(3, 2, padding=1, ceil_mode=True), nn.Flatten()),
    "vectors_concatenated": MultiScaleHeads,
    "constant_pads": lambda: nn.Sequential(nn.ConstantPad1d((2, 1), 0.0), nn.Conv1d(3, 4, 3), nn.ReLU(),
                                           nn.ZeroPad1d((0, 2)), nn.MaxPool1d(2), nn.Flatten()),
}


@pytest.mark.torch
@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", sorted(PADDING_AND_ACTIVATION_MODULES))
def test_activations_and_padded_pools_match_torch(name, exporter):
    _need(exporter)
    torch.manual_seed(2)
    module = PADDING_AND_ACTIVATION_MODULES[name]().eval()
    model = dse.from_torch(module, in_features=3, window=13, dynamo=exporter == "dynamo")
    x = RNG.standard_normal((21, 3)).astype(np.float32)
    with torch.no_grad():
        ref = module.double()
        want = np.stack([ref(torch.from_numpy(np.ascontiguousarray(x[i:i + 13].T[None]).astype(np.float64))).numpy()
                         .reshape(model.output_shape) for i in range(9)])
    scale = float(np.max(np.abs(want)))
    np.testing.assert_allclose(model.stream().push_many(x), want, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(model.stream(mode="decimated").push_many(x), want[::model.hop], rtol=0, atol=1e-5 * scale)


def test_an_unsupported_op_is_named_before_input_layout_complaints():
    # the input's dims are symbolic (which is refused too), but the GRU comes first
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[2, 0, 1], name="tr"),
             helper.make_node("GRU", ["t", "W", "R"], ["y"], name="gru", hidden_size=2)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "C", "T"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[_init("W", np.ones((1, 6, 2))), _init("R", np.ones((1, 6, 2)))])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(dse.ModelFormatError, match=r"'gru' \(GRU\): unsupported op 'GRU': recurrent"):
        dse.from_onnx(proto, window=8)


def test_a_kernel_longer_than_the_window_is_refused_not_a_crash():
    # onnx's shape inference aborts the process on a Slice of an axis with no positions (a C++
    # assertion): the converter finds the axis first (a fuzz find), e.g. a chomped TCN given a
    # window shorter than its kernel
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="c"),
             helper.make_node("Slice", ["a", "s", "e", "ax"], ["y"], name="chomp")]
    inits = [_init("w", np.ones((2, 2, 30))), _ints("s", [1]), _ints("e", [1 << 30]), _ints("ax", [2])]
    with pytest.raises(dse.ModelFormatError, match=r"'c' \(Conv\): its output would have shape \(1, 2, -19\)"):
        dse.from_onnx(_graph(nodes, inits, [1, 2, "T"]), window=10)
