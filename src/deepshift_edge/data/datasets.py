"""Recordings and a trained model shipped with the package (``deepshift_edge/data/``).

* ``basicmotions.npz``: the BasicMotions recordings (UEA multivariate archive, as shipped
  by aeon/sktime under BSD-3-Clause): a smart watch's 3-D accelerometer and 3-D gyroscope
  at 10 Hz, 10 s per recording, 4 activities, 40 training and 40 held-out recordings.
  :func:`load_basicmotions` returns them as frames, ``(N, 100, 6)``.
* ``basicmotions_cnn.npz``: a small 1-D CNN trained on the training recordings by
  ``examples/train_basicmotions.py`` (window 40 frames = 4 s).
* ``basicmotions_test.npy``: a 400-frame held-out recording for ``deepshift-edge run``:
  four held-out recordings one after the other (Standing, Walking, Running, Badminton).

Model names: :func:`resolve_model` is the one resolver behind ``dse.load`` and every
command (``inspect``, ``run``, ``bench``, ``demo --model``). A path that exists is always a
file; otherwise a name in :data:`MODELS` (a trained model shipped here) or in
:data:`deepshift_edge.data.examples.EXAMPLES` (built-in example architectures with seeded
*random* weights, for timing and checking only). :data:`RECORDINGS` names the shipped
recordings wherever an input file is taken, e.g. ``deepshift-edge run basicmotions
--input basicmotions``.
"""
from __future__ import annotations

import errno
import os
from typing import NamedTuple, Optional

import numpy as np

__all__ = ["data_path", "load_basicmotions", "BasicMotions", "MODELS", "RECORDINGS", "LABELS",
           "resolve_model", "resolve_recording", "labels_for", "model_names", "ModelRef"]

DATA_DIR = os.path.dirname(os.path.abspath(__file__))

#: shipped model name -> file in ``data/``
MODELS = {"basicmotions": "basicmotions_cnn.npz"}
#: shipped recording name -> file in ``data/`` (shape (T, *frame_shape))
RECORDINGS = {"basicmotions": "basicmotions_test.npy"}
#: class names of the shipped models, in output order (their files carry them too)
LABELS = {"basicmotions": ("Standing", "Running", "Walking", "Badminton")}


def data_path(filename: str) -> str:
    """Absolute path of a file shipped in ``deepshift_edge/data/``."""
    path = os.path.join(DATA_DIR, filename)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: not shipped with this installation of deepshift_edge")
    return path


class BasicMotions(NamedTuple):
    x_train: np.ndarray   # (40, 100, 6) float32 frames: acc x/y/z, gyro x/y/z
    y_train: np.ndarray   # (40,) int64 class index
    x_test: np.ndarray    # (40, 100, 6) held-out recordings
    y_test: np.ndarray    # (40,)
    labels: tuple         # class names, in index order
    rate_hz: float        # 10.0
    source: str           # provenance
    licence: str          # the BSD-3-Clause text of the package the data came from


def load_basicmotions() -> BasicMotions:
    """The BasicMotions recordings as frames (time first), float32."""
    with np.load(data_path("basicmotions.npz"), allow_pickle=False) as d:
        return BasicMotions(d["x_train"], d["y_train"], d["x_test"], d["y_test"],
                            tuple(str(v) for v in d["labels"]), float(d["rate_hz"]),
                            str(d["source"]), str(d["licence"]))


class ModelRef(NamedTuple):
    """What a model argument names: a file to load, or a built-in example to build."""
    path: Optional[str]          # a model file (given, or shipped in ``data/``)
    example: Optional[str]       # else the name of a built-in example (random weights)

    def build(self):
        """The built-in example model (``example`` must be set)."""
        from . import examples
        model = examples.EXAMPLES[self.example]()
        model.metadata = {"name": self.example,
                          "weights": "seeded random (a built-in example: the outputs mean nothing)"}
        return model


def model_names() -> dict:
    """Every model name the resolver knows -> a one-line description."""
    from . import examples
    names = {name: f"trained, shipped ({file})" for name, file in MODELS.items()}
    for name, make in examples.EXAMPLES.items():
        names.setdefault(name, "built-in example, random weights: "
                         + (make.__doc__ or "").strip().split("\n")[0].rstrip("."))
    return names


def resolve_model(name_or_path) -> ModelRef:
    """The one resolver of model arguments (``dse.load`` and every command).

    An existing path is a file, as given. Otherwise a shipped model's name gives its file in
    ``data/`` and a built-in example's name gives ``ModelRef(None, name)``. Anything else
    raises ``FileNotFoundError`` whose message lists the names that work.
    """
    path = os.fspath(name_or_path)
    if os.path.exists(path):
        return ModelRef(path, None)
    if path in MODELS:
        return ModelRef(data_path(MODELS[path]), None)
    from . import examples
    if path in examples.EXAMPLES:
        return ModelRef(None, path)
    names = ", ".join(model_names())
    raise FileNotFoundError(errno.ENOENT, f"No such file or directory, and not a built-in model "
                            f"name (built-in: {names})", path)


def resolve_recording(name_or_path: str) -> str:
    """A path as given if it exists, else the shipped recording of that name."""
    return _resolve(name_or_path, RECORDINGS)


def labels_for(name: str) -> Optional[tuple]:
    """Class names of a shipped model given by name (None for a path). Model files carry
    their own now: prefer ``dse.load(name).labels``."""
    if os.path.exists(name):
        return None
    return LABELS.get(name)


def _resolve(name: str, table: dict) -> str:
    if os.path.exists(name) or name not in table:
        return name
    return data_path(table[name])
