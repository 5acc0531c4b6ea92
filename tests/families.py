"""Fourteen architectures from the literature and popular repositories, written in PyTorch
the way their authors write them (weight_norm, BatchNorm, Dropout, ``torch.chunk``,
``F.pad``, ``padding='same'``, ``padding=k//2``, a chomp), with small channel counts.

Each entry of :data:`FAMILIES` says how to build the module and what it reads: frames of
``in_features`` channels (or ``(C, F)``), a window of ``window`` frames, the input's
``time_axis`` (``-1``: ``(B, C[, F], T)``; ``1``: ``(B, T, C)``; ``2``: ``(B, C, T, F)``).
``per_position`` modules output one value per time position, ``(B, K, T')``: in window
semantics the stream gives the newest position; they are also the models of the
'sequence' semantics. ``refused`` modules (recurrent layers) must be refused by name.

Used by tests/test_families.py; small enough to import without running anything.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

try:  # torch >= 2.1 spells it parametrizations.weight_norm; Bai et al. wrote nn.utils.weight_norm
    from torch.nn.utils.parametrizations import weight_norm
except ImportError:  # pragma: no cover
    from torch.nn.utils import weight_norm


@dataclass
class Family:
    name: str
    make: Callable[[], nn.Module]
    in_features: Union[int, Sequence[int]]
    window: int
    time_axis: int = -1
    per_position: bool = False
    refused: Optional[str] = None  # the op the converter must name
    note: str = ""


# ----------------------------------------------------------------------------- 1. HAR CNN
class HARCNN(nn.Module):
    """A 1-D CNN for human activity recognition (UCI-HAR style): two convs, dropout, max pool,
    flatten the whole window, two dense layers."""

    def __init__(self, channels=9, classes=6, window=32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(channels, 12, kernel_size=3), nn.ReLU(),
            nn.Conv1d(12, 12, kernel_size=3), nn.ReLU(),
            nn.Dropout(0.5), nn.MaxPool1d(kernel_size=2))
        n = (window - 4) // 2
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(12 * n, 16), nn.ReLU(), nn.Linear(16, classes))

    def forward(self, x):
        return self.classifier(self.features(x))


# ----------------------------------------------------------------------------- 2. Bai et al. TCN
class Chomp1d(nn.Module):
    def __init__(self, chomp_size):
        super().__init__()
        self.chomp_size = chomp_size

    def forward(self, x):
        return x[:, :, :-self.chomp_size].contiguous()


class TemporalBlock(nn.Module):
    """Bai, Kolter & Koltun (2018), github.com/locuslab/TCN, verbatim up to sizes."""

    def __init__(self, n_inputs, n_outputs, kernel_size, stride, dilation, padding, dropout=0.2):
        super().__init__()
        self.conv1 = weight_norm(nn.Conv1d(n_inputs, n_outputs, kernel_size, stride=stride,
                                           padding=padding, dilation=dilation))
        self.chomp1 = Chomp1d(padding)
        self.relu1 = nn.ReLU()
        self.dropout1 = nn.Dropout(dropout)
        self.conv2 = weight_norm(nn.Conv1d(n_outputs, n_outputs, kernel_size, stride=stride,
                                           padding=padding, dilation=dilation))
        self.chomp2 = Chomp1d(padding)
        self.relu2 = nn.ReLU()
        self.dropout2 = nn.Dropout(dropout)
        self.net = nn.Sequential(self.conv1, self.chomp1, self.relu1, self.dropout1,
                                 self.conv2, self.chomp2, self.relu2, self.dropout2)
        self.downsample = nn.Conv1d(n_inputs, n_outputs, 1) if n_inputs != n_outputs else None
        self.relu = nn.ReLU()

    def forward(self, x):
        out = self.net(x)
        res = x if self.downsample is None else self.downsample(x)
        return self.relu(out + res)


class TemporalConvNet(nn.Module):
    def __init__(self, num_inputs, num_channels, kernel_size=2, dropout=0.2):
        super().__init__()
        layers = []
        for i in range(len(num_channels)):
            dilation_size = 2 ** i
            in_channels = num_inputs if i == 0 else num_channels[i - 1]
            layers += [TemporalBlock(in_channels, num_channels[i], kernel_size, stride=1,
                                     dilation=dilation_size, padding=(kernel_size - 1) * dilation_size,
                                     dropout=dropout)]
        self.network = nn.Sequential(*layers)

    def forward(self, x):
        return self.network(x)


class BaiTCN(nn.Module):
    """The sequence classifier of the TCN repository: the last time step into a Linear."""

    def __init__(self, input_size=4, output_size=3, num_channels=(6, 6, 6), kernel_size=3):
        super().__init__()
        self.tcn = TemporalConvNet(input_size, list(num_channels), kernel_size=kernel_size)
        self.linear = nn.Linear(num_channels[-1], output_size)

    def forward(self, inputs):
        y1 = self.tcn(inputs)
        return self.linear(y1[:, :, -1])


class BaiTCNSequence(nn.Module):
    """The same TCN read per position (1x1 conv to the outputs), as for sequence labelling."""

    def __init__(self, input_size=4, output_size=3, num_channels=(6, 6), kernel_size=3):
        super().__init__()
        self.tcn = TemporalConvNet(input_size, list(num_channels), kernel_size=kernel_size)
        self.out = nn.Conv1d(num_channels[-1], output_size, 1)

    def forward(self, x):
        return self.out(self.tcn(x))


# ----------------------------------------------------------------------------- 3. pytorch-tcn
class CausalConv1d(nn.Conv1d):
    """pytorch-tcn's TemporalConv1d in causal mode: F.pad on the left, then a valid conv."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.left = (self.kernel_size[0] - 1) * self.dilation[0]

    def forward(self, x):
        return super().forward(F.pad(x, (self.left, 0)))


