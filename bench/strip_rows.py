"""Strip convs by rows (plan.row_tables) against the row loop, side by side in one process:
per family of tests/families.py, the p50 µs per push of the float and int8 streams with the
row tables and with them removed from the same plan (what DSE_STRIP_ROWS=0 gives), and MACs
per ns. The two streams alternate in rounds; each figure is the best round's median, so a
burst of load on a shared machine does not land on one side only.

    python bench/strip_rows.py [--families ecg_resnet,tc_resnet] [--frames 2000] [--rounds 3]

Needs torch (the families are PyTorch modules).
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))  # tests/families.py: the modules

import torch  # noqa: E402

import deepshift_edge as dse  # noqa: E402
from deepshift_edge.engine.plan import build_plan  # noqa: E402
from deepshift_edge.engine.stream import Stream  # noqa: E402
from deepshift_edge.quant import quantize  # noqa: E402
from deepshift_edge.quant.plan import build_quantized_plan  # noqa: E402
from deepshift_edge.tools.bench import _time_frames, machine_info  # noqa: E402
from families import FAMILIES, build  # noqa: E402

DEFAULT = "ecg_resnet,tc_resnet,matchboxnet,ds_cnn,eegnet,inception_time"


def _row_loop(plan):
    for op in plan.ops:
        op.rtab = op.rnodes = None
    return plan


def convert(name):
    fam = FAMILIES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dse.from_torch(build(name), fam.in_features, fam.window, time_axis=fam.time_axis, dynamo=False)


def streams(model, x):
    qm = quantize(model, x[:model.window + 400])
    return {"float rows": Stream(model, plan=build_plan(model)),
                   "float row loop": Stream(model, plan=_row_loop(build_plan(model))),
                   "int8 rows": Stream(qm.model, plan=build_quantized_plan(qm)),
                   "int8 row loop": Stream(qm.model, plan=_row_loop(build_quantized_plan(qm)))}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", default=DEFAULT)
    p.add_argument("--frames", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    m = machine_info()
    print(f"Machine: {m.get('cpu', '?')}; kernel path {m.get('isa', '?')}. µs per push, p50 (best of "
          f"{a.rounds} rounds of {a.frames} frames).\n")
    print("| family | MACs/frame | float row loop | float rows | speed-up | MAC/ns loop, rows | "
          "int8 row loop | int8 rows | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in a.families.split(","):
        model = convert(name)
        x = np.random.default_rng(1).standard_normal((model.window + a.frames,) + tuple(model.frame_shape))
        x = x.astype(np.float32)
        ss = streams(model, x)
        for s in ss.values():
            for f in x[:model.window]:
                s.push(f)
        best = {k: np.inf for k in ss}
        for _ in range(a.rounds):
            for k, s in ss.items():
                best[k] = min(best[k], float(np.median(_time_frames(s.push, x[model.window:], None))))
        macs = ss["float rows"].plan.macs_per_frame()
        fl, fr, ql, qr = (best[k] for k in ("float row loop", "float rows", "int8 row loop", "int8 rows"))
        print(f"| {name} | {macs:,.0f} | {fl:.2f} | {fr:.2f} | {fl / fr:.2f}x | "
              f"{macs / fl / 1e3:.2f}, {macs / fr / 1e3:.2f} | {ql:.2f} | {qr:.2f} | {ql / qr:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
