"""Graph models stream exactly: random DAGs (residuals with strides, gates, concatenations,
skip sums, 2-D -> 1-D reshapes, Pad/Crop, padding of every kind, every head) against the
float64 reference, in both modes, push and push_many; PyTorch as a second oracle.

Also the strip bookkeeping itself: which positions zero padding reaches, against a brute
force that perturbs the window and watches which positions move."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

import deepshift_edge as dse
from graph_strategies import graph_cases, randomize_graph
from test_stream_vs_reference import HYPO, MODES, check_push_many, check_stream, shift_would_be_detected


def check_graph_case(case):
    model, x = case.model, case.x
    note(repr(case))
    ref = model.forward(x)
    assert np.isfinite(ref).all()
    for mode in MODES:
        check_stream(model, x, mode, ref, block=1)
        check_push_many(model, x, mode, ref, block=case.seed % 7 + 1 if case.seed % 2 else 64)


@pytest.mark.parametrize("head", ["none", "last", "avg", "max", "flatten"])
@settings(max_examples=25, **HYPO)
@given(data=st.data())
def test_random_graphs_stream_equals_reference(head, data):
    check_graph_case(data.draw(graph_cases(heads=(head,)), label="case"))


@settings(max_examples=20, **HYPO)
@given(case=graph_cases(max_blocks=2))
def test_random_graphs_match_pytorch(case):
    torch = pytest.importorskip("torch")
    from deepshift_edge.convert.torch_export import to_torch
    model, x = case.model, case.x
    try:
        module = to_torch(model)
    except NotImplementedError as exc:  # asymmetric pool padding has no PyTorch module
        pytest.skip(str(exc))
    w = model.window
    windows = np.stack([x[i:i + w] for i in range(len(x) - w + 1)])
    with torch.no_grad():
        want = module(torch.from_numpy(np.moveaxis(windows, 1, -1).astype(np.float64))).numpy()
    got = model.stream().push_many(x)
    scale = max(float(np.abs(want).max()), 1e-6)
    assert np.abs(got - want).max() <= 1e-4 * scale + 1e-6


def test_the_comparison_can_fail():
    """A stream one frame late, or a strip computed as interior, is far outside the tolerance."""
    x = dse.Input(2)
    y = dse.GlobalAvgPool()(dse.Conv1d(3, 3, 3, padding="same")(dse.Conv1d(2, 3, 5, padding=2)(x)))
    model = randomize_graph(dse.Model(x, y, window=12), np.random.default_rng(0))
    xs = np.random.default_rng(1).standard_normal((40, 2)).astype(np.float32)
    ref = model.forward(xs)
    assert shift_would_be_detected(ref)
    # The same layers without padding inside the window read different values: the
    # reference must tell them apart (what a stream ignoring the strips would output).
    xv = dse.Input(2)
    c1 = dse.Conv1d(2, 3, 5)
    c2 = dse.Conv1d(3, 3, 3)
    for a, b in ((c1, model.nodes[1].layer), (c2, model.nodes[2].layer)):
        a.weight, a.bias = b.weight, b.bias
    valid = dse.Model(xv, dse.GlobalAvgPool()(c2(c1(xv))), window=12)
    assert np.abs(valid.forward(xs) - ref).max() > 100 * 1e-4 * np.abs(ref).max()


# ---------------------------------------------------------------------------- strips, brute force
def _node_values(model, node: int, frames) -> np.ndarray:
    vals = [np.moveaxis(frames, 0, -1)]
    for nd in model.nodes[1:node + 1]:
        vals.append(nd.layer.forward_many([vals[j] for j in nd.inputs], [model.specs[j] for j in nd.inputs]))
    return vals[node]


@pytest.mark.parametrize("padding,expected", [
    ("same", (1, 1)), ((2, 0), (2, 0)), ((0, 3), (0, 3)), ("valid", (0, 0)), (1, (1, 1)), ((3, 1), (3, 1)),
])
@pytest.mark.parametrize("depth", [1, 2])
def test_strip_widths_match_brute_force(padding, expected, depth):
    """Position j of the window starting at frame 0 and position j-1 of the window starting
    one step later are the same column exactly when both are interior; strip positions are
    recomputed because they differ. The spec's strips must be exactly the positions that
    differ (brute force over the reference)."""
    x = dse.Input(2)
    h = x
    for _ in range(depth):
        h = dse.Conv1d(h._source.frame_shape[0] if h._source.layer is None else 3, 3, 3, padding=padding)(h)
    model = randomize_graph(dse.Model(x, dse.GlobalAvgPool()(h), window=12), np.random.default_rng(2))
    node = depth
    spec = model.specs[node]
    if depth == 1:
        assert (spec.left, spec.right) == expected
    rng = np.random.default_rng(3)
    frames = rng.standard_normal((model.window + 1, 2))
    a = _node_values(model, node, frames[:-1])
    b = _node_values(model, node, frames[1:])
    shared = {j for j in range(1, spec.length) if np.allclose(a[:, j], b[:, j - 1], rtol=0, atol=1e-12)}
    want = {j for j in range(1, spec.length) if j - 1 in spec.interior and j in spec.interior}
    assert shared == want, (spec, sorted(shared), sorted(want))
