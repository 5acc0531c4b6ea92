"""Operators that join, split or reshape branches of a graph model, and the time-only
operators Pad and Crop.

Branches meet *aligned on the newest frame* (docs/semantics.md): inputs of different
lengths are cropped on the left to the shortest, as a causal TCN's right-aligned sum
does; PyTorch models of equal lengths meet position by position. All inputs of a merge
must advance at the same rate (step); those whose newest position is older are read
from their own buffers, delayed by the difference.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..errors import ModelError
from .layers import Layer, Spec, _positive
from .spec import strips

__all__ = ["Add", "Mul", "Concat", "ChannelSlice", "FrameFlatten", "Pad", "Crop", "Residual",
           "merge_spec"]


def merge_spec(specs: Sequence[Spec], where: str, name: str, channels: Optional[int] = None) -> Spec:
    """Spec of a right-aligned merge of ``specs`` (channels given for Concat)."""
    if len(specs) < 2:
        raise ModelError(f"{where}: {name} needs at least two inputs, got {len(specs)}")
    vectors = [s.is_vector for s in specs]
    if any(vectors) and not all(vectors):
        raise ModelError(f"{where}: {name} joins a vector (after a head) with a time series; "
                         f"both inputs must be before, or both after, the head")
    shapes = [s.frame for s in specs]
    if channels is None and len(set(shapes)) != 1:
        raise ModelError(f"{where}: {name} needs inputs of one per-frame shape, got "
                         f"{', '.join(map(str, shapes))}")
    if channels is not None and len({s.features for s in specs}) != 1:
        raise ModelError(f"{where}: {name} joins channels of inputs with different feature "
                         f"counts: {', '.join(map(str, shapes))}")
    ch = specs[0].channels if channels is None else channels
    if all(vectors):
        return Spec(channels=ch, features=specs[0].features, length=None)
    steps = {s.step for s in specs}
    if len(steps) != 1:
        raise ModelError(f"{where}: {name} joins branches that advance at different strides "
                         f"({', '.join(str(s.step) for s in specs)} frames per position); give "
                         f"every branch the same total stride")
    step = steps.pop()
    length = min(s.length for s in specs)
    crops = [s.length - length for s in specs]
    first = max(s.first + c * step for s, c in zip(specs, crops))
    rf = max(first - s.first - c * step + s.rf for s, c in zip(specs, crops))
    left = max(max(s.left - c, 0) for s, c in zip(specs, crops))
    right = max(s.right for s in specs)
    left, right = strips(left, right, length)
    return Spec(channels=ch, features=specs[0].features, length=length, step=step, first=first,
                rf=rf, left=left, right=right)


class _Merge(Layer):
    n_inputs = None  # any number >= 2

    def _aligned(self, xs, specs):
        xs = [np.asarray(x, dtype=np.float64) for x in xs]
        if specs[0].is_vector:
            return xs
        n = min(x.shape[-1] for x in xs)
        return [x[..., x.shape[-1] - n:] for x in xs]


class Add(_Merge):
    """Sum of two or more branches (residuals, skip sums), aligned on the newest frame."""

    def out_specs(self, specs, where):
        return merge_spec(specs, where, "Add")

    def forward_many(self, xs, specs):
        total = None
        for x in self._aligned(xs, specs):
            total = x.copy() if total is None else total + x
        return total


class Mul(_Merge):
    """Product of two or more branches (gates such as ``tanh(a) * sigmoid(b)``)."""

    def out_specs(self, specs, where):
        return merge_spec(specs, where, "Mul")

    def forward_many(self, xs, specs):
        total = None
        for x in self._aligned(xs, specs):
            total = x.copy() if total is None else total * x
        return total


class Concat(_Merge):
    """Branches stacked along channels, in input order (Inception)."""

    def out_specs(self, specs, where):
        return merge_spec(specs, where, "Concat", channels=sum(s.channels for s in specs))

    def forward_many(self, xs, specs):
        return np.concatenate(self._aligned(xs, specs), axis=0)


class ChannelSlice(Layer):
    """Channels ``start:stop`` of each frame (``torch.chunk`` / ``split`` of a gated conv)."""

    def __init__(self, start, stop):
        self.start = _positive(start, "start", "ChannelSlice", 0)
        self.stop = _positive(stop, "stop", "ChannelSlice", 1)
        if self.stop <= self.start:
            raise ModelError(f"ChannelSlice: stop ({stop}) must be > start ({start})")

    def config(self):
        return dict(start=self.start, stop=self.stop)

    def out_spec(self, spec, where):
        if self.stop > spec.channels:
            raise ModelError(f"{where}: ChannelSlice({self.start}, {self.stop}) of {spec.channels} channels")
        return Spec(channels=self.stop - self.start, features=spec.features, length=spec.length,
                    step=spec.step, first=spec.first, rf=spec.rf, left=spec.left, right=spec.right)

    def forward(self, x):
        return np.asarray(x, dtype=np.float64)[self.start:self.stop]


class FrameFlatten(Layer):
    """Each (C, F) frame as C*F channels in C order (a CRNN's reshape before 1-D layers);
    a size-1 feature axis is thereby squeezed. 1-D data passes through."""

    def out_spec(self, spec, where):
        if spec.is_vector:
            raise ModelError(f"{where}: FrameFlatten acts on frames before the head; after it use Flatten")
        f = spec.features or 1
        return Spec(channels=spec.channels * f, features=None, length=spec.length, step=spec.step,
                    first=spec.first, rf=spec.rf, left=spec.left, right=spec.right)

    def forward(self, x):
        x = np.asarray(x, dtype=np.float64)
        return x.reshape(-1, x.shape[-1]) if x.ndim == 3 else x


class Pad(Layer):
    """Zeros on the time axis, ``left`` before and ``right`` after (``F.pad`` in time)."""

    def __init__(self, left=0, right=0):
        self.left = _positive(left, "left", "Pad", 0)
        self.right = _positive(right, "right", "Pad", 0)

    def config(self):
        return dict(left=self.left, right=self.right)

    def out_spec(self, spec, where):
        if spec.is_vector:
            raise ModelError(f"{where}: Pad needs a time axis, but it comes after the head")
        length = spec.length + self.left + self.right
        left = spec.left + self.left
        right = spec.right + self.right
        left, right = strips(left, right, length)
        return Spec(channels=spec.channels, features=spec.features, length=length, step=spec.step,
                    first=spec.first - self.left * spec.step, rf=spec.rf, left=left, right=right)

    def forward(self, x):
        x = np.asarray(x, dtype=np.float64)
        return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(self.left, self.right)])


class Crop(Layer):
    """Drops ``left`` positions at the start and ``right`` at the end of the time axis
    (a ``Slice`` in time: the chomp of a causal TCN, a skip cropped to its body)."""

    def __init__(self, left=0, right=0):
        self.left = _positive(left, "left", "Crop", 0)
        self.right = _positive(right, "right", "Crop", 0)

    def config(self):
        return dict(left=self.left, right=self.right)

    def out_spec(self, spec, where):
        if spec.is_vector:
            raise ModelError(f"{where}: Crop needs a time axis, but it comes after the head")
        length = spec.length - self.left - self.right
        if length < 1:
            raise ModelError(f"{where}: Crop({self.left}, {self.right}) of {spec.length} positions "
                             f"leaves none; make the window longer")
        left, right = strips(spec.left - self.left, spec.right - self.right, length)
        return Spec(channels=spec.channels, features=spec.features, length=length, step=spec.step,
                    first=spec.first + self.left * spec.step, rf=spec.rf, left=left, right=right)

    def forward(self, x):
        x = np.asarray(x, dtype=np.float64)
        return x[..., self.left:x.shape[-1] - self.right]


class Residual(Layer):
    """A residual block for :class:`~deepshift_edge.Sequential`: ``body(x) + skip(x)``,
    aligned on the newest frame.

    ``body`` is a list of layers (strides, padding and dilation allowed); ``skip`` is None
    (identity), a layer (a 1x1 ``Conv1d``, a pool) or a list of layers (1x1 conv + BN +
    ReLU). When the body shortens the window (valid padding), the skip branch is cropped on
    the left, as a causal TCN's right-aligned sum does. In a graph model write the sum
    directly: ``Add()(body_out, skip_out)``.
    """

    def __init__(self, body: Sequence[Layer], skip=None):
        self.body = list(body)
        self.skip = skip
        if not self.body:
            raise ModelError("Residual: body must hold at least one layer")
        for i, layer in enumerate(self.body + self.skip_layers):
            if not isinstance(layer, Layer):
                raise ModelError(f"Residual: element {i} is {type(layer).__name__}, not a Layer")
            if layer.is_head or isinstance(layer, Residual) or layer.n_inputs != 1:
                raise ModelError(f"Residual: {type(layer).__name__} is not allowed inside a residual block")

    @property
    def skip_layers(self) -> list:
        if self.skip is None:
            return []
        return list(self.skip) if isinstance(self.skip, (list, tuple)) else [self.skip]

    def config(self):
        return {}

    def __repr__(self):
        return f"Residual({self.body!r}, skip={self.skip!r})"

    def expand(self, x, where: str = "Residual"):
        """Apply the block to graph tensor ``x``: the body, the skip, their Add."""
        body = x
        for i, layer in enumerate(self.body):
            body = layer(body, name=f"{where}.body.{i}")
        skip = x
        for i, layer in enumerate(self.skip_layers):
            name = f"{where}.skip" if not isinstance(self.skip, (list, tuple)) else f"{where}.skip.{i}"
            skip = layer(skip, name=name)
        return Add()(body, skip, name=f"{where}.add")
