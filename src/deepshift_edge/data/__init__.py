"""Data shipped with the package: a trained model, recordings (``datasets``) and the built-in
example models (``examples``)."""
