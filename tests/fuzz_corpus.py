"""Seeds and mutators for fuzzing the model loader and the ONNX converter.

Used in-process by tests/test_fuzz.py and, under a memory cap, by its worker
(``python tests/test_fuzz.py worker ...``) and by tests/atheris_load.py.

Mutators work at five levels: bytes (flips, truncation, splices), zip members (drop,
duplicate, rename, recompress, a deflate bomb, a member declaring a huge array), .npy
headers (dtype, shape, order) and data (NaN/Inf), the JSON description (every leaf can
become an "interesting" value: 0, -1, 2**31, 2**63, 1e308, strings, lists, nesting) and,
for format v2 files, the graph (nodes reordered, dropped, duplicated, renamed, retyped;
inputs pointing at later nodes, at themselves, at nothing; merges losing or gaining
inputs; the Sequential mark and the semantics flipped).

Seeds: the reliability zoo and the format's graph models (tests/graph_models.py) saved as
v2, some of the zoo also as v1, and the v1 files shipped in bench/models.
"""
from __future__ import annotations

import copy
import io
import json
import os
import random
import warnings
import zipfile

import numpy as np

import deepshift_edge as dse

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH_MODELS = os.path.join(HERE, os.pardir, "bench", "models")


# ---------------------------------------------------------------------------- seeds
def _save(model) -> bytes:
    buf = io.BytesIO()
    dse.save(model, buf)
    return buf.getvalue()


def _recompress(data: bytes, compression=zipfile.ZIP_DEFLATED) -> bytes:
    members = read_zip(data)
    return write_zip(members, compression)


def _save_v1(model) -> bytes:
    from deepshift_edge.formats import npz
    doc, arrays = npz.describe_v1(model)
    buf = io.BytesIO()
    npz._write(doc, arrays, buf)
    return buf.getvalue()


GRAPH_SEEDS = ["wavenet", "inception", "gated_chunk", "crnn_2d", "strided_residual", "sequence_tcn"]


def model_seeds(include_big: bool = False) -> dict:
    """name -> bytes of a valid model file (format v2 unless named v1-* or bench-*)."""
    from graph_models import graph_models
    from reliability_models import NAMES, make
    seeds = {f"zoo-{n}": _save(make(n)) for n in NAMES}
    seeds.update({f"v1-zoo-{n}": _save_v1(make(n)) for n in ("residual-gap", "2d-gap", "strided-flatten")})
    graphs = graph_models()
    seeds.update({f"graph-{n}": _save(graphs[n]) for n in GRAPH_SEEDS})
    names = ["tiny", "spectrogram"] + (["kws", "activity"] if include_big else [])
    for name in names:
        path = os.path.join(BENCH_MODELS, f"{name}.npz")
        if os.path.exists(path):
            with open(path, "rb") as fh:
                seeds[f"bench-{name}"] = fh.read()
    seeds["zoo-residual-gap-deflated"] = _recompress(seeds["zoo-residual-gap"])
    return seeds


