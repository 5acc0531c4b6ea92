"""``quantize(model, calibration)``: a float graph model to an int8 :class:`QuantizedModel`.

1. Fuse: BatchNorm into the conv/Linear before it (float weights, before quantization), then
   ReLU / ReLU6 into their producer as a clamp of its int8 output. A BatchNorm on its own
   becomes a depthwise 1x1 conv.
2. Calibrate: run the float reference on windows of the calibration frames and keep each
   int8 tensor's range (min/max, or the `percentile` of |values| on each side).
3. Quantize: per-output-channel symmetric weights, int32 biases at s_in*s_w, fixed-point
   multipliers for every requantization, 256-entry tables for the other activations.

Operators int8 does not express (Softmax) and all that follows them form a float tail.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..errors import ModelError
from ..nn import layers as L
from ..nn import merge as M
from ..nn.graph import Model
from . import scheme as Q
from .qmodel import (ADD, CONCAT, CONV, GMAX, GMEAN, HEAD_FLAT, HEAD_LAST, LUT, MOVE, MUL, POOL,
                     QNode, QuantizedModel)

_MOVES = (M.Pad, M.Crop, M.ChannelSlice, M.FrameFlatten, L.Identity)  # Dropout is an Identity


def _windows(model: Model, calibration, max_windows: int) -> List[np.ndarray]:
    """Calibration windows: from one (N, *frame) array or a list of recordings."""
    recs = calibration if isinstance(calibration, (list, tuple)) else [calibration]
    w = model.window
    out = []
    for r in recs:
        r = np.asarray(r, dtype=np.float32)
        if r.ndim != len(model.frame_shape) + 1 or r.shape[1:] != tuple(model.frame_shape):
            raise ModelError(f"calibration frames must have shape (N, {', '.join(map(str, model.frame_shape))}), "
                             f"got {r.shape}")
        if not np.isfinite(r).all():
            raise ModelError("calibration frames hold NaN or Inf")
        for i in range(0, len(r) - w + 1):
            out.append(r[i:i + w])
    if not out:
        raise ModelError(f"calibration needs at least one window of {w} frames")
    if len(out) > max_windows:
        pick = np.linspace(0, len(out) - 1, max_windows).round().astype(int)
        out = [out[i] for i in pick]
    return out


def _node_values(model: Model, window: np.ndarray) -> list:
    values = [np.moveaxis(window.astype(np.float64), 0, -1)]
    for node in model.nodes[1:]:
        values.append(node.layer.forward_many([values[j] for j in node.inputs],
                                              [model.specs[j] for j in node.inputs]))
    return values


class _Ranges:
    """Per float node: min/max (or samples for a percentile) over the calibration windows."""

    def __init__(self, n: int, percentile: Optional[float]):
        self.percentile = percentile
        self.lo = [math.inf] * n
        self.hi = [-math.inf] * n
        self.samples: Dict[int, list] = {i: [] for i in range(n)}

    def add(self, values):
        for i, v in enumerate(values):
            v = np.asarray(v)
            self.lo[i] = min(self.lo[i], float(v.min()))
            self.hi[i] = max(self.hi[i], float(v.max()))
            if self.percentile is not None:
                flat = v.reshape(-1)
                self.samples[i].append(flat[:: max(1, flat.size // 512)])

    def range_of(self, i: int) -> tuple:
        if self.percentile is None:
            return self.lo[i], self.hi[i]
        s = np.concatenate(self.samples[i])
        return float(np.percentile(s, 100 - self.percentile)), float(np.percentile(s, self.percentile))


def quantize(model: Model, calibration, *, method: str = "minmax", percentile: float = 99.99,
             max_windows: int = 512) -> QuantizedModel:
    """Quantize `model` to int8 with ranges calibrated on `calibration`: frames (N, *frame_shape)
    or a list of recordings. ``method='percentile'`` clips each range at `percentile`."""
    if getattr(model, "semantics", "window") != "window":
        raise ModelError("int8 streaming covers window models (semantics='window')")
    if method not in ("minmax", "percentile"):
        raise ModelError(f"method must be 'minmax' or 'percentile', got {method!r}")
    ranges = _Ranges(len(model.nodes), percentile if method == "percentile" else None)
    windows = _windows(model, calibration, max_windows)
    for win in windows:
        ranges.add(_node_values(model, win))
    qm = _Quantizer(model, ranges).run(len(windows), method)
    set_single_rounding(qm, linear_heads(qm))
    return qm


def linear_heads(qm: QuantizedModel) -> list:
    """Node names of the int8 Linears after the head. By convention they round once, as
    LiteRT's FULLY_CONNECTED does (its convs round twice, as every other int8 conv here), so a
    model's .tflite runs to the same integers; quantize() and the QDQ importer apply it."""
    model = qm.model
    return [model.nodes[qn.model_nodes[0]].name for qn in qm.qnodes
            if qn.kind == CONV and isinstance(qn.layer, L.Linear)
            and model.specs[model.nodes[qn.model_nodes[0]].inputs[0]].is_vector]


