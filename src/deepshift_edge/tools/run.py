"""``deepshift-edge run``: stream frames through a model as they arrive, one line per output.

Input (``--input``):

* ``-``: standard input, read line by line as lines arrive (a pipe from a sensor script);
* a text file (``.csv``, ``.txt``, anything but ``.npy``), line by line;
* a ``.npy`` file of shape ``(T, *frame_shape)`` (or ``(T, C*F)`` for 2-D frames);
* the name of a recording shipped with the package (``basicmotions``).

A text line holds one frame: its values separated by commas, semicolons or whitespace, or
a JSON array (``[0.1, 2, 3]``). Blank lines and lines starting with ``#`` are ignored; a
first line without any number is taken for a header. ``--columns`` picks the frame's
fields when a line holds more (a timestamp, a counter): field numbers from 1, ranges
(``2-7``) or header names (``ax,ay,az``), in frame order. Any other line that is not
exactly one finite frame (in float32's range) is *malformed*: a message naming the input
and the line number goes to stderr, and the line is skipped (``--on-error skip``, the
default: nothing is pushed, the stream goes on where it was) or the run stops with exit
status 1 (``--on-error stop``). A binary input (a model file, random bytes) is refused
before any line is read; a run in which no frame was valid exits with status 1.

Output (stdout, flushed after every line so it works in a pipe): one line per output of
the model, CSV with a header or JSON lines. A classifier (a model ending in ``Softmax``)
prints the class index, its label (``--labels``, else the model file's own labels; no
``label`` column when there are none) and its score;
other models print the output values. ``frame`` is the index of the frame the output
belongs to (0-based count of frames pushed), ``line`` (text input, from 1) or ``row``
(``.npy``, from 0) where that frame came from. ``--latency`` adds the time of the ``push`` that produced the
output, in µs, and a p50/p90/p99 summary at the end. A summary always goes to stderr.

``--rate HZ`` paces the frames at a sensor's rate: each push waits for the next tick of a
``HZ`` clock (with ``-``, frames are never pushed before they arrive; a frame more than one
period late is pushed at once, counted, and the clock restarts from it).
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np

__all__ = ["parse_frame", "parse_columns", "MalformedFrame", "BinaryInput", "run", "add_arguments",
           "Printer"]

_SPLIT_DELIM = re.compile(r"[,;]")
_LATENCY_KEEP = 1 << 16   # the summary covers the last 65,536 frames (bounded memory)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# Bytes that never occur in text (NUL and the C0 controls other than tab, newlines, form
# feed and escape): one of them in the first block means a binary file, not frames.
_BINARY_BYTES = bytes(set(range(32)) - {9, 10, 11, 12, 13, 27})


class MalformedFrame(ValueError):
    """A line that is not exactly one finite frame; the message says why."""


class BinaryInput(ValueError):
    """The input is a binary file (a model file, an archive, random bytes), not text frames."""


def _split(s: str) -> list:
    return [f.strip() for f in _SPLIT_DELIM.split(s)] if _SPLIT_DELIM.search(s) else s.split()


def parse_frame(text: str, size: int, columns: Optional[Sequence[int]] = None) -> np.ndarray:
    """The ``size`` values of one text line as float64 (raises :class:`MalformedFrame`).

    ``columns``: 0-based indices of the fields that make the frame, in order (the other
    fields are ignored, and need not be numbers)."""
    s = text.strip()
    if s.startswith("["):
        try:
            doc = json.loads(s)
        except ValueError as exc:
            raise MalformedFrame(f"not a valid JSON array ({exc})") from None
        try:
            values = np.asarray(doc, dtype=np.float64).ravel()
        except (TypeError, ValueError, OverflowError):
            raise MalformedFrame("the JSON array must hold numbers only (a flat or nested list "
                                 "of equal lengths)") from None
        if columns is not None:
            if values.size <= max(columns):
                raise MalformedFrame(f"the JSON array has {values.size} values; --columns needs "
                                     f"value {max(columns) + 1}")
            values = values[list(columns)]
    else:
        fields = _split(s)
        numbers = range(len(fields))
        if columns is not None:
            if len(fields) <= max(columns):
                raise MalformedFrame(f"the line has {len(fields)} fields; --columns needs field "
                                     f"{max(columns) + 1}")
            numbers = columns
        hint = _columns_hint(len(fields), size) if columns is None else ""
        values = np.empty(len(numbers))
        for j, i in enumerate(numbers):
            field = fields[i]
            if not field:
                raise MalformedFrame(f"field {i + 1} is empty{hint}")
            try:
                values[j] = float(field)
            except ValueError:
                shown = field if len(field) <= 20 else field[:17] + "..."
                raise MalformedFrame(f"field {i + 1} ({shown!r}) is not a number{hint}") from None
    if values.size != size:
        hint = _columns_hint(values.size, size) if columns is None else ""
        raise MalformedFrame(f"expected {size} values, got {values.size}{hint}")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise MalformedFrame(f"value {bad[0] + 1} is {values[bad[0]]}; NaN/Inf are refused")
    big = np.flatnonzero(np.abs(values) > _FLOAT32_MAX)
    if big.size:
        raise MalformedFrame(f"value {big[0] + 1} ({values[big[0]]:g}) overflows float32 (largest "
                             f"finite: 3.4028235e+38)")
    return values


def _columns_hint(n_fields: int, size: int) -> str:
    if n_fields <= size:
        return ""
    return (f" (the line has {n_fields} fields for a frame of {size}: pick the frame's fields with "
            f"--columns, by number or header name, e.g. --columns {n_fields - size + 1}-{n_fields})")


def parse_columns(spec: str) -> list:
    """``--columns``: comma-separated field numbers from 1 (``3``), ranges (``2-7``) or header
    names; returns 0-based ints and names (str), in order."""
    items = []
    for part in (p.strip() for p in spec.split(",")):
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if part.isdigit():
            if int(part) < 1:
                raise ValueError(f"--columns: field numbers start at 1, got {part}")
            items.append(int(part) - 1)
        elif m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if not 1 <= lo <= hi:
                raise ValueError(f"--columns: expected a range FIRST-LAST with 1 <= FIRST <= LAST, "
                                 f"got {part}")
            items += range(lo - 1, hi)
        elif part:
            items.append(part)
        else:
            raise ValueError(f"--columns: empty item in {spec!r}")
    if len(set(items)) != len(items):
        raise ValueError(f"--columns: {spec!r} names a field twice")
    return items


def _resolve_columns(items: list, header: Optional[list], source: str) -> list:
    names = [c for c in items if isinstance(c, str)]
    if not names:
        return items
    if header is None:
        raise ValueError(f"--columns names {names}, but {source} has no header line to find them "
                         f"in; give field numbers instead (from 1)")
    fields = [f.strip().strip('"').strip("'") for f in header]
    out = []
    for c in items:
        if isinstance(c, int):
            out.append(c)
        elif c in fields:
            out.append(fields.index(c))
        else:
            raise ValueError(f"--columns: no column {c!r} in the header of {source} (it has "
                             f"{fields})")
    return out


def _looks_binary(chunk: bytes) -> Optional[str]:
    """What a binary chunk looks like (None for text)."""
    if chunk.startswith(b"PK\x03\x04") or chunk.startswith(b"PK\x05\x06"):
        return "a zip archive (a .npz model file?)"
    if chunk.startswith(b"\x93NUMPY"):
        return "a .npy array"
    if chunk.startswith(b"\x1f\x8b"):
        return "gzip-compressed data"
    if chunk.startswith(b"\x80") and chunk[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickled data"
    if any(b in _BINARY_BYTES for b in chunk):
        return "binary data"
    return None


class _Header(str):
    """A header line (yielded in place of a frame)."""


def _is_header(text: str) -> bool:
    fields = [f for f in re.split(r"[,;\s]+", text.strip()) if f]
    for f in fields:
        try:
            float(f)
            return False
        except ValueError:
            pass
    return bool(fields) and not text.strip().startswith("[")


# ----------------------------------------------------------------------------- sources
def _text_lines(fh, source: str) -> Iterator[Tuple[int, object]]:
    """(line number, str, _Header or MalformedFrame) for each non-blank, non-comment line,
    read one line at a time (a pipe yields each line as soon as it is written). Raises
    :class:`BinaryInput` if the first line is binary."""
    binary = hasattr(fh, "buffer")
    raw_fh = fh.buffer if binary else fh
    lineno = 0
    header_possible = True
    while True:
        raw = raw_fh.readline()
        if not raw:
            return
        lineno += 1
        if lineno == 1 and isinstance(raw, bytes):
            what = _looks_binary(raw[:4096])
            if what:
                raise BinaryInput(f"{source} holds {what}, not frames: --input takes text lines "
                                  f"(CSV or JSON arrays), a .npy array, or '-' for standard input")
        if isinstance(raw, bytes):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                header_possible = False
                yield lineno, MalformedFrame("not valid UTF-8 text")
                continue
        else:
            line = raw
        if lineno == 1:
            line = line.lstrip("\ufeff")
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if header_possible:
            header_possible = False
            if _is_header(s):
                yield lineno, _Header(s)
                continue
        yield lineno, s


def _npy_rows(path: str, frame_shape: tuple, columns=None):
    """(row index, frame) of a .npy file, memory-mapped; its shape is checked before any row.
    ``columns`` (0-based ints) picks the frame's columns of a 2-D array."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:  # object arrays, a corrupt header
        raise ValueError(f"{path}: not a readable .npy array ({exc})") from None
    size = int(np.prod(frame_shape))
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{path}: expected a numeric array, got dtype {arr.dtype}")
    if columns is not None:
        if any(isinstance(c, str) for c in columns):
            raise ValueError(f"--columns: a .npy array has no header; give column numbers (from 1)")
        if arr.ndim != 2 or arr.shape[1] <= max(columns):
            raise ValueError(f"{path}: --columns needs a 2-D array (T, K) with K >= "
                             f"{max(columns) + 1}, got shape {arr.shape}")
        arr = arr[:, list(columns)]
    if arr.ndim >= 1 and arr.shape[1:] == frame_shape:
        pass
    elif arr.ndim == 2 and arr.shape[1] == size:
        arr = arr.reshape((arr.shape[0],) + frame_shape)
    else:
        raise ValueError(f"{path}: expected an array of shape (T, {', '.join(map(str, frame_shape))}) "
                         f"for frames of shape {frame_shape}, got {arr.shape}")
    return ((i, arr[i]) for i in range(arr.shape[0]))


