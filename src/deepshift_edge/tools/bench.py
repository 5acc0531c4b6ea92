"""Per-frame latency of a model: streamed vs every alternative, side by side in one run.

Used by ``deepshift-edge bench MODEL.npz`` and by ``bench/run.py``. Every column is
measured on the same model and the same frames, in one process, one thread each, and
first checks that its outputs agree with the streamed ones. Optional runtimes (PyTorch,
onnxruntime, LiteRT, ExecuTorch, tract) are imported only when asked for, and skipped with
a reason when absent, or when the runtime cannot express the model (the reason says why).

Two kinds of column: full-window ones recompute the window ending at each timed frame;
streaming ones (tract in pulse mode, ExecuTorch with its state in module buffers) keep
state and take one frame per call, like ``push``: they are fed every frame from the first,
checked at the same frames as the others, then timed on the frames that follow (and the
last timed output is checked too).

"x stream" is a column's p50 over the stream's p50 timed in alternation with it (five slices
of the column's calls, each followed by as many pushes; shown as "stream µs"), so each ratio
compares two measurements of the same minutes: on a shared machine the speed drifts by tens
of percent over a run.
"""
from __future__ import annotations

import os
import platform
import time
import warnings
from typing import Callable, Dict, List, Optional

import numpy as np

from .timing import summarize

__all__ = ["machine_info", "bench_model", "format_table", "per_op_profile", "NotExpressible"]

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


def _time_alternating(fn: Callable, items, push: Callable, frames, rate: Optional[float],
                      rounds: int = 5, min_pushes: int = 200):
    """Per-call µs of fn over items and of push beside it: items in `rounds` consecutive slices
    (in order: a streaming peer's frames stay in sequence), each slice followed by as many
    pushes (at least min_pushes, frames taken in turn). A shared VM's speed drifts by tens of
    percent over a run; alternating in slices of a few milliseconds puts both sides under the
    same drift, where interleaving single calls would have each evict the other's weights."""
    items = list(items)
    rounds = max(1, min(rounds, len(items)))
    cuts = np.linspace(0, len(items), rounds + 1).astype(int)
    col, beside, at = [], [], 0
    for a, b in zip(cuts[:-1], cuts[1:]):
        col.append(_time_frames(fn, items[a:b], rate))
        n = max(b - a, min_pushes)
        beside.append(_time_frames(push, [frames[(at + k) % len(frames)] for k in range(n)], rate))
        at += n
    return np.concatenate(col), np.concatenate(beside)


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
def _window_maker(x, w):
    """win(i): the window ending at frame i as (1, C[, F], W), C-contiguous: what the
    full-window runtimes that take channels first are fed. The frames are put in that
    layout once (a sensor loop would keep its buffer so), so a call pays one copy of the
    window, not a transpose in Python (np.moveaxis alone costs ~2 µs)."""
    xt = np.ascontiguousarray(np.moveaxis(x, 0, -1))  # (C[, F], T)

    def win(i):
        return np.ascontiguousarray(xt[..., i - w + 1:i + 1])[None]

    return win


def _torch_module(model):
    import torch  # noqa: F401  optional
    from ..convert.torch_export import to_torch
    return to_torch(model, dtype="float32")


def _column_torch(model, x, check_idx, streamed):
    import torch
    torch.set_num_threads(1)
    module = _torch_module(model).eval()
    w = model.window

    window = _window_maker(x, w)

    def window_tensor(i):
        return torch.from_numpy(window(i))

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

    window = _window_maker(x, w)

    def run(i):
        return sess.run(None, {"x": window(i)})[0]

    got = np.stack([run(i).reshape(model.output_shape) for i in check_idx])
    return run, _agree("onnxruntime", got, streamed)


class NotExpressible(Exception):
    """A runtime that cannot run this model (as a column would need it): the message says why."""


