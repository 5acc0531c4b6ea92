"""Live activity recognition from an MPU-6050 accelerometer + gyroscope on I2C (Raspberry Pi
pins 3/5, bus 1, address 0x68), 10 frames a second through the shipped BasicMotions model.

    sudo raspi-config nonint do_i2c 0              # enable I2C once
    pip install "deepshift-edge[i2c]"              # smbus2
    python examples/i2c_accelerometer.py --bus 1 --seconds 60

Frames are (ax, ay, az) in m/s² with gravity removed, as BasicMotions' watch recorded them
(its "linear acceleration"; here a slow low-pass estimate of gravity is subtracted), and
(gx, gy, gz) in rad/s. Axes follow the chip, which need not match the watch's: retrain on
your own recordings for real use. ``run()`` takes the bus as a parameter, so the tests
drive it with a fake device that replays a recording.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import deepshift_edge as dse

ADDRESS = 0x68
PWR_MGMT_1, GYRO_CONFIG, ACCEL_CONFIG, ACCEL_XOUT_H = 0x6B, 0x1B, 0x1C, 0x3B
ACCEL_8G, GYRO_2000DPS = 2 << 3, 3 << 3                    # full-scale range bits
ACC_SCALE = 9.80665 / 4096.0                                # m/s² per LSB at ±8 g
GYRO_SCALE = np.pi / 180.0 / 16.4                           # rad/s per LSB at ±2000 °/s


def setup(bus, address=ADDRESS) -> None:
    bus.write_byte_data(address, PWR_MGMT_1, 0)             # wake up, internal clock
    bus.write_byte_data(address, ACCEL_CONFIG, ACCEL_8G)
    bus.write_byte_data(address, GYRO_CONFIG, GYRO_2000DPS)


def read_frame(bus, address=ADDRESS) -> np.ndarray:
    """One raw frame: accel (m/s², gravity included) and gyro (rad/s), float32 (6,)."""
    raw = np.frombuffer(bytes(bus.read_i2c_block_data(address, ACCEL_XOUT_H, 14)), dtype=">i2")
    return np.concatenate([raw[0:3] * ACC_SCALE, raw[4:7] * GYRO_SCALE]).astype(np.float32)


def run(bus, model, frames: int, rate: float = 10.0, gravity_alpha: float = 0.02,
        sleep=None, clock=None):
    """Read ``frames`` frames at ``rate`` Hz and yield ``(frame index, class, score)`` per
    output. ``gravity_alpha``: weight of each new sample in the gravity estimate (None:
    no gravity removal). ``sleep``/``clock``: default ``time.sleep``/``time.monotonic``."""
    sleep, clock = sleep or time.sleep, clock or time.monotonic
    setup(bus)
    stream = model.stream()
    gravity = None
    next_t = clock()
    for t in range(frames):
        frame = read_frame(bus)
        if gravity_alpha is not None:
            gravity = frame[:3].copy() if gravity is None else gravity + gravity_alpha * (frame[:3] - gravity)
            frame[:3] -= gravity
        y = stream.push(frame)
        if y is not None:
            k = int(np.argmax(y))
            yield t, k, float(y[k])
        next_t += 1.0 / rate
        sleep(max(0.0, next_t - clock()))


def main(argv=None, bus=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bus", type=int, default=1, help="I2C bus number (/dev/i2c-N)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--model", default="basicmotions", help="a .npz model or a shipped name")
    args = parser.parse_args(argv)
    model = dse.load(args.model)
    labels = model.labels  # the class names saved in the model file (None if it has none)
    if bus is None:
        try:
            from smbus2 import SMBus
        except ImportError:
            raise SystemExit("this example needs smbus2: pip install 'deepshift-edge[i2c]'") from None
        bus = SMBus(args.bus)
    for t, k, score in run(bus, model, frames=int(args.seconds * 10)):
        print(f"{t / 10:6.1f} s  {labels[k] if labels else str(k):10s} {score:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