def onnx_seeds() -> dict:
    """name -> bytes of a valid ONNX window network (built with onnx.helper, no torch)."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)

    def init(name, arr, dtype=np.float32):
        return numpy_helper.from_array(np.asarray(arr, dtype), name)

    def model(nodes, inits, in_shape):
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        return m.SerializeToString()

    seeds = {}
    seeds["conv-gap-gemm"] = model(
        [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="c1", strides=[2]),
         helper.make_node("Relu", ["a"], ["b"], name="r"),
         helper.make_node("MaxPool", ["b"], ["b2"], kernel_shape=[2], strides=[2], name="mp"),
         helper.make_node("GlobalAveragePool", ["b2"], ["c"], name="gap"),
         helper.make_node("Flatten", ["c"], ["d"], name="fl"),
         helper.make_node("Gemm", ["d", "W", "B"], ["e"], transB=1, name="fc"),
         helper.make_node("Softmax", ["e"], ["y"], axis=-1, name="sm")],
        [init("w1", rng.standard_normal((4, 3, 3))), init("b1", rng.standard_normal(4)),
         init("W", rng.standard_normal((2, 4))), init("B", rng.standard_normal(2))], [1, 3, 16])
    seeds["residual-causal"] = model(
        [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="c1", pads=[2, 0]),
         helper.make_node("Relu", ["a"], ["b"], name="r"),
         helper.make_node("Conv", ["b", "w2"], ["c"], name="c2", pads=[2, 0], dilations=[2]),
         helper.make_node("Add", ["c", "x"], ["d"], name="add"),
         helper.make_node("Gather", ["d", "last"], ["y"], axis=2, name="g")],
        [init("w1", rng.standard_normal((3, 3, 3))), init("b1", rng.standard_normal(3)),
         init("w2", rng.standard_normal((3, 3, 2))), init("last", np.array(-1), np.int64)], [1, 3, 12])
    seeds["conv2d-bn"] = model(
        [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="c1", pads=[1, 0, 1, 0]),
         helper.make_node("BatchNormalization", ["a", "s", "bb", "m", "v"], ["b"], name="bn"),
         helper.make_node("Relu", ["b"], ["c"], name="r"),
         helper.make_node("GlobalMaxPool", ["c"], ["d"], name="gmp"),
         helper.make_node("Flatten", ["d"], ["y"], name="fl")],
        [init("w1", rng.standard_normal((4, 2, 3, 3))), init("b1", rng.standard_normal(4)),
         init("s", rng.uniform(0.5, 2, 4)), init("bb", rng.standard_normal(4)),
         init("m", rng.standard_normal(4)), init("v", rng.uniform(0.5, 2, 4))], [1, 2, 6, 10])
    # graph-shaped models: a chunk gate, a stack of skips summed, a concat, a (C, F) reshape
    seeds["gate-stack-concat"] = model(
        [helper.make_node("Pad", ["x", "pads"], ["p"], name="pad"),
         helper.make_node("Conv", ["p", "w1", "b1"], ["a"], name="c1", dilations=[2]),
         helper.make_node("Split", ["a", "halves"], ["f", "g"], axis=1, name="chunk"),
         helper.make_node("Tanh", ["f"], ["tf"], name="tanh"),
         helper.make_node("Sigmoid", ["g"], ["sg"], name="sig"),
         helper.make_node("Mul", ["tf", "sg"], ["z"], name="gate"),
         helper.make_node("Conv", ["z", "w2"], ["s1"], name="skip1"),
         helper.make_node("Conv", ["x", "w3"], ["s2"], name="skip2", pads=[1, 1]),
         helper.make_node("Unsqueeze", ["s1", "ax0"], ["u1"], name="u1"),
         helper.make_node("Unsqueeze", ["s2", "ax0"], ["u2"], name="u2"),
         helper.make_node("Concat", ["u1", "u2"], ["st"], axis=0, name="stack"),
         helper.make_node("ReduceSum", ["st", "ax0"], ["sum"], keepdims=0, name="sum"),
         helper.make_node("Concat", ["sum", "z"], ["cat"], axis=1, name="cat"),
         helper.make_node("MaxPool", ["cat"], ["mp"], kernel_shape=[3], pads=[1, 1], strides=[2], ceil_mode=1,
                          name="mp"),
         helper.make_node("ReduceMean", ["mp"], ["y"], axes=[2], keepdims=0, name="mean")],
        [init("pads", [0, 0, 2, 0, 0, 0], np.int64), init("w1", rng.standard_normal((4, 3, 2))),
         init("b1", rng.standard_normal(4)), init("halves", [2, 2], np.int64),
         init("w2", rng.standard_normal((3, 2, 1))), init("w3", rng.standard_normal((3, 3, 3))),
         init("ax0", [0], np.int64), init("ax2", [2], np.int64)], [1, 3, 12])
    seeds["crnn-front"] = model(
        [helper.make_node("Conv", ["x", "w1"], ["a"], name="c1", auto_pad="SAME_UPPER"),
         helper.make_node("Elu", ["a"], ["b"], name="elu"),
         helper.make_node("Reshape", ["b", "shape"], ["c"], name="frames"),
         helper.make_node("Conv", ["c", "w2", "b2"], ["d"], name="c2", pads=[1, 1]),
         helper.make_node("Slice", ["d", "one", "big", "ax2"], ["e"], name="crop"),
         helper.make_node("Gather", ["e", "last"], ["y"], axis=2, name="last")],
        [init("w1", rng.standard_normal((2, 1, 3, 3))), init("shape", [1, 8, -1], np.int64),
         init("w2", rng.standard_normal((3, 8, 3))), init("b2", rng.standard_normal(3)),
         init("one", [1], np.int64), init("big", [1 << 30], np.int64), init("ax2", [2], np.int64),
         init("last", np.array(-1), np.int64)], [1, 1, 4, 10])
    return seeds


# ---------------------------------------------------------------------------- zip / npy helpers
def read_zip(data: bytes) -> list:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(info.filename, zf.read(info)) for info in zf.infolist()]


def write_zip(members, compression=zipfile.ZIP_STORED) -> bytes:
    """A zip of ``members`` as given: duplicate names are written on purpose (the loader must
    refuse them), so zipfile's warning about them is expected here."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Duplicate name", category=UserWarning)
        for name, raw in members:
            zf.writestr(name, raw)
    return buf.getvalue()