def _litert_torch_model(model) -> bytes:
    """The model converted by litert-torch from the PyTorch twin: input (1, C[, F], W)."""
    import litert_torch  # optional: the converter a user would pick
    import torch
    module = _torch_module(model).eval()
    sample = torch.zeros((1,) + tuple(model.frame_shape) + (model.window,))
    return bytes(litert_torch.convert(module, (sample,)).model_content())


def _column_litert(model, x, check_idx, streamed):
    """LiteRT/XNNPACK on the whole window. The model comes from litert-torch when it is
    installed (what a user would run); otherwise from our own flatbuffer writer
    (convert.tflite_export), whose input is the frames as they come, (1, W, C[, F])."""
    from ai_edge_litert.interpreter import Interpreter  # optional
    try:
        content, via = _litert_torch_model(model), "litert-torch"
    except ImportError:
        from ..convert.tflite_export import to_tflite
        content, via = to_tflite(model), "hand-built flatbuffer"
    interp = Interpreter(model_content=content, num_threads=1)
    interp.allocate_tensors()  # once: every window reuses the same tensors
    (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
    i_in, i_out = inp["index"], out["index"]
    w = model.window
    window = _window_maker(x, w) if via == "litert-torch" else (lambda i: x[i - w + 1:i + 1][None])

    def run(i):
        interp.set_tensor(i_in, window(i))  # hand-built: (1, W, C[, F]), frames as they come
        interp.invoke()
        return interp.get_tensor(i_out)

    got = np.stack([run(i).reshape(model.output_shape) for i in check_idx])
    return run, _agree("litert", got, streamed), via


def _executorch_program(module, sample):
    """ExecuTorch program lowered to XNNPACK, loaded; its thread pool set to one thread."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime
    try:
        from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
        _unsafe_reset_threadpool(1)
    except ImportError:  # pragma: no cover - older builds: XNNPACK's default pool
        pass
    exported = torch.export.export(module, (sample,))
    program = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch()
    loaded = Runtime.get().load_program(program.buffer)
    return loaded, loaded.load_method("forward")  # the method points into its program: keep both


def _column_executorch(model, x, check_idx, streamed):
    import torch
    torch.set_num_threads(1)
    w = model.window
    program, method = _executorch_program(_torch_module(model).eval(),
                                          torch.zeros((1,) + tuple(model.frame_shape) + (w,)))

    window = _window_maker(x, w)

    def run(i):
        return method.execute([torch.from_numpy(window(i))])[0] if program else None

    got = np.stack([run(i).numpy().reshape(model.output_shape) for i in check_idx])
    return run, _agree("executorch", got, streamed)


def _sequence_module(model, ring: bool):
    """The model as a function of a sequence, (1, C, T) -> (1, out, T - RF + 1), each output
    position being the model's output for the window ending there; or, with ``ring``, of one
    frame, (1, C, 1) -> (1, out, 1), every conv keeping its last (k-1)*d+1 inputs in a module
    buffer (the state a user of a full-graph runtime would write by hand). NotExpressible when
    the model has no such form: a head that reduces the whole window (a mean, a max, a
    flatten: every output needs all W frames at once), 2-D frames, or (ring) strides, pools
    and residual blocks, which would need per-phase state."""
    import torch
    nn = torch.nn
    from ..nn import layers as L
    from ..nn import merge as M

    layers = list(model.layers)
    head = next((i for i, layer in enumerate(layers) if layer.is_head), len(layers))
    if head < len(layers) and not isinstance(layers[head], L.LastFrame):
        raise NotExpressible(f"{type(layers[head]).__name__} reduces the whole window: its output needs "
                             f"all {model.window} frames at once, so there is no per-frame (pulsed) form")
    if len(model.frame_shape) != 1:
        raise NotExpressible("2-D frames: this column is written for 1-D sequence models only")

    class PerFrame(nn.Module):
        def __init__(self, lin):
            super().__init__()
            self.lin = lin

        def forward(self, x):
            return self.lin(x.transpose(1, -1)).transpose(1, -1)

    class Ring(nn.Module):
        def __init__(self, conv):
            super().__init__()
            self.conv = conv
            span = (conv.kernel_size[0] - 1) * conv.dilation[0] + 1
            self.register_buffer("buf", torch.zeros(1, conv.in_channels, span))

        def forward(self, x):
            new = torch.cat([self.buf[:, :, 1:], x], dim=2)
            self.buf.copy_(new)
            return self.conv(new)

    if any(list(node.inputs) != [i - 1] for i, node in enumerate(model.nodes) if i):
        raise NotExpressible("branches: this column is written for chains of layers")
    mods = list(_torch_module(model).mods)  # one module per node, in order (to_torch's graph)
    out = []
    for i, (layer, mod) in enumerate(zip(layers, mods)):
        if i == head:
            continue  # LastFrame: every position is kept
        if isinstance(layer, L._Conv) and tuple(layer.pad_t) != (0, 0):
            if not layer.causal:
                raise NotExpressible(f"{type(layer).__name__} pads both window edges: its edge positions "
                                     "change with every window, there is no per-frame form")
            mod = mod.mods[0]  # causal: W >= RF, the window's last position never sees the padding
        if i > head and isinstance(layer, L.Linear):
            mod = PerFrame(mod)
        elif ring and isinstance(layer, (M.Residual, L._Pool)) or \
                ring and isinstance(layer, L.Conv1d) and layer.stride != 1:
            raise NotExpressible(f"{type(layer).__name__}{' stride %d' % layer.stride if layer.stride != 1 else ''}: "
                                 "a per-frame module would need per-phase state (not written)")
        elif ring and isinstance(layer, L.Conv1d):
            mod = Ring(mod)
        out.append(mod)
    return nn.Sequential(*out).eval()


def _feed_check(name, model, step, x, check_idx, streamed):
    """Feed frames 0..max(check_idx) one at a time through ``step`` (which returns the
    output for that frame); compare the outputs at check_idx; return the error."""
    want, outs = set(check_idx), {}
    for t in range(max(check_idx) + 1):
        y = step(t)
        if t in want:
            outs[t] = np.asarray(y).reshape(model.output_shape)
    return _agree(name, np.stack([outs[t] for t in check_idx]), streamed)


def _column_executorch_stream(model, x, check_idx, streamed):
    import torch
    torch.set_num_threads(1)
    c = model.frame_shape[0]
    with warnings.catch_warnings():  # the ring buffers are mutated on purpose: that is the state
        warnings.filterwarnings("ignore", message="Mutation on a buffer", category=UserWarning)
        program, method = _executorch_program(_sequence_module(model, ring=True), torch.zeros(1, c, 1))
    frames = torch.from_numpy(np.ascontiguousarray(x)).reshape(len(x), 1, c, 1)

    def run(i):
        return method.execute([frames[i]])[0] if program else None

    err = _feed_check("executorch-stream", model, lambda t: run(t).numpy(), x, check_idx, streamed)
    return _Streaming(run, max(check_idx) + 1, lambda y: y.numpy()), err


def _column_tract(model, x, check_idx, streamed):
    """sonos tract, ONNX with a symbolic time axis T, ``Pulse("1", symbol="T")``: one frame
    per ``run``; the pulsed model reports its delay, from which the frame of each output
    follows (checked: it is the frame the stream emits that output at)."""
    import tempfile

    import tract  # optional
    import torch
    seq = _sequence_module(model, ring=False)
    c = model.frame_shape[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        with warnings.catch_warnings():  # TorchScript on purpose: tract reads its symbolic time axis
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(seq, (torch.zeros(1, c, 2 * model.receptive_field),), path, input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {2: "T"}, "y": {2: "T1"}}, dynamo=False)
        inference = tract.onnx().load(path)
    inference.set_input_fact(0, f"1,{c},T,f32")
    typed = inference.into_model()
    try:
        typed.transform(tract.Pulse("1", symbol="T"))
    except Exception as exc:  # tract's own word on what it cannot pulse
        raise NotExpressible(f"tract cannot pulse this model with pulse 1: {str(exc).splitlines()[0]}") from exc
    delay = int(np.asarray(typed.property("pulse.delay").to_numpy()).reshape(-1)[0])
    lag = delay - (model.receptive_field - 1)  # frames between a window's end and its output
    if lag < 0:
        raise AssertionError(f"tract reports delay {delay} < receptive field - 1")
    state = typed.into_runnable().spawn_state()
    frames = [np.ascontiguousarray(f[None, :, None]) for f in x]

    def run(i):
        return state.run([frames[i]])[0].to_numpy()

    if lag:  # the output for the window ending at frame t arrives with frame t + lag
        check_frames = [t + lag for t in check_idx]
        outs = {}
        for t in range(max(check_frames) + 1):
            outs[t] = run(t)
        got = np.stack([outs[t].reshape(model.output_shape) for t in check_frames])
        err = _agree("tract", got, streamed)
    else:
        err = _feed_check("tract", model, run, x, check_idx, streamed)
    return _Streaming(run, max(check_idx) + lag + 1, lambda y: y, lag), err


class _Streaming:
    """A streaming column's per-frame call, the first frame to time, how to read an output
    and how many frames late outputs arrive."""

    def __init__(self, run, start, read, lag=0):
        self.run, self.start, self.read, self.lag = run, start, read, lag
        self.last = None
        self.exact = True  # its outputs equal the float stream's (int8: not, by design)

    def __call__(self, i):
        self.last = self.run(i)


_QUANTIZED: dict = {}


def _quantized(model, x):
    """The int8 model every int8 column measures: ``model`` quantized on the run's first frames
    (one per model and run, so that the columns run the same quantized model)."""
    from ..quant import quantize

    key = (id(model), id(x))
    if key not in _QUANTIZED:
        _QUANTIZED.clear()
        _QUANTIZED[key] = (model, x, quantize(model, x[:min(len(x), model.window + 400)]))
    return _QUANTIZED[key][2]


def _column_int8(model, x, check_idx, streamed):
    """The int8 stream of ``model``, quantized on the first frames of the sequence: checked
    bit for bit against its integer reference (its difference from float is quantization,
    reported, not an agreement failure)."""
    w = model.window
    qmodel = _quantized(model, x)
    stream = qmodel.stream()
    outs = {}
    for t, frame in enumerate(x[:max(check_idx) + 1]):
        y = stream.push(frame)
        if y is not None:
            outs[t] = y.copy()
    if not qmodel.tail:  # no float tail: the int8 stream must equal its integer reference
        want = qmodel.forward_dequantized(x[:max(check_idx) + 1])
        got = np.stack([outs[i] for i in check_idx])
        ref = np.stack([want[i - w + 1] for i in check_idx])
        if not np.array_equal(got, ref):
            raise AssertionError("int8 stream differs from its integer reference")
    err = float(np.max(np.abs(np.stack([outs[i] for i in check_idx]) - streamed)))
    stream.reset()
    for frame in x[:w]:
        stream.push(frame)
    col = _Streaming(lambda i: stream.push(x[i]), w, lambda y: y, 0)
    col.exact = False
    col.ring_bytes = stream.buffer_bytes
    return col, err, f"rings {stream.buffer_bytes:,} bytes"


AGREE_INT8_LSB = 1  # int8 columns: within one LSB of the int8 reference (float vs fixed-point requantization)


def _agree_int8(name, qmodel, got_q, check_idx, x):
    """int8 outputs of a column against the integer reference on the checked windows: within
    AGREE_INT8_LSB. Returns 'exact/n windows, max d LSB'."""
    w = qmodel.window
    ref = np.stack([qmodel.forward_int_window(x[i - w + 1:i + 1]) for i in check_idx]).astype(np.int64)
    got = np.asarray(got_q).astype(np.int64).reshape(ref.shape)
    d = np.abs(got - ref).reshape(len(ref), -1).max(axis=1)
    if d.max(initial=0) > AGREE_INT8_LSB:
        raise AssertionError(f"column {name!r}: int8 outputs {int(d.max())} LSB from the int8 reference "
                             f"(allowed {AGREE_INT8_LSB})")
    return f"int8 vs reference: {int((d == 0).sum())}/{len(d)} windows exact, max {int(d.max(initial=0))} LSB"


def _column_onnxruntime_int8(model, x, check_idx, streamed):
    """onnxruntime on the whole window, running the int8 column's quantized model written as a
    QDQ graph with its own scales, int8 weights and biases (convert.onnx_qdq_export): onnxruntime
    fuses it into its int8 kernels. Agreement at the int8 level, then timed."""
    import onnxruntime as ort

    from ..convert.onnx_qdq_export import to_onnx_qdq

    qmodel = _quantized(model, x)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(to_onnx_qdq(qmodel), opts, providers=["CPUExecutionProvider"])
    window = _window_maker(x, model.window)
    outputs = ["y"]

    def run(i):
        return sess.run(outputs, {"x": window(i)})[0]

    got_q = [sess.run(["q"], {"x": window(i)})[0] for i in check_idx]
    agreement = _agree_int8("onnxruntime_int8", qmodel, got_q, check_idx, x)
    got = np.stack([run(i).reshape(model.output_shape) for i in check_idx])
    err = float(np.max(np.abs(got - streamed)))  # vs the float stream: quantization, not agreement
    return run, err, agreement


AGREE_LITERT_INT8_LSB = 2  # XNNPACK requantizes in float at every layer: a bit per layer, rarely two in all


def _column_litert_int8(model, x, check_idx, streamed):
    """LiteRT on the whole window, running the int8 column's quantized model written as a
    full-integer .tflite (convert.tflite_int8_export: its own scales, weights and biases).
    Checked twice before timing: with TFLite's reference kernels (the same fixed point as the
    model: equal integers, MEAN and AVERAGE_POOL excepted, which round their own way), then
    with the default XNNPACK delegate, which is what is timed (float requantization)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType  # optional

    from ..convert.tflite_export import to_tflite

    qmodel = _quantized(model, x)
    content = to_tflite(qmodel)
    w = model.window

    def session(**kw):
        interp = Interpreter(model_content=content, num_threads=1, **kw)
        interp.allocate_tensors()
        (inp,) = interp.get_input_details()
        outs = {o["name"]: o["index"] for o in interp.get_output_details()}
        return interp, inp["index"], outs

    def outputs(interp, i_in, outs, i, name):
        interp.set_tensor(i_in, x[i - w + 1:i + 1][None])  # (1, W, C[, F]): frames as they come
        interp.invoke()
        return interp.get_tensor(outs[name])

    ref = session(experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    exact = _agree_int8("litert_int8 (reference kernels)", qmodel,
                        [outputs(*ref, i, "q") for i in check_idx], check_idx, x)
    interp, i_in, outs = session()
    got_q = np.stack([outputs(interp, i_in, outs, i, "q") for i in check_idx])
    ref_q = np.stack([qmodel.forward_int_window(x[i - w + 1:i + 1]) for i in check_idx]).astype(np.int64)
    d = np.abs(got_q.reshape(ref_q.shape).astype(np.int64) - ref_q).reshape(len(ref_q), -1).max(axis=1)
    if d.max(initial=0) > AGREE_LITERT_INT8_LSB:
        raise AssertionError(f"column 'litert_int8': XNNPACK's int8 outputs {int(d.max())} LSB from the int8 "
                             f"reference (allowed {AGREE_LITERT_INT8_LSB})")
    got = np.stack([outputs(interp, i_in, outs, i, "y").reshape(model.output_shape) for i in check_idx])
    err = float(np.max(np.abs(got - streamed)))  # vs the float stream: quantization, not agreement

    def run(i):
        return outputs(interp, i_in, outs, i, "y")

    label = (f"reference kernels: {exact.split(': ', 1)[1]}; XNNPACK: {int((d == 0).sum())}/{len(d)} exact, "
             f"max {int(d.max(initial=0))} LSB")
    return run, err, label


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
    "executorch": ("ExecuTorch/XNNPACK, full window", _column_executorch),
    "executorch_stream": ("ExecuTorch/XNNPACK, streamed (buffers)", _column_executorch_stream),
    "tract": ("tract, pulse mode (streamed)", _column_tract),
    "int8": ("int8 stream (quantized here)", _column_int8),
    "onnxruntime_int8": ("onnxruntime int8 (QDQ, same model), window", _column_onnxruntime_int8),
    "litert_int8": ("LiteRT int8 (.tflite, same model), window", _column_litert_int8),
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
              "columns": {"streamed": {"label": f"streamed push ({mode})", **summarize(us)}},
              "jitter": _jitter(us, w, model.hop, _resum_periods(stream.plan))}
    if not rate:  # back-to-back: is a high p99 the stream's, or the machine's?
        result["jitter"]["interleaved"] = _interleaved_jitter(stream.push, timed,
                                                              stream.plan.macs_per_frame())

    emitted = sorted(t for t in outputs if t >= w)
    idx = emitted[:recompute_frames]
    check_idx = idx[:5] + idx[-3:]
    streamed_check = np.stack([outputs[i] for i in check_idx]) if check_idx else None
    for name in columns:
        label, factory = COLUMNS[name]
        try:
            run, err, *via = factory(model, x, check_idx, streamed_check)
            if via:
                label = f"{label} [{via[0]}]"
            if isinstance(run, _Streaming):  # frames in order after the checked ones, as push
                col_us, beside = _time_alternating(run, range(run.start, len(x)), stream.push, timed, rate)
                last = len(x) - 1 - run.lag  # the window whose output came with the last frame
                if last in outputs and run.exact:
                    err = max(err, _agree(name, np.asarray(run.read(run.last)).reshape((1,) + outputs[last].shape),
                                          outputs[last][None]))
            else:
                n = len(idx) if name != "numpy" else min(len(idx), 50)
                col_us, beside = _time_alternating(run, idx[:n], stream.push, timed, rate)
        except ImportError as exc:
            result["columns"][name] = {"label": label, "skipped": f"not installed ({exc.name or exc})"}
            continue
        except NotExpressible as exc:
            result["columns"][name] = {"label": label, "skipped": f"cannot express this model: {exc}"}
            continue
        except Exception as exc:  # a runtime that cannot run this model is reported, not fatal
            result["columns"][name] = {"label": label, "skipped": f"{type(exc).__name__}: {exc}"}
            continue
        stats = summarize(col_us)
        stats["max_abs_error_vs_streamed"] = err
        stats["streamed_beside_p50_us"] = float(np.median(beside))
        stats["speedup_of_streaming_p50"] = stats["p50_us"] / stats["streamed_beside_p50_us"]
        result["columns"][name] = {"label": label, **stats}
    if per_layer:
        result["per_op"] = per_op_profile(model, x, mode)
    return result


