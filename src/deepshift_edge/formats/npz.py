"""Model files: the ``.npz`` format (see ``docs/format.md``). Writes version 2, reads 1 and 2.

A file is an uncompressed or deflated ZIP written by ``numpy.savez``:

* ``__model__``: a 0-d NumPy unicode string array holding a small JSON description
  (format name and version, producer, ``in_features``, ``window`` and the model);
* one float32 array per parameter, named after its place in the model.

Version 2, what :func:`save` writes, describes every model as its graph: ``nodes``, in
topological order, the ``Input`` first and the output last, each with its name, type, the
names of the nodes it reads and its hyper-parameters; arrays are ``nodes.<name>.<param>``.
A :class:`~deepshift_edge.Sequential` is written the same way (its layers expanded as
``Sequential`` expands them) and marked ``"sequential": true``, so that :func:`load` gives
a ``Sequential`` back. Version 1 (a layer list with nested residual blocks, arrays named
``layers.3.weight``, ``layers.2.body.0.bias``) is still read, never written.

:func:`load` never unpickles (``allow_pickle=False``) and validates the whole file before
any array data is read and before the model reaches the streaming kernels: JSON size and
syntax, format version, node names and types, every hyper-parameter, the graph's edges and
arity, the name, dtype and shape of every array (from the ``.npy`` headers, so a member
declaring a huge array is refused without reading it), caps on nodes, total parameters,
channels, window and receptive field, the shapes of the whole model, and finite weights.
Every problem raises :class:`~deepshift_edge.errors.ModelFormatError` naming the node (or
layer), the key, what was expected and what the file holds.
"""
from __future__ import annotations

import ast
import json
import math
import os
import re
import struct
import zipfile
import zlib
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from ..nn import layers as L
from ..nn import merge as M
from .._atomic import atomic_write
from ..errors import ModelError, ModelFormatError

__all__ = ["save", "load", "describe", "ModelFormatError", "FORMAT_NAME", "FORMAT_VERSION",
           "READ_VERSIONS", "LIMITS", "ANNOTATION_LIMITS", "check_annotations"]

FORMAT_NAME = "deepshift-edge-model"
FORMAT_VERSION = 2          # what save writes
READ_VERSIONS = (1, 2)      # what load reads
MODEL_KEY = "__model__"

#: Caps that keep a hostile file from allocating without bound. ``load(..., limits=...)``
#: may raise them for a trusted file.
LIMITS = {
    "json_chars": 1 << 20,          # characters of the JSON description
    "members": 4096,                # arrays in the zip
    "layers": 1024,                 # v1: layers, counting those inside residual blocks
    "nodes": 4096,                  # v2: nodes of the graph, the Input included
    "edges": 1 << 16,               # v2: node inputs, summed over the nodes
    "params": 1 << 25,              # float32 parameters in total (128 MiB)
    "channels": 1 << 16,            # any channel / feature count
    "window": 1 << 20,              # window, receptive field, and any kernel extent in frames
    "activations": 1 << 26,         # sum over nodes of the window's output elements
}

#: Caps on the optional ``labels`` and ``metadata`` of a model file (see
#: :func:`check_annotations`): small, because they travel inside the JSON description.
ANNOTATION_LIMITS = {
    "labels": 1 << 16,              # class names (one per output value)
    "label_chars": 200,             # characters of one class name
    "metadata_keys": 64,            # entries of the metadata object
    "metadata_key_chars": 64,       # characters of one key
    "metadata_value_chars": 4096,   # characters of one string value
    "metadata_chars": 16384,        # characters of the whole metadata object as JSON
}

_REQUIRED = object()
_MISSING = object()
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,128}\Z")  # as dse.Model accepts node names

try:
    from lzma import LZMAError as _LZMAError
except ImportError:  # pragma: no cover - Python built without lzma
    class _LZMAError(Exception):
        pass


# ----------------------------------------------------------------------------- labels, metadata
def _plain_text(value: str) -> bool:
    return not any(ord(c) < 32 or ord(c) == 127 for c in value)


def check_annotations(labels, metadata, output_shape, where: str = "__model__", error=ModelFormatError):
    """Validate the optional class names and free-form metadata of a model.

    ``labels``: ``None`` or a list of distinct, non-empty strings (at most
    ``ANNOTATION_LIMITS['label_chars']`` characters, no control characters), one per entry
    of the model's output, which must then be a vector. ``metadata``: ``None`` or an object
    of string keys to JSON scalars (strings, finite numbers, booleans, null), e.g.
    ``{"name": "...", "sample_rate_hz": 10, "units": "g, deg/s", "trained_on": "..."}``.
    Returns ``(tuple of labels or None, dict)``; raises ``error`` naming ``where.labels`` or
    ``where.metadata`` (``labels``/``metadata`` when ``where`` is empty) and what was expected. Used by :func:`save` and :func:`load` alike.
    """
    lim = ANNOTATION_LIMITS
    prefix = f"{where}." if where else ""
    if labels is not None:
        key = f"{prefix}labels"
        if isinstance(labels, (str, bytes)) or not isinstance(labels, (list, tuple)):
            raise error(f"{key}: expected a list of class names (strings), got {type(labels).__name__}")
        shape = tuple(int(v) for v in output_shape)
        if len(shape) != 1:
            raise error(f"{key}: labels name the entries of a vector output, but this model outputs "
                        f"shape {shape}")
        if len(labels) != shape[0]:
            raise error(f"{key}: expected {shape[0]} class names (one per output value), got "
                        f"{len(labels)}")
        for i, label in enumerate(labels):
            if not isinstance(label, str):
                raise error(f"{key}[{i}]: expected a string, got {type(label).__name__}")
            if not 0 < len(label) <= lim["label_chars"] or not _plain_text(label):
                raise error(f"{key}[{i}]: expected 1 to {lim['label_chars']} printable characters, "
                            f"got {label[:40]!r}{'...' if len(label) > 40 else ''}")
        seen = {}
        for i, label in enumerate(labels):
            if label in seen:
                raise error(f"{key}[{i}]: {label!r} is also label {seen[label]}; class names must "
                            f"be distinct")
            seen[label] = i
        labels = tuple(labels)
    if metadata is None:
        return labels, {}
    key = f"{prefix}metadata"
    if not isinstance(metadata, dict):
        raise error(f"{key}: expected an object of names to values, got {type(metadata).__name__}")
    if len(metadata) > lim["metadata_keys"]:
        raise error(f"{key}: {len(metadata)} entries (at most {lim['metadata_keys']})")
    out = {}
    for name, value in metadata.items():
        if not isinstance(name, str) or not 0 < len(name) <= lim["metadata_key_chars"] \
                or not _plain_text(name):
            raise error(f"{key}: keys must be strings of 1 to {lim['metadata_key_chars']} printable "
                        f"characters, got {name!r}")
        if isinstance(value, str):
            if len(value) > lim["metadata_value_chars"]:
                raise error(f"{key}.{name}: a string of {len(value):,} characters (at most "
                            f"{lim['metadata_value_chars']:,})")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise error(f"{key}.{name}: expected a finite number, got {value!r}")
        elif isinstance(value, np.generic) and value.dtype.kind in "biuf":
            value = value.item()
            if isinstance(value, float) and not math.isfinite(value):
                raise error(f"{key}.{name}: expected a finite number, got {value!r}")
        elif not (value is None or isinstance(value, (bool, int))):
            raise error(f"{key}.{name}: expected a string, a number, true/false or null, got "
                        f"{type(value).__name__}")
        out[name] = value
    size = len(json.dumps(out, allow_nan=False))
    if size > lim["metadata_chars"]:
        raise error(f"{key}: {size:,} characters as JSON (at most {lim['metadata_chars']:,})")
    return labels, out


