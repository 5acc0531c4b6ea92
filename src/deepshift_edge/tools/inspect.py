"""``deepshift-edge inspect``: what a model is and what streaming it costs.

Per node: its operator, inputs, output shape, time step, receptive field, the widths of the
two edge strips that zero padding reaches (recomputed for every window), parameters, and
multiply-adds: per frame as streamed, per frame recomputing the whole window, and per frame
for the same network without the strips (what retraining with valid/causal padding would
cost). The counts come from the compiled plan, so they are what the kernels run.
"""
from __future__ import annotations

import json
from typing import Dict, List

from ..nn import layers as L
from ..nn import merge as M


def short(layer) -> str:
    """'Conv1d 3->8 k=3 d=2 pad=same' style description (hyper-parameters that differ from
    the layer's defaults)."""
    kind = type(layer).__name__
    cfg = layer.config()
    try:
        defaults = type(layer)(**_required(layer, cfg)).config()
    except Exception:  # a layer whose constructor needs more than its config: show everything
        defaults = {}
    parts = []
    if "in_channels" in cfg:
        parts.append(f"{cfg['in_channels']}->{cfg['out_channels']}")
    elif "in_features" in cfg:
        parts.append(f"{cfg['in_features']}->{cfg['out_features']}")
    elif "num_features" in cfg:
        parts.append(str(cfg["num_features"]))
    abbrev = {"kernel_size": "k", "stride": "s", "dilation": "d", "groups": "g", "padding": "pad"}
    for key, value in cfg.items():
        if key in ("in_channels", "out_channels", "in_features", "out_features", "num_features"):
            continue
        if key in defaults and defaults[key] == value and key != "kernel_size":
            continue
        if key == "bias":
            parts.append("no bias" if not value else "bias")
            continue
        v = "x".join(map(str, value)) if isinstance(value, (tuple, list)) else value
        parts.append(f"{abbrev.get(key, key)}={v}")
    return " ".join([kind] + parts)


_REQUIRED_KEYS = ("in_channels", "out_channels", "kernel_size", "in_features", "out_features",
                  "num_features", "start", "stop")


def _required(layer, cfg) -> dict:
    return {k: v for k, v in cfg.items() if k in _REQUIRED_KEYS}


def nparams(layer) -> int:
    if layer is None:
        return 0
    if isinstance(layer, M.Residual):
        return sum(nparams(s) for s in layer.body + layer.skip_layers)
    return int(sum(a.size for a in layer.params().values()))


def _fmt_shape(spec) -> str:
    return str(tuple(int(v) for v in spec.shape))