def npy_bytes(arr) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=True)
    return buf.getvalue()


def npy_with_header(header: dict, payload: bytes) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + payload


def split_npy(raw: bytes):
    fp = io.BytesIO(raw)
    version = np.lib.format.read_magic(fp)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(fp, max_header_size=1 << 20)
    return {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran, "shape": shape}, raw[fp.tell():]


INTERESTING = [0, -1, 1, 2, 3, 7, 64, 255, 2 ** 16, 2 ** 20 + 1, 2 ** 31 - 1, 2 ** 31, 2 ** 32 + 1, 2 ** 62,
               2 ** 63, -2 ** 63, 10 ** 30, 1.5, -0.0, 1e-310, 1e308, "", "x" * 300, "causal", "valid",
               "same", "none", "tanh", "Conv1d", "Conv2d", "Residual", "GlobalAvgPool", "Flatten", None,
               True, False, [], {}, [1, 1], [0, 0], [2 ** 31, 1], [1, 2, 3], ["valid", 0], {"type": "ReLU"},
               # format v2: node types, names, input lists, padding forms
               "Input", "Add", "Mul", "Concat", "ChannelSlice", "Pad", "Crop", "FrameFlatten", "input",
               "layers.0", "sequence", "window", ["input"], ["input", "input"], [[1, 0], "same"], [1, [2, 0]],
               [-1, 0], {"name": "x", "type": "Input"}, "a" * 129, "a/b",
               "deep"]


def _deep(n=40):
    v = [1]
    for _ in range(n):
        v = [v]
    return v


INTERESTING[-1] = _deep()


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _mutate_json(doc, rnd: random.Random):
    paths = [p for p in _paths(doc) if p]
    path = rnd.choice(paths)
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1]
    what = rnd.random()
    if what < 0.6:
        parent[key] = _interesting(rnd)
    elif what < 0.7 and isinstance(parent, dict):
        del parent[key]
    elif what < 0.8 and isinstance(parent, list):
        parent.insert(rnd.randrange(len(parent) + 1), json.loads(json.dumps(parent[key])))
    elif what < 0.9 and isinstance(parent, dict):
        parent[rnd.choice(["bogus", "padding", "stride", "skip", "body", "window", "groups"])] = \
            _interesting(rnd)
    elif isinstance(parent[key], (int, float)) and not isinstance(parent[key], bool):
        parent[key] = parent[key] * rnd.choice([-1, 2, 3, 1000]) + rnd.choice([0, 1, -1])
    else:
        parent[key] = _interesting(rnd)
    return doc


def _mutate_graph(doc, rnd: random.Random):
    """A structural edit of a v2 node list (the edges, names, types and order)."""
    nodes = doc.get("nodes")
    if not isinstance(nodes, list) or len(nodes) < 2:
        return _mutate_json(doc, rnd)
    names = [n.get("name") for n in nodes if isinstance(n, dict)]
    i = rnd.randrange(1, len(nodes))
    node = nodes[i]
    if not isinstance(node, dict):
        return _mutate_json(doc, rnd)
    what = rnd.choice(["swap", "rewire", "rewire", "drop", "dup", "rename", "retype", "arity", "arity",
                       "sequential", "semantics", "no-inputs"])
    if what == "swap":
        j = rnd.randrange(len(nodes))
        nodes[i], nodes[j] = nodes[j], nodes[i]
    elif what == "rewire" and isinstance(node.get("inputs"), list) and node["inputs"]:
        k = rnd.randrange(len(node["inputs"]))
        node["inputs"][k] = rnd.choice(names + [node.get("name"), "nope", ""])  # earlier, later, itself, none
    elif what == "drop":
        del nodes[i]
    elif what == "dup":
        nodes.insert(rnd.randrange(1, len(nodes) + 1), copy.deepcopy(node))
    elif what == "rename":
        node["name"] = rnd.choice(names + ["renamed", "layers.0", "layers.1.add", "input"])
    elif what == "retype":
        node["type"] = rnd.choice(["Add", "Mul", "Concat", "ChannelSlice", "Pad", "Crop", "FrameFlatten",
                                   "Conv1d", "Conv2d", "MaxPool1d", "AvgPool2d", "ReLU", "LastFrame",
                                   "GlobalAvgPool", "Flatten", "Input", "Residual", "Linear", "PReLU"])
    elif what == "arity" and isinstance(node.get("inputs"), list):
        if node["inputs"] and rnd.random() < 0.5:
            node["inputs"].pop(rnd.randrange(len(node["inputs"])))
        else:
            node["inputs"].append(rnd.choice(names[:i] or ["input"]))
    elif what == "sequential":
        doc["sequential"] = not doc.get("sequential", False)
    elif what == "semantics":
        doc["semantics"] = "sequence" if doc.get("semantics") != "sequence" else "window"
    else:
        node.pop("inputs", None)
    return doc