def quantize_with(model: Model, tensors: Dict[str, Q.QParams], convs: Dict[str, tuple],
                  calibration: Optional[dict] = None, single_rounding=(), tables=None,
                  float_rounding=()) -> QuantizedModel:
    """Rebuild a QuantizedModel from stored parameters (a model file, an imported QDQ graph):
    `tensors` maps float node names to the QParams of the int8 tensor they end; `convs` maps a
    conv's node name to (int8 weights (out, in/g, kf, kt), float32 weight scales, int32 bias);
    `single_rounding`: conv node names requantized with TFLite's single rounding;
    `float_rounding`: those requantized in float as onnxruntime and XNNPACK do (:func:`set_rounding`);
    `tables`: activation node name -> its own int8[256] lookup table (:func:`set_tables`)."""
    q = _Quantizer(model, None, fixed=(tensors, convs))
    qm = q.run(0, "stored") if calibration is None else _with_calibration(q.run(0, "stored"), calibration)
    set_single_rounding(qm, single_rounding)
    set_rounding(qm, float_rounding, "float")
    set_tables(qm, tables or {})
    return qm


def set_tables(qm: QuantizedModel, tables) -> None:
    """Give the int8 activations of these float nodes their own 256-entry tables (int8, indexed
    by q + 128) in place of the float function's: an imported file's integer op (LiteRT's
    16-bit fixed-point HARD_SWISH) as it computes it. Model files keep such tables."""
    names = [n.name for n in qm.model.nodes]
    found = set()
    for qn in qm.qnodes:
        name = names[qn.model_nodes[-1]]
        if qn.kind == "lut" and name in tables:
            t = np.asarray(tables[name])
            if t.shape != (256,) or t.dtype != np.int8:
                raise ModelError(f"table of {name!r}: expected int8 of shape (256,), got {t.dtype} {t.shape}")
            qn.table, qn.table_given = t.copy(), True
            found.add(name)
    if set(tables) - found:
        raise ModelError(f"tables: no int8 activation for nodes {sorted(set(tables) - found)}")


def set_single_rounding(qm: QuantizedModel, node_names) -> None:
    """Requantize the int8 convs / Linears of these float nodes with TFLite's single rounding
    (scheme.multiply_by_quantized_multiplier_single), as LiteRT's FULLY_CONNECTED does."""
    set_rounding(qm, node_names, "single")


