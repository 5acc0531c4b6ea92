"""Import a PyTorch module by exporting it to ONNX (``torch.onnx.export``) and converting
that graph with :func:`~deepshift_edge.convert.onnx_import.from_onnx`. torch and onnx (and,
for the default dynamo exporter, onnxscript) are imported only when :func:`from_torch` is
called."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import warnings
from typing import Sequence, Union

from ..errors import ModelFormatError

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


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(exc: BaseException) -> str:
    """One line saying what went wrong (the exporter wraps the real error: show that one)."""
    while exc.__cause__ is not None and type(exc).__name__.endswith("ExportError"):
        exc = exc.__cause__
    lines = [ln.strip() for ln in _ANSI.sub("", str(exc)).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:400]


@contextlib.contextmanager
def _quiet():
    """The dynamo exporter prints its progress and warns about absent optional packages
    (torchvision): keep the user's console for the converter's own report."""
    names = ["torch.onnx", "torch.export", "torch._dynamo", "onnxscript"]
    saved = [(n, logging.getLogger(n).level) for n in names]
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), warnings.catch_warnings():
            # torch's own deprecation inside torch.export (pytree internals), not the user's model
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                                    category=FutureWarning)
            yield
    finally:
        for n, level in saved:
            logging.getLogger(n).setLevel(level)


def _export(torch, module, dummy, opset, dynamo) -> bytes:
    names = dict(input_names=["window"], output_names=["output"])
    if dynamo:
        try:
            import onnxscript  # noqa: F401  the dynamo exporter's dependency
        except ImportError:
            raise ImportError("from_torch's default exporter (torch.onnx.export(..., dynamo=True)) "
                              "needs onnxscript: pip install onnxscript, or pass dynamo=False for "
                              "the TorchScript exporter") from None
        kw = {} if opset is None else {"opset_version": opset}
        with _quiet():
            program = torch.onnx.export(module, (dummy,), dynamo=True, verbose=False, **names, **kw)
        return program.model_proto.SerializeToString()
    buf = io.BytesIO()
    export_onnx(module, dummy, buf, opset=17 if opset is None else opset)
    return buf.getvalue()


def from_torch(module, in_features: Union[int, Sequence[int]], window: int, *, time_axis: int = -1,
               check: bool = True, return_report: bool = False, opset=None, dynamo: bool = True,
               semantics: str = "window", labels=None, metadata=None):
    """Convert ``module`` (``nn.Sequential`` or an ordinary CNN/TCN ``nn.Module``) that maps
    one window ``(1, C, W)`` (or ``(1, C, F, W)`` for ``in_features=(C, F)``) to its output.
    A module that takes time elsewhere says so with ``time_axis``: ``1`` for ``(1, W, C)``
    (channels last), ``2`` for ``(1, C, W, F)``.

    ``dynamo=True`` (default, as in ``torch.onnx.export`` of torch >= 2.9) exports with the
    dynamo exporter, which needs ``onnxscript``; ``dynamo=False`` uses the TorchScript
    exporter. ``opset``: the ONNX opset to export (default: the exporter's, 17 for
    TorchScript). ``semantics``: see :func:`~deepshift_edge.from_onnx`.

    The module is put in ``eval()`` mode for the export (batch norm uses running statistics,
    dropout is off) and restored afterwards. A module that fails on the dummy window raises
    :class:`~deepshift_edge.ModelFormatError` with PyTorch's message and a hint about
    ``time_axis``, not PyTorch's traceback. ``labels`` (class names, one per output value)
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
    try:
        with torch.no_grad():
            try:
                module(dummy)
            except Exception as exc:
                layout = "(1, C, W)" if rank == 3 else "(1, C, F, W)"
                hint = ""
                if time_axis % rank == rank - 1:
                    hint = (f"; in_features and window give {layout}: if the module takes its frames "
                            f"channels-last, (1, W, C), pass time_axis=1" if rank == 3 else
                            f"; in_features and window give {layout}: if the module takes (1, C, W, F), "
                            f"pass time_axis=2")
                raise ModelFormatError(f"the module fails on a window of shape {tuple(shape)}: "
                                       f"{_first_line(exc)}{hint}") from None
            try:
                data = _export(torch, module, dummy, opset, dynamo)
            except ImportError:
                raise
            except Exception as exc:
                which = "dynamo" if dynamo else "TorchScript"
                other = "dynamo=False" if dynamo else "dynamo=True"
                raise ModelFormatError(f"torch.onnx.export ({which} exporter) failed: {_first_line(exc)}; "
                                       f"try {other}") from None
    finally:
        module.train(was_training)
    return from_onnx(data, window=int(window), time_axis=time_axis % rank, check=check,
                     return_report=return_report, semantics=semantics, labels=labels,
                     metadata=metadata)
