"""Command line: ``deepshift-edge demo | inspect | convert | bench | run`` (also ``python -m deepshift_edge``).

The help text the command prints is :data:`DESCRIPTION`; each subcommand's is in its parser.
"""
from __future__ import annotations

import argparse
import platform
import sys
import warnings

import numpy as np


def _demo(args) -> int:
    from .._version import __version__
    from .timing import recompute_timer, summarize, time_calls

    from ..formats.npz import load

    model = load(args.model)
    rng = np.random.default_rng(0)
    # A synthetic "sensor": slow oscillations plus noise, one frame per step.
    t = np.arange(args.frames)[:, None]
    shape = model.frame_shape
    n_feat = int(np.prod(shape))
    phases = rng.uniform(0, 2 * np.pi, n_feat)
    signal = np.sin(0.05 * t * (1 + np.arange(n_feat)) / n_feat + phases) + 0.3 * rng.standard_normal((args.frames, n_feat))
    x = np.ascontiguousarray(signal.reshape((args.frames,) + shape), dtype=np.float32)

    print(f"deepshift_edge {__version__} demo on Python {platform.python_version()} ({platform.machine()})")
    print(f"model '{args.model}': frame {shape} -> output {model.output_shape}, window {model.window}, "
          f"receptive field {model.receptive_field}, hop {model.hop}")
    stream = model.stream()
    plan = stream.plan
    print(f"streamed multiply-adds per frame: {plan.macs_per_frame():,.0f}; stream buffers: "
          f"{stream.buffer_bytes:,} bytes")

    # 1. The stream equals the offline network on the window ending at every frame.
    n_check = min(args.frames, model.window + 50)
    ref = model.forward(x[:n_check])
    got = []
    for frame in x[:n_check]:
        y = stream.push(frame)
        if y is not None:
            got.append(y.copy())
    err = float(np.max(np.abs(np.array(got) - ref)))
    print(f"streamed vs offline reference on {len(got)} windows: max |error| = {err:.2e}")
    if not err <= 1e-4:
        print("ERROR: streamed outputs differ from the offline network", file=sys.stderr)
        return 1

    # 2. Per-frame latency, streamed vs recomputing the whole window, in one run.
    stream.reset()
    for frame in x[:model.window]:
        stream.push(frame)
    frames = x[model.window:]
    streamed = summarize(time_calls(stream.push, frames))
    idx = np.arange(model.window, min(args.frames, model.window + args.recompute_frames))
    recompute = summarize(time_calls(recompute_timer(model, x), idx))
    print(f"\nper-frame latency (µs), {len(frames)} streamed frames, {len(idx)} recomputed windows:")
    print(f"  {'':24s}{'p50':>10s}{'p90':>10s}{'p99':>10s}{'max':>10s}")
    for name, s in (("streamed (push)", streamed), ("full-window recompute", recompute)):
        print(f"  {name:24s}{s['p50_us']:10.2f}{s['p90_us']:10.2f}{s['p99_us']:10.2f}{s['max_us']:10.1f}")
    print(f"  speed-up of streaming (median): {recompute['p50_us'] / streamed['p50_us']:.1f}x")
    return 0


# ----------------------------------------------------------------------------- inspect
def _inspect(args) -> int:
    from ..formats.npz import load

    from .inspect import model_report

    model = load(args.model)
    print(f"{args.model}:")
    print(model_report(model))
    return 0


TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts")


