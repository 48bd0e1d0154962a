"""scikit-learn's bundled handwritten digits (1,797 8x8 images, values 0..16): the embedded default data
set, needing no files outside the installed packages."""

from __future__ import annotations

import numpy as np

from tinycl.data.dataset import Dataset

__all__ = ["load_digits"]


def load_digits(root=None) -> Dataset:
    """Train/test split fixed by the data set (not the run seed): every 4th image of each class is test."""
    from sklearn.datasets import load_digits as sk_load

    bunch = sk_load()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]  # (1797, 1, 8, 8) in [0, 1]
    y = bunch.target.astype(np.int64)
    test = np.zeros(len(y), dtype=bool)
    for c in range(10):
        test[np.flatnonzero(y == c)[::4]] = True
    return Dataset("digits", x[~test], y[~test], x[test], y[test], tuple(str(c) for c in range(10)),
                   {"source": "sklearn.datasets.load_digits", "raw_bits": 5})
