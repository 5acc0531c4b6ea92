"""Strip convs run all their rows in one kernel call (plan.row_tables, dse_gemv_rows in
_gemv.h): each (tap, row) input is a node base resolved per run plus an offset fixed at plan
time, padding reads the zero column. Checked here on models whose strips are long (chained
'same' convs widen them layer by layer), with strides, dilations, groups, 2-D feature
padding, several output blocks, Pad zeros and unfused epilogues: against the float64
reference, and bit for bit against the row-at-a-time path (the plan without row tables,
which DSE_STRIP_ROWS=0 also gives), in push and push_many, in both modes. int8 strip convs
alike (padding a column of the input's zero point), bit for bit against the integer
reference; test_quant_stream runs every int8 kernel path over row tables too."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import deepshift_edge as dse
from deepshift_edge.engine.plan import CONV, QCONV, build_plan, row_tables
from deepshift_edge.engine.stream import Stream
from deepshift_edge.quant.plan import build_quantized_plan
from graph_strategies import randomize_graph
from test_quant_stream import check_bit_exact, quantized
from test_stream_vs_reference import MODES, check_push_many, check_stream


def _long_strips_1d():
    x = dse.Input(3)
    a = dse.ReLU()(dse.Conv1d(3, 20, 7, padding="same")(x))
    b = dse.Tanh()(dse.BatchNorm1d(20)(dse.Conv1d(20, 20, 5, padding="same", dilation=3, groups=4)(a)))
    c = dse.Conv1d(20, 40, 4, stride=2, padding=(2, 3))(dse.Add()(a, b))       # 3 output blocks
    p = dse.Pad(2, 1)(c)
    q = dse.Conv1d(40, 40, 5, padding="same", dilation=2, groups=40)(p)          # depthwise, Pad zeros
    d = dse.ReLU()(dse.Conv1d(40, 17, 9, padding=4, dilation=1)(dse.Add()(p, q)))  # Pad zeros in the taps
    e = dse.Conv1d(17, 5, 3, padding="same", dilation=2)(d)
    f = dse.Conv1d(5, 33, 1)(e)                                                  # strips of a 1x1
    return dse.Model(x, dse.Conv1d(33, 4, 5, padding=2)(f), window=40)          # no head: per position


def _long_strips_pooled():
    x = dse.Input(2)
    y = dse.Conv1d(2, 6, 15, padding="same")(x)
    for _ in range(3):
        y = dse.ReLU()(dse.Conv1d(6, 6, 15, padding="same")(y))
    y = dse.Conv1d(6, 9, 5, stride=3, padding=2)(y)
    return dse.Model(x, dse.GlobalAvgPool()(y), window=48)


def _strips_2d():
    x = dse.Input((2, 9))
    y = dse.ReLU()(dse.Conv2d(2, 8, (3, 5), padding=((1, 1), "same"))(x))
    y = dse.Conv2d(8, 8, (3, 3), stride=(2, 1), dilation=(2, 2), padding=(2, "same"), groups=2)(y)
    y = dse.ReLU6()(dse.Conv2d(8, 8, (3, 5), stride=(2, 1), padding=(1, "same"), groups=8)(y))  # depthwise
    y = dse.Conv2d(8, 18, (2, 3), padding=((0, 1), (1, 1)))(dse.Sigmoid()(y))
    return dse.Model(x, dse.GlobalMaxPool()(y), window=24)


MODELS = {"long_strips_1d": _long_strips_1d, "long_strips_pooled": _long_strips_pooled,
          "strips_2d": _strips_2d}


def _model(name):
    return randomize_graph(MODELS[name](), np.random.default_rng(7))


def _frames(model, n, seed=3):
    return np.random.default_rng(seed).standard_normal((model.window + n,) + tuple(model.frame_shape)) \
        .astype(np.float32)


def _row_by_row(model, mode, block):
    plan = build_plan(model, mode, block)
    for op in plan.ops:
        op.rtab = op.rnodes = None
    return Stream(model, mode=mode, block=block, plan=plan)


@pytest.mark.parametrize("name", list(MODELS))
def test_the_models_have_long_row_batched_strips(name):
    """Not vacuous: the strip convs are long and go through the row tables, some rows mix
    the input's strip rows with its interior columns, some read padding."""
    plan = build_plan(_model(name))
    rows = [op for op in plan.ops if op.rnodes is not None]
    assert rows and all(op.kind == CONV and op.part == "strip" for op in rows)
    assert max(op.nrows for op in rows) >= 9
    assert any(len(op.rnodes) >= 2 for op in rows)       # strip rows and interior columns
    assert any((op.rtab[..., 0] == 0).any() for op in rows)  # padding (the zero column)
    strips = [op for op in plan.ops if op.part == "strip" and op.kind == CONV and op.nrows > 1]
    assert len(rows) == len(strips)
    if name != "long_strips_pooled":
        assert any(op.cin == op.groups == op.cout for op in rows)  # depthwise too


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("mode", MODES)
def test_row_batched_strips_stream_equal_reference(name, mode):
    model = _model(name)
    x = _frames(model, 3 * model.hop + 9)
    ref = model.forward(x)
    check_stream(model, x, mode, ref, block=1)
    check_push_many(model, x, mode, ref, block=5)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("mode", MODES)