def _from_torchscript(args, time_axis, labels, metadata):
    """A TorchScript file (``torch.jit.script(module).save(path)``) straight to a model."""
    from ..errors import ModelFormatError
    from ..convert.torch_import import from_torch

    if args.window is None or args.in_features is None:
        raise ModelFormatError(f"{args.source}: a TorchScript model needs --window and --in-features "
                               f"(e.g. --in-features 40, or 1,64 for 2-D frames)")
    try:
        import torch
    except ImportError:
        raise ModelFormatError("converting a TorchScript file needs PyTorch: pip install torch onnx") from None
    try:  # torch.jit.load reads TorchScript archives only (no arbitrary pickled classes)
        with warnings.catch_warnings():  # PyTorch deprecates TorchScript; the user chose this file
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated",
                                    category=DeprecationWarning)
            module = torch.jit.load(args.source, map_location="cpu")
    except Exception as exc:
        raise ModelFormatError(f"{args.source}: not a TorchScript archive ({type(exc).__name__}); save "
                               f"the model with torch.jit.script(model).save(path), or export it to "
                               f"ONNX") from None
    dims = tuple(int(v) for v in str(args.in_features).split(","))
    if time_axis is not None and not isinstance(time_axis, int):
        raise ModelFormatError("--time-axis must be an axis index for a TorchScript model")
    # A TorchScript archive is what the TorchScript exporter was made for (dynamo traces Python).
    return from_torch(module, in_features=dims if len(dims) > 1 else dims[0], window=args.window,
                      time_axis=-1 if time_axis is None else time_axis, return_report=True,
                      dynamo=False, labels=labels, metadata=metadata)


def parse_labels(text: str) -> list:
    """``--labels a,b,c``: class names separated by commas, spaces around them dropped."""
    return [part.strip() for part in text.split(",")]


def parse_metadata(items) -> dict:
    """``--metadata KEY=VALUE`` (repeatable). A VALUE that is a JSON number, true, false,
    null or a "quoted string" is taken as such; anything else is a plain string."""
    import json

    from ..errors import ModelError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ModelError(f"--metadata: expected KEY=VALUE, got {item!r}")
        try:
            parsed = json.loads(value, parse_constant=lambda c: c)
        except ValueError:
            parsed = value
        out[key.strip()] = parsed if parsed is None or isinstance(parsed, (bool, int, float, str)) else value
    return out


def _convert(args) -> int:
    from ..convert.onnx_import import from_onnx

    time_axis = args.time_axis
    if time_axis is not None and time_axis.lstrip("-").isdigit():
        time_axis = int(time_axis)
    labels = None if args.labels is None else parse_labels(args.labels)
    metadata = parse_metadata(args.metadata or [])
    # from_onnx/from_torch stream the converted model and compare it with its offline
    # reference (dense and decimated): a model that does not stream exactly raises here.
    if str(args.source).endswith(TORCHSCRIPT_SUFFIXES):
        model, report = _from_torchscript(args, time_axis, labels, metadata)
    elif str(args.source).lower().endswith(".tflite"):
        from ..convert.tflite_import import from_tflite
        from ..errors import ModelFormatError

        if time_axis is not None and not isinstance(time_axis, int):
            raise ModelFormatError("--time-axis must be an axis index for a .tflite model (1: (1, T, C), as "
                                   "Keras writes it)")
        model, report = from_tflite(args.source, window=args.window, time_axis=time_axis, return_report=True,
                                    labels=labels, metadata=metadata, arithmetic=args.arithmetic)
    else:
        model, report = from_onnx(args.source, window=args.window, time_axis=time_axis, return_report=True,
                                  labels=labels, metadata=metadata)
    data = _checked_file(model)
    from .._atomic import atomic_write

    atomic_write(args.target, lambda fh: fh.write(data))
    print(report)
    print(f"wrote {args.target}")
    return 0


