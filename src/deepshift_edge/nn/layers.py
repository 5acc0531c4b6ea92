"""Layers of a window network, each with its offline NumPy reference.

A model is a stack of these layers applied to one *window* of frames. Every layer
knows three things:

* its parameters, as float32 arrays in PyTorch's layouts, settable by assignment
  (``conv.weight = w`` checks the shape and converts the dtype);
* how it changes the shape of the data (``out_spec``), which is also where bad
  hyper-parameters are reported;
* ``forward``: a plain, readable float64 NumPy computation on one window. This is the
  oracle the compiled streaming kernels are tested against; it shares no code with them.

Tensor layout inside ``forward`` follows PyTorch without the batch axis: a 1-D
signal is ``(channels, time)``, a 2-D one ``(channels, features, time)``. After a
*head* (a layer that reduces the time axis) the value is a vector ``(channels,)``
or, for ``LastFrame`` on a 2-D model, ``(channels, features)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional, Sequence

import numpy as np

from ..errors import ModelError

__all__ = [
    "Layer", "Conv1d", "Conv2d", "MaxPool1d", "AvgPool1d", "MaxPool2d", "AvgPool2d",
    "BatchNorm1d", "BatchNorm2d", "Linear", "ReLU", "ReLU6", "LeakyReLU", "Sigmoid",
    "Tanh", "HardSwish", "Hardsigmoid", "SiLU", "Mish", "GELU", "Softmax", "Identity", "Dropout", "LastFrame",
    "GlobalAvgPool", "GlobalMaxPool", "Flatten", "Residual", "Spec",
]


# ----------------------------------------------------------------------------- shapes
@dataclass(frozen=True)
class Spec:
    """Shape of the data between two layers, in window terms.

    Before the head: ``length`` positions along time, spaced ``step`` frames apart
    (the cumulative stride), position 0 computed from frames up to ``first`` (an
    offset from the window's first frame); one position sees ``rf`` frames; the
    first ``reach`` positions are influenced by zero padding. After the head
    ``length`` is None and the value is a vector.
    """

    channels: int
    features: Optional[int]  # None for 1-D models
    length: Optional[int]
    step: int = 1
    first: int = 0
    rf: int = 1
    reach: int = 0

    @property
    def is_vector(self) -> bool:
        return self.length is None

    @property
    def shape(self) -> tuple:
        """Reference-layout shape (channels[, features][, time])."""
        dims = (self.channels,) if self.features is None else (self.channels, self.features)
        return dims if self.length is None else dims + (self.length,)


def _pair(value, name: str) -> tuple:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ModelError(f"{name} must be an int or a pair (feature, time), got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _positive(value, name: str, layer: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ModelError(f"{layer}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------- base
class Layer:
    """Base class. Subclasses declare ``param_names`` and implement ``out_spec``/``forward``."""

    param_names: tuple = ()
    is_head = False  # reduces the time axis

    def __setattr__(self, name, value):
        if name in self.param_names:
            value = self._check_param(name, value)
        object.__setattr__(self, name, value)

    def _expected_shape(self, name: str) -> tuple:  # pragma: no cover - overridden
        raise NotImplementedError

    def _check_param(self, name, value):
        if value is None:
            if name == "bias":
                return None
            raise ModelError(f"{type(self).__name__}.{name} cannot be None")
        try:
            arr = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ModelError(
                f"{type(self).__name__}.{name}: expected a numeric array, got {type(value).__name__}"
            ) from exc
        expected = self._expected_shape(name)
        if arr.shape != expected:
            raise ModelError(
                f"{type(self).__name__}.{name}: expected shape {expected}, got {arr.shape}"
            )
        return np.ascontiguousarray(arr)

    def params(self) -> dict:
        """The layer's parameters (name -> float32 array); bias may be absent."""
        return {n: getattr(self, n) for n in self.param_names if getattr(self, n) is not None}

    def config(self) -> dict:
        """Hyper-parameters, enough to rebuild the layer (used by the model format)."""
        return {}

    def out_spec(self, spec: Spec, where: str) -> Spec:
        raise NotImplementedError

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def _init_uniform(rng, shape, fan_in):
    bound = 1.0 / math.sqrt(max(fan_in, 1))
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


# ----------------------------------------------------------------------------- reference helpers
def _windows(x: np.ndarray, k: int, dilation: int, stride: int, n_out: int) -> list:
    """Tap views along the last axis: tap i holds x[..., i*d + j*s] for j < n_out."""
    return [x[..., i * dilation: i * dilation + (n_out - 1) * stride + 1: stride] for i in range(k)]


def _conv_reference(x, weight, bias, groups, k_f, k_t, s_f, s_t, d_f, d_t, p_f, causal):
    """Direct 2-D cross-correlation on (C, F, T), float64. 1-D convs use F = 1."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    if causal:
        x = np.pad(x, ((0, 0), (0, 0), ((k_t - 1) * d_t, 0)))
    if p_f:
        x = np.pad(x, ((0, 0), (p_f, p_f), (0, 0)))
    c_in, f_in, t_in = x.shape
    c_out = w.shape[0]
    f_out = (f_in - (k_f - 1) * d_f - 1) // s_f + 1
    t_out = (t_in - (k_t - 1) * d_t - 1) // s_t + 1
    cin_g, cout_g = c_in // groups, c_out // groups
    out = np.zeros((c_out, f_out, t_out))
    for g in range(groups):
        xs = x[g * cin_g:(g + 1) * cin_g]
        ws = w[g * cout_g:(g + 1) * cout_g]
        for kf in range(k_f):
            for kt in range(k_t):
                patch = xs[:, kf * d_f: kf * d_f + (f_out - 1) * s_f + 1: s_f,
                           kt * d_t: kt * d_t + (t_out - 1) * s_t + 1: s_t]
                out[g * cout_g:(g + 1) * cout_g] += np.einsum("oc,cft->oft", ws[:, :, kf, kt], patch)
    if bias is not None:
        out += np.asarray(bias, dtype=np.float64)[:, None, None]
    return out


def _pool_reference(x, op, k_f, k_t, s_f, s_t, d_t):
    """Max/average pooling on (C, F, T), float64, no padding."""
    x = np.asarray(x, dtype=np.float64)
    _, f_in, t_in = x.shape
    f_out = (f_in - k_f) // s_f + 1
    t_out = (t_in - (k_t - 1) * d_t - 1) // s_t + 1
    taps = [x[:, kf: kf + (f_out - 1) * s_f + 1: s_f, kt * d_t: kt * d_t + (t_out - 1) * s_t + 1: s_t]
            for kf in range(k_f) for kt in range(k_t)]
    stacked = np.stack(taps)
    return stacked.max(axis=0) if op == "max" else stacked.mean(axis=0)


# ----------------------------------------------------------------------------- time layers
class _TimeLayer(Layer):
    """A layer that slides over time (and maybe features): conv or pool."""

    two_d = False
    k_f = 1
    k_t = 1
    s_f = 1
    s_t = 1
    d_f = 1
    d_t = 1
    p_f = 0
    causal = False

    def _check_input(self, spec: Spec, where: str):
        if spec.is_vector:
            raise ModelError(f"{where}: {type(self).__name__} needs a time axis, but it comes after the head")
        if self.two_d and spec.features is None:
            raise ModelError(f"{where}: {type(self).__name__} needs 2-D frames (in_features=(C, F)); "
                             f"this model has 1-D frames")
        if not self.two_d and spec.features is not None:
            raise ModelError(f"{where}: {type(self).__name__} needs 1-D frames; this model has "
                             f"(C, F) frames: use the 2-D layer")

    def _time_spec(self, spec: Spec, where: str, channels: int) -> Spec:
        eff_t = (self.k_t - 1) * self.d_t + 1
        if self.causal:
            length = (spec.length - 1) // self.s_t + 1
            first = spec.first
            reach = -(-(spec.reach + eff_t - 1) // self.s_t)
        else:
            if spec.length < eff_t:
                raise ModelError(
                    f"{where}: {type(self).__name__} spans {eff_t} positions in time but only "
                    f"{spec.length} reach it; make the window longer")
            length = (spec.length - eff_t) // self.s_t + 1
            first = spec.first + (eff_t - 1) * spec.step
            reach = -(-spec.reach // self.s_t)
        features = spec.features
        if self.two_d:
            eff_f = (self.k_f - 1) * self.d_f + 1
            padded = spec.features + 2 * self.p_f
            if padded < eff_f:
                raise ModelError(f"{where}: {type(self).__name__} spans {eff_f} features but the "
                                 f"frame has {spec.features} (padding {self.p_f})")
            features = (padded - eff_f) // self.s_f + 1
        return Spec(channels=channels, features=features, length=length, step=spec.step * self.s_t,
                    first=first, rf=spec.rf + (eff_t - 1) * spec.step, reach=min(reach, length))


def _time_padding(padding, name):
    if padding in ("valid", 0, None):
        return False
    if padding == "causal":
        return True
    raise ModelError(f"{name}: time padding must be 'valid' (0) or 'causal'; got {padding!r}. "
                     f"Symmetric padding looks into the future and cannot stream.")


class Conv1d(_TimeLayer):
    """1-D convolution over time. ``weight``: (out, in/groups, k); ``bias``: (out,)."""

    param_names = ("weight", "bias")

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding="valid",
                 dilation=1, groups=1, bias=True, seed=None):
        name = type(self).__name__
        self.in_channels = _positive(in_channels, "in_channels", name)
        self.out_channels = _positive(out_channels, "out_channels", name)
        self.kernel_size = _positive(kernel_size, "kernel_size", name)
        self.stride = _positive(stride, "stride", name)
        self.dilation = _positive(dilation, "dilation", name)
        self.groups = _positive(groups, "groups", name)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ModelError(f"{name}: groups={groups} must divide in_channels={in_channels} "
                             f"and out_channels={out_channels}")
        self.padding = "causal" if _time_padding(padding, name) else "valid"
        self.k_t, self.s_t, self.d_t, self.causal = self.kernel_size, self.stride, self.dilation, \
            self.padding == "causal"
        rng = np.random.default_rng(seed)
        fan_in = self.in_channels // self.groups * self.kernel_size
        self.weight = _init_uniform(rng, self._expected_shape("weight"), fan_in)
        self.bias = _init_uniform(rng, (self.out_channels,), fan_in) if bias else None

    def _expected_shape(self, name):
        if name == "weight":
            return (self.out_channels, self.in_channels // self.groups, self.kernel_size)
        return (self.out_channels,)

    def config(self):
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                    dilation=self.dilation, groups=self.groups, bias=self.bias is not None)

    def out_spec(self, spec, where):
        self._check_input(spec, where)
        if spec.channels != self.in_channels:
            raise ModelError(f"{where}: Conv1d expects {self.in_channels} input channels, "
                             f"got {spec.channels}")
        return self._time_spec(spec, where, self.out_channels)

    def forward(self, x):
        out = _conv_reference(x[:, None, :], self.weight[:, :, None, :], self.bias, self.groups,
                              1, self.kernel_size, 1, self.stride, 1, self.dilation, 0, self.causal)
        return out[:, 0, :]


class Conv2d(_TimeLayer):
    """2-D convolution over (feature, time); frames are (C, F), windows (C, F, T).

    ``kernel_size``, ``stride``, ``dilation`` are ints or (feature, time) pairs, as in
    PyTorch with time as the last axis. ``padding``: int or (feature_pad, time_pad) where
    the time part is 0/'valid' or 'causal'; the feature part is symmetric zero padding.
    ``weight``: (out, in/groups, k_f, k_t).
    """

    param_names = ("weight", "bias")
    two_d = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, seed=None):
        name = type(self).__name__
        self.in_channels = _positive(in_channels, "in_channels", name)
        self.out_channels = _positive(out_channels, "out_channels", name)
        self.groups = _positive(groups, "groups", name)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ModelError(f"{name}: groups={groups} must divide in_channels={in_channels} "
                             f"and out_channels={out_channels}")
        self.k_f, self.k_t = (_positive(v, "kernel_size", name) for v in _pair(kernel_size, "kernel_size"))
        self.s_f, self.s_t = (_positive(v, "stride", name) for v in _pair(stride, "stride"))
        self.d_f, self.d_t = (_positive(v, "dilation", name) for v in _pair(dilation, "dilation"))
        if padding == "valid":
            p_f, p_t = 0, 0
        elif padding == "causal":
            p_f, p_t = 0, "causal"
        elif isinstance(padding, (tuple, list)) and len(padding) == 2:
            p_f, p_t = padding
        else:
            p_f, p_t = padding, padding
        self.p_f = _positive(p_f, "feature padding", name, minimum=0)
        self.causal = _time_padding(p_t, name)
        rng = np.random.default_rng(seed)
        fan_in = self.in_channels // self.groups * self.k_f * self.k_t
        self.weight = _init_uniform(rng, self._expected_shape("weight"), fan_in)
        self.bias = _init_uniform(rng, (self.out_channels,), fan_in) if bias else None

    kernel_size = property(lambda self: (self.k_f, self.k_t))
    stride = property(lambda self: (self.s_f, self.s_t))
    dilation = property(lambda self: (self.d_f, self.d_t))
    padding = property(lambda self: (self.p_f, "causal" if self.causal else 0))

    def _expected_shape(self, name):
        if name == "weight":
            return (self.out_channels, self.in_channels // self.groups, self.k_f, self.k_t)
        return (self.out_channels,)

    def config(self):
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=list(self.kernel_size), stride=list(self.stride),
                    padding=list(self.padding), dilation=list(self.dilation), groups=self.groups,
                    bias=self.bias is not None)

    def out_spec(self, spec, where):
        self._check_input(spec, where)
        if spec.channels != self.in_channels:
            raise ModelError(f"{where}: Conv2d expects {self.in_channels} input channels, "
                             f"got {spec.channels}")
        return self._time_spec(spec, where, self.out_channels)

    def forward(self, x):
        return _conv_reference(x, self.weight, self.bias, self.groups, self.k_f, self.k_t,
                               self.s_f, self.s_t, self.d_f, self.d_t, self.p_f, self.causal)


class _Pool(_TimeLayer):
    op = "max"

    def out_spec(self, spec, where):
        self._check_input(spec, where)
        return self._time_spec(spec, where, spec.channels)


class MaxPool1d(_Pool):
    """Max over ``kernel_size`` time positions (``dilation`` apart), ``stride`` defaults to the kernel."""

    op = "max"

    def __init__(self, kernel_size, stride=None, dilation=1):
        name = type(self).__name__
        self.kernel_size = self.k_t = _positive(kernel_size, "kernel_size", name)
        self.stride = self.s_t = _positive(kernel_size if stride is None else stride, "stride", name)
        self.dilation = self.d_t = _positive(dilation, "dilation", name)

    def config(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride, dilation=self.dilation)

    def forward(self, x):
        return _pool_reference(x[:, None, :], self.op, 1, self.k_t, 1, self.s_t, self.d_t)[:, 0, :]


class AvgPool1d(_Pool):
    """Mean over ``kernel_size`` time positions; ``stride`` defaults to the kernel."""

    op = "avg"

    def __init__(self, kernel_size, stride=None):
        name = type(self).__name__
        self.kernel_size = self.k_t = _positive(kernel_size, "kernel_size", name)
        self.stride = self.s_t = _positive(kernel_size if stride is None else stride, "stride", name)

    def config(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride)

    def forward(self, x):
        return _pool_reference(x[:, None, :], self.op, 1, self.k_t, 1, self.s_t, 1)[:, 0, :]


class MaxPool2d(_Pool):
    """Max over (feature, time) patches; ``stride`` defaults to the kernel. No padding."""

    op = "max"
    two_d = True

    def __init__(self, kernel_size, stride=None):
        name = type(self).__name__
        self.k_f, self.k_t = (_positive(v, "kernel_size", name) for v in _pair(kernel_size, "kernel_size"))
        stride = (self.k_f, self.k_t) if stride is None else stride
        self.s_f, self.s_t = (_positive(v, "stride", name) for v in _pair(stride, "stride"))

    kernel_size = property(lambda self: (self.k_f, self.k_t))
    stride = property(lambda self: (self.s_f, self.s_t))

    def config(self):
        return dict(kernel_size=list(self.kernel_size), stride=list(self.stride))

    def forward(self, x):
        return _pool_reference(x, self.op, self.k_f, self.k_t, self.s_f, self.s_t, 1)


class AvgPool2d(MaxPool2d):
    """Mean over (feature, time) patches; ``stride`` defaults to the kernel. No padding."""

    op = "avg"


# ----------------------------------------------------------------------------- per-frame layers
class _PerFrame(Layer):
    """Acts on each time position (or on the vector after the head) independently."""

    def out_spec(self, spec, where):
        return spec


class _BatchNorm(_PerFrame):
    param_names = ("weight", "bias", "running_mean", "running_var")
    two_d = False

    def __init__(self, num_features, eps=1e-5):
        self.num_features = _positive(num_features, "num_features", type(self).__name__)
        self.eps = float(eps)
        if not self.eps > 0:
            raise ModelError(f"{type(self).__name__}: eps must be > 0, got {eps!r}")
        n = self.num_features
        self.weight, self.bias = np.ones(n, np.float32), np.zeros(n, np.float32)
        self.running_mean, self.running_var = np.zeros(n, np.float32), np.ones(n, np.float32)

    def _expected_shape(self, name):
        return (self.num_features,)

    def _check_param(self, name, value):
        if value is None:
            raise ModelError(f"{type(self).__name__}.{name} cannot be None")
        return super()._check_param(name, value)

    def config(self):
        return dict(num_features=self.num_features, eps=self.eps)

    def out_spec(self, spec, where):
        if spec.channels != self.num_features:
            raise ModelError(f"{where}: {type(self).__name__} expects {self.num_features} "
                             f"channels, got {spec.channels}")
        if self.two_d != (spec.features is not None):
            want = "(C, F)" if self.two_d else "1-D"
            raise ModelError(f"{where}: {type(self).__name__} needs {want} data")
        return spec

    def scale_shift(self):
        """Per-channel (scale, shift) in float64: y = x * scale + shift."""
        scale = self.weight.astype(np.float64) / np.sqrt(self.running_var.astype(np.float64) + self.eps)
        return scale, self.bias.astype(np.float64) - self.running_mean.astype(np.float64) * scale

    def forward(self, x):
        x = np.asarray(x, dtype=np.float64)
        shape = (-1,) + (1,) * (x.ndim - 1)
        mean = self.running_mean.astype(np.float64).reshape(shape)
        var = self.running_var.astype(np.float64).reshape(shape)
        return (x - mean) / np.sqrt(var + self.eps) * self.weight.reshape(shape) + self.bias.reshape(shape)


class BatchNorm1d(_BatchNorm):
    """Inference batch norm over channels of 1-D data (folded into a preceding conv when streamed)."""


class BatchNorm2d(_BatchNorm):
    """Inference batch norm over channels of (C, F, T) data."""

    two_d = True


class Linear(_PerFrame):
    """``y = W x + b``. Before the head it acts on each frame's channels (1-D models);
    after the head on the vector. ``weight``: (out, in)."""

    param_names = ("weight", "bias")

    def __init__(self, in_features, out_features, bias=True, seed=None):
        name = type(self).__name__
        self.in_features = _positive(in_features, "in_features", name)
        self.out_features = _positive(out_features, "out_features", name)
        rng = np.random.default_rng(seed)
        self.weight = _init_uniform(rng, (self.out_features, self.in_features), self.in_features)
        self.bias = _init_uniform(rng, (self.out_features,), self.in_features) if bias else None

    def _expected_shape(self, name):
        return (self.out_features, self.in_features) if name == "weight" else (self.out_features,)

    def config(self):
        return dict(in_features=self.in_features, out_features=self.out_features,
                    bias=self.bias is not None)

    def out_spec(self, spec, where):
        if spec.features is not None:
            raise ModelError(f"{where}: Linear needs a 1-D vector or 1-D frames, got shape "
                             f"{spec.shape}; add Flatten() (after the head) or use a 1x1 Conv2d")
        if spec.channels != self.in_features:
            raise ModelError(f"{where}: Linear expects {self.in_features} features, got {spec.channels}")
        return replace(spec, channels=self.out_features)

    def forward(self, x):
        w = self.weight.astype(np.float64)
        y = np.tensordot(w, np.asarray(x, dtype=np.float64), axes=(1, 0))
        if self.bias is not None:
            y += self.bias.astype(np.float64).reshape((-1,) + (1,) * (y.ndim - 1))
        return y


class _Activation(_PerFrame):
    def config(self):
        return {}


class ReLU(_Activation):
    def forward(self, x):
        return np.maximum(np.asarray(x, dtype=np.float64), 0.0)


class ReLU6(_Activation):
    def forward(self, x):
        return np.clip(np.asarray(x, dtype=np.float64), 0.0, 6.0)


class LeakyReLU(_Activation):
    def __init__(self, negative_slope=0.01):
        self.negative_slope = float(negative_slope)
        if not math.isfinite(self.negative_slope):
            raise ModelError(f"LeakyReLU: negative_slope must be finite, got {negative_slope!r}")

    def config(self):
        return dict(negative_slope=self.negative_slope)

    def forward(self, x):
        x = np.asarray(x, dtype=np.float64)
        return np.where(x >= 0, x, x * self.negative_slope)


class Sigmoid(_Activation):
    def forward(self, x):
        return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


class Tanh(_Activation):
    def forward(self, x):
        return np.tanh(np.asarray(x, dtype=np.float64))


class HardSwish(_Activation):
    def forward(self, x):
        x = np.asarray(x, dtype=np.float64)
        return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0


class SiLU(_Activation):
    """SiLU (swish): x * sigmoid(x)."""

    def forward(self, x):
        x = np.asarray(x, dtype=np.float64)
        return x / (1.0 + np.exp(-x))


class Mish(_Activation):
    """Mish: x * tanh(softplus(x))."""

    def forward(self, x):
        x = np.asarray(x, dtype=np.float64)
        return x * np.tanh(np.logaddexp(0.0, x))


class Hardsigmoid(_Activation):
    """PyTorch's Hardsigmoid: clip(x / 6 + 1/2, 0, 1) (ONNX HardSigmoid with alpha=1/6)."""

    def forward(self, x):
        return np.clip(np.asarray(x, dtype=np.float64) / 6.0 + 0.5, 0.0, 1.0)


_erf = np.frompyfunc(math.erf, 1, 1)


class GELU(_Activation):
    """GELU; ``approximate='none'`` is the exact erf form (PyTorch's default), 'tanh' the tanh form."""

    def __init__(self, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise ModelError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def config(self):
        return dict(approximate=self.approximate)

    def forward(self, x):
        x = np.asarray(x, dtype=np.float64)
        if self.approximate == "tanh":
            return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
        return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


class Softmax(_Activation):
    """Softmax over channels (the vector after the head, or each frame of a 1-D model)."""

    def out_spec(self, spec, where):
        if spec.features is not None:
            raise ModelError(f"{where}: Softmax needs 1-D data, got shape {spec.shape}; add Flatten()")
        return spec

    def forward(self, x):
        x = np.asarray(x, dtype=np.float64)
        e = np.exp(x - x.max(axis=0, keepdims=True))
        return e / e.sum(axis=0, keepdims=True)


class Identity(_Activation):
    def forward(self, x):
        return np.asarray(x, dtype=np.float64)


class Dropout(Identity):
    """Identity at inference (kept so converted models keep their layer list)."""

    def __init__(self, p=0.5):
        self.p = float(p)

    def config(self):
        return dict(p=self.p)


# ----------------------------------------------------------------------------- heads
class _Head(Layer):
    is_head = True

    def _check(self, spec, where):
        if spec.is_vector:
            raise ModelError(f"{where}: {type(self).__name__} reduces the time axis, "
                             f"but the model already has a head")


class LastFrame(_Head):
    """The newest time position: (C,) for 1-D models, (C, F) for 2-D ones."""

    def out_spec(self, spec, where):
        self._check(spec, where)
        return Spec(channels=spec.channels, features=spec.features, length=None)

    def forward(self, x):
        return np.asarray(x, dtype=np.float64)[..., -1]


class GlobalAvgPool(_Head):
    """Mean over all time positions of the window (and features, for 2-D): (C,)."""

    def out_spec(self, spec, where):
        self._check(spec, where)
        return Spec(channels=spec.channels, features=None, length=None)

    def forward(self, x):
        x = np.asarray(x, dtype=np.float64)
        return x.reshape(x.shape[0], -1).mean(axis=1)


class GlobalMaxPool(GlobalAvgPool):
    """Max over all time positions of the window (and features, for 2-D): (C,)."""

    def forward(self, x):
        x = np.asarray(x, dtype=np.float64)
        return x.reshape(x.shape[0], -1).max(axis=1)


class Flatten(_Head):
    """Before the head: flattens the whole window (C[, F], T) in C order, a head. After
    the head: flattens the vector (e.g. (C, F) from LastFrame)."""

    def out_spec(self, spec, where):
        return Spec(channels=int(np.prod(spec.shape)), features=None, length=None)

    def forward(self, x):
        return np.asarray(x, dtype=np.float64).reshape(-1)


# ----------------------------------------------------------------------------- residual
class Residual(Layer):
    """TCN-style residual block: ``body(x) + skip(x)``, aligned on the newest frame.

    ``body`` is a list of layers with stride 1 in time; ``skip`` is None (identity) or
    a layer such as a 1x1 ``Conv1d`` that changes the channel count. When the body
    shortens the window (valid padding), the skip branch is cropped on the left, as a
    causal TCN's right-aligned sum does.
    """

    def __init__(self, body: Sequence[Layer], skip: Optional[Layer] = None):
        self.body = list(body)
        self.skip = skip
        if not self.body:
            raise ModelError("Residual: body must hold at least one layer")
        for i, layer in enumerate(self.body + ([skip] if skip is not None else [])):
            if not isinstance(layer, Layer):
                raise ModelError(f"Residual: element {i} is {type(layer).__name__}, not a Layer")
            if layer.is_head or isinstance(layer, Residual):
                raise ModelError(f"Residual: {type(layer).__name__} is not allowed inside a residual block")

    def config(self):
        return {}

    def __repr__(self):
        return f"Residual({self.body!r}, skip={self.skip!r})"

    def out_spec(self, spec, where):
        if spec.is_vector:
            raise ModelError(f"{where}: Residual needs a time axis, but it comes after the head")
        body_spec = spec
        for i, layer in enumerate(self.body):
            body_spec = layer.out_spec(body_spec, f"{where}.body[{i}] ({type(layer).__name__})")
            if isinstance(layer, _TimeLayer) and (layer.s_t != 1):
                raise ModelError(f"{where}.body[{i}]: strides inside a residual block are not "
                                 f"supported (stride {layer.s_t}); put the strided layer outside")
        skip_spec = spec
        if self.skip is not None:
            skip_spec = self.skip.out_spec(spec, f"{where}.skip ({type(self.skip).__name__})")
            if isinstance(self.skip, _TimeLayer) and (self.skip.k_t != 1 or self.skip.s_t != 1):
                raise ModelError(f"{where}.skip: the skip branch must be per-frame (time kernel 1, "
                                 f"stride 1), got {self.skip!r}")
        if body_spec.shape[:-1] != skip_spec.shape[:-1]:
            raise ModelError(f"{where}: body gives {body_spec.shape[:-1]} per frame but the skip "
                             f"gives {skip_spec.shape[:-1]}; add a 1x1 conv as skip")
        crop = skip_spec.length - body_spec.length  # skip positions dropped on the left
        reach = max(body_spec.reach, skip_spec.reach - crop, 0)
        return replace(body_spec, reach=min(reach, body_spec.length))

    def forward(self, x):
        body = x
        for layer in self.body:
            body = layer.forward(body)
        skip = np.asarray(x, dtype=np.float64) if self.skip is None else self.skip.forward(x)
        n = body.shape[-1]
        return body + skip[..., skip.shape[-1] - n:]
