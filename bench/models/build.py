"""Write the reference models of the benchmark to bench/models/*.npz.

    python bench/models/build.py

kws: keyword-spotting TCN (40 features, 6 causal convs of 64 channels, kernel 3,
dilations 1..32, linear head on the last frame); activity: 6 IMU features, three convs
of kernel 5 with two stride-2 max pools, global average over 128 frames; tiny: 3
features, two 8-channel convs of kernel 3; spectrogram: a 2-D CNN over 40 mel bands.
Weights are seeded random: the cost and the exactness are real, the outputs are not.
"""
import os
import sys

import deepshift_edge as dse
from deepshift_edge.data import examples

HERE = os.path.dirname(os.path.abspath(__file__))


def build(directory: str = HERE) -> list:
    paths = []
    for name, factory in examples.EXAMPLES.items():
        path = os.path.join(directory, f"{name}.npz")
        dse.save(factory(), path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for path in build(sys.argv[1] if len(sys.argv) > 1 else HERE):
        print("wrote", path)