def _interesting(rnd):
    """A fresh copy: the lists and dicts of INTERESTING must never be shared or mutated."""
    return copy.deepcopy(rnd.choice(INTERESTING))


# ---------------------------------------------------------------------------- the mutators
def mutate_bytes(data: bytes, rnd: random.Random) -> bytes:
    raw = bytearray(data)
    kind = rnd.random()
    if kind < 0.45:
        for _ in range(rnd.choice([1, 1, 2, 3, 8, 32])):
            i = rnd.randrange(len(raw))
            raw[i] = rnd.randrange(256) if rnd.random() < 0.3 else raw[i] ^ (1 << rnd.randrange(8))
    elif kind < 0.6:
        del raw[rnd.randrange(len(raw) + 1):]
    elif kind < 0.75:
        i = rnd.randrange(len(raw))
        del raw[i:i + rnd.choice([1, 4, 16, 256])]
    elif kind < 0.9:
        i = rnd.randrange(len(raw))
        raw[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.choice([1, 4, 16])))
    else:
        i, j = sorted(rnd.randrange(len(raw)) for _ in range(2))
        k = rnd.randrange(len(raw))
        raw[k:k] = raw[i:j][:4096]
    return bytes(raw)


_BOMBS: dict = {}


def mutate_structure(data: bytes, rnd: random.Random) -> tuple:
    """(mutator name, mutant) for a valid .npz model file."""
    members = read_zip(data)
    names = [n for n, _ in members]
    i = rnd.randrange(len(members))
    name, raw = members[i]
    kind = rnd.choice(["json", "json", "json", "npy-header", "npy-data", "zip"])
    if kind == "json":
        j = names.index("__model__.npy")
        doc = json.loads(str(np.load(io.BytesIO(members[j][1]), allow_pickle=False)))
        for _ in range(rnd.choice([1, 1, 2, 4])):
            graph = isinstance(doc, dict) and "nodes" in doc and rnd.random() < 0.4
            doc = _mutate_graph(doc, rnd) if graph else _mutate_json(doc, rnd)
        text = json.dumps(doc)
        if rnd.random() < 0.1:  # tokens json.dumps never writes
            text = text.replace("1", rnd.choice(["NaN", "Infinity", "1e999", "-", "9" * 5000]), 1)
        members[j] = ("__model__.npy", npy_bytes(np.array(text)))
    elif kind == "npy-header":
        header, payload = split_npy(raw)
        field = rnd.choice(["descr", "shape", "shape", "fortran_order"])
        if field == "descr":
            header["descr"] = rnd.choice(["<f8", ">f4", "<f2", "|u1", "<i4", "|O", "<c8", "|V4", "|b1",
                                          "<U1", "<M8[s]", [("a", "<f4")]])
        elif field == "shape":
            shape = list(header["shape"])
            op = rnd.random()
            if op < 0.4 and shape:
                shape[rnd.randrange(len(shape))] = rnd.choice([0, 1, 2, 2 ** 31, 2 ** 40, 2 ** 62])
            elif op < 0.7:
                shape.insert(rnd.randrange(len(shape) + 1), rnd.choice([1, 2, 2 ** 33]))
            elif shape:
                shape.pop(rnd.randrange(len(shape)))
            header["shape"] = tuple(shape)
        else:
            header["fortran_order"] = not header["fortran_order"]
        members[i] = (name, npy_with_header(header, payload))
    elif kind == "npy-data":
        try:
            arr = np.load(io.BytesIO(raw), allow_pickle=False)
        except Exception:
            return "npy-data", data
        if arr.dtype.kind == "f" and arr.size:
            arr = arr.copy()
            arr.reshape(-1)[rnd.randrange(arr.size)] = rnd.choice([np.nan, np.inf, -np.inf, 3e38, 1e-45])
        elif arr.dtype.kind == "U":
            arr = np.array(str(arr)[: rnd.randrange(len(str(arr)) + 1)])
        members[i] = (name, npy_bytes(arr))
    else:
        op = rnd.choice(["drop", "dup", "rename", "deflate", "bomb", "huge", "pickle", "extra"])
        if op == "drop":
            members.pop(i)
        elif op == "dup":
            members.insert(rnd.randrange(len(members) + 1), members[i])
        elif op == "rename":
            members[i] = (rnd.choice(names[:i] + names[i + 1:] + ["layers.99.weight.npy", "x", "__model__",
                                                                     "layers.0.weight", "../evil.npy",
                                                                     "nodes.layers.0.weight.npy"]), raw)
        elif op == "deflate":
            return "zip-deflate", write_zip(members, zipfile.ZIP_DEFLATED)
        elif op == "bomb":  # 16 MiB of zeros, deflated to ~16 KiB, in place of a real array
            key = (hash(data), i)
            if key in _BOMBS:
                return "zip-bomb", _BOMBS[key]
            header, _ = split_npy(raw)
            n = 1 << 22
            header.update(shape=(n,), descr="<f4")
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
                for k, (nm, r) in enumerate(members):
                    if k == i:
                        with zf.open(nm, "w", force_zip64=True) as fh:
                            fh.write(npy_with_header(header, b""))
                            chunk = bytes(1 << 20)
                            for _ in range(n * 4 >> 20):
                                fh.write(chunk)
                    else:
                        zf.writestr(nm, r)
            _BOMBS[key] = buf.getvalue()
            return "zip-bomb", _BOMBS[key]
        elif op == "huge":
            header, payload = split_npy(raw)
            header["shape"] = (1 << 40,)
            members[i] = (name, npy_with_header(header, payload[:64]))
        elif op == "pickle":
            members[i] = (name, npy_bytes(np.array([{"a": 1}], dtype=object)))
        else:
            owner = rnd.choice([f"layers.{rnd.randrange(100)}", f"nodes.layers.{rnd.randrange(10)}",
                                f"nodes.{name.split('.')[1] if name.startswith('nodes.') else 'input'}"])
            members.append((f"{owner}.{rnd.choice(['weight', 'bias', 'running_var', 'x'])}.npy",
                            npy_bytes(np.ones(rnd.choice([1, 3, 8]), np.float32))))
        kind = f"zip-{op}"
    return kind, write_zip(members)