def _resum_periods(plan) -> set:
    """Frames between two re-sums of one slot of each running mean (npos updates per slot,
    a slot per stride phase, one slot updated each time the op runs, every `period` frames):
    a period of its own, which need not divide the hop or 64 (spectrogram: 14 x 4 = 56)."""
    from ..engine.plan import RMEAN
    return {int(op.npos * op.nslots * max(op.period, 1)) for op in plan.ops if op.kind == RMEAN and op.npos}


def _jitter(us: np.ndarray, t0: int, hop: int, periods=()) -> dict:
    """p99 / p50 of the streamed pushes, and whether the slow frames are periodic: the
    median per frame phase (t mod P, for the hop, for 64 and for `periods`: the running
    means' re-sum periods) over the overall median. A periodic op (a re-sum every n frames,
    a ring wrap, a pool's stride) shows as one phase above 1; flat phases with a high p99
    mean the outliers come from outside the stream."""
    p50, p99 = np.percentile(us, [50, 99])
    t = np.arange(t0, t0 + len(us))
    worst = {}
    for period in sorted({max(hop, 1), 64, *periods}):
        if period > 1 and len(us) >= 4 * period:
            worst[str(period)] = float(max(np.median(us[t % period == k]) for k in range(period)) / p50)
    return {"p99_over_p50": float(p99 / p50), "slowest_phase_median_over_p50": worst}