def node_costs(model, plan) -> Dict[int, dict]:
    """Per model node: multiply-adds per frame streamed, of the interior alone, and of a
    full recompute of the window every frame (emission), from the plan's ops."""
    hop = plan.hop
    costs: Dict[int, dict] = {}
    for op in plan.ops:
        c = costs.setdefault(op.model_node, {"streamed": 0.0, "interior": 0.0, "recompute": 0.0,
                                             "per_position": 0})
        per_frame = op.macs / op.period
        c["streamed"] += per_frame
        if op.part in ("interior", "vector", "window"):
            c["interior"] += per_frame
        if op.part == "interior" and op.nrows == 1:
            c["per_position"] = max(c["per_position"], op.macs)
        elif op.part == "strip":
            c["per_position"] = max(c["per_position"], op.macs // max(op.nrows, 1))
        elif op.part in ("vector", "window"):
            c["recompute"] += op.macs / hop
    for i, c in costs.items():
        spec = model.specs[i]
        node = model.nodes[i]
        if not spec.is_vector and c["per_position"]:
            c["recompute"] += c["per_position"] * spec.length / hop
        elif isinstance(node.layer, (L.GlobalAvgPool, L.GlobalMaxPool)) and node.inputs:
            src = model.specs[node.inputs[0]]
            if not src.is_vector:  # a pool over the window: every position, once per output
                c["recompute"] = src.channels * (src.features or 1) * src.length / hop
    return costs


def model_report(model) -> str:
    """The text printed by ``deepshift-edge inspect``."""
    from ..engine.plan import build_plan

    dense = build_plan(model, "dense", block=1)
    costs = node_costs(model, dense)
    lines = []
    frame = "x".join(map(str, model.frame_shape))
    lines.append(f"input frames ({frame}) -> output {tuple(model.output_shape)}; window {model.window} "
                 f"frames; semantics {model.semantics!r}; shapes: (channels[, features], time "
                 f"positions) before the head")
    head = (f"{'node':>22}  {'operator':34s} {'inputs':>14} {'output shape':>14} {'step':>4} {'rf':>5} "
            f"{'strips':>7} {'params':>9} {'MACs/frame':>11} {'recompute':>11} {'no strips':>10}")
    lines.append(head)
    lines.append("-" * len(head))
    total = {"streamed": 0.0, "interior": 0.0, "recompute": 0.0}
    names = [n.name for n in model.nodes]
    for i, node in enumerate(model.nodes[1:], start=1):
        spec = model.specs[i]
        c = costs.get(i, {"streamed": 0.0, "interior": 0.0, "recompute": 0.0})
        for k in total:
            total[k] += c[k]
        step = "-" if spec.is_vector else str(spec.step)
        rf = "-" if spec.is_vector else str(spec.rf)
        strips = "-" if spec.is_vector else ("all" if spec.left == spec.length else f"{spec.left}|{spec.right}")
        ins = ",".join(names[j] for j in node.inputs)
        lines.append(f"{node.name[-22:]:>22}  {short(node.layer)[:34]:34s} {ins[-14:]:>14} "
                     f"{_fmt_shape(spec):>14} {step:>4} {rf:>5} {strips:>7} {nparams(node.layer):>9,} "
                     f"{c['streamed']:>11,.0f} {c['recompute']:>11,.0f} {c['interior']:>10,.0f}")
    lines.append("-" * len(head))
    labels = getattr(model, "labels", None)
    if labels:
        lines.append(f"labels ({len(labels)}): {', '.join(labels)}")
    for key, value in (getattr(model, "metadata", None) or {}).items():
        lines.append(f"metadata {key}: {value if isinstance(value, str) else json.dumps(value)}")
    n_par = sum(nparams(n.layer) for n in model.nodes[1:])
    lines.append(f"parameters: {n_par:,} ({4 * n_par:,} bytes float32)")
    lines.append(f"receptive field: {model.receptive_field} frames; window: {model.window}; "
                 f"hop: {model.hop}; delay: {model.delay} frames; equivalence: {model.equivalence}")
    lines.append("strips a|b: positions at the window's left|right edge that zero padding reaches, "
                 "recomputed for every window ('all': the whole layer is)")
    rec, stream, inner = total["recompute"], total["streamed"], total["interior"]
    lines.append(f"full-window recompute: {rec:,.0f} multiply-adds per output (MACs per position "
                 f"x positions in the window, summed over nodes)")
    lines.append(f"mode='dense' (an output every frame): {stream:,.0f} MACs/frame streamed vs "
                 f"{rec:,.0f} recomputing the window every frame: {_saving(rec, stream)}")
    if stream > inner:
        lines.append(f"without the strips (the same layers with valid/causal padding, whose zeros "
                     f"the output never reads): {inner:,.0f} MACs/frame, {_saving(stream, inner)} "
                     f"than with them")
    for mode in ("dense", "decimated") if model.hop > 1 else ("dense",):
        stream_obj = model.stream(mode=mode)
        plan = stream_obj.plan
        every = "every frame" if mode == "dense" else f"every {model.hop} frames"
        lines.append(f"  mode='{mode}': {plan.macs_per_frame():,.0f} MACs/frame (an output {every}); "
                     f"buffers {stream_obj.buffer_bytes:,} bytes (push_many block "
                     f"{plan.block})")
    lines.append("state per sensor (one stream's snapshot bytes, docs/fleet.md): " + ", ".join(
        f"{_snapshot_bytes(model, b):,} at block {b}{why}" for b, why in
        ((1, " (StreamPool's default)"), (8, " (deepshift_edge.flink's)"), (64, ""))))
    return "\n".join(lines)


def _snapshot_bytes(model, block: int) -> int:
    from ..engine import state
    return len(state.to_bytes(model.stream(block=block).state()))


def _saving(recompute, streamed) -> str:
    if streamed <= 0:
        return "no multiply-adds"
    return f"{recompute / streamed:,.1f}x fewer"


def layer_rows(model) -> List[tuple]:
    """(node name, operator, output spec) per node, for callers that print their own tables."""
    return [(n.name, short(n.layer), model.specs[i]) for i, n in enumerate(model.nodes) if i]


__all__ = ["model_report", "node_costs", "short", "nparams", "layer_rows", "L"]