class PyTCNBlock(nn.Module):
    def __init__(self, c_in, c_out, k, d, dropout=0.1):
        super().__init__()
        self.conv1 = CausalConv1d(c_in, c_out, k, dilation=d)
        self.conv2 = CausalConv1d(c_out, c_out, k, dilation=d)
        self.bn1, self.bn2 = nn.BatchNorm1d(c_out), nn.BatchNorm1d(c_out)
        self.act = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.downsample = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else None
        self.skip = nn.Conv1d(c_out, c_out, 1)  # use_skip_connections: a 1x1 conv per block

    def forward(self, x):
        out = self.dropout(self.act(self.bn1(self.conv1(x))))
        out = self.dropout(self.act(self.bn2(self.conv2(out))))
        res = x if self.downsample is None else self.downsample(x)
        return self.act(out + res), self.skip(out)


class PyTCN(nn.Module):
    """pytorch-tcn's ``TCN(..., use_skip_connections=True)``: every block's skip output,
    summed with ``torch.stack(...).sum(dim=0)``, then the activation; a global pool head."""

    def __init__(self, num_inputs=3, channels=(6, 6, 6), k=3, classes=4):
        super().__init__()
        blocks, c = [], num_inputs
        for i, c_out in enumerate(channels):
            blocks.append(PyTCNBlock(c, c_out, k, 2 ** i))
            c = c_out
        self.network = nn.ModuleList(blocks)
        self.act = nn.ReLU()
        self.fc = nn.Linear(channels[-1], classes)

    def forward(self, x):
        skip_connections = []
        for layer in self.network:
            x, skip_out = layer(x)
            skip_connections.append(skip_out)
        x = torch.stack(skip_connections, dim=0).sum(dim=0)
        x = self.act(x)
        return self.fc(x.mean(dim=-1))


# ----------------------------------------------------------------------------- 4. WaveNet
class WaveNetLayer(nn.Module):
    """A gated residual layer: one dilated causal conv with 2C outputs, chunk(2) into filter
    and gate, tanh * sigmoid, then 1x1 residual and 1x1 skip convs."""

    def __init__(self, c, skip, d, k=2):
        super().__init__()
        self.pad = (k - 1) * d
        self.dilated = nn.Conv1d(c, 2 * c, k, dilation=d)
        self.res = nn.Conv1d(c, c, 1)
        self.skip = nn.Conv1d(c, skip, 1)

    def forward(self, x):
        h = self.dilated(F.pad(x, (self.pad, 0)))
        f, g = torch.chunk(h, 2, dim=1)
        z = torch.tanh(f) * torch.sigmoid(g)
        return x + self.res(z), self.skip(z)


