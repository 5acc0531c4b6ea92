"""deepshift_edge: stream convolutional networks over live sensor data.

Deep Shifting (Groenland & Bohte, 2016): each layer remembers its earlier results, so
a new frame costs only the new column of every layer, and the output for every frame
equals the network run offline on the window that ends there.
"""
try:
    from .engine import _kernels  # noqa: F401  the compiled core is required, never optional
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    raise ImportError(
        "deepshift_edge's compiled core (deepshift_edge.engine._kernels) is missing or broken: the "
        "package was not built for this Python/platform. Reinstall it with "
        "'pip install --force-reinstall deepshift-edge' (a C compiler is needed where no "
        f"wheel exists). Original error: {exc}") from exc

from .errors import (DeepShiftError, ModelError, ModelFormatError, NotStreamableError, PoolFullError,
                     StateError, StreamBusyError,
                     StreamInputError, StreamInputTypeError)
from .nn.layers import (AvgPool1d, AvgPool2d, BatchNorm1d, BatchNorm2d, CELU, Conv1d, Conv2d, Dropout,
                        ELU, Flatten, GELU, GlobalAvgPool, GlobalMaxPool, Hardsigmoid, HardSwish,
                        Hardtanh, Identity, LastFrame, Layer, LeakyReLU, Linear, MaxPool1d, MaxPool2d,
                        Mish, PReLU, ReLU, ReLU6, SELU, Sigmoid, SiLU, Softmax, Softplus, Softsign, Tanh)
from .nn.merge import Add, ChannelSlice, Concat, Crop, FrameFlatten, Mul, Pad, Residual
from .nn.graph import Input, Model
from .nn.sequential import Sequential
from .engine.stream import Stream
from .engine.pool import StreamPool  # many sensors' streams by id (docs/fleet.md)
from .formats.npz import load, save  # model files (.npz format v2, v1 read; docs/format.md)
from .convert.onnx_import import from_onnx  # imports `onnx` only when called
from .convert.tflite_import import from_tflite  # imports the TFLite schema code and `onnx` only when called
from .convert.torch_import import from_torch  # imports `torch` only when called
from .quant import QuantizedModel, quantize  # int8 (docs/int8.md)

from ._version import __version__

BatchNorm = BatchNorm1d


__all__ = [
    "Input", "Model", "Sequential", "Stream", "StreamPool", "Layer",
    # time layers
    "Conv1d", "Conv2d", "MaxPool1d", "AvgPool1d", "MaxPool2d", "AvgPool2d", "Pad", "Crop",
    # per frame
    "BatchNorm", "BatchNorm1d", "BatchNorm2d", "Linear", "ReLU", "ReLU6", "LeakyReLU", "Sigmoid",
    "Tanh", "HardSwish", "Hardsigmoid", "SiLU", "Mish", "GELU", "ELU", "CELU", "SELU", "PReLU",
    "Softplus", "Softsign", "Hardtanh", "Softmax", "Identity", "Dropout", "ChannelSlice",
    "FrameFlatten",
    # branches
    "Add", "Mul", "Concat", "Residual",
    # heads
    "LastFrame", "GlobalAvgPool", "GlobalMaxPool", "Flatten",
    # errors, files, converters
    "DeepShiftError", "ModelError", "NotStreamableError", "StreamInputError", "StreamInputTypeError",
    "StateError", "StreamBusyError", "PoolFullError", "ModelFormatError", "debug_build", "load", "save", "from_onnx",
    "from_torch", "from_tflite", "quantize", "QuantizedModel",
]


def debug_build() -> bool:
    """True when the compiled core was built with DSE_DEBUG=1 (bounds checks on)."""
    return _kernels.debug_build()
