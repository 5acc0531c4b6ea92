"""Per-frame latency of a model: streamed vs every alternative, side by side in one run.

Used by ``deepshift-edge bench MODEL.npz`` and by ``bench/run.py``. Every column is
measured on the same model and the same frames, in one process, one thread each, and
first checks that its outputs agree with the streamed ones. Optional runtimes (PyTorch,
onnxruntime, LiteRT) are imported only when asked for, and skipped with a reason when absent.
"""
from __future__ import annotations

import os
import platform
import time
from typing import Callable, Dict, List, Optional

import numpy as np

from .timing import summarize

__all__ = ["machine_info", "bench_model", "format_table", "per_op_profile"]

AGREE_RTOL = 1e-4
AGREE_ATOL = 1e-5
AGREE_SPREAD = 1e-3       # of the outputs' variation over the checked windows
AGREE_SPREAD_FLOOR = 1e-6  # of the largest output: float32 rounding is allowed


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _isa() -> str:
    """The CPU and the conv kernels the extension picked for it."""
    from ..engine import _kernels

    flags = set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith(("flags", "features")):
                    flags |= set(line.split(":", 1)[1].split())
    except OSError:
        pass
    machine = platform.machine()
    extra = f"; avx512f={'avx512f' in flags}" if machine == "x86_64" else ""
    if machine.startswith("arm") and machine not in ("arm64",):
        extra = f"; neon={'neon' in flags}"
    return f"{machine} (kernels: {_kernels.kernel_isa()}{extra})"


def machine_info() -> dict:
    from .._version import __version__
    return {"deepshift_edge": __version__, "python": platform.python_version(),
            "numpy": np.__version__, "machine": platform.machine(), "cpu": _cpu_name(),
            "isa": _isa(), "cores": os.cpu_count(), "system": platform.platform(),
            "debug_build": _debug()}


def _debug() -> bool:
    from .. import debug_build
    return debug_build()


# ----------------------------------------------------------------------------- timing loops
def _time_frames(fn: Callable, items, rate: Optional[float]) -> np.ndarray:
    """Per-call µs. With ``rate``, wait for the next tick of a ``rate`` Hz clock before each
    call, as a sensor loop does (the wait is not timed)."""
    clock = time.perf_counter_ns
    out = np.empty(len(items))
    period = None if not rate else 1e9 / rate
    next_tick = clock()
    for k, item in enumerate(items):
        if period is not None:
            next_tick += period
            delay = next_tick - clock()
            if delay > 0:
                time.sleep(delay / 1e9)
        t0 = clock()
        fn(item)
        out[k] = clock() - t0
    return out / 1000.0


def _agree(name: str, got: np.ndarray, want: np.ndarray) -> float:
    """Max |error| of a column against the streamed outputs, or AssertionError.

    Two tests: elementwise closeness, and closeness relative to how much the outputs vary
    over the checked windows. The second catches a wrong model whose outputs all sit near
    one value (a Softmax over near-equal logits moves by 1e-6 when a conv weight is 5% off).
    """
    got = np.asarray(got, dtype=np.float64).reshape(want.shape)
    err = float(np.max(np.abs(got - want))) if want.size else 0.0
    if not np.allclose(got, want, rtol=AGREE_RTOL, atol=AGREE_ATOL):
        raise AssertionError(f"column {name!r} disagrees with the streamed outputs: max |error| {err:.3g}")
    if want.size and len(want) > 1:
        spread = float(np.max(np.ptp(want.reshape(len(want), -1), axis=0)))  # over windows
        floor = AGREE_SPREAD_FLOOR * float(np.max(np.abs(want)))
        if err > max(AGREE_SPREAD * spread, floor):
            raise AssertionError(f"column {name!r} disagrees with the streamed outputs: max |error| "
                                 f"{err:.3g} is {err / max(spread, 1e-300):.2g} of how much the outputs "
                                 f"vary over the windows ({spread:.3g})")
    return err


# ----------------------------------------------------------------------------- columns
def _torch_module(model):
    import torch  # noqa: F401  optional
    from ..convert.torch_export import to_torch
    return to_torch(model, dtype="float32")


