"""deepshift_edge on Apache Flink (PyFlink DataStream API): one stream per sensor id, its
state in Flink's keyed state (issue 14; docs/fleet.md).

Optional: ``pip install "deepshift-edge[flink]"`` (PyFlink, and a Java 11/17 runtime for
its JVM). Nothing else in the package imports this module.

The operator is a :class:`KeyedProcessFunction` over a stream keyed by sensor id. Each
sensor's stream state lives in a ``ValueState`` of ``bytes`` (Flink's ``byte[]``
serializer, not pickle) holding the library's own snapshot format: exactly
``StreamPool.snapshot(id)`` / ``engine.state.to_bytes(stream.state())``, a .npz a lone
``model.stream(mode=..., block=...)`` restores. So Flink's checkpoints carry every
sensor's stream, a restart after a failure continues each from the last checkpoint, and
a job restored from a savepoint at another parallelism moves each sensor's state with
its key group.

Records in: ``(sensor_id: str, first_frame: int, frames: bytes)`` (:data:`FRAMES_TYPE`),
frames the float32 C-order bytes of (n, *frame_shape): one frame or a block of frames
(pushed as ``push_many``: weights reused across the block). ``first_frame`` is the index
of the block's first frame in that sensor's stream, or -1 to skip the check: frames the
state already holds (a replay) are dropped, a gap raises.

Records out: ``(sensor_id, frame, count, outputs: bytes)`` (:data:`OUTPUTS_TYPE`): the
float32 bytes of (count, *output_shape), the outputs of frames ``frame, frame + hop, ...``
(``hop`` 1 in dense mode); one per input record that produced any.

Inside a task the function keeps up to ``cache`` sensors' streams live in a
:class:`~deepshift_edge.StreamPool` and restores a stream from its keyed state only on the
sensor's first record in that task (after a start, a restart or a rescale) or after an
eviction, so the steady state costs a push, one snapshot and one state update per record.
"""
from __future__ import annotations

import io
import os
from collections import OrderedDict
from typing import Optional

import numpy as np

try:
    from pyflink.common import Types
    from pyflink.datastream import KeyedProcessFunction, RuntimeContext
    from pyflink.datastream.state import ValueStateDescriptor
except ImportError as exc:  # pragma: no cover - exercised where PyFlink is absent
    raise ImportError("deepshift_edge.flink needs PyFlink: pip install 'deepshift-edge[flink]' (and a Java "
                      f"11/17 runtime for its JVM); the rest of deepshift_edge works without it ({exc})") from exc

from . import load as _load_model
from . import save as _save_model
from .engine.pool import StreamPool
from .errors import StreamInputError

__all__ = ["StreamFunction", "stream_sensors", "stop_with_savepoint", "FRAMES_TYPE", "OUTPUTS_TYPE", "STATE_TYPE",
           "frames_record", "decode_outputs"]

#: (sensor_id, first_frame, float32 frame bytes)
FRAMES_TYPE = Types.TUPLE([Types.STRING(), Types.LONG(), Types.PRIMITIVE_ARRAY(Types.BYTE())])
#: (sensor_id, frame of the first output, number of outputs, float32 output bytes)
OUTPUTS_TYPE = Types.TUPLE([Types.STRING(), Types.LONG(), Types.INT(), Types.PRIMITIVE_ARRAY(Types.BYTE())])
#: the keyed state: one snapshot (the .npz bytes of engine.state.to_bytes) per sensor
STATE_TYPE = Types.PRIMITIVE_ARRAY(Types.BYTE())


def frames_record(sensor: str, first_frame: int, frames) -> tuple:
    """An input record for `sensor`: frames (n, *frame_shape) or one frame (*frame_shape)."""
    arr = np.ascontiguousarray(frames, dtype=np.float32)
    return (str(sensor), int(first_frame), arr.tobytes())


def decode_outputs(record, output_shape) -> tuple:
    """(sensor_id, frame, outputs (count, *output_shape) float32) of an output record."""
    sensor, frame, count, blob = record
    out = np.frombuffer(bytes(blob), dtype=np.float32).reshape((int(count),) + tuple(output_shape))
    return sensor, int(frame), out


def _model_bytes(model) -> bytes:
    if isinstance(model, (str, os.PathLike)):
        with open(model, "rb") as fh:
            return fh.read()
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    buf = io.BytesIO()
    _save_model(model, buf)  # the model file format (docs/format.md), float or int8
    return buf.getvalue()


