"""Train a small streaming 1-D CNN on the BasicMotions recordings and ship it as ``.npz``.

    python examples/train_basicmotions.py [--out src/deepshift_edge/data/basicmotions_cnn.npz]

Needs PyTorch and onnx (test-only dependencies; the streaming side needs neither). The
network sees a window of 40 frames (4 s at 10 Hz): three ``valid`` convolutions, two
max pools, a global average over the window and a linear layer with softmax. Valid
padding with a global-average head is window-exact, so every streamed output equals the
network run offline on the window ending at that frame. (Causal padding with a global
average would be refused as not window-exact: every window would see the padding.)

Input normalisation (per-channel mean/std of the training recordings) is folded into the
first convolution after training, so the shipped model takes raw sensor frames.
Runs in about 10-20 s on two cores.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from torch import nn

import deepshift_edge as dse
from deepshift_edge.data.datasets import load_basicmotions

WINDOW = 40
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "src", "deepshift_edge",
                   "data", "basicmotions_cnn.npz")


def metadata(rate_hz: float) -> dict:
    """What the shipped model file says about itself (``deepshift-edge inspect`` shows it)."""
    return {"name": "basicmotions",
            "task": "activity recognition from a smart watch",
            "sample_rate_hz": rate_hz,
            "frame": "accelerometer x, y, z, gyroscope x, y, z (as recorded, no scaling)",
            "trained_on": "BasicMotions training recordings (UEA archive, via aeon, BSD-3-Clause)",
            "trained_by": "examples/train_basicmotions.py"}


def build_net(n_in: int = 6, n_classes: int = 4) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(n_in, 16, 5), nn.BatchNorm1d(16), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(16, 32, 5), nn.BatchNorm1d(32), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(32, 32, 3), nn.BatchNorm1d(32), nn.ReLU(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(32, n_classes), nn.Softmax(dim=1))


def windows(recordings: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """Every window of every recording: (N, T, C) -> (N, T - window + 1, C, window)."""
    n, t, c = recordings.shape
    idx = np.arange(t - window + 1)[:, None] + np.arange(window)
    return np.ascontiguousarray(recordings[:, idx].transpose(0, 1, 3, 2))


def train(net: nn.Sequential, x: np.ndarray, y: np.ndarray, window: int = WINDOW, steps: int = 600,
          batch: int = 64, seed: int = 0) -> nn.Sequential:
    """Train on random crops of ``window`` frames of the recordings ``x`` (N, T, C), whose
    channels are already normalised. The softmax is left out of the loss (logits)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    logits = net[:-1]
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    loss_fn = nn.CrossEntropyLoss()
    net.train()
    for _ in range(steps):
        rec = rng.integers(0, len(x), batch)
        start = rng.integers(0, x.shape[1] - window + 1, batch)
        crop = x[rec[:, None], start[:, None] + np.arange(window)]            # (B, W, C)
        crop = crop * rng.uniform(0.9, 1.1, (batch, 1, 1)) + 0.05 * rng.standard_normal(crop.shape)
        xb = torch.from_numpy(np.ascontiguousarray(crop.transpose(0, 2, 1), dtype=np.float32))
        loss = loss_fn(logits(xb), torch.from_numpy(y[rec]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


def fold_input_normalization(net: nn.Sequential, mean: np.ndarray, std: np.ndarray) -> nn.Sequential:
    """The first conv applied to (x - mean) / std equals a conv with scaled weights and a
    shifted bias applied to x (exact for valid padding)."""
    conv = net[0]
    with torch.no_grad():
        w = conv.weight / torch.from_numpy(std.astype(np.float32))[None, :, None]
        conv.bias -= (w * torch.from_numpy(mean.astype(np.float32))[None, :, None]).sum(dim=(1, 2))
        conv.weight.copy_(w)
    return net


def torch_predict(net: nn.Sequential, wins: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(wins.reshape((-1,) + wins.shape[-2:]))).numpy().reshape(
            wins.shape[:-2] + (-1,))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=OUT, help="where to write the .npz model")
    parser.add_argument("--steps", type=int, default=600, help="training steps (batches of 64 crops)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # small tensors: one thread is faster, and kind to a busy board

    data = load_basicmotions()
    mean = data.x_train.mean(axis=(0, 1))
    std = data.x_train.std(axis=(0, 1))
    t0 = time.perf_counter()
    net = train(build_net(), (data.x_train - mean) / std, data.y_train, steps=args.steps, seed=args.seed)
    fold_input_normalization(net, mean, std)
    seconds = time.perf_counter() - t0

    # Offline accuracy of the trained PyTorch model on every held-out window, raw frames in.
    wins = windows(data.x_test)                                   # (40, 61, 6, 40)
    probs = torch_predict(net, wins)                              # (40, 61, 4)
    acc_windows = float((probs.argmax(-1) == data.y_test[:, None]).mean())
    acc_recordings = float((probs.mean(1).argmax(-1) == data.y_test).mean())

    model = dse.from_torch(net, in_features=6, window=WINDOW)
    ref = model.forward(data.x_test[0])                           # the converted model, offline
    err = float(np.abs(ref - probs[0]).max())
    assert err < 1e-4, f"converted model differs from PyTorch by {err}"
    dse.save(model, args.out, labels=data.labels, metadata=metadata(data.rate_hz))
    print(f"trained in {seconds:.1f} s ({args.steps} steps); held-out accuracy (PyTorch, offline): "
          f"{acc_windows:.1%} of {probs.shape[0] * probs.shape[1]} windows, {acc_recordings:.1%} of "
          f"{len(data.y_test)} recordings; converted model vs PyTorch: max |error| {err:.1e}")
    print(f"wrote {os.path.normpath(args.out)} ({os.path.getsize(args.out):,} bytes)")
    return {"acc_windows": acc_windows, "acc_recordings": acc_recordings, "seconds": seconds,
            "max_error": err, "model": model}


if __name__ == "__main__":
    main()
