"""`Sequential`: a chain of layers, the simplest graph model."""
from __future__ import annotations

from typing import Optional, Sequence, Union

from ..errors import ModelError
from . import layers as L
from .graph import Input, Model
from .merge import Residual

__all__ = ["Sequential"]


class Sequential(Model):
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
    semantics : 'window' or 'sequence'
        See :class:`~deepshift_edge.Model`.

    The output at frame ``t`` is ``Net(x[t-W+1 : t+1])`` with the zero padding of every
    layer at both edges of that window: see :meth:`forward`.

    Attributes (set by :meth:`analyze`): ``receptive_field`` (frames one output position
    depends on), ``window``, ``hop`` (frames between outputs in ``mode='decimated'``: the
    product of the strides), ``delay`` (frames between the newest input and the newest
    position the head reads), ``output_shape``, ``specs`` (per node: length, step, strips),
    and ``equivalence``, always ``'window-exact'``: every output equals ``Net`` on its window
    whatever came before, zero padding included, for every model built from these layers.
    docs/semantics.md has the details.

    ``labels`` (class names, one per output value, or None) and ``metadata`` (a dict of
    names to JSON scalars: name, sample rate, units, provenance) travel with the model
    through ``dse.save`` / ``dse.load``; nothing in the computation reads them.
    """

    def __init__(self, layers: Sequence[L.Layer], in_features: Union[int, Sequence[int]],
                 window: Optional[int] = None, semantics: str = "window"):
        self.layers = list(layers)
        self._in_arg = in_features
        self._semantics_arg = semantics
        if window is not None:
            window = L._positive(window, "window", "Sequential")
        self._seq_window = window
        self.analyze()

    def analyze(self):
        """Validate the stack and compute receptive field, window, hop and delay.

        Call again after changing ``layers`` in place."""
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, L.Layer):
                raise ModelError(f"layer {i}: expected a deepshift_edge Layer, got {type(layer).__name__}")
            if layer.n_inputs != 1:
                raise ModelError(f"layer {i}: {type(layer).__name__} joins branches; build a graph "
                                 f"model (dse.Input ... dse.Model) for it")
        x = Input(self._in_arg)
        y = x
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Residual):
                y = layer.expand(y, f"layers.{i}")
            else:
                y = layer(y, name=f"layers.{i}")
        Model.__init__(self, x, y, window=self._seq_window, semantics=self._semantics_arg)
        return self

    @property
    def layers(self) -> list:
        return self._layers

    @layers.setter
    def layers(self, value):
        self._layers = list(value)

    @property
    def head(self) -> L.Layer:
        """The layer reducing time (the implicit ``LastFrame`` when there is none)."""
        for layer in self.layers:
            if layer.is_head:
                return layer
        return L.LastFrame()

    def __repr__(self):
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return (f"Sequential([\n  {inner}\n], in_features={self.in_features!r}, window={self.window})")
