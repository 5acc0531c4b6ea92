"""`Sequential`: a window network, its offline reference, and the door to streaming."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

from . import layers as L
from ..errors import ModelError, NotStreamableError, StreamInputError

__all__ = ["Sequential"]


class Sequential:
    """A stack of layers applied to the window of the last ``window`` frames.

    Parameters
    ----------
    layers : list of Layer
        Time layers (convs, pools, residual blocks, per-frame layers), then at most one
        head (``LastFrame``, ``GlobalAvgPool``, ``GlobalMaxPool``, ``Flatten``), then
        per-vector layers (``Linear``, activations, ``Softmax``). Without a head, the
        model outputs its newest time position, as if ``LastFrame()`` ended the body.
    in_features : int or (int, int)
        ``C`` for 1-D frames of shape (C,), or ``(C, F)`` for 2-D frames.
    window : int, optional
        Frames the network sees (``W``). Defaults to the receptive field.

    The output at frame ``t`` is ``Net(x[t-W+1 : t+1])``: see :meth:`forward`.

    Attributes (set by :meth:`analyze`): ``receptive_field`` (frames one output depends on),
    ``window``, ``hop`` (frames between outputs in ``mode='decimated'``: the product of the
    strides), ``delay`` (frames between the newest input and the newest position the head
    reads), ``output_shape``, and ``equivalence``: ``'window-exact'`` when every output
    equals ``Net`` on its window whatever came before, so the model streams; or
    ``'stream-exact'`` when zero padding inside the window reaches positions the head reads
    (each window sees zeros where a stream has history): :meth:`stream` refuses such a model
    with :class:`~deepshift_edge.NotStreamableError`. docs/semantics.md has the details.

    ``labels`` (class names, one per output value, or None) and ``metadata`` (a dict of
    names to JSON scalars: name, sample rate, units, provenance) travel with the model
    through ``dse.save`` / ``dse.load``; nothing in the computation reads them.
    """

    def __init__(self, layers: Sequence[L.Layer], in_features: Union[int, Sequence[int]],
                 window: Optional[int] = None):
        self.layers = list(layers)
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, L.Layer):
                raise ModelError(f"layer {i}: expected a deepshift_edge Layer, got {type(layer).__name__}")
        if isinstance(in_features, (tuple, list)):
            if len(in_features) != 2:
                raise ModelError(f"in_features must be C or (C, F), got {in_features!r}")
            self.in_features = tuple(L._positive(v, "in_features", "Sequential") for v in in_features)
        else:
            self.in_features = L._positive(in_features, "in_features", "Sequential")
        if window is not None:
            window = L._positive(window, "window", "Sequential")
        self._window_arg = window
        self.labels = None    # class names; kept by dse.save/dse.load (formats/npz.py)
        self.metadata = {}    # free-form JSON scalars; likewise
        self.analyze()

    # ------------------------------------------------------------------ shapes
    @property
    def frame_shape(self) -> tuple:
        return self.in_features if isinstance(self.in_features, tuple) else (self.in_features,)

    def _input_spec(self, length: int) -> L.Spec:
        c = self.frame_shape[0]
        f = self.frame_shape[1] if len(self.frame_shape) == 2 else None
        return L.Spec(channels=c, features=f, length=length)

    def _specs(self, window: int) -> list:
        """Spec before each layer and after the last one (implicit LastFrame included)."""
        spec = self._input_spec(window)
        specs = [spec]
        heads = 0
        for i, layer in enumerate(self.layers):
            spec = layer.out_spec(spec, f"layer {i} ({type(layer).__name__})")
            if layer.is_head and not specs[-1].is_vector:
                heads += 1
            specs.append(spec)
        if not spec.is_vector:
            specs.append(L.LastFrame().out_spec(spec, "implicit LastFrame"))
        return specs

    def _body_end(self) -> int:
        """Index of the head layer (len(layers) when the head is the implicit LastFrame)."""
        for i, layer in enumerate(self.layers):
            if layer.is_head:
                return i
        return len(self.layers)

    def analyze(self):
        """Validate the stack and compute receptive field, window, hop and equivalence.

        Call again after changing ``layers`` in place.
        """
        # Pass 1 with an infinite-ish window gives the receptive field of one position.
        probe = self._specs_no_head_check(10 ** 9)
        end = self._body_end()
        body_out = probe[end]
        self.receptive_field = body_out.rf
        window = self._window_arg
        if window is None:
            # At least the receptive field (docs/semantics.md): with causal padding a
            # shorter window would fit, but its head would see the padding.
            window = max(self._min_window(), self.receptive_field)
        self.window = window
        self.specs = self._specs(window)
        self.head = self.layers[end] if end < len(self.layers) else L.LastFrame()
        body = self.specs[end]
        self.hop = body.step
        # Frames between the newest input and the newest position the head reads.
        self.delay = (window - 1) - (body.first + (body.length - 1) * body.step)
        self.output_shape = self.specs[-1].shape
        reads_from = body.length - 1 if isinstance(self.head, L.LastFrame) else 0
        if body.reach > reads_from:
            self.equivalence = "stream-exact"
            self._why_not_window_exact = (
                f"zero padding inside the window reaches {body.reach} of the {body.length} positions "
                f"the head {type(self.head).__name__} reads: every window sees zeros where the "
                f"stream has history")
        else:
            self.equivalence = "window-exact"
            self._why_not_window_exact = None
        return self

    def _specs_no_head_check(self, window):
        spec = self._input_spec(window)
        specs = [spec]
        for i, layer in enumerate(self.layers):
            if layer.is_head and not spec.is_vector:
                specs.append(spec)  # rf of the body ends here
                break
            spec = layer.out_spec(spec, f"layer {i} ({type(layer).__name__})")
            specs.append(spec)
        specs += [spec] * (len(self.layers) + 1 - len(specs))
        return specs

    def _min_window(self) -> int:
        """Smallest window that gives every layer at least one position."""
        def fits(w):
            try:
                self._specs(w)
                return True
            except ModelError:
                return False

        hi = max(self.receptive_field, 1)
        while not fits(hi):
            if hi > 1 << 24:  # no window works: report the error at the receptive field
                self._specs(max(self.receptive_field, 1))
            hi *= 2
        lo = 1
        while lo < hi:
            mid = (lo + hi) // 2
            if fits(mid):
                hi = mid
            else:
                lo = mid + 1
        return hi

    # ------------------------------------------------------------------ reference
    def _check_sequence(self, x) -> np.ndarray:
        try:
            arr = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise StreamInputError(f"expected a numeric array of frames, got {type(x).__name__}") from exc
        want = (None,) + self.frame_shape
        if arr.ndim != len(want) or arr.shape[1:] != self.frame_shape:
            raise StreamInputError(f"expected a sequence of shape (T, {', '.join(map(str, self.frame_shape))}), "
                                   f"got {arr.shape}")
        return arr

    def forward_window(self, window_frames) -> np.ndarray:
        """Run the network offline on one window of shape (W, *frame_shape), in float64."""
        x = self._check_sequence(window_frames)
        if x.shape[0] != self.window:
            raise StreamInputError(f"expected a window of {self.window} frames, got {x.shape[0]}")
        value = np.moveaxis(x, 0, -1)  # (C[, F], W): PyTorch layout
        for layer in self.layers:
            value = layer.forward(value)
        if value.ndim > len(self.output_shape):
            value = value[..., -1]  # implicit LastFrame
        return value

    def forward(self, x) -> np.ndarray:
        """Offline reference on a whole sequence ``x`` of shape (T, *frame_shape).

        Returns one row per window end: row ``i`` is the network run on frames
        ``x[i : i + W]``, i.e. the output at frame ``t = i + W - 1``. Shape
        ``(T - W + 1, *output_shape)``, float64. This is the readable NumPy oracle,
        written for clarity, not speed.
        """
        x = self._check_sequence(x)
        n = x.shape[0] - self.window + 1
        out = np.empty((max(n, 0),) + tuple(self.output_shape))
        for i in range(max(n, 0)):
            out[i] = self.forward_window(x[i:i + self.window])
        return out

    # ------------------------------------------------------------------ streaming
    def stream(self, batch: Optional[int] = None, mode: str = "dense", block: int = 64):
        """Create a stream; every buffer is sized and allocated here, once.

        ``mode='dense'`` gives an output for every frame once the window is full;
        ``mode='decimated'`` one every ``hop`` frames (strided layers run at their own
        rate). ``batch=B`` runs B independent streams in one call. ``push_many`` runs up
        to ``block`` frames layer by layer (more reuse of weights, ``block - 1`` more rows
        per ring buffer).
        """
        from ..engine.stream import Stream  # local import: the stream module needs the compiled core

        if self.equivalence != "window-exact":
            raise NotStreamableError(
                f"this model cannot stream window-exactly: {self._why_not_window_exact}. "
                f"Use padding='valid', a head that reads only the newest position (LastFrame), "
                f"or a window of at least the receptive field ({self.receptive_field}).")
        return Stream(self, batch=batch, mode=mode, block=block)

    # ------------------------------------------------------------------ info
    def __repr__(self):
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return (f"Sequential([\n  {inner}\n], in_features={self.in_features!r}, window={self.window})")
