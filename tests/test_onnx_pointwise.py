"""Elementwise ONNX subgraphs (activations written out in arithmetic, per-channel affines,
chains of them) convert, and stream equal to onnxruntime; other functions are refused with the
nodes named and the closest activation."""
import math

import numpy as np
import pytest

import deepshift_edge as dse
from deepshift_edge.convert import onnx_pointwise as P

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


class _Builder:
    """Writes nodes for one activation 'spelling' at a time, with fresh tensor names."""

    def __init__(self, channels, rng):
        self.nodes, self.inits, self.n, self.c, self.rng = [], [], 0, channels, rng

    def name(self, stem):
        self.n += 1
        return f"{stem}{self.n}"

    def const(self, value):
        name = self.name("k")
        self.inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def const_int(self, value):
        name = self.name("i")
        self.inits.append(numpy_helper.from_array(np.asarray(value, np.int64), name))
        return name

    def op(self, op_type, inputs, **attrs):
        out = self.name("t")
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=self.name(op_type), **attrs))
        return out

    def per_channel(self, low, high):
        return self.const(self.rng.uniform(low, high, (1, self.c, 1)))


def _gelu_erf_a(b, x):  # x * 0.5 * (1 + erf(x / sqrt2)), as torch < 2 wrote it
    e = b.op("Erf", [b.op("Div", [x, b.const(math.sqrt(2))])])
    return b.op("Mul", [b.op("Mul", [x, b.op("Add", [e, b.const(1.0)])]), b.const(0.5)])


def _gelu_erf_b(b, x):  # (0.5 * x) * (1 + erf(x * 1/sqrt2))
    e = b.op("Erf", [b.op("Mul", [x, b.const(1 / math.sqrt(2))])])
    return b.op("Mul", [b.op("Mul", [b.const(0.5), x]), b.op("Add", [b.const(1.0), e])])


def _gelu_tanh(b, x):  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) with Pow
    cube = b.op("Pow", [x, b.const(3.0)])
    inner = b.op("Add", [x, b.op("Mul", [cube, b.const(0.044715)])])
    t = b.op("Tanh", [b.op("Mul", [inner, b.const(math.sqrt(2 / math.pi))])])
    return b.op("Mul", [b.op("Mul", [x, b.const(0.5)]), b.op("Add", [t, b.const(1.0)])])


def _gelu_tanh_cube_by_mul(b, x):
    cube = b.op("Mul", [b.op("Mul", [x, x]), x])
    inner = b.op("Add", [b.op("Mul", [b.const(0.044715), cube]), x])
    t = b.op("Tanh", [b.op("Mul", [b.const(math.sqrt(2 / math.pi)), inner])])
    return b.op("Mul", [b.op("Mul", [b.op("Add", [b.const(1.0), t]), x]), b.const(0.5)])


def _silu(b, x):
    return b.op("Mul", [x, b.op("Sigmoid", [x])])


def _hardswish_arith(b, x):  # x * relu6(x + 3) / 6
    r6 = b.op("Clip", [b.op("Add", [x, b.const(3.0)]), b.const(0.0), b.const(6.0)])
    return b.op("Div", [b.op("Mul", [x, r6]), b.const(6.0)])


def _hardsigmoid(b, x):
    return b.op("HardSigmoid", [x], alpha=1 / 6, beta=0.5)


def _affine(b, x):
    return b.op("Add", [b.op("Mul", [x, b.per_channel(-2, 2)]), b.per_channel(-1, 1)])


def _batchnorm_arith(b, x):  # (x - mean) / sqrt(var + eps) * gamma + beta, sqrt on constants
    std = b.op("Sqrt", [b.op("Add", [b.per_channel(0.5, 2), b.const(1e-5)])])
    y = b.op("Div", [b.op("Sub", [x, b.per_channel(-1, 1)]), std])
    return b.op("Add", [b.op("Mul", [y, b.per_channel(0.5, 1.5)]), b.per_channel(-1, 1)])


SPELLINGS = {
    "relu": lambda b, x: b.op("Relu", [x]),
    "relu6_clip": lambda b, x: b.op("Clip", [x, b.const(0.0), b.const(6.0)]),
    "leaky": lambda b, x: b.op("LeakyRelu", [x], alpha=0.2),
    "sigmoid": lambda b, x: b.op("Sigmoid", [x]),
    "tanh": lambda b, x: b.op("Tanh", [x]),
    "hardswish_op": lambda b, x: b.op("HardSwish", [x]),
    "hardswish_arith": _hardswish_arith,
    "hardsigmoid": _hardsigmoid,
    "silu": _silu,
    "mish": lambda b, x: b.op("Mul", [x, b.op("Tanh", [b.op("Softplus", [x])])]),
    "gelu_erf_a": _gelu_erf_a,
    "gelu_erf_b": _gelu_erf_b,
    "gelu_tanh": _gelu_tanh,
    "gelu_tanh_mul": _gelu_tanh_cube_by_mul,
    "affine": _affine,
    "batchnorm_arith": _batchnorm_arith,
    "identity": lambda b, x: b.op("Identity", [x]),
}


