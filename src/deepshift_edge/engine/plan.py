"""Compile a window network (a graph model) into a streaming plan for the compiled core.

The plan is a list of *nodes* (time series of rows, each kept in a ring buffer just
long enough for its readers) and *ops* (one kernel call per run). The compiled core runs
the ops in order for every frame; an op runs at frame ``t`` when ``t >= phase`` and
``(t - phase) % period == 0``. Columns are channels-last: a 2-D column of C channels and F
features is stored as (F, C), so the innermost loops run over contiguous channels.

Every model node whose positions are time-valued is split in two (docs/semantics.md):

* its **interior**, the shift-invariant positions: one column per frame (dense mode) or
  per ``step`` frames (decimated), computed once by an *interior op* and shared by every
  window that contains it. Position ``j`` of the window ending at ``t`` is the column
  computed at frame ``t - W + 1 + first + j*step``.
* its two **edge strips**, the positions that zero padding at the window's edges reaches:
  recomputed for every emitted window by a *strip op*, whose row holds all strip
  positions. A strip op reads each tap through a table of references: a strip row of its
  input, an interior column ``lag`` rows back, or padding.

Heads (LastFrame, pools over the window, Flatten) are window ops of the same kind.
Operators that only move positions (Pad, Crop, Identity, a size-1 feature squeeze) get no
op: reading them resolves to their input (or to a zero column for Pad's zeros).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import ModelError
from ..nn import layers as L
from ..nn import merge as M

# Op kinds and activation codes: must match the constants in _kernels.pyx.
(CONV, POOL_MAX, POOL_AVG, ADD, COPY, GATHER, GMEAN, GMAX, SOFTMAX, RMEAN, MUL, CONCAT, SLICE,
 GAPMIX) = range(14)
# int8 kinds (quant/plan.py builds them; quantization in docs/int8.md)
(QCONV, QPOOL_MAX, QPOOL_AVG, QGMAX, QGMEAN, QRSUM, QGAPMIX, QADD, QMUL, QCONCAT, QLUT, DEQ) = range(20, 32)
(ACT_NONE, ACT_RELU, ACT_RELU6, ACT_LEAKY, ACT_SIGMOID, ACT_TANH, ACT_HARDSWISH, ACT_GELU_ERF,
 ACT_GELU_TANH, ACT_SILU, ACT_HARDSIGMOID, ACT_MISH, ACT_ELU, ACT_CELU, ACT_SELU, ACT_PRELU,
 ACT_SOFTPLUS, ACT_SOFTSIGN, ACT_HARDTANH) = range(19)

OP_NAMES = {i: n for i, n in enumerate(
    ["conv", "maxpool", "avgpool", "add", "copy", "gather", "global-mean", "global-max", "softmax",
     "running-mean", "mul", "concat", "slice", "global-mean-mix"])}
OP_NAMES.update({20 + i: n for i, n in enumerate(
    ["int8-conv", "int8-maxpool", "int8-avgpool", "int8-global-max", "int8-global-mean",
     "int8-running-sum", "int8-global-mean-mix", "int8-add", "int8-mul", "int8-concat", "int8-table",
     "dequantize"])})

#: A reference to padding (no value: a conv skips it, a max pool ignores it).
PAD = -1
#: A reference to the shared zero column (a real zero, e.g. the zeros of a Pad layer).
ZERO = -2

N_INT_FIELDS = 31
BLOCK = 16  # output channels per register block: DSE_BLK in _gemv.h


@dataclass
class Node:
    channels: int
    features: int  # 1 for 1-D data and vectors
    rows: int = 1  # positions per row: 1 for interior columns and vectors, the strip count else
    ring: int = 1  # rows of history kept (set after all readers are known)
    period: int = 1  # schedule of the op that writes this node (the input: every frame)
    phase: int = 0
    label: str = ""
    dtype: str = "float32"  # or "int8" (quantized streams)
    fill: int = 0  # the value rows hold before they are written (int8: the zero point)
    framewise: bool = False  # written per emitted window (strips, heads, vectors): push_many
    #                          runs its op frame by frame, so its ring needs no block rows

    @property
    def poscol(self) -> int:
        return self.channels * self.features

    @property
    def col(self) -> int:
        return self.rows * self.poscol


@dataclass
class Op:
    kind: int
    dst: int
    period: int
    phase: int
    inputs: List[tuple] = field(default_factory=list)  # (node, lag rows, channels[, position offset])
    ntaps: int = 1
    tap_step: int = 1
    cin: int = 0
    cout: int = 0
    groups: int = 1
    fin: int = 1
    fout: int = 1
    kf: int = 1
    sf: int = 1
    pf: int = 0
    pfr: int = 0  # right feature padding (average pools' divisor)
    df: int = 1
    act: int = ACT_NONE
    act_param: float = 0.0
    act_param2: float = 0.0
    act_w: Optional[np.ndarray] = None  # PReLU: per output channel slopes
    weight: Optional[np.ndarray] = None  # float32, kernel layout (ntaps, kf, cin, cout/groups)
    scale: Optional[np.ndarray] = None  # per output channel, float32
    shift: Optional[np.ndarray] = None
    index: Optional[np.ndarray] = None  # int64 (n, 2): (tap, offset in column) for GATHER
    table: Optional[np.ndarray] = None  # int64 (nrows, nrefs, 3): (node|PAD|ZERO, lag, offset)
    rowdiv: Optional[np.ndarray] = None  # float32 (nrows,): average pools' time divisor per row
    rtab: Optional[np.ndarray] = None  # float strip convs, all rows at once: int64 (ntaps, nrows, 2)
    rnodes: Optional[np.ndarray] = None  # (slot, byte offset) per tap and row; rnodes: slot s >= 1
    #                                     reads node rnodes[s - 1], slot 0 the zero column (row_tables)
    cip: int = 1  # average pools: count_include_pad
    coff: int = 0  # SLICE: first channel taken
    nrows: int = 1
    label: str = ""
    macs: int = 0  # multiply-adds per run, for inspect/bench
    nslots: int = 1  # RMEAN: running sums kept (one per stride phase in dense mode)
    npos: int = 0  # RMEAN: positions averaged; GAPMIX: interior positions behind ref 0
    delay: int = 0  # GAPMIX: positions in all (the divisor's count)
    pstride: int = 1  # sequence semantics: output position j reads input positions
    ppad: int = 0     # j*pstride - ppad + i*pdil (+ the input's offset), taps i < ntaps;
    ppadr: int = 0    # ppadr: right padding (average pools' divisor at the end)
    pdil: int = 1
    # int8 ops: zero points, requantization (per output channel, or per input then the
    # output), clamps, biases, weight sums per (output, chunk), the kernel's weights, a table
    qzp_out: int = 0
    qlo: int = -128
    qhi: int = 127
    qzp_in: Optional[np.ndarray] = None   # int32 per input
    qm0: Optional[np.ndarray] = None      # int32
    qshift: Optional[np.ndarray] = None   # int32
    qbias: Optional[np.ndarray] = None    # int32 per output channel
    qwsum: Optional[np.ndarray] = None    # int32 (cout, ntaps * kf)
    qweight: Optional[np.ndarray] = None  # int8 (out, in/groups, kf, kt), PyTorch's layout
    qmerged: bool = False                 # QCONV of few input channels: its taps merged into one
                                          # chunk of ntaps*kf*cin channels (run_qconv_merged)
    qtable: Optional[np.ndarray] = None   # int8 (256,)
    qscale: float = 1.0                   # DEQ: the scale of its int8 input
    qround: int = 0                       # QCONV: 1 = single rounding (scheme.multiply_by_quantized_multiplier_single),
                                          # 2 = float (scheme.requantize_float; qm0 = the float32 scales' bits)
    model_node: int = -1  # the model node this op computes (inspect)
    part: str = ""  # 'interior', 'strip', 'window' (heads) or 'vector'

    def fusable(self) -> bool:
        """Whether an activation or affine may still go into this op's epilogue."""
        return self.act == ACT_NONE and self.kind not in (GATHER, SLICE, CONCAT)