class WaveNet(nn.Module):
    """van den Oord et al. (2016): causal input conv, dilated gated layers 1, 2, 4, 8, the sum
    of all skips, ReLU-1x1-ReLU-1x1 to per-position outputs."""

    def __init__(self, c_in=2, c=4, skip=6, classes=3, dilations=(1, 2, 4, 8)):
        super().__init__()
        self.causal = nn.Conv1d(c_in, c, 2)
        self.layers = nn.ModuleList(WaveNetLayer(c, skip, d) for d in dilations)
        self.out1 = nn.Conv1d(skip, skip, 1)
        self.out2 = nn.Conv1d(skip, classes, 1)

    def forward(self, x):
        x = self.causal(F.pad(x, (1, 0)))
        skips = 0
        for layer in self.layers:
            x, s = layer(x)
            skips = skips + s
        return self.out2(F.relu(self.out1(F.relu(skips))))


# ----------------------------------------------------------------------------- 5. TC-ResNet
class TCResBlock(nn.Module):
    """Choi et al. (2019): k=9 convs over time with MFCCs as channels; a stride-2 block has a
    stride-2 1x1 conv + BN + ReLU skip."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv1d(c_in, c_out, 9, stride=stride, padding=4, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, 9, padding=4, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm1d(c_out), nn.ReLU())

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + skip)


class TCResNet(nn.Module):
    def __init__(self, mfcc=10, classes=5, widths=(6, 8, 8)):
        super().__init__()
        self.conv = nn.Conv1d(mfcc, widths[0], 3, padding=1, bias=False)
        blocks, c = [], widths[0]
        for w in widths[1:]:
            blocks.append(TCResBlock(c, w, 2))
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        x = self.blocks(self.conv(x))
        return self.fc(self.dropout(self.pool(x).flatten(1)))


# ----------------------------------------------------------------------------- 6. DS-CNN
class DSCNN(nn.Module):
    """Hello Edge (Zhang et al., 2017) DS-CNN on (B, 1, T, F) MFCCs: a strided first conv,
    depthwise-separable blocks with padding='same', average pool over what is left."""

    def __init__(self, classes=4, c=6, blocks=2):
        super().__init__()
        self.conv1 = nn.Conv2d(1, c, (5, 3), stride=(2, 2), padding=(2, 1), bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        layers = []
        for _ in range(blocks):
            layers += [nn.Conv2d(c, c, 3, padding="same", groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                       nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
        self.ds = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.ds(x)
        return self.fc(torch.flatten(self.pool(x), 1))


# ----------------------------------------------------------------------------- 7. EEGNet
class EEGNet(nn.Module):
    """Lawhern et al. (2018) on (B, 1, Chans, Samples): temporal conv (padding k//2), depthwise
    spatial conv, ELU, AvgPool2d, separable conv, ELU, AvgPool2d, Flatten + Linear."""

    def __init__(self, chans=4, samples=48, classes=3, F1=4, D=2, F2=8, k1=16, k2=8):
        super().__init__()
        self.block1 = nn.Sequential(
            nn.Conv2d(1, F1, (1, k1), padding=(0, k1 // 2), bias=False),
            nn.BatchNorm2d(F1),
            nn.Conv2d(F1, F1 * D, (chans, 1), groups=F1, bias=False),
            nn.BatchNorm2d(F1 * D), nn.ELU(), nn.AvgPool2d((1, 4)), nn.Dropout(0.25))
        self.block2 = nn.Sequential(
            nn.Conv2d(F1 * D, F1 * D, (1, k2), padding=(0, k2 // 2), groups=F1 * D, bias=False),
            nn.Conv2d(F1 * D, F2, 1, bias=False),
            nn.BatchNorm2d(F2), nn.ELU(), nn.AvgPool2d((1, 4)), nn.Dropout(0.25))
        with torch.no_grad():
            n = self.block2(self.block1(torch.zeros(1, 1, chans, samples))).numel()
        self.classify = nn.Linear(n, classes)

    def forward(self, x):
        x = self.block2(self.block1(x))
        return self.classify(x.flatten(start_dim=1))


# ----------------------------------------------------------------------------- 8. MatchboxNet
class TCSConv(nn.Module):
    """Time-channel separable conv: depthwise over time (padding k//2), pointwise 1x1."""

    def __init__(self, c_in, c_out, k, dilation=1):
        super().__init__()
        self.depthwise = nn.Conv1d(c_in, c_in, k, padding=dilation * (k // 2), dilation=dilation,
                                   groups=c_in, bias=False)
        self.pointwise = nn.Conv1d(c_in, c_out, 1, bias=False)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


class MatchboxBlock(nn.Module):
    def __init__(self, c_in, c_out, k, repeat=2):
        super().__init__()
        subs, c = [], c_in
        for i in range(repeat):
            subs.append(TCSConv(c, c_out, k))
            subs.append(nn.BatchNorm1d(c_out))
            if i < repeat - 1:
                subs += [nn.ReLU(), nn.Dropout(0.1)]
            c = c_out
        self.body = nn.Sequential(*subs)
        self.residual = nn.Sequential(nn.Conv1d(c_in, c_out, 1, bias=False), nn.BatchNorm1d(c_out))
        self.out = nn.Sequential(nn.ReLU(), nn.Dropout(0.1))

    def forward(self, x):
        return self.out(self.body(x) + self.residual(x))


class MatchboxNet(nn.Module):
    """Majumdar & Ginsburg (2020), NeMo's MatchboxNet 3x2x64 shrunk: prologue (stride 2),
    residual TCS blocks, dilated epilogue, 1x1 convs, AdaptiveAvgPool1d(1)."""

    def __init__(self, mfcc=8, c=8, classes=4):
        super().__init__()
        self.prologue = nn.Sequential(TCSConv(mfcc, c, 5), nn.BatchNorm1d(c), nn.ReLU())
        self.prologue[0].depthwise.stride = (2,)
        self.blocks = nn.Sequential(MatchboxBlock(c, c, 3), MatchboxBlock(c, c, 5))
        self.epilogue = nn.Sequential(
            TCSConv(c, c, 7, dilation=2), nn.BatchNorm1d(c), nn.ReLU(),
            nn.Conv1d(c, c, 1, bias=False), nn.BatchNorm1d(c), nn.ReLU(),
            nn.Conv1d(c, classes, 1))
        self.pool = nn.AdaptiveAvgPool1d(1)

    def forward(self, x):
        x = self.epilogue(self.blocks(self.prologue(x)))
        return self.pool(x).squeeze(-1)


# ----------------------------------------------------------------------------- 9. ECG ResNet
class ECGBlock(nn.Module):
    """Hannun et al. (2019): pre-activation BN-ReLU-Dropout-conv, k=15, stride 2 on every other
    block; the skip is a MaxPool1d (ceil_mode) of the input; a 1x1 conv when widths change."""

    def __init__(self, c_in, c_out, stride, k=15):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm1d(c_in), nn.BatchNorm1d(c_out)
        self.conv1 = nn.Conv1d(c_in, c_out, k, stride=stride, padding=k // 2)
        self.conv2 = nn.Conv1d(c_out, c_out, k, padding="same")
        self.dropout = nn.Dropout(0.2)
        self.pool = nn.MaxPool1d(stride, ceil_mode=True) if stride > 1 else None
        self.proj = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x):
        skip = x if self.pool is None else self.pool(x)
        if self.proj is not None:
            skip = self.proj(skip)
        out = self.conv1(self.dropout(F.relu(self.bn1(x))))
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + skip


class ECGResNet(nn.Module):
    def __init__(self, leads=1, c=4, classes=4):
        super().__init__()
        self.conv = nn.Conv1d(leads, c, 16, padding="same")  # an even kernel: 7 zeros left, 8 right
        self.bn = nn.BatchNorm1d(c)
        self.blocks = nn.Sequential(ECGBlock(c, c, 1), ECGBlock(c, c, 2), ECGBlock(c, 6, 1), ECGBlock(6, 6, 2))
        self.bn_out = nn.BatchNorm1d(6)
        self.fc = nn.Linear(6, classes)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        x = F.relu(self.bn_out(self.blocks(x)))
        return self.fc(F.adaptive_avg_pool1d(x, 1).squeeze(-1))


# ----------------------------------------------------------------------------- 10. InceptionTime
class InceptionModule(nn.Module):
    """Fawaz et al. (2020): a bottleneck, three convs with padding='same' (kernels 9, 5, 3 and
    an even one), a MaxPool(3, stride 1, padding 1) + 1x1 branch, concatenated, BN, ReLU."""

    def __init__(self, c_in, nf=3, kernels=(9, 6, 3)):
        super().__init__()
        self.bottleneck = nn.Conv1d(c_in, nf, 1, bias=False) if c_in > 1 else nn.Identity()
        c_b = nf if c_in > 1 else c_in
        self.convs = nn.ModuleList(nn.Conv1d(c_b, nf, k, padding="same", bias=False) for k in kernels)
        self.maxconvpool = nn.Sequential(nn.MaxPool1d(3, stride=1, padding=1), nn.Conv1d(c_in, nf, 1, bias=False))
        self.bn = nn.BatchNorm1d(nf * (len(kernels) + 1))

    def forward(self, x):
        b = self.bottleneck(x)
        x = torch.cat([conv(b) for conv in self.convs] + [self.maxconvpool(x)], dim=1)
        return F.relu(self.bn(x))


class InceptionTime(nn.Module):
    def __init__(self, c_in=3, classes=4, nf=3, depth=3):
        super().__init__()
        c_out = nf * 4
        self.inception = nn.ModuleList(InceptionModule(c_in if d == 0 else c_out, nf) for d in range(depth))
        self.shortcut = nn.Sequential(nn.Conv1d(c_in, c_out, 1, bias=False), nn.BatchNorm1d(c_out))
        self.gap = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(c_out, classes)

    def forward(self, x):
        res = x
        for d, module in enumerate(self.inception):
            x = module(x)
            if d % 3 == 2:
                x = F.relu(x + self.shortcut(res))
                res = x
        return self.fc(self.gap(x).squeeze(-1))


# ----------------------------------------------------------------------------- 11. CRNN front end
class CRNNFront(nn.Module):
    """A CRNN front end on (B, 1, F, T) spectrograms: 2-D convs and feature pooling, then each
    frame's (C, F) map reshaped into C*F channels for 1-D convs over time (where the GRU would
    come), a global average and a Linear."""

    def __init__(self, n_mels=8, classes=4):
        super().__init__()
        self.cnn = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d((2, 1)),
            nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d((2, 1)))
        self.temporal = nn.Sequential(nn.Conv1d(4 * (n_mels // 4), 8, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        x = self.cnn(x)
        b, c, f, t = x.shape
        x = x.reshape(b, c * f, t)
        x = self.temporal(x)
        return self.fc(x.mean(dim=2))


# ----------------------------------------------------------------------------- 12. CNN-GRU (refused)
class CNNGRU(nn.Module):
    def __init__(self, c_in=3, classes=3):
        super().__init__()
        self.conv = nn.Conv1d(c_in, 8, 3, padding=1)
        self.gru = nn.GRU(8, 8, batch_first=True)
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        h = F.relu(self.conv(x)).transpose(1, 2)
        out, _ = self.gru(h)
        return self.fc(out[:, -1])


class CNNLSTM(CNNGRU):
    def __init__(self, c_in=3, classes=3):
        super().__init__(c_in, classes)
        self.gru = nn.LSTM(8, 8, batch_first=True)


# ----------------------------------------------------------------------------- 13. causal + GAP
class CausalGAP(nn.Module):
    """Causal dilated convs (F.pad on the left) ending in global average pooling: the head
    reads the zeros of the causal padding at the window's left edge."""

    def __init__(self, c_in=3, c=6, classes=4, k=3):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(c_in if i == 0 else c, c, k, dilation=2 ** i) for i in range(3))
        self.k = k
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(F.pad(x, ((self.k - 1) * 2 ** i, 0))))
        return self.fc(F.adaptive_avg_pool1d(x, 1).flatten(1))


# ----------------------------------------------------------------------------- 14. padding=k//2 stack
class HalfKStack(nn.Module):
    """The plain stack everyone writes: padding=k//2, BN, ReLU, a max pool, mean over time."""

    def __init__(self, c_in=4, classes=3, per_position=False):
        super().__init__()
        self.per_position = per_position
        self.body = nn.Sequential(
            nn.Conv1d(c_in, 8, 5, padding=5 // 2), nn.BatchNorm1d(8), nn.ReLU(),
            nn.Conv1d(8, 8, 3, padding=3 // 2), nn.ReLU())
        if not per_position:
            self.body.append(nn.MaxPool1d(2))
            self.body.append(nn.Conv1d(8, 8, 3, padding=1))
        self.fc = nn.Linear(8, classes) if not per_position else nn.Conv1d(8, classes, 1)

    def forward(self, x):
        x = self.body(x)
        return self.fc(x) if self.per_position else self.fc(x.mean(-1))


class SameStack(nn.Module):
    """A 'same'-padded fully convolutional stack without a head (one output per position)."""

    def __init__(self, c_in=3, classes=2):
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(c_in, 6, 5, padding="same"), nn.ReLU(),
                                 nn.Conv1d(6, 6, 4, padding="same", dilation=2), nn.Tanh(),
                                 nn.Conv1d(6, classes, 3, padding="same"))

    def forward(self, x):
        return self.net(x)


FAMILIES = {f.name: f for f in [
    Family("har_cnn", lambda: HARCNN(9, 6, 32), 9, 32),
    Family("bai_tcn", BaiTCN, 4, 30),
    Family("pytorch_tcn_skips", PyTCN, 3, 24),
    Family("wavenet", WaveNet, 2, 20, per_position=True),
    Family("tc_resnet", TCResNet, 10, 24),
    Family("ds_cnn", DSCNN, (1, 6), 14, time_axis=2, note="(B, 1, T, F) input"),
    Family("eegnet", lambda: EEGNet(4, 48), (1, 4), 48),
    Family("matchboxnet", MatchboxNet, 8, 24),
    Family("ecg_resnet", ECGResNet, 1, 33),
    Family("inception_time", InceptionTime, 3, 20),
    Family("crnn_front", CRNNFront, (1, 8), 16),
    Family("causal_gap", CausalGAP, 3, 20),
    Family("halfk_stack", HalfKStack, 4, 20),
    Family("cnn_gru", CNNGRU, 3, 12, refused="GRU"),
    Family("cnn_lstm", CNNLSTM, 3, 12, refused="LSTM"),
    # the per-position families (window semantics: the newest position; also 'sequence')
    Family("bai_tcn_seq", BaiTCNSequence, 4, 16, per_position=True),
    Family("same_stack", SameStack, 3, 16, per_position=True),
    Family("halfk_stack_seq", lambda: HalfKStack(per_position=True), 4, 16, per_position=True),
]}

STREAMED = [n for n, f in FAMILIES.items() if f.refused is None]
REFUSED = [n for n, f in FAMILIES.items() if f.refused is not None]
PER_POSITION = [n for n, f in FAMILIES.items() if f.per_position]


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Weights as after training, roughly: variance-preserving conv/linear weights (so the
    output depends on the input, not only on the biases), small biases, BatchNorm statistics
    that are not 0/1; eval mode. weight_norm convs keep PyTorch's init (their g and v)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)) and not hasattr(m, "parametrizations"):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (1.4 / fan_in ** 0.5))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.4 + 0.8)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return module.eval()


def build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize(FAMILIES[name].make(), seed)