def _checked_file(model) -> bytes:
    """The model file's bytes, once the file read back streams exactly what the converted
    model streams (so ``convert`` never writes a file that fails or differs on the device)."""
    import io

    from ..errors import ModelFormatError
    from ..formats.npz import load, save

    buf = io.BytesIO()
    save(model, buf)
    data = buf.getvalue()
    try:
        loaded = load(io.BytesIO(data))
    except ModelFormatError as exc:
        raise ModelFormatError(f"the model file would not load back: {exc}; nothing written") from None
    rng = np.random.default_rng(1)
    x = rng.standard_normal((model.window + 3 * max(model.hop, 1) + 8,) + tuple(model.frame_shape))
    x = x.astype(np.float32)
    sequence = getattr(model, "semantics", "window") == "sequence"
    for mode in ("dense",) if sequence else ("dense", "decimated"):
        a, b = model.stream(mode=mode), loaded.stream(mode=mode)
        want, got = a.push_many(x), b.push_many(x)
        if sequence:
            want, got = np.concatenate([want, a.flush()]), np.concatenate([got, b.flush()])
        if got.shape != want.shape or not np.array_equal(got, want):
            raise ModelFormatError(f"the model file, read back, streams differently from the converted "
                                   f"model ({mode} mode); nothing written: please report this")
    return data


def _bench(args) -> int:
    import json

    from ..formats.npz import load
    from .bench import COLUMNS, bench_model, format_table

    model = load(args.model)
    columns = list(COLUMNS) if args.columns is None else args.columns.split(",")
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        print(f"deepshift-edge bench: unknown column(s) {unknown}; choose from {list(COLUMNS)}",
              file=sys.stderr)
        return 2
    result = bench_model(model, frames=args.frames, recompute_frames=args.recompute_frames,
                         rate=args.rate, columns=columns, mode=args.mode, per_layer=args.per_layer)
    result["model"]["name"] = args.model
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    print(format_table(result))
    return 0


def _quantize(args) -> int:
    from . import quantize_cmd
    return quantize_cmd.run(args)


def _run(args) -> int:
    from .run import run

    try:
        return run(args)
    except ValueError as exc:  # an unreadable .npy input and the like (DeepShiftError is handled by main)
        from ..errors import DeepShiftError
        if isinstance(exc, DeepShiftError):
            raise
        print(f"deepshift-edge run: error: {exc}", file=sys.stderr)
        return 1


DESCRIPTION = """\
Stream convolutional networks over live sensor frames: each new frame costs one new column
per layer, and every output equals the network run offline on the window ending there.

Wherever a model file is expected, a built-in name works too: basicmotions (trained,
shipped with the package) or tiny, kws, activity, spectrogram (random weights).
'deepshift-edge COMMAND --help' describes each command.

examples:
  deepshift-edge run basicmotions --input basicmotions --rate 10
  deepshift-edge inspect basicmotions
  deepshift-edge convert model.onnx model.npz --window 64 --labels rest,walk,run
"""

MODEL_HELP = ("a .npz model file, or a built-in model name: basicmotions (trained, shipped), "
              "tiny, kws, activity, spectrogram (example architectures, random weights)")


def _bench_columns() -> list:
    from .bench import COLUMNS
    return list(COLUMNS)


