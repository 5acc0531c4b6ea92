"""Import a PyTorch module by exporting it to ONNX (``torch.onnx.export``) and converting
that graph with :func:`~deepshift_edge.onnx_import.from_onnx`. torch and onnx are imported
only when :func:`from_torch` is called."""
from __future__ import annotations

import io
import warnings
from typing import Optional, Sequence, Union

__all__ = ["from_torch", "export_onnx"]

# What PyTorch says about the exporter we choose on purpose (the TorchScript-based one,
# dynamo=False: it needs no onnxscript and gives the plain graphs the converter is tested
# against): that it is deprecated, that its logging hook will go, and that a ScriptModule
# has no Python signature. None of these is about the user's model.
_EXPORTER_NOTICES = (
    (DeprecationWarning, r"You are using the legacy TorchScript-based ONNX export"),
    (DeprecationWarning, r"The feature will be removed\. Please remove usage of this function"),
    (UserWarning, r"no signature found for <torch\.ScriptMethod"),
)


def export_onnx(module, dummy, f, *, opset: int = 17, input_names=("window",), output_names=("output",)):
    """``torch.onnx.export`` with the TorchScript-based exporter (``dynamo=False`` where the
    argument exists), quiet about that choice: see ``_EXPORTER_NOTICES``."""
    import torch

    kwargs = dict(opset_version=opset, input_names=list(input_names), output_names=list(output_names))
    with warnings.catch_warnings():
        for category, message in _EXPORTER_NOTICES:
            warnings.filterwarnings("ignore", message=message, category=category)
        try:
            torch.onnx.export(module, (dummy,), f, dynamo=False, **kwargs)
        except TypeError:  # older torch without the `dynamo` argument
            if hasattr(f, "seek"):
                f.seek(0)
                f.truncate()
            torch.onnx.export(module, (dummy,), f, **kwargs)


def from_torch(module, in_features: Union[int, Sequence[int]], window: int, *, time_axis: int = -1,
               check: bool = True, return_report: bool = False, opset: int = 17, labels=None,
               metadata=None):
    """Convert ``module`` (``nn.Sequential`` or an ordinary CNN/TCN ``nn.Module``) that maps
    one window ``(1, C, W)`` (or ``(1, C, F, W)`` for ``in_features=(C, F)``) to its output.
    A module that takes time elsewhere says so with ``time_axis``: ``1`` for ``(1, W, C)``
    (channels last), ``2`` for ``(1, C, W, F)``.

    The module is put in ``eval()`` mode for the export (batch norm uses running statistics,
    dropout is off) and restored afterwards. ``labels`` (class names, one per output value)
    and ``metadata`` (names to JSON scalars) are set on the model for ``dse.save`` to keep.
    """
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("from_torch needs PyTorch (and the 'onnx' package)") from exc
    from .onnx_import import from_onnx

    dims = tuple(in_features) if isinstance(in_features, (tuple, list)) else (int(in_features),)
    shape = [1] + list(dims)
    rank = len(shape) + 1
    if not isinstance(time_axis, int) or not -rank <= time_axis < rank:
        raise ValueError(f"time_axis must be an axis of the {rank}-D input, got {time_axis!r}")
    shape.insert(time_axis % rank, int(window))
    dummy = torch.zeros(tuple(shape), dtype=torch.float32)
    was_training = module.training
    module.eval()
    buf = io.BytesIO()
    try:
        with torch.no_grad():
            export_onnx(module, dummy, buf, opset=opset)
    finally:
        module.train(was_training)
    return from_onnx(buf.getvalue(), window=int(window), time_axis=time_axis % rank, check=check,
                     return_report=return_report, labels=labels, metadata=metadata)
