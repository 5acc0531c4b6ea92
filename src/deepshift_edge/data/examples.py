"""Built-in example models (seeded weights), used by the demo, the benchmark and tests.

They have the shapes of the networks people stream on small boards; the weights are
random, so the outputs mean nothing, but the cost and the exactness are real.
"""
from __future__ import annotations

from ..nn import layers as L
from ..nn.sequential import Sequential

__all__ = ["tiny", "kws_tcn", "activity_cnn", "spectrogram_cnn", "EXAMPLES"]


def tiny(seed: int = 0) -> Sequential:
    """3 features, two 8-channel convs of kernel 3, the newest frame out."""
    return Sequential([L.Conv1d(3, 8, 3, seed=seed), L.ReLU(), L.Conv1d(8, 8, 3, seed=seed + 1), L.ReLU(),
                       L.LastFrame()], in_features=3)


def kws_tcn(seed: int = 0, window: int = 128) -> Sequential:
    """Keyword-spotting TCN: 40 features, 6 causal convs of 64 channels, kernel 3,
    dilations 1..32, linear head (12 classes) on the last frame."""
    layers = []
    channels = 40
    for i, d in enumerate((1, 2, 4, 8, 16, 32)):
        layers += [L.Conv1d(channels, 64, 3, dilation=d, padding="causal", seed=seed + i), L.ReLU()]
        channels = 64
    layers += [L.LastFrame(), L.Linear(64, 12, seed=seed + 10), L.Softmax()]
    return Sequential(layers, in_features=40, window=window)


def activity_cnn(seed: int = 0, window: int = 128) -> Sequential:
    """Activity recognition: 6 IMU features, three convs of kernel 5 with two stride-2
    max pools, global average over the window, 6 classes."""
    return Sequential([
        L.Conv1d(6, 32, 5, seed=seed), L.ReLU(), L.MaxPool1d(2),
        L.Conv1d(32, 64, 5, seed=seed + 1), L.ReLU(), L.MaxPool1d(2),
        L.Conv1d(64, 64, 5, seed=seed + 2), L.ReLU(),
        L.GlobalAvgPool(), L.Linear(64, 6, seed=seed + 3), L.Softmax()], in_features=6, window=window)


def spectrogram_cnn(seed: int = 0, window: int = 64) -> Sequential:
    """2-D CNN over (1 channel x 40 mel bands) frames: two Conv2d blocks with feature
    padding and pooling, global average, 10 classes."""
    return Sequential([
        L.Conv2d(1, 16, (3, 3), padding=(1, 0), seed=seed), L.BatchNorm2d(16), L.ReLU(),
        L.MaxPool2d((2, 2)),
        L.Conv2d(16, 32, (3, 3), padding=(1, 0), seed=seed + 1), L.ReLU(), L.MaxPool2d((2, 2)),
        L.GlobalAvgPool(), L.Linear(32, 10, seed=seed + 2), L.Softmax()], in_features=(1, 40), window=window)


EXAMPLES = {"tiny": tiny, "kws": kws_tcn, "activity": activity_cnn, "spectrogram": spectrogram_cnn}
