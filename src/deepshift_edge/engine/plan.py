"""Compile a window network into a streaming plan for the compiled core.

The plan is a list of *nodes* (time series of columns, each kept in a ring buffer
just long enough for its readers) and *ops* (one per kernel call per frame). The
compiled core runs the ops in order for every frame; an op runs at frame ``t`` when
``t >= phase`` and ``(t - phase) % period == 0``.

Columns are channels-last: a 2-D column of C channels and F features is stored as
(F, C), so the innermost kernel loops run over contiguous channels.

Time bookkeeping (DESIGN.md section 1): position ``j`` of a layer's output in the
window ending at ``t`` is the column computed at frame ``t - W + 1 + first + j*step``
(``first``/``step`` from :class:`~deepshift_edge.layers.Spec`). A conv therefore reads
its input ``dilation * step_in`` frames apart in dense mode; in decimated mode each
node holds only the columns computed at its own rate, so it reads ``dilation`` rows
apart and runs every ``step_out`` frames.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from ..nn import layers as L
from ..errors import ModelError

# Op kinds and activation codes: must match the constants in _kernels.pyx.
CONV, POOL_MAX, POOL_AVG, ADD, COPY, GATHER, GMEAN, GMAX, SOFTMAX, RMEAN = range(10)
ACT_NONE, ACT_RELU, ACT_RELU6, ACT_LEAKY, ACT_SIGMOID, ACT_TANH, ACT_HARDSWISH, \
    ACT_GELU_ERF, ACT_GELU_TANH, ACT_SILU, ACT_HARDSIGMOID, ACT_MISH = range(12)

OP_NAMES = ["conv", "maxpool", "avgpool", "add", "copy", "gather", "global-mean", "global-max",
            "softmax", "running-mean"]


@dataclass
class Node:
    channels: int
    features: int  # 1 for 1-D data and vectors
    ring: int = 1  # rows of history kept (set after all readers are known)
    period: int = 1  # schedule of the op that writes this node (the input: every frame)
    phase: int = 0

    @property
    def col(self) -> int:
        return self.channels * self.features


@dataclass
class Op:
    kind: int
    src: int
    dst: int
    period: int
    phase: int
    src2: int = -1
    ntaps: int = 1
    tap_step: int = 1
    tap_offset: int = 0
    cin: int = 0
    cout: int = 0
    groups: int = 1
    fin: int = 1
    fout: int = 1
    kf: int = 1
    sf: int = 1
    pf: int = 0
    df: int = 1
    act: int = ACT_NONE
    act_param: float = 0.0
    weight: Optional[np.ndarray] = None  # float32, kernel layout (ntaps, kf, cin, cout/groups)
    scale: Optional[np.ndarray] = None  # per output channel, float32
    shift: Optional[np.ndarray] = None
    index: Optional[np.ndarray] = None  # int64 (n, 2): (tap, offset in column) for GATHER
    label: str = ""
    macs: int = 0  # multiply-adds per run, for inspect/bench
    nslots: int = 1  # RMEAN: running sums kept (one per stride phase in dense mode)
    npos: int = 1  # RMEAN: positions averaged (n)
    delay: int = 0  # RMEAN: frames between the newest column and the newest one averaged

    def fusable(self) -> bool:
        return self.act == ACT_NONE and self.kind != GATHER


@dataclass
class Plan:
    mode: str
    window: int
    hop: int
    nodes: List[Node] = field(default_factory=list)
    ops: List[Op] = field(default_factory=list)
    out_transpose: bool = False  # final column is (F, C) but the output is (C, F)
    output_shape: tuple = ()
    block: int = 1  # frames push_many runs op by op; every ring keeps block - 1 extra rows

    def kernel_weight(self, op: Op) -> np.ndarray:
        """Weights in the layout the compiled conv reads: blocked, except depthwise."""
        if op.weight is None or op.kind != CONV or (op.cin == op.groups and op.cout == op.groups):
            return op.weight
        return blocked_weight(op.weight, op.groups)

    def int_table(self) -> np.ndarray:
        """Integer fields of every op, in the column order the compiled core expects."""
        rows = [[o.kind, o.src, o.src2, o.dst, o.period, o.phase, o.ntaps, o.tap_step, o.tap_offset,
                 o.cin, o.cout, o.groups, o.fin, o.fout, o.kf, o.sf, o.pf, o.df, o.act,
                 o.nslots, o.npos, o.delay]
                for o in self.ops]
        return np.asarray(rows, dtype=np.int64).reshape(len(self.ops), 22)

    def macs_per_frame(self) -> float:
        """Average multiply-adds per frame (ops that run every `period` frames count 1/period)."""
        return float(sum(o.macs / o.period for o in self.ops))


# Activations fused into an op's epilogue, by layer class (subclasses first: ReLU6 is not a ReLU,
# but keep the most specific class first in case one ever subclasses another).
_ACT_CODES = ((L.ReLU6, ACT_RELU6), (L.ReLU, ACT_RELU), (L.Sigmoid, ACT_SIGMOID), (L.Tanh, ACT_TANH),
              (L.HardSwish, ACT_HARDSWISH), (L.SiLU, ACT_SILU), (L.Hardsigmoid, ACT_HARDSIGMOID),
              (L.Mish, ACT_MISH))


def _act_code(layer) -> tuple:
    """(activation code, parameter) of an activation layer, or None."""
    if isinstance(layer, L.LeakyReLU):
        return ACT_LEAKY, layer.negative_slope
    if isinstance(layer, L.GELU):
        return (ACT_GELU_TANH if layer.approximate == "tanh" else ACT_GELU_ERF), 0.0
    for cls, code in _ACT_CODES:
        if isinstance(layer, cls):
            return code, 0.0
    return None


BLOCK = 16  # output channels per register block: DSE_BLK in _gemv.h


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


class _Builder:
    def __init__(self, model, mode: str):
        self.model = model
        self.mode = mode
        self.dense = mode == "dense"
        self.plan = Plan(mode=mode, window=model.window, hop=1 if self.dense else model.hop)

    # -- helpers
    def node(self, channels, features) -> int:
        self.plan.nodes.append(Node(channels, features or 1))
        return len(self.plan.nodes) - 1

    def schedule(self, spec: L.Spec) -> tuple:
        """(period, phase) of an op producing positions of `spec`."""
        if self.dense:
            return 1, 0
        return spec.step, spec.first % spec.step

    def add(self, op: Op) -> Op:
        self.plan.ops.append(op)
        self.plan.nodes[op.dst].period, self.plan.nodes[op.dst].phase = op.period, op.phase
        return op

    def copy_op(self, src, spec, label) -> Op:
        node = self.plan.nodes[src]
        period, phase = self.schedule(spec) if not spec.is_vector else self.head_schedule()
        dst = self.node(node.channels, node.features)
        return self.add(Op(COPY, src, dst, period, phase, cin=node.channels, cout=node.channels,
                           fin=node.features, fout=node.features, label=label))

    def head_schedule(self) -> tuple:
        w = self.plan.window
        return (1, w - 1) if self.dense else (self.plan.hop, w - 1)

    # -- layers
    def run(self):
        m = self.model
        spec = m.specs[0]
        cur = self.node(spec.channels, spec.features)
        fuse = None  # op whose epilogue may still absorb an affine/activation
        end = m._body_end()
        for i, layer in enumerate(m.layers[:end]):
            cur, spec, fuse = self.layer(layer, cur, spec, fuse, f"layer {i}")
        head = m.layers[end] if end < len(m.layers) else L.LastFrame()
        cur, spec, fuse = self.head(head, cur, spec, f"layer {end}")
        for i, layer in enumerate(m.layers[end + 1:], start=end + 1):
            cur, spec, fuse = self.layer(layer, cur, spec, fuse, f"layer {i}")
        self.plan.output_shape = tuple(m.output_shape)
        self.plan.out_transpose = len(m.output_shape) == 2
        self.size_rings()
        return self.plan

    def layer(self, layer, cur, spec, fuse, where):
        out_spec = layer.out_spec(spec, where)
        name = type(layer).__name__
        if isinstance(layer, (L.Identity,)) and not isinstance(layer, L.Softmax) \
                and _act_code(layer) is None:
            return cur, out_spec, fuse
        act = _act_code(layer)
        if act is not None:
            if fuse is None or not fuse.fusable():
                fuse = self.copy_op(cur, spec, f"{where} {name}")
                cur = fuse.dst
            fuse.act, fuse.act_param = act
            fuse.label += f"+{name}"
            return cur, out_spec, fuse
        if isinstance(layer, L._BatchNorm):
            scale, shift = layer.scale_shift()
            if fuse is None or not fuse.fusable() or fuse.kind == SOFTMAX:
                fuse = self.copy_op(cur, spec, f"{where} {name}")
                cur = fuse.dst
            self.fold_affine(fuse, scale, shift)
            fuse.label += f"+{name}"
            return cur, out_spec, fuse
        if isinstance(layer, L.Softmax):
            node = self.plan.nodes[cur]
            period, phase = self.schedule(spec) if not spec.is_vector else self.head_schedule()
            dst = self.node(node.channels, node.features)
            op = self.add(Op(SOFTMAX, cur, dst, period, phase, cin=node.channels,
                             cout=node.channels, fin=node.features, fout=node.features,
                             label=f"{where} Softmax"))
            return dst, out_spec, op
        if isinstance(layer, L.Linear):
            w4 = layer.weight[:, :, None, None]
            return self.conv_like(cur, spec, out_spec, w4, layer.bias, 1, 1, 1, 1, 0, 1,
                                  1, 0, f"{where} Linear")
        if isinstance(layer, L.Flatten):  # after the head: (F, C) column -> (C*F) in C order
            node = self.plan.nodes[cur]
            c, f = node.channels, node.features
            index = np.array([[0, fi * c + ci] for ci in range(c) for fi in range(f)], dtype=np.int64)
            period, phase = self.head_schedule()
            dst = self.node(c * f, 1)
            op = self.add(Op(GATHER, cur, dst, period, phase, cin=c, cout=c * f, index=index,
                             label=f"{where} Flatten"))
            return dst, out_spec, op
        if isinstance(layer, (L.Conv1d, L.Conv2d)):
            w4 = layer.weight[:, :, None, :] if isinstance(layer, L.Conv1d) else layer.weight
            return self.conv_like(cur, spec, out_spec, w4, layer.bias, layer.groups, layer.k_f,
                                  layer.s_f, layer.d_f, layer.p_f, layer.k_t, layer.d_t,
                                  layer.causal, f"{where} {name}")
        if isinstance(layer, L._Pool):
            node = self.plan.nodes[cur]
            period, phase = self.schedule(out_spec)
            step = layer.d_t * (spec.step if self.dense else 1)
            dst = self.node(out_spec.channels, out_spec.features)
            op = self.add(Op(POOL_MAX if layer.op == "max" else POOL_AVG, cur, dst, period, phase,
                             ntaps=layer.k_t, tap_step=step, cin=node.channels,
                             cout=node.channels, fin=node.features,
                             fout=out_spec.features or 1, kf=layer.k_f, sf=layer.s_f,
                             label=f"{where} {name}"))
            op.macs = layer.k_t * layer.k_f * op.fout * op.cout
            return dst, out_spec, op
        if isinstance(layer, L.Residual):
            return self.residual(layer, cur, spec, out_spec, where)
        raise ModelError(f"{where}: {name} has no streaming kernel")

    def conv_like(self, cur, spec, out_spec, w4, bias, groups, k_f, s_f, d_f, p_f, k_t, d_t,
                  causal, label):
        node = self.plan.nodes[cur]
        period, phase = self.schedule(out_spec) if not spec.is_vector else self.head_schedule()
        step = d_t * (spec.step if (self.dense and not spec.is_vector) else 1)
        c_out = w4.shape[0]
        dst = self.node(c_out, out_spec.features)
        fout = out_spec.features or 1
        op = self.add(Op(CONV, cur, dst, period, phase, ntaps=k_t, tap_step=step, cin=node.channels,
                         cout=c_out, groups=groups, fin=node.features, fout=fout, kf=k_f, sf=s_f,
                         pf=p_f, df=d_f, weight=_conv_weight(np.asarray(w4, np.float32), groups),
                         shift=None if bias is None else np.asarray(bias, np.float32).copy(),
                         label=label))
        op.macs = k_t * k_f * (node.channels // groups) * c_out * fout
        return dst, out_spec, op

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
            op.weight = np.ascontiguousarray(w, dtype=np.float32)
        else:
            old_scale = np.ones(len(scale)) if op.scale is None else op.scale.astype(np.float64)
            op.scale = (old_scale * scale).astype(np.float32)
        op.shift = (old_shift * scale + shift).astype(np.float32)

    def residual(self, layer, cur, spec, out_spec, where):
        body, body_spec = cur, spec
        fuse = None  # the block's input is also read by the skip: nothing may fuse into it
        for i, sub in enumerate(layer.body):
            body, body_spec, fuse = self.layer(sub, body, body_spec, fuse, f"{where}.body[{i}]")
        if body == cur:  # identity-only body: still needs its own node
            body = self.copy_op(cur, spec, f"{where}.body").dst
        skip = cur
        if layer.skip is not None:
            skip, _, _ = self.layer(layer.skip, cur, spec, None, f"{where}.skip")
        node = self.plan.nodes[body]
        period, phase = self.schedule(out_spec)
        dst = self.node(node.channels, node.features)
        op = self.add(Op(ADD, body, dst, period, phase, src2=skip, cin=node.channels,
                         cout=node.channels, fin=node.features, fout=node.features,
                         label=f"{where} Residual add"))
        return dst, out_spec, op

    def head(self, head, cur, spec, where):
        out_spec = head.out_spec(spec, where)
        node = self.plan.nodes[cur]
        period, phase = self.head_schedule()
        delay = self.model.delay
        step, offset = (spec.step, delay) if self.dense else (1, 0)
        name = type(head).__name__
        c, f = node.channels, node.features
        if isinstance(head, L.LastFrame):
            dst = self.node(c, f)
            op = Op(COPY, cur, dst, period, phase, tap_offset=offset, cin=c, cout=c, fin=f, fout=f)
        elif isinstance(head, L.GlobalMaxPool):
            dst = self.node(c, 1)
            op = Op(GMAX, cur, dst, period, phase, ntaps=spec.length, tap_step=step,
                    tap_offset=offset, cin=c, cout=c, fin=f, fout=1)
            op.macs = spec.length * c * f
        elif isinstance(head, L.GlobalAvgPool):
            # Running sums (float64, one per stride phase), updated as each column is
            # produced: the column entering and the one leaving, O(C) per frame whatever
            # the window; re-summed exactly every n updates so nothing drifts. It runs on
            # the body's schedule and its output is the sum for position t - delay.
            n = spec.length
            dst = self.node(c, 1)
            op = Op(RMEAN, cur, dst, node.period, node.phase, ntaps=2, tap_step=n * step,
                    cin=c, cout=c, fin=f, fout=1, nslots=step, npos=n,
                    delay=delay if self.dense else 0)
            op.macs = 3 * c * f
        elif isinstance(head, L.Flatten):  # window (C, F, n) flattened in C order
            n = spec.length
            index = np.array([[j, fi * c + ci] for ci in range(c) for fi in range(f) for j in range(n)],
                             dtype=np.int64)
            dst = self.node(c * f * n, 1)
            op = Op(GATHER, cur, dst, period, phase, ntaps=n, tap_step=step, tap_offset=offset,
                    cin=c, cout=c * f * n, index=index)
        else:
            raise ModelError(f"{where}: {name} has no streaming kernel")
        op.label = f"{where} {name}"
        self.add(op)
        return dst, out_spec, op

    def size_rings(self):
        """Each node keeps what its readers need, plus block - 1 rows so that push_many
        can run one op over a whole block of frames before the next op reads it."""
        need = [1] * len(self.plan.nodes)
        for op in self.plan.ops:
            need[op.src] = max(need[op.src], op.tap_offset + (op.ntaps - 1) * op.tap_step + 1)
        for node, rows in zip(self.plan.nodes, need):
            node.ring = rows + self.plan.block - 1


def build_plan(model, mode: str = "dense", block: int = 64) -> Plan:
    """Compile ``model`` (a :class:`~deepshift_edge.model.Sequential`) for streaming;
    ``push_many`` processes up to ``block`` frames per op call."""
    if mode not in ("dense", "decimated"):
        raise ModelError(f"mode must be 'dense' or 'decimated', got {mode!r}")
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or not 1 <= block <= 4096:
        raise ModelError(f"block must be an integer in 1..4096, got {block!r}")
    builder = _Builder(model, mode)
    builder.plan.block = int(block)
    return builder.run()
