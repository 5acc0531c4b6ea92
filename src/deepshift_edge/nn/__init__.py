"""Models: layers with their float64 NumPy reference, Sequential, shapes and time bookkeeping.

Nothing here needs the compiled core; the engine (``deepshift_edge.engine``) compiles these
models into streaming plans."""
