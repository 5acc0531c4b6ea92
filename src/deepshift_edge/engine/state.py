"""Stream snapshots: capture, check and restore a stream's complete state.

A snapshot is a dict of plain arrays (no Python objects), so it saves to a .npz without
pickle. It holds every ring buffer and counter of the stream plus a fingerprint of the
model and of the stream's layout; restoring it into a stream of the same model, mode,
batch and block continues bit-identically. Anything else is refused with StateError
before the stream is touched.
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from .._atomic import atomic_write
from ..errors import StateError

FORMAT = "deepshift_edge.state"
VERSION = 1
MAX_FRAMES = 1 << 62  # a frame counter beyond this is corrupt (a century at 1 GHz)


def model_fingerprint(model) -> str:
    """sha256 over the model's graph (every node's name, type, hyper-parameters and
    inputs), frame shape, window, semantics and every weight's bytes."""
    h = hashlib.sha256()
    h.update(json.dumps({"in": model.in_features, "window": model.window,
                         "semantics": model.semantics}, sort_keys=True).encode())
    for node in model.nodes:
        layer = node.layer
        h.update(json.dumps({"name": node.name, "inputs": list(node.inputs),
                             "type": "Input" if layer is None else type(layer).__name__,
                             "config": {} if layer is None else layer.config()},
                            sort_keys=True, default=str).encode())
        for name, arr in sorted(({} if layer is None else layer.params()).items()):
            h.update(name.encode())
            h.update(np.ascontiguousarray(arr, dtype=np.float32).tobytes())
    return h.hexdigest()


def _layout(stream) -> str:
    rings, state = stream._buffers()
    return json.dumps({"mode": stream.mode, "batch": stream.batch, "batched": bool(stream.batched),
                       "block": stream.plan.block, "rings": [list(r.shape) for r in rings],
                       "aux": [[str(a.dtype)] + list(a.shape) for a in stream._aux_buffers()],
                       "state": list(state.shape)})


def capture(stream) -> dict:
    stream._acquire()  # no push may run while the arrays are copied
    try:
        return _capture(stream)
    finally:
        stream._release()


def _capture(stream) -> dict:
    rings, state = stream._buffers()
    snap = {"format": np.array(FORMAT), "version": np.array(VERSION, dtype=np.int64),
            "model": np.array(model_fingerprint(stream.model)), "layout": np.array(_layout(stream)),
            "state": state.copy()}
    for i, ring in enumerate(rings):
        snap[f"ring.{i}"] = ring.copy()
    for i, arr in enumerate(stream._aux_buffers()):  # running sums of global averages
        snap[f"aux.{i}"] = arr.copy()
    return snap


def check(stream, snap) -> tuple:
    """Validate a snapshot against `stream`; return (rings, state, aux) arrays to copy in."""
    if not isinstance(snap, dict) and not hasattr(snap, "files"):
        raise StateError(f"expected a snapshot dict from stream.state(), got {type(snap).__name__}")
    keys = set(snap.files if hasattr(snap, "files") else snap.keys())

    def get(key):
        if key not in keys:
            raise StateError(f"snapshot has no {key!r} entry")
        return snap[key]

    def array(key):
        try:
            return np.asarray(get(key))
        except StateError:
            raise
        except Exception as exc:  # ragged lists, object members of an NpzFile, ...
            raise StateError(f"snapshot {key!r}: not an array ({type(exc).__name__}: {exc})") from None

    fmt, version = str(array("format")), array("version")
    if fmt != FORMAT:
        raise StateError(f"not a stream snapshot: format {fmt!r}, expected {FORMAT!r}")
    if version.shape != () or version.dtype.kind not in "iu" or int(version) != VERSION:
        raise StateError(f"snapshot version {version.tolist()!r} is not supported (expected {VERSION})")
    if str(array("model")) != model_fingerprint(stream.model):
        raise StateError("snapshot was taken from a different model (weights or structure differ)")
    want_layout = _layout(stream)
    if str(array("layout")) != want_layout:
        raise StateError(f"snapshot was taken from a stream with another layout: "
                         f"{str(get('layout'))} , this stream has {want_layout}")
    rings_now, state_now = stream._buffers()
    aux_now = stream._aux_buffers()
    expected = ({f"ring.{i}" for i in range(len(rings_now))} | {f"aux.{i}" for i in range(len(aux_now))}
                | {"format", "version", "model", "layout", "state"})
    if keys != expected:
        raise StateError(f"snapshot entries {sorted(keys - expected)} unexpected, {sorted(expected - keys)} missing")
    state = array("state")
    if state.dtype != np.int64 or state.shape != state_now.shape:
        raise StateError(f"snapshot 'state': expected int64 {state_now.shape}, got {state.dtype} {state.shape}")
    # Ring heads index the buffers: out-of-range values would read outside them.
    ring_lens = np.array([nd.ring for nd in stream.plan.nodes], dtype=np.int64)
    heads = state[:, 1:]
    if (state[:, 0] < 0).any() or (heads < 0).any() or (heads >= ring_lens[None, :]).any():
        raise StateError("snapshot 'state' holds a negative frame count or a ring position out of range")
    if (state[:, 0] > MAX_FRAMES).any():  # t + n must not overflow int64 in push_many
        raise StateError("snapshot 'state' holds a frame count above 2**62: corrupt")
    rings = []
    for i, now in enumerate(rings_now):
        ring = array(f"ring.{i}")
        if ring.dtype != np.float32 or ring.shape != now.shape:
            raise StateError(f"snapshot 'ring.{i}': expected float32 {now.shape}, got {ring.dtype} {ring.shape}")
        rings.append(ring)
    aux = []
    for i, now in enumerate(aux_now):
        arr = array(f"aux.{i}")
        if arr.dtype != now.dtype or arr.shape != now.shape:
            raise StateError(f"snapshot 'aux.{i}': expected {now.dtype} {now.shape}, got {arr.dtype} {arr.shape}")
        if arr.dtype == np.int64 and (arr < 0).any():
            raise StateError(f"snapshot 'aux.{i}' holds a negative update count")
        if arr.dtype == np.float64 and not np.isfinite(arr).all():
            raise StateError(f"snapshot 'aux.{i}' holds non-finite running sums")
        aux.append(arr)
    return rings + aux, state


def save(snap: dict, path) -> None:
    """Atomic: a crash during the save leaves the previous file intact (see _atomic)."""
    atomic_write(path, lambda fh: np.savez(fh, **snap), prefix=".dse-state-")


def load(path) -> dict:
    try:
        with np.load(os.fspath(path), allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, KeyError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise StateError(f"{os.fspath(path)}: not a readable snapshot file ({exc})") from exc
    except Exception as exc:  # zipfile.BadZipFile and friends
        raise StateError(f"{os.fspath(path)}: not a readable snapshot file ({type(exc).__name__}: {exc})") from exc