def mutate_model_file(data: bytes, rnd: random.Random) -> tuple:
    if rnd.random() < 0.5:
        return "bytes", mutate_bytes(data, rnd)
    return mutate_structure(data, rnd)


def mutate_onnx(data: bytes, rnd: random.Random) -> tuple:
    """(mutator name, mutant) for a valid ONNX model: bytes, or edits of the protobuf."""
    if rnd.random() < 0.4:
        return "bytes", mutate_bytes(data, rnd)
    import onnx
    from onnx import helper
    m = onnx.load_from_string(data)
    g = m.graph
    kind = rnd.choice(["attr", "attr", "dims", "init", "optype", "io", "drop-node"])
    if kind == "attr" and len(g.node):
        node = rnd.choice(list(g.node))
        name = rnd.choice(["strides", "pads", "dilations", "kernel_shape", "group", "axis", "transB",
                           "alpha", "epsilon", "ceil_mode", "auto_pad"])
        value = rnd.choice([0, -1, 1, 2, 2 ** 31, [0], [-1], [2 ** 31], [1, 2, 3], [0, 0], 1e30, float("nan"),
                            "SAME_UPPER", "VALID", b"\xff"])
        for a in list(node.attribute):
            if a.name == name:
                node.attribute.remove(a)
        node.attribute.append(helper.make_attribute(name, value))
    elif kind == "dims":
        vi = rnd.choice([g.input[0], g.output[0]])
        dims = vi.type.tensor_type.shape.dim
        if len(dims):
            d = dims[rnd.randrange(len(dims))]
            if rnd.random() < 0.3:
                d.dim_param = "T"
            else:
                d.dim_value = rnd.choice([0, 1, 2, 3, 2 ** 31, 2 ** 40])
        elif rnd.random() < 0.5:
            vi.type.tensor_type.shape.dim.add().dim_value = 1
    elif kind == "init" and len(g.initializer):
        t = rnd.choice(list(g.initializer))
        op = rnd.random()
        if op < 0.3 and len(t.dims):
            t.dims[rnd.randrange(len(t.dims))] = rnd.choice([0, 1, 2, 5, 2 ** 31])
        elif op < 0.5:
            t.data_type = rnd.choice([0, 2, 7, 10, 11, 13, 16, 99])
        elif op < 0.7:
            t.raw_data = t.raw_data[: rnd.randrange(len(t.raw_data) + 1)]
        elif op < 0.85 and t.data_type == 1 and len(t.raw_data) >= 4:
            arr = np.frombuffer(t.raw_data, np.float32).copy()
            arr[rnd.randrange(arr.size)] = rnd.choice([np.nan, np.inf, 3e38])
            t.raw_data = arr.tobytes()
        else:
            t.name = rnd.choice(["x", "y", "nope", ""])
    elif kind == "optype" and len(g.node):
        rnd.choice(list(g.node)).op_type = rnd.choice(["Conv", "Relu", "Add", "Gemm", "MaxPool", "Loop",
                                                       "Reshape", "Slice", "Concat", "Foo", ""])
    elif kind == "io" and len(g.node):
        node = rnd.choice(list(g.node))
        names = ["x", "y", "a", "b", "c", "missing", ""] + [i.name for i in g.initializer]
        if len(node.input) and rnd.random() < 0.6:
            node.input[rnd.randrange(len(node.input))] = rnd.choice(names)
        elif len(node.output):
            node.output[0] = rnd.choice(names)
    elif kind == "drop-node" and len(g.node):
        del g.node[rnd.randrange(len(g.node))]
    return f"onnx-{kind}", m.SerializeToString()


