"""The int8 part of a model file (format v2's optional ``quantization`` key, docs/format.md).

A quantized model is stored as its float model (the usual v2 nodes and float32 arrays) plus:

* ``quantization``: ``{"scheme": "int8", "calibration": {...}, "tensors": {node: [scale,
  zero_point], ...}}``: the scale and zero point of every int8 tensor, named after the float
  node whose value it holds (``input`` for the frames);
* per int8 conv / Linear / lone BatchNorm, named after its node: ``quant.<node>.weight``
  (int8, (out, in/groups, k_f, k_t)), ``quant.<node>.w_scale`` (float32, (out,), > 0),
  ``quant.<node>.bias`` (int32, (out,));
* optionally ``"single_rounding": [node, ...]``: the convs / Linears requantized with TFLite's
  single rounding (imported from LiteRT's FULLY_CONNECTED) rather than gemmlowp's two steps;
* optionally ``"float_rounding": [node, ...]``: the convs / Linears / GlobalAvgPools / Muls requantized
  in float32, ties to even, as onnxruntime and XNNPACK do (imported ONNX QDQ graphs;
  quant/scheme.py: requantize_float);
* optionally ``quant.<node>.table`` (int8, (256,), indexed by q + 128) for an int8 activation
  whose table came with the model (LiteRT's fixed-point HARD_SWISH) instead of being computed
  from the float function.

Everything is checked before the model is rebuilt: names, dtypes and shapes from the .npy
headers, finite positive scales, zero points in [-128, 127]; then the int8 model is rebuilt with
exactly these parameters (:func:`deepshift_edge.quant.quantize_with`), which refuses anything
that does not fit the float model.
"""
from __future__ import annotations

import math
from typing import Dict

import numpy as np

from ..errors import ModelError, ModelFormatError

KEY = "quantization"
PREFIX = "quant."
_OWN = ("input", "conv", "gmean", "add", "mul", "concat", "lut")  # kinds with their own QParams


def describe(qmodel) -> tuple:
    """(the ``quantization`` object, its arrays) of a QuantizedModel."""
    names = [n.name for n in qmodel.model.nodes]
    tensors, arrays = {}, {}
    for qn in qmodel.qnodes:
        if qn.kind in _OWN:
            tensors[names[qn.model_nodes[-1]]] = [float(qn.out.scale), int(qn.out.zero_point)]
        if qn.kind == "conv":
            key = f"{PREFIX}{names[qn.model_nodes[0]]}"
            arrays[f"{key}.weight"] = np.ascontiguousarray(qn.weight, np.int8)
            arrays[f"{key}.w_scale"] = np.ascontiguousarray(qn.w_scale, np.float32)
            arrays[f"{key}.bias"] = np.ascontiguousarray(qn.bias, np.int32)
        if qn.kind == "lut" and qn.table_given:
            arrays[f"{PREFIX}{names[qn.model_nodes[-1]]}.table"] = np.ascontiguousarray(qn.table, np.int8)
    cal = {k: v for k, v in (qmodel.calibration or {}).items() if isinstance(v, (int, float, str))
           and not isinstance(v, bool)}
    section = {"scheme": "int8", "calibration": cal, "tensors": tensors}
    single = [names[qn.model_nodes[0]] for qn in qmodel.qnodes if qn.kind == "conv" and qn.rounding == "single"]
    if single:  # absent otherwise: files of models without it stay as they were
        section["single_rounding"] = single
    in_float = [names[qn.model_nodes[0]] for qn in qmodel.qnodes if qn.rounding == "float"]
    if in_float:
        section["float_rounding"] = in_float
    return section, arrays


def _expected_convs(model) -> Dict[str, tuple]:
    """Int8 conv arrays a model can carry: node name -> weight shape (out, in/g, kf, kt)."""
    from ..nn import layers as L

    out = {}
    for node in model.nodes[1:]:
        layer = node.layer
        if isinstance(layer, L._Conv):
            out[node.name] = tuple(layer._weight4().shape)
        elif isinstance(layer, L.Linear):
            out[node.name] = (layer.out_features, layer.in_features, 1, 1)
        elif isinstance(layer, L._BatchNorm):
            out[node.name] = (layer.num_features, 1, 1, 1)
    return out


