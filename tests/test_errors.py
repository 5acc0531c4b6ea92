"""Bad input raises a clear error naming what was expected and what came, and leaves
the stream exactly as it was."""
import numpy as np
import pytest

import deepshift_edge as dse


def _model():
    return dse.Sequential([dse.Conv1d(3, 4, 3, seed=0), dse.ReLU(), dse.GlobalAvgPool()],
                          in_features=3, window=6)


def _stream_with_history(**kw):
    model = _model()
    stream = model.stream(**kw)
    rng = np.random.default_rng(0)
    shape = model.frame_shape if kw.get("batch") is None else (kw["batch"],) + model.frame_shape
    for _ in range(4):
        stream.push(rng.standard_normal(shape).astype(np.float32))
    return model, stream


def _continue(stream, shape, n=10):
    rng = np.random.default_rng(5)
    out = []
    for _ in range(n):
        y = stream.push(rng.standard_normal(shape).astype(np.float32))
        out.append(None if y is None else y.copy())
    return out


BAD_FRAMES = [
    (np.zeros(4, np.float32), "shape (3,)", "(4,)"),
    (np.zeros((3, 1), np.float32), "shape (3,)", "(3, 1)"),
    (np.zeros((), np.float32), "shape (3,)", "()"),
    ("abc", "numeric array", "str"),
    (None, "numeric array", "NoneType"),
    ([1.0, "x", 2.0], "numeric array", ""),
    (np.array([1, 2, 3], dtype=object), "numeric array", "object"),
    (np.array([1 + 1j, 2, 3]), "real array", "complex"),
    (np.array([1.0, np.nan, 2.0], np.float32), "non-finite", "(1,)"),
    (np.array([1.0, 2.0, np.inf]), "non-finite", "(2,)"),
    ([[1.0, 2.0], [3.0]], "numeric array", ""),
]


@pytest.mark.parametrize("bad,expected,got", BAD_FRAMES)
def test_bad_frame_is_refused_and_state_untouched(bad, expected, got):
    _, stream = _stream_with_history()
    _, twin = _stream_with_history()
    frames_before = stream.frames
    with pytest.raises(dse.StreamInputError) as info:
        stream.push(bad)
    message = str(info.value)
    assert expected in message and got in message, message
    assert stream.frames == frames_before
    a, b = _continue(stream, (3,)), _continue(twin, (3,))
    for x, y in zip(a, b):
        assert (x is None and y is None) or np.array_equal(x, y)


def test_errors_are_value_or_type_errors():
    _, stream = _stream_with_history()
    with pytest.raises(ValueError):
        stream.push(np.zeros(5, np.float32))
    with pytest.raises(TypeError):
        stream.push("abc")


def test_other_dtypes_and_layouts_are_converted():
    model = _model()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((12, 3))
    ref = model.stream()
    outs = [None if (y := ref.push(f.astype(np.float32))) is None else y.copy() for f in x]
    for convert in (lambda f: f, lambda f: list(f), lambda f: f.astype(np.float32).astype(np.float64),
                    lambda f: np.asfortranarray(np.stack([f, f]))[0],
                    lambda f: f.astype(">f4"), lambda f: np.ascontiguousarray(f[::-1])[::-1]):
        stream = model.stream()
        for f, want in zip(x, outs):
            frame = convert(f)
            got = stream.push(frame)
            if want is None:
                assert got is None
            else:
                np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_read_only_frame_is_accepted():
    model = _model()
    stream = model.stream()
    frame = np.ones(3, np.float32)
    frame.flags.writeable = False
    for _ in range(6):
        y = stream.push(frame)
    assert y is not None and np.isfinite(y).all()


@pytest.mark.parametrize("bad,expected", [
    (np.zeros((5, 4), np.float32), "(N, 3)"),
    (np.zeros(3, np.float32), "(N, 3)"),
    (np.array([[0, np.nan, 0]] * 3, np.float32), "frame 0"),
    ("nope", "numeric"),
])
def test_bad_block_is_refused_and_state_untouched(bad, expected):
    _, stream = _stream_with_history()
    _, twin = _stream_with_history()
    with pytest.raises(dse.StreamInputError, match=None) as info:
        stream.push_many(bad)
    assert expected in str(info.value), str(info.value)
    for x, y in zip(_continue(stream, (3,)), _continue(twin, (3,))):
        assert (x is None and y is None) or np.array_equal(x, y)


def test_batched_non_finite_block_is_refused_and_state_untouched():
    _, stream = _stream_with_history(batch=2)
    _, twin = _stream_with_history(batch=2)
    bad = np.zeros((4, 2, 3), np.float32)
    bad[2, 1, 0] = np.inf
    with pytest.raises(dse.StreamInputError, match=r"index \(2, 1, 0\) \(frame 2\)"):
        stream.push_many(bad)
    for x, y in zip(_continue(stream, (2, 3)), _continue(twin, (2, 3))):
        assert (x is None and y is None) or np.array_equal(x, y)


def test_batched_frame_shape_error_names_batch():
    _, stream = _stream_with_history(batch=2)
    with pytest.raises(dse.StreamInputError, match=r"\(2, 3\).*\(3,\)"):
        stream.push(np.zeros(3, np.float32))


