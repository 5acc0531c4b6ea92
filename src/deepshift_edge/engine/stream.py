"""`Stream`: push frames, get the output of the window ending at each frame.

The per-frame work runs in the compiled core (`_kernels.StreamCore.push`); this module
holds what is not time-critical: construction, the slow path that converts and checks
unusual input, error messages, and block/batch conveniences.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ._kernels import StreamCore
from ..errors import ModelError, StreamInputError, StreamInputTypeError
from .plan import build_plan

__all__ = ["Stream"]

_FLOAT32 = np.dtype(np.float32)

# Below this many multiply-adds per push, releasing the GIL costs more than it frees.
RELEASE_GIL_MACS = 20_000


def _as_float32(x, what: str) -> np.ndarray:
    if isinstance(x, (str, bytes)) or x is None:
        raise StreamInputTypeError(f"expected {what} as a numeric array, got {type(x).__name__}")
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise StreamInputTypeError(f"expected {what} as a numeric array, got {type(x).__name__}: {exc}") from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise StreamInputTypeError(f"expected {what} as a numeric array, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise StreamInputTypeError(f"expected {what} as a real array, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 4:  # float64: values past float32's range
        with np.errstate(over="ignore"):
            out = np.asarray(arr, dtype=np.float32, order="C")
        big = np.isinf(out) & np.isfinite(arr)
        if big.any():
            at = tuple(int(i) for i in np.argwhere(big)[0])
            raise StreamInputError(f"{what} holds {float(arr[at])!r} at index {at}, which overflows float32 "
                                   f"(largest finite: 3.4028235e+38); refused (the stream state is "
                                   f"unchanged)")
        return out if out.flags.aligned else out.copy()
    arr = np.asarray(arr, dtype=np.float32, order="C")  # keeps 0-d arrays 0-d
    # A float32 view at an odd byte offset stays misaligned through asarray; the kernels
    # read floats (32-bit ARM's VLDR faults on that: SIGBUS), so copy it.
    return arr if arr.flags.aligned else arr.copy()


def _as_int8(x, what: str) -> np.ndarray:
    """An io="int8" stream's input: int8, or integers that fit int8; floats are refused
    (they are real values, not yet quantized)."""
    if isinstance(x, (str, bytes)) or x is None:
        raise StreamInputTypeError(f"expected {what} as an int8 array, got {type(x).__name__}")
    try:
        arr = np.asarray(x)
    except Exception as exc:
        raise StreamInputTypeError(f"expected {what} as an int8 array, got {type(x).__name__}: {exc}") from exc
    if arr.dtype == np.int8:
        return np.ascontiguousarray(arr)
    if arr.dtype.kind in "iu" and arr.size and (arr.min() < -128 or arr.max() > 127):
        raise StreamInputError(f"expected {what} of int8 values (-128..127), got values from "
                               f"{int(arr.min())} to {int(arr.max())}")
    if arr.dtype.kind not in "iu":
        raise StreamInputTypeError(
            f"this stream was made with io='int8': expected {what} as int8 at the input's scale and "
            f"zero point (qmodel.input_qparams.quantize(x)), got dtype {arr.dtype}; use io='float32' "
            f"to push real values")
    return np.ascontiguousarray(arr, dtype=np.int8)


class Stream(StreamCore):
    """A live stream through a :class:`~deepshift_edge.model.Sequential`.

    Create it with ``model.stream()``. ``push(frame)`` returns ``None`` until the window
    is full, then the output for the window ending at that frame (in ``decimated`` mode:
    every ``hop`` frames). The returned array is owned by the stream and overwritten by
    the next push: copy it to keep it.

    Non-finite input (NaN/Inf) is refused with :class:`StreamInputError`, and the
    stream's state is left as it was, like for any other bad input.

    ``push_many`` runs blocks of up to ``block`` frames layer by layer (weights stay in
    cache across frames); every ring keeps ``block - 1`` extra rows for it.

    With ``batch=B``, ``push`` takes ``(B, *frame_shape)``, and returns ``None`` when no
    stream has an output, else the ``(B, *output_shape)`` array whose rows without an
    output (see :attr:`ready`) are NaN.
    """

    def __init__(self, model, batch: Optional[int] = None, mode: str = "dense", block: int = 64,
                 plan=None, io: str = "float32"):
        if batch is not None and (isinstance(batch, bool) or not isinstance(batch, (int, np.integer))
                                  or batch < 1):
            raise ValueError(f"batch must be None or an integer >= 1, got {batch!r}")
        self.model = model
        self.mode = mode
        self.semantics = getattr(model, "semantics", "window")
        if plan is not None:  # compiled elsewhere (an int8 plan: quant/plan.py)
            self.plan = plan
        elif self.semantics == "sequence":
            if mode != "dense":
                raise ModelError("semantics='sequence' runs every layer at its own rate and emits "
                                 "each output position once; leave mode at its default")
            from .sequence import build_sequence_plan
            self.plan = build_sequence_plan(model, block)
        else:
            self.plan = build_plan(model, mode, block)
        self.window = model.window
        self.hop = self.plan.hop
        self.frame_shape = tuple(model.frame_shape)
        self.output_shape = tuple(model.output_shape)
        n = 1 if batch is None else int(batch)
        self._setup(self.plan, n, batch is not None, self.frame_shape, RELEASE_GIL_MACS,
                    self._coerce_frame, None, self._reject)
        self.io = io
        if io == "int8":  # an int8 plan built for int8 I/O (quant/plan.py)
            self._enable_int8_io(self._coerce_int8_frame)

    # -- slow path of push: called by the compiled core only when the fast check fails
    @property
    def _expected(self) -> tuple:
        return ((self.batch,) if self.batched else ()) + self.frame_shape

    def _coerce_frame(self, x) -> np.ndarray:
        arr = _as_float32(x, "a frame")
        if arr.shape != self._expected:
            what = "a batch of frames" if self.batched else "a frame"
            raise StreamInputError(f"expected {what} of shape {self._expected}, got shape {arr.shape}")
        return arr

    def _coerce_int8_frame(self, x) -> np.ndarray:
        arr = _as_int8(x, "a frame")
        if arr.shape != self._expected:
            what = "a batch of frames" if self.batched else "a frame"
            raise StreamInputError(f"expected {what} of shape {self._expected}, got shape {arr.shape}")
        return arr

    def _reject(self, x):
        arr = np.asarray(x, dtype=np.float32)
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise StreamInputError(
            f"frame contains a non-finite value ({arr[tuple(bad)]}) at index {tuple(int(i) for i in bad)}; "
            f"NaN/Inf are refused (the stream state is unchanged)")

    # -- blocks
    def push_many(self, block):
        """Push frames ``block[0], block[1], ...``; equal to pushing them one by one.

        Unbatched: ``block`` is (N, *frame_shape); returns the outputs of the frames that
        have one, in order, as a new (M, *output_shape) array (M may be 0).
        Batched: ``block`` is (N, B, *frame_shape); returns ``(outputs, ready)`` with
        outputs (N, B, *output_shape), NaN where ``ready`` (N, B) is False.
        """
        if self.io == "int8":
            return self._push_many_int8(block)
        if type(block) is np.ndarray and block.dtype == _FLOAT32 and block.flags.c_contiguous \
                and block.flags.aligned:
            arr = block  # the common case: skip the conversions (a few µs per call)
        else:
            arr = _as_float32(block, "a block of frames")
        self._check_block_shape(arr)
        return self._push_block(arr)

    def _check_block_shape(self, arr):
        want = self._expected
        if arr.ndim != len(want) + 1 or arr.shape[1:] != want:
            raise StreamInputError(f"expected a block of shape (N, {', '.join(map(str, want))}), "
                                   f"got shape {arr.shape}")

    def _push_block(self, arr):
        """push_many of a float32 block whose shape was checked."""
        n = arr.shape[0]
        if self.batched:
            out = np.empty((n, self.batch) + self.output_shape, dtype=np.float32)
            ready = np.zeros((n, self.batch), dtype=np.bool_)
            if self._run_block(arr, out, ready, True, True) < 0:
                self._reject_block(arr)
            return out, ready
        # Room for the most outputs n frames can have, not the count at the current frame:
        # another thread may push between here and _run_block's busy guard, and the kernel
        # would then write past (or, with no room, to NULL instead of) an exact-size array.
        most = n if self.semantics == "sequence" else -(-n // self.hop)
        out = np.empty((most,) + self.output_shape, dtype=np.float32)
        got = self._run_block(arr, out, None, True, True)
        if got < 0:
            self._reject_block(arr)
        return out[:got]

    def _push_many_int8(self, block):
        """push_many of an io="int8" stream: int8 frames in, int8 outputs out. The kernels take
        the frames widened to float32 (exact) through the unit-scale input quantizer."""
        q = _as_int8(block, "a block of frames")
        self._check_block_shape(q)
        res = self._push_block(q.astype(np.float32))
        if self.batched:
            out, ready = res
            return np.where(ready.reshape(ready.shape + (1,) * len(self.output_shape)),
                            np.nan_to_num(out), 0).astype(np.int8), ready
        return res.astype(np.int8)

    @staticmethod
    def _reject_block(arr):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise StreamInputError(f"block contains a non-finite value at index "
                               f"{tuple(int(i) for i in bad)} (frame {int(bad[0])}); NaN/Inf are "
                               f"refused (the stream state is unchanged)")

    # -- the end of a recording (semantics='sequence')
    def flush(self):
        """End the recording: compute the last output positions, whose receptive fields reach
        past the last frame, with the zeros of the right edge, exactly as the offline network
        over the whole recording has them. Returns them as (M, *output_shape) (a list of such
        arrays, one per stream, when batched). Afterwards push raises until reset()."""
        if self.semantics != "sequence":
            raise StreamInputError("flush() ends a recording of a semantics='sequence' model; a "
                                   "window model has nothing pending (every window's output is "
                                   "returned by its push)")
        from .sequence import final_lengths
        if self._flushed:
            self._raise_flushed()
        results = []
        frames = self._frames()
        for b in range(self.batch):
            t = int(frames[b])
            if t < self.plan.min_frames:
                raise StreamInputError(f"the recording holds {t} frames; the network needs at least "
                                       f"{self.plan.min_frames} (stream {b}), so it has no output")
        for b in range(self.batch):
            t = int(frames[b])
            fin = final_lengths(self.model, self.plan, t, self.plan.owner)
            specs = self.model.node_specs(t)
            # model output length minus positions already emitted
            left = specs[-1].length
            out = np.empty((max(left, 1),) + self.output_shape, dtype=np.float32)
            got = self._flush_seq(b, fin, out)
            results.append(out[:got] if self.plan.out_transpose is False else out[:got])
        self._flushed = True
        self.ready[:] = False
        return results if self.batched else results[0]

    @property
    def delay(self) -> int:
        """Frames between an output position's own frame and the push that returns it:
        'window': how far the newest position the head reads lies behind the newest frame;
        'sequence': how far the right zero padding reaches (each position waits for it)."""
        if self.semantics == "sequence":
            s = self.model.specs[-1]
            return max(0, s.first)
        return self.model.delay

    def _emits(self, t: int) -> bool:
        w, hop = self.window, self.hop
        return t >= w - 1 and (t - (w - 1)) % hop == 0

    # -- state
    def reset(self, index=None):
        """Return to the fresh state: all streams, or only stream ``index`` (int or list)."""
        if index is None:
            rows = range(self.batch)
            self._flushed = False
        elif self._flushed:
            raise StreamInputError("this batch was flushed together; reset() (all streams) starts "
                                   "new recordings")
        else:
            rows = [index] if isinstance(index, (int, np.integer)) else list(index)
            for b in rows:
                if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or not 0 <= b < self.batch:
                    raise IndexError(f"stream index must be in 0..{self.batch - 1}, got {b!r}")
        self._reset_rows(rows)

    # -- snapshots (issue: state that survives a power loss)
    def state(self) -> dict:
        """A snapshot of everything this stream remembers (plain arrays, no pickle).

        ``restore(snapshot)`` on a stream of the same model, mode, batch and block makes
        every later output bit-identical to an uninterrupted run."""
        from . import state as _state
        return _state.capture(self)

    def restore(self, snapshot) -> None:
        """Continue from ``snapshot`` (from :meth:`state` or :meth:`load_state`'s file).
        A snapshot of another model or layout is refused with StateError, untouched state."""
        from . import state as _state
        arrays, st = _state.check(self, snapshot)
        self._acquire()  # a push from another thread now raises instead of interleaving
        try:
            live_rings, live_state = self._buffers()
            for dst, src in zip(list(live_rings) + list(self._aux_buffers()), arrays):
                np.copyto(dst, src)
            np.copyto(live_state, st)
        finally:
            self._release()
        self.ready[:] = False

    def save_state(self, path) -> None:
        """Write :meth:`state` to ``path`` atomically (temporary file, fsync, rename):
        a crash during the save leaves the previous file intact."""
        from . import state as _state
        _state.save(self.state(), path)

    def load_state(self, path) -> None:
        """Restore from a file written by :meth:`save_state`."""
        from . import state as _state
        self.restore(_state.load(path))

    def warm_up(self, history):
        """Prime the stream from recorded frames ``history`` (N, *frame_shape), as if it
        had seen all N of them, in one batched pass over the last ``window`` frames.

        Returns the output for the last frame of ``history`` (None if it has none).
        Unbatched streams only."""
        if self.batched:
            raise StreamInputError("warm_up is for unbatched streams; warm each stream of a batch "
                                   "separately or push_many the history")
        if self.semantics == "sequence":
            raise StreamInputError("warm_up primes a window; a semantics='sequence' stream starts at "
                                   "its recording's start: push_many the history instead")
        if self.io == "int8":
            arr = _as_int8(history, "a history of frames").astype(np.float32)
        else:
            arr = _as_float32(history, "a history of frames")
        if arr.ndim != len(self.frame_shape) + 1 or arr.shape[1:] != self.frame_shape:
            raise StreamInputError(f"expected a history of shape (N, {', '.join(map(str, self.frame_shape))}), "
                                   f"got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise StreamInputError("history contains a non-finite value; NaN/Inf are refused "
                                   "(the stream state is unchanged)")
        n = arr.shape[0]
        keep = min(n, self.window)
        # Only the last `window` frames can reach a future output; the counter keeps the
        # phase of strided layers what it would be after all n frames. The busy guard is
        # held throughout, so a push from another thread cannot land between the steps.
        out = np.empty((-(-keep // self.hop),) + self.output_shape, dtype=np.float32)
        self._acquire()
        try:
            self._reset_rows_unguarded(range(self.batch))
            self._buffers()[1][0, 0] = n - keep
            got = self._run_block(arr[n - keep:], out, None, False)
        finally:
            self._release()
        last = n - 1
        self.ready[0] = got > 0 and self._emits(last)
        if self.ready[0]:
            self.out[0] = out[got - 1]
            if self.io == "int8":
                self.out_int8[0] = out[got - 1].astype(np.int8)
                return self.out_int8[0].copy()
            return out[got - 1].copy()
        return None

    @property
    def frames(self):
        """Frames pushed since creation or reset (int; an int64 array when batched)."""
        f = self._frames()
        return f if self.batched else int(f[0])

    @property
    def buffer_bytes(self) -> int:
        """Bytes of ring buffers held by this stream (all batch elements)."""
        rings, state = self._buffers()
        return int(sum(r.nbytes for r in rings) + state.nbytes + sum(a.nbytes for a in self._aux_buffers()))

    def __repr__(self):
        b = f", batch={self.batch}" if self.batched else ""
        return (f"<Stream mode={self.mode!r}{b} window={self.window} hop={self.hop} "
                f"frame_shape={self.frame_shape} output_shape={self.output_shape} frames={self.frames}>")