def set_rounding(qm: QuantizedModel, node_names, rounding: str) -> None:
    """Requantize the int8 convs / Linears of these float nodes with `rounding`: "double"
    (gemmlowp, TFLite's reference convs), "single" (TFLite's FULLY_CONNECTED) or "float"
    (scheme.requantize_float: onnxruntime's QLinearConv / QGemm / QLinearGlobalAveragePool /
    QLinearMul and XNNPACK's int8 kernels). "float" also applies to global means and Mul."""
    if rounding not in Q.ROUNDINGS:
        raise ModelError(f"rounding must be one of {Q.ROUNDINGS}, got {rounding!r}")
    wanted = set(node_names)
    model = qm.model
    names = [n.name for n in model.nodes]
    found = set()
    for qn in qm.qnodes:
        name = names[qn.model_nodes[0]] if qn.model_nodes else None
        if name not in wanted or not (qn.kind == CONV or (qn.kind in (GMEAN, MUL) and rounding == "float")):
            continue
        qn.rounding = rounding
        s_in = qm.qnodes[qn.inputs[0]].out.scale
        if rounding != "float":
            qn.fscale = None
        elif qn.kind == CONV:
            qn.fscale = Q.float_scales(s_in, qn.w_scale, qn.out.scale)
        elif qn.kind == MUL:  # QLinearMul: the product of the two inputs' scales
            qn.fscale = Q.float_scales(s_in, [qm.qnodes[qn.inputs[1]].out.scale], qn.out.scale)
        else:
            src = model.specs[model.nodes[qn.model_nodes[0]].inputs[0]]
            qn.fscale = Q.mean_float_scale(s_in, qn.out.scale, src.length * (src.features or 1))
        found.add(name)
    if wanted - found:
        raise ModelError(f"{rounding} rounding: no int8 conv or Linear for nodes {sorted(wanted - found)}")


def _with_calibration(qm: QuantizedModel, calibration: dict) -> QuantizedModel:
    qm.calibration = dict(calibration)
    return qm


