"""Export a deepshift_edge model to an equivalent PyTorch module (optional: needs torch).

Used as the second oracle in the tests and as the PyTorch/onnxruntime columns of the
benchmark. The module maps one window (N, C[, F], W) to the model's output; it is
built from the layers' public hyper-parameters and weights only, with PyTorch's own
ops, so it is independent of the streaming kernels and of the NumPy reference.
"""
from __future__ import annotations

import numpy as np

from ..nn import layers as dse_layers


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised where torch is absent
        raise ImportError("deepshift_edge.torch_export needs PyTorch: pip install torch") from exc
    return torch


def to_torch(model, dtype: str = "float64"):
    """A ``torch.nn.Module`` computing ``model`` on a batch of windows, in ``dtype``."""
    torch = _torch()
    nn = torch.nn
    F = torch.nn.functional
    tdtype = getattr(torch, dtype)

    class CausalPad(nn.Module):
        """Left zero padding of the time (last) axis."""

        def __init__(self, amount):
            super().__init__()
            self.amount = amount

        def forward(self, x):
            return F.pad(x, (self.amount, 0))

    class TakeLast(nn.Module):
        def forward(self, x):
            return x[..., -1]

    class PerFrameLinear(nn.Module):
        """nn.Linear applied to the channels of every frame of (N, C, T)."""

        def __init__(self, lin):
            super().__init__()
            self.lin = lin

        def forward(self, x):
            return self.lin(x.transpose(1, -1)).transpose(1, -1)

    class TorchResidual(nn.Module):
        def __init__(self, body, skip):
            super().__init__()
            self.body = body
            self.skip = skip

        def forward(self, x):
            y = self.body(x)
            s = x if self.skip is None else self.skip(x)
            return y + s[..., s.shape[-1] - y.shape[-1]:]

    def _param(a):
        return nn.Parameter(torch.from_numpy(np.asarray(a, dtype=np.float32)).to(tdtype), requires_grad=False)

    def _buffer(a):
        return torch.from_numpy(np.asarray(a, dtype=np.float32)).to(tdtype)

    dse = dse_layers

    def _torch_layer(layer, after_head: bool, two_d: bool):
        """The PyTorch equivalent of one deepshift_edge layer (float64)."""
        if isinstance(layer, dse.Residual):
            body = nn.Sequential(*[_torch_layer(sub, False, two_d) for sub in layer.body])
            skip = None if layer.skip is None else _torch_layer(layer.skip, False, two_d)
            return TorchResidual(body, skip)
        if isinstance(layer, dse.Conv1d):
            conv = nn.Conv1d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                             padding=0, dilation=layer.dilation, groups=layer.groups,
                             bias=layer.bias is not None).to(tdtype)
            conv.weight = _param(layer.weight)
            if layer.bias is not None:
                conv.bias = _param(layer.bias)
            if layer.padding == "causal":
                return nn.Sequential(CausalPad((layer.kernel_size - 1) * layer.dilation), conv)
            assert layer.padding == "valid"
            return conv
        if isinstance(layer, dse.Conv2d):
            p_f, p_t = layer.padding
            conv = nn.Conv2d(layer.in_channels, layer.out_channels, tuple(layer.kernel_size),
                             stride=tuple(layer.stride), padding=(p_f, 0), dilation=tuple(layer.dilation),
                             groups=layer.groups, bias=layer.bias is not None).to(tdtype)
            conv.weight = _param(layer.weight)
            if layer.bias is not None:
                conv.bias = _param(layer.bias)
            if p_t == "causal":
                return nn.Sequential(CausalPad((layer.kernel_size[1] - 1) * layer.dilation[1]), conv)
            assert p_t == 0
            return conv
        if isinstance(layer, dse.MaxPool1d):
            return nn.MaxPool1d(layer.kernel_size, stride=layer.stride, dilation=layer.dilation)
        if isinstance(layer, dse.AvgPool1d):
            return nn.AvgPool1d(layer.kernel_size, stride=layer.stride)
        if isinstance(layer, dse.AvgPool2d):  # before MaxPool2d: AvgPool2d subclasses it
            return nn.AvgPool2d(tuple(layer.kernel_size), stride=tuple(layer.stride))
        if isinstance(layer, dse.MaxPool2d):
            return nn.MaxPool2d(tuple(layer.kernel_size), stride=tuple(layer.stride))
        if isinstance(layer, (dse.BatchNorm1d, dse.BatchNorm2d)):
            cls = nn.BatchNorm2d if isinstance(layer, dse.BatchNorm2d) and not after_head else nn.BatchNorm1d
            bn = cls(layer.num_features, eps=layer.eps).to(tdtype).eval()
            bn.weight = _param(layer.weight)
            bn.bias = _param(layer.bias)
            bn.running_mean = _buffer(layer.running_mean)
            bn.running_var = _buffer(layer.running_var)
            return bn
        if isinstance(layer, dse.Linear):
            lin = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None).to(tdtype)
            lin.weight = _param(layer.weight)
            if layer.bias is not None:
                lin.bias = _param(layer.bias)
            return lin if after_head else PerFrameLinear(lin)
        if isinstance(layer, dse.LastFrame):
            return TakeLast()
        if isinstance(layer, dse.GlobalMaxPool):  # before GlobalAvgPool: it subclasses it
            pool = nn.AdaptiveMaxPool2d(1) if two_d else nn.AdaptiveMaxPool1d(1)
            return nn.Sequential(pool, nn.Flatten(1))
        if isinstance(layer, dse.GlobalAvgPool):
            pool = nn.AdaptiveAvgPool2d(1) if two_d else nn.AdaptiveAvgPool1d(1)
            return nn.Sequential(pool, nn.Flatten(1))
        if isinstance(layer, dse.Flatten):
            return nn.Flatten(1)
        if isinstance(layer, dse.Softmax):
            return nn.Softmax(dim=1)
        if isinstance(layer, dse.LeakyReLU):
            return nn.LeakyReLU(layer.negative_slope)
        simple = {dse.ReLU6: nn.ReLU6, dse.ReLU: nn.ReLU, dse.Sigmoid: nn.Sigmoid, dse.Tanh: nn.Tanh,
                  dse.HardSwish: nn.Hardswish, dse.SiLU: nn.SiLU, dse.Hardsigmoid: nn.Hardsigmoid,
                  dse.Mish: nn.Mish}
        if type(layer) in simple:
            return simple[type(layer)]()
        if isinstance(layer, dse.GELU):
            return nn.GELU(approximate=layer.approximate)
        if isinstance(layer, dse.Dropout):
            return nn.Dropout(layer.p).eval()
        if isinstance(layer, dse.Identity):
            return nn.Identity()
        raise NotImplementedError(type(layer).__name__)


    two_d = len(model.frame_shape) == 2
    mods, after_head = [], False
    for layer in model.layers:
        mods.append(_torch_layer(layer, after_head, two_d))
        after_head = after_head or layer.is_head
    if not after_head:
        mods.append(TakeLast())  # the implicit LastFrame
    return nn.Sequential(*mods).to(tdtype).eval()
