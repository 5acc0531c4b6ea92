"""Model files: the ``.npz`` format and its validation (``npz``)."""