# ----------------------------------------------------------------------------- output
class Printer:
    """Formats one output per line as CSV (with a header) or JSON lines."""

    def __init__(self, out, fmt: str, kind: str, where: str, labels: Optional[Sequence[str]],
                 output_shape: tuple, latency: bool):
        self.out, self.fmt, self.kind, self.where = out, fmt, kind, where
        self.labels, self.latency = labels, latency
        self.size = int(np.prod(output_shape))

    def header(self):
        """The CSV header line (written before the first frame is read); nothing for JSON lines."""
        if self.fmt != "csv":
            return
        cols = ["frame", self.where]
        if self.kind == "class":
            cols += ["class"] + (["label"] if self.labels else []) + ["score"]
        else:
            cols += [f"y{i}" for i in range(self.size)]
        if self.latency:
            cols.append("latency_us")
        self.out.write(",".join(cols) + "\n")
        self.out.flush()

    def write(self, frame: int, where: int, y: np.ndarray, latency_us: float):
        if self.fmt == "csv":
            parts = [str(frame), str(where)]
            if self.kind == "class":
                k = int(np.argmax(y))
                parts.append(str(k))
                if self.labels:
                    parts.append(_csv_field(self.labels[k]))
                parts.append(f"{float(y.flat[k]):.6g}")
            else:
                parts += [f"{float(v):.6g}" for v in y.flat]
            if self.latency:
                parts.append(f"{latency_us:.1f}")
            self.out.write(",".join(parts) + "\n")
        else:
            rec = {"frame": frame, self.where: where}
            if self.kind == "class":
                k = int(np.argmax(y))
                rec["class"] = k
                if self.labels:
                    rec["label"] = self.labels[k]
                rec["score"] = _short_float(y.flat[k])
            else:
                rec["values"] = _nested(y)
            if self.latency:
                rec["latency_us"] = round(latency_us, 1)
            self.out.write(json.dumps(rec) + "\n")
        self.out.flush()