def _short(value, n: int = 60) -> str:
    """repr of a JSON value for a message, cut to ``n`` characters."""
    text = repr(value)
    return text if len(text) <= n else text[:n - 3] + "..."


# ----------------------------------------------------------------------------- schema
# Per type: hyper-parameter -> (kind, default). Kinds: "int" (>= 1), "chan" (a channel
# count >= 1), "chan0" (>= 0), "features", "time0" (frames >= 0), "pair" (int >= 1 or
# [feature, time]), "pad1d" / "pad2d" (the padding forms of the layers), "padding2d" (v1's
# Conv2d padding), "bool", "float", "pos_float" (> 0), "unit_float" ([0, 1]), or a tuple
# of allowed values. The keys are those of ``layer.config()``, so that ``save`` writes
# exactly what ``load`` reads.

#: Format v1, frozen: what version 1 files may hold (read only).
_SCHEMA_V1: Dict[str, Dict[str, tuple]] = {
    "Conv1d": {"in_channels": ("chan", _REQUIRED), "out_channels": ("chan", _REQUIRED),
               "kernel_size": ("int", _REQUIRED), "stride": ("int", 1),
               "padding": (("valid", "causal"), "valid"), "dilation": ("int", 1),
               "groups": ("chan", 1), "bias": ("bool", True)},
    "Conv2d": {"in_channels": ("chan", _REQUIRED), "out_channels": ("chan", _REQUIRED),
               "kernel_size": ("pair", _REQUIRED), "stride": ("pair", [1, 1]),
               "padding": ("padding2d", [0, 0]), "dilation": ("pair", [1, 1]),
               "groups": ("chan", 1), "bias": ("bool", True)},
    "MaxPool1d": {"kernel_size": ("int", _REQUIRED), "stride": ("int", None),
                  "dilation": ("int", 1)},
    "AvgPool1d": {"kernel_size": ("int", _REQUIRED), "stride": ("int", None)},
    "MaxPool2d": {"kernel_size": ("pair", _REQUIRED), "stride": ("pair", None)},
    "AvgPool2d": {"kernel_size": ("pair", _REQUIRED), "stride": ("pair", None)},
    "BatchNorm1d": {"num_features": ("chan", _REQUIRED), "eps": ("pos_float", 1e-5)},
    "BatchNorm2d": {"num_features": ("chan", _REQUIRED), "eps": ("pos_float", 1e-5)},
    "Linear": {"in_features": ("features", _REQUIRED), "out_features": ("chan", _REQUIRED),
               "bias": ("bool", True)},
    "ReLU": {}, "ReLU6": {}, "Sigmoid": {}, "Tanh": {}, "HardSwish": {}, "Hardsigmoid": {}, "SiLU": {}, "Mish": {},
    "Softmax": {},
    "Identity": {},
    "LeakyReLU": {"negative_slope": ("float", 0.01)},
    "ELU": {"alpha": ("float", 1.0)}, "CELU": {"alpha": ("pos_float", 1.0)}, "SELU": {},
    "Softsign": {}, "Softplus": {"beta": ("pos_float", 1.0), "threshold": ("float", 20.0)},
    "Hardtanh": {"min_val": ("float", -1.0), "max_val": ("float", 1.0)},
    "PReLU": {"num_parameters": ("chan", 1)},
    "GELU": {"approximate": (("none", "tanh"), "none")},
    "Dropout": {"p": ("unit_float", 0.5)},
    "LastFrame": {}, "GlobalAvgPool": {}, "GlobalMaxPool": {}, "Flatten": {},
    "Residual": {},  # body / skip are handled structurally
}

#: Format v2: the node types. Residual blocks are their nodes (body, skip, Add).
_SCHEMA_V2: Dict[str, Dict[str, tuple]] = {
    "Input": {},
    **{k: v for k, v in _SCHEMA_V1.items() if k != "Residual"},
    "Conv1d": {**_SCHEMA_V1["Conv1d"], "padding": ("pad1d", "valid")},
    "Conv2d": {**_SCHEMA_V1["Conv2d"], "padding": ("pad2d", [0, 0])},
    "MaxPool1d": {"kernel_size": ("int", _REQUIRED), "stride": ("int", None), "dilation": ("int", 1),
                  "padding": ("pad1d", 0), "ceil_mode": ("bool", False)},
    "AvgPool1d": {"kernel_size": ("int", _REQUIRED), "stride": ("int", None),
                  "padding": ("pad1d", 0), "ceil_mode": ("bool", False),
                  "count_include_pad": ("bool", True)},
    "MaxPool2d": {"kernel_size": ("pair", _REQUIRED), "stride": ("pair", None),
                  "padding": ("pad2d", 0), "ceil_mode": ("bool", False)},
    "AvgPool2d": {"kernel_size": ("pair", _REQUIRED), "stride": ("pair", None),
                  "padding": ("pad2d", 0), "ceil_mode": ("bool", False),
                  "count_include_pad": ("bool", True)},
    "Add": {}, "Mul": {}, "Concat": {}, "FrameFlatten": {},
    "ChannelSlice": {"start": ("chan0", _REQUIRED), "stop": ("chan", _REQUIRED)},
    "Pad": {"left": ("time0", 0), "right": ("time0", 0)},
    "Crop": {"left": ("time0", 0), "right": ("time0", 0)},
}

_CLASSES = {name: getattr(L, name, None) or getattr(M, name)
            for name in set(_SCHEMA_V1) | set(_SCHEMA_V2) if name != "Input"}
_MERGES = tuple(name for name in _SCHEMA_V2 if name != "Input" and _CLASSES[name].n_inputs is None)


