"""examples/: the serial and I2C sensor loops (fake devices replaying a recording), and the
BasicMotions worked example (streamed predictions equal the offline model's)."""
import importlib.util
import io
import os
import threading

import numpy as np
import pytest

import deepshift_edge as dse
from deepshift_edge.data import datasets

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "examples")


def _load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bm():
    return dse.load("basicmotions"), datasets.load_basicmotions()


# ----------------------------------------------------------------------------- serial
def test_serial_example_replays_a_recording_with_line_noise(bm, capsys):
    ex = _load("serial_sensor")
    model, data = bm
    rec = data.x_test[25]
    port = ex.ReplayPort(rec, extra={0: b"\x00\xffboot garbage\r\n", 10: b"1,2,3\r\n", 50: b"\r\n",
                                     60: b"# comment\n"})
    log = io.StringIO()
    got = list(ex.predictions(port, model, datasets.LABELS["basicmotions"], log=log))
    ref = model.stream().push_many(np.round(rec, 6))
    assert [g[0] for g in got] == list(range(model.window - 1, len(rec)))
    assert [g[1] for g in got] == [datasets.LABELS["basicmotions"][k] for k in ref.argmax(1)]
    np.testing.assert_allclose([g[2] for g in got], ref.max(1), rtol=1e-5)
    msgs = log.getvalue().splitlines()
    assert len(msgs) == 2 and msgs[0].startswith("line 1: field 1 (") and msgs[0].endswith("is not a number (skipped)")
    assert msgs[1] == "line 12: expected 6 values, got 3 (skipped)"  # before frame 10, after the garbage