def load(model, section, zf, members, read_header, read_data, check_size):
    """Validate the ``quantization`` object and its arrays, then rebuild the int8 model."""
    from ..quant import QParams
    from ..quant.quantize import quantize_with

    where = KEY
    if not isinstance(section, dict):
        raise ModelFormatError(f"{where}: expected an object, got {type(section).__name__}")
    extra = set(section) - {"scheme", "calibration", "tensors", "single_rounding", "float_rounding"}
    if extra:
        raise ModelFormatError(f"{where}: unknown keys {sorted(extra)} (expected scheme, calibration, tensors, "
                               f"single_rounding, float_rounding)")
    if section.get("scheme") != "int8":
        raise ModelFormatError(f"{where}.scheme: expected 'int8', got {section.get('scheme')!r}")
    cal = section.get("calibration", {})
    if not isinstance(cal, dict) or len(cal) > 16 or not all(
            isinstance(k, str) and len(k) <= 64 and isinstance(v, (int, float, str)) and not isinstance(v, bool)
            and (not isinstance(v, str) or len(v) <= 256) for k, v in cal.items()):
        raise ModelFormatError(f"{where}.calibration: expected an object of at most 16 short scalar entries")
    names = {n.name for n in model.nodes}
    tensors_in = section.get("tensors")
    if not isinstance(tensors_in, dict) or not tensors_in:
        raise ModelFormatError(f"{where}.tensors: expected an object of node names to [scale, zero_point]")
    tensors = {}
    for name, v in tensors_in.items():
        key = f"{where}.tensors.{name[:60]}"
        if name not in names:
            raise ModelFormatError(f"{key}: no node of the model has this name")
        if not (isinstance(v, list) and len(v) == 2):
            raise ModelFormatError(f"{key}: expected [scale, zero_point], got {str(v)[:60]}")
        scale, zp = v
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) \
                or not 1e-30 < scale < 1e30:
            raise ModelFormatError(f"{key}: scale must be a finite number > 0, got {str(scale)[:30]}")
        if isinstance(zp, bool) or not isinstance(zp, int) or not -128 <= zp <= 127:
            raise ModelFormatError(f"{key}: zero_point must be an integer in [-128, 127], got {str(zp)[:30]}")
        tensors[name] = QParams(float(np.float32(scale)), int(zp))
    # the arrays: names, dtypes, shapes from the headers, before any data
    expected = _expected_convs(model)
    wanted, tables = {}, {}
    for key in members:
        parts = key[len(PREFIX):].rsplit(".", 1)
        if len(parts) == 2 and parts[1] == "table" and parts[0] in names:
            h = read_header(zf, members[key], key)
            if h.dtype.kind != "i" or h.dtype.itemsize != 1 or h.shape != (256,):
                raise ModelFormatError(f"{key}: expected int8 of shape (256,), got {h.dtype} of shape {h.shape}")
            check_size(h)
            tables[parts[0]] = read_data(zf, members[key], h).astype(np.int8)
            continue
        if len(parts) != 2 or parts[1] not in ("weight", "w_scale", "bias") or parts[0] not in expected:
            raise ModelFormatError(f"{key}: unexpected array (int8 arrays are quant.<conv node>.weight, "
                                   f".w_scale, .bias and quant.<activation node>.table)")
        shape = expected[parts[0]]
        want = {"weight": ("i", 1, shape), "w_scale": ("f", 4, shape[:1]), "bias": ("i", 4, shape[:1])}[parts[1]]
        h = read_header(zf, members[key], key)
        if h.dtype.kind != want[0] or h.dtype.itemsize != want[1] or h.shape != want[2]:
            raise ModelFormatError(f"{key}: expected {'int8' if want[1] == 1 else ('int32' if want[0] == 'i' else 'float32')} "
                                   f"of shape {want[2]}, got {h.dtype} of shape {h.shape}")
        check_size(h)
        wanted.setdefault(parts[0], {})[parts[1]] = (members[key], h)
    convs = {}
    for name, parts in wanted.items():
        if set(parts) != {"weight", "w_scale", "bias"}:
            raise ModelFormatError(f"{PREFIX}{name}: needs weight, w_scale and bias, got {sorted(parts)}")
        w = read_data(zf, *parts["weight"]).astype(np.int8)
        s = read_data(zf, *parts["w_scale"]).astype(np.float32)
        b = read_data(zf, *parts["bias"]).astype(np.int32)
        if not (np.isfinite(s).all() and (s > 0).all()):
            raise ModelFormatError(f"{PREFIX}{name}.w_scale: scales must be finite and > 0")
        if (w == -128).any():
            raise ModelFormatError(f"{PREFIX}{name}.weight: symmetric int8 weights lie in [-127, 127]")
        convs[name] = (w, s, b)
    from ..nn import layers as L
    from ..nn import merge as M

    rounded = {}
    means_and_muls = {n.name for n in model.nodes if isinstance(n.layer, (L.GlobalAvgPool, M.Mul))}
    for key, allowed in (("single_rounding", set(expected)), ("float_rounding", set(expected) | means_and_muls)):
        nodes = section.get(key, [])
        if not isinstance(nodes, list) or len(nodes) > len(allowed) or not all(
                isinstance(n, str) and n in allowed for n in nodes):
            raise ModelFormatError(f"{where}.{key}: expected a list of conv/Linear"
                                   f"{'/GlobalAvgPool/Mul' if key == 'float_rounding' else ''} node names, got "
                                   f"{str(nodes)[:80]}")
        rounded[key] = nodes
    both = set(rounded["single_rounding"]) & set(rounded["float_rounding"])
    if both:
        raise ModelFormatError(f"{where}: nodes {sorted(both)[:4]} are in both single_rounding and float_rounding")
    try:
        return quantize_with(model, tensors, convs, calibration=cal, single_rounding=rounded["single_rounding"],
                             float_rounding=rounded["float_rounding"], tables=tables)
    except ModelError as exc:
        raise ModelFormatError(f"{where}: {exc}") from None
