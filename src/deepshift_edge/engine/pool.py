"""`StreamPool`: many sensors' streams in one process, served by sensor id (issue 14).

A pool owns one batched stream of `capacity` slots. Each sensor id that arrives gets a free
slot (reset to the fresh state), keeps it until it leaves, and whatever frames arrive
together are pushed in one batched call: the interior convs then read each weight once for
all of those sensors (a small GEMM, `dse_gemv_streams` in _gemv.h) instead of once per
sensor. A sensor's outputs never depend on which other sensors share its call, its slot, or
the order they arrived in: bit for bit those of a lone ``model.stream()`` fed the same frames
(tests/test_pool.py).

One sensor's state moves on its own: ``snapshot(id)`` gives the bytes of the library's
snapshot format (a .npz, no pickle; the layout of a lone stream with the pool's mode and
block), which ``restore(id, data)`` takes back here or in another pool, and a lone stream
takes with ``stream.restore(state.from_bytes(data))``. That is what a distributed stream
processor stores per key (deepshift_edge.flink).
"""
from __future__ import annotations

from typing import Dict, Hashable, Iterable, List

import numpy as np

from ..errors import ModelError, PoolFullError, StreamInputError
from . import state as _state
from ._kernels import _all_finite
from .stream import _as_float32

__all__ = ["StreamPool"]

_FLOAT32 = np.dtype(np.float32)


