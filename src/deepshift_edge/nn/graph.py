"""Graph models: a directed acyclic graph of time operators over one window of frames.

Written functionally, as in Keras::

    x = dse.Input(6)                                   # frames of 6 channels
    a = dse.Conv1d(6, 16, 3, padding="same")(x)
    g = dse.Mul()(dse.Tanh()(a), dse.Sigmoid()(a))      # a gate of two branches
    y = dse.Linear(16, 4)(dse.GlobalAvgPool()(g))
    model = dse.Model(x, y, window=64)

The output at frame ``t`` is the network run offline on the window ``x[t-W+1 : t+1]``,
zero padding at both edges of that window included (docs/semantics.md).
:class:`~deepshift_edge.Sequential` is the chain-shaped special case.

Time bookkeeping is per node (:class:`~deepshift_edge.nn.spec.Spec`): length, step,
newest frame, receptive field and the two edge strips that zero padding reaches.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from math import gcd
from typing import List, Optional, Sequence, Union

import numpy as np

from ..errors import ModelError, StreamInputError
from . import layers as L
from .spec import Spec

__all__ = ["Input", "Tensor", "Model", "GraphNode", "apply_layer", "SEMANTICS"]

SEMANTICS = ("window", "sequence")
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


class _Source:
    """One node of a graph under construction (what a Tensor points at)."""

    __slots__ = ("layer", "inputs", "name", "frame_shape")

    def __init__(self, layer, inputs, name, frame_shape=None):
        self.layer, self.inputs, self.name, self.frame_shape = layer, tuple(inputs), name, frame_shape


class Tensor:
    """A symbolic value in a graph model under construction: what ``Input`` and a layer
    call return. It holds no data; pass it to further layers and finally to ``Model``."""

    __slots__ = ("_source",)

    def __init__(self, source: _Source):
        self._source = source

    def __repr__(self):
        what = "Input" if self._source.layer is None else type(self._source.layer).__name__
        return f"<Tensor from {what} {self._source.name or ''}>"


def _frame_shape(in_features) -> tuple:
    if isinstance(in_features, (tuple, list)):
        if len(in_features) != 2:
            raise ModelError(f"in_features must be C or (C, F), got {in_features!r}")
        return tuple(L._positive(v, "in_features", "Input") for v in in_features)
    return (L._positive(in_features, "in_features", "Input"),)


def Input(in_features: Union[int, Sequence[int]], name: Optional[str] = None) -> Tensor:
    """The frames entering a graph model: ``C`` (1-D frames) or ``(C, F)`` (2-D frames)."""
    return Tensor(_Source(None, (), name, _frame_shape(in_features)))


def apply_layer(layer, inputs, name: Optional[str]) -> Tensor:
    """``layer(*inputs)``: a new graph node (called by :meth:`Layer.__call__`)."""
    if not inputs:
        raise ModelError(f"{type(layer).__name__}: call it on a graph tensor, e.g. layer(x)")
    for t in inputs:
        if not isinstance(t, Tensor):
            raise ModelError(f"{type(layer).__name__}: expected graph tensors (from dse.Input or a "
                             f"layer call), got {type(t).__name__}")
    want = layer.n_inputs
    if want is None and len(inputs) < 2:
        raise ModelError(f"{type(layer).__name__} joins two or more tensors, got {len(inputs)}")
    if want is not None and len(inputs) != want:
        raise ModelError(f"{type(layer).__name__} takes {want} input, got {len(inputs)}")
    if name is not None and (not isinstance(name, str) or not _NAME.match(name)):
        raise ModelError(f"node name must be 1-128 characters of letters, digits, _ . : -, got {name!r}")
    return Tensor(_Source(layer, [t._source for t in inputs], name))


@dataclass(frozen=True)
class GraphNode:
    """One operator of a built model: its layer (None for the input), the indices of the
    nodes it reads (earlier in the list), and a unique name."""

    name: str
    layer: Optional[L.Layer]
    inputs: tuple


def _lcm(a: int, b: int) -> int:
    return a * b // gcd(a, b)


class Model:
    """A graph model over windows of ``window`` frames.

    Parameters
    ----------
    inputs : Tensor
        From :func:`Input`.
    outputs : Tensor
        The graph's output. Without a head (a layer reducing time), the model outputs the
        newest position of ``outputs``, as if ``LastFrame()`` followed.
    window : int, optional
        Frames the network sees (``W``). Defaults to the receptive field (or the least
        window every layer fits in, if larger).
    semantics : 'window' or 'sequence'
        'window' (default): the output at frame t is the network run on the window ending
        at t. 'sequence': for a fully convolutional model without a head, the output for
        position t is the network run over the whole recording, at t (docs/semantics.md).

    ``model.forward(x)`` is the offline float64 reference; ``model.stream()`` streams it.
    ``labels`` (class names per output value, or None) and ``metadata`` (JSON scalars) travel
    with the model through ``dse.save`` / ``dse.load``.
    """

    def __init__(self, inputs: Tensor, outputs: Tensor, window: Optional[int] = None,
                 semantics: str = "window"):
        if not isinstance(inputs, Tensor) or inputs._source.layer is not None:
            raise ModelError("Model: inputs must be the tensor returned by dse.Input(...)")
        if not isinstance(outputs, Tensor):
            raise ModelError(f"Model: outputs must be a graph tensor, got {type(outputs).__name__}")
        if semantics not in SEMANTICS:
            raise ModelError(f"semantics must be 'window' or 'sequence', got {semantics!r}")
        self.semantics = semantics
        self.nodes = self._collect(inputs._source, outputs._source)
        self.in_features = (inputs._source.frame_shape[0] if len(inputs._source.frame_shape) == 1
                            else tuple(inputs._source.frame_shape))
        if window is not None:
            window = L._positive(window, "window", "Model")
        self._window_arg = window
        self._implicit_head = False
        if not hasattr(self, "labels"):  # kept across Sequential.analyze()
            self.labels = None    # class names; kept by dse.save/dse.load (formats/npz.py)
            self.metadata = {}    # free-form JSON scalars; likewise
        self._analyze_graph()

    @classmethod
    def from_nodes(cls, in_features, nodes: List[GraphNode], window=None, semantics="window"):
        """Rebuild a model from its node list (as :attr:`nodes` gives it; node 0 the input)."""
        x = Input(in_features, name=nodes[0].name)
        tensors = [x]
        for node in nodes[1:]:
            tensors.append(apply_layer(node.layer, [tensors[i] for i in node.inputs], node.name))
        return cls(x, tensors[-1], window=window, semantics=semantics)

    # ------------------------------------------------------------------ structure
    @staticmethod
    def _collect(source: _Source, sink: _Source) -> List[GraphNode]:
        """Topologically ordered nodes from the input to the output (depth first)."""
        order, state = [], {}
        stack = [(sink, False)]
        while stack:
            src, done = stack.pop()
            if done:
                state[id(src)] = 2
                order.append(src)
                continue
            if state.get(id(src)) == 2:
                continue
            if state.get(id(src)) == 1:
                raise ModelError("Model: the graph has a cycle")
            state[id(src)] = 1
            stack.append((src, True))
            for parent in reversed(src.inputs):
                if state.get(id(parent)) != 2:
                    stack.append((parent, False))
        inputs = [s for s in order if s.layer is None]
        if not inputs or inputs[0] is not source or len(inputs) > 1:
            raise ModelError("Model: the output must depend on exactly one input, the one given "
                             "as inputs")
        index = {id(s): i for i, s in enumerate(order)}
        used, nodes = set(), []
        for i, s in enumerate(order):
            name = s.name or ("input" if s.layer is None else f"{type(s.layer).__name__.lower()}_{i}")
            if name in used:
                raise ModelError(f"Model: two nodes are named {name!r}")
            used.add(name)
            nodes.append(GraphNode(name, s.layer, tuple(index[id(p)] for p in s.inputs)))
        return nodes

    @property
    def frame_shape(self) -> tuple:
        return self.in_features if isinstance(self.in_features, tuple) else (self.in_features,)

    @property
    def layers(self) -> list:
        """The layers of the graph, in node order (the input excluded)."""
        return [n.layer for n in self.nodes[1:]]

    def consumers(self) -> List[List[int]]:
        """For each node, the indices of the nodes that read it."""
        out = [[] for _ in self.nodes]
        for i, node in enumerate(self.nodes):
            for j in node.inputs:
                out[j].append(i)
        return out

    # ------------------------------------------------------------------ shapes and time
    def _input_spec(self, length: int) -> Spec:
        shape = self.frame_shape
        return Spec(channels=shape[0], features=shape[1] if len(shape) == 2 else None, length=length)

    def node_specs(self, window: int, time_only: bool = False) -> List[Spec]:
        """The output spec of every node for windows of ``window`` frames (raises ModelError).
        ``time_only``: None for the nodes after a head (whose shapes may depend on the window)."""
        specs = [self._input_spec(window)]
        for i, node in enumerate(self.nodes[1:], start=1):
            where = f"node {node.name} ({type(node.layer).__name__})"
            ins = [specs[j] for j in node.inputs]
            if time_only and any(s is None or s.is_vector for s in ins):
                specs.append(None)
                continue
            if node.layer.is_head and ins[0].is_vector and not isinstance(node.layer, L.Flatten):
                raise ModelError(f"{where}: {type(node.layer).__name__} reduces the time axis, "
                                 f"but its input already has no time axis (a second head)")
            specs.append(node.layer.out_specs(ins, where))
        return specs

    def _fits(self, window: int) -> bool:
        try:
            self.node_specs(window)
            return True
        except ModelError:
            return False

    def _min_window(self, rf: int) -> int:
        """Smallest window that gives every node at least one position."""
        hi = max(rf, 1)
        while not self._fits(hi):
            if hi > 1 << 24:  # no window works: report the error at the receptive field
                self.node_specs(max(rf, 1))
            hi *= 2
        lo = 1
        while lo < hi:
            mid = (lo + hi) // 2
            if self._fits(mid):
                hi = mid
            else:
                lo = mid + 1
        return hi

    def head_nodes(self) -> List[int]:
        """Nodes that reduce the time axis of a time-valued input."""
        return [i for i, n in enumerate(self.nodes) if i and n.layer.is_head
                and self._probe[n.inputs[0]] is not None and not self._probe[n.inputs[0]].is_vector]

    def analyze(self):
        """Compute the specs, receptive field, window, hop and delay again (after changing
        a layer's hyper-parameters in place)."""
        return self._analyze_graph()

    def _analyze_graph(self):
        self._probe = self.node_specs(10 ** 9, time_only=True)
        if self._probe[-1] is not None and not self._probe[-1].is_vector and self.semantics == "window":
            # The model outputs the newest position: an explicit LastFrame node.
            self.nodes = self.nodes + [GraphNode(self._unique("last_frame"), L.LastFrame(),
                                                 (len(self.nodes) - 1,))]
            self._implicit_head = True
            self._probe = self.node_specs(10 ** 9, time_only=True)
        heads = self.head_nodes()
        if self.semantics == "sequence":
            if heads or self._probe[-1] is None or self._probe[-1].is_vector:
                raise ModelError("semantics='sequence' is for fully convolutional models whose "
                                 "output has a time axis; this model has a head "
                                 f"({type(self.nodes[heads[0]].layer).__name__})" if heads else
                                 "semantics='sequence' needs an output with a time axis")
            reads = [len(self.nodes) - 1]
        else:
            reads = [self.nodes[h].inputs[0] for h in heads]
        self.receptive_field = max(self._probe[i].rf for i in reads)
        window = self._window_arg
        if window is None:
            window = max(self._min_window(self.receptive_field), self.receptive_field)
        self.window = window
        self.specs = self.node_specs(window)
        steps = [s.step for s in self.specs if not s.is_vector]
        hop = 1
        for s in steps:
            hop = _lcm(hop, s)
        self.hop = hop
        newest = max(self.specs[i].newest(self.specs[i].length - 1) for i in reads)
        # Frames between the newest input and the newest position the output depends on.
        self.delay = max(0, (window - 1) - newest)
        self.output_shape = self.specs[-1].frame if not self.specs[-1].is_vector else self.specs[-1].shape
        if self.semantics == "sequence":
            self.output_shape = self.specs[-1].frame
        self.equivalence = "window-exact"  # every supported model streams exactly
        return self

    def _unique(self, base: str) -> str:
        names = {n.name for n in self.nodes}
        name, k = base, 1
        while name in names:
            k += 1
            name = f"{base}_{k}"
        return name

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

    def _run(self, frames: np.ndarray, specs: List[Spec]) -> np.ndarray:
        values = [np.moveaxis(frames, 0, -1)]  # (C[, F], T): PyTorch layout
        for node in self.nodes[1:]:
            ins = [values[j] for j in node.inputs]
            values.append(node.layer.forward_many(ins, [specs[j] for j in node.inputs]))
        return values[-1]

    def forward_window(self, window_frames) -> np.ndarray:
        """Run the network offline on one window of shape (W, *frame_shape), in float64."""
        x = self._check_sequence(window_frames)
        if x.shape[0] != self.window:
            raise StreamInputError(f"expected a window of {self.window} frames, got {x.shape[0]}")
        return self._run(x, self.specs)

    def forward(self, x) -> np.ndarray:
        """Offline reference on a whole sequence ``x`` of shape (T, *frame_shape), float64.

        'window' semantics: one row per window end, row ``i`` is the network run on frames
        ``x[i : i + W]`` (the output at frame ``t = i + W - 1``); shape
        ``(T - W + 1, *output_shape)``. 'sequence' semantics: the network run once over
        all of ``x``, one row per output position. This is the readable NumPy oracle,
        written for clarity, not speed.
        """
        x = self._check_sequence(x)
        if self.semantics == "sequence":
            specs = self.node_specs(x.shape[0])
            return np.moveaxis(self._run(x, specs), -1, 0)
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
        from ..engine.stream import Stream  # the engine compiles models; models need not import it
        return Stream(self, batch=batch, mode=mode, block=block)

    # ------------------------------------------------------------------ info
    def __repr__(self):
        rows = []
        for node in self.nodes[1:]:
            ins = ", ".join(self.nodes[j].name for j in node.inputs)
            rows.append(f"{node.name} = {node.layer!r}({ins})")
        inner = "\n  ".join(rows)
        return (f"Model(in_features={self.in_features!r}, window={self.window}, "
                f"semantics={self.semantics!r},\n  {inner}\n)")
