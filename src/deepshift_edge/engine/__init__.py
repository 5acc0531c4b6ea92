"""The streaming engine: plans (a model compiled into ops over ring buffers), the compiled
core that runs them (``_kernels``), ``Stream`` and its snapshots. Imports no converter, file
format or tool."""
