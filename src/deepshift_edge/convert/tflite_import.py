"""Import a ``.tflite`` (LiteRT) window network: float32 files as a graph
:class:`~deepshift_edge.Model`, full-integer files as a :class:`~deepshift_edge.QuantizedModel`.

The flatbuffer is read with the flatc-generated schema code of the ``tflite`` package (or
the copy inside ``ai-edge-litert``), never TensorFlow; both are imported only when
:func:`from_tflite` is called. Every field is validated before use (buffer bounds and sizes,
tensor indices, shapes, vector lengths), so that a corrupt or hostile file raises
:class:`~deepshift_edge.ModelFormatError` and nothing else.

How it converts: the TFLite graph (NHWC) is translated op by op into the equivalent ONNX
graph (NCHW convolutions between two transposes, TensorFlow's ``SAME`` padding as ONNX's
``SAME_UPPER``, Keras' ``Flatten`` shape arithmetic folded, dilated convolutions that the
converter wrote as ``SPACE_TO_BATCH_ND -> CONV_2D -> BATCH_TO_SPACE_ND`` turned back into one
dilated convolution), which :func:`~deepshift_edge.from_onnx`'s machinery converts: axis
roles through transposes and reshapes, the graph model, and the streamed == offline check.
A full-integer file becomes a QDQ graph carrying the file's own parameters (each int8 tensor
as ``QuantizeLinear -> DequantizeLinear`` with its scale and zero point, int8 weights with
their per-channel scales, int32 biases as stored), converted by
:mod:`deepshift_edge.convert.onnx_qdq`: the int8 model has the file's scales and zero points,
not re-quantized ones. ONNX nodes are named after the TFLite operator they come from
(``op 3 CONV_2D``), so that messages point into the ``.tflite`` file.

Ops: ``SUPPORTED_OPS``; anything else is refused with its name before anything else is said.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from ..errors import ModelFormatError

__all__ = ["from_tflite", "SUPPORTED_OPS"]

SUPPORTED_OPS = (
    "CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN", "REDUCE_MAX", "SUM",
    "FULLY_CONNECTED", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "ADD", "SUB", "MUL", "CONCATENATION",
    "SPLIT", "SPLIT_V", "PAD", "PADV2", "TRANSPOSE", "SLICE", "STRIDED_SLICE", "SOFTMAX", "LOGISTIC",
    "TANH", "RELU", "RELU6", "RELU_N1_TO_1", "LEAKY_RELU", "HARD_SWISH", "GELU", "EXP", "LOG",
    "QUANTIZE", "DEQUANTIZE", "SHAPE", "PACK", "GATHER", "REDUCE_PROD", "SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND",
)
# Ops evaluated at conversion when every input is a constant (shape arithmetic).
_FOLDABLE = ("SHAPE", "STRIDED_SLICE", "PACK", "CONCATENATION", "RESHAPE", "SQUEEZE", "EXPAND_DIMS",
             "DEQUANTIZE", "SLICE", "TRANSPOSE", "ADD", "SUB", "MUL", "GATHER", "REDUCE_PROD")
_RECURRENT = ("UNIDIRECTIONAL_SEQUENCE_LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN", "BIDIRECTIONAL_SEQUENCE_LSTM",
              "BIDIRECTIONAL_SEQUENCE_RNN", "LSTM", "RNN", "SVDF", "WHILE", "CALL_ONCE", "VAR_HANDLE")

MAX_FILE = 1 << 30          # bytes of a .tflite file
MAX_TENSOR = 1 << 25        # elements of any tensor (matches the .npz format's parameter budget)
MAX_RANK = 6
MAX_TENSORS = 1 << 20       # tensors of the graph
MAX_OPS = 1 << 16           # operators of the graph (a converted model has at most 4096 nodes)

# TensorType -> numpy dtype (the types a CNN file holds; others are refused by name)
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_,
           7: np.int16, 9: np.int8, 10: np.float64}
_TYPE_NAMES = {0: "FLOAT32", 1: "FLOAT16", 2: "INT32", 3: "UINT8", 4: "INT64", 5: "STRING", 6: "BOOL",
               7: "INT16", 8: "COMPLEX64", 9: "INT8", 10: "FLOAT64", 11: "COMPLEX128", 12: "UINT64",
               13: "RESOURCE", 14: "VARIANT", 15: "UINT32", 16: "UINT16", 17: "INT4"}
_ACTS = {0: None, 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH"}


def _schema():
    from .tflite_export import _schema as schema
    try:
        return schema()
    except ImportError as exc:
        raise ImportError("from_tflite needs the TFLite schema code and onnx: "
                          "pip install 'deepshift-edge[tflite]' (the tflite, flatbuffers and onnx packages)",
                          name=exc.name) from exc


# ----------------------------------------------------------------------------- reading
class _Tensor:
    __slots__ = ("index", "name", "shape", "dtype", "type_name", "data", "scale", "zero", "qdim")

    def __init__(self, index, name, shape, type_code, data, scale, zero, qdim):
        self.index = index
        self.name = name
        self.shape = shape
        self.type_name = _TYPE_NAMES.get(type_code, f"type {type_code}")
        self.dtype = _DTYPES.get(type_code)
        self.data = data            # numpy array (constants) or None
        self.scale = scale          # float32 array or None
        self.zero = zero            # int64 array or None
        self.qdim = qdim

    @property
    def quantized(self) -> bool:
        return self.scale is not None and self.scale.size > 0

    def what(self) -> str:
        return f"tensor {self.index} {self.name!r}"


class _Op:
    __slots__ = ("index", "name", "inputs", "outputs", "opts")

    def __init__(self, index, name, inputs, outputs, opts):
        self.index, self.name, self.inputs, self.outputs, self.opts = index, name, inputs, outputs, opts

    def label(self) -> str:
        return f"op {self.index} {self.name}"


def _fail(op, msg) -> ModelFormatError:
    return ModelFormatError(f"TFLite {op.label() if op is not None else 'graph input'}: {msg}")


def _vec(obj, field: str, limit: int) -> np.ndarray:
    """A flatbuffer vector field as a numpy array, its length checked against the file size."""
    n = getattr(obj, field + "Length")()
    if n < 0 or n > limit:
        raise ModelFormatError(f"TFLite file: a {field} vector of length {n} (the file has {limit} bytes)")
    if n == 0:
        return np.zeros(0, np.int64)
    arr = getattr(obj, field + "AsNumpy")()
    if isinstance(arr, int) or len(arr) != n:
        raise ModelFormatError(f"TFLite file: the {field} vector lies outside the file")
    return np.array(arr)


def _text(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")[:200]
    return str(v)[:200]


def _options(S, op, opcode_name):
    """The builtin options of an operator as a dict of the fields the translation uses."""
    t = op.BuiltinOptionsType()
    table = op.BuiltinOptions()
    if t == 0 or table is None:
        return {}
    names = {v: k for k, v in vars(S.BuiltinOptions).items() if not k.startswith("_") and isinstance(v, int)}
    cls_name = names.get(t)
    cls = getattr(S, cls_name, None) if cls_name else None
    if cls is None or not isinstance(cls, type):
        raise ModelFormatError(f"TFLite {opcode_name}: unknown builtin options type {t}")
    o = cls()
    o.Init(table.Bytes, table.Pos)
    out = {}
    for f in ("Padding", "StrideW", "StrideH", "DilationWFactor", "DilationHFactor", "FusedActivationFunction",
              "FilterWidth", "FilterHeight", "DepthMultiplier", "KeepDims", "KeepNumDims", "WeightsFormat",
              "Axis", "NumSplits", "Beta", "Alpha", "BeginMask", "EndMask", "EllipsisMask", "NewAxisMask",
              "ShrinkAxisMask", "Offset", "ValuesCount", "Approximate", "PotScaleInt16", "AsymmetricQuantizeInputs"):
        if hasattr(o, f):
            out[f] = getattr(o, f)()
    for f in ("NewShape", "SqueezeDims"):
        if hasattr(o, f + "Length"):
            out[f] = _vec(o, f, 64).astype(np.int64).tolist()
    return out


class _File:
    """Everything the translation reads from a .tflite file, validated."""

    def __init__(self, data: bytes):
        S = _schema()
        self.S = S
        n = len(data)
        if n < 8:
            raise ModelFormatError(f"not a TFLite file: {n} bytes")
        if data[4:8] != b"TFL3":
            raise ModelFormatError(f"not a TFLite file: expected the identifier b'TFL3' at byte 4, got {bytes(data[4:8])!r}")
        m = S.Model.GetRootAs(data, 0)
        self.version = m.Version()
        if m.SubgraphsLength() < 1 or m.SubgraphsLength() > n // 4:
            raise ModelFormatError(f"TFLite file: {m.SubgraphsLength()} subgraphs, expected 1")
        if m.SubgraphsLength() != 1:
            raise ModelFormatError(f"TFLite file: {m.SubgraphsLength()} subgraphs (control flow): only "
                                   f"single-graph models convert")
        g = m.Subgraphs(0)
        if g is None:
            raise ModelFormatError("TFLite file: its subgraph lies outside the file")
        nbuf = m.BuffersLength()
        if nbuf < 0 or nbuf > n // 4:
            raise ModelFormatError(f"TFLite file: {nbuf} buffers in a file of {n} bytes")
        ncodes = m.OperatorCodesLength()
        if ncodes < 0 or ncodes > n // 4:
            raise ModelFormatError(f"TFLite file: {ncodes} operator codes in a file of {n} bytes")
        op_names = {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}
        self.codes = []
        for i in range(ncodes):
            c = m.OperatorCodes(i)
            code = max(int(c.BuiltinCode()), int(c.DeprecatedBuiltinCode()))
            name = op_names.get(code, f"builtin {code}")
            if name == "CUSTOM":
                name = f"CUSTOM {_text(c.CustomCode())!r}"
            self.codes.append(name)
        ntensors = g.TensorsLength()
        if ntensors < 0 or ntensors > min(n // 4, MAX_TENSORS):
            raise ModelFormatError(f"TFLite file: {ntensors} tensors in a file of {n} bytes")
        self.tensors: List[_Tensor] = []
        for i in range(ntensors):
            t = g.Tensors(i)
            if t is None:
                raise ModelFormatError(f"TFLite file: tensor {i} lies outside the file")
            shape = _vec(t, "Shape", MAX_RANK).astype(np.int64).tolist()
            name = _text(t.Name())
            type_code = int(t.Type())
            if any(d < 0 for d in shape):
                raise ModelFormatError(f"TFLite file: tensor {i} {name!r} has shape {shape}: negative sizes")
            size = int(np.prod(shape, dtype=object)) if shape else 1
            if size > MAX_TENSOR:
                raise ModelFormatError(f"TFLite file: tensor {i} {name!r} has shape {shape}: more than "
                                       f"{MAX_TENSOR} elements")
            data_arr = None
            b = int(t.Buffer())
            if b < 0 or b >= max(nbuf, 1) and b != 0:
                raise ModelFormatError(f"TFLite file: tensor {i} {name!r} reads buffer {b}, the file has {nbuf}")
            if 0 < b < nbuf:
                buf = m.Buffers(b)
                raw = None
                if buf is not None:
                    off = int(buf.Offset()) if hasattr(buf, "Offset") else 0
                    if off > 1:  # a large model's buffer stored after the flatbuffer
                        sz = int(buf.Size())
                        if off + sz > n or sz < 0:
                            raise ModelFormatError(f"TFLite file: buffer {b} (offset {off}, {sz} bytes) lies "
                                                   f"outside the file of {n} bytes")
                        raw = bytes(data[off:off + sz])
                    elif buf.DataLength() > 0:
                        if buf.DataLength() > n:
                            raise ModelFormatError(f"TFLite file: buffer {b} of {buf.DataLength()} bytes in a "
                                                   f"file of {n}")
                        raw = buf.DataAsNumpy()
                        if isinstance(raw, int) or len(raw) != buf.DataLength():
                            raise ModelFormatError(f"TFLite file: buffer {b} lies outside the file")
                        raw = raw.tobytes()
                if raw:
                    dt = _DTYPES.get(type_code)
                    if dt is None:
                        raise ModelFormatError(f"TFLite file: tensor {i} {name!r}: constant of type "
                                               f"{_TYPE_NAMES.get(type_code, type_code)} is not supported")
                    want = size * np.dtype(dt).itemsize
                    if len(raw) != want:
                        raise ModelFormatError(f"TFLite file: tensor {i} {name!r} of shape {shape} "
                                               f"({_TYPE_NAMES[type_code]}) needs {want} bytes, its buffer {b} "
                                               f"has {len(raw)}")
                    data_arr = np.frombuffer(raw, dtype=np.dtype(dt).newbyteorder("<")).astype(dt).reshape(shape)
            scale = zero = None
            qdim = 0
            q = t.Quantization()
            if q is not None:
                sc = _vec(q, "Scale", MAX_TENSOR)
                if sc.size:
                    scale = sc.astype(np.float32)
                    zero = _vec(q, "ZeroPoint", MAX_TENSOR).astype(np.int64)
                    qdim = int(q.QuantizedDimension())
                    if zero.size not in (1, scale.size):
                        raise ModelFormatError(f"TFLite file: tensor {i} {name!r}: {scale.size} scales and "
                                               f"{zero.size} zero points")
                    if not (np.isfinite(scale).all() and (scale > 0).all()):
                        raise ModelFormatError(f"TFLite file: tensor {i} {name!r}: quantization scales must be "
                                               f"positive and finite, got {scale[:4]}")
                    if scale.size > 1 and not (0 <= qdim < max(len(shape), 1) and shape[qdim] == scale.size):
                        raise ModelFormatError(f"TFLite file: tensor {i} {name!r} of shape {shape}: {scale.size} "
                                               f"scales along axis {qdim}")
            self.tensors.append(_Tensor(i, name, shape, type_code, data_arr, scale, zero, qdim))
        self.inputs = self._indices(_vec(g, "Inputs", n), "graph input")
        self.outputs = self._indices(_vec(g, "Outputs", n), "graph output")
        nops = g.OperatorsLength()
        if nops < 0 or nops > min(n // 4, MAX_OPS):
            raise ModelFormatError(f"TFLite file: {nops} operators in a file of {n} bytes")
        self.ops: List[_Op] = []
        for i in range(nops):
            o = g.Operators(i)
            if o is None:
                raise ModelFormatError(f"TFLite file: operator {i} lies outside the file")
            k = int(o.OpcodeIndex())
            if not 0 <= k < len(self.codes):
                raise ModelFormatError(f"TFLite file: operator {i} has opcode index {k}, the file has "
                                       f"{len(self.codes)} operator codes")
            name = self.codes[k]
            ins = _vec(o, "Inputs", n).astype(np.int64).tolist()
            outs = _vec(o, "Outputs", n).astype(np.int64).tolist()
            for j in ins + outs:
                if not -1 <= j < ntensors:
                    raise ModelFormatError(f"TFLite op {i} {name}: tensor index {j}, the graph has {ntensors} tensors")
            if any(j < 0 for j in outs):
                raise ModelFormatError(f"TFLite op {i} {name}: an absent output (-1)")
            opts = _options(S, o, name) if name in SUPPORTED_OPS else {}
            self.ops.append(_Op(i, name, ins, outs, opts))

    def _indices(self, arr, what):
        out = arr.astype(np.int64).tolist()
        for j in out:
            if not 0 <= j < len(self.tensors):
                raise ModelFormatError(f"TFLite file: {what} is tensor {j}, the graph has {len(self.tensors)} tensors")
        return out


def _read(model) -> bytes:
    import os
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
    elif isinstance(model, (str, os.PathLike)):
        size = os.path.getsize(model)
        if size > MAX_FILE:
            raise ModelFormatError(f"{model}: {size} bytes; TFLite files above {MAX_FILE} bytes are refused")
        with open(model, "rb") as fh:
            data = fh.read()
    else:
        raise ModelFormatError(f"from_tflite takes a path or the file's bytes, got {type(model).__name__}")
    if len(data) > MAX_FILE:
        raise ModelFormatError(f"TFLite model of {len(data)} bytes; above {MAX_FILE} bytes it is refused")
    return data


# ----------------------------------------------------------------------------- translation
def _same_shape_but_ones(a, b):
    """If `b` is `a` with size-1 axes inserted (after the batch axis): the inserted positions.
    Where that is ambiguous (a real axis of size 1), the ones are inserted as early as possible
    (how a (1, T, C) tensor becomes (1, 1, T, C) for a CONV_2D)."""
    if len(b) < len(a) or not a or not b or a[0] != b[0]:
        return None
    ins, j = [], 1
    for k in range(1, len(b)):
        spare = (len(b) - k) - (len(a) - j)
        if b[k] == 1 and spare > 0:
            ins.append(k)
        elif j < len(a) and a[j] == b[k]:
            j += 1
        else:
            return None
    return ins if j == len(a) else None


class _Translator:
    def __init__(self, f: _File, window, time_axis, channels_axis):
        import onnx
        from onnx import helper, numpy_helper

        self.onnx, self.helper, self.nh = onnx, helper, numpy_helper
        self.f = f
        self.nodes, self.inits = [], []
        self.names: Dict[int, str] = {}      # TFLite tensor -> ONNX value (float)
        self.consts: Dict[int, np.ndarray] = {}
        self.n = 0
        self.window = window
        self.time_axis = time_axis
        self.channels_axis = channels_axis
        self.quantized = False
        self.skip = set()
        self.op = None
        self.q_tensor: Dict[str, int] = {}   # ONNX QuantizeLinear output -> TFLite tensor
        self.pending_pad: Dict[int, tuple] = {}  # PAD output -> (its input, NCHW pads) for the conv reading it

    # -- building blocks
    def fresh(self, what):
        self.n += 1
        return f"v{self.n}_{what}"

    def node(self, op_type, inputs, n_out=1, name=None, **attrs):
        outs = [self.fresh(op_type) for _ in range(n_out)]
        label = name or (self.op.label() if self.op is not None else "input")
        self.nodes.append(self.helper.make_node(op_type, list(inputs), outs, name=f"{label} #{len(self.nodes)}",
                                                **attrs))
        return outs[0] if n_out == 1 else outs

    def init(self, arr, what="c"):
        name = self.fresh(what)
        self.inits.append(self.nh.from_array(np.asarray(arr), name))
        return name

    def t(self, i) -> _Tensor:
        return self.f.tensors[i]

    def const(self, i, what="a constant"):
        if i < 0 or i not in self.consts:
            raise _fail(self.op, f"its {what} (tensor {i}) must be a constant")
        return self.consts[i]

    def val(self, i) -> str:
        """The ONNX float value of TFLite tensor i (a constant becomes an initializer)."""
        if i in self.names:
            return self.names[i]
        if i in self.consts:
            t = self.t(i)
            arr = self.consts[i]
            if t.quantized and arr.dtype in (np.int8, np.uint8, np.int16, np.int32):
                name = self.dq_const(arr, t, axis=t.qdim)
            else:
                name = self.init(np.asarray(arr, np.float32), "const")
            self.names[i] = name
            return name
        raise _fail(self.op, f"reads tensor {i} {self.t(i).name!r}, which nothing computes before it")

    def qparams(self, t: _Tensor):
        if t.scale.size != 1:
            raise _fail(self.op, f"{t.what()} has {t.scale.size} scales: activations take one scale "
                                 f"and zero point per tensor")
        zdt = np.uint8 if t.dtype == np.uint8 else np.int8
        z = int(t.zero.reshape(-1)[0]) if t.zero.size else 0
        info = np.iinfo(zdt)
        if not info.min <= z <= info.max:
            raise _fail(self.op, f"{t.what()}: zero point {z} outside {zdt.__name__}")
        return np.float32(t.scale.reshape(-1)[0]), np.array(z, zdt)

    def qdq(self, value, t: _Tensor):
        """value -> QuantizeLinear -> DequantizeLinear with tensor t's parameters."""
        s, z = self.qparams(t)
        sn, zn = self.init(np.array(s, np.float32), "scale"), self.init(z, "zero")
        q = self.node("QuantizeLinear", [value, sn, zn])
        self.q_tensor[q] = t.index  # (the last Q of a tensor's chain is the one that stands for it)
        return self.node("DequantizeLinear", [q, sn, zn])

    def dq_const(self, arr, t: _Tensor, axis=0, transform=None):
        """An int8 weight / int32 bias constant as DequantizeLinear of the stored integers
        (after `transform`, which moves the quantized axis to `axis`)."""
        q = np.asarray(arr)
        if transform is not None:
            q = transform(q)
        scale = t.scale.astype(np.float32)
        zero = t.zero if t.zero.size == scale.size else np.full(scale.size, t.zero.reshape(-1)[0])
        zero = zero.astype(q.dtype if q.dtype != np.int16 else np.int16)
        attrs = {}
        if scale.size > 1:
            attrs["axis"] = int(axis)
            sn, zn = self.init(scale, "wscale"), self.init(zero, "wzero")
        else:
            sn, zn = self.init(np.array(scale[0], np.float32), "wscale"), self.init(np.array(zero[0], q.dtype), "wzero")
        qn = self.init(q, "wq")
        return self.node("DequantizeLinear", [qn, sn, zn], **attrs)

    def bind(self, i, value, act=None):
        """Tensor i is `value` (an ONNX float value), after the fused activation `act`."""
        t = self.t(i)
        q = self.quantized and t.quantized and t.dtype in (np.int8, np.uint8)
        if self.quantized and not q and t.dtype not in (np.float32,):
            raise _fail(self.op, f"its output {t.what()} is {t.type_name}: only int8 activations (and float "
                                 f"at the graph's ends) convert")
        if act is not None:
            if q:
                value = self.qdq(value, t)
            value = self.activation(act, value)
        if q:
            value = self.qdq(value, t)
        self.names[i] = value
        return value

    def activation(self, act, value):
        if act == "RELU":
            return self.node("Relu", [value])
        if act == "RELU6":
            return self.node("Clip", [value, self.init(np.array(0, np.float32)), self.init(np.array(6, np.float32))])
        if act == "RELU_N1_TO_1":
            return self.node("Clip", [value, self.init(np.array(-1, np.float32)), self.init(np.array(1, np.float32))])
        if act == "TANH":
            return self.node("Tanh", [value])
        raise _fail(self.op, f"fused activation {act} is not supported")

    def fused(self):
        code = int(self.op.opts.get("FusedActivationFunction", 0))
        if code not in _ACTS:
            raise _fail(self.op, f"fused activation {code} is not supported (expected NONE, RELU, RELU6, "
                                 f"RELU_N1_TO_1 or TANH)")
        return _ACTS[code]

    def rank(self, i, *ranks):
        r = len(self.t(i).shape)
        if r not in ranks:
            raise _fail(self.op, f"expected its input {self.t(i).what()} of rank {' or '.join(map(str, ranks))}, "
                                 f"got shape {self.t(i).shape}")
        return r

    def padding(self):
        p = int(self.op.opts.get("Padding", 0))
        if p == 0:
            return "SAME_UPPER"  # TensorFlow's SAME: the extra zero on the right/bottom
        if p == 1:
            return "VALID"
        raise _fail(self.op, f"padding {p} is not supported (expected SAME or VALID)")

    def positive(self, what, *values):
        for v in values:
            if not isinstance(v, (int, np.integer)) or not 1 <= int(v) <= 1 << 20:
                raise _fail(self.op, f"{what} must be a positive integer, got {v}")

    # -- the graph input
    def graph_input(self):
        f = self.f
        if len(f.inputs) != 1:
            raise ModelFormatError(f"TFLite file: expected one graph input (a window), got {len(f.inputs)}")
        if len(f.outputs) != 1:
            raise ModelFormatError(f"TFLite file: expected one graph output, got {len(f.outputs)}")
        i = f.inputs[0]
        t = self.t(i)
        shape = list(t.shape)
        if t.dtype not in (np.float32, np.int8, np.uint8):
            raise ModelFormatError(f"TFLite graph input {t.what()} is {t.type_name}: expected FLOAT32 or INT8")
        if t.dtype != np.float32 and not t.quantized:
            raise ModelFormatError(f"TFLite graph input {t.what()} is {t.type_name} without quantization parameters")
        if len(shape) == 2 and shape[0] == 1:
            # A flat input that the first op reshapes to (1, T, C) or (1, T, F, C) (Edge Impulse),
            # perhaps after the QUANTIZE of a full-integer file.
            flat, q_op = i, None
            readers = self.readers.get(flat, [])
            if len(readers) == 1 and readers[0].name == "QUANTIZE":
                q_op = readers[0]
                flat = q_op.outputs[0]
                readers = self.readers.get(flat, [])
            shape_ops = [op for op in readers if op.name == "SHAPE"]
            res = [op for op in readers if op.name == "RESHAPE"]
            if len(res) == 1 and len(res) + len(shape_ops) == len(readers):
                out = self.t(res[0].outputs[0])
                if len(out.shape) in (3, 4) and out.shape[0] in (1, -1) and \
                        int(np.prod(out.shape[1:])) == shape[1]:
                    self.skip.add(res[0].index)
                    for op in shape_ops:
                        self.consts[op.outputs[0]] = np.array(shape, np.int32)
                        self.skip.add(op.index)
                    qt = None
                    if q_op is not None:
                        self.skip.add(q_op.index)
                        qt = self.t(flat)
                    return self.make_input(res[0].outputs[0], out.shape, t, qt=qt)
            raise ModelFormatError(f"TFLite graph input {t.what()} has shape {shape}: a flat input converts "
                                   f"only when a RESHAPE to (1, T, C) or (1, T, F, C) reads it first")
        return self.make_input(i, shape, t)

    def make_input(self, i, shape, t_in, qt=None):
        shape = [1] + list(shape[1:])
        rank = len(shape)
        if rank not in (3, 4) or any(d < 1 for d in shape):
            raise ModelFormatError(f"TFLite graph input {t_in.what()}: expected (1, T, C) or (1, T, F, C), got "
                                   f"shape {list(t_in.shape)}")
        ta = 1 if self.time_axis is None else self.time_axis
        if not isinstance(ta, (int, np.integer)) or isinstance(ta, bool) or not -rank <= ta < rank:
            raise ModelFormatError(f"time_axis must be an axis index of the {rank}-D input, got {ta!r}")
        ta = int(ta) % rank
        if rank == 3:
            if ta not in (1, 2):
                raise ModelFormatError(f"time_axis {ta} of the input (1, T, C): expected 1 (Keras) or 2 ((1, C, T))")
            onnx_shape, perm = list(shape), None
        else:
            ca = 3 if self.channels_axis is None else int(self.channels_axis) % 4
            if ta == 0 or ca in (0, ta):
                raise ModelFormatError(f"time_axis {ta} / channels_axis {ca} of a (1, ., ., .) input: expected "
                                       f"distinct axes among 1..3")
            fa = ({1, 2, 3} - {ta, ca}).pop()
            # ONNX input (1, C, T, F); a Transpose gives the file's layout
            onnx_shape = [1, shape[ca], shape[ta], shape[fa]]
            where = {ca: 1, ta: 2, fa: 3}
            perm = [0] + [where[a] for a in (1, 2, 3)]
        if self.window is not None:
            tdim = 2 if rank == 4 else ta
            onnx_shape[tdim] = int(self.window)
        self.file_window = shape[ta]
        elem = self.onnx.TensorProto.FLOAT
        self.input_info = self.helper.make_tensor_value_info("input", elem, onnx_shape)
        self.onnx_time_axis = 2 if rank == 4 else ta
        x = "input"
        if t_in.dtype != np.float32:
            self.quantized = True
            x = self.qdq(x, t_in)
        elif qt is not None:
            if not qt.quantized or qt.dtype not in (np.int8, np.uint8):
                raise ModelFormatError(f"TFLite {qt.what()}: QUANTIZE to {qt.type_name}")
            self.quantized = True
            x = self.qdq(x, qt)
        if perm is not None:
            x = self.node("Transpose", [x], perm=perm)
        self.names[i] = x
        return i

    # -- ops
    def run(self):
        f = self.f
        for t in f.tensors:
            if t.data is not None:
                self.consts[t.index] = t.data
        # the first unsupported op, before any other complaint
        for op in f.ops:
            if op.name not in SUPPORTED_OPS:
                why = ": recurrent layers and control flow do not stream here" if op.name in _RECURRENT else ""
                raise _fail(op, f"unsupported op {op.name!r}{why}; supported: {', '.join(SUPPORTED_OPS)}")
        if any(t.dtype in (np.int8, np.uint8) and t.data is None for t in f.tensors):
            self.quantized = True
        self.readers: Dict[int, list] = {}
        for op in f.ops:
            for j in set(op.inputs):
                self.readers.setdefault(j, []).append(op)
        self.graph_input()
        self.pairs = self._dilated_pairs()
        for op in f.ops:
            if op.index in self.skip:
                continue
            self.op = op
            if self.fold(op):
                continue
            if any(j >= 0 and j not in self.names and j not in self.consts for j in op.inputs):
                missing = [j for j in op.inputs if j >= 0 and j not in self.names and j not in self.consts]
                raise _fail(op, f"reads tensor {missing[0]} {self.t(missing[0]).name!r}, which nothing computes "
                                f"before it")
            getattr(self, "op_" + op.name)(op)
        self.op = None
        out = f.outputs[0]
        if out not in self.names:
            raise ModelFormatError(f"TFLite graph output tensor {out} does not depend on the input")
        y = self.names[out]
        t = self.t(out)
        onnx = self.onnx
        graph = self.helper.make_graph(self.nodes, "tflite", [self.input_info],
                                       [self.helper.make_tensor_value_info(y, onnx.TensorProto.FLOAT, None)],
                                       initializer=self.inits)
        proto = self.helper.make_model(graph, opset_imports=[self.helper.make_opsetid("", 17)],
                                       producer_name="deepshift_edge.tflite_import")
        proto.ir_version = 8
        self.output_tensor = t
        return proto

    def fold(self, op) -> bool:
        """Evaluate an op whose inputs are all constants (Flatten's shape arithmetic)."""
        if op.name == "SHAPE" and op.inputs and op.inputs[0] in self.names:
            shape = [1] + list(self.t(op.inputs[0]).shape[1:])
            self.consts[op.outputs[0]] = np.array(shape, np.int32)
            return True
        ins = [j for j in op.inputs if j >= 0]
        if op.name not in _FOLDABLE or not ins or not all(j in self.consts for j in ins):
            return False
        a = [self.consts[j] for j in ins]
        o = op.opts
        n = op.name
        if n == "DEQUANTIZE":
            if a[0].dtype == np.float16:
                r = a[0].astype(np.float32)
            else:
                return False  # a quantized constant read by a float op: left to the op (refused there)
        elif n == "PACK":
            r = np.stack(a, axis=int(o.get("Axis", 0)))
        elif n == "CONCATENATION":
            r = np.concatenate(a, axis=int(o.get("Axis", 0)))
        elif n in ("RESHAPE", "SQUEEZE", "EXPAND_DIMS"):
            r = a[0].reshape(self.t(op.outputs[0]).shape)
        elif n == "TRANSPOSE":
            r = np.transpose(a[0], a[1].astype(np.int64).tolist())
        elif n == "SLICE":
            b, s = a[1].astype(np.int64), a[2].astype(np.int64)
            r = a[0][tuple(slice(int(x), None if int(y) < 0 else int(x) + int(y)) for x, y in zip(b, s))]
        elif n == "STRIDED_SLICE":
            r = self.strided_const(a, o)
        elif n == "GATHER":
            axis = int(o.get("Axis", 0))
            if not -a[0].ndim <= axis < max(a[0].ndim, 1) or (a[1] < -a[0].shape[axis]).any() or \
                    (a[1] >= a[0].shape[axis]).any():
                raise _fail(op, f"gather of indices {a[1].reshape(-1)[:8].tolist()} along axis {axis} of a "
                                f"constant of shape {list(a[0].shape)}")
            r = np.take(a[0], a[1].astype(np.int64), axis=axis)
        elif n == "REDUCE_PROD":
            axes = tuple(int(v) % max(a[0].ndim, 1) for v in a[1].reshape(-1)) if a[0].ndim else ()
            r = np.prod(a[0].astype(np.int64), axis=axes, keepdims=bool(o.get("KeepDims", False)))
        elif n in ("ADD", "SUB", "MUL"):
            if any(self.t(j).quantized for j in ins):
                return False
            r = {"ADD": np.add, "SUB": np.subtract, "MUL": np.multiply}[n](a[0], a[1])
        else:  # pragma: no cover
            return False
        r = np.asarray(r)
        if r.size > MAX_TENSOR:
            raise _fail(op, f"a constant of {r.size} elements")
        out_t = self.t(op.outputs[0])
        if out_t.dtype is not None and r.dtype != out_t.dtype and out_t.dtype != np.float16:
            r = r.astype(out_t.dtype)
        self.consts[op.outputs[0]] = r
        return True

    def strided_const(self, a, o):
        x, b, e, s = a[0], a[1].astype(np.int64), a[2].astype(np.int64), a[3].astype(np.int64)
        if o.get("EllipsisMask", 0) or o.get("NewAxisMask", 0):
            raise _fail(self.op, "ellipsis and new-axis masks are not supported")
        idx = []
        for k in range(len(b)):
            if o.get("ShrinkAxisMask", 0) >> k & 1:
                idx.append(int(b[k]))
            else:
                lo = None if o.get("BeginMask", 0) >> k & 1 else int(b[k])
                hi = None if o.get("EndMask", 0) >> k & 1 else int(e[k])
                idx.append(slice(lo, hi, int(s[k]) or 1))
        return x[tuple(idx)]

    def _dilated_pairs(self):
        """SPACE_TO_BATCH_ND -> [EXPAND_DIMS] -> CONV_2D / DEPTHWISE_CONV_2D -> [RESHAPE/SQUEEZE] ->
        BATCH_TO_SPACE_ND: how TensorFlow writes a dilated Conv1D. {s2b op: (conv op, b2s op)}."""
        f = self.f
        readers = self.readers
        pairs = {}
        for op in f.ops:
            if op.name != "SPACE_TO_BATCH_ND":
                continue
            chain, cur = [], op
            while True:
                r = readers.get(cur.outputs[0], [])
                if len(r) != 1:
                    break
                cur = r[0]
                chain.append(cur)
                if cur.name in ("CONV_2D", "DEPTHWISE_CONV_2D", "BATCH_TO_SPACE_ND") or len(chain) > 4:
                    break
            if not chain or chain[-1].name not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                continue
            conv = chain[-1]
            chain2, cur = [], conv
            while True:
                r = readers.get(cur.outputs[0], [])
                if len(r) != 1:
                    break
                cur = r[0]
                chain2.append(cur)
                if cur.name == "BATCH_TO_SPACE_ND" or len(chain2) > 4:
                    break
            if not chain2 or chain2[-1].name != "BATCH_TO_SPACE_ND":
                continue
            if any(c.name not in ("EXPAND_DIMS", "RESHAPE", "SQUEEZE") for c in chain[:-1] + chain2[:-1]):
                continue
            pairs[op.index] = (conv, chain2[-1], chain[:-1], chain2[:-1])
        return pairs

    def op_SPACE_TO_BATCH_ND(self, op):
        if op.index not in self.pairs:
            raise _fail(op, "converts only as part of a dilated convolution (SPACE_TO_BATCH_ND -> CONV_2D -> "
                            "BATCH_TO_SPACE_ND)")
        conv, b2s, before, after = self.pairs[op.index]
        block = self.const(op.inputs[1], "block shape").astype(np.int64).reshape(-1)
        pads = self.const(op.inputs[2], "paddings").astype(np.int64).reshape(-1, 2)
        self.op = b2s
        block2 = self.const(b2s.inputs[1], "block shape").astype(np.int64).reshape(-1)
        crops = self.const(b2s.inputs[2], "crops").astype(np.int64).reshape(-1, 2)
        self.op = op
        x_t = self.t(op.inputs[0])
        if len(block) != 1 or not np.array_equal(block, block2) or len(x_t.shape) != 3 or pads.shape != (1, 2) \
                or crops.shape != (1, 2):
            raise _fail(op, f"a dilated convolution over one spatial axis of a (1, T, C) tensor converts; got "
                            f"block shape {block.tolist()} on shape {x_t.shape}")
        d = int(block[0])
        self.positive("the block shape", d)
        lo, hi = int(pads[0, 0] - crops[0, 0]), int(pads[0, 1] - crops[0, 1])
        if lo < 0 or hi < 0:
            raise _fail(op, f"paddings {pads.tolist()} with crops {crops.tolist()}: crops larger than the pads")
        for o in before + after:
            self.skip.add(o.index)
        self.skip.add(conv.index)
        self.skip.add(b2s.index)
        x = self.val(op.inputs[0])
        x4 = self.node("Unsqueeze", [x, self.init(np.array([1], np.int64))])   # (1, 1, T, C)
        self.op = conv
        y4, act = self.conv(conv, x4, x_t.shape[-1], dil=(1, d), pads=(0, lo, 0, hi))
        self.op = b2s
        y = self.node("Squeeze", [y4, self.init(np.array([1], np.int64))])
        self.bind(b2s.outputs[0], y, act)

    def op_BATCH_TO_SPACE_ND(self, op):
        raise _fail(op, "converts only as part of a dilated convolution (SPACE_TO_BATCH_ND -> CONV_2D -> "
                        "BATCH_TO_SPACE_ND)")

    def conv(self, op, x4, c_in, dil=None, pads=None, pre_pad=None):
        """CONV_2D / DEPTHWISE_CONV_2D on the NHWC value x4: the NHWC output, before binding
        (its fused activation applied as bind does)."""
        o = op.opts
        w_i = op.inputs[1] if len(op.inputs) > 1 else -1
        w = self.const(w_i, "filter")
        wt = self.t(w_i)
        if w.ndim != 4:
            raise _fail(op, f"expected a 4-D filter, got shape {list(w.shape)}")
        sh, sw = int(o.get("StrideH", 1)), int(o.get("StrideW", 1))
        dh, dw = (int(o.get("DilationHFactor", 1)), int(o.get("DilationWFactor", 1))) if dil is None else dil
        self.positive("strides and dilations", sh, sw, dh, dw)
        self.positive("the input channels", c_in)
        if op.name == "CONV_2D":
            o_ch, kh, kw, i_ch = w.shape
            if i_ch < 1 or c_in % i_ch:
                raise _fail(op, f"filter of shape {list(w.shape)} on {c_in} input channels")
            group = c_in // i_ch
            perm = (0, 3, 1, 2)
            qaxis = 0
        else:
            _, kh, kw, o_ch = w.shape
            if w.shape[0] != 1 or o_ch % c_in:
                raise _fail(op, f"depthwise filter of shape {list(w.shape)} on {c_in} input channels")
            group = c_in
            perm = None
            qaxis = 3

        def to_onnx(a):
            return np.ascontiguousarray(a.transpose(0, 3, 1, 2)) if perm else np.ascontiguousarray(
                a[0].transpose(2, 0, 1)[:, None])

        if self.quantized and wt.quantized and w.dtype in (np.int8, np.uint8):
            if wt.scale.size > 1 and wt.qdim != qaxis:
                raise _fail(op, f"filter quantized along axis {wt.qdim}: expected the output channels ({qaxis})")
            wn = self.dq_const(w, wt, axis=0, transform=to_onnx)
        elif w.dtype == np.float32:
            if self.quantized:
                raise _fail(op, "float filter in an integer model (a hybrid / dynamic-range model): convert "
                                "with full integer quantization, or float")
            wn = self.init(to_onnx(w).astype(np.float32), "w")
        else:
            raise _fail(op, f"filter of type {wt.type_name} in a {'' if self.quantized else 'float '}model: "
                            f"dynamic-range (int8 weights, float activations) models do not convert; "
                            f"use float or full integer quantization")
        x_nchw = self.node("Transpose", [x4], perm=[0, 3, 1, 2])
        if pre_pad is not None:
            x_nchw = self.node("Pad", [x_nchw, self.init(np.array(pre_pad, np.int64))])
        ins = [x_nchw, wn]
        b_i = op.inputs[2] if len(op.inputs) > 2 else -1
        if b_i >= 0:
            b = self.const(b_i, "bias")
            if b.shape != (o_ch,):
                raise _fail(op, f"bias of shape {list(b.shape)} for {o_ch} output channels")
            ins.append(self.val(b_i))
        attrs = dict(kernel_shape=[int(kh), int(kw)], strides=[sh, sw], dilations=[dh, dw], group=int(group))
        if pads is not None:
            if self.padding() != "VALID":
                raise _fail(op, "SAME padding inside a dilated convolution written with SPACE_TO_BATCH_ND")
            attrs["pads"] = list(pads)
        else:
            attrs["auto_pad"] = self.padding()
        y = self.node("Conv", ins, **attrs)
        return self.node("Transpose", [y], perm=[0, 2, 3, 1]), self.fused()

    def op_CONV_2D(self, op):
        self.rank(op.inputs[0], 4)
        pre = self.pending_pad.pop(op.inputs[0], None)
        if pre is not None:  # PAD -> CONV_2D: the zeros become the conv's padding
            y, act = self.conv(op, self.val(pre[0]), self.t(op.inputs[0]).shape[-1], pre_pad=pre[1])
        else:
            y, act = self.conv(op, self.val(op.inputs[0]), self.t(op.inputs[0]).shape[-1])
        self.bind(op.outputs[0], y, act)

    op_DEPTHWISE_CONV_2D = op_CONV_2D

    def pool(self, op, kind):
        self.rank(op.inputs[0], 4)
        o = op.opts
        fh, fw = int(o.get("FilterHeight", 1)), int(o.get("FilterWidth", 1))
        sh, sw = int(o.get("StrideH", 1)), int(o.get("StrideW", 1))
        self.positive("filter sizes and strides", fh, fw, sh, sw)
        x = self.node("Transpose", [self.val(op.inputs[0])], perm=[0, 3, 1, 2])
        y = self.node(kind, [x], kernel_shape=[fh, fw], strides=[sh, sw], auto_pad=self.padding())
        self.bind(op.outputs[0], self.node("Transpose", [y], perm=[0, 2, 3, 1]), self.fused())

    def op_MAX_POOL_2D(self, op):
        self.pool(op, "MaxPool")

    def op_AVERAGE_POOL_2D(self, op):
        self.pool(op, "AveragePool")  # count_include_pad=0, as TensorFlow's SAME average pooling

    def reduce(self, op, kind):
        axes = self.const(op.inputs[1], "axes").astype(np.int64).reshape(-1)
        r = len(self.t(op.inputs[0]).shape)
        if any(not -r <= a < r for a in axes):
            raise _fail(op, f"axes {axes.tolist()} of a rank-{r} tensor")
        keep = 1 if op.opts.get("KeepDims", False) else 0
        y = self.node(kind, [self.val(op.inputs[0])], axes=[int(a) % r for a in axes], keepdims=keep)
        self.bind(op.outputs[0], y)

    def op_MEAN(self, op):
        self.reduce(op, "ReduceMean")

    def op_REDUCE_MAX(self, op):
        self.reduce(op, "ReduceMax")

    def op_SUM(self, op):
        self.reduce(op, "ReduceSum")

    def op_FULLY_CONNECTED(self, op, x_i=None, out_i=None):
        """(x_i, out_i: the (1, T, C) tensor a batch-merging RESHAPE fed it, and the tensor the
        RESHAPE back to (1, T, O) writes: a Dense applied per frame, Keras 3's spelling.)"""
        x_i = op.inputs[0] if x_i is None else x_i
        x_t = self.t(x_i)
        w_i = op.inputs[1] if len(op.inputs) > 1 else -1
        w = self.const(w_i, "weights")
        wt = self.t(w_i)
        if w.ndim != 2:
            raise _fail(op, f"expected 2-D weights (out, in), got shape {list(w.shape)}")
        if int(op.opts.get("WeightsFormat", 0)) != 0:
            raise _fail(op, "shuffled weights formats are not supported")
        n_out, n_in = w.shape
        shape = [1] + list(x_t.shape[1:])
        if not shape or shape[-1] != n_in:
            raise _fail(op, f"weights of shape {list(w.shape)} on an input of shape {x_t.shape}")
        b_i = op.inputs[2] if len(op.inputs) > 2 else -1
        if b_i >= 0 and self.const(b_i, "bias").shape != (n_out,):
            raise _fail(op, f"bias of shape {list(self.const(b_i).shape)} for {n_out} outputs")
        q = self.quantized and wt.quantized and w.dtype in (np.int8, np.uint8)
        if self.quantized and not q:
            raise _fail(op, f"weights of type {wt.type_name} in an integer model: only int8 weights convert")
        if not self.quantized and w.dtype != np.float32:
            raise _fail(op, f"weights of type {wt.type_name} in a float model (dynamic-range quantization) do not "
                            f"convert; use float or full integer quantization")
        x = self.val(x_i)
        per_frame = len(shape) == 3 and (op.opts.get("KeepNumDims", False) or shape[1] == 1 or out_i is not None)
        if len(shape) == 3 and not per_frame and int(np.prod(shape[:-1])) != 1:
            raise _fail(op, f"an input of shape {x_t.shape} without keep_num_dims: TFLite flattens it to "
                            f"({int(np.prod(shape[:-1]))}, {n_in}) rows, which do not stream")
        if per_frame:  # Dense on (1, T, C): a 1x1 convolution over time
            w3 = self.dq_const(w, wt, axis=0, transform=lambda a: a[:, :, None]) if q else \
                self.init(w[:, :, None].astype(np.float32), "w")
            ins = [self.node("Transpose", [x], perm=[0, 2, 1]), w3]
            if b_i >= 0:
                ins.append(self.val(b_i))
            y = self.node("Conv", ins, kernel_shape=[1])
            y = self.node("Transpose", [y], perm=[0, 2, 1])
        else:
            if len(shape) != 2:
                x = self.node("Reshape", [x, self.init(np.array([1, n_in], np.int64))])
            wn = self.dq_const(w, wt, axis=0) if q else self.init(w.astype(np.float32), "w")
            ins = [x, wn] + ([self.val(b_i)] if b_i >= 0 else [])
            y = self.node("Gemm", ins, transB=1)
        self.bind(op.outputs[0] if out_i is None else out_i, y, self.fused())

    def reshape_to(self, x_i, out_shape):
        x = self.val(x_i)
        src = [1] + list(self.t(x_i).shape[1:])
        dst = [1] + list(out_shape[1:])
        if any(d < 0 for d in dst):
            raise _fail(self.op, f"output shape {out_shape} is not static")
        if int(np.prod(src)) != int(np.prod(dst)):
            raise _fail(self.op, f"reshape of {src} ({int(np.prod(src))} elements) to {dst} "
                                 f"({int(np.prod(dst))} elements)")
        if src == dst:
            return self.node("Identity", [x])
        ins = _same_shape_but_ones(src, dst) if len(dst) > 2 and len(src) > 2 else None
        if ins is not None:
            return self.node("Unsqueeze", [x, self.init(np.array(ins, np.int64))])
        rem = _same_shape_but_ones(dst, src) if len(dst) > 2 and len(src) > 2 else None
        if rem is not None:
            return self.node("Squeeze", [x, self.init(np.array(rem, np.int64))])
        return self.node("Reshape", [x, self.init(np.array(dst, np.int64))])

    def target_shape(self, op, src):
        """What a RESHAPE's shape input computes (its -1 resolved) for an input of shape src."""
        want = self.const(op.inputs[1], "shape").astype(np.int64).reshape(-1).tolist()
        if want.count(-1) > 1 or len(want) > MAX_RANK or any(d < -1 for d in want):
            raise _fail(op, f"shape {want}")
        if -1 in want:
            rest = int(np.prod([d for d in want if d != -1]))
            if rest <= 0 or int(np.prod(src)) % rest:
                raise _fail(op, f"shape {want} for an input of shape {src}")
            want[want.index(-1)] = int(np.prod(src)) // rest
        return want

    def per_frame_dense(self, op, src) -> bool:
        """RESHAPE (1, T, C) -> (T, C) -> FULLY_CONNECTED -> RESHAPE (T, O) -> (1, T, O): Keras 3's
        Dense on a sequence (the frames as rows). Converted as one per-frame Dense."""
        want = self.target_shape(op, src)
        if len(src) != 3 or want != [src[1], src[2]] or src[1] == 1:
            return False
        r1 = self.readers.get(op.outputs[0], [])
        if len(r1) != 1 or r1[0].name != "FULLY_CONNECTED" or r1[0].inputs[0] != op.outputs[0]:
            return False
        fc = r1[0]
        r2 = self.readers.get(fc.outputs[0], [])
        if len(r2) != 1 or r2[0].name != "RESHAPE" or len(r2[0].inputs) < 2 or r2[0].inputs[1] not in self.consts:
            return False
        back = r2[0]
        w = self.consts.get(fc.inputs[1]) if len(fc.inputs) > 1 else None
        if w is None or w.ndim != 2 or self.target_shape(back, [src[1], w.shape[0]]) != [1, src[1], w.shape[0]]:
            return False
        self.skip.update((fc.index, back.index))
        self.op = fc
        self.op_FULLY_CONNECTED(fc, x_i=op.inputs[0], out_i=back.outputs[0])
        self.op = op
        return True

    def op_RESHAPE(self, op):
        out_shape = list(self.t(op.outputs[0]).shape)
        if op.name == "RESHAPE" and len(op.inputs) > 1 and op.inputs[1] >= 0:
            src = [1] + list(self.t(op.inputs[0]).shape[1:])
            if self.per_frame_dense(op, src):
                return
            want = self.target_shape(op, src)
            if len(want) != len(out_shape):
                raise _fail(op, f"shape {want} for an output of shape {out_shape}")
            if want[1:] != out_shape[1:]:
                raise _fail(op, f"its shape input computes {want}, the file says the output is {out_shape}")
        self.bind(op.outputs[0], self.reshape_to(op.inputs[0], out_shape))

    def op_EXPAND_DIMS(self, op):
        x_t = self.t(op.inputs[0])
        r = len(x_t.shape) + 1
        axis = int(self.const(op.inputs[1], "axis").reshape(-1)[0]) if len(op.inputs) > 1 else -1
        if not -r <= axis < r or axis % r == 0:
            raise _fail(op, f"axis {axis} of a rank-{r} output (batch stays first)")
        y = self.node("Unsqueeze", [self.val(op.inputs[0]), self.init(np.array([axis % r], np.int64))])
        self.bind(op.outputs[0], y)

    def op_SQUEEZE(self, op):
        x_t = self.t(op.inputs[0])
        r = len(x_t.shape)
        dims = op.opts.get("SqueezeDims") or [k for k in range(1, r) if x_t.shape[k] == 1]
        if any(not -r <= d < r or d % r == 0 or x_t.shape[d % r] != 1 for d in dims):
            raise _fail(op, f"squeeze dims {dims} of shape {x_t.shape} (size-1 axes after the batch)")
        y = self.node("Squeeze", [self.val(op.inputs[0]), self.init(np.array(sorted(d % r for d in dims), np.int64))])
        self.bind(op.outputs[0], y)

    def binary(self, op, kind):
        a, b = op.inputs[:2]
        for j in (a, b):
            if j in self.consts and self.quantized and not (self.t(j).quantized and
                                                            self.consts[j].dtype in (np.int8, np.uint8)):
                raise _fail(op, f"constant operand {self.t(j).what()} of type {self.t(j).type_name} in an "
                                f"integer model")
        y = self.node(kind, [self.val(a), self.val(b)])
        self.bind(op.outputs[0], y, self.fused())

    def op_ADD(self, op):
        self.binary(op, "Add")

    def op_SUB(self, op):
        self.binary(op, "Sub")

    def op_MUL(self, op):
        self.binary(op, "Mul")

    def op_CONCATENATION(self, op):
        r = len(self.t(op.outputs[0]).shape)
        axis = int(op.opts.get("Axis", 0))
        if not -r <= axis < r:
            raise _fail(op, f"axis {axis} of a rank-{r} tensor")
        y = self.node("Concat", [self.val(j) for j in op.inputs], axis=axis % r)
        self.bind(op.outputs[0], y, self.fused())

    def split(self, op, x_i, axis, sizes):
        r = len(self.t(x_i).shape)
        if not -r <= axis < r:
            raise _fail(op, f"axis {axis} of a rank-{r} tensor")
        outs = self.node("Split", [self.val(x_i), self.init(np.array(sizes, np.int64))], n_out=len(sizes),
                         axis=axis % r)
        outs = [outs] if isinstance(outs, str) else outs
        for j, v in zip(op.outputs, outs):
            self.bind(j, v)

    def op_SPLIT(self, op):
        axis = int(self.const(op.inputs[0], "axis").reshape(-1)[0])
        x_i = op.inputs[1]
        r = len(self.t(x_i).shape)
        n = int(op.opts.get("NumSplits", len(op.outputs)))
        if not -r <= axis < r:
            raise _fail(op, f"axis {axis} of a rank-{r} tensor")
        size = self.t(x_i).shape[axis % r]
        if n != len(op.outputs) or n < 1 or size % n:
            raise _fail(op, f"{n} splits of an axis of {size} into {len(op.outputs)} outputs")
        pre = self.pending_pad.pop(x_i, None)
        if pre is not None:  # a split of padded channels: split first, pad each part in its conv
            self.split(op, pre[0], axis, [size // n] * n)
            for j in op.outputs:
                self.pending_pad[j] = (j, pre[1])
            return
        self.split(op, x_i, axis, [size // n] * n)

    def op_SPLIT_V(self, op):
        sizes = self.const(op.inputs[1], "sizes").astype(np.int64).reshape(-1).tolist()
        axis = int(self.const(op.inputs[2], "axis").reshape(-1)[0])
        r = len(self.t(op.inputs[0]).shape)
        if not -r <= axis < r:
            raise _fail(op, f"axis {axis} of a rank-{r} tensor")
        size = self.t(op.inputs[0]).shape[axis % r]
        if -1 in sizes:
            sizes[sizes.index(-1)] = size - (sum(sizes) + 1)
        if len(sizes) != len(op.outputs) or sum(sizes) != size or min(sizes) < 0:
            raise _fail(op, f"sizes {sizes} of an axis of {size}")
        self.split(op, op.inputs[0], axis, sizes)

    def op_PAD(self, op):
        p = self.const(op.inputs[1], "paddings").astype(np.int64)
        r = len(self.t(op.inputs[0]).shape)
        if p.shape != (r, 2) or (p < 0).any():
            raise _fail(op, f"paddings of shape {list(p.shape)} for a rank-{r} tensor")
        if len(op.inputs) > 2 and op.inputs[2] >= 0:  # PADV2: the value must be zero
            v = self.const(op.inputs[2], "constant value")
            t = self.t(op.inputs[2])
            zero = t.zero.reshape(-1)[0] if t.quantized and t.zero.size else 0
            if v.size != 1 or float(v.reshape(-1)[0]) != float(zero):
                raise _fail(op, "pads with a value other than zero: only zero padding converts")
        if r == 4 and not p[0].any() and not p[3].any() and self.pad_absorbed(op.outputs[0]):
            # zeros the conv reads: its padding (written in NCHW order, just before the Conv)
            self.pending_pad[op.outputs[0]] = (op.inputs[0], [0, 0, int(p[1, 0]), int(p[2, 0]),
                                                              0, 0, int(p[1, 1]), int(p[2, 1])])
            self.names[op.outputs[0]] = self.val(op.inputs[0])  # (read only through the pending pad)
            return
        y = self.node("Pad", [self.val(op.inputs[0]), self.init(np.concatenate([p[:, 0], p[:, 1]]))])
        self.bind(op.outputs[0], y)

    op_PADV2 = op_PAD

    def pad_absorbed(self, i, depth=0) -> bool:
        """Whether zeros added to NHWC tensor i can become the padding of the VALID convs that
        read it (directly, or through a SPLIT over channels: to_tflite's grouped convs)."""
        if i in self.f.outputs or depth > 2:
            return False
        readers = self.readers.get(i, [])
        if not readers:
            return False
        for o in readers:
            if o.name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                if o.inputs[0] != i or int(o.opts.get("Padding", 0)) != 1:
                    return False
            elif o.name == "SPLIT" and len(o.inputs) > 1 and o.inputs[1] == i and o.inputs[0] in self.consts:
                if int(np.asarray(self.consts[o.inputs[0]]).reshape(-1)[0]) not in (3, -1):
                    return False
                if not all(self.pad_absorbed(j, depth + 1) for j in o.outputs):
                    return False
            else:
                return False
        return True

    def op_TRANSPOSE(self, op):
        perm = self.const(op.inputs[1], "permutation").astype(np.int64).reshape(-1).tolist()
        r = len(self.t(op.inputs[0]).shape)
        if sorted(perm) != list(range(r)):
            raise _fail(op, f"permutation {perm} of a rank-{r} tensor")
        self.bind(op.outputs[0], self.node("Transpose", [self.val(op.inputs[0])], perm=perm))

    def slice_(self, op, x_i, begin, end, steps, shrink):
        r = len(self.t(x_i).shape)
        shape = [1] + list(self.t(x_i).shape[1:])
        axes, starts, ends, st = [], [], [], []
        for k in range(r):
            if steps[k] != 1:
                raise _fail(op, f"a slice with step {steps[k]}: only steps of 1 convert")
            if begin[k] == 0 and end[k] is None:
                continue
            axes.append(k)
            starts.append(int(begin[k]))
            ends.append(int(end[k]) if end[k] is not None else 1 << 62)  # to the end, whatever the window
            st.append(1)
        x = self.val(x_i)
        if axes:
            x = self.node("Slice", [x, self.init(np.array(starts, np.int64)), self.init(np.array(ends, np.int64)),
                                    self.init(np.array(axes, np.int64))])
        if shrink:
            x = self.node("Squeeze", [x, self.init(np.array(shrink, np.int64))])
        self.bind(op.outputs[0], x)

    def op_SLICE(self, op):
        b = self.const(op.inputs[1], "begin").astype(np.int64).reshape(-1).tolist()
        s = self.const(op.inputs[2], "size").astype(np.int64).reshape(-1).tolist()
        r = len(self.t(op.inputs[0]).shape)
        if len(b) != r or len(s) != r:
            raise _fail(op, f"begin {b} and size {s} for a rank-{r} tensor")
        end = [None if z < 0 else x + z for x, z in zip(b, s)]
        self.slice_(op, op.inputs[0], b, end, [1] * r, [])

    def op_STRIDED_SLICE(self, op):
        o = op.opts
        if o.get("EllipsisMask", 0) or o.get("NewAxisMask", 0) or o.get("Offset", False):
            raise _fail(op, "ellipsis / new-axis masks and offsets are not supported")
        b = self.const(op.inputs[1], "begin").astype(np.int64).reshape(-1).tolist()
        e = self.const(op.inputs[2], "end").astype(np.int64).reshape(-1).tolist()
        s = self.const(op.inputs[3], "strides").astype(np.int64).reshape(-1).tolist() \
            if len(op.inputs) > 3 and op.inputs[3] >= 0 else [1] * len(b)
        r = len(self.t(op.inputs[0]).shape)
        if not (len(b) == len(e) == len(s) <= r):
            raise _fail(op, f"begin {b}, end {e}, strides {s} for a rank-{r} tensor")
        b, e, s = b + [0] * (r - len(b)), e + [0] * (r - len(e)), s + [1] * (r - len(s))
        bm = o.get("BeginMask", 0)
        em = o.get("EndMask", 0)
        shrink = []
        begin, end = [], []
        for k in range(r):
            if o.get("ShrinkAxisMask", 0) >> k & 1:
                shrink.append(k)
                begin.append(b[k])
                end.append(None if b[k] == -1 else b[k] + 1)
                s[k] = 1
            else:
                begin.append(0 if bm >> k & 1 else b[k])
                end.append(None if em >> k & 1 else e[k])
        for k in range(len(begin)):
            if end[k] is not None and begin[k] == 0 and end[k] >= ([1] + list(self.t(op.inputs[0]).shape[1:]))[k]:
                end[k] = None
        self.slice_(op, op.inputs[0], begin, end, s, shrink)

    def unary(self, op, kind, **attrs):
        self.bind(op.outputs[0], self.node(kind, [self.val(op.inputs[0])], **attrs))

    def op_SOFTMAX(self, op):
        beta = float(op.opts.get("Beta", 1.0))
        if beta != 1.0:
            raise _fail(op, f"softmax with beta {beta}: only beta 1 converts")
        self.unary(op, "Softmax", axis=-1)

    def op_LOGISTIC(self, op):
        self.unary(op, "Sigmoid")

    def op_TANH(self, op):
        self.unary(op, "Tanh")

    def op_RELU(self, op):
        self.unary(op, "Relu")

    def op_RELU6(self, op):
        self.bind(op.outputs[0], self.activation("RELU6", self.val(op.inputs[0])))

    def op_RELU_N1_TO_1(self, op):
        self.bind(op.outputs[0], self.activation("RELU_N1_TO_1", self.val(op.inputs[0])))

    def op_LEAKY_RELU(self, op):
        self.unary(op, "LeakyRelu", alpha=float(op.opts.get("Alpha", 0.2)))

    def op_HARD_SWISH(self, op):
        self.unary(op, "HardSwish")

    def op_GELU(self, op):
        if op.opts.get("Approximate", False):
            x = self.val(op.inputs[0])  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            c = lambda v: self.init(np.array(v, np.float32))  # noqa: E731
            x3 = self.node("Mul", [self.node("Mul", [x, x]), x])
            inner = self.node("Mul", [self.node("Add", [x, self.node("Mul", [x3, c(0.044715)])]),
                                      c(np.sqrt(2 / np.pi))])
            y = self.node("Mul", [self.node("Mul", [x, c(0.5)]), self.node("Add", [self.node("Tanh", [inner]), c(1.0)])])
            self.bind(op.outputs[0], y)
        else:
            x = self.val(op.inputs[0])
            c = lambda v: self.init(np.array(v, np.float32))  # noqa: E731
            y = self.node("Mul", [self.node("Mul", [x, c(0.5)]),
                                  self.node("Add", [self.node("Erf", [self.node("Mul", [x, c(1 / np.sqrt(2))])]), c(1.0)])])
            self.bind(op.outputs[0], y)

    def op_EXP(self, op):
        self.unary(op, "Exp")

    def op_LOG(self, op):
        self.unary(op, "Log")

    def op_QUANTIZE(self, op):
        t_in, t_out = self.t(op.inputs[0]), self.t(op.outputs[0])
        if not t_out.quantized or t_out.dtype not in (np.int8, np.uint8):
            raise _fail(op, f"quantizes to {t_out.type_name}: only int8 (and uint8) activations convert")
        self.quantized = True
        x = self.val(op.inputs[0])
        if t_in.dtype == np.float32:
            self.names[op.outputs[0]] = self.qdq(x, t_out)
        elif t_in.quantized and t_in.dtype == t_out.dtype and self.qparams(t_in) == self.qparams(t_out):
            self.names[op.outputs[0]] = x
        else:
            raise _fail(op, f"requantizes {t_in.what()} ({t_in.type_name}) to other parameters: a "
                            f"requantization with no operator of its own does not convert")

    def op_DEQUANTIZE(self, op):
        t_in = self.t(op.inputs[0])
        if op.inputs[0] in self.consts:
            raise _fail(op, f"dequantizes the constant {t_in.what()} ({t_in.type_name}): dynamic-range models "
                            f"do not convert; use float or full integer quantization")
        self.names[op.outputs[0]] = self.val(op.inputs[0])

    def op_SHAPE(self, op):
        raise _fail(op, "the shape of a tensor that is not computed from the input")

    def op_GATHER(self, op):
        raise _fail(op, "gathers from a computed tensor (only shape arithmetic, on constants, converts)")

    def op_REDUCE_PROD(self, op):
        raise _fail(op, "a product over a computed tensor (only shape arithmetic, on constants, converts)")

    def op_PACK(self, op):
        raise _fail(op, "packs computed tensors (only shape arithmetic, on constants, converts)")


# ----------------------------------------------------------------------------- entry point
ARITHMETICS = ("xnnpack", "reference")


def from_tflite(model, window: Optional[int] = None, *, time_axis=None, channels_axis=None, check: bool = True,
                return_report: bool = False, seed: int = 0, labels=None, metadata=None,
                arithmetic: str = "xnnpack"):
    """Convert a ``.tflite`` window network (a path or the file's bytes) into a graph
    :class:`~deepshift_edge.Model` (float32 files) or a :class:`~deepshift_edge.QuantizedModel`
    (full-integer files: int8 weights per channel, int8 activations, with the file's own
    scales and zero points).

    The graph input is one window, NHWC as Keras writes it: ``(1, T, C)`` (1-D frames of ``C``
    channels) or ``(1, T, F, C)`` (2-D frames; the stream takes them as ``(C, F)``, the engine's
    order), or a flat ``(1, T*C)`` that a RESHAPE turns into one of those first (Edge Impulse).
    ``time_axis``: the input's time axis (default 1; 2 for ``(1, C, T)``); ``channels_axis``: for
    4-D inputs, which axis holds channels (default 3, the last; 2 for ``(1, T, C, F)``, as
    :func:`~deepshift_edge.convert.tflite_export.to_tflite` writes). ``window`` defaults to the
    file's time length; another window converts when the graph does not depend on it (no
    whole-window flatten). ``check``, ``return_report``, ``seed``, ``labels``, ``metadata``: as
    for :func:`~deepshift_edge.from_onnx`. Anything that does not convert, including a corrupt
    file, raises :class:`~deepshift_edge.ModelFormatError`; a missing file raises OSError.

    ``arithmetic`` (full-integer files): whose integers the int8 model computes. ``"xnnpack"``
    (the default): LiteRT's ``Interpreter`` as it runs by default, with the XNNPACK delegate,
    which requantizes convolutions, FULLY_CONNECTED, MEAN and MUL in float32 (ties to even).
    ``"reference"``: TFLite's builtin reference kernels (``BUILTIN_REF``) and TFLite Micro,
    gemmlowp's fixed point (FULLY_CONNECTED rounding once).
    """
    if arithmetic not in ARITHMETICS:
        raise ValueError(f"arithmetic must be one of {ARITHMETICS}, got {arithmetic!r}")
    _schema()
    try:
        import onnx  # noqa: F401
    except ImportError as exc:
        raise ImportError("from_tflite needs onnx: pip install 'deepshift-edge[tflite]'", name="onnx") from exc
    from .onnx_import import _annotate, _from_onnx
    from .onnx_qdq import _convert as _convert_qdq

    from ..formats.npz import LIMITS
    if window is not None and (not isinstance(window, (int, np.integer)) or isinstance(window, bool)
                               or not 1 <= window <= LIMITS["window"]):
        raise ModelFormatError(f"window must be an integer in 1..{LIMITS['window']}, got {window!r}")
    for what, axis in (("time_axis", time_axis), ("channels_axis", channels_axis)):
        if axis is not None and (not isinstance(axis, (int, np.integer)) or isinstance(axis, bool)):
            raise ModelFormatError(f"{what} must be an axis index of the input, got {axis!r}")
    data = _read(model)
    try:
        f = _File(data)
        tr = _Translator(f, window, time_axis, channels_axis)
        proto = tr.run()
        if window is None:
            window = tr.file_window
        if tr.quantized:
            result = _convert_qdq(proto, window, tr.onnx_time_axis, check, True, seed, labels, metadata,
                                  _from_onnx, _annotate, arithmetic="tflite")
        else:
            result = _from_onnx(proto, window, tr.onnx_time_axis, check=check, return_report=True, seed=seed,
                                semantics="window")
            _annotate(result[0], labels, metadata)
    except (ModelFormatError, ImportError):
        raise
    except MemoryError:
        raise ModelFormatError("TFLite model too large to convert (ran out of memory)") from None
    except RecursionError:
        raise ModelFormatError("not a convertible TFLite model: nested too deeply") from None
    except Exception as exc:  # a corrupt file, or what the ONNX machinery raises on it
        from ..errors import ModelError
        if isinstance(exc, ModelError):
            raise ModelFormatError(f"TFLite model: {exc}") from None
        raise ModelFormatError(f"not a convertible TFLite model: {type(exc).__name__}: {exc}") from exc
    qm, report = result
    if tr.quantized:
        # int8 operator -> the file's int8 tensor it computes (for comparisons with LiteRT);
        # an operator whose value the file does not hold (before a fused activation) has none
        qm.tflite_tensors = {}
        last = {}
        for q, i in tr.q_tensor.items():
            last[i] = q
        for qn, v in getattr(qm, "onnx_values", {}).items():
            i = tr.q_tensor.get(v)
            if i is not None and last.get(i) == v:
                qm.tflite_tensors[qn] = i
        # LiteRT's FULLY_CONNECTED requantizes with single rounding (its convolutions with
        # gemmlowp's two steps, as the engine does by default): the int8 Linears it computes
        # round so here too, which makes them equal to LiteRT's builtin kernels, not within one
        # LSB of them
        from ..errors import ModelError
        from ..quant.quantize import set_tables
        from ..quant.tflite_arith import hard_swish_table
        producer = {o: op for op in f.ops for o in op.outputs}

        def computed_by(i):
            """The op that computes tensor i, through the reshapes Keras puts after a Dense
            applied per frame (RESHAPE to (T, C), FULLY_CONNECTED, RESHAPE back)."""
            op, seen = producer.get(i), set()
            while op is not None and op.name in ("RESHAPE", "SQUEEZE", "EXPAND_DIMS") and op.inputs \
                    and id(op) not in seen:  # (a hostile file's cycle ends the walk)
                seen.add(id(op))
                op = producer.get(op.inputs[0])
            return op.name if op is not None else None

        names = [n.name for n in qm.model.nodes]
        tables = {}
        for qn in qm.qnodes:
            i = qm.tflite_tensors.get(qn.name)
            if i is None:
                continue
            if qn.kind == "conv" and computed_by(i) == "FULLY_CONNECTED":
                qn.rounding = "single"
            elif qn.kind == "lut" and producer.get(i) is not None and producer[i].name == "HARD_SWISH":
                # LiteRT's int8 HARD_SWISH is 16-bit fixed point, not the function rounded
                # once: its table, computed with that arithmetic, makes it exact
                src = qm.qnodes[qn.inputs[0]].out
                try:
                    tables[names[qn.model_nodes[-1]]] = hard_swish_table(src.scale, src.zero_point,
                                                                         qn.out.scale, qn.out.zero_point)
                except ModelError as exc:
                    raise ModelFormatError(f"TFLite model: {exc}") from None
        set_tables(qm, tables)
        if arithmetic == "xnnpack":
            # XNNPACK's int8 convolutions, fully connected layers, means and multiplies
            # requantize in float: float32(acc) * float32 scale, ties to even
            # (scheme.requantize_float); its adds are fixed point, as TFLite's
            from ..quant.quantize import set_rounding
            set_rounding(qm, [names[qn.model_nodes[0]] for qn in qm.qnodes if qn.kind in ("conv", "gmean", "mul")],
                         "float")
            if check:
                from .onnx_qdq import _check_int8
                report += "\n" + _check_int8(qm, seed)
        report += f"\n  arithmetic: {arithmetic} ({'XNNPACK, LiteRT default' if arithmetic == 'xnnpack' else 'TFLite reference kernels'})"
    report = f"TFLite: {len(f.ops)} ops{' (full integer)' if tr.quantized else ''}\n" + report
    return (qm, report) if return_report else qm
