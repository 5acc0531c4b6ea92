"""Hypothesis strategies: random *graph* models (branches, gates, concatenations, skip sums,
2-D to 1-D reshapes, Pad/Crop, strided branches, padding of every kind) with random weights.

Built through the public functional API (``dse.Input`` ... ``dse.Model``). Valid by
construction where that is cheap: branches that meet share their total stride (a strided
body next to a strided 1x1 or pooled skip), and their channel counts where the merge
needs it. The chain-shaped layers come from :mod:`strategies`, so every layer option
drawn there is drawn here too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np
from hypothesis import strategies as st

import deepshift_edge as dse
import strategies as S

HEADS = ("none", "last", "avg", "max", "flatten")


@dataclass
class GraphCase:
    model: dse.Model
    x: np.ndarray
    seed: int
    head: str

    def __repr__(self):
        return (f"GraphCase(seed={self.seed}, head={self.head!r}, T={len(self.x)}, "
                f"window={self.model.window}, hop={self.model.hop},\n  model={self.model!r})")


class _T:
    """A tensor under construction with its shape bookkeeping (a strategies._State)."""

    def __init__(self, tensor, state: S._State):
        self.tensor, self.state = tensor, state

    def fork(self) -> "_T":
        st_ = S._State(self.state.c, self.state.f, True)
        st_.hop, st_.rf = self.state.hop, self.state.rf
        return _T(self.tensor, st_)


def _chain(draw, t: _T, n: int, strided=True) -> _T:
    """n chain layers (convs, pools, activations, BN) applied to t."""
    for _ in range(n):
        kind = draw(st.sampled_from(["conv", "conv", "act", "bn", "pool", "prelu"]))
        two_d = t.state.two_d
        if kind == "conv":
            layer = S._conv2d(draw, t.state, strided) if two_d else S._conv1d(draw, t.state, strided)
        elif kind == "pool":
            layer = S._pool2d(draw, t.state) if two_d else S._pool1d(draw, t.state, strided)
        elif kind == "bn":
            layer = S._batchnorm(draw, t.state)
        elif kind == "prelu":
            layer = dse.PReLU(draw(st.sampled_from([1, t.state.c])))
        else:
            layer = S.activation(draw)
        t = _T(layer(t.tensor), t.state)
    return t


def _to_channels(draw, t: _T, c_out: int, stride: int = 1) -> _T:
    """A conv giving exactly c_out channels (and the feature count kept), time stride `stride`."""
    st_ = t.state
    k = draw(st.sampled_from([1, 1, 3]))
    pad = draw(st.sampled_from(["same", 1, (0, 2), "causal"])) if k > 1 and stride == 1 else \
        ((k - 1) // 2 if k > 1 else 0)
    if st_.two_d:
        layer = dse.Conv2d(st_.c, c_out, (1, k), stride=(1, stride), padding=(0, pad))
    else:
        layer = dse.Conv1d(st_.c, c_out, k, stride=stride, padding=pad)
    st_.advance(k, 1, stride)
    st_.c = c_out
    return _T(layer(t.tensor), st_)


def _block(draw, t: _T) -> _T:
    kind = draw(st.sampled_from(["residual", "strided-residual", "gate", "concat", "skip-sum",
                                 "pad-crop", "chain", "mul3", "flatten2d"]))
    st_ = t.state
    if kind == "flatten2d":
        if not st_.two_d or st_.c * st_.f > S.MAX_CHANNELS * 3:
            kind = "chain"
        else:
            st_.c, st_.f = st_.c * st_.f, None
            return _T(dse.FrameFlatten()(t.tensor), st_)
    if kind == "chain":
        return _chain(draw, t, draw(st.integers(1, 2)))
    if kind in ("residual", "strided-residual"):
        stride = 2 if kind == "strided-residual" and st_.hop * 2 <= S.MAX_HOP else 1
        c = draw(st.integers(1, 4))
        body = _to_channels(draw, t.fork(), c, stride)
        body = _chain(draw, body, draw(st.integers(0, 2)), strided=False)
        skip = t.fork()
        skip_kind = draw(st.sampled_from(["identity", "conv", "pool"]))
        if stride > 1 and skip_kind == "identity":
            skip_kind = "conv"
        if skip_kind == "identity" and skip.state.c != body.state.c:
            skip_kind = "conv"
        if skip_kind == "pool":
            if skip.state.two_d:
                skip = _T(dse.MaxPool2d((1, stride), stride=(1, stride))(skip.tensor), skip.state)
            else:
                skip = _T(dse.MaxPool1d(stride, stride=stride, padding=0)(skip.tensor), skip.state)
            skip.state.hop *= stride
            if skip.state.c != body.state.c:
                skip = _to_channels(draw, skip, body.state.c)
        elif skip_kind == "conv":
            skip = _to_channels(draw, skip, body.state.c, stride)
        if body.state.f != skip.state.f or body.state.hop != skip.state.hop:
            return body  # feature counts or strides differ: no merge
        out = dse.Add()(body.tensor, skip.tensor)
        st2 = body.state
        st2.rf = max(body.state.rf, skip.state.rf)
        return _T(out, st2)
    if kind == "gate":  # one conv with 2C outputs, chunked, tanh * sigmoid
        c = draw(st.integers(1, 3))
        both = _to_channels(draw, t.fork(), 2 * c)
        a = dse.Tanh()(dse.ChannelSlice(0, c)(both.tensor))
        b = dse.Sigmoid()(dse.ChannelSlice(c, 2 * c)(both.tensor))
        both.state.c = c
        return _T(dse.Mul()(a, b), both.state)
    if kind == "mul3":  # a product of three branches of one shape
        branches = [_to_channels(draw, t.fork(), st_.c) for _ in range(3)]
        if len({b.state.f for b in branches}) != 1:
            return branches[0]
        st2 = branches[0].state
        st2.rf = max(b.state.rf for b in branches)
        return _T(dse.Mul()(*[b.tensor for b in branches]), st2)
    if kind == "concat":
        n = draw(st.integers(2, 3))
        branches = [_chain(draw, _to_channels(draw, t.fork(), draw(st.integers(1, 3))),
                           draw(st.integers(0, 1)), strided=False) for _ in range(n)]
        if len({b.state.f for b in branches}) != 1 or len({b.state.hop for b in branches}) != 1:
            return branches[0]
        st2 = branches[0].state
        st2.c = sum(b.state.c for b in branches)
        st2.rf = max(b.state.rf for b in branches)
        return _T(dse.Concat()(*[b.tensor for b in branches]), st2)
    if kind == "skip-sum":  # WaveNet: the outputs of every layer of a stack, summed
        c = st_.c
        outs, cur = [], t
        for _ in range(draw(st.integers(2, 3))):
            cur = _to_channels(draw, cur.fork(), c)
            outs.append(cur)
        if len({o.state.f for o in outs}) != 1:
            return cur
        st2 = outs[-1].state
        return _T(dse.Add()(*[o.tensor for o in outs]), st2)
    # pad-crop: explicit F.pad-style zeros, a valid conv over them, a crop
    left, right = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    out = dse.Pad(left, right)(t.tensor)
    t2 = _T(out, st_)
    t2 = _chain(draw, t2, 1, strided=False)
    crop = draw(st.integers(0, 1))
    return _T(dse.Crop(crop, 0)(t2.tensor), t2.state)


def _head(draw, t: _T, head: str):
    layer = S._head_layer(head)
    return t.tensor if layer is None else layer(t.tensor)


@st.composite
def graph_models(draw, dims=(1, 2), heads=HEADS, max_blocks=3):
    """A random valid graph ``dse.Model`` with random weights: (model, head, seed)."""
    dim = draw(st.sampled_from(dims))
    head = draw(st.sampled_from(heads))
    c = draw(st.integers(1, 3))
    if dim == 1:
        x = dse.Input(c)
        state = S._State(c, None, True)
    else:
        f = draw(st.integers(1, 5))
        x = dse.Input((c, f))
        state = S._State(c, f, True)
    t = _T(x, state)
    for _ in range(draw(st.integers(1, max_blocks))):
        t = _block(draw, t)
    y = _head(draw, t, head)
    probe = dse.Model(x, y)
    window = draw(st.sampled_from([None, None, "extra"]))
    window = probe.window + draw(st.integers(1, 9)) if window == "extra" else probe.window
    model = dse.Model(x, y, window=window)
    if head != "none":
        post = S._after_head(draw, model.output_shape)
        for layer in post:
            y = layer(y)
        model = dse.Model(x, y, window=window)
    seed = draw(st.integers(0, 2 ** 32 - 1))
    randomize_graph(model, np.random.default_rng(seed))
    return model, head, seed


def randomize_graph(model, rng: np.random.Generator):
    S.randomize([n.layer for n in model.nodes[1:]], rng)
    for node in model.nodes[1:]:
        if isinstance(node.layer, dse.PReLU):
            node.layer.weight = rng.uniform(-0.5, 1.0, node.layer.num_parameters)
    return model


@st.composite
def graph_cases(draw, dims=(1, 2), heads=HEADS, max_blocks=3):
    model, head, seed = draw(graph_models(dims=dims, heads=heads, max_blocks=max_blocks))
    hop = model.hop
    n_windows = 1 + hop * draw(st.integers(1, 3)) + draw(st.integers(0, hop + 2))
    if draw(st.integers(0, 4)) == 0:
        n_windows += 2 * model.window
    rng = np.random.default_rng(seed ^ 0x5EED)
    x = rng.standard_normal((model.window - 1 + n_windows,) + model.frame_shape).astype(np.float32)
    return GraphCase(model=model, x=x, seed=seed, head=head)


__all__ = ["graph_models", "graph_cases", "GraphCase", "randomize_graph", "HEADS", "List"]
