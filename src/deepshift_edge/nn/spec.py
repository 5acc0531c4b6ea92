"""Shapes and time bookkeeping of the data between two operators of a window network.

Inside the window ending at frame ``t`` (``W`` frames, indices ``0..W-1``), an operator's
output has ``length`` positions. Position ``j`` depends on window frames up to
``first + j*step`` (its newest input frame, counted from the window's first frame) and
sees ``rf`` frames when none of them is padding.

Zero padding inside the window (docs/semantics.md) splits the positions in three:

* the first ``left`` positions read a padding zero at the window's left edge, or a
  left-strip position of their input;
* the last ``right`` positions read the right edge's padding (or a right-strip input);
* the positions between are the *interior*: the same values the unpadded network
  computes, a function of absolute time only, shared by every window that contains them.

The streaming engine computes one new interior column per operator per frame and
recomputes only the two strips, per window. When the strips meet (``left + right >=
length``) the whole operator is strip: the convention is then ``left = length``,
``right = 0`` (:func:`strips`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

__all__ = ["Spec", "strips", "time_op_spec"]


@dataclass(frozen=True)
class Spec:
    """Shape of one operator's output, in window terms (see the module docstring).

    After a head (time reduced) ``length`` is None and the value is a vector.
    """

    channels: int
    features: Optional[int]  # None for 1-D data
    length: Optional[int]
    step: int = 1
    first: int = 0
    rf: int = 1
    left: int = 0
    right: int = 0

    @property
    def is_vector(self) -> bool:
        return self.length is None

    @property
    def shape(self) -> tuple:
        """Reference-layout shape (channels[, features][, time])."""
        dims = (self.channels,) if self.features is None else (self.channels, self.features)
        return dims if self.length is None else dims + (self.length,)

    @property
    def frame(self) -> tuple:
        """Per-position shape: (channels,) or (channels, features)."""
        return (self.channels,) if self.features is None else (self.channels, self.features)

    @property
    def interior(self) -> range:
        """Window positions that are shift-invariant (empty when all is strip)."""
        if self.length is None:
            return range(0)
        return range(self.left, self.length - self.right)

    @property
    def strip_positions(self) -> list:
        """Window positions recomputed for every window: the left strip, then the right one."""
        if self.length is None:
            return []
        return list(range(self.left)) + list(range(self.length - self.right, self.length))

    def newest(self, j: int) -> int:
        """Window frame index of the newest input frame position ``j`` depends on."""
        return self.first + j * self.step


def strips(left: int, right: int, length: int) -> tuple:
    """Normalise strip widths: clip to the length; all strip becomes (length, 0)."""
    left, right = max(0, min(left, length)), max(0, min(right, length))
    if left + right >= length:
        return length, 0
    return left, right


def time_op_spec(spec: Spec, *, kernel: int, dilation: int, stride: int, pad_left: int,
                 pad_right: int, ceil_mode: bool = False, channels: int, features) -> Spec:
    """Spec after a sliding operator (conv or pool) over time, with zero padding.

    Output position ``j`` reads input positions ``j*stride - pad_left + i*dilation``,
    ``i < kernel``. The caller has checked that at least one output position exists
    (``output_length`` > 0).
    """
    eff = (kernel - 1) * dilation + 1
    length = output_length(spec.length, kernel, dilation, stride, pad_left, pad_right, ceil_mode)
    # Left strip: outputs whose first tap lies left of the input's clean positions.
    reach_left = spec.left + pad_left
    left = 0 if reach_left <= 0 else -(-reach_left // stride)
    # Right strip: outputs whose last tap lies right of the last clean input position.
    last_clean = spec.length - 1 - spec.right
    span = last_clean + pad_left - (eff - 1)  # an output j is clean iff j*stride <= span
    clean = 0 if span < 0 else span // stride + 1
    right = length - min(length, clean)
    left, right = strips(left, right, length)
    return Spec(channels=channels, features=features, length=length, step=spec.step * stride,
                first=spec.first + (eff - 1 - pad_left) * spec.step,
                rf=spec.rf + (eff - 1) * spec.step, left=left, right=right)


def output_length(n: int, kernel: int, dilation: int, stride: int, pad_left: int, pad_right: int,
                  ceil_mode: bool = False) -> int:
    """PyTorch's output length of a conv/pool over ``n`` positions (may be < 1)."""
    eff = (kernel - 1) * dilation + 1
    span = n + pad_left + pad_right - eff
    if span < 0:
        return 0
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    # PyTorch (and ONNX from opset 19): the last window must start inside the input or
    # the left padding, not in the right padding.
    if (out - 1) * stride >= n + pad_left:
        out -= 1
    return out