def test_serial_example_main_with_an_injected_port_and_replay(bm, capsys):
    ex = _load("serial_sensor")
    model, data = bm
    assert ex.main(["--model", "basicmotions"], port=ex.ReplayPort(data.x_test[0])) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 100 - model.window + 1 and all(line.split("\t")[1] == "Standing" for line in lines)
    assert ex.main(["--replay", "basicmotions"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 400 - model.window + 1


def test_serial_example_with_real_pyserial_loopback(bm):
    serial = pytest.importorskip("serial", reason="pyserial not installed (optional extra 'serial')")
    ex = _load("serial_sensor")
    model, data = bm
    port = serial.serial_for_url("loop://", timeout=2.0)
    rec = data.x_test[35]
    # The "device" writes from another thread (loop://'s buffer holds only 4096 bytes).
    writer = threading.Thread(target=lambda: [port.write(line) for line in ex.ReplayPort(rec).lines[::-1]])
    writer.start()
    got = list(ex.predictions(port, model))  # the loop ends when readline times out with b""
    writer.join()
    ref = model.stream().push_many(np.round(rec, 6))
    assert [g[1] for g in got] == list(ref.argmax(1))


# ----------------------------------------------------------------------------- I2C
class ReplayBus:
    """A fake MPU-6050 on a fake smbus2.SMBus: each read of the 14 data registers returns
    the next frame of a recording (int16, big-endian, at the example's full-scale ranges),
    with a constant gravity vector added to the accelerometer."""

    def __init__(self, ex, frames, gravity=(0.0, 0.0, 0.0)):
        acc = (frames[:, :3] + np.asarray(gravity)) / ex.ACC_SCALE
        temp = np.zeros((len(frames), 1))
        gyro = frames[:, 3:] / ex.GYRO_SCALE
        self.raw = np.clip(np.round(np.concatenate([acc, temp, gyro], axis=1)), -32768, 32767).astype(">i2")
        self.ex, self.i, self.config = ex, 0, {}

    def write_byte_data(self, address, register, value):
        assert address == self.ex.ADDRESS
        self.config[register] = value

    def read_i2c_block_data(self, address, register, length):
        assert (address, register, length) == (self.ex.ADDRESS, self.ex.ACCEL_XOUT_H, 14)
        assert self.config.get(self.ex.PWR_MGMT_1) == 0, "read before waking the chip"
        row = self.raw[self.i]
        self.i += 1
        return list(row.tobytes())

    def decoded(self):
        """The frames the example should see (the int16 quantisation of the recording)."""
        raw = self.raw.astype(np.float64)
        return np.concatenate([raw[:, :3] * self.ex.ACC_SCALE, raw[:, 4:] * self.ex.GYRO_SCALE], axis=1)


def test_i2c_example_streams_the_replayed_recording_exactly(bm):
    ex = _load("i2c_accelerometer")
    model, data = bm
    rec = data.x_test[15]
    bus = ReplayBus(ex, rec)
    now, sleeps = [100.0], []

    def sleep(seconds):  # a fake clock: sleeping moves it on
        sleeps.append(seconds)
        now[0] += seconds

    got = list(ex.run(bus, model, frames=len(rec), gravity_alpha=None, sleep=sleep, clock=lambda: now[0]))
    assert bus.config == {ex.PWR_MGMT_1: 0, ex.ACCEL_CONFIG: ex.ACCEL_8G, ex.GYRO_CONFIG: ex.GYRO_2000DPS}
    assert np.abs(bus.decoded() - rec).max(0)[:3].max() <= ex.ACC_SCALE / 2 + 1e-6
    ref = model.stream().push_many(bus.decoded().astype(np.float32))
    assert [g[0] for g in got] == list(range(model.window - 1, len(rec)))
    assert [g[1] for g in got] == list(ref.argmax(1))
    np.testing.assert_allclose([g[2] for g in got], ref.max(1), rtol=1e-5)
    assert len(sleeps) == len(rec) and np.allclose(sleeps, 0.1)  # paced at 10 Hz


def test_i2c_example_removes_gravity(bm):
    ex = _load("i2c_accelerometer")
    model, data = bm
    agree = total = 0
    for rec in data.x_test[::4]:
        bus = ReplayBus(ex, rec, gravity=(3.0, -4.0, 8.0))  # a tilted board: |g| = 9.4 m/s²
        got = [g[1] for g in ex.run(bus, model, frames=len(rec), sleep=lambda s: None)]
        ref = model.stream().push_many(rec).argmax(1)
        agree += int((np.array(got) == ref).sum())
        total += len(ref)
    assert agree / total >= 0.95, agree / total


def test_i2c_example_main_with_an_injected_bus(bm, capsys, monkeypatch):
    ex = _load("i2c_accelerometer")
    model, data = bm
    monkeypatch.setattr(ex.time, "sleep", lambda s: None)
    assert ex.main(["--seconds", "10"], bus=ReplayBus(ex, data.x_test[5], gravity=(0, 0, 9.81))) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 100 - model.window + 1 and "Standing" in lines[-1]


def test_i2c_example_with_real_smbus2():
    pytest.importorskip("smbus2", reason="smbus2 not installed (optional extra 'i2c')")
    if not os.path.exists("/dev/i2c-1"):
        pytest.skip("needs a real I2C bus (/dev/i2c-1) with an MPU-6050")
    ex = _load("i2c_accelerometer")  # pragma: no cover - hardware only
    assert ex.main(["--seconds", "5"]) == 0


# ----------------------------------------------------------------------------- BasicMotions
def test_stream_basicmotions_streamed_equals_offline(capsys):
    ex = _load("stream_basicmotions")
    r = ex.main([])
    out = capsys.readouterr().out
    assert r["same_class"] == 1.0 and r["max_abs_error"] < 1e-5
    assert r["acc_windows_streamed"] == r["acc_windows_offline"] >= 0.95
    assert r["acc_recordings_streamed"] == r["acc_recordings_offline"] >= 0.95
    assert r["windows"] == 40 * 61
    assert "accuracy, streamed (push)" in out and "full-window recompute" in out
    assert r["recompute"]["p50_us"] > r["streamed"]["p50_us"]


def test_shipped_data_and_licence():
    data = datasets.load_basicmotions()
    assert data.x_train.shape == data.x_test.shape == (40, 100, 6)
    assert data.labels == datasets.LABELS["basicmotions"]
    assert np.unique(data.y_test, return_counts=True)[1].tolist() == [10, 10, 10, 10]  # (bincount: no int64 on 32-bit)
    assert "BSD 3-Clause" in data.licence and "aeon" in data.source
    demo = np.load(datasets.data_path("basicmotions_test.npy"))
    assert demo.shape == (400, 6) and demo.dtype == np.float32
    np.testing.assert_array_equal(demo[:100], data.x_test[0])


def test_make_basicmotions_data_parses_ts(tmp_path):
    ex = _load("make_basicmotions_data")
    data = datasets.load_basicmotions()
    lines = ["# comment", "@problemName BasicMotions", "@classLabel true Standing Running Walking Badminton",
             "@data"]
    for x, y in zip(data.x_test[:3], data.y_test[:3]):
        lines.append(":".join(",".join(f"{v:.6f}" for v in ch) for ch in x.T) + ":" + data.labels[y])
    x, labels, classes = ex.parse_ts("\n".join(lines))
    assert classes == list(data.labels) and list(labels) == [data.labels[y] for y in data.y_test[:3]]
    np.testing.assert_allclose(x, data.x_test[:3], atol=1e-6)


@pytest.mark.slow
@pytest.mark.torch
def test_train_basicmotions(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    ex = _load("train_basicmotions")
    r = ex.main(["--out", str(tmp_path / "m.npz")])
    assert r["max_error"] < 1e-4 and r["acc_windows"] >= 0.95 and r["acc_recordings"] >= 0.95
    assert r["seconds"] < 120
    model = dse.load(tmp_path / "m.npz")
    stream_ex = _load("stream_basicmotions")
    data = datasets.load_basicmotions()
    s = stream_ex.evaluate(model, data.x_test, data.y_test)
    assert s["same_class"] == 1.0 and abs(s["acc_windows_streamed"] - r["acc_windows"]) < 1e-9
