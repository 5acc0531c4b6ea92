"""int8 streaming: quantization (calibration, the TFLite/gemmlowp integer scheme) and the
readable integer reference the int8 stream is held to, bit for bit."""
from .qmodel import QNode, QuantizedModel
from .quantize import quantize
from .scheme import QParams

__all__ = ["quantize", "QuantizedModel", "QNode", "QParams"]
