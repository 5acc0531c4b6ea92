"""Live predictions from a sensor on a serial port (e.g. a microcontroller printing one CSV
line per sample: ``ax,ay,az,gx,gy,gz``).

    pip install "deepshift-edge[serial]"            # pyserial
    python examples/serial_sensor.py /dev/ttyACM0 --baud 115200
    python examples/serial_sensor.py --replay basicmotions   # no hardware: replay a recording

Without pyserial, the same loop runs on anything with ``readline()``: ``predictions()``
takes the port as a parameter, which is how the tests feed it a fake device.
(``deepshift-edge run model.npz --input -`` does the same from a pipe.)
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

import deepshift_edge as dse
from deepshift_edge.data import datasets
from deepshift_edge.tools.run import MalformedFrame, parse_frame


def predictions(port, model, labels=None, log=sys.stderr):
    """Yield ``(frame, label, score)`` for every output, reading frames from ``port.readline()``
    until it returns ``b""``. A malformed line is reported and skipped (nothing pushed)."""
    stream = model.stream()
    frame = np.empty(model.frame_shape, dtype=np.float32)
    pushed = 0
    for lineno, raw in enumerate(iter(port.readline, b""), 1):
        text = raw.decode("ascii", "replace").strip()
        if not text or text.startswith("#"):
            continue
        try:
            frame.reshape(-1)[:] = parse_frame(text, frame.size)
        except MalformedFrame as exc:
            print(f"line {lineno}: {exc} (skipped)", file=log)
            continue
        y = stream.push(frame)
        pushed += 1
        if y is not None:
            k = int(np.argmax(y))
            yield pushed - 1, (labels[k] if labels else k), float(y[k])


class ReplayPort:
    """A fake serial port that sends a recording (T, C) as CSV lines, then EOF."""

    def __init__(self, frames, extra=None):
        self.lines = [(",".join(f"{v:.6f}" for v in row) + "\r\n").encode() for row in frames]
        for i, line in sorted((extra or {}).items(), reverse=True):  # {i: bytes}: noise before frame i
            self.lines.insert(i, line)
        self.lines.reverse()

    def readline(self) -> bytes:
        return self.lines.pop() if self.lines else b""


def open_port(device: str, baud: int):
    try:
        import serial  # pyserial
    except ImportError:
        raise SystemExit("this example needs pyserial: pip install 'deepshift-edge[serial]'") from None
    return serial.Serial(device, baud, timeout=None)  # block until each line arrives


def main(argv=None, port=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("device", nargs="?", help="serial device, e.g. /dev/ttyACM0 or /dev/ttyUSB0")
    parser.add_argument("--baud", type=int, default=115200)
    parser.add_argument("--model", default="basicmotions", help="a .npz model or a shipped name")
    parser.add_argument("--replay", default=None, help="replay a .npy recording (or 'basicmotions')")
    args = parser.parse_args(argv)
    model = dse.load(args.model)
    if port is None:
        if args.replay:
            port = ReplayPort(np.load(datasets.resolve_recording(args.replay)))
        elif args.device:
            port = open_port(args.device, args.baud)
        else:
            parser.error("give a serial device or --replay")
    for frame, label, score in predictions(port, model, model.labels):
        print(f"{frame}\t{label}\t{score:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
