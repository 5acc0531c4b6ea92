"""Stream snapshots: capture, check and restore a stream's complete state.

A snapshot is a dict of plain arrays (no Python objects), so it saves to a .npz without
pickle. It holds every ring buffer and counter of the stream plus a fingerprint of the
model and of the stream's layout; restoring it into a stream of the same model, mode,
batch and block continues bit-identically. Anything else is refused with StateError
before the stream is touched.
"""
from __future__ import annotations

import hashlib
import io
import struct
import zlib
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


def capture(stream, fingerprint=None) -> dict:
    """`fingerprint`: model_fingerprint(stream.model), if the caller has it already (it
    hashes every weight: most of a snapshot's cost for a small model)."""
    stream._acquire()  # no push may run while the arrays are copied
    try:
        return _capture(stream, fingerprint)
    finally:
        stream._release()


def _capture(stream, fingerprint=None) -> dict:
    rings, state = stream._buffers()
    fp = model_fingerprint(stream.model) if fingerprint is None else fingerprint
    snap = {"format": np.array(FORMAT), "version": np.array(VERSION, dtype=np.int64),
            "model": np.array(fp), "layout": np.array(_layout(stream)),
            "state": state.copy()}
    for i, ring in enumerate(rings):
        snap[f"ring.{i}"] = ring.copy()
    for i, arr in enumerate(stream._aux_buffers()):  # running sums of global averages
        snap[f"aux.{i}"] = arr.copy()
    return snap


def check(stream, snap, fingerprint=None) -> tuple:
    """Validate a snapshot against `stream`; return (rings + aux, state) arrays to copy in.
    `fingerprint`: model_fingerprint(stream.model), if the caller has it already."""
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
    if str(array("model")) != (model_fingerprint(stream.model) if fingerprint is None else fingerprint):
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
        if ring.dtype != now.dtype or ring.shape != now.shape:  # float32, or int8 in int8 plans
            raise StateError(f"snapshot 'ring.{i}': expected {now.dtype} {now.shape}, got {ring.dtype} {ring.shape}")
        rings.append(ring)
    aux = []
    for i, now in enumerate(aux_now):
        arr = array(f"aux.{i}")
        if arr.dtype != now.dtype or arr.shape != now.shape:
            raise StateError(f"snapshot 'aux.{i}': expected {now.dtype} {now.shape}, got {arr.dtype} {arr.shape}")
        # (batch, slots) int64: update counts; (batch, slots, channels) int64: an int8 plan's
        # exact running sums, which may be negative
        if arr.dtype == np.int64 and arr.ndim == 2 and (arr < 0).any():
            raise StateError(f"snapshot 'aux.{i}' holds a negative update count")
        if arr.dtype == np.float64 and not np.isfinite(arr).all():
            raise StateError(f"snapshot 'aux.{i}' holds non-finite running sums")
        aux.append(arr)
    return rings + aux, state


def to_bytes(snap: dict) -> bytes:
    """A snapshot as bytes of an .npz (uncompressed, no pickle: what save() writes, member
    for member), for keyed state stores, message queues and databases; from_bytes() reads
    it back, and so does np.load. Written directly rather than through np.savez, whose
    zipfile bookkeeping cost ~40 µs per array (a kws stream has 15): a streaming operator
    writes one snapshot per record (deepshift_edge.flink)."""
    out, central = [], []
    offset = 0
    for key, value in snap.items():
        arr = np.asarray(value)
        if arr.dtype.hasobject:
            raise StateError(f"snapshot {key!r} is an object array: refused (no pickle)")
        name = (key + ".npy").encode()
        header = _npy_header(arr.dtype.str, arr.shape)
        body = np.ascontiguousarray(arr).tobytes() if arr.ndim else arr.tobytes()
        size = len(header) + len(body)
        if size >= 0xFFFFFFFF or offset >= 0xFFFFFFFF:  # needs ZIP64: leave it to np.savez
            buf = io.BytesIO()
            np.savez(buf, **snap)
            return buf.getvalue()
        crc = zlib.crc32(body, zlib.crc32(header))
        out.append(_LOCAL.pack(0x04034B50, 20, 0, 0, 0, 0x21, crc, size, size, len(name), 0))
        out += [name, header, body]
        central.append(_CENTRAL.pack(0x02014B50, 20, 20, 0, 0, 0, 0x21, crc, size, size, len(name),
                                     0, 0, 0, 0, 0, offset) + name)
        offset += _LOCAL.size + len(name) + size
    cd = b"".join(central)
    out += [cd, _END.pack(0x06054B50, 0, 0, len(central), len(central), len(cd), offset, 0)]
    return b"".join(out)


_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_END = struct.Struct("<IHHHHIIH")
_HEADERS: dict = {}


def _npy_header(descr: str, shape: tuple) -> bytes:
    """The .npy (version 1.0) header np.save writes for an array of this dtype and shape."""
    key = (descr, shape)
    h = _HEADERS.get(key)
    if h is None:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
        h = _HEADERS[key] = buf.getvalue()
        if len(_HEADERS) > 4096:  # bounded: many models in one process
            _HEADERS.clear()
    return h


