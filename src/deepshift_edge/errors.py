"""Exception types of deepshift_edge.

Every error the package raises on purpose is a subclass of :class:`DeepShiftError`,
and also of the built-in type a caller would expect (``ValueError``/``TypeError``),
so ``except ValueError`` keeps working in code that does not know this package.
"""


class DeepShiftError(Exception):
    """Base class of all errors raised by deepshift_edge."""


class ModelError(DeepShiftError, ValueError):
    """A model description is inconsistent (shapes, channels, hyper-parameters)."""


class NotStreamableError(ModelError):
    """The window network cannot be streamed exactly (e.g. zero padding the head can see)."""


class StreamInputError(DeepShiftError, ValueError):
    """A frame or block pushed into a stream has the wrong shape, type or values."""


class StreamInputTypeError(StreamInputError, TypeError):
    """A frame or block pushed into a stream is not a numeric array."""


class ModelFormatError(DeepShiftError, ValueError):
    """A model file is corrupt, hostile, or not a valid deepshift_edge model (docs/format.md).

    The message names the node (``nodes.conv``; ``layers.3`` in a format v1 file), the
    array or JSON key, what was expected and what the file holds. Raised by
    :func:`deepshift_edge.load` and the importers.
    """


class StreamBusyError(DeepShiftError, RuntimeError):
    """A stream was used from a second thread while a push was running."""


class StateError(DeepShiftError, ValueError):
    """A stream snapshot does not fit this stream (other model, shape or mode) or is corrupt."""


class PoolFullError(DeepShiftError, RuntimeError):
    """A StreamPool has no free slot for a new sensor (nothing was pushed)."""