# ---------------------------------------------------------------------------- .tflite files
def tflite_seeds() -> dict:
    """name -> bytes of a valid .tflite window network: the Keras-built fixtures of
    tests/data/tflite (float and full integer) and two of our own to_tflite exports."""
    import os

    import deepshift_edge as dse
    from deepshift_edge.convert.tflite_export import to_tflite
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "tflite")
    seeds = {}
    for name in ("ei_conv1d_int8", "ei_conv1d_float", "tcn_int8", "ds_cnn_int8"):
        with open(os.path.join(here, name + ".tflite"), "rb") as fh:
            seeds[name] = fh.read()
    rng = np.random.default_rng(0)
    m = dse.Sequential([dse.Conv1d(3, 4, 3, padding="causal"), dse.ReLU(), dse.MaxPool1d(2),
                        dse.Conv1d(4, 4, 3, groups=2), dse.GlobalAvgPool(), dse.Linear(4, 2), dse.Softmax()],
                       in_features=3, window=16)
    for layer in m.layers:
        for k, v in layer.params().items():
            setattr(layer, k, rng.standard_normal(v.shape).astype(np.float32))
    seeds["own-1d"] = to_tflite(m)
    m2 = dse.Sequential([dse.Conv2d(1, 3, (3, 3), padding=(1, 1)), dse.Tanh(), dse.Flatten(), dse.Linear(3 * 4 * 8, 2)],
                        in_features=(1, 4), window=8)
    seeds["own-2d"] = to_tflite(m2)
    return seeds


def mutate_tflite(data: bytes, rnd: random.Random) -> tuple:
    """(mutator name, mutant) for a valid .tflite file: bytes, or hostile 32-bit words (offsets,
    vector lengths, indices, shape entries) written over aligned words of the flatbuffer."""
    if rnd.random() < 0.5:
        return "bytes", mutate_bytes(data, rnd)
    raw = bytearray(data)
    for _ in range(rnd.choice([1, 1, 2, 4])):
        i = rnd.randrange(max(1, len(raw) // 4)) * 4
        value = rnd.choice([0, 1, 2, 3, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, 0xFFFF, 64, 1 << 20,
                            rnd.randrange(1 << 32), len(raw), len(raw) - 4])
        raw[i:i + 4] = int(value).to_bytes(4, "little")
    return "words", bytes(raw)