def _model(spellings, seed, channels=4, window=12, first_on_input=False):
    """x -> [affine on the input] -> Conv -> spellings -> Conv -> spellings -> last frame."""
    rng = np.random.default_rng(seed)
    b = _Builder(channels, rng)
    x = "x"
    if first_on_input:
        x = _affine(b, x)  # input normalisation before a causal (zero-padded) conv
    for i, chain in enumerate(spellings):
        w = b.const(rng.standard_normal((channels, channels, 3)) * 0.8)
        bias = b.const(rng.standard_normal(channels) * 0.5)
        pads = [2 * (i + 1), 0] if seed % 3 else [0, 0]  # causal or valid
        x = b.op("Conv", [x, w, bias], pads=pads, dilations=[i + 1])
        for s in chain:
            x = SPELLINGS[s](b, x)
    b.nodes.append(helper.make_node("Gather", [x, b.const_int(-1)], ["y"], axis=2, name="last"))
    g = helper.make_graph(b.nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, window])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=b.inits)
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return proto


def _stream_vs_ort(proto, window, scale=3.0):
    data = proto.SerializeToString()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    model = dse.from_onnx(data)
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((window + 10,) + model.frame_shape) * scale).astype(np.float32)
    got = model.stream().push_many(x)
    want = np.stack([sess.run(None, {"x": np.ascontiguousarray(np.moveaxis(x[i:i + window], 0, -1)[None])})[0]
                     .reshape(model.output_shape) for i in range(len(x) - window + 1)])
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
    return model


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_each_spelling_streams_like_onnxruntime(spelling):
    model = _stream_vs_ort(_model([[spelling], ["relu"]], seed=len(spelling)), 12)
    kinds = {type(lay).__name__ for lay in model.layers}
    expected = {"relu": "ReLU", "relu6_clip": "ReLU6", "leaky": "LeakyReLU", "sigmoid": "Sigmoid",
                "tanh": "Tanh", "hardswish_op": "HardSwish", "hardswish_arith": "HardSwish",
                "hardsigmoid": "Hardsigmoid", "silu": "SiLU", "mish": "Mish", "gelu_erf_a": "GELU", "gelu_erf_b": "GELU",
                "gelu_tanh": "GELU", "gelu_tanh_mul": "GELU", "affine": "BatchNorm1d",
                "batchnorm_arith": "BatchNorm1d", "identity": "ReLU"}[spelling]
    assert expected in kinds
    if spelling.startswith("gelu"):
        gelu = next(lay for lay in model.layers if isinstance(lay, dse.GELU))
        assert gelu.approximate == ("tanh" if "tanh" in spelling else "none")


@pytest.mark.parametrize("seed", range(30))
def test_random_chains_stream_like_onnxruntime(seed):
    rng = np.random.default_rng(100 + seed)
    names = sorted(SPELLINGS)
    chains = [[names[i] for i in rng.integers(0, len(names), rng.integers(1, 4))] for _ in range(2)]
    _stream_vs_ort(_model(chains, seed=seed, first_on_input=bool(seed % 2)), 12)


def test_input_normalisation_is_its_own_first_layer():
    # (x * k + b) on the graph input, before a zero-padded conv: it cannot fold into that conv
    # (the padding zeros are not normalised), so it stays a per-channel affine layer.
    model = _stream_vs_ort(_model([["relu"]], seed=5, first_on_input=True), 12, scale=1.0)
    assert isinstance(model.layers[0], dse.BatchNorm1d)


