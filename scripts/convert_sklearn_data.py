#!/usr/bin/env python3
"""Converts the two small real datasets that scikit-learn ships into the files under
data/. Run once; tests and `kiln` never need Python.

    python3 -m venv /tmp/skl && /tmp/skl/bin/pip install scikit-learn
    /tmp/skl/bin/python scripts/convert_sklearn_data.py

Reads scikit-learn's own data files (no download):
  sklearn/datasets/data/digits.csv.gz          -> data/digits.npz
  sklearn/datasets/data/diabetes_data_raw.csv.gz,
  sklearn/datasets/data/diabetes_target.csv.gz -> data/diabetes.csv
"""

import gzip
import os
import sys

import numpy as np
import sklearn

SRC = os.path.join(os.path.dirname(sklearn.__file__), "datasets", "data")
# The seed of the one-time shuffle of each dataset (see below).
SEED = 0
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")


def digits():
    # 1797 rows of 64 pixel counts (0..16, row-major 8x8) and the digit.
    with gzip.open(os.path.join(SRC, "digits.csv.gz"), "rt") as f:
        raw = np.loadtxt(f, delimiter=",", dtype=np.int64)
    assert raw.shape == (1797, 65), raw.shape
    pixels, labels = raw[:, :64], raw[:, 64]
    assert pixels.min() >= 0 and pixels.max() <= 16
    # Shuffle once, with a fixed seed. Keras's `validation_split` (and kiln's) holds out
    # the LAST fraction of the data, and the file's own order is not random: its last
    # 20% come from other writers than the rest (an SVM trained on the first 80% scores
    # 0.94 on them, 0.99 on a random 20%). Shuffled, the held-out part is a fair sample.
    order = np.random.default_rng(SEED).permutation(len(labels))
    pixels, labels = pixels[order], labels[order]
    image = (pixels.astype(np.float32) / np.float32(16.0)).reshape(1797, 8, 8, 1)
    label = labels.astype(np.int32)
    np.savez_compressed(os.path.join(OUT, "digits.npz"), image=image, label=label)
    print("data/digits.npz: image", image.shape, image.dtype, "label", label.shape,
          label.dtype, "classes", np.bincount(label).tolist())


def diabetes():
    # 442 rows: age, sex, bmi, bp, s1..s6 (raw units), and the disease progression.
    with gzip.open(os.path.join(SRC, "diabetes_data_raw.csv.gz"), "rt") as f:
        x = np.loadtxt(f, dtype=np.float64)
    with gzip.open(os.path.join(SRC, "diabetes_target.csv.gz"), "rt") as f:
        y = np.loadtxt(f, dtype=np.float64)
    assert x.shape == (442, 10) and y.shape == (442,), (x.shape, y.shape)
    # Standardize each feature (z-scores: mean 0, standard deviation 1), as one would
    # before a neural network; the target stays in its own units.
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    # Shuffled once too, for the same reason as the digits.
    order = np.random.default_rng(SEED).permutation(len(y))
    z, y = z[order], y[order]
    names = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    with open(os.path.join(OUT, "diabetes.csv"), "w") as f:
        f.write(",".join(names + ["progression"]) + "\n")
        for row, t in zip(z, y):
            f.write(",".join(f"{v:.6f}" for v in row) + f",{t:g}\n")
    print("data/diabetes.csv:", z.shape[0], "rows,", len(names), "features + progression")


if __name__ == "__main__":
    print("scikit-learn", sklearn.__version__, "from", SRC, file=sys.stderr)
    digits()
    diabetes()
