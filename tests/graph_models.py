"""Graph models for the format tests (tests/test_io.py, tests/fuzz_corpus.py).

:func:`graph_models` gives fixed models that together use every node type of format v2,
every padding form of convs and pools, ``ceil_mode`` and ``count_include_pad``, both
semantics, an implicit head, n-ary merges and a node read twice. :func:`random_graphs`
draws small random graphs (branches, merges, strides, paddings, heads) for Hypothesis.
"""
from __future__ import annotations

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

import deepshift_edge as dse
from strategies import randomize


def graph_models():
    """Graph models that together use every node type and padding form of format v2."""
    rng = np.random.default_rng(2)

    def bn(n, two_d=False):
        layer = (dse.BatchNorm2d if two_d else dse.BatchNorm1d)(n, eps=1e-3)
        layer.weight = rng.uniform(0.5, 2, n)
        layer.bias = rng.standard_normal(n)
        layer.running_mean = rng.standard_normal(n)
        layer.running_var = rng.uniform(0.5, 2, n)
        return layer

    def prelu(n):
        layer = dse.PReLU(n)
        layer.weight = rng.uniform(0, 0.5, n)
        return layer

    out = {}
    # WaveNet: gated causal convs, residual adds, an n-ary sum of skips; no head (implicit LastFrame)
    x = dse.Input(3, name="audio")
    h = dse.Conv1d(3, 8, 2, padding="causal", seed=1)(x, name="front")
    skips = []
    for i, d in enumerate((1, 2, 4)):
        t = dse.Tanh()(dse.Conv1d(8, 8, 2, dilation=d, padding="causal", seed=10 + i)(h))
        s = dse.Sigmoid()(dse.Conv1d(8, 8, 2, dilation=d, padding="causal", seed=20 + i)(h))
        g = dse.Mul()(t, s, name=f"gate{i}")
        skips.append(dse.Conv1d(8, 4, 1, seed=30 + i)(g, name=f"skip{i}"))
        h = dse.Add()(h, dse.Conv1d(8, 8, 1, bias=False, seed=40 + i)(g), name=f"res{i}")
    y = dse.ReLU()(dse.Add()(*skips, name="skip_sum"))
    out["wavenet"] = dse.Model(x, dse.Conv1d(4, 5, 1, seed=50)(y), window=16)

    # Inception: four branches with every 1-D padding form, concatenated
    x = dse.Input(4)
    b1 = dse.Conv1d(4, 3, 1, seed=1)(x)
    b2 = dse.Conv1d(4, 3, 3, padding="same", seed=2)(x)
    b3 = dse.Conv1d(4, 3, 5, padding=2, seed=3)(x)
    b4 = dse.Conv1d(4, 3, 1, seed=4)(dse.MaxPool1d(3, stride=1, padding=1)(x))
    b5 = dse.Conv1d(4, 2, 4, padding=(3, 0), dilation=1, seed=5)(x)
    b6 = dse.Conv1d(4, 2, 2, padding="same", dilation=3, seed=6)(x)  # even extent: the odd zero on the right
    c = dse.ReLU()(bn(16)(dse.Concat()(b1, b2, b3, b4, b5, b6, name="concat")))
    c = dse.AvgPool1d(3, stride=1, padding=1, count_include_pad=False)(c)
    c = dse.MaxPool1d(2, padding=1, ceil_mode=True)(c)
    c = dse.AvgPool1d(2, padding=(1, 0), ceil_mode=True)(c)
    c = dse.AvgPool1d(3, stride=1, padding="same")(c)
    y = dse.Softmax()(dse.Linear(16, 5, seed=7)(dse.GlobalAvgPool()(c)))
    out["inception"] = dse.Model(x, y, window=24)

    # A gated conv written as one conv and two channel slices, F.pad and a chomp (Crop)
    x = dse.Input(2)
    a = dse.Conv1d(2, 8, 3, padding=(2, 0), seed=1)(x)
    g = dse.Mul()(dse.Tanh()(dse.ChannelSlice(0, 4)(a)), dse.Sigmoid()(dse.ChannelSlice(4, 8)(a)))
    p = dse.Pad(2, 1)(g)
    c = dse.Crop(0, 1)(dse.Conv1d(4, 4, 3, seed=2)(p))  # chomp
    c = prelu(4)(dse.Dropout(0.2)(c))
    y = dse.PReLU()(dse.Linear(4, 3, seed=3)(dse.GlobalMaxPool()(dse.Add()(c, dse.Crop(2, 0)(dse.Pad(2, 0)(g))))))
    out["gated_chunk"] = dse.Model(x, y, window=12)

    # 2-D front end, 'same'/causal/pair paddings and 2-D pools with padding, reshaped to 1-D
    x = dse.Input((2, 8))
    h = dse.ReLU()(bn(4, True)(dse.Conv2d(2, 4, 3, padding="same", seed=1)(x)))
    h = dse.MaxPool2d((2, 2), stride=(2, 1), padding=(0, 1), ceil_mode=True)(h)
    h = dse.AvgPool2d((1, 3), stride=(1, 1), padding=(0, "same"), count_include_pad=False)(h)
    h = dse.Conv2d(4, 4, (3, 2), padding=((2, 0), "causal"), seed=2)(h)
    h = dse.Conv2d(4, 4, 3, padding=(1, (2, 0)), groups=2, seed=3)(h)
    h = dse.Conv2d(4, 4, (1, 2), padding="causal", seed=4)(h)
    h = dse.AvgPool2d(1, padding=0)(dse.Conv2d(4, 2, 1, padding=1, seed=5)(h))
    f = dse.FrameFlatten()(h)
    y = dse.ELU(0.7)(dse.Conv1d(2 * 6, 6, 1, seed=6)(f))
    y = dse.Hardtanh(-0.5, 0.5)(dse.Linear(6, 3, seed=7)(dse.GlobalAvgPool()(y)))
    out["crnn_2d"] = dse.Model(x, y, window=10)

    # A strided residual block: strided body, strided 1x1 skip + BN + ReLU, then a flatten head
    x = dse.Input(3)
    body = dse.ReLU()(dse.Conv1d(3, 6, 3, stride=2, padding=1, seed=1)(x))
    body = dse.Conv1d(6, 6, 3, padding=1, seed=2)(body)
    skip = dse.ReLU()(bn(6)(dse.Conv1d(3, 6, 1, stride=2, seed=3)(x)))
    h = dse.Add()(body, skip)
    y = dse.Linear(6 * 6, 2, seed=4)(dse.Flatten()(dse.SiLU()(h)))
    out["strided_residual"] = dse.Model(x, y, window=12)

    # Sequence semantics: a 'same'-padded TCN without a head, one output per position
    x = dse.Input(2)
    h = dse.Conv1d(2, 4, 3, padding="same", seed=1)(x)
    h = dse.Add()(dse.GELU()(dse.Conv1d(4, 4, 3, dilation=2, padding="same", seed=2)(h)), h)
    out["sequence_tcn"] = dse.Model(x, dse.Conv1d(4, 3, 1, seed=3)(h), window=9, semantics="sequence")

    # One node read twice, and a name that looks like a Sequential's (still a graph)
    x = dse.Input(2)
    a = dse.Conv1d(2, 2, 2, seed=1)(x, name="layers.0")
    out["shared_input"] = dse.Model(x, dse.Mul()(a, a, name="square"), window=4)
    return out


