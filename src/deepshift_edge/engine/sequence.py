"""Plans for ``semantics='sequence'``: a fully convolutional model run over a whole recording.

The output for position ``j`` is the offline network over all frames so far, at ``j``
(docs/semantics.md). Zero padding exists only at the recording's start and, after
``flush()``, at its end, so there are no per-window strips: every operator computes each of
its positions once, as soon as its inputs hold the positions it reads. A tap before the
start, or past the end once the recording is flushed, is padding.

The compiled core keeps, per node, how many positions it has computed (``cnt``) and, after
``flush()``, how many it will have in all (``fin``). An op is ready when the newest input
position its next output reads exists (or its input is final). This module builds the ops
and sizes every ring by simulating those counts: over a warm-up longer than any delay, and
for a flush after every recording length up to one period past it.
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np

from ..errors import ModelError
from ..nn import layers as L
from ..nn import merge as M
from . import plan as P


class _SequenceBuilder(P._Builder):
    """One op per node; taps addressed by position (Op.pstride/ppad/pdil and input offsets)."""

    def __init__(self, model, block: int):
        super().__init__(model, "decimated", block)
        self.plan.sequence = True
        self.plan.hop = model.hop
        self.length_of: Dict[int, int] = {}  # plan node length taken from another model node

    def run(self) -> P.Plan:
        m = self.model
        spec0 = self.specs[0]
        self.interior[0] = self.new_node(spec0.channels, spec0.features, label="input")
        self.strip_rows = {}  # no strips: every position is computed once, in order
        self.fused = self.fold_pads_and_chomps()
        for i in range(1, len(m.nodes)):
            if i in self.fused:
                continue
            self.node(i)
        self.plan.output_shape = tuple(m.output_shape)
        self.plan.out_transpose = len(m.output_shape) == 2
        out = self.interior[self.base(len(m.nodes) - 1)]
        if not any(op.dst == out for op in self.plan.ops):  # the output is the input, reshaped
            spec = self.specs[-1]
            op = P.Op(P.COPY, self.new_node(spec.channels, spec.features or 1), 1, 0,
                      inputs=[(out, 0, spec.channels, 0)], cin=spec.channels, cout=spec.channels,
                      fin=spec.features or 1, fout=spec.features or 1, label="output")
            self.add(op, len(m.nodes) - 1, "interior")
            out = op.dst
        self.plan.out_node = out
        return self.plan

    # A conv/pool reading a Pad (its only consumer) takes the zeros as its own padding; a
    # Crop(0, r) right after a conv/pool whose right padding is >= r (a TCN's chomp) takes
    # r zeros off it. Either way the values are the same and no node needs a window edge.
    def fold_pads_and_chomps(self) -> set:
        m, cons = self.model, self.consumers
        self.pads: Dict[int, tuple] = {}
        gone = set()
        for i, node in enumerate(m.nodes[1:], start=1):
            layer = node.layer
            if isinstance(layer, L._TimeLayer) and not layer.ceil_mode:
                j = node.inputs[0]
                pl, pr = layer.pad_t
                # A Pad's zeros are values: a conv, or an average counting padding, treats its
                # own zeros alike; a max pool or an average that skips padding does not.
                takes_zeros = not isinstance(layer, L._Pool) or (layer.op == "avg" and layer.count_include_pad)
                if isinstance(m.nodes[j].layer, M.Pad) and len(cons[j]) == 1 and takes_zeros:
                    pad = m.nodes[j].layer
                    pl, pr = pl + pad.left, pr + pad.right
                    gone.add(j)
                    self.alias[j] = ("copy", m.nodes[j].inputs[0], 0, None)
                self.pads[i] = (pl, pr)
        for i, node in enumerate(m.nodes[1:], start=1):
            if isinstance(node.layer, M.Crop) and node.layer.left == 0:
                j = node.inputs[0]
                if j in self.pads and len(cons[j]) == 1 and self.pads[j][1] >= node.layer.right:
                    pl, pr = self.pads[j]
                    self.pads[j] = (pl, pr - node.layer.right)
                    self.alias[i] = ("copy", j, 0, None)
                    self.length_of[j] = i  # the conv's node now holds the cropped positions
                    gone.add(i)
        return gone

    def node(self, i: int):
        node = self.model.nodes[i]
        layer = node.layer
        where = f"node {node.name} ({type(layer).__name__})"
        in_spec = self.specs[node.inputs[0]]
        if isinstance(layer, (M.Pad, M.Crop)):
            raise ModelError(f"{where}: semantics='sequence' takes zeros in time only as a conv's "
                             f"or pool's own padding (a Pad right before it, a right Crop right after "
                             f"it); this {type(layer).__name__} stands alone")
        if layer.is_head or in_spec.is_vector:
            raise ModelError(f"{where}: semantics='sequence' is for models without a head")
        if P.is_alias(layer, in_spec):
            self.alias[i] = ("copy", node.inputs[0], 0, None)
            return
        if self.try_fuse(i, layer, node.inputs[0]):
            return
        spec = self.specs[i]
        op = self.template(i, layer, list(node.inputs), where)
        op.period, op.phase = 1, 0  # readiness, not a schedule, decides when it runs
        op.dst = self.new_node(spec.channels, spec.features or 1, label=node.name)
        if isinstance(layer, L._TimeLayer):
            pl, pr = self.pads.get(i, layer.pad_t)
            op.pstride, op.ppad, op.ppadr, op.pdil = layer.s_t, pl, pr, layer.d_t
            op.ntaps = layer.k_t
        offsets = self.merge_offsets(i)
        op.inputs = [(self.interior[self.base(j)], 0, self.specs[j].channels, off)
                     for j, off in zip(node.inputs, offsets)]
        op.label = where
        self.add(op, i, "interior")
        self.interior[i] = op.dst

    def merge_offsets(self, i: int) -> list:
        """Position offsets of a merge's inputs (the left crop of the right-aligned sum); they
        must not depend on the recording's length."""
        node = self.model.nodes[i]
        if len(node.inputs) == 1:
            return [0]
        seen = set()
        base = self.model.window
        for t in range(base, base + 2 * self.model.hop + 1):
            specs = self.model.node_specs(t)
            n = min(specs[j].length for j in node.inputs)
            seen.add(tuple(specs[j].length - n for j in node.inputs))
        if len(seen) != 1:
            raise ModelError(f"node {node.name}: its branches' lengths differ by an amount that "
                             f"depends on the recording's length (strides); semantics='sequence' "
                             f"needs branches that stay aligned")
        return list(seen.pop())


