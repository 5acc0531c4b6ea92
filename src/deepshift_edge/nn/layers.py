"""Layers of a window network, each with its offline NumPy reference.

A model applies these layers to one *window* of frames. Every layer knows three things:

* its parameters, as float32 arrays in PyTorch's layouts, settable by assignment
  (``conv.weight = w`` checks the shape and converts the dtype);
* how it changes the shape of the data and the time bookkeeping (``out_spec``), which is
  also where bad hyper-parameters are reported;
* ``forward``: a plain, readable float64 NumPy computation on one window. This is the
  oracle the compiled streaming kernels are tested against; it shares no code with them.

Tensor layout inside ``forward`` follows PyTorch without the batch axis: a 1-D
signal is ``(channels, time)``, a 2-D one ``(channels, features, time)``. After a
*head* (a layer that reduces the time axis) the value is a vector ``(channels,)``
or, for ``LastFrame`` on a 2-D model, ``(channels, features)``.

Zero padding in time is part of the window network: a conv with ``padding='same'``
sees zeros at both edges of every window, exactly as PyTorch computes it offline.

Layers are also callable on graph tensors (``y = Conv1d(6, 8, 3)(x)``, see
:mod:`deepshift_edge.nn.graph`); multi-input operators live in :mod:`.merge`.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Optional

import numpy as np

from ..errors import ModelError
from .spec import Spec, output_length, strips, time_op_spec

__all__ = [
    "Layer", "Conv1d", "Conv2d", "MaxPool1d", "AvgPool1d", "MaxPool2d", "AvgPool2d",
    "BatchNorm1d", "BatchNorm2d", "Linear", "ReLU", "ReLU6", "LeakyReLU", "Sigmoid",
    "Tanh", "HardSwish", "Hardsigmoid", "SiLU", "Mish", "GELU", "ELU", "CELU", "SELU", "PReLU",
    "Softplus", "Softsign", "Hardtanh", "Softmax", "Identity", "Dropout", "LastFrame",
    "GlobalAvgPool", "GlobalMaxPool", "Flatten", "Spec",
]


def _pair(value, name: str) -> tuple:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ModelError(f"{name} must be an int or a pair (feature, time), got {value!r}")
        return value[0], value[1]
    return value, value


def _positive(value, name: str, layer: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ModelError(f"{layer}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------- padding
def _pad_amounts(padding, eff: int, stride: int, name: str, what: str = "time padding") -> tuple:
    """(left, right) zeros from a padding argument, for an operator spanning ``eff`` positions.

    Accepted: 'valid' / 0 / None; 'causal' (all ``eff - 1`` zeros on the left); 'same'
    (PyTorch's rule for stride 1: ``eff - 1`` zeros, the odd one on the right); an int ``p``
    (``p`` on each side); a pair ``(left, right)``.
    """
    if padding is None or (isinstance(padding, str) and padding == "valid"):
        return 0, 0
    if isinstance(padding, str):
        if padding == "causal":
            return eff - 1, 0
        if padding == "same":
            if stride != 1:
                raise ModelError(f"{name}: padding='same' needs stride 1 (as in PyTorch), got stride "
                                 f"{stride}; give the zeros explicitly as (left, right)")
            return (eff - 1) // 2, eff - 1 - (eff - 1) // 2
        raise ModelError(f"{name}: {what} must be 'valid', 'causal', 'same', an int or a pair "
                         f"(left, right); got {padding!r}")
    if isinstance(padding, (tuple, list)):
        if len(padding) != 2:
            raise ModelError(f"{name}: {what} as a pair must be (left, right), got {padding!r}")
        return (_positive(padding[0], f"{what} (left)", name, 0),
                _positive(padding[1], f"{what} (right)", name, 0))
    p = _positive(padding, what, name, 0)
    return p, p


def _pad_config(padding, amounts: tuple):
    """How a padding is written back (config/format): keep the words, else an int or a pair."""
    if isinstance(padding, str):
        return padding
    left, right = amounts
    return left if left == right else [left, right]


# ----------------------------------------------------------------------------- base
class Layer:
    """Base class. Subclasses declare ``param_names`` and implement ``out_spec``/``forward``."""

    param_names: tuple = ()
    is_head = False  # reduces the time axis
    n_inputs = 1  # operators with several inputs (merge.py) say None: any number >= 2

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

    def out_specs(self, specs: list, where: str) -> Spec:
        """Spec of the output from the specs of the inputs (one for most layers)."""
        if len(specs) != 1:
            raise ModelError(f"{where}: {type(self).__name__} takes one input, got {len(specs)}")
        return self.out_spec(specs[0], where)

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def forward_many(self, xs: list, specs: list) -> np.ndarray:
        """The reference on the values of every input (one for most layers), whose specs
        are ``specs``."""
        return self.forward(xs[0])

    def __call__(self, *inputs, name: Optional[str] = None):
        """Apply the layer to graph tensors: ``y = layer(x)`` (see :mod:`deepshift_edge.nn.graph`)."""
        from .graph import apply_layer
        return apply_layer(self, inputs, name)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def _init_uniform(rng, shape, fan_in):
    bound = 1.0 / math.sqrt(max(fan_in, 1))
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


# ----------------------------------------------------------------------------- reference helpers
def _conv_reference(x, weight, bias, groups, k_f, k_t, s_f, s_t, d_f, d_t, pad_f, pad_t):
    """Direct 2-D cross-correlation on (C, F, T), float64, zero padding (left, right) on each
    axis. 1-D convs use F = 1."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    x = np.pad(x, ((0, 0), tuple(pad_f), tuple(pad_t)))
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


def _pool_windows(n, kernel, dilation, stride, pad, out_len):
    """Per output position of one axis: (the input indices its window reads, PyTorch's
    count_include_pad divisor for that axis)."""
    windows = []
    for j in range(out_len):
        start = j * stride - pad[0]
        taps = [start + i * dilation for i in range(kernel)]
        inside = [p for p in taps if 0 <= p < n]
        end = min(start + (kernel - 1) * dilation + 1, n + pad[1])  # windows stop at the padded edge
        windows.append((inside, end - start))
    return windows


def _pool_reference(x, op, k_f, k_t, s_f, s_t, d_t, pad_f, pad_t, ceil_mode, count_include_pad):
    """Max/average pooling on (C, F, T), float64, with PyTorch's padding rules: max pads with
    -inf; average divides by the window clipped to the padded input (count_include_pad) or by
    the number of real inputs it holds."""
    x = np.asarray(x, dtype=np.float64)
    c, f_in, t_in = x.shape
    f_out = output_length(f_in, k_f, 1, s_f, pad_f[0], pad_f[1], ceil_mode)
    t_out = output_length(t_in, k_t, d_t, s_t, pad_t[0], pad_t[1], ceil_mode)
    fw = _pool_windows(f_in, k_f, 1, s_f, pad_f, f_out)
    tw = _pool_windows(t_in, k_t, d_t, s_t, pad_t, t_out)
    out = np.empty((c, f_out, t_out))
    for fo, (fi, f_div) in enumerate(fw):
        for to, (ti, t_div) in enumerate(tw):
            patch = x[:, fi][:, :, ti].reshape(c, -1)
            if op == "max":
                out[:, fo, to] = patch.max(axis=1) if patch.size else -np.inf
            else:
                div = f_div * t_div if count_include_pad else len(fi) * len(ti)
                out[:, fo, to] = patch.sum(axis=1) / div
    return out


# ----------------------------------------------------------------------------- time layers
class _TimeLayer(Layer):
    """A layer that slides over time (and maybe features): conv or pool.

    Attributes read by the engine and the converters: kernel ``k_f``/``k_t``, stride
    ``s_f``/``s_t``, dilation ``d_f``/``d_t``, zero padding ``pad_f``/``pad_t`` as
    (left, right) pairs, ``ceil_mode``.
    """

    two_d = False
    k_f = 1
    k_t = 1
    s_f = 1
    s_t = 1
    d_f = 1
    d_t = 1
    pad_f = (0, 0)
    pad_t = (0, 0)
    ceil_mode = False

    @property
    def p_f(self) -> int:
        """Left feature padding (what the kernels offset by)."""
        return self.pad_f[0]

    @property
    def causal(self) -> bool:
        """True when all the time padding is on the left and spans the kernel (causal conv)."""
        return self.pad_t == ((self.k_t - 1) * self.d_t, 0) and self.pad_t[0] > 0

    @property
    def time_padded(self) -> bool:
        return self.pad_t != (0, 0)

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
        name = type(self).__name__
        eff_t = (self.k_t - 1) * self.d_t + 1
        n = output_length(spec.length, self.k_t, self.d_t, self.s_t, self.pad_t[0], self.pad_t[1],
                          self.ceil_mode)
        if n < 1:
            raise ModelError(
                f"{where}: {name} spans {eff_t} positions in time but only {spec.length} reach it "
                f"(padding {self.pad_t[0]} + {self.pad_t[1]}); make the window longer")
        features = spec.features
        if self.two_d:
            eff_f = (self.k_f - 1) * self.d_f + 1
            features = output_length(spec.features, self.k_f, self.d_f, self.s_f, self.pad_f[0],
                                     self.pad_f[1], self.ceil_mode)
            if features < 1:
                raise ModelError(f"{where}: {name} spans {eff_f} features but the frame has "
                                 f"{spec.features} (padding {self.pad_f[0]} + {self.pad_f[1]})")
        return time_op_spec(spec, kernel=self.k_t, dilation=self.d_t, stride=self.s_t,
                            pad_left=self.pad_t[0], pad_right=self.pad_t[1], ceil_mode=self.ceil_mode,
                            channels=channels, features=features)


class _Conv(_TimeLayer):
    param_names = ("weight", "bias")

    def _init_channels(self, in_channels, out_channels, groups):
        name = type(self).__name__
        self.in_channels = _positive(in_channels, "in_channels", name)
        self.out_channels = _positive(out_channels, "out_channels", name)
        self.groups = _positive(groups, "groups", name)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ModelError(f"{name}: groups={groups} must divide in_channels={in_channels} "
                             f"and out_channels={out_channels}")

    def _init_weights(self, seed, bias):
        rng = np.random.default_rng(seed)
        fan_in = self.in_channels // self.groups * self.k_f * self.k_t
        self.weight = _init_uniform(rng, self._expected_shape("weight"), fan_in)
        self.bias = _init_uniform(rng, (self.out_channels,), fan_in) if bias else None

    def out_spec(self, spec, where):
        self._check_input(spec, where)
        if spec.channels != self.in_channels:
            raise ModelError(f"{where}: {type(self).__name__} expects {self.in_channels} input "
                             f"channels, got {spec.channels}")
        return self._time_spec(spec, where, self.out_channels)

    def _weight4(self) -> np.ndarray:
        """(out, in/groups, k_f, k_t): the 2-D form of the weights."""
        return self.weight[:, :, None, :] if self.weight.ndim == 3 else self.weight

    def forward(self, x):
        two_d = self.weight.ndim == 4
        x = np.asarray(x, dtype=np.float64)
        out = _conv_reference(x if two_d else x[:, None, :], self._weight4(), self.bias, self.groups,
                              self.k_f, self.k_t, self.s_f, self.s_t, self.d_f, self.d_t,
                              self.pad_f, self.pad_t)
        return out if two_d else out[:, 0, :]


class Conv1d(_Conv):
    """1-D convolution over time. ``weight``: (out, in/groups, k); ``bias``: (out,).

    ``padding``: 'valid' (0), 'causal' (``(k-1)*dilation`` zeros on the left), 'same'
    (PyTorch's rule, stride 1), an int (zeros on both sides) or a pair (left, right).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding="valid",
                 dilation=1, groups=1, bias=True, seed=None):
        name = type(self).__name__
        self._init_channels(in_channels, out_channels, groups)
        self.kernel_size = self.k_t = _positive(kernel_size, "kernel_size", name)
        self.stride = self.s_t = _positive(stride, "stride", name)
        self.dilation = self.d_t = _positive(dilation, "dilation", name)
        self.pad_t = _pad_amounts(padding, (self.k_t - 1) * self.d_t + 1, self.s_t, name)
        self.padding = _pad_config(padding, self.pad_t) if self.pad_t != (0, 0) else "valid"
        self._init_weights(seed, bias)

    def _expected_shape(self, name):
        if name == "weight":
            return (self.out_channels, self.in_channels // self.groups, self.kernel_size)
        return (self.out_channels,)

    def config(self):
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                    dilation=self.dilation, groups=self.groups, bias=self.bias is not None)


class Conv2d(_Conv):
    """2-D convolution over (feature, time); frames are (C, F), windows (C, F, T).

    ``kernel_size``, ``stride``, ``dilation`` are ints or (feature, time) pairs, as in
    PyTorch with time as the last axis. ``padding``: an int (both axes, both sides),
    'valid', 'same' (both axes, PyTorch's rule), 'causal' (time only), or a pair
    (feature_pad, time_pad) where each part is an int, a pair (left, right), and the time
    part may also be 'causal' or 'same'. ``weight``: (out, in/groups, k_f, k_t).
    """

    two_d = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, seed=None):
        name = type(self).__name__
        self._init_channels(in_channels, out_channels, groups)
        self.k_f, self.k_t = (_positive(v, "kernel_size", name) for v in _pair(kernel_size, "kernel_size"))
        self.s_f, self.s_t = (_positive(v, "stride", name) for v in _pair(stride, "stride"))
        self.d_f, self.d_t = (_positive(v, "dilation", name) for v in _pair(dilation, "dilation"))
        if padding == "valid":
            p_f, p_t = 0, 0
        elif padding == "causal":
            p_f, p_t = 0, "causal"
        elif padding == "same":
            p_f, p_t = "same", "same"
        elif isinstance(padding, (tuple, list)) and len(padding) == 2:
            p_f, p_t = padding
        else:
            p_f, p_t = padding, padding
        if p_f == "causal":
            raise ModelError(f"{name}: causal padding applies to time, not to features")
        self.pad_f = _pad_amounts(p_f, (self.k_f - 1) * self.d_f + 1, self.s_f, name, "feature padding")
        self.pad_t = _pad_amounts(p_t, (self.k_t - 1) * self.d_t + 1, self.s_t, name)
        self._padding_arg = (_pad_config(p_f, self.pad_f), _pad_config(p_t, self.pad_t))
        self._init_weights(seed, bias)

    kernel_size = property(lambda self: (self.k_f, self.k_t))
    stride = property(lambda self: (self.s_f, self.s_t))
    dilation = property(lambda self: (self.d_f, self.d_t))
    padding = property(lambda self: self._padding_arg)

    def _expected_shape(self, name):
        if name == "weight":
            return (self.out_channels, self.in_channels // self.groups, self.k_f, self.k_t)
        return (self.out_channels,)

    def config(self):
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=list(self.kernel_size), stride=list(self.stride),
                    padding=list(self.padding), dilation=list(self.dilation), groups=self.groups,
                    bias=self.bias is not None)


class _Pool(_TimeLayer):
    op = "max"
    count_include_pad = True

    def out_spec(self, spec, where):
        self._check_input(spec, where)
        return self._time_spec(spec, where, spec.channels)

    def _check_padding(self, name):
        for what, (left, right), k, d in (("time", self.pad_t, self.k_t, self.d_t),
                                          ("feature", self.pad_f, self.k_f, self.d_f)):
            if max(left, right) * 2 > (k - 1) * d + 1:
                # PyTorch's rule: a window must never be all padding.
                raise ModelError(f"{name}: {what} padding ({left}, {right}) must be at most half "
                                 f"the kernel ({k}), as in PyTorch")

    def forward(self, x):
        two_d = self.two_d
        x = np.asarray(x, dtype=np.float64)
        out = _pool_reference(x if two_d else x[:, None, :], self.op, self.k_f, self.k_t, self.s_f,
                              self.s_t, self.d_t, self.pad_f, self.pad_t, self.ceil_mode,
                              self.count_include_pad)
        return out if two_d else out[:, 0, :]


class MaxPool1d(_Pool):
    """Max over ``kernel_size`` time positions (``dilation`` apart), ``stride`` defaults to the
    kernel; ``padding`` (an int, or a pair (left, right)) pads with -inf, as PyTorch does."""

    op = "max"

    def __init__(self, kernel_size, stride=None, dilation=1, padding=0, ceil_mode=False):
        name = type(self).__name__
        self.kernel_size = self.k_t = _positive(kernel_size, "kernel_size", name)
        self.stride = self.s_t = _positive(kernel_size if stride is None else stride, "stride", name)
        self.dilation = self.d_t = _positive(dilation, "dilation", name)
        self.pad_t = _pad_amounts(padding, (self.k_t - 1) * self.d_t + 1, self.s_t, name, "padding")
        self.padding = _pad_config(padding, self.pad_t)
        self.ceil_mode = bool(ceil_mode)
        self._check_padding(name)

    def config(self):
        cfg = dict(kernel_size=self.kernel_size, stride=self.stride, dilation=self.dilation)
        if self.pad_t != (0, 0):
            cfg["padding"] = self.padding
        if self.ceil_mode:
            cfg["ceil_mode"] = True
        return cfg


class AvgPool1d(_Pool):
    """Mean over ``kernel_size`` time positions; ``stride`` defaults to the kernel. With
    ``padding``, ``count_include_pad`` says whether the zeros count in the divisor (PyTorch)."""

    op = "avg"

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        name = type(self).__name__
        self.kernel_size = self.k_t = _positive(kernel_size, "kernel_size", name)
        self.stride = self.s_t = _positive(kernel_size if stride is None else stride, "stride", name)
        self.pad_t = _pad_amounts(padding, self.k_t, self.s_t, name, "padding")
        self.padding = _pad_config(padding, self.pad_t)
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        self._check_padding(name)

    def config(self):
        cfg = dict(kernel_size=self.kernel_size, stride=self.stride)
        if self.pad_t != (0, 0):
            cfg["padding"] = self.padding
        if self.ceil_mode:
            cfg["ceil_mode"] = True
        if not self.count_include_pad:
            cfg["count_include_pad"] = False
        return cfg


class _Pool2d(_Pool):
    two_d = True

    def _init2d(self, kernel_size, stride, padding, ceil_mode, count_include_pad):
        name = type(self).__name__
        self.k_f, self.k_t = (_positive(v, "kernel_size", name) for v in _pair(kernel_size, "kernel_size"))
        stride = (self.k_f, self.k_t) if stride is None else stride
        self.s_f, self.s_t = (_positive(v, "stride", name) for v in _pair(stride, "stride"))
        p_f, p_t = _pair(padding, "padding")
        self.pad_f = _pad_amounts(p_f, self.k_f, self.s_f, name, "feature padding")
        self.pad_t = _pad_amounts(p_t, self.k_t, self.s_t, name, "time padding")
        self._padding_arg = (_pad_config(p_f, self.pad_f), _pad_config(p_t, self.pad_t))
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        self._check_padding(name)

    kernel_size = property(lambda self: (self.k_f, self.k_t))
    stride = property(lambda self: (self.s_f, self.s_t))
    padding = property(lambda self: self._padding_arg)

    def config(self):
        cfg = dict(kernel_size=list(self.kernel_size), stride=list(self.stride))
        if self.pad_t != (0, 0) or self.pad_f != (0, 0):
            cfg["padding"] = list(self.padding)
        if self.ceil_mode:
            cfg["ceil_mode"] = True
        if self.op == "avg" and not self.count_include_pad:
            cfg["count_include_pad"] = False
        return cfg


class MaxPool2d(_Pool2d):
    """Max over (feature, time) patches; ``stride`` defaults to the kernel. ``padding``: an
    int, or (feature_pad, time_pad), each an int or a pair (left, right); -inf, as in PyTorch."""

    op = "max"

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False):
        self._init2d(kernel_size, stride, padding, ceil_mode, True)


class AvgPool2d(_Pool2d):
    """Mean over (feature, time) patches; ``stride`` defaults to the kernel; padding as for
    MaxPool2d, ``count_include_pad`` as in PyTorch."""

    op = "avg"

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        self._init2d(kernel_size, stride, padding, ceil_mode, count_include_pad)


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


def _finite(value, name: str, layer: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{layer}: {name} must be a number, got {value!r}") from exc
    if not math.isfinite(v):
        raise ModelError(f"{layer}: {name} must be finite, got {value!r}")
    return v


class ReLU(_Activation):
    def forward(self, x):
        return np.maximum(np.asarray(x, dtype=np.float64), 0.0)


class ReLU6(_Activation):
    def forward(self, x):
        return np.clip(np.asarray(x, dtype=np.float64), 0.0, 6.0)


class LeakyReLU(_Activation):
    def __init__(self, negative_slope=0.01):
        self.negative_slope = _finite(negative_slope, "negative_slope", "LeakyReLU")

    def config(self):
        return dict(negative_slope=self.negative_slope)

    def forward(self, x):
        x = np.asarray(x, dtype=np.float64)
        return np.where(x >= 0, x, x * self.negative_slope)


class Sigmoid(_Activation):
    def forward(self, x):
        with np.errstate(over="ignore"):  # exp(-x) = inf for x < -709: 1 / inf = 0, the limit
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
        with np.errstate(over="ignore"):  # x / inf = -0 for x < -709: the limit
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


class ELU(_Activation):
    """ELU: x for x > 0, alpha * (exp(x) - 1) otherwise."""

    def __init__(self, alpha=1.0):
        self.alpha = _finite(alpha, "alpha", "ELU")

    def config(self):
        return dict(alpha=self.alpha)

    def forward(self, x):
        x = np.asarray(x, dtype=np.float64)
        return np.where(x > 0, x, self.alpha * np.expm1(np.minimum(x, 0.0)))


class CELU(_Activation):
    """CELU: max(0, x) + min(0, alpha * (exp(x / alpha) - 1)); alpha > 0."""

    def __init__(self, alpha=1.0):
        self.alpha = _finite(alpha, "alpha", "CELU")
        if not self.alpha > 0:
            raise ModelError(f"CELU: alpha must be > 0, got {alpha!r}")

    def config(self):
        return dict(alpha=self.alpha)

    def forward(self, x):
        x = np.asarray(x, dtype=np.float64)
        return np.where(x > 0, x, self.alpha * np.expm1(np.minimum(x, 0.0) / self.alpha))


class SELU(_Activation):
    """SELU: scale * ELU(x, alpha) with PyTorch's constants."""

    ALPHA = 1.6732632423543772848170429916717
    SCALE = 1.0507009873554804934193349852946

    def forward(self, x):
        x = np.asarray(x, dtype=np.float64)
        return self.SCALE * np.where(x > 0, x, self.ALPHA * np.expm1(np.minimum(x, 0.0)))


class PReLU(_PerFrame):
    """PReLU: x for x >= 0, weight[c] * x otherwise; ``num_parameters`` is 1 (shared) or the
    channel count. ``weight``: (num_parameters,)."""

    param_names = ("weight",)

    def __init__(self, num_parameters=1, init=0.25):
        self.num_parameters = _positive(num_parameters, "num_parameters", "PReLU")
        self.weight = np.full(self.num_parameters, init, np.float32)

    def _expected_shape(self, name):
        return (self.num_parameters,)

    def config(self):
        return dict(num_parameters=self.num_parameters)

    def out_spec(self, spec, where):
        if self.num_parameters not in (1, spec.channels):
            raise ModelError(f"{where}: PReLU has {self.num_parameters} parameters for "
                             f"{spec.channels} channels (expected 1 or {spec.channels})")
        return spec

    def slopes(self, channels: int) -> np.ndarray:
        """Per-channel negative slopes (float32, length ``channels``)."""
        return np.broadcast_to(self.weight, (channels,)).astype(np.float32)

    def forward(self, x):
        x = np.asarray(x, dtype=np.float64)
        w = self.slopes(x.shape[0]).astype(np.float64).reshape((-1,) + (1,) * (x.ndim - 1))
        return np.where(x >= 0, x, w * x)


class Softplus(_Activation):
    """Softplus: log(1 + exp(beta * x)) / beta, and x where beta * x > threshold (PyTorch)."""

    def __init__(self, beta=1.0, threshold=20.0):
        self.beta = _finite(beta, "beta", "Softplus")
        self.threshold = _finite(threshold, "threshold", "Softplus")
        if not self.beta > 0:
            raise ModelError(f"Softplus: beta must be > 0, got {beta!r}")

    def config(self):
        return dict(beta=self.beta, threshold=self.threshold)

    def forward(self, x):
        x = np.asarray(x, dtype=np.float64)
        bx = self.beta * x
        return np.where(bx > self.threshold, x, np.logaddexp(0.0, bx) / self.beta)


class Softsign(_Activation):
    """Softsign: x / (1 + |x|)."""

    def forward(self, x):
        x = np.asarray(x, dtype=np.float64)
        return x / (1.0 + np.abs(x))


class Hardtanh(_Activation):
    """Hardtanh: clip(x, min_val, max_val)."""

    def __init__(self, min_val=-1.0, max_val=1.0):
        self.min_val = _finite(min_val, "min_val", "Hardtanh")
        self.max_val = _finite(max_val, "max_val", "Hardtanh")
        if not self.min_val < self.max_val:
            raise ModelError(f"Hardtanh: min_val must be < max_val, got {min_val!r}, {max_val!r}")

    def config(self):
        return dict(min_val=self.min_val, max_val=self.max_val)

    def forward(self, x):
        return np.clip(np.asarray(x, dtype=np.float64), self.min_val, self.max_val)


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
        return Spec(channels=math.prod(spec.shape), features=None, length=None)  # Python ints: never wraps

    def forward(self, x):
        return np.asarray(x, dtype=np.float64).reshape(-1)
