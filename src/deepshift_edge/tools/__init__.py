"""Tools around the engine: the command line (``cli``), ``run`` (live frames in, predictions
out), ``bench`` and ``timing``."""