def test_reset_index_out_of_range():
    _, stream = _stream_with_history(batch=2)
    with pytest.raises(IndexError, match="0..1"):
        stream.reset(2)


@pytest.mark.parametrize("build,match", [
    (lambda: dse.Sequential([dse.Conv1d(4, 4, 3)], in_features=3), "expects 4 input channels, got 3"),
    (lambda: dse.Sequential([dse.Conv1d(3, 4, 5)], in_features=3, window=4), "spans 5 positions"),
    (lambda: dse.Conv1d(3, 4, 3, groups=2), "groups=2 must divide"),
    (lambda: dse.Conv1d(3, 4, 3, padding="full"), "time padding must be 'valid', 'causal', 'same'"),
    (lambda: dse.Conv1d(3, 4, 3, padding=(1, 2, 3)), r"must be \(left, right\), got \(1, 2, 3\)"),
    (lambda: dse.Conv1d(3, 4, 3, stride=2, padding="same"), "padding='same' needs stride 1"),
    (lambda: dse.MaxPool1d(2, padding=2), "at most half the kernel"),
    (lambda: dse.Conv1d(3, 4, 0), "kernel_size must be an integer >= 1"),
    (lambda: dse.Sequential([dse.Conv2d(3, 4, 3)], in_features=3), "needs 2-D frames"),
    (lambda: dse.Sequential([dse.Conv1d(3, 4, 1)], in_features=(3, 4)), "needs 1-D frames"),
    (lambda: dse.Sequential([dse.GlobalAvgPool(), dse.LastFrame()], in_features=3), r"its input already has no time axis \(a second head\)"),
    (lambda: dse.Sequential([dse.LastFrame(), dse.Conv1d(3, 3, 1)], in_features=3), "after the head"),
    (lambda: dse.Sequential([dse.Residual([dse.Conv1d(3, 3, 3, stride=2)])], in_features=3, window=9),
     r"different strides \(2, 1 frames per position\)"),
    (lambda: dse.Sequential([dse.Residual([dse.Conv1d(3, 4, 3)])], in_features=3),
     r"Add needs inputs of one per-frame shape, got \(4,\), \(3,\)"),
    (lambda: dse.Sequential([dse.Flatten(), dse.Linear(5, 2)], in_features=3, window=2),
     "Linear expects 5 features, got 6"),
])
def test_model_errors_are_clear(build, match):
    with pytest.raises(dse.ModelError, match=match):
        build()


def test_weight_assignment_checks_shape():
    conv = dse.Conv1d(3, 4, 2)
    with pytest.raises(dse.ModelError, match=r"expected shape \(4, 3, 2\), got \(4, 3\)"):
        conv.weight = np.zeros((4, 3))
    conv.weight = np.ones((4, 3, 2), dtype=np.float64)
    assert conv.weight.dtype == np.float32


def test_graph_errors_name_the_node():
    x = dse.Input(3)
    with pytest.raises(dse.ModelError, match="joins two or more tensors, got 1"):
        dse.Add()(x)
    with pytest.raises(dse.ModelError, match="takes 1 input, got 2"):
        dse.ReLU()(x, x)
    with pytest.raises(dse.ModelError, match="expected graph tensors"):
        dse.ReLU()(np.zeros(3))
    a = dse.Conv1d(3, 4, 1)(x, name="a")
    with pytest.raises(dse.ModelError, match=r"node add_2 \(Add\): Add needs inputs of one per-frame shape"):
        dse.Model(x, dse.Add()(a, x, name="add_2"))
    with pytest.raises(dse.ModelError, match="two nodes are named 'a'"):
        dse.Model(x, dse.ReLU()(dse.Conv1d(4, 4, 1)(a, name="a")))
    with pytest.raises(dse.ModelError, match="exactly one input"):
        dse.Model(x, dse.Add()(a, dse.Conv1d(3, 4, 1)(dse.Input(3))))


def test_bad_mode_and_batch():
    model = _model()
    with pytest.raises(dse.ModelError, match="mode must be"):
        model.stream(mode="sparse")
    with pytest.raises(ValueError, match="batch must be"):
        model.stream(batch=0)


def test_a_float64_value_past_float32_range_is_named_not_reported_as_inf():
    """1e300 is finite: say it overflows float32 (no NumPy RuntimeWarning, no 'inf' the user never sent)."""
    import warnings

    stream = dse.Sequential([dse.Conv1d(3, 2, 2)], in_features=3).stream()
    stream.push(np.zeros(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")           # a leaked RuntimeWarning would fail here
        with pytest.raises(dse.StreamInputError) as err:
            stream.push(np.array([0.0, 1e300, 0.0]))
        assert "1e+300 at index (1,), which overflows float32" in str(err.value)
        assert "inf" not in str(err.value).replace("finite", "")
        with pytest.raises(dse.StreamInputError, match=r"-1e\+300 at index \(1, 2\), which overflows float32"):
            stream.push_many(np.array([[0.0, 0, 0], [0, 0, -1e300]]))
    assert stream.frames == 1                     # nothing was pushed
    assert stream.push(np.array([1e38, 0, 0])) is not None  # large but representable: accepted