def _column_torch(model, x, check_idx, streamed):
    import torch
    torch.set_num_threads(1)
    module = _torch_module(model).eval()
    w = model.window

    def window_tensor(i):
        win = np.moveaxis(x[i - w + 1:i + 1], 0, -1)[None]  # (1, C[, F], W)
        return torch.from_numpy(np.ascontiguousarray(win))

    def run(i):
        with torch.inference_mode():
            return module(window_tensor(i))

    got = np.stack([run(i).numpy().reshape(model.output_shape) for i in check_idx])
    return run, _agree("pytorch", got, streamed)


def _column_onnxruntime(model, x, check_idx, streamed):
    import tempfile

    import onnxruntime as ort
    import torch
    module = _torch_module(model).eval()
    w = model.window
    dummy = torch.zeros((1,) + tuple(model.frame_shape) + (w,))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        from ..convert.torch_import import export_onnx
        export_onnx(module, dummy, path, opset=17, input_names=["x"], output_names=["y"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    def run(i):
        win = np.ascontiguousarray(np.moveaxis(x[i - w + 1:i + 1], 0, -1)[None])
        return sess.run(None, {"x": win})[0]

    got = np.stack([run(i).reshape(model.output_shape) for i in check_idx])
    return run, _agree("onnxruntime", got, streamed)


def _column_litert(model, x, check_idx, streamed):
    from ai_edge_litert.interpreter import Interpreter  # optional
    from ..convert.tflite_export import to_tflite
    interp = Interpreter(model_content=to_tflite(model), num_threads=1)
    interp.allocate_tensors()  # once: every window reuses the same tensors
    (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
    i_in, i_out = inp["index"], out["index"]
    w = model.window

    def run(i):
        interp.set_tensor(i_in, x[i - w + 1:i + 1][None])  # (1, W, C[, F]): frames as they come
        interp.invoke()
        return interp.get_tensor(i_out)

    got = np.stack([run(i).reshape(model.output_shape) for i in check_idx])
    return run, _agree("litert", got, streamed)


def _column_recompute(model, x, check_idx, streamed):
    stream = model.stream(mode="decimated")
    w = model.window

    def run(i):
        stream.reset()
        return stream.push_many(x[i - w + 1:i + 1])

    got = np.stack([run(i)[-1] for i in check_idx])
    return run, _agree("recompute", got, streamed)


def _column_numpy(model, x, check_idx, streamed):
    w = model.window

    def run(i):
        return model.forward_window(x[i - w + 1:i + 1])

    got = np.stack([run(i) for i in check_idx])
    return run, _agree("numpy", got, streamed)


COLUMNS = {
    "recompute": ("full-window recompute, same kernels", _column_recompute),
    "numpy": ("full-window NumPy reference (float64)", _column_numpy),
    "pytorch": ("PyTorch, full window", _column_torch),
    "onnxruntime": ("onnxruntime, full window", _column_onnxruntime),
    "litert": ("LiteRT (TFLite), full window", _column_litert),
}


# ----------------------------------------------------------------------------- main entry
def bench_model(model, frames: int = 3000, recompute_frames: int = 300, rate: Optional[float] = None,
                columns: Optional[List[str]] = None, mode: str = "dense", seed: int = 0,
                per_layer: bool = False) -> Dict:
    """Measure ``model`` streamed and recomputed by each column; return a JSON-able dict.

    ``frames`` streamed frames are timed after a warm-up of one window; each recompute
    column is timed on the first ``recompute_frames`` windows of the same sequence.
    """
    columns = list(COLUMNS) if columns is None else list(columns)
    rng = np.random.default_rng(seed)
    w = model.window
    total = w + frames
    x = rng.standard_normal((total,) + tuple(model.frame_shape)).astype(np.float32)

    # Streamed outputs of every frame (for the agreement checks), then the timed run.
    stream = model.stream(mode=mode)
    outputs = {}
    for t, frame in enumerate(x):
        y = stream.push(frame)
        if y is not None:
            outputs[t] = y.astype(np.float64)
    stream.reset()
    for frame in x[:w]:
        stream.push(frame)
    timed = x[w:]
    us = _time_frames(stream.push, timed, rate)
    result = {"machine": machine_info(), "model": _model_info(model, stream),
              "mode": mode, "rate_hz": rate, "frames": int(len(timed)),
              "columns": {"streamed": {"label": f"streamed push ({mode})", **summarize(us)}}}

    emitted = sorted(t for t in outputs if t >= w)
    idx = emitted[:recompute_frames]
    check_idx = idx[:5] + idx[-3:]
    streamed_check = np.stack([outputs[i] for i in check_idx]) if check_idx else None
    for name in columns:
        label, factory = COLUMNS[name]
        try:
            run, err = factory(model, x, check_idx, streamed_check)
        except ImportError as exc:
            result["columns"][name] = {"label": label, "skipped": f"not installed ({exc.name or exc})"}
            continue
        except Exception as exc:  # a runtime that cannot run this model is reported, not fatal
            result["columns"][name] = {"label": label, "skipped": f"{type(exc).__name__}: {exc}"}
            continue
        n = len(idx) if name != "numpy" else min(len(idx), 50)
        col_us = _time_frames(run, idx[:n], rate)
        stats = summarize(col_us)
        stats["max_abs_error_vs_streamed"] = err
        stats["speedup_of_streaming_p50"] = stats["p50_us"] / result["columns"]["streamed"]["p50_us"]
        result["columns"][name] = {"label": label, **stats}
    if per_layer:
        result["per_op"] = per_op_profile(model, x, mode)
    return result


def _model_info(model, stream) -> dict:
    return {"frame_shape": list(model.frame_shape), "output_shape": list(model.output_shape),
            "window": model.window, "receptive_field": model.receptive_field, "hop": model.hop,
            "delay": model.delay, "layers": len(model.layers),
            "macs_per_frame_streamed": stream.plan.macs_per_frame(),
            "buffer_bytes": stream.buffer_bytes}


def per_op_profile(model, x: np.ndarray, mode: str = "dense") -> list:
    """Mean ns per frame spent in each op of the plan (compiled-in timers)."""
    stream = model.stream(mode=mode)
    stream.push_many(x[:model.window])
    ns = stream._profile_block(np.ascontiguousarray(x[model.window:], dtype=np.float32))
    n = len(x) - model.window
    return [{"op": op.label, "kind": op.kind, "macs": op.macs, "period": op.period,
             "ns_per_frame": float(t) / max(n, 1)} for op, t in zip(stream.plan.ops, ns)]


def format_table(result: Dict) -> str:
    m = result["machine"]
    info = result["model"]
    lines = [f"deepshift_edge {m['deepshift_edge']} | Python {m['python']} | NumPy {m['numpy']} | "
             f"{m['cpu']} | {m['isa']}" + (" | DEBUG BUILD" if m["debug_build"] else ""),
             f"frame {tuple(info['frame_shape'])} -> {tuple(info['output_shape'])}, window "
             f"{info['window']}, receptive field {info['receptive_field']}, hop {info['hop']}, "
             f"{info['macs_per_frame_streamed']:,.0f} MACs/frame streamed, mode {result['mode']}"
             + (f", cadence {result['rate_hz']} Hz" if result["rate_hz"] else ", back-to-back"),
             f"{'column':42s}{'p50 µs':>10s}{'p90 µs':>10s}{'p99 µs':>10s}{'max µs':>10s}"
             f"{'fps':>11s}{'x stream':>10s}"]
    for name, col in result["columns"].items():
        if "skipped" in col:
            lines.append(f"{col['label']:42s}  skipped: {col['skipped']}")
            continue
        ratio = col.get("speedup_of_streaming_p50", 1.0)
        lines.append(f"{col['label']:42s}{col['p50_us']:10.2f}{col['p90_us']:10.2f}{col['p99_us']:10.2f}"
                     f"{col['max_us']:10.1f}{col['fps']:11,.0f}{ratio:10.1f}")
    for op in result.get("per_op", []):
        lines.append(f"    {op['op']:52s}{op['ns_per_frame'] / 1000:8.3f} µs/frame  ({op['macs']:,} MACs, "
                     f"every {op['period']} frames)")
    return "\n".join(lines)
