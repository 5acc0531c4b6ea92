"""``deepshift-edge quantize MODEL CALIBRATION OUT [--held-out FRAMES]``: an int8 model file.

Calibrates every int8 tensor's range on CALIBRATION (frames (N, *frame) in a .npy, or a .npz
of recordings), writes OUT, and prints how the int8 model agrees with the float one on the
calibration frames and on held-out frames if given: top-1 agreement (for vector outputs), and
the largest and mean absolute output difference.
"""
from __future__ import annotations

import numpy as np

from ..errors import ModelError


def add_arguments(p):
    p.add_argument("model", help="a float .npz model file (or a built-in model name)")
    p.add_argument("calibration", help="frames to calibrate on: a .npy (N, C[, F]) or a .npz of such "
                                       "recordings (one per array)")
    p.add_argument("target", help="the int8 .npz model file to write")
    p.add_argument("--held-out", default=None, metavar="FRAMES",
                   help="frames not used for calibration (.npy or .npz as above) to report agreement on")
    p.add_argument("--method", default="minmax", choices=["minmax", "percentile"],
                   help="range of each tensor: min/max over the calibration (default), or a percentile")
    p.add_argument("--percentile", type=float, default=99.99,
                   help="with --method percentile: the percentile kept on each side (default 99.99)")


def _recordings(path: str, frame_shape: tuple) -> list:
    """A .npy of frames, or a .npz whose arrays are recordings; each (N, *frame_shape)."""
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as f:
            recs = [np.asarray(f[k], dtype=np.float32) for k in f.files]
    else:
        recs = [np.asarray(np.load(path, allow_pickle=False), dtype=np.float32)]
    out = []
    for r in recs:
        if r.ndim == len(frame_shape) + 2 and r.shape[2:] == frame_shape:  # (recordings, N, *frame)
            out += list(r)
        elif r.ndim == len(frame_shape) + 1 and r.shape[1:] == frame_shape:
            out.append(r)
        else:
            raise ModelError(f"{path}: expected frames of shape (N, {', '.join(map(str, frame_shape))}), "
                             f"got an array of shape {r.shape}")
    return out


def agreement(model, qmodel, recordings) -> dict:
    """Float vs int8 on every window of every recording (the int8 stream, not the reference)."""
    f_all, q_all = [], []
    for rec in recordings:
        if len(rec) < model.window:
            continue
        f_all.append(model.stream().push_many(rec))
        q_all.append(qmodel.stream().push_many(rec))
    if not f_all:
        raise ModelError(f"no recording holds a window of {model.window} frames")
    f, q = np.concatenate(f_all), np.concatenate(q_all)
    diff = np.abs(f.astype(np.float64) - q)
    out = {"windows": int(len(f)), "max_abs_error": float(diff.max()), "mean_abs_error": float(diff.mean())}
    if f.ndim == 2 and f.shape[1] > 1:
        out["top1_agreement"] = float((f.argmax(1) == q.argmax(1)).mean())
    return out


def _line(name: str, a: dict) -> str:
    top1 = f"top-1 agreement {100 * a['top1_agreement']:.2f}%, " if "top1_agreement" in a else ""
    return (f"{name}: {a['windows']} windows, {top1}max |float - int8| {a['max_abs_error']:.4g}, "
            f"mean {a['mean_abs_error']:.4g}")


def run(args) -> int:
    from ..formats.npz import load, save
    from ..quant import quantize

    model = load(args.model)
    shape = tuple(model.frame_shape)
    calib = _recordings(args.calibration, shape)
    qmodel = quantize(model, calib, method=args.method, percentile=args.percentile)
    save(qmodel, args.target)
    print(f"wrote {args.target}: int8, {sum(1 for q in qmodel.qnodes if q.kind == 'conv')} int8 convs, "
          f"calibrated on {qmodel.calibration['windows']} windows ({args.method})")
    print(_line("calibration", agreement(model, qmodel, calib)))
    if args.held_out:
        print(_line("held out", agreement(model, qmodel, _recordings(args.held_out, shape))))
    return 0