class _Quantizer:
    def __init__(self, model: Model, ranges: Optional[_Ranges], fixed=None):
        self.model = model
        self.ranges = ranges
        self.fixed = fixed  # (tensors by node name, conv arrays by node name), or None
        self.consumers = model.consumers()
        self.q_of: Dict[int, int] = {}  # float node -> the QNode holding its value
        self.qnodes: List[QNode] = []

    def qparams(self, i: int) -> Q.QParams:
        if self.fixed is not None:
            name = self.model.nodes[i].name
            if name not in self.fixed[0]:
                raise ModelError(f"quantization: no scale and zero point for node {name!r}")
            return self.fixed[0][name]
        return Q.choose_qparams(*self.ranges.range_of(i))

    def add(self, qn: QNode, float_nodes: Sequence[int]) -> int:
        qn.model_nodes = list(float_nodes)
        self.qnodes.append(qn)
        for i in float_nodes:
            self.q_of[i] = len(self.qnodes) - 1
        return len(self.qnodes) - 1

    def sole_consumer(self, i: int, cls) -> Optional[int]:
        cons = self.consumers[i]
        if len(cons) == 1 and isinstance(self.model.nodes[cons[0]].layer, cls):
            return cons[0]
        return None

    def run(self, n_windows: int, method: str) -> QuantizedModel:
        m = self.model
        self.add(QNode("input", "input", [], None, out=self.qparams(0)), [0])
        tail: List[int] = []
        done = set()
        for i, node in enumerate(m.nodes[1:], start=1):
            if i in done:
                continue
            if tail or not self.expressible(node.layer):
                tail.append(i)
                continue
            done |= set(self.node(i))
        for i in tail:
            if len(m.nodes[i].inputs) != 1 or (m.nodes[i].inputs[0] not in tail and
                                               m.nodes[i].inputs[0] != self.qnodes[-1].model_nodes[-1]):
                raise ModelError(f"node {m.nodes[i].name} ({type(m.nodes[i].layer).__name__}) has no int8 "
                                 f"operator and is not in a float tail at the end of the model")
        if not m.specs[self.qnodes[-1].model_nodes[-1]].is_vector:
            raise ModelError("int8 streaming needs the model's head (the time reduction) in the int8 part")
        return QuantizedModel(model=m, qnodes=self.qnodes, tail=tail,
                              calibration={"windows": n_windows, "method": method,
                                           "percentile": None if self.ranges is None
                                           else self.ranges.percentile})

    @staticmethod
    def expressible(layer) -> bool:
        return not isinstance(layer, L.Softmax)

    # ------------------------------------------------------------------ one node (and what fuses)
    def node(self, i: int) -> list:
        m = self.model
        node = m.nodes[i]
        layer = node.layer
        ins = [self.q_of[j] for j in node.inputs]
        name = node.name
        if isinstance(layer, (L._Conv, L.Linear, L._BatchNorm)):
            return self.conv(i, ins[0])
        if isinstance(layer, L._Pool):
            return [self.add(QNode(name, POOL, ins, layer, out=self.qnodes[ins[0]].out), [i])]
        if isinstance(layer, L.GlobalMaxPool):
            return [self.add(QNode(name, GMAX, ins, layer, out=self.qnodes[ins[0]].out), [i])]
        if isinstance(layer, L.GlobalAvgPool):
            src = m.specs[node.inputs[0]]
            n = src.length * (src.features or 1)
            out = self.qparams(i)
            m0, sh = Q.mean_multiplier(self.qnodes[ins[0]].out.scale / out.scale, n)  # as TFLite's MEAN
            return [self.add(QNode(name, GMEAN, ins, layer, out=out, m0=np.array([m0]),
                                   shift=np.array([sh])), [i])]
        if isinstance(layer, L.LastFrame):
            return [self.add(QNode(name, HEAD_LAST, ins, layer, out=self.qnodes[ins[0]].out), [i])]
        if isinstance(layer, L.Flatten) and not m.specs[node.inputs[0]].is_vector:
            return [self.add(QNode(name, HEAD_FLAT, ins, layer, out=self.qnodes[ins[0]].out), [i])]
        if isinstance(layer, _MOVES + (L.Flatten,)) and not isinstance(layer, L.Softmax) \
                and (not isinstance(layer, L.Identity) or type(layer) in (L.Identity, L.Dropout)):
            return [self.add(QNode(name, MOVE, ins, layer, out=self.qnodes[ins[0]].out), [i])]
        if isinstance(layer, M.Add):
            return self.add_node(i, ins)
        if isinstance(layer, M.Mul):
            if len(ins) != 2:
                raise ModelError(f"node {name}: int8 Mul takes two inputs, got {len(ins)}")
            out = self.qparams(i)
            a, b = (self.qnodes[j].out for j in ins)
            m0, sh = Q.quantize_multiplier(a.scale * b.scale / out.scale)
            return [self.add(QNode(name, MUL, ins, layer, out=out, m0=np.array([m0]),
                                   shift=np.array([sh])), [i])]
        if isinstance(layer, M.Concat):
            out = self.qparams(i)
            mults = [Q.quantize_multiplier(self.qnodes[j].out.scale / out.scale) for j in ins]
            return [self.add(QNode(name, CONCAT, ins, layer, out=out,
                                   m0=np.array([a for a, _ in mults]),
                                   shift=np.array([b for _, b in mults])), [i])]
        # any other per-frame activation: an exact 256-entry table
        return [self.add(self.lut(i, ins[0], layer), [i])]

    def lut(self, i: int, src: int, layer) -> QNode:
        inp = self.qnodes[src].out
        out = self.qparams(i)
        if isinstance(layer, L.PReLU) and layer.num_parameters != 1:
            raise ModelError(f"node {self.model.nodes[i].name}: a per-channel PReLU has no single "
                             f"int8 table; use num_parameters=1")
        q = np.arange(Q.QMIN, Q.QMAX + 1)
        real = inp.scale * (q - inp.zero_point)
        y = layer.forward(real.astype(np.float64)[None, :] if isinstance(layer, L.PReLU) else real)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        table = out.quantize(y.astype(np.float32))
        return QNode(self.model.nodes[i].name, LUT, [src], layer, out=out, table=table)

    def add_node(self, i: int, ins: List[int]) -> list:
        relu = self.sole_consumer(i, L.ReLU)
        lo, hi = Q.QMIN, Q.QMAX
        nodes = [i]
        fused = relu is not None and not isinstance(self.model.nodes[relu].layer, L.ReLU6)
        # (a fused ReLU's parameters only: a model file keeps those of the op's last node)
        out = self.qparams(relu if fused else i)
        if fused:
            lo = max(lo, out.zero_point)
            nodes.append(relu)
        scales = [self.qnodes[j].out.scale for j in ins]
        twice_max = 2 * max(scales)
        mults = [Q.quantize_multiplier(s / twice_max) for s in scales]
        mults.append(Q.quantize_multiplier(twice_max / ((1 << 20) * out.scale)))
        qn = QNode(self.model.nodes[i].name, ADD, ins, self.model.nodes[i].layer, out=out,
                   m0=np.array([a for a, _ in mults]), shift=np.array([b for _, b in mults]), lo=lo, hi=hi)
        self.add(qn, nodes)
        return nodes

    def conv(self, i: int, src: int) -> list:
        m = self.model
        layer = m.nodes[i].layer
        nodes = [i]
        w4, b = _weight4(layer, m.specs[m.nodes[i].inputs[0]])
        if not isinstance(layer, L._BatchNorm):
            bn = self.sole_consumer(i, L._BatchNorm)
            if bn is not None:
                scale, shift = m.nodes[bn].layer.scale_shift()
                w4 = w4 * scale[:, None, None, None]
                b = b * scale + shift
                nodes.append(bn)
        last = nodes[-1]
        lo, hi = Q.QMIN, Q.QMAX
        act = self.sole_consumer(last, (L.ReLU, L.ReLU6))
        if act is not None:
            nodes.append(act)
        out = self.qparams(nodes[-1])
        if act is not None:
            lo = max(lo, out.zero_point)
            if isinstance(m.nodes[act].layer, L.ReLU6):
                hi = min(hi, out.zero_point + int(math.floor(6.0 / out.scale + 0.5)))
        s_in = self.qnodes[src].out.scale
        stored = None if self.fixed is None else self.fixed[1].get(m.nodes[i].name)
        if self.fixed is not None and stored is None:
            raise ModelError(f"no int8 weights for node {m.nodes[i].name!r}")
        if stored is not None:  # int8 weights as stored (a file, an imported quantized graph)
            wq, s_w, bias = (np.asarray(a) for a in stored)
            if wq.shape != w4.shape:
                raise ModelError(f"quantization.{m.nodes[i].name}: int8 weights of shape {wq.shape}, "
                                 f"the layer has {w4.shape}")
            bias = bias.astype(np.float64)
        else:
            s_w = Q.weight_scales(w4.astype(np.float32))
            wq = Q.quantize_weights(w4, s_w)
            bias = np.round(b / (s_in * s_w.astype(np.float64)))
        if np.abs(bias).max(initial=0) > Q.INT32_MAX:
            raise ModelError(f"node {m.nodes[i].name}: a bias overflows int32 at scale s_in*s_w")
        # The kernels accumulate in int32 (VNNI's inputs carry +128): refuse a layer that could
        # overflow rather than let it wrap.
        bound = np.abs(wq.astype(np.int64)).reshape(wq.shape[0], -1).sum(axis=1) * (255 + 128) \
            + np.abs(bias)
        if bound.max(initial=0) >= Q.INT32_MAX:
            raise ModelError(f"node {m.nodes[i].name}: {wq[0].size} inputs per output could overflow "
                             f"int8 streaming's 32-bit accumulators")
        mults = [Q.quantize_multiplier(s_in * float(sw) / out.scale) for sw in s_w]
        qn = QNode(m.nodes[i].name, CONV, [src], layer, out=out, weight=wq, w_scale=s_w,
                   bias=bias.astype(np.int32), m0=np.array([a for a, _ in mults]),
                   shift=np.array([b_ for _, b_ in mults]), lo=lo, hi=hi,
                   float_weight=w4.astype(np.float32), float_bias=b.astype(np.float32))
        self.add(qn, nodes)
        return nodes


def _weight4(layer, in_spec) -> tuple:
    """(weights (out, in/groups, kf, kt) float64, bias float64) of a conv-like layer."""
    if isinstance(layer, L._BatchNorm):
        scale, shift = layer.scale_shift()
        return scale[:, None, None, None].astype(np.float64), shift
    if isinstance(layer, L.Linear):
        w = layer.weight.astype(np.float64)[:, :, None, None]
        b = layer.bias.astype(np.float64) if layer.bias is not None else np.zeros(w.shape[0])
        return w, b
    w = layer._weight4().astype(np.float64)
    b = layer.bias.astype(np.float64) if layer.bias is not None else np.zeros(w.shape[0])
    return w, b


__all__ = ["quantize", "quantize_with"]