@pytest.mark.parametrize("body,kind", [
    (lambda b, x: b.op("Softplus", [x]), "Softplus"),
    (lambda b, x: b.op("Softsign", [x]), "Softsign"),
    # Softplus(beta=2) as the dynamo exporter writes it: Where(2x > 20, x, Softplus(2x) / 2)
    (lambda b, x: b.op("Where", [b.op("Greater", [b.op("Mul", [x, b.const(2.0)]), b.const(20.0)]), x,
                                 b.op("Div", [b.op("Softplus", [b.op("Mul", [x, b.const(2.0)])]), b.const(2.0)])]),
     "Softplus"),
    (lambda b, x: b.op("Elu", [x], alpha=0.7), "ELU"),
    (lambda b, x: b.op("Celu", [x], alpha=0.5), "CELU"),
    (lambda b, x: b.op("Selu", [x]), "SELU"),
    (lambda b, x: b.op("Clip", [x, b.const(-1.0), b.const(1.0)]), "Hardtanh"),
    (lambda b, x: b.op("Mul", [x, x]), "Mul"),  # two functions of x joined: a Mul node
    (lambda b, x: b.op("Mul", [b.op("Sigmoid", [x]), b.op("Tanh", [x])]), "Mul"),
    (lambda b, x: b.op("Sub", [b.op("Relu", [x]), b.op("Tanh", [x])]), "Add"),
])
def test_more_functions_convert_and_stream_like_onnxruntime(body, kind):
    b = _Builder(2, np.random.default_rng(0))
    w = b.const(np.random.default_rng(1).standard_normal((2, 2, 3)))
    y = body(b, b.op("Conv", ["x", w], pads=[1, 1]))
    b.nodes.append(helper.make_node("GlobalAveragePool", [y], ["y"], name="gap"))
    g = helper.make_graph(b.nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=b.inits)
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    model = _stream_vs_ort(proto, 8, scale=1.5)
    assert kind in {type(lay).__name__ for lay in model.layers}


@pytest.mark.parametrize("body", [
    lambda b, x: b.op("Exp", [x]),
    lambda b, x: b.op("Sqrt", [b.op("Abs", [x])]),
    lambda b, x: b.op("Div", [b.op("Sigmoid", [x]), b.op("Tanh", [x])]),
])
def test_other_functions_are_refused_naming_the_nodes(body):
    b = _Builder(2, np.random.default_rng(0))
    y = body(b, "x")
    b.nodes.append(helper.make_node("GlobalAveragePool", [y], ["y"], name="gap"))
    g = helper.make_graph(b.nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=b.inits)
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(dse.ModelFormatError) as info:
        dse.from_onnx(proto)
    msg = str(info.value)
    assert "closest: " in msg and "ONNX nodes [" in msg
    for node in b.nodes[:-1]:
        assert repr(node.name) in msg


# ----------------------------------------------------------------------------- the identifier alone
def _x():
    return P.Expr(None)


def test_identify_tells_the_two_gelus_apart():
    x = _x()
    tanh_form = P.Expr(P.bind("Gelu", {"approximate": "tanh"}), [x], "Gelu")
    erf_form = P.Expr(P.bind("Gelu", {}), [x], "Gelu")
    assert P.identify(tanh_form, (1,))[0][2].approximate == "tanh"
    assert P.identify(erf_form, (1,))[0][2].approximate == "none"


def test_identify_reads_per_channel_scale_and_shift_before_the_activation():
    x = _x()
    a = np.array([2.0, -1.0, 0.5]).reshape(3, 1)
    b = np.array([0.1, 0.2, -0.3]).reshape(3, 1)
    inner = P.Expr(P.bind("Add", {}), [P.Expr(P.bind("Mul", {}), [x, a], "Mul"), b], "Add")
    (scale, shift, act), = P.identify(P.Expr(P.bind("Tanh", {}), [inner], "Tanh"), (3, 1))
    np.testing.assert_allclose(scale, a.ravel())
    np.testing.assert_allclose(shift, b.ravel())
    assert isinstance(act, dse.Tanh)


def test_identify_splits_a_chain_outermost_first():
    x = _x()
    chain = P.Expr(P.bind("Sigmoid", {}), [P.Expr(P.bind("LeakyRelu", {"alpha": 0.3}), [x], "LeakyRelu")], "Sigmoid")
    steps = P.identify(chain, (1,))
    assert [type(s[2]).__name__ for s in steps] == ["LeakyReLU", "Sigmoid"]
    assert steps[0][2].negative_slope == pytest.approx(0.3)


def test_identify_refuses_a_near_miss():
    x = _x()
    # GELU(tanh) with a wrong constant 0.05 instead of 0.044715: off by more than the tolerance
    cube = P.Expr(P.bind("Pow", {}), [x, np.array(3.0)], "Pow")
    inner = P.Expr(P.bind("Add", {}), [x, P.Expr(P.bind("Mul", {}), [cube, np.array(0.05)], "Mul")], "Add")
    t = P.Expr(P.bind("Tanh", {}), [P.Expr(P.bind("Mul", {}), [inner, np.array(math.sqrt(2 / math.pi))], "Mul")], "Tanh")
    g = P.Expr(P.bind("Mul", {}), [P.Expr(P.bind("Mul", {}), [x, np.array(0.5)], "Mul"),
                                   P.Expr(P.bind("Add", {}), [t, np.array(1.0)], "Add")], "Mul")
    with pytest.raises(P.Unidentified, match="closest: GELU"):
        P.identify(g, (1,))
