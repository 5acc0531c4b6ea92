"""Coverage-guided fuzzing of the model loader with atheris (libFuzzer for Python).

    python tests/atheris_load.py -runs=20000 -rss_limit_mb=1024 -timeout=10 CORPUS_DIR

Only ModelFormatError (and OSError) may come out of ``dse.load``; anything else is a
crash that atheris reports with the input that caused it. A model that loads must also
stream a few frames. tests/test_fuzz.py runs this for a few thousand inputs when atheris
is installed, seeded with valid model files (``--write-corpus DIR`` writes them).
"""
import io
import os
import sys

import atheris

with atheris.instrument_imports(include=["deepshift_edge", "zipfile", "json"]):
    import deepshift_edge as dse

import numpy as np

FRAMES = {}


def one_input(data: bytes):
    try:
        model = dse.load(io.BytesIO(data))
    except (dse.ModelFormatError, OSError):
        return
    try:
        stream = model.stream()
    except dse.ModelError:
        return
    shape = tuple(model.frame_shape)
    if shape not in FRAMES:
        FRAMES[shape] = np.random.default_rng(0).standard_normal((8,) + shape).astype(np.float32)
    stream.push_many(FRAMES[shape])
    stream.push(FRAMES[shape][0])


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--write-corpus":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from fuzz_corpus import model_seeds
        os.makedirs(sys.argv[2], exist_ok=True)
        for name, raw in model_seeds().items():
            with open(os.path.join(sys.argv[2], name + ".npz"), "wb") as fh:
                fh.write(raw)
        return
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