def from_bytes(data) -> dict:
    """Read a snapshot from to_bytes()'s bytes (or a .npz file's); StateError if they are
    not one. Never unpickles; the arrays still go through check() when restored.

    The stored, uncompressed zip that to_bytes() writes is parsed directly (np.load's
    zipfile machinery costs ~100 µs per array); anything else (a compressed or ZIP64
    archive, e.g. np.savez's own output) goes through np.load(allow_pickle=False)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise StateError(f"expected snapshot bytes, got {type(data).__name__}")
    raw = bytes(data)
    try:
        snap = _read_stored_zip(raw)
    except StateError:
        raise
    except Exception as exc:  # a malformed header, a bad dtype string, ...
        raise StateError(f"not a readable snapshot ({type(exc).__name__}: {exc})") from None
    if snap is not None:
        return snap
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except Exception as exc:  # not a zip, truncated, an object array, ...
        raise StateError(f"not a readable snapshot ({type(exc).__name__}: {exc})") from None


def _read_stored_zip(raw: bytes):
    """The members of a zip of stored .npy files with no extras (to_bytes' layout) as
    arrays; None when raw is laid out otherwise (the caller falls back to np.load)."""
    if len(raw) < _END.size:
        return None
    sig, _, _, n, n2, cd_size, cd_off, comment = _END.unpack_from(raw, len(raw) - _END.size)
    if sig != 0x06054B50 or comment or n != n2 or cd_off + cd_size != len(raw) - _END.size:
        return None
    snap, pos = {}, cd_off
    for _ in range(n):
        if pos + _CENTRAL.size > len(raw) - _END.size:
            raise StateError("not a readable snapshot (truncated central directory)")
        (sig, _, _, flags, method, _, _, crc, csize, size, nlen, elen, clen, _, _, _,
         off) = _CENTRAL.unpack_from(raw, pos)
        if sig != 0x02014B50:
            raise StateError("not a readable snapshot (bad central directory entry)")
        if method != 0 or flags or elen or clen or csize != size or 0xFFFFFFFF in (size, off):
            return None  # compressed, ZIP64, extras: np.load knows those
        name = raw[pos + _CENTRAL.size:pos + _CENTRAL.size + nlen]
        pos += _CENTRAL.size + nlen
        if off + _LOCAL.size + nlen + size > cd_off:
            raise StateError("not a readable snapshot (a member runs past the archive)")
        lsig, _, lflags, lmethod, _, _, lcrc, lcsize, lsize, lnlen, lelen = _LOCAL.unpack_from(raw, off)
        if (lsig, lflags, lmethod, lcrc, lcsize, lsize, lnlen, lelen) != (0x04034B50, 0, 0, crc, size, size, nlen, 0) \
                or raw[off + _LOCAL.size:off + _LOCAL.size + nlen] != name:
            return None
        start = off + _LOCAL.size + nlen
        body = raw[start:start + size]
        if zlib.crc32(body) != crc:
            raise StateError(f"not a readable snapshot (member {name!r} fails its CRC)")
        key = name.decode("utf-8", "replace")
        if not key.endswith(".npy") or key[:-4] in snap:
            raise StateError(f"not a readable snapshot (member {key!r})")
        snap[key[:-4]] = _read_npy(body, key)
    return snap


def _read_npy(body: bytes, key: str) -> np.ndarray:
    if body[:8] == b"\x93NUMPY\x01\x00" and len(body) >= 10:
        end = 10 + int.from_bytes(body[8:10], "little")
    elif body[:8] == b"\x93NUMPY\x02\x00" and len(body) >= 12:
        end = 12 + int.from_bytes(body[8:12], "little")
    else:
        raise StateError(f"not a readable snapshot ({key} is not a .npy of version 1 or 2)")
    head = body[:end]
    parsed = _PARSED.get(head)
    if parsed is None:  # parse once per layout (literal_eval is most of the cost)
        fh = io.BytesIO(head)
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(fh)
        if fh.tell() != end:
            raise StateError(f"not a readable snapshot ({key}: malformed .npy header)")
        if dtype.hasobject:
            raise StateError(f"not a readable snapshot ({key} holds Python objects: pickle refused)")
        count = 1
        for d in shape:
            count *= int(d)
        parsed = (shape, fortran, dtype, count)
        if len(_PARSED) > 4096:
            _PARSED.clear()
        _PARSED[head] = parsed
    shape, fortran, dtype, count = parsed
    if len(body) - end != count * dtype.itemsize:
        raise StateError(f"not a readable snapshot ({key}: {len(body) - end} bytes of data for "
                         f"shape {shape} {dtype})")
    arr = np.frombuffer(body, dtype=dtype, count=count, offset=end)
    return arr.reshape(shape, order="F" if fortran else "C").copy()


_PARSED: dict = {}


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
