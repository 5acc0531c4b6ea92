"""Compile a :class:`QuantizedModel` into an int8 streaming plan.

The same compiler as float (engine/plan.py: interior columns shared by every window, edge
strips recomputed per window, window ops for the heads, aliases for Pad/Crop), with the ops
of int8 nodes swapped for their int8 kinds and parameters (quantization in docs/int8.md).
Rings of int8 nodes hold int8 (4x smaller than float32) and start at their zero point, the
value zero padding has. The input is quantized as it is written; a dequantize op ends the
int8 part, and any float tail (Softmax) runs after it in float.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from ..engine import plan as P
from ..errors import ModelError
from ..nn import layers as L
from .qmodel import ADD, CONCAT, CONV, LUT, MOVE, MUL, POOL, QuantizedModel

def _use_float_scales(op: P.Op, qn) -> None:
    """An op requantized in float (qround 2): the kernels read its float32 scales through qm0."""
    op.qround = 2
    op.qm0 = np.ascontiguousarray(qn.fscale, np.float32).view(np.int32)


class _QuantBuilder(P._Builder):
    def __init__(self, qmodel: QuantizedModel, mode: str, block: int, io: str = "float32",
                 tail: bool = True):
        super().__init__(qmodel.model, mode, block)
        self.qm = qmodel
        # io="int8": frames arrive as int8 and the output leaves as int8. The kernels stay
        # the float-I/O ones with unit parameters: the input "quantizer" at scale 1, zero
        # point 0 stores an integer-valued float as itself, and the closing dequantize at
        # scale 1, zero point 0 gives q itself as a float; both exact, no rounding involved.
        self.int8_io = io == "int8"
        self.drop_tail = not tail and bool(qmodel.tail)  # the int8 logits are the output
        self.q_of: Dict[int, int] = {}
        for qi, qn in enumerate(qmodel.qnodes):
            for i in qn.model_nodes:
                self.q_of[i] = qi
        self.tail = set(qmodel.tail)
        self.deq_of: Dict[int, int] = {}  # int8 model node -> float node of its dequantized value

    # ------------------------------------------------------------------ the walk
    def run(self) -> P.Plan:
        self.plan.quantized = True
        return super().run()

    def output_node(self) -> int:
        last = len(self.model.nodes) - 1
        if last not in self.tail:  # no float tail: the output is the int8 result, dequantized
            return self.dequantized(last)
        if self.drop_tail:
            return self.dequantized(self.tail_input())
        return super().output_node()

    def tail_input(self) -> int:
        """The int8 model node the float tail reads."""
        first = min(self.tail)
        return self.model.nodes[first].inputs[0]

    def copy_vector(self, i):
        if not (self.drop_tail and i in self.tail):
            super().copy_vector(i)

    def node(self, i: int):
        if self.drop_tail and i in self.tail:
            return  # not built: the stream's output is the int8 part's
        if i in self.tail:
            for j in self.model.nodes[i].inputs:
                if j not in self.tail:
                    self.dequantized(j)
        return super().node(i)

    def dequantized(self, j: int) -> int:
        """The float vector node holding int8 node j's value, dequantized (one DEQ op)."""
        if j in self.deq_of:
            return self.deq_of[j]
        qn = self.qm.qnodes[self.q_of[j]]
        spec = self.specs[j]
        node = self.interior[self.base(j)]
        dst = self.new_node(spec.channels, spec.features or 1, label=f"{self.model.nodes[j].name} float")
        op = P.Op(P.DEQ, dst, self.emit[0], self.emit[1], inputs=[(node, 0, spec.channels)],
                  cin=spec.channels, cout=spec.channels, fin=spec.features or 1,
                  fout=spec.features or 1,
                  qzp_in=np.array([0 if self.int8_io else qn.out.zero_point], np.int32),
                  qscale=1.0 if self.int8_io else qn.out.scale, label=f"node {self.model.nodes[j].name} dequantize")
        P._Builder.add(self, op, j, "vector", final=False)
        self.deq_of[j] = dst
        return dst

    def vector_input(self, j) -> tuple:
        if j in self.deq_of:  # a float tail reading the int8 part's output
            return (self.deq_of[j], 0, self.specs[j].channels)
        return super().vector_input(j)

    # ------------------------------------------------------------------ int8 ops
    def try_fuse(self, i, layer, src) -> bool:
        if i in self.tail:
            return super().try_fuse(i, layer, src)
        if self.q_of.get(i) != self.q_of.get(src) or src == 0:
            return False
        # BatchNorm and ReLU/ReLU6 folded into their producer's int8 op at quantization
        self.interior[i], self.strip[i] = self.interior[src], self.strip[src]
        self.strip_rows[i] = self.strip_rows.get(src, {})
        self.ops_of[i] = self.ops_of.get(src, [])
        return True

    def qnode(self, i: int):
        return self.qm.qnodes[self.q_of[i]]

    def qin(self, i: int, k: int = 0):
        return self.qm.qnodes[self.q_of[self.model.nodes[i].inputs[k]]].out

    def template(self, i, layer, ins, where) -> P.Op:
        if i in self.tail:
            return super().template(i, layer, ins, where)
        qn = self.qnode(i)
        zin = np.array([self.qin(i, k).zero_point for k in range(len(ins))], np.int32)
        if qn.kind == CONV:
            op = self.conv_template(i, qn, ins)
        else:
            op = super().template(i, layer, ins, where)
            op.act, op.act_w, op.scale, op.shift, op.weight = P.ACT_NONE, None, None, None, None
            if qn.kind == POOL:
                op.kind = P.QPOOL_MAX if op.kind == P.POOL_MAX else P.QPOOL_AVG
            elif qn.kind == LUT:
                op.kind, op.qtable = P.QLUT, np.asarray(qn.table, np.int8)
            elif qn.kind == ADD:
                op.kind, op.qlo, op.qhi = P.QADD, qn.lo, qn.hi
            elif qn.kind == MUL:
                op.kind = P.QMUL
            elif qn.kind == CONCAT:
                op.kind = P.QCONCAT
            elif qn.kind != MOVE:
                raise ModelError(f"{where}: no int8 kernel for {qn.kind}")  # pragma: no cover
            if qn.m0 is not None:
                op.qm0, op.qshift = np.asarray(qn.m0, np.int32), np.asarray(qn.shift, np.int32)
            if qn.rounding == "float":  # a Mul
                _use_float_scales(op, qn)
        op.qzp_in, op.qzp_out = zin, qn.out.zero_point
        return op

    def conv_template(self, i, qn, ins) -> P.Op:
        """An int8 conv (a Linear, or a BatchNorm as a depthwise 1x1) from its QNode."""
        layer = qn.layer
        in_spec = self.specs[ins[0]]
        c_in, f_in = in_spec.channels, in_spec.features or 1
        f_out = self.specs[i].features or 1
        w4 = np.asarray(qn.weight, np.int8)
        if isinstance(layer, L._Conv):
            geo = dict(ntaps=layer.k_t, groups=layer.groups, kf=layer.k_f, sf=layer.s_f,
                       pf=layer.pad_f[0], df=layer.d_f)
        else:  # Linear, BatchNorm: one tap
            geo = dict(ntaps=1, groups=w4.shape[0] if isinstance(layer, L._BatchNorm) else 1,
                       kf=1, sf=1, pf=0, df=1)
        op = P.Op(P.QCONV, -1, 1, 0, cin=c_in, cout=w4.shape[0], fin=f_in, fout=f_out, **geo)
        op.qweight = w4
        op.qbias = np.asarray(qn.bias, np.int32)
        op.qm0, op.qshift = np.asarray(qn.m0, np.int32), np.asarray(qn.shift, np.int32)
        op.qlo, op.qhi = qn.lo, qn.hi
        # fewer than 4 input channels (a spectrogram's first conv): most of each tap's quad
        # would be zero padding; one merged chunk of all taps' channels wastes at most 3 bytes
        op.qmerged = bool(op.groups == 1 and op.cout > 1 and c_in < 4 and op.ntaps * op.kf > 1)
        op.qround = 1 if qn.rounding == "single" else 0
        if qn.rounding == "float":
            _use_float_scales(op, qn)
        # per (output, chunk = time tap x feature tap) sums of the weights: the zero-point term
        k_t, k_f = w4.shape[3], w4.shape[2]
        op.qwsum = w4.astype(np.int32).sum(axis=1).transpose(0, 2, 1).reshape(w4.shape[0], k_t * k_f).copy()
        op.macs = k_t * k_f * (c_in // op.groups) * op.cout * f_out
        return op

    def add(self, op: P.Op, model_node: int, part: str, final: bool = True) -> P.Op:
        """Place op; int8 nodes get int8 kinds and int8 (or int32 sum) rows."""
        if model_node not in self.tail and model_node in self.q_of and op.kind != P.DEQ:
            qn = self.qnode(model_node)
            zin = self.qm.qnodes[qn.inputs[0]].out.zero_point if qn.inputs else 0
            convert = {P.GMAX: P.QGMAX, P.GMEAN: P.QGMEAN, P.RMEAN: P.QRSUM, P.GAPMIX: P.QGAPMIX}
            if op.kind in convert:
                op.kind = convert[op.kind]
                op.qzp_in = np.array([zin], np.int32)
                op.qzp_out = qn.out.zero_point
                if qn.m0 is not None:
                    op.qm0, op.qshift = np.asarray(qn.m0, np.int32), np.asarray(qn.shift, np.int32)
                if qn.rounding == "float":  # a global mean
                    _use_float_scales(op, qn)
            node = self.plan.nodes[op.dst]
            if op.kind == P.QRSUM:
                node.dtype, node.fill = "int32", 0
            elif op.kind >= P.QCONV or op.kind in (P.COPY, P.GATHER, P.SLICE, P.CONCAT):
                node.dtype, node.fill = "int8", qn.out.zero_point
        return super().add(op, model_node, part, final)

    def size_rings(self):
        super().size_rings()
        self.plan.nodes[0].dtype = "int8"
        self.plan.nodes[0].fill = self.qm.qnodes[0].out.zero_point
        self.plan.in_qparams = (1.0, 0) if self.int8_io else \
            (self.qm.qnodes[0].out.scale, self.qm.qnodes[0].out.zero_point)
        self.plan.zero_columns(self)


def build_quantized_plan(qmodel: QuantizedModel, mode: str = "dense", block: int = 64,
                         io: str = "float32", tail: bool = True) -> P.Plan:
    """The int8 streaming plan of ``qmodel`` (window semantics). ``io="int8"``: int8 frames
    in (the input's own scale and zero point) and the last int8 node's values out.
    ``tail=False``: the float tail (Softmax) is left out; the output is the int8 part's."""
    if mode not in ("dense", "decimated"):
        raise ModelError(f"mode must be 'dense' or 'decimated', got {mode!r}")
    if io not in ("float32", "int8"):
        raise ModelError(f"io must be 'float32' or 'int8', got {io!r}")
    if qmodel.tail:
        names = ", ".join(f"{qmodel.model.nodes[i].name} ({type(qmodel.model.nodes[i].layer).__name__})"
                          for i in qmodel.tail)
        if io == "int8" and tail:
            raise ModelError(f"io='int8' returns int8 values, and this model ends in a float tail "
                             f"({names}): pass tail=False for the int8 values it reads (for a "
                             f"Softmax: the logits, whose argmax is the class), or use io='float32'")
        first = qmodel.model.nodes[min(qmodel.tail)]
        if not tail and tuple(qmodel.model.specs[first.inputs[0]].shape) != tuple(qmodel.output_shape):
            raise ModelError(f"tail=False: the float tail ({names}) changes the output's shape, so "
                             f"its input cannot stand in for the output")
    return _QuantBuilder(qmodel, mode, int(block), io, bool(tail)).run()


__all__ = ["build_quantized_plan", "Q", "Optional"]
