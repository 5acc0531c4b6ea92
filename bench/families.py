"""The architectures people train (tests/families.py), converted from PyTorch and streamed:
per family, multiply-adds per frame streamed vs recomputing the window, µs per frame streamed
vs recomputed (same kernels), onnxruntime and LiteRT on the full window where installed, and
the largest error against PyTorch (float64) over every window of the run.

    python bench/families.py [--frames 2000] [--recompute-frames 200] [--columns recompute,onnxruntime,litert]

Writes bench/out/families.json and bench/out/families.md. The check that matters beside the
error: streamed time should follow the MAC count. ``time ratio / MAC ratio`` near 1 means the
saving is what the arithmetic promises; far below 1 means per-op overhead eats it (small
models: a push is tens of ops of a few hundred MACs each).

Needs torch (the families are PyTorch modules) and onnx; onnxruntime and ai-edge-litert for
their columns.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))  # tests/families.py: the modules

import torch  # noqa: E402

import deepshift_edge as dse  # noqa: E402
from deepshift_edge.tools.bench import _time_frames, bench_model, machine_info  # noqa: E402
from deepshift_edge.tools.inspect import node_costs  # noqa: E402
from deepshift_edge.engine.plan import build_plan  # noqa: E402
from families import FAMILIES, STREAMED, build  # noqa: E402


def convert(name):
    fam = FAMILIES[name]
    module = build(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = dse.from_torch(module, fam.in_features, fam.window, time_axis=fam.time_axis, dynamo=False)
    return model, module.double().eval()


def error_vs_torch(name, model, ref, n_frames=None, seed=1):
    """max |stream - PyTorch float64| / max |PyTorch| over every window of a random run."""
    fam = FAMILIES[name]
    w = model.window
    n = w + (n_frames or 4 * model.hop + 60)
    x = np.random.default_rng(seed).standard_normal((n,) + tuple(model.frame_shape)).astype(np.float32)
    stream = model.stream()
    got, ends = [], []
    for t, frame in enumerate(x):
        y = stream.push(frame)
        if y is not None:
            got.append(np.array(y))  # push returns its output buffer: copy
            ends.append(t)
    wins = np.stack([np.moveaxis(x[t - w + 1:t + 1].astype(np.float64), 0, -1) for t in ends])
    wins = np.ascontiguousarray(np.moveaxis(wins, -1, fam.time_axis % wins.ndim))
    with torch.no_grad():
        want = ref(torch.from_numpy(wins)).numpy()
    if fam.per_position:
        want = want[..., -1]
    got = np.stack(got).reshape(want.shape)
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def macs(model):
    costs = node_costs(model, build_plan(model, "dense", block=1))
    return (sum(c["streamed"] for c in costs.values()), sum(c["recompute"] for c in costs.values()))


def decimated_us(model, frames, seed=2):
    x = np.random.default_rng(seed).standard_normal((model.window + frames,) + tuple(model.frame_shape))
    x = x.astype(np.float32)
    stream = model.stream(mode="decimated")
    for frame in x[:model.window]:
        stream.push(frame)
    us = _time_frames(stream.push, x[model.window:], None)
    # one output's worth of pushes is hop frames: the median over such cycles, per frame (a
    # mean would be one stray millisecond away from meaningless)
    cycles = us[:len(us) // model.hop * model.hop].reshape(-1, model.hop).sum(axis=1)
    return float(np.median(cycles) / model.hop)


def row(name, frames, recompute_frames, columns):
    model, ref = convert(name)
    streamed_macs, recompute_macs = macs(model)
    res = bench_model(model, frames=frames, recompute_frames=recompute_frames, columns=columns)
    cols = res["columns"]
    out = {"family": name, "window": model.window, "hop": model.hop, "nodes": len(model.nodes) - 1,
           "macs_streamed": streamed_macs, "macs_recompute": recompute_macs,
           "error_vs_torch": error_vs_torch(name, model, ref), "columns": cols,
           "buffer_bytes": res["model"]["buffer_bytes"]}
    if model.hop > 1:  # an output every hop frames: the cost per frame is the mean over pushes
        out["macs_decimated"] = model.stream(mode="decimated").plan.macs_per_frame()
        out["decimated_us"] = decimated_us(model, frames)
    s = cols["streamed"]["p50_us"]
    if "p50_us" in cols.get("recompute", {}):
        out["time_ratio"] = cols["recompute"]["p50_us"] / s
        out["mac_ratio"] = recompute_macs / max(streamed_macs, 1.0)
    return out


def _us(col):
    if "p50_us" not in col:
        return "–"
    return f"{col['p50_us']:.1f} / {col['p99_us']:.1f}"


def _follows(r):
    """How far the measured saving is from the multiply-add saving (1.0: exactly as predicted)."""
    if "time_ratio" not in r:
        return "–"
    return f"{r['time_ratio'] / r['mac_ratio']:.2f}"


def _decimated(r):
    if "macs_decimated" not in r:
        return "–"
    return f"{r['macs_decimated']:,.0f}, {r['decimated_us']:.2f}"


def markdown(rows, machine, command):
    lines = [f"Machine: {machine.get('cpu', '?')}; kernel path {machine.get('isa', '?')}; "
             f"numpy {machine.get('numpy', '?')}. Command: `{command}`. µs per frame, p50 / p99.",
             "",
             "| family | window | MACs/frame streamed | MACs recompute | MAC ratio | µs streamed | "
             "µs recompute | time ratio | time / MAC ratio | onnxruntime | LiteRT | max rel. error vs PyTorch | hop | "
             "decimated: MACs/frame, µs/frame |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r["columns"]
        ratio = f"{r['time_ratio']:.1f}x" if "time_ratio" in r else "–"
        lines.append(f"| {r['family']} | {r['window']} | {r['macs_streamed']:,.0f} | {r['macs_recompute']:,.0f} | "
                     f"{r.get('mac_ratio', float('nan')):.1f}x | {_us(c['streamed'])} | {_us(c.get('recompute', {}))} | "
                     f"{ratio} | {_follows(r)} | {_us(c.get('onnxruntime', {}))} | {_us(c.get('litert', {}))} | "
                     f"{r['error_vs_torch']:.1e} | {r['hop']} | {_decimated(r)} |")
    lines.append("")
    lines.append("time / MAC ratio above 1: the recompute column pays more per multiply-add than the stream "
                 "(it is a fresh stream fed the W frames, every op run once per frame, not one batched "
                 "full-window pass); compare the streamed µs with onnxruntime and LiteRT for a full-window peer.")
    lines.append("")
    lines.append("MAC ratio = recompute / streamed multiply-adds per frame (dense mode: an output every frame); "
                 "time ratio = recompute / streamed p50. Models with strides (hop > 1) keep one phase per "
                 "frame offset in dense mode; decimated mode (an output every hop frames) computes one: its µs/frame is the median over "
                 "output cycles of the hop pushes' total, divided by hop.")
    skipped = {(n, c["skipped"]) for r in rows for n, c in r["columns"].items() if "skipped" in c}
    for n, why in sorted(skipped):
        lines.append(f"\n{n}: skipped for some families: {why}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--render", metavar="JSON", help="only rewrite the markdown table from a saved families.json")
    p.add_argument("--frames", type=int, default=2000)
    p.add_argument("--recompute-frames", type=int, default=200)
    p.add_argument("--columns", default="recompute,onnxruntime,litert")
    p.add_argument("--families", default=",".join(STREAMED))
    p.add_argument("--out", default=os.path.join(HERE, "out"))
    a = p.parse_args(argv)
    if a.render:
        with open(a.render) as f:
            saved = json.load(f)
        md = markdown(saved["rows"], saved["machine"], saved["command"])
        with open(os.path.join(a.out, "families.md"), "w") as f:
            f.write(md)
        print(md)
        return
    torch.set_num_threads(1)
    rows = []
    for name in a.families.split(","):
        r = row(name, a.frames, a.recompute_frames, a.columns.split(","))
        rows.append(r)
        c = r["columns"]
        print(f"{name:20s} MACs {r['macs_streamed']:>9,.0f} vs {r['macs_recompute']:>11,.0f}  "
              f"µs {c['streamed']['p50_us']:7.2f} vs {c.get('recompute', {}).get('p50_us', float('nan')):8.2f}  "
              f"err {r['error_vs_torch']:.1e}", flush=True)
    machine = machine_info()
    command = "python bench/families.py " + " ".join(argv if argv is not None else sys.argv[1:])
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "families.json"), "w") as f:
        json.dump({"machine": machine, "command": command.strip(), "rows": rows}, f, indent=1)
    md = markdown(rows, machine, command.strip())
    with open(os.path.join(a.out, "families.md"), "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