def build_parser() -> argparse.ArgumentParser:
    """The ``deepshift-edge`` argument parser (all subcommands)."""
    from .._version import __version__

    parser = argparse.ArgumentParser(prog="deepshift-edge", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"deepshift-edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="stream a built-in example model, check it, time it",
                          description="Stream a model on a synthetic signal (slow sines plus noise), "
                                      "check up to its first 51 outputs against the offline "
                                      "NumPy reference, then time push against a full-window recompute.")
    demo.add_argument("--model", default="activity", help=f"the model to stream: {MODEL_HELP}")
    demo.add_argument("--frames", type=int, default=3000,
                      help="synthetic frames to stream and time (default 3000)")
    demo.add_argument("--recompute-frames", type=int, default=300,
                      help="windows to recompute for the latency comparison (default 300)")
    insp = sub.add_parser("inspect", help="layers, shapes, parameters, labels, metadata and streaming "
                                          "cost of a model")
    insp.add_argument("model", help=MODEL_HELP)
    conv = sub.add_parser("convert", help="convert an ONNX, TFLite or TorchScript model into a .npz model file",
                          description="Convert an ONNX graph (one window in, one output out), a "
                                      ".tflite file (float or full integer) or a "
                                      "TorchScript file to a .npz model file; the converted model "
                                      "is streamed on random input and compared with its offline "
                                      "reference before it is written (docs/converters.md).")
    conv.add_argument("source", help="the .onnx file (input: one window, e.g. (1, C, W) or (1, C, F, W)), "
                                     "a .tflite file (input (1, W, C) or (1, W, F, C), as Keras writes it), "
                                     "or a TorchScript .pt file (with --in-features, --window)")
    conv.add_argument("target", help="the .npz file to write")
    conv.add_argument("--window", type=int, default=None,
                      help="window W in frames (default: the time length of the ONNX or TFLite input)")
    conv.add_argument("--in-features", default=None, metavar="C[,F]",
                      help="TorchScript sources only: channels per frame (C, or C,F for 2-D frames)")
    conv.add_argument("--labels", default=None, metavar="A,B,...",
                      help="class names, one per output value, kept in the model file (shown by "
                           "inspect, printed by run)")
    conv.add_argument("--metadata", action="append", default=None, metavar="KEY=VALUE",
                      help="free-form metadata kept in the model file, e.g. name=gestures, "
                           "sample_rate_hz=50, units=g; repeat for more (a JSON number, true, "
                           "false or null is kept as such, anything else as a string)")
    conv.add_argument("--arithmetic", choices=("xnnpack", "reference"), default="xnnpack",
                      help="full-integer .tflite sources: compute LiteRT's default integers (xnnpack: "
                           "float requantization, as its XNNPACK delegate) or TFLite's reference kernels' "
                           "and TFLite Micro's (reference: gemmlowp's fixed point)")
    conv.add_argument("--time-axis", default=None, metavar="AXIS",
                      help="the input's time axis, an index or a symbolic dimension name (default: "
                           "the axis named like time, e.g. 'time' or 'frames', else the last)")
    bench = sub.add_parser("bench", help="per-frame latency: streamed vs full-window recompute and "
                                         "other runtimes, side by side")
    bench.add_argument("model", help=MODEL_HELP)
    bench.add_argument("--frames", type=int, default=3000, help="streamed frames to time")
    bench.add_argument("--recompute-frames", type=int, default=300, help="windows to time per recompute column")
    bench.add_argument("--rate", type=float, default=None,
                       help="sensor cadence in Hz (sleep between frames); default back-to-back")
    bench.add_argument("--mode", default="dense", choices=["dense", "decimated"],
                       help="dense: an output every frame (default); decimated: one every `hop` "
                            "frames, strided layers at their own rate")
    bench.add_argument("--columns", default=None,
                       help="comma-separated subset of: " + ",".join(_bench_columns()))
    bench.add_argument("--per-layer", action="store_true", help="add a per-op time breakdown")
    bench.add_argument("--json", default=None, help="also write the full result as JSON here")
    from . import quantize_cmd
    quantize_cmd.add_arguments(sub.add_parser(
        "quantize", help="an int8 model: calibrate on recorded frames, write it, report agreement",
        description=quantize_cmd.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    from . import run as _run_module
    _run_module.add_arguments(sub.add_parser(
        "run", help="stream frames from stdin, a CSV or a .npy file: one prediction per output line",
        description=_run_module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from ..errors import DeepShiftError

    commands = {"demo": _demo, "inspect": _inspect, "convert": _convert, "bench": _bench, "run": _run,
                "quantize": _quantize}
    try:
        status = commands[args.command](args)
        sys.stdout.flush()  # a reader that went away shows here, not at interpreter exit
        return status
    except BrokenPipeError:
        return _reader_gone()
    except (DeepShiftError, OSError, ImportError) as exc:
        print(f"deepshift-edge {args.command}: error: {exc}", file=sys.stderr)
        return 1


def _reader_gone() -> int:
    """stdout's reader went away (``| head -1``): stop quietly, as ``run`` does, exit 0.
    stdout is pointed at /dev/null so the interpreter's final flush cannot fail again."""
    import os
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, AttributeError, ValueError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