def _csv_field(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def _short_float(v) -> float:
    return float(f"{float(v):.6g}")


def _nested(y: np.ndarray):
    if y.ndim == 0:
        return _short_float(y)
    return [_nested(v) for v in y] if y.ndim > 1 else [_short_float(v) for v in y]


def _output_kind(model, requested: str) -> str:
    from ..nn import layers as L

    if requested != "auto":
        return requested
    last = model.layers[-1] if model.layers else None
    return "class" if isinstance(last, L.Softmax) and len(model.output_shape) == 1 \
        and model.output_shape[0] >= 2 else "values"


# ----------------------------------------------------------------------------- the loop
def add_arguments(p) -> None:
    from .cli import MODEL_HELP
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--input", "-i", required=True,
                   help="'-' for standard input, a text/CSV file, a .npy file (T, *frame_shape), "
                        "or a shipped recording: basicmotions")
    p.add_argument("--columns", default=None, metavar="SPEC",
                   help="the fields that make a frame, in order, when a line holds more (e.g. a "
                        "timestamp): numbers from 1, ranges, or header names, e.g. 2-7 or "
                        "ax,ay,az,gx,gy,gz (a .npy input: its columns)")
    p.add_argument("--rate", type=float, default=None,
                   help="pace frames at this sensor rate in Hz (default: as fast as they come)")
    p.add_argument("--format", default="csv", choices=["csv", "jsonl"], help="output format")
    p.add_argument("--latency", action="store_true",
                   help="add each output's push latency (µs) and a p50/p90/p99 summary")
    p.add_argument("--on-error", default="skip", choices=["skip", "stop"],
                   help="a malformed line: report it and skip it (default), or stop (exit 1)")
    p.add_argument("--output", default="auto", choices=["auto", "class", "values"],
                   help="class index + score, or the raw values (auto: class for a model that "
                        "ends in Softmax)")
    p.add_argument("--labels", default=None,
                   help="comma-separated class names (default: the model file's own, if it has them)")
    p.add_argument("--mode", default="dense", choices=["dense", "decimated"],
                   help="an output every frame, or every `hop` frames")