class StreamPool:
    """Streams of one model served by sensor id, `capacity` at a time.

    ``push(ids, frames)`` pushes ``frames[i]`` into sensor ``ids[i]``'s stream: ids in any
    order, new ones join (a free slot, reset), an id given k times has its k frames pushed
    in the order given. Returns ``(outputs, ready)``: outputs (n, *output_shape), NaN in the
    rows whose frame has no output (``ready[i]`` False). ``leave(id)`` frees a slot.

    ``mode`` and ``block`` are those of ``model.stream()``; ``block`` only matters for
    ``push_many`` (per-sensor blocks of frames) and sets the rows every ring keeps, so it
    is also part of the snapshot layout (the default, 1, keeps snapshots smallest).
    """

    def __init__(self, model, capacity: int, mode: str = "dense", block: int = 1,
                 auto_join: bool = True):
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity < 1:
            raise ValueError(f"capacity must be an integer >= 1, got {capacity!r}")
        if getattr(model, "semantics", "window") != "window":
            raise ModelError("a pool serves window models (semantics='window'): a 'sequence' "
                             "recording ends with flush(); stream it with model.stream()")
        self.model = model
        self.capacity = int(capacity)
        self.mode = mode
        self.block = int(block)
        self.auto_join = bool(auto_join)
        self._stream = model.stream(batch=self.capacity, mode=mode, block=self.block)
        # A lone stream of the same plan: the layout (and checks) of one sensor's snapshot.
        self._lone = model.stream(mode=mode, block=self.block)
        self._fingerprint = _state.model_fingerprint(model)
        self._layout = _state._layout(self._lone)
        self.frame_shape = self._stream.frame_shape
        self.output_shape = self._stream.output_shape
        self.window = self._stream.window
        self._slots: Dict[Hashable, int] = {}
        self._free: List[int] = list(range(self.capacity - 1, -1, -1))  # pop() takes the lowest

    # -- membership -----------------------------------------------------------------
    @property
    def ids(self) -> list:
        """The sensor ids holding a slot, in the order they joined."""
        return list(self._slots)

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, sensor) -> bool:
        return sensor in self._slots

    def slot(self, sensor) -> int:
        """The slot (row of the batched stream) that sensor holds."""
        try:
            return self._slots[sensor]
        except KeyError:
            raise KeyError(f"sensor {sensor!r} is not in the pool") from None

    def join(self, sensor) -> int:
        """Give `sensor` a slot in the fresh state; returns the slot. PoolFullError when all
        `capacity` slots are taken; ValueError if it holds one already."""
        if sensor in self._slots:
            raise ValueError(f"sensor {sensor!r} is already in the pool (slot {self._slots[sensor]})")
        if not self._free:
            raise PoolFullError(f"all {self.capacity} slots of the pool are taken; leave() a sensor "
                                f"or make a pool of larger capacity")
        row = self._free.pop()
        self._stream.reset(row)
        self._slots[sensor] = row
        return row

    def leave(self, sensor) -> None:
        """Free `sensor`'s slot (its state is gone: snapshot() it first to keep it)."""
        row = self.slot(sensor)
        del self._slots[sensor]
        self._free.append(row)
        self._free.sort(reverse=True)

    def frames(self, sensor) -> int:
        """Frames pushed into `sensor`'s stream since it joined (or as restored)."""
        return int(self._stream._buffers()[1][self.slot(sensor), 0])

    # -- frames ---------------------------------------------------------------------
    def _rows_for(self, ids: list) -> list:
        """Slots of ids, joining new ones (all or nothing: PoolFullError before any join)."""
        new = [s for s in dict.fromkeys(ids) if s not in self._slots]
        if new and not self.auto_join:
            raise KeyError(f"sensor {new[0]!r} is not in the pool (auto_join=False: join() it first)")
        if len(new) > len(self._free):
            raise PoolFullError(f"{len(new)} new sensors, {len(self._free)} free slots of "
                                f"{self.capacity}: nothing was pushed")
        for s in new:
            self.join(s)
        slots = self._slots
        return [slots[s] for s in ids]

    def push(self, ids: Iterable[Hashable], frames):
        """Push frames[i] into sensor ids[i]'s stream, all in one batched call (one call per
        repeat when an id comes more than once). Returns (outputs, ready), new arrays.

        Bad input (wrong shape, NaN/Inf) is refused before any stream or slot changes."""
        if type(ids) is not list:
            ids = list(ids)
        arr = frames if (type(frames) is np.ndarray and frames.dtype == _FLOAT32
                         and frames.flags.c_contiguous and frames.flags.aligned) \
            else _as_float32(frames, "a batch of frames")
        want = (len(ids),) + self.frame_shape
        if arr.shape != want:
            raise StreamInputError(f"expected frames of shape {want} (one per id), got {arr.shape}")
        if not _all_finite(arr):
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
            raise StreamInputError(f"frames hold a non-finite value at index {bad} (sensor "
                                   f"{ids[bad[0]]!r}); NaN/Inf are refused (no stream changed)")
        n = len(ids)
        out = np.empty((n,) + self.output_shape, dtype=np.float32)
        ready = np.zeros(n, dtype=np.bool_)
        if n == 0:
            return out, ready
        rows = np.array(self._rows_for(ids), dtype=np.intp)
        if len(set(ids)) == n:  # the common case: one frame per sensor
            self._stream._push_rows(rows, arr, out, ready)
            return out, ready
        # An id given k times: round r pushes every id's r-th frame, so each sensor sees its
        # frames in order and each round is one batched call.
        seen: Dict[Hashable, int] = {}
        rounds: List[List[int]] = []
        for i, s in enumerate(ids):
            r = seen.get(s, 0)
            seen[s] = r + 1
            if r == len(rounds):
                rounds.append([])
            rounds[r].append(i)
        for idx in rounds:
            sel = np.array(idx, dtype=np.intp)
            o = np.empty((len(idx),) + self.output_shape, dtype=np.float32)
            rd = np.zeros(len(idx), dtype=np.bool_)
            self._stream._push_rows(rows[sel], np.ascontiguousarray(arr[sel]), o, rd)
            out[sel] = o
            ready[sel] = rd
        return out, ready

    def push_many(self, sensor, block):
        """Push a block of frames (N, *frame_shape) into one sensor's stream, layer by layer
        as ``Stream.push_many`` does (weights reused across its frames, up to ``block`` at a
        time). Returns the outputs of the frames that have one, in order, (M, *output_shape);
        equal to pushing the frames one by one."""
        arr = block if (type(block) is np.ndarray and block.dtype == _FLOAT32
                        and block.flags.c_contiguous and block.flags.aligned) \
            else _as_float32(block, "a block of frames")
        if arr.ndim != len(self.frame_shape) + 1 or arr.shape[1:] != self.frame_shape:
            raise StreamInputError(f"expected a block of shape (N, {', '.join(map(str, self.frame_shape))}), "
                                   f"got shape {arr.shape}")
        if not _all_finite(arr):
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
            raise StreamInputError(f"block holds a non-finite value at index {bad}; NaN/Inf are "
                                   f"refused (the stream is unchanged)")
        row = self._rows_for([sensor])[0]
        most = -(-arr.shape[0] // self._stream.hop)
        out = np.empty((most,) + self.output_shape, dtype=np.float32)
        got = self._stream._push_row_block(row, arr, out)
        return out[:got]

    # -- one sensor's state ------------------------------------------------------------
    def state(self, sensor) -> dict:
        """`sensor`'s snapshot as a dict of arrays: a lone stream's (``model.stream(mode=...,
        block=...)`` restores it)."""
        row = self.slot(sensor)
        s = self._stream
        s._acquire()
        try:
            rings, st = s._buffers()
            snap = {"format": np.array(_state.FORMAT), "version": np.array(_state.VERSION, dtype=np.int64),
                    "model": np.array(self._fingerprint), "layout": np.array(self._layout),
                    "state": st[row:row + 1].copy()}
            for i, ring in enumerate(rings):
                snap[f"ring.{i}"] = ring[row:row + 1].copy()
            for i, arr in enumerate(s._aux_buffers()):
                snap[f"aux.{i}"] = arr[row:row + 1].copy()
        finally:
            s._release()
        return snap

    def snapshot(self, sensor) -> bytes:
        """`sensor`'s state as bytes of the snapshot format (state.to_bytes: a .npz, no pickle)."""
        return _state.to_bytes(self.state(sensor))

    def restore(self, sensor, data) -> None:
        """Continue `sensor` from a snapshot (bytes from snapshot(), or a dict from state() or a
        lone stream's state()), joining it if it has no slot. A snapshot of another model or
        layout is refused with StateError; nothing changes then."""
        snap = _state.from_bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
        arrays, st = _state.check(self._lone, snap, self._fingerprint)
        joined = sensor not in self._slots
        row = self._rows_for([sensor])[0]
        s = self._stream
        try:
            s._acquire()
        except Exception:
            if joined:
                self.leave(sensor)
            raise
        try:
            rings, live_state = s._buffers()
            for dst, src in zip(list(rings) + list(s._aux_buffers()), arrays):
                dst[row] = src[0]
            live_state[row] = st[0]
            s.ready[row] = False
        finally:
            s._release()

    # -- accounting -----------------------------------------------------------------
    @property
    def bytes_per_stream(self) -> int:
        """Ring buffers and counters one sensor holds (what its snapshot carries, in arrays)."""
        return self._lone.buffer_bytes

    def __repr__(self):
        return (f"<StreamPool {len(self)}/{self.capacity} sensors mode={self.mode!r} block={self.block} "
                f"frame_shape={self.frame_shape} output_shape={self.output_shape}>")