def _param_shapes(kind: str, cfg: dict) -> Dict[str, tuple]:
    """Expected parameter arrays of a validated layer config (no allocation)."""
    if kind == "Conv1d":
        shapes = {"weight": (cfg["out_channels"], cfg["in_channels"] // cfg["groups"],
                             cfg["kernel_size"])}
    elif kind == "Conv2d":
        k_f, k_t = _as_pair(cfg["kernel_size"])
        shapes = {"weight": (cfg["out_channels"], cfg["in_channels"] // cfg["groups"], k_f, k_t)}
    elif kind in ("BatchNorm1d", "BatchNorm2d"):
        n = cfg["num_features"]
        return {name: (n,) for name in ("weight", "bias", "running_mean", "running_var")}
    elif kind == "Linear":
        shapes = {"weight": (cfg["out_features"], cfg["in_features"])}
    elif kind == "PReLU":
        return {"weight": (cfg["num_parameters"],)}
    else:
        return {}
    if cfg["bias"]:
        shapes["bias"] = (cfg["out_channels"] if "out_channels" in cfg else cfg["out_features"],)
    return shapes


def _as_pair(v) -> tuple:
    return (v, v) if isinstance(v, int) else (v[0], v[1])


# ----------------------------------------------------------------------------- save
def _config_entry(layer: L.Layer, key: str, arrays: dict, schema: dict, version: int) -> dict:
    """``{"type": ..., **config}`` of a built-in layer; its parameters go to ``arrays``."""
    kind = type(layer).__name__
    if kind not in schema or kind == "Input" or type(layer) is not _CLASSES[kind]:
        hint = ("; a residual block in a graph model is written Add()(body, skip)"
                if isinstance(layer, M.Residual) else "")
        raise ModelError(f"{key}: cannot save a layer of type {type(layer).__module__}."
                         f"{type(layer).__qualname__}{hint}; format v{version} holds only the "
                         f"built-in types ({', '.join(sorted(k for k in schema if k != 'Input'))})")
    entry = {"type": kind}
    for name, value in layer.config().items():
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise ModelError(f"{key}: {kind}.{name} is {value!r}; only finite values can be saved")
        entry[name] = value
    for name, arr in layer.params().items():
        arr = np.asarray(arr, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise ModelError(f"{key}.{name}: holds non-finite values; refusing to save")
        arrays[f"{key}.{name}"] = np.ascontiguousarray(arr, dtype="<f4")
    return entry


def _json_features(model):
    return list(model.in_features) if isinstance(model.in_features, tuple) else model.in_features


def _derived(model) -> dict:
    # Checked on load when present (optional in hand-written files).
    return {"receptive_field": int(model.receptive_field), "hop": int(model.hop),
            "output_shape": [int(v) for v in model.output_shape]}


def describe(model, labels=None, metadata=None) -> Tuple[dict, Dict[str, np.ndarray]]:
    """The JSON description and the named float32 arrays of ``model`` (format v2).

    ``labels`` / ``metadata`` default to the model's own (``model.labels``,
    ``model.metadata``), and are left out of the description when there are none."""
    from .._version import __version__
    from ..nn.graph import Model
    from ..nn.sequential import Sequential

    if not isinstance(model, Model):
        raise ModelError(f"expected a deepshift_edge Model or Sequential, got {type(model).__name__}")
    # The LastFrame that Model appends to an output with a time axis is not written:
    # loading appends it again, under the same name.
    nodes = model.nodes[:-1] if model._implicit_head else model.nodes
    arrays: Dict[str, np.ndarray] = {}
    entries = [{"name": nodes[0].name, "type": "Input"}]
    for node in nodes[1:]:
        cfg = _config_entry(node.layer, f"nodes.{node.name}", arrays, _SCHEMA_V2, 2)
        entries.append({"name": node.name, "type": cfg.pop("type"),
                        "inputs": [nodes[j].name for j in node.inputs], **cfg})
    doc = {
        "format": FORMAT_NAME,
        "format_version": 2,
        "producer": f"deepshift_edge {__version__}",
        "in_features": _json_features(model),
        "window": int(model.window),
        "semantics": model.semantics,
    }
    if isinstance(model, Sequential):
        doc["sequential"] = True
    doc["nodes"] = entries
    doc.update(_derived(model))
    labels = getattr(model, "labels", None) if labels is None else labels
    metadata = getattr(model, "metadata", None) if metadata is None else metadata
    labels, metadata = check_annotations(labels, metadata, model.output_shape, "", ModelError)
    if labels is not None:
        doc["labels"] = list(labels)
    if metadata:
        doc["metadata"] = metadata
    return doc, arrays


def describe_v1(model) -> Tuple[dict, Dict[str, np.ndarray]]:
    """The format v1 description of a :class:`~deepshift_edge.Sequential` whose layers v1
    can hold (for tests and for readers that know only v1; :func:`save` writes v2)."""
    from .._version import __version__
    from ..nn.sequential import Sequential

    if not isinstance(model, Sequential):
        raise ModelError(f"format v1 holds only a deepshift_edge Sequential, got {type(model).__name__}")
    if model.semantics != "window":
        raise ModelError("format v1 holds only window semantics")
    arrays: Dict[str, np.ndarray] = {}

    def entry(layer, key):
        if isinstance(layer, M.Residual) and type(layer) is M.Residual:
            skip = layer.skip
            if isinstance(skip, (list, tuple)):
                if len(skip) > 1:
                    raise ModelError(f"{key}.skip: format v1 holds a skip of at most one layer")
                skip = skip[0] if skip else None
            return {"type": "Residual",
                    "body": [entry(sub, f"{key}.body.{j}") for j, sub in enumerate(layer.body)],
                    "skip": None if skip is None else entry(skip, f"{key}.skip")}
        return _config_entry(layer, key, arrays, _SCHEMA_V1, 1)

    doc = {"format": FORMAT_NAME, "format_version": 1, "producer": f"deepshift_edge {__version__}",
           "in_features": _json_features(model), "window": int(model.window),
           "layers": [entry(layer, f"layers.{i}") for i, layer in enumerate(model.layers)],
           **_derived(model)}
    walker = _V1Walker(LIMITS)
    try:
        for i, e in enumerate(doc["layers"]):
            walker.layer(json.loads(json.dumps(e)), f"layers.{i}", False)
    except ModelFormatError as exc:
        raise ModelError(f"format v1 cannot hold this model: {exc}") from None
    return doc, arrays


def save(model, path, labels=None, metadata=None) -> None:
    """Write ``model`` (a :class:`~deepshift_edge.Model` or
    :class:`~deepshift_edge.Sequential`) to ``path`` in format v2.

    ``labels``: class names, one per output value (default: ``model.labels``);
    ``metadata``: a dict of names to JSON scalars, e.g. the model's name, sample rate,
    units, training provenance (default: ``model.metadata``). Both are validated
    (:func:`check_annotations`) and given back by :func:`load` as ``model.labels`` and
    ``model.metadata``.

    ``path`` is used as given (no ``.npz`` suffix is added). The file is written to a
    temporary name next to it and renamed, so a crash never leaves half a model behind.
    ``path`` may also be a binary file object opened for writing.
    """
    from ..quant.qmodel import QuantizedModel

    if isinstance(model, QuantizedModel):  # the float model, plus its int8 parameters
        from . import quantized
        doc, arrays = describe(model.model, labels, metadata)
        doc[quantized.KEY], qarrays = quantized.describe(model)
        arrays.update(qarrays)
    else:
        doc, arrays = describe(model, labels, metadata)
    _write(doc, arrays, path)


def _write(doc: dict, arrays: dict, path) -> None:
    text = json.dumps(doc, indent=1, sort_keys=False, allow_nan=False)
    members = {MODEL_KEY: np.array(text)}  # 0-d '<U' array: no pickle needed
    members.update(arrays)
    if hasattr(path, "write"):
        np.savez(path, **members)
        return
    atomic_write(path, lambda fh: np.savez(fh, **members))


# ----------------------------------------------------------------------------- load: zip level
class _Member:
    """Header of one ``.npy`` member, read without touching its data."""

    def __init__(self, name, shape, dtype, fortran, data_bytes, file_size, header_bytes):
        self.name, self.shape, self.dtype, self.fortran = name, shape, dtype, fortran
        self.data_bytes, self.file_size, self.header_bytes = data_bytes, file_size, header_bytes


def _read_npy_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, key: str) -> _Member:
    fmt = np.lib.format
    with zf.open(info) as fp:
        try:
            version = fmt.read_magic(fp)
        except ValueError:
            raise ModelFormatError(f"array {key!r}: not a .npy array (its first bytes are not the "
                                   f".npy magic)") from None
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise ModelFormatError(f"array {key!r}: unsupported .npy version {version}")
        header = _read_header_text(fp, version, key)
        header_bytes = fp.tell()
    try:
        d = ast.literal_eval(header)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        raise ModelFormatError(f"array {key!r}: unreadable .npy header") from None
    if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
        raise ModelFormatError(f"array {key!r}: .npy header must hold descr, fortran_order, shape")
    shape, descr, fortran = d["shape"], d["descr"], d["fortran_order"]
    if not isinstance(shape, tuple) or not all(isinstance(v, int) and not isinstance(v, bool)
                                              and 0 <= v for v in shape) or len(shape) > 8:
        raise ModelFormatError(f"array {key!r}: invalid shape {shape!r} in its .npy header")
    if not isinstance(fortran, bool):
        raise ModelFormatError(f"array {key!r}: invalid fortran_order in its .npy header")
    if not isinstance(descr, str):
        # a structured dtype (list of fields): never what a model holds
        raise ModelFormatError(f"array {key!r}: dtype {descr!r} is not a plain dtype")
    try:
        dtype = np.dtype(descr)
    except (TypeError, ValueError):
        raise ModelFormatError(f"array {key!r}: unknown dtype {descr!r}") from None
    if dtype.hasobject:
        raise ModelFormatError(f"array {key!r}: holds Python objects (dtype {descr!r}); object "
                               f"arrays need pickle and are never loaded")
    count = 1
    for v in shape:
        count *= v
    return _Member(key, shape, dtype, fortran, count * dtype.itemsize, info.file_size, header_bytes)


def _read_header_text(fp, version, key) -> str:
    size_bytes = 2 if version == (1, 0) else 4
    raw = fp.read(size_bytes)
    if len(raw) != size_bytes:
        raise ModelFormatError(f"array {key!r}: truncated .npy header")
    (length,) = struct.unpack("<H" if size_bytes == 2 else "<I", raw)
    if length > 10000:
        raise ModelFormatError(f"array {key!r}: .npy header of {length} bytes (at most 10000)")
    text = fp.read(length)
    if len(text) != length:
        raise ModelFormatError(f"array {key!r}: truncated .npy header")
    try:
        return text.decode("latin1" if version != (3, 0) else "utf8")
    except UnicodeDecodeError:
        raise ModelFormatError(f"array {key!r}: undecodable .npy header") from None


def _check_member_size(m: _Member):
    want = m.header_bytes + m.data_bytes
    if m.file_size != want:
        what = "truncated" if m.file_size < want else "has trailing bytes"
        raise ModelFormatError(
            f"array {m.name!r}: member is {what}: {m.file_size} bytes, but its header "
            f"declares shape {m.shape} of {m.dtype} ({want} bytes with the header)")


def _read_data(zf: zipfile.ZipFile, info: zipfile.ZipInfo, m: _Member) -> np.ndarray:
    """Read a member whose header has been validated (size bounded by the caps)."""
    with zf.open(info) as fp:
        fp.read(m.header_bytes)
        raw = fp.read(m.data_bytes + 1)
    if len(raw) != m.data_bytes:
        raise ModelFormatError(f"array {m.name!r}: expected {m.data_bytes} data bytes, "
                               f"got {len(raw)}")
    arr = np.frombuffer(raw, dtype=m.dtype)
    if m.fortran:
        arr = arr.reshape(m.shape[::-1]).transpose()
    else:
        arr = arr.reshape(m.shape)
    return arr



# ----------------------------------------------------------------------------- load: JSON level
def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


_PAD_WORDS = ("valid", "causal", "same")


def _check_value(kind, value, where: str, limits: dict):
    """Validate one hyper-parameter; return it normalised (ints, lists)."""
    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    def int_in(v, lo, hi, what):
        if not is_int(v) or not lo <= v <= hi:
            raise ModelFormatError(f"{where}: expected {what} in [{lo}, {hi}], got {_short(v)}")
        return v

    def pad_part(v, cap, what):
        """One axis of padding: a word, zeros on both sides, or [left, right]."""
        if isinstance(v, str) and v in _PAD_WORDS:
            return v
        if is_int(v):
            return int_in(v, 0, cap, f"{what} (an integer)")
        if isinstance(v, list) and len(v) == 2:
            return [int_in(p, 0, cap, f"{what} {side}") for p, side in zip(v, ("left", "right"))]
        raise ModelFormatError(f"{where}: {what} must be 'valid', 'causal', 'same', an integer >= 0 "
                               f"or a pair [left, right], got {_short(v)}")

    big = limits["window"]
    if kind == "int":
        return int_in(value, 1, big, "an integer")
    if kind == "chan":
        return int_in(value, 1, limits["channels"], "an integer")
    if kind == "chan0":
        return int_in(value, 0, limits["channels"], "an integer")
    if kind == "time0":
        return int_in(value, 0, big, "an integer")
    if kind == "features":
        return int_in(value, 1, limits["params"], "an integer")
    if kind == "pair":
        if is_int(value):
            return int_in(value, 1, big, "an integer")
        if isinstance(value, list) and len(value) == 2:
            return [int_in(v, 1, big, "an integer") for v in value]
        raise ModelFormatError(f"{where}: expected an integer or a pair [feature, time], got {_short(value)}")
    if kind == "pad1d":
        return pad_part(value, big, "padding")
    if kind == "pad2d":
        # As the layers take it: one form for both axes, or [feature_pad, time_pad].
        if isinstance(value, list) and len(value) == 2:
            return [pad_part(value[0], limits["channels"], "feature padding"),
                    pad_part(value[1], big, "time padding")]
        if isinstance(value, str) or is_int(value):
            return pad_part(value, min(big, limits["channels"]), "padding")
        raise ModelFormatError(f"{where}: expected 'valid', 'causal', 'same', an integer >= 0 or "
                               f"[feature_pad, time_pad], got {_short(value)}")
    if kind == "padding2d":  # format v1
        if value in ("valid", "causal"):
            return value
        if is_int(value):
            # An integer pads both axes, and v1 pads time only causally (as v1 loaders did).
            return int_in(value, 0, 0, "an integer for both axes (v1 has no symmetric time padding)")
        if isinstance(value, list) and len(value) == 2:
            p_f = int_in(value[0], 0, limits["channels"], "a feature padding")
            p_t = value[1]
            if p_t not in (0, "valid", "causal") or isinstance(p_t, bool):
                raise ModelFormatError(f"{where}: time padding must be 0, 'valid' or 'causal', "
                                       f"got {_short(p_t)}")
            return [p_f, p_t]
        raise ModelFormatError(f"{where}: expected 'valid', 'causal' or [feature_pad, time_pad], "
                               f"got {_short(value)}")
    if kind == "bool":
        if not isinstance(value, bool):
            raise ModelFormatError(f"{where}: expected true or false, got {_short(value)}")
        return value
    if kind in ("float", "pos_float", "unit_float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ModelFormatError(f"{where}: expected a finite number, got {_short(value)}")
        value = float(value)
        if kind == "pos_float" and not value > 0:
            raise ModelFormatError(f"{where}: expected a number > 0, got {value!r}")
        if kind == "unit_float" and not 0 <= value <= 1:
            raise ModelFormatError(f"{where}: expected a number in [0, 1], got {value!r}")
        return value
    if isinstance(kind, tuple):
        if not isinstance(value, str) or value not in kind:
            raise ModelFormatError(f"{where}: expected one of {list(kind)}, got {_short(value)}")
        return value
    raise AssertionError(kind)  # pragma: no cover


class _Params:
    """Hyper-parameter checks shared by both versions; collects the expected arrays."""

    def __init__(self, limits: dict):
        self.limits = limits
        self.expected: Dict[str, tuple] = {}  # array key -> shape
        self.params = 0

    def config(self, kind: str, entry: dict, key: str, schema: dict, structural: tuple) -> dict:
        """``{"type": kind, **hyper-parameters}``, every value checked, defaults filled in."""
        fields = schema[kind]
        extra = set(entry) - set(fields) - set(structural)
        if extra:
            raise ModelFormatError(f"{key}: unknown keys {sorted(extra)} for {kind} (expected "
                                   f"{', '.join(list(structural) + list(fields))})")
        cfg = {"type": kind}
        for name, (vkind, default) in fields.items():
            if name not in entry:
                if default is _REQUIRED:
                    raise ModelFormatError(f"{key}: {kind} needs \"{name}\"")
                cfg[name] = default
                continue
            value = entry[name]
            if value is None and default is None:
                cfg[name] = None
                continue
            cfg[name] = _check_value(vkind, value, f"{key}.{name} ({kind})", self.limits)
        if "groups" in cfg:
            g = cfg["groups"]
            if cfg["in_channels"] % g or cfg["out_channels"] % g:
                raise ModelFormatError(
                    f"{key}.groups ({kind}): groups={g} must divide in_channels="
                    f"{cfg['in_channels']} and out_channels={cfg['out_channels']}")
        self._check_extent(kind, cfg, key)
        for name, shape in _param_shapes(kind, cfg).items():
            n = 1
            for v in shape:
                n *= v
            self.params += n
            if self.params > self.limits["params"]:
                raise ModelFormatError(
                    f"{key}.{name}: the model would need more than {self.limits['params']:,} "
                    f"parameters ({kind} {name} alone has shape {shape}); refusing an absurd size")
            self.expected[f"{key}.{name}"] = shape
        return cfg

    def _check_extent(self, kind, cfg, key):
        """Kernel extent (k-1)*d+1 in frames and features stays under the window cap."""
        if "kernel_size" not in cfg:
            return
        k = _as_pair(cfg["kernel_size"])
        d = _as_pair(cfg.get("dilation") or 1)
        axes = zip(("feature", "time"), zip(k, d))
        if not kind.endswith("2d"):
            axes = [("time", (k[1], d[1]))]
        for axis, (kk, dd) in axes:
            if (kk - 1) * dd + 1 > self.limits["window"]:
                raise ModelFormatError(
                    f"{key}.kernel_size ({kind}): {axis} extent (kernel-1)*dilation+1 = "
                    f"{(kk - 1) * dd + 1} exceeds the cap {self.limits['window']}")


class _V1Walker(_Params):
    """Validates a v1 layer list, collects expected arrays; no layer is built here."""

    def __init__(self, limits: dict):
        super().__init__(limits)
        self.count = 0

    def layer(self, entry: Any, key: str, nested: bool) -> dict:
        self.count += 1
        if self.count > self.limits["layers"]:
            raise ModelFormatError(f"{key}: more than {self.limits['layers']} layers")
        if not isinstance(entry, dict):
            raise ModelFormatError(f"{key}: expected an object {{\"type\": ...}}, got "
                                   f"{type(entry).__name__}")
        kind = entry.get("type")
        if not isinstance(kind, str):
            raise ModelFormatError(f"{key}: missing \"type\" (a string such as \"Conv1d\")")
        if kind not in _SCHEMA_V1:
            raise ModelFormatError(f"{key}: unknown layer type {_short(kind)}; format v1 knows "
                                   f"{', '.join(sorted(_SCHEMA_V1))}")
        if kind == "Residual":
            if nested:
                raise ModelFormatError(f"{key}: a Residual block cannot hold another Residual")
            extra = set(entry) - {"type", "body", "skip"}
            if extra:
                raise ModelFormatError(f"{key}: unknown keys {sorted(extra)} for Residual "
                                       f"(expected type, body, skip)")
            body = entry.get("body")
            if not isinstance(body, list) or not body:
                raise ModelFormatError(f"{key}.body: expected a non-empty list of layers")
            skip = entry.get("skip")
            return {"type": kind,
                    "body": [self.layer(sub, f"{key}.body.{j}", True) for j, sub in enumerate(body)],
                    "skip": None if skip is None else self.layer(skip, f"{key}.skip", True)}
        return self.config(kind, entry, key, _SCHEMA_V1, ("type",))


class _Node(NamedTuple):
    name: str
    kind: str
    inputs: tuple  # indices of earlier nodes
    cfg: dict


class _GraphWalker(_Params):
    """Validates a v2 node list: names, types, edges, arity, hyper-parameters, arrays.
    Nothing is built here."""

    STRUCTURAL = ("name", "type", "inputs")

    def nodes(self, entries: Any) -> List[_Node]:
        lim = self.limits
        if not isinstance(entries, list) or not entries:
            raise ModelFormatError(f"{MODEL_KEY}.nodes: expected a non-empty list of nodes, the "
                                   f"Input first, got {_short(entries)}")
        if len(entries) > lim["nodes"]:
            raise ModelFormatError(f"{MODEL_KEY}.nodes: {len(entries):,} nodes (at most "
                                   f"{lim['nodes']:,})")
        index: Dict[str, int] = {}
        out: List[_Node] = []
        edges = 0
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ModelFormatError(f"nodes[{i}]: expected an object {{\"name\": ..., \"type\": "
                                       f"..., \"inputs\": [...]}}, got {type(entry).__name__}")
            name = entry.get("name", _MISSING)
            if name is _MISSING:
                raise ModelFormatError(f"nodes[{i}]: missing \"name\"")
            if not isinstance(name, str) or not _NAME.match(name):
                raise ModelFormatError(f"nodes[{i}].name: expected 1-128 characters of letters, "
                                       f"digits, _ . : -, got {_short(name)}")
            if name in index:
                raise ModelFormatError(f"nodes.{name}: two nodes are named {name!r} (nodes "
                                       f"{index[name]} and {i}); node names must be unique")
            key = f"nodes.{name}"
            kind = entry.get("type")
            if not isinstance(kind, str):
                raise ModelFormatError(f"{key}: missing \"type\" (a string such as \"Conv1d\"), "
                                       f"got {_short(kind)}")
            if kind not in _SCHEMA_V2:
                hint = (" (a residual block is its nodes: the body, the skip and an Add)"
                        if kind == "Residual" else "")
                raise ModelFormatError(f"{key}: unknown node type {_short(kind)}{hint}; format v2 "
                                       f"knows {', '.join(sorted(_SCHEMA_V2))}")
            if i == 0 and kind != "Input":
                raise ModelFormatError(f"{key}: the first node must be the Input, got {kind}")
            if i > 0 and kind == "Input":
                raise ModelFormatError(f"{key}: a second Input (node {i}); a model has exactly one "
                                       f"input, the first node")
            inputs = entry.get("inputs", _MISSING)
            if kind == "Input":
                if inputs is not _MISSING and inputs != []:
                    raise ModelFormatError(f"{key}.inputs (Input): the Input reads no node, got "
                                           f"{_short(inputs)}")
                self.config(kind, entry, key, _SCHEMA_V2, self.STRUCTURAL)
                index[name] = i
                out.append(_Node(name, kind, (), {"type": kind}))
                continue
            refs = self._inputs(inputs, kind, key, index, entries, i)
            edges += len(refs)
            if edges > lim["edges"]:
                raise ModelFormatError(f"{key}.inputs: more than {lim['edges']:,} node inputs in "
                                       f"the model")
            cfg = self.config(kind, entry, key, _SCHEMA_V2, self.STRUCTURAL)
            index[name] = i
            out.append(_Node(name, kind, refs, cfg))
        self._check_all_used(out)
        return out

    @staticmethod
    def _inputs(inputs, kind, key, index, entries, i) -> tuple:
        if inputs is _MISSING:
            raise ModelFormatError(f"{key}: {kind} needs \"inputs\", the names of the nodes it reads")
        if not isinstance(inputs, list) or not all(isinstance(r, str) for r in inputs):
            raise ModelFormatError(f"{key}.inputs ({kind}): expected a list of node names, got "
                                   f"{_short(inputs)}")
        if kind in _MERGES:
            if len(inputs) < 2:
                raise ModelFormatError(f"{key}.inputs ({kind}): {kind} joins two or more nodes, "
                                       f"got {len(inputs)} input{'s' if len(inputs) != 1 else ''}")
        elif len(inputs) != 1:
            raise ModelFormatError(f"{key}.inputs ({kind}): {kind} reads exactly one node, got "
                                   f"{len(inputs)}: {_short(inputs)}")
        refs = []
        for ref in inputs:
            if ref not in index:
                later = any(isinstance(e, dict) and e.get("name") == ref for e in entries[i:])
                why = ("which is not listed before it: nodes are in topological order, each "
                       "reading only nodes above it (no cycles)" if later else
                       "but there is no node of that name")
                raise ModelFormatError(f"{key}.inputs ({kind}): reads {_short(ref)}, {why}")
            refs.append(index[ref])
        return tuple(refs)

    @staticmethod
    def _check_all_used(nodes: List[_Node]):
        used = [False] * len(nodes)
        used[-1] = True
        for i in range(len(nodes) - 1, 0, -1):
            if used[i]:
                for j in nodes[i].inputs:
                    used[j] = True
        unused = [n.name for n, u in zip(nodes, used) if not u]
        if unused:
            more = f" (also {', '.join(unused[1:6])})" if len(unused) > 1 else ""
            raise ModelFormatError(f"nodes.{unused[0]}: not used by the output, the last node "
                                   f"{nodes[-1].name!r}{more}; every node must lead to it")


# ----------------------------------------------------------------------------- build
def _build_layer(cfg: dict, key: str) -> L.Layer:
    kind = cfg["type"]
    cls = _CLASSES[kind]
    try:
        if kind == "Residual":
            body = [_build_layer(sub, f"{key}.body.{j}") for j, sub in enumerate(cfg["body"])]
            skip = None if cfg["skip"] is None else _build_layer(cfg["skip"], f"{key}.skip")
            return cls(body, skip)
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items() if k != "type"}
        if kind in ("Conv1d", "Conv2d", "Linear"):
            kwargs["seed"] = 0  # placeholder weights, replaced from the file
        return cls(**kwargs)
    except ModelError as exc:
        raise ModelFormatError(f"{key} ({kind}): {exc}") from None


def _assign_params(layer: L.Layer, key: str, arrays: Dict[str, np.ndarray]):
    for name in layer.param_names:
        full = f"{key}.{name}"
        if full in arrays:
            try:
                setattr(layer, name, arrays[full])
            except ModelError as exc:  # pragma: no cover - shapes were checked already
                raise ModelFormatError(f"{full}: {exc}") from None
        elif name == "bias" and not isinstance(layer, L._BatchNorm):
            setattr(layer, name, None)


def _assign_v1(layer: L.Layer, cfg: dict, key: str, arrays: Dict[str, np.ndarray]):
    if cfg["type"] == "Residual":
        for j, (sub, sub_cfg) in enumerate(zip(layer.body, cfg["body"])):
            _assign_v1(sub, sub_cfg, f"{key}.body.{j}", arrays)
        if layer.skip is not None:
            _assign_v1(layer.skip, cfg["skip"], f"{key}.skip", arrays)
        return
    _assign_params(layer, key, arrays)


_NODE_IN_ERROR = re.compile(r"node (\S+) \(")


def _model_error(exc: ModelError, prefix: str, v1: bool = False) -> ModelFormatError:
    """A ModelError of the model's own checks, as a ModelFormatError naming the node."""
    msg = str(exc)
    m = _NODE_IN_ERROR.match(msg)
    if m:
        where = m.group(1)
        if v1:  # a residual block's nodes are layers.3.body.0, layers.3.add: name the layer
            where = re.match(r"layers\.\d+", where).group(0) if where.startswith("layers.") else MODEL_KEY
        else:
            where = prefix + where
    else:
        where = f"{MODEL_KEY}.semantics" if "semantics" in msg else MODEL_KEY
    return ModelFormatError(f"{where}: inconsistent model: {msg}")


_SEQ_NAME = re.compile(r"layers\.(0|[1-9][0-9]{0,5})(?:\.(body|skip)\.(0|[1-9][0-9]{0,5})|\.(skip|add))?\Z")


def _as_sequential(gnodes: list, top: "_Top"):
    """The Sequential whose expansion is ``gnodes`` (a v2 file marked "sequential")."""
    from ..nn.sequential import Sequential

    def refuse(detail):
        return ModelFormatError(f"{MODEL_KEY}.sequential: true, but the nodes are not a layer list "
                                f"as dse.Sequential expands it: {detail}; without \"sequential\" the "
                                f"file loads as a graph model")

    groups: Dict[int, dict] = {}
    for node in gnodes[1:]:
        m = _SEQ_NAME.match(node.name)
        if not m:
            raise refuse(f"node {node.name!r} is not named layers.<i>, layers.<i>.body.<j>, "
                         f"layers.<i>.skip, layers.<i>.skip.<k> or layers.<i>.add")
        i = int(m.group(1))
        part, j, single = m.group(2), m.group(3), m.group(4)
        g = groups.setdefault(i, {"body": {}, "skips": {}})
        if part is None and single is None:
            g["plain"] = node.layer
        elif part == "body":
            g["body"][int(j)] = node.layer
        elif part == "skip":
            g["skips"][int(j)] = node.layer
        elif single == "skip":
            g["skip"] = node.layer
        else:
            g["add"] = True
    if sorted(groups) != list(range(len(groups))):
        missing = min(set(range(len(groups) + 1)) - set(groups))
        raise refuse(f"no node for layer {missing} (layers are numbered 0, 1, 2, ...)")
    layers = []
    for i in range(len(groups)):
        g = groups[i]
        residual = bool(g["body"] or g["skips"] or "skip" in g or "add" in g)
        if "plain" in g:
            if residual:
                raise refuse(f"layers.{i} is both a layer and a residual block")
            layers.append(g["plain"])
            continue
        if not g["body"] or sorted(g["body"]) != list(range(len(g["body"]))) or "add" not in g:
            raise refuse(f"the residual block layers.{i} needs body nodes layers.{i}.body.0, "
                         f"layers.{i}.body.1, ... and layers.{i}.add")
        if g["skips"] and ("skip" in g or sorted(g["skips"]) != list(range(len(g["skips"])))):
            raise refuse(f"the skip of layers.{i} is layers.{i}.skip or layers.{i}.skip.0, "
                         f"layers.{i}.skip.1, ..., not both or with gaps")
        skip = ([g["skips"][k] for k in range(len(g["skips"]))] if g["skips"] else g.get("skip"))
        try:
            layers.append(M.Residual([g["body"][k] for k in range(len(g["body"]))], skip))
        except ModelError as exc:
            raise refuse(f"layers.{i}: {exc}") from None
    try:
        seq = Sequential(layers, in_features=top.in_features, window=top.window,
                         semantics=top.semantics)
    except ModelError as exc:
        raise refuse(str(exc)) from None
    got = seq.nodes[:-1] if seq._implicit_head else seq.nodes
    for k in range(max(len(got), len(gnodes))):
        a = got[k] if k < len(got) else None
        b = gnodes[k] if k < len(gnodes) else None
        if (a is None or b is None or a.name != b.name or a.inputs != b.inputs
                # a residual block makes its own Add: compare those by type
                or (a.layer is not b.layer and not (type(a.layer) is type(b.layer) is M.Add))):
            theirs = (f"{a.name!r} reading {[got[j].name for j in a.inputs]}" if a is not None
                      else "none")
            raise refuse(f"node {k} ({(b or a).name!r}) is not dse.Sequential's node {k} ({theirs})")
    return seq


# ----------------------------------------------------------------------------- load: top level
def _parse_json(text: str, limits: dict) -> dict:
    if len(text) > limits["json_chars"]:
        raise ModelFormatError(f"{MODEL_KEY}: JSON description of {len(text):,} characters "
                               f"(at most {limits['json_chars']:,})")
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ModelFormatError(f"{MODEL_KEY}: JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, over-long integers
        raise ModelFormatError(f"{MODEL_KEY}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ModelFormatError(f"{MODEL_KEY}: expected a JSON object, got {type(doc).__name__}")
    return doc


_TOP_KEYS = {"format", "format_version", "producer", "in_features", "window", "layers",
             "receptive_field", "hop", "output_shape"}



class _Top(NamedTuple):
    version: int
    in_features: Any  # int or (C, F)
    window: int
    semantics: str
    sequential: bool


#: Top-level keys of each version, beside those of _TOP_ANY.
_TOP_KEYS = {
    1: {"format", "format_version", "producer", "in_features", "window", "layers",
        "receptive_field", "hop", "output_shape"},
    2: {"format", "format_version", "producer", "in_features", "window", "semantics",
        "sequential", "nodes", "receptive_field", "hop", "output_shape", "quantization"},
}
#: Optional top-level keys that every version may carry (annotations such as class
#: labels): name -> check(value, model) -> the value to set as ``model.<name>``. Each is
#: called once the model is built, before any weight is read; absent keys are skipped.
_TOP_ANY: Dict[str, Any] = {
    "labels": lambda value, model: check_annotations(value, None, model.output_shape)[0],
    "metadata": lambda value, model: check_annotations(None, value, model.output_shape)[1],
}


def _check_top(doc: dict, limits: dict) -> _Top:
    """The top-level keys of the description, each checked; the model's keys (``layers`` /
    ``nodes``) are only checked to be there."""
    fmt = doc.get("format")
    if fmt != FORMAT_NAME:
        raise ModelFormatError(f"{MODEL_KEY}.format: expected {FORMAT_NAME!r}, got {_short(fmt)}")
    version = doc.get("format_version")
    if type(version) is not int or version not in READ_VERSIONS:
        raise ModelFormatError(f"{MODEL_KEY}.format_version: this deepshift_edge reads format "
                               f"versions {' and '.join(map(str, READ_VERSIONS))}, the file has "
                               f"{_short(version)}; upgrade deepshift_edge or re-export the model")
    known = _TOP_KEYS[version] | set(_TOP_ANY)
    extra = set(doc) - known
    if extra:
        raise ModelFormatError(f"{MODEL_KEY}: unknown keys {sorted(extra)} for format v{version} "
                               f"(expected {', '.join(sorted(known))})")
    producer = doc.get("producer")
    if not isinstance(producer, str) or not 0 < len(producer) <= 200:
        raise ModelFormatError(f"{MODEL_KEY}.producer: expected a non-empty string of at most "
                               f"200 characters, got {_short(producer)}")
    in_features = doc.get("in_features")
    where = f"{MODEL_KEY}.in_features"
    if isinstance(in_features, list):
        if len(in_features) != 2:
            raise ModelFormatError(f"{where}: expected C or [C, F], got {_short(in_features)}")
        in_features = tuple(_check_value("chan", v, where, limits) for v in in_features)
    else:
        in_features = _check_value("chan", in_features, where, limits)
    window = _check_value("int", doc.get("window"), f"{MODEL_KEY}.window", limits)
    semantics, sequential = "window", False
    if version == 1:
        if not isinstance(doc.get("layers"), list):
            raise ModelFormatError(f"{MODEL_KEY}.layers: expected a list of layers")
    else:
        semantics = doc.get("semantics", "window")
        if semantics not in ("window", "sequence") or not isinstance(semantics, str):
            raise ModelFormatError(f"{MODEL_KEY}.semantics: expected 'window' or 'sequence', got "
                                   f"{_short(semantics)}")
        sequential = doc.get("sequential", False)
        if not isinstance(sequential, bool):
            raise ModelFormatError(f"{MODEL_KEY}.sequential: expected true or false, got "
                                   f"{_short(sequential)}")
        if "nodes" not in doc:
            raise ModelFormatError(f"{MODEL_KEY}.nodes: missing (the list of nodes, the Input first)")
    return _Top(version, in_features, window, semantics, sequential)


def _check_model(model, doc: dict, limits: dict) -> dict:
    """Caps and derived values of the built model; returns the checked optional keys."""
    if model.receptive_field > limits["window"]:
        raise ModelFormatError(f"{MODEL_KEY}: receptive field of {model.receptive_field} frames "
                               f"exceeds the cap {limits['window']}")
    total = sum(math.prod(spec.shape) for spec in model.specs)  # Python ints: never wraps
    if total > limits["activations"]:
        raise ModelFormatError(f"{MODEL_KEY}: one window needs {total:,} activations "
                               f"(cap {limits['activations']:,}); window {model.window} is too "
                               f"large for this model")
    derived = {"receptive_field": model.receptive_field, "hop": model.hop,
               "output_shape": [int(v) for v in model.output_shape]}
    for name, value in derived.items():
        if name in doc and doc[name] != value:
            raise ModelFormatError(f"{MODEL_KEY}.{name}: the file declares {_short(doc[name])} but "
                                   f"the model gives {value!r}; the description is inconsistent")
    return {name: check(doc[name], model) for name, check in _TOP_ANY.items() if name in doc}


def load(path, *, limits: Optional[dict] = None):
    """Read a model written by :func:`save` (or by hand, see ``docs/format.md``).

    Reads format v2 and v1. Returns a :class:`~deepshift_edge.Sequential` for a v1 file
    and for a v2 file that holds one (``"sequential": true``), else a
    :class:`~deepshift_edge.Model`. Never unpickles. Raises
    :class:`~deepshift_edge.ModelFormatError` for anything wrong with the file (its
    message names the node or layer, the key, what was expected and what the file holds)
    and ``OSError`` (e.g. ``FileNotFoundError``, listing the built-in names) when the file
    cannot be opened.

    ``path``: a file name or a binary file object. A name that is not an existing file may
    be a built-in model: ``"basicmotions"`` (trained, shipped with the package) or one of
    the examples with random weights (``"tiny"``, ``"kws"``, ``"activity"``,
    ``"spectrogram"``); see :func:`deepshift_edge.data.datasets.resolve_model`.
    ``limits`` overrides entries of :data:`LIMITS` for trusted, unusually large models.
    """
    lim = dict(LIMITS)
    if limits:
        unknown = set(limits) - set(LIMITS)
        if unknown:
            raise ValueError(f"unknown limits {sorted(unknown)}; known: {sorted(LIMITS)}")
        lim.update(limits)
    if hasattr(path, "read"):
        name = getattr(path, "name", None)
        return _named(_load_file, path, lim, name if isinstance(name, str) else "<file object>")
    from ..data.datasets import resolve_model

    ref = resolve_model(path)  # a file, a shipped model's file, or a built-in example
    if ref.path is None:
        return ref.build()
    name = ref.path
    with open(name, "rb") as f:
        return _named(_load_file, f, lim, name)


def _named(fn, f, limits, name):
    """Every content error names the file first: ``model.npz: nodes.conv.weight: ...``."""
    try:
        return fn(f, limits, name)
    except ModelFormatError as exc:
        # zipfile/zlib messages may quote raw bytes as b'...': show them as plain text
        msg = _BYTES_REPR.sub(lambda m: m.group(1), str(exc))
        if not msg.startswith(f"{name}: "):
            msg = f"{name}: {msg}"
        raise ModelFormatError(msg) from None


_BYTES_REPR = re.compile(r"(?<![A-Za-z0-9_])b('[^'\n]*'|\"[^\"\n]*\")")


def _show_bytes(raw: bytes) -> str:
    """A few bytes for a message: hex, and the text where it is printable (never a bytes repr)."""
    text = "".join(chr(b) if 32 <= b < 127 else "." for b in raw)
    return f"bytes {raw.hex(' ')} ('{text}')"


def _load_file(f, limits, name):
    try:
        head = f.read(4)
        f.seek(0)
    except OSError:
        raise
    if head[:2] != b"PK":
        what = "an empty file" if not head else (
            "a single .npy array" if head == b"\x93NUM" else
            "pickled data" if head[:1] == b"\x80" else _show_bytes(head))
        raise ModelFormatError(f"{name}: not a deepshift_edge model: expected a .npz (zip) "
                               f"file, found {what}")
    try:
        zf = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError,
            struct.error, NotImplementedError) as exc:
        raise ModelFormatError(f"{name}: not a readable zip archive (truncated or corrupt?): "
                               f"{exc}") from None
    try:
        with zf:
            return _load_zip(zf, limits, name)
    except ModelFormatError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, NotImplementedError,
            RuntimeError, OverflowError, MemoryError, zlib.error, struct.error,
            _LZMAError) as exc:
        # Corrupt compressed data, bad CRC, encrypted or unsupported members...
        raise ModelFormatError(f"{name}: corrupt archive: {type(exc).__name__}: {exc}") from None




def _load_zip(zf: zipfile.ZipFile, limits: dict, name: str):
    infos = zf.infolist()
    if len(infos) > limits["members"]:
        raise ModelFormatError(f"{name}: {len(infos)} members in the archive (at most "
                               f"{limits['members']})")
    members: Dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        if not info.filename.endswith(".npy"):
            raise ModelFormatError(f"{name}: member {info.filename!r} is not a .npy array")
        key = info.filename[:-4]
        if key in members:
            raise ModelFormatError(f"{name}: array {key!r} appears twice in the archive")
        if info.flag_bits & 0x1:
            raise ModelFormatError(f"{name}: array {key!r} is encrypted")
        members[key] = info
    if MODEL_KEY not in members:
        raise ModelFormatError(f"{name}: no {MODEL_KEY!r} array: this is not a deepshift_edge "
                               f"model file (arrays: {sorted(members)[:8]})")

    # 1. The JSON description, size-checked from its header before reading it.
    m = _read_npy_header(zf, members[MODEL_KEY], MODEL_KEY)
    if m.dtype.kind not in "US" or m.shape not in ((), (1,)):
        raise ModelFormatError(f"{MODEL_KEY}: expected a 0-d string array (np.array(json_text)), "
                               f"got dtype {m.dtype} shape {m.shape}")
    if m.data_bytes > 4 * limits["json_chars"]:
        raise ModelFormatError(f"{MODEL_KEY}: JSON description of {m.data_bytes:,} bytes "
                               f"(at most {limits['json_chars']:,} characters)")
    _check_member_size(m)
    raw = _read_data(zf, members[MODEL_KEY], m).reshape(())
    try:
        text = str(raw.item()) if m.dtype.kind == "U" else raw.item().decode("utf-8")
    except (UnicodeDecodeError, UnicodeEncodeError, ValueError):
        raise ModelFormatError(f"{MODEL_KEY}: JSON text is not valid UTF-8") from None
    doc = _parse_json(text, limits)
    top = _check_top(doc, limits)
    arrays = {k: v for k, v in members.items() if k != MODEL_KEY}
    model, extras = (_load_v1 if top.version == 1 else _load_v2)(zf, arrays, doc, top, limits)
    model.labels, model.metadata = None, {}
    for key, value in extras.items():  # the optional top-level keys (_TOP_ANY)
        setattr(model, key, value)
    return model


def _load_v1(zf, members, doc, top: _Top, limits):
    from ..nn.sequential import Sequential

    # 2. Every layer's hyper-parameters and the arrays they need (no allocation yet).
    walker = _V1Walker(limits)
    cfgs = [walker.layer(entry, f"layers.{i}", False) for i, entry in enumerate(doc["layers"])]
    # 3. Missing / extra arrays, then every array header (shape, dtype, size).
    headers = _check_arrays(zf, members, walker.expected)
    # 4. The stack as a whole: channels, features, window, receptive field (no data read).
    layer_objs = [_build_layer(cfg, f"layers.{i}") for i, cfg in enumerate(cfgs)]
    try:
        model = Sequential(layer_objs, in_features=top.in_features, window=top.window)
    except ModelError as exc:
        raise _model_error(exc, "", v1=True) from None
    extras = _check_model(model, doc, limits)
    # 5. The data: finite float32 weights, then assignment.
    arrays = _read_weights(zf, members, headers)
    for i, (layer, cfg) in enumerate(zip(model.layers, cfgs)):
        _assign_v1(layer, cfg, f"layers.{i}", arrays)
    return model, extras


def _load_v2(zf, members, doc, top: _Top, limits):
    from ..nn.graph import GraphNode, Model

    from . import quantized

    # 2. Every node: name, type, inputs, hyper-parameters, the arrays it needs.
    walker = _GraphWalker(limits)
    nodes = walker.nodes(doc["nodes"])
    # 3. Missing / extra arrays, then every array header (shape, dtype, size). A quantized
    # model's int8 arrays (quant.*) are checked with its quantization section below.
    qmembers = {k: v for k, v in members.items() if k.startswith(quantized.PREFIX)}
    if qmembers and quantized.KEY not in doc:
        raise ModelFormatError(f"{sorted(qmembers)[0]}: an int8 array, but the file has no "
                               f"{quantized.KEY!r} section")
    members = {k: v for k, v in members.items() if k not in qmembers}
    headers = _check_arrays(zf, members, walker.expected)
    # 4. The layers, then the graph: shapes, time bookkeeping, window (no data read).
    gnodes = [GraphNode(nodes[0].name, None, ())]
    for node in nodes[1:]:
        gnodes.append(GraphNode(node.name, _build_layer(node.cfg, f"nodes.{node.name}"), node.inputs))
    try:
        model = Model.from_nodes(top.in_features, gnodes, window=top.window, semantics=top.semantics)
    except ModelError as exc:
        raise _model_error(exc, "nodes.") from None
    if top.sequential:
        model = _as_sequential(gnodes, top)
    extras = _check_model(model, doc, limits)
    # 5. The data: finite float32 weights, then assignment.
    arrays = _read_weights(zf, members, headers)
    for node in gnodes[1:]:
        _assign_params(node.layer, f"nodes.{node.name}", arrays)
    if quantized.KEY in doc:
        if top.semantics != "window":
            raise ModelFormatError(f"{quantized.KEY}: int8 models stream windows (semantics 'window')")
        model.labels, model.metadata = None, {}
        for key, value in extras.items():
            setattr(model, key, value)
        model = quantized.load(model, doc[quantized.KEY], zf, qmembers, _read_npy_header,
                               _read_data, _check_member_size)
    return model, extras


def _check_arrays(zf, members: Dict[str, zipfile.ZipInfo], expected: Dict[str, tuple]) -> dict:
    """Exactly the expected arrays, each float32 of its shape (headers only: no data read)."""
    present = set(members)
    missing = [k for k in expected if k not in present]
    if missing:
        k = missing[0]
        raise ModelFormatError(f"{k}: missing array (expected float32 of shape "
                               f"{expected[k]}){'' if len(missing) == 1 else f'; also missing {missing[1:6]}'}")
    extra = sorted(present - set(expected))
    if extra:
        first = extra[0] if len(extra[0]) <= 140 else extra[0][:137] + "..."
        raise ModelFormatError(f"{first}: unexpected array (no parameter of "
                               f"the model has this name){'' if len(extra) == 1 else f'; also {extra[1:6]}'}"
                               f"; expected only {sorted(expected)[:12]}")
    headers = {}
    for key, shape in expected.items():
        h = _read_npy_header(zf, members[key], key)
        if h.dtype.kind != "f" or h.dtype.itemsize != 4:
            raise ModelFormatError(f"{key}: expected dtype float32, got {h.dtype}")
        if h.shape != shape:
            raise ModelFormatError(f"{key}: expected shape {shape}, got {h.shape}")
        _check_member_size(h)
        headers[key] = h
    return headers


def _read_weights(zf, members, headers) -> Dict[str, np.ndarray]:
    arrays = {}
    for key, h in headers.items():
        arr = _read_data(zf, members[key], h).astype(np.float32)  # native byte order, a copy
        if not np.isfinite(arr).all():
            bad = tuple(int(v) for v in np.argwhere(~np.isfinite(arr))[0])
            raise ModelFormatError(f"{key}: non-finite weight {arr[bad]} at index {bad}; "
                                   f"expected finite float32 values")
        if key.endswith(".running_var") and (arr < 0).any():
            bad = tuple(int(v) for v in np.argwhere(arr < 0)[0])
            raise ModelFormatError(f"{key}: negative variance {arr[bad]} at index {bad}; "
                                   f"expected values >= 0")
        arrays[key] = arr
    return arrays
