"""Model files: the ``.npz`` format, version 1 (see ``docs/format.md``).

A file is an uncompressed or deflated ZIP written by ``numpy.savez``:

* ``__model__``: a 0-d NumPy unicode string array holding a small JSON description
  (format name and version, producer, ``in_features``, ``window`` and the layer list
  with every hyper-parameter);
* one float32 array per parameter, named after its place in the model:
  ``layers.3.weight``, ``layers.2.body.0.bias``, ``layers.2.skip.weight``.

:func:`load` never unpickles (``allow_pickle=False``) and validates the whole file before
any array data is read and before the model reaches the streaming kernels: JSON size and
syntax, format version, layer types and hyper-parameters, the name, dtype and shape of
every array (from the ``.npy`` headers, so a member declaring a huge array is refused
without reading it), caps on total parameters, channels, window and receptive field,
the channel/feature/window consistency of the stack, and finite weights. Every problem
raises :class:`~deepshift_edge.errors.ModelFormatError` naming the layer, the key and
what was expected.
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
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..nn import layers as L
from ..nn import merge as M
from .._atomic import atomic_write
from ..errors import ModelError, ModelFormatError

__all__ = ["save", "load", "ModelFormatError", "FORMAT_NAME", "FORMAT_VERSION", "LIMITS",
           "ANNOTATION_LIMITS", "check_annotations"]

FORMAT_NAME = "deepshift-edge-model"
FORMAT_VERSION = 1
MODEL_KEY = "__model__"

#: Caps that keep a hostile file from allocating without bound. ``load(..., limits=...)``
#: may raise them for a trusted file.
LIMITS = {
    "json_chars": 1 << 20,          # characters of the JSON description
    "members": 4096,                # arrays in the zip
    "layers": 1024,                 # layers, counting those inside residual blocks
    "params": 1 << 25,              # float32 parameters in total (128 MiB)
    "channels": 1 << 16,            # any channel / feature count
    "window": 1 << 20,              # window, receptive field, and any kernel extent in frames
    "activations": 1 << 26,         # sum over layers of the window's output elements
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

try:
    from lzma import LZMAError as _LZMAError
except ImportError:  # pragma: no cover - Python built without lzma
    class _LZMAError(Exception):
        pass


# ----------------------------------------------------------------------------- schema
# Per layer type: hyper-parameter -> (kind, default). Kinds: "int" (>= 1), "int0" (>= 0),
# "pair" (int >= 1 or [feature, time]), "bool", "float", "pos_float" (> 0),
# "unit_float" ([0, 1]), or a tuple of allowed values. The keys are those of
# ``layer.config()`` so that ``save`` writes exactly what ``load`` reads.
_SCHEMA: Dict[str, Dict[str, tuple]] = {
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

_CLASSES = {name: getattr(L, name, None) or getattr(M, name) for name in _SCHEMA}


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
def _layer_entry(layer: L.Layer, key: str, arrays: dict) -> dict:
    kind = type(layer).__name__
    if kind not in _SCHEMA or type(layer) is not _CLASSES[kind]:
        raise ModelError(f"{key}: cannot save a layer of type {type(layer).__module__}."
                         f"{type(layer).__qualname__}; format v1 holds only the built-in layers "
                         f"({', '.join(sorted(_SCHEMA))})")
    entry = {"type": kind}
    if isinstance(layer, M.Residual):
        entry["body"] = [_layer_entry(sub, f"{key}.body.{j}", arrays)
                         for j, sub in enumerate(layer.body)]
        entry["skip"] = None if layer.skip is None else _layer_entry(layer.skip, f"{key}.skip", arrays)
        return entry
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


def describe(model, labels=None, metadata=None) -> Tuple[dict, Dict[str, np.ndarray]]:
    """The JSON description and the named float32 arrays of ``model`` (format v1).

    ``labels`` / ``metadata`` default to the model's own (``model.labels``,
    ``model.metadata``), and are left out of the description when there are none."""
    from .._version import __version__
    from ..nn.sequential import Sequential

    if not isinstance(model, Sequential):
        raise ModelError(f"expected a deepshift_edge Sequential, got {type(model).__name__}")
    arrays: Dict[str, np.ndarray] = {}
    layers = [_layer_entry(layer, f"layers.{i}", arrays) for i, layer in enumerate(model.layers)]
    in_features = list(model.in_features) if isinstance(model.in_features, tuple) else model.in_features
    doc = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "producer": f"deepshift_edge {__version__}",
        "in_features": in_features,
        "window": int(model.window),
        "layers": layers,
        # Derived values, checked on load when present (optional in hand-written files).
        "receptive_field": int(model.receptive_field),
        "hop": int(model.hop),
        "output_shape": [int(v) for v in model.output_shape],
    }
    labels = getattr(model, "labels", None) if labels is None else labels
    metadata = getattr(model, "metadata", None) if metadata is None else metadata
    labels, metadata = check_annotations(labels, metadata, model.output_shape, "", ModelError)
    if labels is not None:
        doc["labels"] = list(labels)
    if metadata:
        doc["metadata"] = metadata
    return doc, arrays


def save(model, path, labels=None, metadata=None) -> None:
    """Write ``model`` (a :class:`~deepshift_edge.Sequential`) to ``path`` in format v1.

    ``labels``: class names, one per output value (default: ``model.labels``);
    ``metadata``: a dict of names to JSON scalars, e.g. the model's name, sample rate,
    units, training provenance (default: ``model.metadata``). Both are validated
    (:func:`check_annotations`) and given back by :func:`load` as ``model.labels`` and
    ``model.metadata``.

    ``path`` is used as given (no ``.npz`` suffix is added). The file is written to a
    temporary name next to it and renamed, so a crash never leaves half a model behind.
    ``path`` may also be a binary file object opened for writing.
    """
    doc, arrays = describe(model, labels, metadata)
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


def _check_value(kind, value, where: str, limits: dict):
    """Validate one hyper-parameter; return it normalised (ints, lists)."""
    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    def int_in(v, lo, hi, what):
        if not is_int(v) or not lo <= v <= hi:
            raise ModelFormatError(f"{where}: expected {what} in [{lo}, {hi}], got {v!r}")
        return v

    big = limits["window"]
    if kind == "int":
        return int_in(value, 1, big, "an integer")
    if kind == "chan":
        return int_in(value, 1, limits["channels"], "an integer")
    if kind == "features":
        return int_in(value, 1, limits["params"], "an integer")
    if kind == "pair":
        if is_int(value):
            return int_in(value, 1, big, "an integer")
        if isinstance(value, list) and len(value) == 2:
            return [int_in(v, 1, big, "an integer") for v in value]
        raise ModelFormatError(f"{where}: expected an integer or a pair [feature, time], got {value!r}")
    if kind == "padding2d":
        if value in ("valid", "causal"):
            return value
        if is_int(value):
            return int_in(value, 0, limits["channels"], "an integer")
        if isinstance(value, list) and len(value) == 2:
            p_f = int_in(value[0], 0, limits["channels"], "a feature padding")
            p_t = value[1]
            if p_t not in (0, "valid", "causal") or isinstance(p_t, bool):
                raise ModelFormatError(f"{where}: time padding must be 0, 'valid' or 'causal', "
                                       f"got {p_t!r}")
            return [p_f, p_t]
        raise ModelFormatError(f"{where}: expected 'valid', 'causal' or [feature_pad, time_pad], "
                               f"got {value!r}")
    if kind == "bool":
        if not isinstance(value, bool):
            raise ModelFormatError(f"{where}: expected true or false, got {value!r}")
        return value
    if kind in ("float", "pos_float", "unit_float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ModelFormatError(f"{where}: expected a finite number, got {value!r}")
        value = float(value)
        if kind == "pos_float" and not value > 0:
            raise ModelFormatError(f"{where}: expected a number > 0, got {value!r}")
        if kind == "unit_float" and not 0 <= value <= 1:
            raise ModelFormatError(f"{where}: expected a number in [0, 1], got {value!r}")
        return value
    if isinstance(kind, tuple):
        if value not in kind or isinstance(value, bool):
            raise ModelFormatError(f"{where}: expected one of {list(kind)}, got {value!r}")
        return value
    raise AssertionError(kind)  # pragma: no cover


class _Walker:
    """Validates the layer list, collects expected arrays; no layer is built here."""

    def __init__(self, limits: dict):
        self.limits = limits
        self.expected: Dict[str, tuple] = {}  # array key -> shape
        self.params = 0
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
        if kind not in _SCHEMA:
            raise ModelFormatError(f"{key}: unknown layer type {kind!r}; format v1 knows "
                                   f"{', '.join(sorted(_SCHEMA))}")
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
        schema = _SCHEMA[kind]
        extra = set(entry) - set(schema) - {"type"}
        if extra:
            raise ModelFormatError(f"{key}: unknown keys {sorted(extra)} for {kind} (expected "
                                   f"{', '.join(['type'] + list(schema)) })")
        cfg = {"type": kind}
        for name, (vkind, default) in schema.items():
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
        for axis, (kk, dd) in zip(("feature", "time"), zip(k, d)):
            if (kk - 1) * dd + 1 > self.limits["window"]:
                raise ModelFormatError(
                    f"{key}.kernel_size ({kind}): {axis} extent (kernel-1)*dilation+1 = "
                    f"{(kk - 1) * dd + 1} exceeds the cap {self.limits['window']}")


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


def _assign(layer: L.Layer, cfg: dict, key: str, arrays: Dict[str, np.ndarray]):
    if cfg["type"] == "Residual":
        for j, (sub, sub_cfg) in enumerate(zip(layer.body, cfg["body"])):
            _assign(sub, sub_cfg, f"{key}.body.{j}", arrays)
        if layer.skip is not None:
            _assign(layer.skip, cfg["skip"], f"{key}.skip", arrays)
        return
    for name in layer.param_names:
        full = f"{key}.{name}"
        if full in arrays:
            try:
                setattr(layer, name, arrays[full])
            except ModelError as exc:  # pragma: no cover - shapes were checked already
                raise ModelFormatError(f"{full}: {exc}") from None
        elif name == "bias" and not isinstance(layer, L._BatchNorm):
            setattr(layer, name, None)


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
             "receptive_field", "hop", "output_shape", "labels", "metadata"}


def _check_top(doc: dict, limits: dict):
    fmt = doc.get("format")
    if fmt != FORMAT_NAME:
        raise ModelFormatError(f"{MODEL_KEY}.format: expected {FORMAT_NAME!r}, got {fmt!r}")
    version = doc.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise ModelFormatError(f"{MODEL_KEY}.format_version: this deepshift_edge reads format "
                               f"version {FORMAT_VERSION}, the file has {version!r}; upgrade "
                               f"deepshift_edge or re-export the model")
    extra = set(doc) - _TOP_KEYS
    if extra:
        raise ModelFormatError(f"{MODEL_KEY}: unknown keys {sorted(extra)} (expected "
                               f"{', '.join(sorted(_TOP_KEYS))})")
    producer = doc.get("producer")
    if not isinstance(producer, str) or not 0 < len(producer) <= 200:
        raise ModelFormatError(f"{MODEL_KEY}.producer: expected a non-empty string of at most "
                               f"200 characters, got {producer!r}")
    in_features = doc.get("in_features")
    where = f"{MODEL_KEY}.in_features"
    if isinstance(in_features, list):
        if len(in_features) != 2:
            raise ModelFormatError(f"{where}: expected C or [C, F], got {in_features!r}")
        in_features = tuple(_check_value("chan", v, where, limits) for v in in_features)
    else:
        in_features = _check_value("chan", in_features, where, limits)
    window = _check_value("int", doc.get("window"), f"{MODEL_KEY}.window", limits)
    if not isinstance(doc.get("layers"), list):
        raise ModelFormatError(f"{MODEL_KEY}.layers: expected a list of layers")
    return in_features, window


def _check_model(model, doc: dict, limits: dict):
    if model.receptive_field > limits["window"]:
        raise ModelFormatError(f"{MODEL_KEY}: receptive field of {model.receptive_field} frames "
                               f"exceeds the cap {limits['window']}")
    total = sum(int(np.prod(spec.shape, dtype=np.int64)) for spec in model.specs)
    if total > limits["activations"]:
        raise ModelFormatError(f"{MODEL_KEY}: one window needs {total:,} activations "
                               f"(cap {limits['activations']:,}); window {model.window} is too "
                               f"large for these layers")
    derived = {"receptive_field": model.receptive_field, "hop": model.hop,
               "output_shape": [int(v) for v in model.output_shape]}
    for name, value in derived.items():
        if name in doc and doc[name] != value:
            raise ModelFormatError(f"{MODEL_KEY}.{name}: the file declares {doc[name]!r} but the "
                                   f"layers give {value!r}; the description is inconsistent")


def load(path, *, limits: Optional[dict] = None):
    """Read a model written by :func:`save` (or by hand, see ``docs/format.md``).

    ``path``: a file name or a binary file object. A name that is not an existing file may
    be a built-in model: ``"basicmotions"`` (trained, shipped with the package) or one of
    the examples with random weights (``"tiny"``, ``"kws"``, ``"activity"``,
    ``"spectrogram"``); see :func:`deepshift_edge.data.datasets.resolve_model`.

    Returns a :class:`~deepshift_edge.Sequential`. Never unpickles. Raises
    :class:`~deepshift_edge.ModelFormatError` for anything wrong with the file (its
    message names the layer, the key and what was expected) and ``OSError`` (e.g.
    ``FileNotFoundError``, listing the built-in names) when the file cannot be opened. ``limits`` overrides entries
    of :data:`LIMITS` for trusted, unusually large models.
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
    """Every content error names the file first: ``model.npz: layers.0.weight: ...``."""
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
    from ..nn.sequential import Sequential

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
    in_features, window = _check_top(doc, limits)

    # 2. Every layer's hyper-parameters and the arrays they need (no allocation yet).
    walker = _Walker(limits)
    cfgs = [walker.layer(entry, f"layers.{i}", False) for i, entry in enumerate(doc["layers"])]

    # 3. Missing / extra arrays, then every array header (shape, dtype, size).
    present = set(members) - {MODEL_KEY}
    missing = [k for k in walker.expected if k not in present]
    if missing:
        k = missing[0]
        raise ModelFormatError(f"{k}: missing array (expected float32 of shape "
                               f"{walker.expected[k]}){'' if len(missing) == 1 else f'; also missing {missing[1:6]}'}")
    extra = sorted(present - set(walker.expected))
    if extra:
        raise ModelFormatError(f"{extra[0]}: unexpected array (no layer parameter has this name)"
                               f"{'' if len(extra) == 1 else f'; also {extra[1:6]}'}; expected "
                               f"only {sorted(walker.expected)[:12]}")
    headers = {}
    for key, shape in walker.expected.items():
        h = _read_npy_header(zf, members[key], key)
        if h.dtype.kind != "f" or h.dtype.itemsize != 4:
            raise ModelFormatError(f"{key}: expected dtype float32, got {h.dtype}")
        if h.shape != shape:
            raise ModelFormatError(f"{key}: expected shape {shape}, got {h.shape}")
        _check_member_size(h)
        headers[key] = h

    # 4. The stack as a whole: channels, features, window, receptive field (no data read).
    try:
        layer_objs = [_build_layer(cfg, f"layers.{i}") for i, cfg in enumerate(cfgs)]
        model = Sequential(layer_objs, in_features=in_features, window=window)
    except ModelFormatError:
        raise
    except ModelError as exc:
        m = re.match(r"layer (\d+)", str(exc))
        where = f"layers.{m.group(1)}" if m else MODEL_KEY
        raise ModelFormatError(f"{where}: inconsistent model: {exc}") from None
    _check_model(model, doc, limits)
    labels, metadata = check_annotations(doc.get("labels"), doc.get("metadata"), model.output_shape)

    # 5. The data: finite float32 weights, then assignment.
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
    for i, (layer, cfg) in enumerate(zip(model.layers, cfgs)):
        _assign(layer, cfg, f"layers.{i}", arrays)
    model.labels, model.metadata = labels, metadata
    return model