class StreamFunction(KeyedProcessFunction):
    """Streams `model` per key (sensor id) with its state in Flink keyed state.

    ``model``: a model, a path to a model file, or its bytes (shipped to the workers as the
    file's bytes). ``mode``/``block``: as ``model.stream()``; they fix the snapshot layout,
    so keep them across savepoints. ``block`` (8) is the most frames push_many runs per
    pass over the weights here: larger blocks of a record are run 8 frames at a time, and a
    larger ``block`` only adds ring rows to every snapshot (kws: 97 kB at 8, 287 kB at 64).
    ``cache``: sensors kept live per task (an LRU; the others are restored from their keyed
    state when their next record comes). ``verify_state``: read each record's keyed state
    and compare it with the live stream's last snapshot (only needed if something else
    may write this state).
    """

    def __init__(self, model, mode: str = "dense", block: int = 8, cache: int = 1024,
                 state_name: str = "deepshift_edge.stream", verify_state: bool = False):
        self._model_file = _model_bytes(model)
        self.mode, self.block, self.cache, self.state_name = mode, int(block), int(cache), state_name
        self.verify_state = bool(verify_state)
        self._pool: Optional[StreamPool] = None

    # Flink calls open() on each parallel instance, after a restart too: everything live
    # is rebuilt from the keyed state.
    def open(self, runtime_context: RuntimeContext):
        model = _load_model(io.BytesIO(self._model_file))
        self._pool = StreamPool(model, capacity=self.cache, mode=self.mode, block=self.block)
        self._frame_shape = self._pool.frame_shape
        self._frame_size = int(np.prod(self._frame_shape))
        self._window = self._pool.window
        self._hop = self._pool._stream.hop
        # LRU of the sensors live in the pool (-> the bytes last written, if verify_state)
        self._live_ids: "OrderedDict[str, Optional[bytes]]" = OrderedDict()
        self._state = runtime_context.get_state(ValueStateDescriptor(self.state_name, STATE_TYPE))
        self.joined = 0    # sensors started fresh in this task
        self.restored = 0  # sensors restored from their keyed state in this task

    def close(self):
        self._pool = None
        self._live_ids = OrderedDict()

    def _live(self, sensor: str) -> int:
        """Make the pool's stream for `sensor` the one in its keyed state; its frame count.

        Within one open() the keyed state of a sensor changes only by this function's own
        update(): Flink restores state (after a failure, from a savepoint, when rescaling)
        only into a task that starts afresh, and then open() runs again with an empty pool.
        So a sensor live in the pool is read from the state only on its first record here,
        or after it was evicted; verify_state=True reads and compares it on every record."""
        pool, live = self._pool, self._live_ids
        if sensor in live and not self.verify_state:
            live.move_to_end(sensor)
            return pool.frames(sensor)
        blob = self._state.value()
        blob = None if blob is None else bytes(blob)
        if sensor in live:
            if blob == live[sensor]:
                live.move_to_end(sensor)
                return pool.frames(sensor)
            pool.leave(sensor)
            del live[sensor]
        elif len(pool) == pool.capacity:  # evict the least recently used (its state is in Flink)
            old, _ = live.popitem(last=False)
            pool.leave(old)
        if blob is None:  # a new sensor
            pool.join(sensor)
            self.joined += 1
        else:
            pool.restore(sensor, blob)
            self.restored += 1
        live[sensor] = blob if self.verify_state else None
        return pool.frames(sensor)

    def process_element(self, value, ctx: "KeyedProcessFunction.Context"):
        sensor = ctx.get_current_key()
        _, first, data = value
        frames = np.frombuffer(bytes(data), dtype=np.float32)
        if frames.size % self._frame_size:
            raise StreamInputError(f"sensor {sensor!r}: a record of {frames.size} floats is not a "
                                   f"whole number of frames of shape {self._frame_shape}")
        frames = frames.reshape((-1,) + self._frame_shape)
        have = self._live(sensor)
        if first >= 0:
            if first > have:
                raise StreamInputError(f"sensor {sensor!r}: frames {have}..{first - 1} are missing (the "
                                       f"record starts at frame {first}); a stream needs every frame")
            frames = frames[have - first:]  # frames already in the state: a replay, dropped
        if len(frames) == 0:
            return
        outs = self._pool.push_many(sensor, frames)
        blob = self._pool.snapshot(sensor)
        self._state.update(blob)
        if self.verify_state:
            self._live_ids[sensor] = blob
        if len(outs):
            # the first frame of this push that emits: frames t >= window - 1 on the hop grid
            lo = max(have, self._window - 1)
            lo += (-(lo - (self._window - 1))) % self._hop
            yield sensor, lo, len(outs), outs.tobytes()


def stop_with_savepoint(job_client, directory: str, drain: bool = False, timeout: Optional[float] = None) -> str:
    """Stop a running job (``env.execute_async()``'s JobClient) with a savepoint in
    `directory`; returns the savepoint's path, for ``execution.state-recovery.path``.

    PyFlink's ``JobClient.stop_with_savepoint`` (2.x) calls a Java signature that Flink
    no longer has (the savepoint format argument is required since Flink 1.15), so this
    calls the current one, in Flink's canonical savepoint format."""
    from pyflink.java_gateway import get_gateway
    fmt = get_gateway().jvm.org.apache.flink.core.execution.SavepointFormatType.CANONICAL
    future = job_client._j_job_client.stopWithSavepoint(bool(drain), directory, fmt)
    return str(future.get() if timeout is None else
               future.get(int(timeout * 1000), get_gateway().jvm.java.util.concurrent.TimeUnit.MILLISECONDS))


def stream_sensors(records, model, mode: str = "dense", block: int = 8, cache: int = 1024,
                   uid: str = "deepshift_edge.stream"):
    """records (a DataStream of FRAMES_TYPE) keyed by sensor id, through StreamFunction;
    returns the DataStream of OUTPUTS_TYPE. The operator's uid names its state in
    savepoints: keep it when the job changes."""
    keyed = records.key_by(lambda r: r[0], key_type=Types.STRING())
    return keyed.process(StreamFunction(model, mode=mode, block=block, cache=cache),
                         output_type=OUTPUTS_TYPE).uid(uid).name("deepshift_edge streams")
