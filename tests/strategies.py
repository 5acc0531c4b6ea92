"""Hypothesis strategies: random *valid* window networks, random weights, random input.

The entry points are :func:`cases` (a model, an input sequence and the seed of its
weights) and :func:`models`. Everything is built through the public API: layers take
PyTorch argument names and their parameters are set by assignment, from a NumPy
``Generator`` seeded by Hypothesis, so a failing example is reproducible from its
printed seed and architecture.

Architectures are generated *valid by construction* where that is cheap (channel
counts, groups, feature sizes), with budgets that keep every example small:

* the cumulative time stride (``model.hop``) stays <= ``MAX_HOP``;
* the receptive field stays around ``MAX_RF`` frames;
* channel counts stay <= 6 and frames have at most 8 features.

Zero padding of every kind ('same', symmetric, asymmetric, causal; pools with padding,
ceil_mode, count_include_pad) is drawn freely: the window network includes its zeros at
both edges of every window, and the stream must equal it exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
from hypothesis import reject
from hypothesis import strategies as st

import deepshift_edge as dse
from deepshift_edge.nn import layers as _L

MAX_HOP = 8
MAX_RF = 40
MAX_CHANNELS = 6

HEADS = ("none", "last", "avg", "max", "flatten")


# ---------------------------------------------------------------------------- the case object
@dataclass
class Case:
    model: dse.Sequential
    x: np.ndarray  # (T, *frame_shape) float32; the reference sees exactly these values
    seed: int
    head: str

    @property
    def streamable(self) -> bool:
        return self.model.equivalence == "window-exact"

    def __repr__(self):
        return (f"Case(seed={self.seed}, head={self.head!r}, T={len(self.x)}, window={self.model.window}, "
                f"hop={self.model.hop}, equivalence={self.model.equivalence!r},\n  model={self.model!r})")


# ---------------------------------------------------------------------------- weights
def iter_layers(layers):
    """All layers, descending into residual bodies and skips."""
    for layer in layers:
        yield layer
        if isinstance(layer, dse.Residual):
            yield from iter_layers(layer.body)
            if layer.skip is not None:
                yield from iter_layers([layer.skip])


def randomize(model_or_layers, rng: np.random.Generator, gain: float = 1.3):
    """Assign random parameters (by assignment, PyTorch layouts) to every layer."""
    layers = model_or_layers.layers if isinstance(model_or_layers, dse.Sequential) else model_or_layers
    for layer in iter_layers(layers):
        if isinstance(layer, (dse.Conv1d, dse.Conv2d, dse.Linear)):
            shape = layer.weight.shape
            fan_in = int(np.prod(shape[1:]))
            layer.weight = rng.standard_normal(shape) * (gain / math.sqrt(fan_in))
            if layer.bias is not None:
                layer.bias = rng.standard_normal(shape[0]) * 0.5
        elif isinstance(layer, (dse.BatchNorm1d, dse.BatchNorm2d)):
            n = layer.num_features
            layer.weight = rng.uniform(0.5, 1.5, n) * rng.choice([-1.0, 1.0], n)
            layer.bias = rng.standard_normal(n) * 0.5
            layer.running_mean = rng.standard_normal(n) * 0.5
            layer.running_var = rng.uniform(0.2, 3.0, n)  # strictly positive
    return model_or_layers


# ---------------------------------------------------------------------------- generation state
class _State:
    """Shape bookkeeping while a stack is drawn: channels, features, hop, receptive field."""

    def __init__(self, channels: int, features: Optional[int], allow_causal: bool,
                 always_causal: bool = False, legacy: bool = False):
        self.legacy = legacy  # only what the engine streamed before padding inside the window
        self.c = channels
        self.f = features  # None for 1-D models
        self.hop = 1
        self.rf = 1
        self.allow_causal = allow_causal or always_causal
        self.always_causal = always_causal

    @property
    def two_d(self) -> bool:
        return self.f is not None

    def fit_time(self, k: int, d: int, s: int) -> tuple:
        """Shrink (kernel, dilation, stride) until they fit the hop/receptive-field budget."""
        while s > 1 and self.hop * s > MAX_HOP:
            s -= 1
        while d > 1 and self.rf + (k - 1) * d * self.hop > MAX_RF:
            d -= 1
        while k > 1 and self.rf + (k - 1) * d * self.hop > MAX_RF:
            k -= 1
        return k, d, s

    def advance(self, k: int, d: int, s: int):
        self.rf += (k - 1) * d * self.hop
        self.hop *= s


def _time_params(draw, state: _State, strided: bool = True) -> tuple:
    k = draw(st.sampled_from([1, 1, 2, 3, 3, 4, 5]))
    if k == 1 and state.always_causal and draw(st.booleans()):
        k = 2  # mostly convs whose causal padding is not empty
    d = draw(st.sampled_from([1, 1, 1, 2, 3, "large"]))
    if d == "large":  # effective kernel close to the whole (minimum) window
        d = draw(st.integers(4, 12))
    s = draw(st.sampled_from([1, 1, 1, 2, 2, 3, 4])) if strided else 1
    return state.fit_time(k, d, s)


def _channels(draw, state: _State) -> tuple:
    """(groups, out_channels) for a conv on state.c input channels."""
    c_in = state.c
    kind = draw(st.sampled_from(["plain", "plain", "grouped", "depthwise"]))
    if kind == "plain" or c_in == 1:
        return 1, draw(st.integers(1, 4))
    if kind == "grouped":
        divisors = [g for g in range(2, c_in) if c_in % g == 0] or [1, c_in]
        g = draw(st.sampled_from(divisors))
        mult = draw(st.integers(1, max(1, MAX_CHANNELS // g)))
        return g, g * mult
    mult = draw(st.integers(1, max(1, MAX_CHANNELS // c_in)))  # depthwise, channel multiplier
    return c_in, c_in * mult


def _padding(draw, state: _State, k: int = 3, d: int = 1, s: int = 1):
    """Time padding: causal where asked for; otherwise valid or any kind of zeros inside the
    window ('same', symmetric, asymmetric, causal), which the engine streams exactly."""
    if state.always_causal:
        return "causal"
    if state.legacy:
        return "causal" if state.allow_causal and draw(st.integers(0, 2)) == 0 else "valid"
    kind = draw(st.sampled_from(["valid", "valid", "causal", "same", "int", "pair"]))
    if kind == "causal" and not state.allow_causal and draw(st.booleans()):
        kind = "valid"
    if kind == "same" and s != 1:
        kind = "int"
    if kind == "int":
        return draw(st.integers(0, max(1, (k - 1) * d)))
    if kind == "pair":
        return (draw(st.integers(0, (k - 1) * d + 1)), draw(st.integers(0, (k - 1) * d + 1)))
    return kind


# ---------------------------------------------------------------------------- 1-D layers
def _conv1d(draw, state: _State, strided=True, padding=None, c_out=None, groups=None):
    k, d, s = _time_params(draw, state, strided)
    if c_out is None:
        groups, c_out = _channels(draw, state)
    pad = _padding(draw, state, k, d, s) if padding is None else padding
    layer = dse.Conv1d(state.c, c_out, k, stride=s, padding=pad, dilation=d, groups=groups or 1,
                       bias=draw(st.booleans()))
    state.advance(k, d, s)
    state.c = c_out
    return layer


def _pool1d(draw, state: _State, strided=True):
    kind = draw(st.sampled_from(["max", "avg"]))
    k = draw(st.integers(1, 3))
    stride = draw(st.sampled_from([None, 1, 1, 2, 3])) if strided else 1
    s = k if stride is None else stride
    ceil = draw(st.integers(0, 3)) == 0 and not state.legacy
    if kind == "max":
        d = draw(st.sampled_from([1, 1, 2]))
        k2, d2, s2 = state.fit_time(k, d, s)
        if s2 != s:
            stride = s2
        pad = draw(st.integers(0, ((k2 - 1) * d2 + 1) // 2)) if draw(st.booleans()) and not state.legacy else 0
        layer = dse.MaxPool1d(k2, stride=stride, dilation=d2, padding=pad, ceil_mode=ceil)
        state.advance(k2, d2, layer.stride)
    else:
        k2, _, s2 = state.fit_time(k, 1, s)
        if s2 != s or k2 != k:
            stride = s2
        pad = draw(st.integers(0, k2 // 2)) if draw(st.booleans()) and not state.legacy else 0
        layer = dse.AvgPool1d(k2, stride=stride, padding=pad, ceil_mode=ceil,
                              count_include_pad=state.legacy or draw(st.booleans()))
        state.advance(k2, 1, layer.stride)
    return layer


# ---------------------------------------------------------------------------- 2-D layers
def _feature_params(draw, f_in: int) -> tuple:
    """(k_f, s_f, d_f, p_f) giving at least one output feature."""
    k = draw(st.integers(1, 3))
    s = draw(st.sampled_from([1, 1, 2, 3]))
    d = draw(st.sampled_from([1, 1, 2]))
    p = draw(st.sampled_from([0, 0, 1, 2]))
    if f_in + 2 * p < (k - 1) * d + 1:
        d = 1
    if f_in + 2 * p < k:
        k = f_in + 2 * p
    return k, s, d, p


def _out_features(f, k, s, d, p):
    return (f + 2 * p - (k - 1) * d - 1) // s + 1


def _conv2d(draw, state: _State, strided=True, keep_features=False, padding=None, c_out=None):
    k_t, d_t, s_t = _time_params(draw, state, strided)
    if keep_features:  # odd feature kernel with 'same' feature padding
        k_f = draw(st.sampled_from([1, 3]))
        if state.f + 2 * ((k_f - 1) // 2) < k_f:
            k_f = 1
        s_f, d_f, p_f = 1, 1, (k_f - 1) // 2
    else:
        k_f, s_f, d_f, p_f = _feature_params(draw, state.f)
    if c_out is None:
        groups, c_out = _channels(draw, state)
    else:
        groups = 1
    pad_t = _padding(draw, state, k_t, d_t, s_t) if padding is None else padding
    layer = dse.Conv2d(state.c, c_out, (k_f, k_t), stride=(s_f, s_t),
                       padding=(p_f, pad_t), dilation=(d_f, d_t),
                       groups=groups, bias=draw(st.booleans()))
    state.advance(k_t, d_t, s_t)
    state.c = c_out
    state.f = _out_features(state.f, k_f, s_f, d_f, p_f)
    return layer


def _pool2d(draw, state: _State):
    k_f = draw(st.integers(1, min(3, state.f)))
    k_t = draw(st.integers(1, 3))
    k_t, _, _ = state.fit_time(k_t, 1, 1)
    if draw(st.booleans()):
        stride = None
        s_f, s_t = k_f, k_t
        if state.hop * s_t > MAX_HOP:
            stride = (k_f, 1)
            s_t = 1
    else:
        s_f = draw(st.integers(1, 3))
        s_t = draw(st.sampled_from([1, 1, 2, 3]))
        _, _, s_t = state.fit_time(1, 1, s_t)
        stride = (s_f, s_t)
    cls = draw(st.sampled_from([dse.MaxPool2d, dse.AvgPool2d]))
    p_t = draw(st.integers(0, k_t // 2)) if draw(st.booleans()) and not state.legacy else 0
    layer = cls((k_f, k_t), stride=stride, padding=(0, p_t))
    state.advance(k_t, 1, s_t)
    state.f = (state.f - k_f) // s_f + 1
    return layer


# ---------------------------------------------------------------------------- shared layers
ACTIVATIONS = [
    lambda draw: dse.ReLU(),
    lambda draw: dse.ReLU6(),
    lambda draw: dse.LeakyReLU(draw(st.sampled_from([0.01, 0.2, -0.5, 1.5]))),
    lambda draw: dse.Sigmoid(),
    lambda draw: dse.Tanh(),
    lambda draw: dse.HardSwish(),
    lambda draw: dse.Hardsigmoid(),
    lambda draw: dse.SiLU(),
    lambda draw: dse.Mish(),
    lambda draw: dse.GELU(),
    lambda draw: dse.GELU(approximate="tanh"),
    lambda draw: dse.ELU(draw(st.sampled_from([1.0, 0.3]))),
    lambda draw: dse.CELU(draw(st.sampled_from([1.0, 0.5]))),
    lambda draw: dse.SELU(),
    lambda draw: dse.Softplus(draw(st.sampled_from([1.0, 2.0])), draw(st.sampled_from([20.0, 1.0]))),
    lambda draw: dse.Softsign(),
    lambda draw: dse.Hardtanh(draw(st.sampled_from([-1.0, -0.3])), draw(st.sampled_from([1.0, 2.5]))),
]


LEGACY_ACTIVATIONS = ACTIVATIONS[:11]  # before ELU...Hardtanh joined the engine


def activation(draw, state: Optional["_State"] = None):
    pool = LEGACY_ACTIVATIONS if state is not None and state.legacy else ACTIVATIONS
    return draw(st.sampled_from(pool))(draw)


def _batchnorm(draw, state: _State, vector_2d=False):
    cls = dse.BatchNorm2d if (state.two_d or vector_2d) else dse.BatchNorm1d
    return cls(state.c, eps=draw(st.sampled_from([1e-5, 1e-3, 0.1])))


def _residual(draw, state: _State):
    """Body of stride-1 layers (valid or causal), identity or per-frame skip."""
    c_in, f_in = state.c, state.f
    body: List[dse.Layer] = []
    n = draw(st.integers(1, 2))
    for i in range(n):
        c_out = draw(st.integers(1, 4)) if i < n - 1 or draw(st.booleans()) else c_in
        if state.two_d:
            body.append(_conv2d(draw, state, strided=False, keep_features=True, c_out=c_out))
        else:
            body.append(_conv1d(draw, state, strided=False, c_out=c_out, groups=1))
        extra = draw(st.sampled_from(["none", "none", "act", "bn", "bn+act", "pool"]))
        if "bn" in extra:
            body.append(_batchnorm(draw, state))
        if "act" in extra:
            body.append(activation(draw, state))
        if extra == "pool" and not state.two_d:
            body.append(_pool1d(draw, state, strided=False))
    if state.c == c_in and draw(st.integers(0, 3)) > 0:
        skip = None
    elif state.two_d:
        skip = dse.Conv2d(c_in, state.c, 1, bias=draw(st.booleans()))
    else:
        skip = draw(st.sampled_from([
            lambda: dse.Conv1d(c_in, state.c, 1, bias=draw(st.booleans())),
            lambda: dse.Linear(c_in, state.c, bias=draw(st.booleans())),
        ]))()
    assert state.f == f_in
    return dse.Residual(body, skip=skip)


def _body_layer(draw, state: _State) -> List[dse.Layer]:
    choices = ["conv", "conv", "conv", "pool", "bn", "act", "residual", "conv+bn+act"]
    if not state.two_d:
        choices += ["linear", "softmax"]
    else:
        choices += ["identity"]
    kind = draw(st.sampled_from(choices))
    if kind in ("conv", "conv+bn+act"):
        out = [_conv2d(draw, state) if state.two_d else _conv1d(draw, state)]
        if kind == "conv+bn+act":
            out += [_batchnorm(draw, state), activation(draw, state)]
        return out
    if kind == "pool":
        return [_pool2d(draw, state) if state.two_d else _pool1d(draw, state)]
    if kind == "bn":
        return [_batchnorm(draw, state)]
    if kind == "act":
        return [activation(draw, state)]
    if kind == "residual":
        return [_residual(draw, state)]
    if kind == "linear":
        c_out = draw(st.integers(1, 4))
        layer = dse.Linear(state.c, c_out, bias=draw(st.booleans()))
        state.c = c_out
        return [layer]
    if kind == "softmax":
        return [dse.Softmax()]
    return [draw(st.sampled_from([dse.Identity(), dse.Dropout(0.3)]))]


def _head_layer(head: str):
    return {"none": None, "last": dse.LastFrame(), "avg": dse.GlobalAvgPool(),
            "max": dse.GlobalMaxPool(), "flatten": dse.Flatten()}[head]


def _after_head(draw, output_shape: tuple, state: Optional[_State] = None) -> List[dse.Layer]:
    """Per-vector layers after the head, matching its output shape."""
    layers: List[dse.Layer] = []
    shape = tuple(output_shape)
    for _ in range(draw(st.integers(0, 3))):
        if len(shape) == 2:  # (C, F) from LastFrame on a 2-D model
            kind = draw(st.sampled_from(["act", "bn2d", "flatten", "flatten"]))
            if kind == "act":
                layers.append(activation(draw, state))
            elif kind == "bn2d":
                layers.append(dse.BatchNorm2d(shape[0]))
            else:
                layers.append(dse.Flatten())
                shape = (shape[0] * shape[1],)
            continue
        kind = draw(st.sampled_from(["linear", "linear", "act", "softmax", "bn"]))
        if kind == "linear":
            n = draw(st.integers(1, 5))
            layers.append(dse.Linear(shape[0], n, bias=draw(st.booleans())))
            shape = (n,)
        elif kind == "act":
            layers.append(activation(draw, state))
        elif kind == "softmax":
            layers.append(dse.Softmax())
        else:
            layers.append(dse.BatchNorm1d(shape[0]))
    return layers


# ---------------------------------------------------------------------------- models and cases
@st.composite
def models(draw, dims=(1, 2), max_body=4, heads=HEADS, allow_stream_exact=True, force_causal=False,
           legacy=False):
    """A random valid ``Sequential`` with random weights. Returns (model, head_name, seed).

    ``force_causal``: every conv uses causal time padding and the body holds at least one conv.
    ``legacy``: only valid/causal padding and the activations every exporter knows (for the
    tests of converters that do not yet handle padding inside the window).
    """
    dim = draw(st.sampled_from(dims))
    head = draw(st.sampled_from(heads))
    # Every padding streams exactly (the strips are recomputed for each window); causal
    # padding is drawn less often under a whole-window head only to keep variety.
    allow_causal = head in ("none", "last") or draw(st.integers(0, 2)) == 0
    tiny = draw(st.integers(0, 5)) == 0
    c = 1 if tiny else draw(st.integers(1, 4))
    if dim == 1:
        in_features = c
        state = _State(c, None, allow_causal, force_causal, legacy)
    else:
        f = 1 if tiny else draw(st.integers(1, 6))
        in_features = (c, f)
        state = _State(c, f, allow_causal, force_causal, legacy)
    body: List[dse.Layer] = []
    for _ in range(draw(st.integers(0, max_body))):
        body += _body_layer(draw, state)
    if force_causal:
        has_conv = any(isinstance(layer, (dse.Conv1d, dse.Conv2d)) for layer in iter_layers(body))
    else:
        has_conv = any(isinstance(layer, (dse.Conv1d, dse.Conv2d, dse.Residual, _L._Pool))
                       for layer in body)
    if not has_conv and (force_causal or draw(st.booleans())):
        body += [_conv2d(draw, state) if state.two_d else _conv1d(draw, state)]
    head_layer = _head_layer(head)
    stack = body + ([head_layer] if head_layer is not None else [])

    probe = dse.Sequential(stack, in_features)  # minimum window
    window = draw(st.sampled_from([None, None, "odd", "extra"]))
    if window == "odd":
        window = probe.window + draw(st.integers(0, 4))
        window += 1 - window % 2
    elif window == "extra":
        window = probe.window + draw(st.integers(1, 12))
    model = dse.Sequential(stack, in_features, window)
    if model.equivalence != "window-exact" and head in ("none", "last"):
        # zero padding reaches the newest position: a longer window pushes it out of sight
        w = max(model.window, model.receptive_field)
        for extra in range(2 * MAX_HOP + 2):
            model = dse.Sequential(stack, in_features, w + extra)
            if model.equivalence == "window-exact":
                break
    if not allow_stream_exact and model.equivalence != "window-exact":
        reject()

    post = [] if head == "none" else _after_head(draw, model.output_shape, state)
    if post:
        model = dse.Sequential(stack + post, in_features, model.window)
    seed = draw(st.integers(0, 2 ** 32 - 1))
    randomize(model, np.random.default_rng(seed))
    return model, head, seed


@st.composite
def cases(draw, dims=(1, 2), max_body=4, heads=HEADS, allow_stream_exact=True, force_causal=False,
          min_outputs=1, legacy=False):
    """A model plus an input sequence long enough for several outputs in both modes."""
    model, head, seed = draw(models(dims=dims, max_body=max_body, heads=heads,
                                    allow_stream_exact=allow_stream_exact, force_causal=force_causal,
                                    legacy=legacy))
    hop = model.hop
    n_windows = max(min_outputs, 1) + hop * draw(st.integers(1, 3)) + draw(st.integers(0, hop + 2))
    if draw(st.integers(0, 4)) == 0:  # long enough for every ring buffer to wrap a few times
        n_windows += 2 * model.window
    length = model.window - 1 + n_windows
    scale = draw(st.sampled_from([1.0, 1.0, 0.3, 3.0]))
    rng = np.random.default_rng(seed ^ 0x5EED)
    x = (rng.standard_normal((length,) + model.frame_shape) * scale).astype(np.float32)
    return Case(model=model, x=x, seed=seed, head=head)


def has_time_padding(layers) -> bool:
    """True when some conv pads the time axis with zeros (causal with effective kernel > 1)."""
    return any(isinstance(layer, (dse.Conv1d, dse.Conv2d)) and layer.causal and
               (layer.k_t - 1) * layer.d_t > 0 for layer in iter_layers(layers))


# ---------------------------------------------------------------------------- running streams
def expected_output_frames(n_frames: int, window: int, hop: int) -> list:
    """Frames t at which a stream must return an output: t >= W-1 and (t-(W-1)) % hop == 0."""
    return [t for t in range(window - 1, n_frames) if (t - (window - 1)) % hop == 0]


def push_all(stream, x) -> dict:
    """Push x frame by frame; {t: copy of the output} for the frames that returned one."""
    outs = {}
    for t in range(len(x)):
        y = stream.push(x[t])
        if y is not None:
            outs[t] = y.copy()  # push() reuses its output array
    return outs


# ---------------------------------------------------------------------------- named small models
def activation_model(make) -> dse.Sequential:
    """`make()` after a conv (fused), after a pool, after a residual add, and on the vector; the
    first conv's weights are scaled up to reach saturated/clipped regions."""
    c1 = dse.Conv1d(2, 4, 3, seed=1)
    c1.weight = c1.weight * 3.0
    return dse.Sequential([c1, make(), dse.MaxPool1d(2, stride=1), make(),
                           dse.Residual([dse.Conv1d(4, 4, 2, seed=2)]), make(),
                           dse.GlobalAvgPool(), dse.Linear(4, 3, seed=3), make()],
                          in_features=2, window=9)


def head_model(head: str, dims: int) -> dse.Sequential:
    """A small 1-D or 2-D conv stack ending in `head` (one of HEADS)."""
    heads = {"none": [], "last": [dse.LastFrame()], "avg": [dse.GlobalAvgPool()],
             "max": [dse.GlobalMaxPool()], "flatten": [dse.Flatten()]}
    if dims == 1:
        layers = [dse.Conv1d(3, 4, 3, dilation=2, seed=1), dse.ReLU(), dse.Conv1d(4, 3, 2, stride=2, seed=2)]
        return dse.Sequential(layers + heads[head], in_features=3, window=11)
    layers = [dse.Conv2d(2, 3, (2, 3), padding=(1, 0), seed=1), dse.Tanh(),
              dse.Conv2d(3, 2, (3, 2), stride=(1, 2), seed=2)]
    return dse.Sequential(layers + heads[head], in_features=(2, 5), window=9)