@dataclass
class Plan:
    nodes: List[Node] = field(default_factory=list)
    ops: List[Op] = field(default_factory=list)
    mode: str = "dense"
    window: int = 1
    hop: int = 1
    block: int = 64
    output_shape: tuple = ()
    out_transpose: bool = False  # 2-D vector output stored (F, C), returned (C, F)
    zero_col: int = 1  # floats of the shared zero column (ZERO references)
    sequence: bool = False  # semantics='sequence': ops compute positions as their inputs allow
    out_node: int = 0  # the node holding the output vector
    quantized: bool = False  # an int8 plan (quant/plan.py)
    in_qparams: tuple = (1.0, 0)  # int8 plans: (scale, zero point) the input is quantized with
    zero_zps: tuple = ()  # int8 plans: the zero points of the zero columns after the float one
    fingerprint: str = ""

    def kernel_weight(self, op: Op) -> np.ndarray:
        """Weights in the layout the compiled conv reads: blocked, except depthwise."""
        if op.weight is None or op.kind != CONV or (op.cin == op.groups and op.cout == op.groups):
            return op.weight
        return blocked_weight(op.weight, op.groups)

    def input_table(self, op: Op) -> np.ndarray:
        """(nin, 4) int64: node, lag rows, channels, position offset of each input."""
        rows = [tuple(i) + (0,) * (4 - len(i)) for i in op.inputs]
        return np.asarray(rows, dtype=np.int64).reshape(-1, 4)

    def byte_table(self, op: Op) -> np.ndarray:
        """op.table with each reference's element offset scaled to bytes of its node, and each
        ZERO reference of an int8 op pointed at a column of its input's zero point."""
        t = np.array(op.table, dtype=np.int64, copy=True)
        flat = t.reshape(-1, 3)
        per_input = max(1, flat.shape[0] // max(1, op.nrows) // max(1, len(op.inputs)))
        for k, r in enumerate(flat):
            if r[0] >= 0:
                r[2] *= np.dtype(self.nodes[int(r[0])].dtype).itemsize
            elif r[0] == ZERO and op.qzp_in is not None and op.kind >= QCONV:
                s = (k % (flat.shape[0] // max(1, op.nrows))) // per_input
                zp = int(op.qzp_in[min(s, len(op.qzp_in) - 1)])
                r[2] = 4 * self.zero_col + self.zero_zps.index(zp) * self.zero_col
        return t

    def zero_bytes(self) -> np.ndarray:
        """The shared zero columns: float32 zeros, then one int8 column per zero point."""
        out = np.zeros(4 * self.zero_col + len(self.zero_zps) * self.zero_col, np.uint8)
        for k, zp in enumerate(self.zero_zps):
            out[4 * self.zero_col + k * self.zero_col:4 * self.zero_col + (k + 1) * self.zero_col] = \
                np.uint8(zp & 0xFF)
        return out

    def zero_columns(self, builder=None):
        """Collect the zero points that int8 ZERO references (Pad zeros) need."""
        zps = set()
        for op in self.ops:
            if op.table is not None and op.qzp_in is not None and op.kind >= QCONV \
                    and (op.table[..., 0] == ZERO).any():
                zps.update(int(z) for z in op.qzp_in)
        self.zero_zps = tuple(sorted(zps))

    def int_table(self) -> np.ndarray:
        """Integer fields of every op, in the column order the compiled core expects."""
        rows = [[o.kind, o.dst, o.period, o.phase, o.ntaps, o.tap_step, o.cin, o.cout, o.groups,
                 o.fin, o.fout, o.kf, o.sf, o.pf, o.pfr, o.df, o.act, o.nslots, o.npos, o.delay,
                 len(o.inputs), o.nrows, o.cip, o.coff, o.pstride, o.ppad, o.ppadr, o.pdil,
                 o.qzp_out, o.qlo, o.qhi]
                for o in self.ops]
        return np.asarray(rows, dtype=np.int64).reshape(len(self.ops), N_INT_FIELDS)

    def macs_per_frame(self) -> float:
        """Average multiply-adds per frame (ops that run every `period` frames count 1/period)."""
        return float(sum(o.macs / o.period for o in self.ops))


# Activations fused into an op's epilogue, by layer class (the most specific class first).
_ACT_CODES = ((L.ReLU6, ACT_RELU6), (L.ReLU, ACT_RELU), (L.Sigmoid, ACT_SIGMOID), (L.Tanh, ACT_TANH),
              (L.HardSwish, ACT_HARDSWISH), (L.SiLU, ACT_SILU), (L.Hardsigmoid, ACT_HARDSIGMOID),
              (L.Mish, ACT_MISH), (L.SELU, ACT_SELU), (L.Softsign, ACT_SOFTSIGN))


def act_code(layer) -> Optional[tuple]:
    """(activation code, parameter, second parameter) of an activation layer, or None."""
    if isinstance(layer, L.LeakyReLU):
        return ACT_LEAKY, layer.negative_slope, 0.0
    if isinstance(layer, L.GELU):
        return (ACT_GELU_TANH if layer.approximate == "tanh" else ACT_GELU_ERF), 0.0, 0.0
    if isinstance(layer, L.ELU):
        return ACT_ELU, layer.alpha, 0.0
    if isinstance(layer, L.CELU):
        return ACT_CELU, layer.alpha, 0.0
    if isinstance(layer, L.Softplus):
        return ACT_SOFTPLUS, layer.beta, layer.threshold
    if isinstance(layer, L.Hardtanh):
        return ACT_HARDTANH, layer.min_val, layer.max_val
    if isinstance(layer, L.PReLU):
        return ACT_PRELU, 0.0, 0.0
    for cls, code in _ACT_CODES:
        if isinstance(layer, cls):
            return code, 0.0, 0.0
    return None


def _conv_weight(weight4: np.ndarray, groups: int) -> np.ndarray:
    """(out, in/g, kf, kt) PyTorch layout -> (kt, kf, in, out/g) kernel layout."""
    c_out, cin_g, k_f, k_t = weight4.shape
    cout_g = c_out // groups
    w = weight4.reshape(groups, cout_g, cin_g, k_f, k_t)          # g, m, c, kf, kt
    w = w.transpose(4, 3, 0, 2, 1).reshape(k_t, k_f, groups * cin_g, cout_g)
    return np.ascontiguousarray(w, dtype=np.float32)


def blocked_weight(kernel_weight: np.ndarray, groups: int) -> np.ndarray:
    """(kt, kf, in, out/g) kernel layout -> the register-blocked layout of _gemv.h:
    [group][block of BLOCK outputs][kt*kf chunk][in/g channel][BLOCK], zero padded."""
    k_t, k_f, c_in, cout_g = kernel_weight.shape
    cin_g = c_in // groups
    nblk = -(-cout_g // BLOCK)
    w = kernel_weight.reshape(k_t * k_f, groups, cin_g, cout_g)
    padded = np.zeros((k_t * k_f, groups, cin_g, nblk * BLOCK), dtype=np.float32)
    padded[..., :cout_g] = w
    padded = padded.reshape(k_t * k_f, groups, cin_g, nblk, BLOCK)
    return np.ascontiguousarray(padded.transpose(1, 3, 0, 2, 4), dtype=np.float32)


QBLK = 16  # output channels per block of the int8 kernels: DSE_QBLK in _qgemv.h


def qkernel_weights(op: Op, layout: int) -> np.ndarray:
    """An int8 conv's weights in the layout of the running kernel (_qgemv.h):
    0 = C16 int16 [group][block][chunk][cin/g][16]; 1 = DOT4 int8 [group][block][chunk][cq][16][4];
    2 = PAIRS int16 [group][block][chunk][cp][16][2]; a depthwise conv: int8 [chunk][channel];
    a merged conv (op.qmerged) as one chunk of ntaps * kf * cin channels."""
    w4 = op.qweight  # (out, in/g, kf, kt)
    if op.qmerged:  # one chunk whose channel m is (time tap * kf + feature tap) * cin + c
        w4 = w4.transpose(0, 3, 2, 1).reshape(w4.shape[0], -1)[:, :, None, None]
    c_out, cin_g, k_f, k_t = w4.shape
    g = op.groups
    if cin_g == 1 and c_out == g:  # depthwise
        return np.ascontiguousarray(w4[:, 0].transpose(2, 1, 0).reshape(k_t * k_f, c_out), np.int8)
    cout_g = c_out // g
    nblk = -(-cout_g // QBLK)
    chunks = k_t * k_f
    w = w4.reshape(g, cout_g, cin_g, k_f, k_t).transpose(0, 4, 3, 2, 1).reshape(g, chunks, cin_g, cout_g)
    padded = np.zeros((g, chunks, cin_g, nblk * QBLK), np.int32)
    padded[..., :cout_g] = w
    padded = padded.reshape(g, chunks, cin_g, nblk, QBLK).transpose(0, 3, 1, 2, 4)  # g blk chunk c 16
    if layout == 0:
        return np.ascontiguousarray(padded, np.int16)
    if layout == 2:  # two channels per 32-bit lane (PMADDWD); an odd tail channel pairs with a zero
        cp = -(-cin_g // 2)
        two = np.zeros((g, nblk, chunks, cp * 2, QBLK), np.int32)
        two[:, :, :, :cin_g] = padded
        two = two.reshape(g, nblk, chunks, cp, 2, QBLK).transpose(0, 1, 2, 3, 5, 4)  # ... cp 16 2
        return np.ascontiguousarray(two, np.int16)
    cq = -(-cin_g // 4)
    four = np.zeros((g, nblk, chunks, cq * 4, QBLK), np.int32)
    four[:, :, :, :cin_g] = padded
    four = four.reshape(g, nblk, chunks, cq, 4, QBLK).transpose(0, 1, 2, 3, 5, 4)  # ... cq 16 4
    return np.ascontiguousarray(four, np.int8)



def _float32(values: np.ndarray, op: Op) -> np.ndarray:
    """float64 parameters as the kernels' float32, refusing what float32 cannot hold (a
    BatchNorm folded into a conv can overflow it)."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(values, dtype=np.float32)
    if not np.isfinite(out).all():
        raise ModelError(f"{op.label or 'an op'}: folding a BatchNorm into it gives values beyond "
                         f"float32's range; the model's parameters are not usable as float32")
    return out


def _runs_upto(t: int, period: int, phase: int) -> int:
    """How many times an op of this schedule ran at frames <= t."""
    return 0 if t < phase else (t - phase) // period + 1


def _avg_divisors(spec_in, layer, rows: List[int]) -> np.ndarray:
    """PyTorch's time divisor of an average pool at output positions ``rows``."""
    out = []
    n, (pl, pr) = spec_in.length, layer.pad_t
    for q in rows:
        start = q * layer.s_t - pl
        taps = [start + i for i in range(layer.k_t)]
        end = min(start + layer.k_t, n + pr)
        inside = sum(1 for p in taps if 0 <= p < n)
        out.append((end - start) if layer.count_include_pad else inside)
    return np.asarray(out, dtype=np.float32)


def is_alias(layer, in_spec) -> bool:
    """Layers that move no data: Identity/Dropout, a squeeze of a size-1 feature axis."""
    if isinstance(layer, L.Identity) and not isinstance(layer, L.Softmax) and act_code(layer) is None:
        return True
    return isinstance(layer, M.FrameFlatten) and (in_spec.features or 1) == 1


class _Builder:
    """Walks the model's nodes in order and emits interior, strip and window ops."""

    def __init__(self, model, mode: str, block: int):
        self.model = model
        self.mode = mode
        self.dense = mode == "dense"
        self.W = model.window
        hop = 1 if self.dense else model.hop
        self.plan = Plan(mode=mode, window=model.window, hop=hop, block=block)
        self.specs = model.specs
        self.consumers = model.consumers()
        n = len(model.nodes)
        self.interior: List[Optional[int]] = [None] * n  # plan node of each model node's interior
        self.strip: List[Optional[int]] = [None] * n     # plan node of its strip rows
        self.alias: List[Optional[tuple]] = [None] * n   # (source node, position shift) or None
        self.ops_of: Dict[int, List[Op]] = {}            # ops that compute a model node
        self.emit = (1, self.W - 1) if self.dense else (hop, self.W - 1)
        self.t_ref = self.W - 1 + 1000 * hop * model.hop  # a representative emission frame

    # ------------------------------------------------------------------ helpers
    def new_node(self, channels, features, rows=1, label="") -> int:
        self.plan.nodes.append(Node(channels, features or 1, rows=rows, label=label))
        return len(self.plan.nodes) - 1

    def add(self, op: Op, model_node: int, part: str, final: bool = True) -> Op:
        """Append op; `final` ops produce the model node's value (fusion may extend them)."""
        op.model_node, op.part = model_node, part
        self.plan.ops.append(op)
        node = self.plan.nodes[op.dst]
        node.period, node.phase = op.period, op.phase
        if final:
            self.ops_of.setdefault(model_node, []).append(op)
        return op

    def schedule(self, spec) -> tuple:
        """(period, phase) of the interior op producing positions of `spec`."""
        if self.dense:
            return 1, 0
        return spec.step, spec.first % spec.step

    def col_time(self, i: int, p: int, t: int) -> int:
        """Frame at which the interior column of node i's position p (window ending t) is made."""
        s = self.specs[i]
        return t - (self.W - 1) + s.first + p * s.step

    def rows_between(self, plan_node: int, col_time: int, run_time: int) -> int:
        nd = self.plan.nodes[plan_node]
        return _runs_upto(run_time, nd.period, nd.phase) - _runs_upto(col_time, nd.period, nd.phase)

    def base(self, i: int) -> int:
        """The model node whose buffers hold alias node i's values."""
        while self.alias[i] is not None:
            i = self.alias[i][1]
        return i

    def source(self, i: int, p: int) -> tuple:
        """Follow aliases: (model node, position) that holds node i's position p, or (ZERO, 0)."""
        while self.alias[i] is not None:
            kind, src, shift, length = self.alias[i]
            if kind == "zero" and not 0 <= p - shift < length:
                return ZERO, 0
            i, p = src, p - shift
        return i, p

    def ref(self, i: int, p: int, t: int) -> tuple:
        """Reference to node i's window position p for a window op running at frame t."""
        spec = self.specs[i]
        if not 0 <= p < spec.length:
            return (PAD, 0, 0)
        j, q = self.source(i, p)
        if j == ZERO:
            return (ZERO, 0, 0)
        s = self.specs[j]
        if q < s.left or q >= s.length - s.right:
            row = self.strip_rows[j][q]  # only the strip positions the output needs are rows
            return (self.strip[j], 0, row * s.channels * (s.features or 1))
        node = self.interior[j]
        return (node, self.rows_between(node, self.col_time(j, q, t), t), 0)

    def interior_input(self, i: int, lag_frames: int, run_time: int) -> tuple:
        """(plan node, lag rows, channels) of node i's interior read lag_frames before run_time."""
        node = self.interior[self.base(i)]
        if node is None:
            raise ModelError(f"internal: node {self.model.nodes[i].name} has no interior")
        return (node, self.rows_between(node, run_time - lag_frames, run_time), self.specs[i].channels)

    # ------------------------------------------------------------------ the walk
    def run(self) -> Plan:
        m = self.model
        spec0 = self.specs[0]
        self.needed = needed_positions(m)
        self.strip_rows: Dict[int, Dict[int, int]] = {}
        self.interior[0] = self.new_node(spec0.channels, spec0.features, label="input")
        for i in range(1, len(m.nodes)):
            self.node(i)
        self.plan.output_shape = tuple(m.output_shape)
        self.plan.out_transpose = len(m.output_shape) == 2
        if not self.ops_of.get(len(m.nodes) - 1):  # an output that is an alias (Identity after the head)
            self.copy_vector(len(m.nodes) - 1)
        self.plan.out_node = self.output_node()
        self.size_rings()
        if os.environ.get("DSE_STRIP_ROWS", "1") != "0":
            row_tables(self.plan)
        return self.plan

    def output_node(self) -> int:
        """The plan node the stream's output is read from."""
        return self.interior[self.base(len(self.model.nodes) - 1)]

    def node(self, i: int):
        node = self.model.nodes[i]
        layer, spec = node.layer, self.specs[i]
        ins = list(node.inputs)
        in_spec = self.specs[ins[0]]
        where = f"node {node.name} ({type(layer).__name__})"
        if isinstance(layer, (M.Pad, M.Crop)) or is_alias(layer, in_spec):
            self.make_alias(i, layer, ins[0])
            return
        if spec.is_vector and not in_spec.is_vector or (layer.is_head and not in_spec.is_vector):
            self.head(i, layer, ins[0], where)
            return
        if self.try_fuse(i, layer, ins[0]):
            return
        if spec.is_vector:
            self.vector_op(i, layer, ins, where)
            return
        self.time_ops(i, layer, ins, where)

    def make_alias(self, i, layer, src):
        spec_in = self.specs[src]
        if spec_in.is_vector:
            self.alias[i] = ("copy", src, 0, None)
        elif isinstance(layer, M.Pad):
            self.alias[i] = ("zero", src, layer.left, spec_in.length)
        elif isinstance(layer, M.Crop):
            self.alias[i] = ("copy", src, -layer.left, None)
        else:
            self.alias[i] = ("copy", src, 0, None)

    # ------------------------------------------------------------------ fusion
    def try_fuse(self, i, layer, src) -> bool:
        """Fold a per-frame activation or BatchNorm into the ops of its only producer."""
        act = act_code(layer)
        if act is None and not isinstance(layer, L._BatchNorm):
            return False
        j = src
        if self.alias[j] is not None or j == 0 or len(self.consumers[j]) != 1:
            return False
        ops = self.ops_of.get(j, [])
        if not ops or not all(op.fusable() for op in ops):
            return False
        if isinstance(layer, L._BatchNorm):
            if any(op.kind == SOFTMAX for op in ops):
                return False
            scale, shift = layer.scale_shift()
            for op in ops:
                self.fold_affine(op, scale, shift)
                op.label += f"+{type(layer).__name__}"
        else:
            for op in ops:
                self.set_act(op, layer, act)
        self.interior[i], self.strip[i] = self.interior[j], self.strip[j]
        self.strip_rows[i] = self.strip_rows.get(j, {})
        self.ops_of[i] = ops
        return True

    def set_act(self, op: Op, layer, act):
        op.act, op.act_param, op.act_param2 = act
        if op.act == ACT_PRELU:
            op.act_w = layer.slopes(op.cout)
        op.label += f"+{type(layer).__name__}"

    @staticmethod
    def fold_affine(op: Op, scale: np.ndarray, shift: np.ndarray):
        """Compose y -> y*scale + shift into op's epilogue (into the weights for a conv)."""
        old_shift = np.zeros(len(scale)) if op.shift is None else op.shift.astype(np.float64)
        if op.kind == CONV:
            w = op.weight.astype(np.float64)  # (kt, kf, cin, cout/g): out channel = g*cout_g + m
            cout_g = op.cout // op.groups
            cin_g = op.cin // op.groups
            for g in range(op.groups):
                w[:, :, g * cin_g:(g + 1) * cin_g, :] *= scale[g * cout_g:(g + 1) * cout_g]
            op.weight = _float32(w, op)
        else:
            old_scale = np.ones(len(scale)) if op.scale is None else op.scale.astype(np.float64)
            op.scale = _float32(old_scale * scale, op)
        op.shift = _float32(old_shift * scale + shift, op)

    # ------------------------------------------------------------------ op templates
    def template(self, i, layer, ins, where) -> Op:
        """An op computing one position of node i (no schedule, inputs or table yet)."""
        spec = self.specs[i]
        in_spec = self.specs[ins[0]]
        c_in = in_spec.channels
        f_in = in_spec.features or 1
        f_out = spec.features or 1
        name = type(layer).__name__
        act = act_code(layer)
        if act is not None:
            op = Op(COPY, -1, 1, 0, cin=c_in, cout=c_in, fin=f_in, fout=f_out)
            self.set_act(op, layer, act)
            return op
        if isinstance(layer, L._BatchNorm):
            op = Op(COPY, -1, 1, 0, cin=c_in, cout=c_in, fin=f_in, fout=f_out, label=name)
            self.fold_affine(op, *layer.scale_shift())
            return op
        if isinstance(layer, L.Softmax):
            return Op(SOFTMAX, -1, 1, 0, cin=c_in, cout=c_in, fin=f_in, fout=f_out)
        if isinstance(layer, L.Linear):
            return self.conv_op(layer.weight[:, :, None, None], layer.bias, 1, 1, 1, 1, 0, 1, 1,
                                c_in, f_in, f_out)
        if isinstance(layer, L._Conv):
            return self.conv_op(layer._weight4(), layer.bias, layer.groups, layer.k_f, layer.s_f,
                                layer.d_f, layer.pad_f[0], layer.k_t, layer.d_t, c_in, f_in, f_out)
        if isinstance(layer, L._Pool):
            op = Op(POOL_MAX if layer.op == "max" else POOL_AVG, -1, 1, 0, ntaps=layer.k_t,
                    cin=c_in, cout=c_in, fin=f_in, fout=f_out, kf=layer.k_f, sf=layer.s_f,
                    pf=layer.pad_f[0], pfr=layer.pad_f[1], cip=int(layer.count_include_pad))
            op.macs = layer.k_t * layer.k_f * f_out * c_in
            return op
        if isinstance(layer, (M.Add, M.Mul)):
            return Op(ADD if isinstance(layer, M.Add) else MUL, -1, 1, 0, cin=spec.channels,
                      cout=spec.channels, fin=f_in, fout=f_out)
        if isinstance(layer, M.Concat):
            return Op(CONCAT, -1, 1, 0, cin=spec.channels, cout=spec.channels, fin=f_in, fout=f_out)
        if isinstance(layer, M.ChannelSlice):
            return Op(SLICE, -1, 1, 0, cin=c_in, cout=spec.channels, fin=f_in, fout=f_out,
                      coff=layer.start)
        if isinstance(layer, (M.FrameFlatten, L.Flatten)):  # per frame (C, F) -> C*F in C order
            index = np.array([[0, fi * c_in + ci] for ci in range(c_in) for fi in range(f_in)],
                             dtype=np.int64)
            return Op(GATHER, -1, 1, 0, cin=c_in, cout=c_in * f_in, index=index)
        raise ModelError(f"{where}: {name} has no streaming kernel")

    @staticmethod
    def conv_op(w4, bias, groups, k_f, s_f, d_f, p_f, k_t, d_t, c_in, f_in, f_out) -> Op:
        c_out = w4.shape[0]
        op = Op(CONV, -1, 1, 0, ntaps=k_t, cin=c_in, cout=c_out, groups=groups, fin=f_in,
                fout=f_out, kf=k_f, sf=s_f, pf=p_f, df=d_f,
                weight=_conv_weight(np.asarray(w4, np.float32), groups),
                shift=None if bias is None else np.asarray(bias, np.float32).copy())
        op.macs = k_t * k_f * (c_in // groups) * c_out * f_out
        return op

    @staticmethod
    def taps_of(layer) -> Tuple[int, int]:
        """(kernel, dilation) in time of a sliding layer; (1, 1) for per-frame ones."""
        if isinstance(layer, L._TimeLayer):
            return layer.k_t, layer.d_t
        return 1, 1

    def clone(self, op: Op) -> Op:
        new = Op(**{k: getattr(op, k) for k in op.__dataclass_fields__})
        new.inputs = list(op.inputs)
        return new

    # ------------------------------------------------------------------ time-valued nodes
    def time_ops(self, i, layer, ins, where):
        spec = self.specs[i]
        tmpl = self.template(i, layer, ins, where)
        k, d = self.taps_of(layer)
        stride = layer.s_t if isinstance(layer, L._TimeLayer) else 1
        pad_left = layer.pad_t[0] if isinstance(layer, L._TimeLayer) else 0
        crops = [self.specs[j].length - spec.length for j in ins] if len(ins) > 1 else [0]
        f = spec.features or 1
        self.interior[i] = self.strip[i] = None
        if len(spec.interior):
            op = self.clone(tmpl)
            op.period, op.phase = self.schedule(spec)
            op.dst = self.new_node(spec.channels, f, label=f"{self.model.nodes[i].name} interior")
            # a representative run frame of this schedule (lags are the same at every run)
            t = self.t_ref if self.dense else op.phase + op.period * 1000 * self.model.hop
            if len(ins) == 1:
                # A column's newest tap is the input column made at the same frame (lag 0),
                # its oldest (k-1)*d input steps earlier.
                oldest = (k - 1) * d * self.specs[ins[0]].step
                node, lag0, ch = self.interior_input(ins[0], 0, t)
                _, lag_old, _ = self.interior_input(ins[0], oldest, t) if k > 1 else (0, lag0, 0)
                op.inputs = [(node, lag0, ch)]
                op.ntaps = k
                op.tap_step = (lag_old - lag0) // (k - 1) if k > 1 else 1
            else:
                first = spec.first
                op.inputs = []
                for j, c in zip(ins, crops):
                    s = self.specs[j]
                    delta = first - s.first - c * s.step
                    op.inputs.append(self.interior_input(j, delta, t))
            op.label = f"{where}"
            self.add(op, i, "interior")
            self.interior[i] = op.dst
        # Only the strip positions the output depends on: a causal TCN's LastFrame reads none of
        # its left strips, a global average all of them.
        rows = [q for q in spec.strip_positions if self.needed[i][q]]
        self.strip_rows[i] = {q: r for r, q in enumerate(rows)}
        if rows:
            op = self.clone(tmpl)
            op.period, op.phase = self.emit
            op.nrows = len(rows)
            op.dst = self.new_node(spec.channels, f, rows=len(rows),
                                   label=f"{self.model.nodes[i].name} strips")
            t = self.t_ref
            table = []
            for q in rows:
                refs = []
                if len(ins) == 1:
                    for tap in range(k):
                        refs.append(self.ref(ins[0], q * stride - pad_left + tap * d, t))
                else:
                    for j, c in zip(ins, crops):
                        refs.append(self.ref(j, q + c, t))
                table.append(refs)
            op.table = np.asarray(table, dtype=np.int64).reshape(len(rows), -1, 3)
            op.inputs = [(-1, 0, self.specs[j].channels) for j in ins]
            if op.kind in (POOL_AVG, QPOOL_AVG):
                op.rowdiv = _avg_divisors(self.specs[ins[0]], layer, rows)
            op.macs *= len(rows)
            op.label = f"{where} strips"
            self.add(op, i, "strip")
            self.strip[i] = op.dst

    # ------------------------------------------------------------------ after the head
    def vector_op(self, i, layer, ins, where):
        tmpl = self.template(i, layer, ins, where)
        tmpl.period, tmpl.phase = self.emit
        spec = self.specs[i]
        tmpl.dst = self.new_node(spec.channels, spec.features, label=f"{self.model.nodes[i].name}")
        tmpl.inputs = [self.vector_input(j) for j in ins]
        tmpl.label = where
        self.add(tmpl, i, "vector")
        self.interior[i] = tmpl.dst

    def vector_input(self, j) -> tuple:
        return (self.interior[self.base(j)], 0, self.specs[j].channels)

    def copy_vector(self, i):
        spec = self.specs[i]
        op = Op(COPY, self.new_node(spec.channels, spec.features), self.emit[0], self.emit[1],
                inputs=[self.vector_input(i)], cin=spec.channels, cout=spec.channels,
                fin=spec.features or 1, fout=spec.features or 1, label="output")
        self.add(op, i, "vector")
        self.alias[i], self.interior[i] = None, op.dst

    # ------------------------------------------------------------------ heads
    def head(self, i, layer, src, where):
        spec_in = self.specs[src]
        n = spec_in.length
        c, f = spec_in.channels, spec_in.features or 1
        period, phase = self.emit
        t = self.t_ref
        name = type(layer).__name__
        # LastFrame reads the newest position only (the others are not even computed); the
        # other heads read every position.
        all_refs = None if isinstance(layer, L.LastFrame) else [self.ref(src, p, t) for p in range(n)]
        if isinstance(layer, L.LastFrame):
            dst = self.new_node(c, f)
            op = Op(COPY, dst, period, phase, cin=c, cout=c, fin=f, fout=f,
                    table=np.asarray([[self.ref(src, n - 1, t)]], dtype=np.int64))
        elif isinstance(layer, L.GlobalMaxPool):
            dst = self.new_node(c, 1)
            op = Op(GMAX, dst, period, phase, ntaps=n, cin=c, cout=c, fin=f, fout=1,
                    table=np.asarray([all_refs], dtype=np.int64))
            op.macs = n * c * f
        elif isinstance(layer, L.GlobalAvgPool):
            op = self.global_mean(i, src, c, f, where)
            dst = op.dst
        elif isinstance(layer, L.Flatten):  # window (C, F, n) flattened in C order
            index = np.array([[j, fi * c + ci] for ci in range(c) for fi in range(f) for j in range(n)],
                             dtype=np.int64)
            dst = self.new_node(c * f * n, 1)
            op = Op(GATHER, dst, period, phase, ntaps=n, cin=c, cout=c * f * n, index=index,
                    table=np.asarray([all_refs], dtype=np.int64))
        else:
            raise ModelError(f"{where}: {name} has no streaming kernel")
        op.inputs = [(-1, 0, c)]
        op.label = f"{where}"
        self.add(op, i, "window")
        self.interior[i] = dst

    def global_mean(self, i, src, c, f, where) -> Op:
        """GlobalAvgPool: running sums over the interior (O(C) per frame whatever the window,
        re-summed exactly every n updates so nothing drifts) plus the strips of each window."""
        spec_in = self.specs[src]
        period, phase = self.emit
        t = self.t_ref
        j = self.base(src)
        # Positions of src that are interior columns of j (aliases shift positions, Pad adds zeros).
        inner = [p for p in range(spec_in.length) if self.ref(src, p, t)[0] == self.interior[j]
                 and self.interior[j] is not None]
        if len(inner) < 4 or inner != list(range(inner[0], inner[-1] + 1)):
            # Short interior (or none): a plain mean over every position of the window.
            dst = self.new_node(c, 1)
            return Op(GMEAN, dst, period, phase, ntaps=spec_in.length, cin=c, cout=c, fin=f,
                      fout=1, table=np.asarray([[self.ref(src, p, t) for p in range(spec_in.length)]],
                                               dtype=np.int64),
                      macs=spec_in.length * c * f)
        node = self.interior[j]
        nd = self.plan.nodes[node]
        step = self.specs[j].step
        slots = step if self.dense else 1
        n_in = len(inner)
        sums = self.new_node(c, 1, label=f"{self.model.nodes[i].name} running sums")
        rm = Op(RMEAN, sums, nd.period, nd.phase, inputs=[(node, 0, c)], ntaps=2,
                tap_step=n_in * slots, cin=c, cout=c, fin=f, fout=1, nslots=slots, npos=n_in,
                macs=3 * c * f, label=f"{where} running sums")
        self.add(rm, i, "interior", final=False)
        # The sums' node has the interior's schedule: the mean made with the interior's newest
        # position of this window is as many rows back as that column.
        lag = self.ref(src, inner[-1], t)[1]
        refs = [(sums, lag, 0)] + [self.ref(src, p, t) for p in range(spec_in.length)
                                   if p not in set(inner)]
        dst = self.new_node(c, 1)
        return Op(GAPMIX, dst, period, phase, ntaps=len(refs), cin=c, cout=c, fin=f, fout=1,
                  npos=n_in, delay=spec_in.length, table=np.asarray([refs], dtype=np.int64),
                  macs=(len(refs) - 1) * c * f + c)

    # ------------------------------------------------------------------ ring sizes
    def size_rings(self):
        """Each node keeps what its readers need, plus block - 1 rows so that push_many
        can run one op over a whole block of frames before the next op reads it."""
        need = [1] * len(self.plan.nodes)
        for op in self.plan.ops:
            if op.table is not None:
                for node, lag, _ in op.table.reshape(-1, 3):
                    if node >= 0:
                        need[node] = max(need[node], int(lag) + 1)
            else:
                for s, (node, lag, _) in enumerate(op.inputs):
                    extent = lag + ((op.ntaps - 1) * op.tap_step if len(op.inputs) == 1 else 0)
                    need[node] = max(need[node], extent + 1)
            if op.kind == RMEAN:
                node = op.inputs[0][0]
                need[node] = max(need[node], op.tap_step + 1)
        for op in self.plan.ops:
            if op.part in ("strip", "window", "vector"):
                self.plan.nodes[op.dst].framewise = True
        for node, rows in zip(self.plan.nodes, need):
            node.ring = rows + (0 if node.framewise else self.plan.block - 1)
        self.plan.zero_col = max([nd.poscol for nd in self.plan.nodes] + [1])


def row_tables(plan: Plan) -> Plan:
    """Let every float strip conv of ``plan`` run all its rows in one call (dse_gemv_rows):
    each weight loaded once serves several rows, whose sums are independent accumulators
    (one row at a time, a conv of few output channels waits on one accumulator's chain).

    A strip row's taps have no common stride (its taps cross from the input's strip rows to
    its interior columns where the row's position says, and padding), so each (tap, row)
    gets its own address, as a slot and a byte offset: at run time, slot s >= 1 is the
    newest row of node ``rnodes[s - 1]`` (each node's base resolved once per run), and the
    address is that base plus the offset (``offset - lag * row bytes``: mirrored rings keep
    any lag's rows contiguous below the newest). Padding reads the zero column (slot 0): a
    zero term where the row-at-a-time path skips the tap, so each sum gets the same nonzero
    terms in the same order (the sign of an exactly zero result aside). Depthwise convs use
    the same addresses in their own loop (no weight reuse to gain: the saving is the per-row
    resolution), skipping padding as the row loop does. int8 convs (QCONV) alike, padding a
    column of the input's zero point: exact integers, so the bits of the row loop (its
    zero-point term then covers every time tap: no per-row correction). ``DSE_STRIP_ROWS=0`` in the
    environment (at plan time) leaves every strip conv to the row loop."""
    for op in plan.ops:
        if op.kind not in (CONV, QCONV) or op.part != "strip" or op.table is None or op.nrows < 2 \
                or len(op.inputs) != 1:
            continue
        t = np.asarray(op.table, np.int64).reshape(op.nrows, op.ntaps, 3).transpose(1, 0, 2)
        node, lag, off = t[..., 0], t[..., 1], t[..., 2]
        nodes = sorted({int(n) for n in node[node >= 0]})
        rt = np.zeros((op.ntaps, op.nrows, 2), np.int64)
        for s, n in enumerate(nodes):
            nd = plan.nodes[n]
            size = np.dtype(nd.dtype).itemsize
            at = node == n
            rt[..., 0][at] = s + 1
            rt[..., 1][at] = (off[at] - lag[at] * nd.col) * size
        # PAD and ZERO both read a zero column: float zeros (a ZERO's offset is 0 in float
        # plans), or for int8 the column of the input's zero point (after the float one)
        if op.kind == QCONV:
            zp = int(op.qzp_in[0])
            if zp not in plan.zero_zps:
                plan.zero_zps = tuple(plan.zero_zps) + (zp,)
            rt[..., 1][rt[..., 0] == 0] = 4 * plan.zero_col + plan.zero_zps.index(zp) * plan.zero_col
        op.rtab, op.rnodes = rt, np.asarray(nodes, np.int64)
    return plan


def needed_positions(model) -> list:
    """Per model node, a boolean mask over its window positions: those the output depends on
    (a backward pass from the heads). None for nodes after the head."""
    specs, nodes = model.specs, model.nodes
    need = [None if s.is_vector else np.zeros(s.length, dtype=bool) for s in specs]
    for c in range(len(nodes) - 1, 0, -1):
        node = nodes[c]
        layer = node.layer
        mine = need[c]
        for k, i in enumerate(node.inputs):
            if need[i] is None:
                continue
            n_in = specs[i].length
            if specs[c].is_vector:  # a head reads the newest position, or all of them
                if isinstance(layer, L.LastFrame):
                    need[i][n_in - 1] = True
                else:
                    need[i][:] = True
                continue
            j = np.nonzero(mine)[0]
            if not j.size:
                continue
            if isinstance(layer, L._TimeLayer):
                taps = (j[:, None] * layer.s_t - layer.pad_t[0] + np.arange(layer.k_t)[None, :] * layer.d_t)
                p = taps.reshape(-1)
            elif isinstance(layer, M.Pad):
                p = j - layer.left
            elif isinstance(layer, M.Crop):
                p = j + layer.left
            elif len(node.inputs) > 1:  # a right-aligned merge
                p = j + (n_in - specs[c].length)
            else:
                p = j
            p = p[(p >= 0) & (p < n_in)]
            need[i][p] = True
    return need


def build_plan(model, mode: str = "dense", block: int = 64) -> Plan:
    """Compile ``model`` (a :class:`~deepshift_edge.Model` or Sequential) for streaming;
    ``push_many`` processes up to ``block`` frames per op call."""
    if mode not in ("dense", "decimated"):
        raise ModelError(f"mode must be 'dense' or 'decimated', got {mode!r}")
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or not 1 <= block <= 4096:
        raise ModelError(f"block must be an integer in 1..4096, got {block!r}")
    return _Builder(model, mode, int(block)).run()