def _taps(op: P.Op, j: int) -> list:
    """Input positions (per input) that output position j of op reads."""
    out = []
    for inp in op.inputs:
        off = inp[3]
        out.append([j * op.pstride - op.ppad + i * op.pdil + off for i in range(op.ntaps)])
    return out


class _Counts:
    """The readiness rules of the compiled core on position counts only (for ring sizes)."""

    def __init__(self, plan: P.Plan):
        self.plan = plan
        self.cnt = [0] * len(plan.nodes)
        self.lag = [0] * len(plan.nodes)

    def ready(self, op, fin) -> bool:
        j = self.cnt[op.dst]
        if fin is not None and j >= fin[op.dst]:
            return False
        if fin is None:
            for inp, taps in zip(op.inputs, _taps(op, j)):
                if taps[-1] >= self.cnt[inp[0]]:
                    return False
        return True

    def run(self, op, fin):
        j = self.cnt[op.dst]
        for inp, taps in zip(op.inputs, _taps(op, j)):
            node = inp[0]
            for p in taps:
                if p >= 0 and (fin is None or p < fin[node]):
                    self.lag[node] = max(self.lag[node], self.cnt[node] - 1 - p)
        self.cnt[op.dst] += 1

    def frame(self) -> int:
        """One input frame; returns the output positions it produced."""
        self.cnt[0] += 1
        produced = 0
        for op in self.plan.ops:
            while self.ready(op, None):
                self.run(op, None)
                produced += op.dst == self.plan.out_node
        return produced

    def flush(self, fin):
        for op in self.plan.ops:
            while self.ready(op, fin):
                self.run(op, fin)


def final_lengths(model, plan: P.Plan, frames: int, builder_nodes: List[int]) -> List[int]:
    """Positions each plan node holds after a flush of a recording of `frames` frames."""
    specs = model.node_specs(frames)
    out = [0] * len(plan.nodes)
    out[0] = frames
    for model_node, node in builder_nodes:
        out[node] = specs[model_node].length
    return out


def build_sequence_plan(model, block: int = 64) -> P.Plan:
    b = _SequenceBuilder(model, block)
    plan = b.run()
    owner = [(b.length_of.get(op.model_node, op.model_node), op.dst) for op in plan.ops]
    # How far each model node's final length is from its plan node: fused layers share nodes.
    warm = 3 * model.receptive_field + 4 * model.hop + 8
    min_frames = model._min_window(1)
    counts = _Counts(plan)
    lags = [0] * len(plan.nodes)
    for t in range(1, warm + 2 * model.hop + 1):
        if counts.frame() > 1:
            raise ModelError("semantics='sequence': this model's output runs ahead of its input "
                             "(padding wider than the kernel): more than one position would be due "
                             "in one frame")
        if t >= min_frames:  # a flush after t frames, from a copy of the counts
            trial = _Counts(plan)
            trial.cnt, trial.lag = list(counts.cnt), list(counts.lag)
            trial.flush(final_lengths(model, plan, t, owner))
            lags = [max(a, b_) for a, b_ in zip(lags, trial.lag)]
    need = [max(a, b_) + 1 for a, b_ in zip(lags, counts.lag)]
    for node, rows in zip(plan.nodes, need):
        node.ring = rows
    plan.zero_col = max([nd.poscol for nd in plan.nodes] + [1])
    plan.owner = owner
    plan.min_frames = min_frames
    return plan


__all__ = ["build_sequence_plan", "final_lengths", "np"]