def run(args, stdin=None, stdout=None, stderr=None) -> int:
    """Run ``deepshift-edge run`` with parsed ``args``; returns the exit status."""
    from ..data import datasets
    from ..errors import StreamInputError
    from ..formats.npz import load

    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    if args.rate is not None and not (args.rate > 0 and np.isfinite(args.rate)):
        stderr.write(f"deepshift-edge run: error: --rate must be a positive number of Hz, got {args.rate}\n")
        return 2

    model = load(args.model)
    stream = model.stream(mode=args.mode)
    kind = _output_kind(model, args.output)
    labels = None
    if args.labels is not None:
        labels = [s.strip() for s in args.labels.split(",")]
    elif kind == "class":
        labels = getattr(model, "labels", None)  # the model file's own class names
    if labels is not None and kind == "class" and len(labels) != int(np.prod(model.output_shape)):
        stderr.write(f"deepshift-edge run: error: --labels gives {len(labels)} names for the "
                     f"{int(np.prod(model.output_shape))} classes of {args.model}\n")
        return 2

    frame_shape = tuple(model.frame_shape)
    size = int(np.prod(frame_shape))
    columns = getattr(args, "columns", None)
    if columns is not None:
        columns = parse_columns(columns)
        if len(columns) != size:
            stderr.write(f"deepshift-edge run: error: --columns picks {len(columns)} fields, but a "
                         f"frame of {args.model} has {size} values\n")
            return 2
    source = args.input
    label = "stdin" if source == "-" else source  # names the input in every message
    opened = None
    if source == "-":
        items, where = _text_lines(stdin, label), "line"
    else:
        source = datasets.resolve_recording(source)
        if not source.lower().endswith(".npy"):
            opened = open(source, "rb")
            what = _looks_binary(opened.read(4096))
            opened.seek(0)
            if what == "a .npy array":  # a .npy file under another name
                opened.close()
                opened = None
            elif what:
                opened.close()
                raise BinaryInput(f"{label} holds {what}, not frames: --input takes text lines "
                                  f"(CSV or JSON arrays), a .npy array, or '-' for standard input")
        if opened is None:
            items, where = _npy_rows(source, frame_shape, columns), "row"
        else:
            items, where = _text_lines(opened, label), "line"
    text_columns = columns if where == "line" else None
    if text_columns is not None and not any(isinstance(c, str) for c in text_columns):
        text_columns_ready = text_columns
    else:
        text_columns_ready = None

    printer = Printer(stdout, args.format, kind, where, labels, model.output_shape, args.latency)
    buf = np.empty(frame_shape, dtype=np.float32)
    flat = buf.reshape(-1)
    lat = np.empty(_LATENCY_KEEP)
    clock = time.perf_counter_ns
    period = None if args.rate is None else 1e9 / args.rate
    next_tick = clock()
    pushed = outputs = late = n_skipped = 0
    skipped = []  # the first few, for the summary
    status = 0

    def malformed(where_no, why) -> bool:
        """Report; True if the run must stop."""
        action = "stopping" if args.on_error == "stop" else "skipped"
        stderr.write(f"deepshift-edge run: {label}, {where} {where_no}: {why} ({action})\n")
        stderr.flush()
        nonlocal n_skipped
        n_skipped += 1
        if len(skipped) < 10:
            skipped.append(where_no)
        return args.on_error == "stop"

    try:
        printer.header()
        for where_no, item in items:
            if isinstance(item, _Header):
                if text_columns is not None:
                    text_columns_ready = _resolve_columns(text_columns, _split(item), label)
                continue
            if text_columns is not None and text_columns_ready is None:
                _resolve_columns(text_columns, None, label)  # names but no header: raises
            if isinstance(item, MalformedFrame):
                if malformed(where_no, item):
                    status = 1
                    break
                continue
            try:
                if isinstance(item, str):
                    flat[:] = parse_frame(item, size, text_columns_ready)
                else:
                    with np.errstate(over="ignore", invalid="ignore"):
                        np.copyto(buf, item, casting="unsafe")
                    if not np.isfinite(buf).all():
                        raise MalformedFrame("the frame holds NaN or Inf, or a value past "
                                             "float32's range; refused")
            except MalformedFrame as exc:
                if malformed(where_no, exc):
                    status = 1
                    break
                continue
            if period is not None:
                next_tick += period
                delay = next_tick - clock()
                if delay > 0:
                    time.sleep(delay / 1e9)
                elif delay < -period:
                    late += 1
                    next_tick = clock()
            t0 = clock()
            try:
                y = stream.push(buf)
            except StreamInputError as exc:  # not expected after parsing; never push twice
                if malformed(where_no, exc):
                    status = 1
                    break
                continue
            dt = (clock() - t0) / 1000.0
            lat[pushed % _LATENCY_KEEP] = dt
            pushed += 1
            if y is not None:
                outputs += 1
                printer.write(pushed - 1, where_no, y, dt)
    except KeyboardInterrupt:
        status = 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, without a traceback at exit.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stdout.fileno())
        except (OSError, AttributeError, ValueError):
            pass
        return 0
    except (BinaryInput, ValueError) as exc:  # a binary stdin, --columns names not found
        stderr.write(f"deepshift-edge run: error: {exc}\n")
        status = 1
    finally:
        if opened is not None:
            opened.close()

    summary = (f"deepshift-edge run: {pushed} frame{'' if pushed == 1 else 's'} pushed, {outputs} "
               f"output{'' if outputs == 1 else 's'}")
    if n_skipped:
        shown = ", ".join(map(str, skipped)) + (", ..." if n_skipped > len(skipped) else "")
        summary += f", {n_skipped} malformed {where}(s) ({shown})"
    if late:
        summary += f", {late} frames behind the {args.rate:g} Hz clock"
    stderr.write(summary + "\n")
    if status == 0 and pushed == 0 and n_skipped:
        stderr.write(f"deepshift-edge run: error: no valid frame in {label}: every {where} was "
                     f"malformed (see above)\n")
        status = 1
    if args.latency and pushed:
        from .timing import summarize
        s = summarize(lat[:min(pushed, _LATENCY_KEEP)])
        stderr.write(f"deepshift-edge run: push latency over the last {s['n']} frames (µs): "
                     f"p50 {s['p50_us']:.1f}, p90 {s['p90_us']:.1f}, p99 {s['p99_us']:.1f}, "
                     f"max {s['max_us']:.1f}\n")
    stderr.flush()
    return status