def _interleaved_jitter(push: Callable, frames, macs: int) -> dict:
    """p99 / p50 of push and of a control call that does fixed work and touches no stream
    (read_floats over one float per MAC: the frame's weight bytes, on the same kernel path),
    the two alternating in one loop. Both see the same interrupts, preemptions and
    neighbours on the machine; a control tail as high as push's says the outliers come
    from there, a push tail far above the control's says the stream has slow frames."""
    from ..engine._kernels import cache_aligned, read_floats
    w = cache_aligned(np.ones(max(int(macs), 256), dtype=np.float32))
    clock = time.perf_counter_ns
    p = np.empty(len(frames))
    c = np.empty(len(frames))
    for k, frame in enumerate(frames):
        t0 = clock()
        push(frame)
        t1 = clock()
        read_floats(w)
        c[k] = clock() - t1
        p[k] = t1 - t0
    tail = lambda v: float(np.percentile(v, 99) / np.percentile(v, 50))  # noqa: E731
    return {"push_p99_over_p50": tail(p), "control_p99_over_p50": tail(c),
            "control_p50_us": float(np.median(c)) / 1000}


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
             f"{'column':46s}{'p50 µs':>10s}{'p90 µs':>10s}{'p99 µs':>10s}{'max µs':>10s}"
             f"{'fps':>11s}{'x stream':>10s}{'stream µs':>11s}"]
    for name, col in result["columns"].items():
        if "skipped" in col:
            lines.append(f"{col['label']:46s}  skipped: {col['skipped']}")
            continue
        ratio = col.get("speedup_of_streaming_p50", 1.0)
        beside = col.get("streamed_beside_p50_us", col["p50_us"])  # the stream timed in alternation with this column
        lines.append(f"{col['label']:46s}{col['p50_us']:10.2f}{col['p90_us']:10.2f}{col['p99_us']:10.2f}"
                     f"{col['max_us']:10.1f}{col['fps']:11,.0f}{ratio:10.1f}{beside:11.2f}")
    jit = result.get("jitter")
    if jit:
        lines.append(f"jitter (streamed): p99/p50 {jit['p99_over_p50']:.2f}; slowest frame phase's median / p50: "
                     + (", ".join(f"t mod {k}: {v:.2f}" for k, v in jit["slowest_phase_median_over_p50"].items())
                        or "-"))
        inter = jit.get("interleaved")
        if inter:
            lines.append(f"jitter, push alternating with a fixed-work call (read_floats over the frame's weights, "
                         f"{inter['control_p50_us']:.2f} µs): p99/p50 push {inter['push_p99_over_p50']:.2f}, "
                         f"the fixed-work call {inter['control_p99_over_p50']:.2f}")
    for op in result.get("per_op", []):
        lines.append(f"    {op['op']:52s}{op['ns_per_frame'] / 1000:8.3f} µs/frame  ({op['macs']:,} MACs, "
                     f"every {op['period']} frames)")
    return "\n".join(lines)
