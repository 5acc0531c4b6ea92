"""Rebuild ``src/deepshift_edge/data/basicmotions.npz`` and ``basicmotions_test.npy`` from
the BasicMotions ``.ts`` files that aeon (and, identically, sktime) ship on PyPI.

The shipped files were made from the aeon 1.6.0 wheel (BSD-3-Clause)::

    pip download --no-deps aeon==1.6.0 -d /tmp/aeon
    python examples/make_basicmotions_data.py /tmp/aeon/aeon-1.6.0-py3-none-any.whl

The argument may also be a directory holding ``BasicMotions_TRAIN.ts`` and
``BasicMotions_TEST.ts`` (e.g. ``site-packages/aeon/datasets/data/BasicMotions``).
Nothing here needs aeon or sktime installed.
"""
from __future__ import annotations

import argparse
import os
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, os.pardir, "src", "deepshift_edge", "data")
MEMBER = "aeon/datasets/data/BasicMotions/BasicMotions_{}.ts"
# Which held-out recordings make the demo recording: the first test recording of each class.
DEMO_ORDER = ("Standing", "Walking", "Running", "Badminton")


def parse_ts(text: str):
    """(frames (N, T, C) float32, class names (N,), the file's class list) of a .ts file."""
    labels, rows, classes, in_data = [], [], None, False
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            if line.lower().startswith("@classlabel"):
                classes = line.split()[2:]
            in_data = line.lower() == "@data"
            continue
        *dims, label = line.split(":")
        rows.append(np.array([[float(v) for v in d.split(",")] for d in dims], dtype=np.float32).T)
        labels.append(label)
    return np.stack(rows), np.array(labels), classes


def read_split(source: str, split: str) -> str:
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            name = next(n for n in zf.namelist() if n.endswith(f"BasicMotions_{split}.ts"))
            return zf.read(name).decode("utf-8")
    with open(os.path.join(source, f"BasicMotions_{split}.ts"), encoding="utf-8") as fh:
        return fh.read()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="an aeon/sktime wheel, or a folder with the two .ts files")
    parser.add_argument("--out", default=DATA, help="folder to write into (default: the package data)")
    parser.add_argument("--licence", default=None,
                        help="the licence file of the source package (default: read from the wheel)")
    args = parser.parse_args(argv)

    x_train, l_train, classes = parse_ts(read_split(args.source, "TRAIN"))
    x_test, l_test, _ = parse_ts(read_split(args.source, "TEST"))
    if args.licence:
        with open(args.licence, encoding="utf-8") as fh:
            licence = fh.read()
    else:
        with zipfile.ZipFile(args.source) as zf:
            licence = zf.read(next(n for n in zf.namelist() if n.endswith("licenses/LICENSE"))).decode()
    index = {c: i for i, c in enumerate(classes)}
    y_train = np.array([index[c] for c in l_train], dtype=np.int64)
    y_test = np.array([index[c] for c in l_test], dtype=np.int64)
    source = ("BasicMotions (UEA multivariate time series classification archive), as shipped in "
              f"{os.path.basename(args.source)}: smart-watch 3-D accelerometer + 3-D gyroscope, 10 Hz, "
              "10 s recordings, 4 classes. Redistributed under the source package's BSD-3-Clause "
              "licence, reproduced in `licence`.")
    os.makedirs(args.out, exist_ok=True)
    np.savez_compressed(os.path.join(args.out, "basicmotions.npz"), x_train=x_train, y_train=y_train,
                        x_test=x_test, y_test=y_test, labels=np.array(classes), rate_hz=np.array(10.0),
                        source=np.array(source), licence=np.array(licence))
    demo = [int(np.flatnonzero(y_test == index[c])[0]) for c in DEMO_ORDER]
    np.save(os.path.join(args.out, "basicmotions_test.npy"), np.concatenate([x_test[i] for i in demo]))
    print(f"train {x_train.shape}, test {x_test.shape}, classes {classes}; demo recording = test "
          f"recordings {demo} ({', '.join(DEMO_ORDER)}), {len(demo) * x_test.shape[1]} frames")


if __name__ == "__main__":
    main()
