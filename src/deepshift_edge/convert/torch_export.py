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
    """A ``torch.nn.Module`` computing ``model`` on a batch of windows, in ``dtype``.

    Graph models become a module that evaluates the node list in order; every layer maps
    to PyTorch's own op with PyTorch's own padding (F.pad where the zeros are asymmetric).
    """
    torch = _torch()
    nn = torch.nn
    F = torch.nn.functional
    tdtype = getattr(torch, dtype)
    dse = dse_layers
    from ..nn import merge as M

    class Lambda(nn.Module):
        def __init__(self, fn, *mods):
            super().__init__()
            self.fn = fn
            self.mods = nn.ModuleList(mods)

        def forward(self, *xs):
            return self.fn(*xs)

    def _param(a):
        return nn.Parameter(torch.from_numpy(np.asarray(a, dtype=np.float32)).to(tdtype), requires_grad=False)

    def _buffer(a):
        return torch.from_numpy(np.asarray(a, dtype=np.float32)).to(tdtype)

    def _cropper(crops):
        """Right-aligned merge inputs: crop each on the left by a constant (from the specs, so a
        traced export sees no shape arithmetic)."""
        def aligned(xs):
            return [x if c == 0 else x[..., c:] for x, c in zip(xs, crops)]
        return aligned

    def _conv(layer, two_d):
        pf, pt = layer.pad_f, layer.pad_t
        sym_f = pf[0] == pf[1]
        if two_d:
            conv = nn.Conv2d(layer.in_channels, layer.out_channels, tuple(layer.kernel_size),
                             stride=tuple(layer.stride), padding=(pf[0] if sym_f else 0, 0),
                             dilation=tuple(layer.dilation), groups=layer.groups,
                             bias=layer.bias is not None)
        else:
            conv = nn.Conv1d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                             padding=0, dilation=layer.dilation, groups=layer.groups,
                             bias=layer.bias is not None)
        conv = conv.to(tdtype)
        conv.weight = _param(layer.weight)
        if layer.bias is not None:
            conv.bias = _param(layer.bias)
        pads = (pt[0], pt[1]) + ((0, 0) if sym_f else (pf[0], pf[1])) if two_d else (pt[0], pt[1])
        if any(pads):
            return Lambda(lambda x: conv(F.pad(x, pads)), conv)
        return conv

    def _pool(layer, two_d):
        pf, pt = layer.pad_f, layer.pad_t
        if pf[0] != pf[1] or pt[0] != pt[1]:
            raise NotImplementedError(f"{type(layer).__name__} with asymmetric padding has no PyTorch module")
        if two_d:
            if layer.op == "max":
                return nn.MaxPool2d(tuple(layer.kernel_size), stride=tuple(layer.stride),
                                    padding=(pf[0], pt[0]), ceil_mode=layer.ceil_mode)
            return nn.AvgPool2d(tuple(layer.kernel_size), stride=tuple(layer.stride), padding=(pf[0], pt[0]),
                                ceil_mode=layer.ceil_mode, count_include_pad=layer.count_include_pad)
        if layer.op == "max":
            return nn.MaxPool1d(layer.kernel_size, stride=layer.stride, padding=pt[0],
                                dilation=layer.dilation, ceil_mode=layer.ceil_mode)
        return nn.AvgPool1d(layer.kernel_size, stride=layer.stride, padding=pt[0],
                            ceil_mode=layer.ceil_mode, count_include_pad=layer.count_include_pad)

    def _torch_layer(layer, vector: bool, two_d: bool, crops=()):
        """The PyTorch equivalent of one deepshift_edge layer, on (N, C[, F], T) or (N, C[, F])."""
        if isinstance(layer, dse._Conv):
            return _conv(layer, isinstance(layer, dse.Conv2d))
        if isinstance(layer, dse._Pool):
            return _pool(layer, layer.two_d)
        if isinstance(layer, (dse.BatchNorm1d, dse.BatchNorm2d)):
            cls = nn.BatchNorm2d if isinstance(layer, dse.BatchNorm2d) and not vector else nn.BatchNorm1d
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
            if vector:
                return lin
            return Lambda(lambda x: lin(x.transpose(1, -1)).transpose(1, -1), lin)
        if isinstance(layer, dse.LastFrame):
            return Lambda(lambda x: x[..., -1])
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
        if isinstance(layer, dse.ELU):
            return nn.ELU(layer.alpha)
        if isinstance(layer, dse.CELU):
            return nn.CELU(layer.alpha)
        if isinstance(layer, dse.Softplus):
            return nn.Softplus(layer.beta, layer.threshold)
        if isinstance(layer, dse.Hardtanh):
            return nn.Hardtanh(layer.min_val, layer.max_val)
        if isinstance(layer, dse.PReLU):
            act = nn.PReLU(layer.num_parameters).to(tdtype)
            act.weight = _param(layer.weight)
            return act
        simple = {dse.ReLU6: nn.ReLU6, dse.ReLU: nn.ReLU, dse.Sigmoid: nn.Sigmoid, dse.Tanh: nn.Tanh,
                  dse.HardSwish: nn.Hardswish, dse.SiLU: nn.SiLU, dse.Hardsigmoid: nn.Hardsigmoid,
                  dse.Mish: nn.Mish, dse.SELU: nn.SELU, dse.Softsign: nn.Softsign}
        if type(layer) in simple:
            return simple[type(layer)]()
        if isinstance(layer, dse.GELU):
            return nn.GELU(approximate=layer.approximate)
        if isinstance(layer, dse.Dropout):
            return nn.Dropout(layer.p).eval()
        if isinstance(layer, dse.Identity):
            return nn.Identity()
        aligned = _cropper(crops)
        if isinstance(layer, (M.Add, M.Mul)):
            def merge(*xs):
                ys = aligned(list(xs))
                out = ys[0]
                for y in ys[1:]:
                    out = out + y if isinstance(layer, M.Add) else out * y
                return out
            return Lambda(merge)
        if isinstance(layer, M.Concat):
            return Lambda(lambda *xs: torch.cat(aligned(list(xs)), dim=1))
        if isinstance(layer, M.ChannelSlice):
            return Lambda(lambda x: x[:, layer.start:layer.stop])
        if isinstance(layer, M.FrameFlatten):
            return Lambda(lambda x: x.flatten(1, 2) if x.dim() == 4 else x)
        if isinstance(layer, M.Pad):
            return Lambda(lambda x: F.pad(x, (layer.left, layer.right)))
        if isinstance(layer, M.Crop):
            return Lambda(lambda x: x[..., layer.left:x.shape[-1] - layer.right])
        raise NotImplementedError(type(layer).__name__)

    class GraphModule(nn.Module):
        def __init__(self):
            super().__init__()
            self.inputs = [node.inputs for node in model.nodes[1:]]
            mods = []
            for i, node in enumerate(model.nodes[1:], start=1):
                vector = model.specs[node.inputs[0]].is_vector
                two_d = model.specs[node.inputs[0]].features is not None
                merge = isinstance(node.layer, (M.Add, M.Mul, M.Concat)) and not vector
                crops = [model.specs[j].length - model.specs[i].length if merge else 0
                         for j in node.inputs]
                mods.append(_torch_layer(node.layer, vector, two_d, crops))
            self.mods = nn.ModuleList(mods)

        def forward(self, x):
            values = [x]
            for mod, ins in zip(self.mods, self.inputs):
                values.append(mod(*[values[j] for j in ins]))
            return values[-1]

    return GraphModule().to(tdtype).eval()