# ---------------------------------------------------------------------------- random graphs
def _time_padding(draw, eff: int, stride: int, pool: bool):
    """A padding argument for an operator spanning ``eff`` frames (pools: at most half)."""
    cap = eff // 2 if pool else eff - 1
    forms = ["valid", "int", "pair"] + (["same"] if stride == 1 and (not pool or eff % 2) else []) \
        + (["causal"] if not pool else [])
    form = draw(st.sampled_from(forms))
    if form == "int":
        return draw(st.integers(0, cap))
    if form == "pair":
        return (draw(st.integers(0, cap)), draw(st.integers(0, cap)))
    return form


@st.composite
def random_graphs(draw):
    """A random valid graph model (1-D or 2-D frames) with random weights."""
    two_d = draw(st.booleans())
    c0 = draw(st.integers(1, 4))
    f = draw(st.integers(2, 5)) if two_d else None
    x = dse.Input((c0, f) if two_d else c0)
    live = [(x, c0, 1)]  # (tensor, channels, time step)
    for _ in range(draw(st.integers(1, 8))):
        t, c, step = draw(st.sampled_from(live + live[-1:] * len(live)))  # mostly a chain
        op = draw(st.sampled_from(["conv", "conv", "pool", "act", "bn", "merge", "slice", "pad",
                                   "crop"]))
        if op == "conv":
            k, d = draw(st.integers(1, 3)), draw(st.integers(1, 2))
            s = draw(st.sampled_from([1, 1, 2])) if step < 4 else 1
            pad = _time_padding(draw, (k - 1) * d + 1, s, pool=False)
            out = draw(st.integers(1, 4))
            if two_d:
                layer = dse.Conv2d(c, out, (3, k), stride=(1, s), dilation=(1, d), padding=(1, pad))
            else:
                g = draw(st.sampled_from([g for g in (1, 2) if c % g == 0 and out % g == 0]))
                layer = dse.Conv1d(c, out, k, stride=s, dilation=d, padding=pad, groups=g,
                                   bias=draw(st.booleans()))
            live.append((layer(t), out, step * s))
        elif op == "pool":
            k = draw(st.integers(1, 3))
            s = draw(st.sampled_from([1, k])) if step < 4 else 1
            pad = _time_padding(draw, k, s, pool=True)
            ceil, avg = draw(st.booleans()), draw(st.booleans())
            kw = dict(count_include_pad=draw(st.booleans())) if avg else {}
            if two_d:
                cls = dse.AvgPool2d if avg else dse.MaxPool2d
                layer = cls((1, k), stride=(1, s), padding=(0, pad), ceil_mode=ceil, **kw)
            else:
                cls = dse.AvgPool1d if avg else dse.MaxPool1d
                layer = cls(k, stride=s, padding=pad, ceil_mode=ceil, **kw)
            live.append((layer(t), c, step * s))
        elif op == "act":
            layer = draw(st.sampled_from([dse.ReLU(), dse.Tanh(), dse.ELU(0.5), dse.PReLU(c),
                                          dse.Softsign(), dse.Hardtanh(-2.0, 2.0)]))
            live.append((layer(t), c, step))
        elif op == "bn":
            live.append(((dse.BatchNorm2d if two_d else dse.BatchNorm1d)(c)(t), c, step))
        elif op == "merge":
            kind = draw(st.sampled_from(["Add", "Mul", "Concat"]))
            mates = [m for m in live if m[2] == step and (kind == "Concat" or m[1] == c)]
            others = draw(st.lists(st.sampled_from(mates), min_size=1, max_size=2))
            ins = [t] + [m[0] for m in others]
            ch = c + sum(m[1] for m in others) if kind == "Concat" else c
            live.append((getattr(dse, kind)()(*ins), ch, step))
        elif op == "slice" and c > 1:
            a = draw(st.integers(0, c - 1))
            b = draw(st.integers(a + 1, c))
            live.append((dse.ChannelSlice(a, b)(t), b - a, step))
        elif op == "pad":
            live.append((dse.Pad(draw(st.integers(0, 2)), draw(st.integers(0, 2)))(t), c, step))
        elif op == "crop":
            live.append((dse.Crop(draw(st.integers(0, 1)), draw(st.integers(0, 1)))(t), c, step))
    y, c, _ = live[-1]
    if two_d and draw(st.booleans()):
        y, c = dse.FrameFlatten()(y), c * f
        two_d = False
    head = draw(st.sampled_from(["none", "avg", "max", "last", "flatten"]))
    semantics = "window"
    if head == "none" and draw(st.booleans()):
        semantics = "sequence"
    elif head != "none":
        y = {"avg": dse.GlobalAvgPool(), "max": dse.GlobalMaxPool(), "last": dse.LastFrame(),
             "flatten": dse.Flatten()}[head](y)
        if head in ("avg", "max") or (head == "last" and not two_d):
            y = dse.Linear(c, 2)(y)
    try:
        probe = dse.Model(x, y, semantics=semantics)
        model = dse.Model(x, y, window=probe.window + draw(st.integers(0, 6)), semantics=semantics)
    except dse.ModelError:
        assume(False)
    randomize(model.layers, np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1))))
    return model