def test_row_batched_strips_equal_the_row_loop_bit_for_bit(name, mode):
    """Per output the same nonzero terms in the same order as one row at a time."""
    model = _model(name)
    x = _frames(model, 2 * model.hop + 20)
    a, b = model.stream(mode=mode, block=1), _row_by_row(model, mode, 1)
    assert any(op.rnodes is not None for op in a.plan.ops)
    assert not any(op.rnodes is not None for op in b.plan.ops)
    for frame in x:
        ya, yb = a.push(frame), b.push(frame)
        assert (ya is None) == (yb is None)
        if ya is not None:
            np.testing.assert_array_equal(ya, yb)
    many = model.stream(mode=mode, block=7).push_many(x)
    np.testing.assert_array_equal(many, _row_by_row(model, mode, 7).push_many(x))


def test_a_wrong_row_table_is_caught():
    """The comparison can fail: one row's tap pointed one column late changes the output."""
    model = _model("long_strips_pooled")
    x = _frames(model, 12)
    plan = build_plan(model)
    op = max((o for o in plan.ops if o.rnodes is not None), key=lambda o: o.nrows)
    good = Stream(model, plan=build_plan(model)).push_many(x)
    r = op.nrows // 2
    t = int(np.argmax(op.rtab[:, r, 0] > 0))
    op.rtab[t, r, 1] += 4 * op.cin
    bad = Stream(model, plan=plan).push_many(x)
    assert np.abs(bad - good).max() > 1e-3 * np.abs(good).max()


def test_malformed_row_tables_are_refused():
    model = _model("long_strips_pooled")
    plan = build_plan(model)
    op = next(o for o in plan.ops if o.rnodes is not None)
    op.rtab = op.rtab[:, 1:]
    with pytest.raises(ValueError, match="row table"):
        Stream(model, plan=plan)


def test_row_tables_skip_what_they_do_not_cover():
    """Interior convs, depthwise convs, pools and one-row strips keep their own paths."""
    model = _model("long_strips_1d")
    plan = build_plan(model)
    for op in plan.ops:
        if op.rnodes is not None:
            assert op.kind == CONV and op.part == "strip" and op.nrows >= 2
            assert op.rtab.shape == (op.ntaps, op.nrows, 2)
            assert op.rtab[..., 0].max() <= len(op.rnodes)
    row_tables(plan)  # idempotent
    assert sum(op.rnodes is not None for op in plan.ops) == \
        sum(op.rnodes is not None for op in build_plan(model).ops)


def test_environment_switch_leaves_strips_to_the_row_loop():
    code = ("import numpy as np, deepshift_edge as dse; from deepshift_edge.engine.plan import build_plan; "
            "m = dse.Sequential([dse.Conv1d(2, 4, 5, padding='same'), dse.Conv1d(4, 4, 5, padding='same')], "
            "in_features=2, window=12); print(sum(o.rnodes is not None for o in build_plan(m).ops))")
    counts = {}
    for value in ("0", "1"):
        env = dict(os.environ, DSE_STRIP_ROWS=value)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        counts[value] = int(out.stdout.strip())
    assert counts["0"] == 0 and counts["1"] >= 1


@pytest.mark.parametrize("name", list(MODELS))
def test_int8_row_batched_strips_equal_the_integer_reference(name):
    qm = quantized(_model(name), 11)
    ops = qm.stream().plan.ops
    rows = [op for op in ops if op.rnodes is not None]
    assert rows and all(op.kind == QCONV and op.part == "strip" for op in rows)
    assert len(rows) == sum(op.kind == QCONV and op.part == "strip" and op.nrows > 1 for op in ops)
    x = _frames(qm.model, 2 * qm.model.hop + 15, seed=4)
    check_bit_exact(qm, x)
    for mode in MODES:
        plan = build_quantized_plan(qm, mode, 5)
        for op in plan.ops:
            op.rtab = op.rnodes = None
        loop = Stream(qm.model, mode=mode, block=5, plan=plan).push_many(x)
        np.testing.assert_array_equal(qm.stream(mode=mode, block=5).push_many(x), loop)
