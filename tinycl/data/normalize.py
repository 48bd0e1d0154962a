"""Per-data-set input normalisation, fitted on the pre-deployment data and stored with the model.

    norm = Normalization.fit(to_float(x_predeploy))     # (C,) mean and std, one per input channel
    stage = NormalizedInput(frozen_stage, norm)          # tinycl.runner: normalise, then the frozen layers

A device applies the same affine map to every input before its first layer: x' = (x - mean[c]) / std[c], channel
c being axis 1 of a (N, C, ...) batch. Without it, log-mel features (about -14..10) or gyro readings in rad/s
reach the first layer at scales a learning rate tuned for [0, 1] pixels cannot handle. The two vectors are part
of the run's saved state (`to_dict`, the checkpoint); their bytes are `Normalization.nbytes`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinycl.data.dataset import to_float
from tinycl.errors import DataError

__all__ = ["Normalization"]

MIN_STD = 1e-6  # a constant channel keeps its values (std 1) rather than dividing by ~0


@dataclass(frozen=True)
class Normalization:
    """mean, std: (C,) float32, one per input channel (axis 1 of a batch)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Normalization:
        """From pre-deployment inputs (N, C, ...) (uint8 pixels are scaled to [0, 1] first, as the model reads
        them): each channel's mean and standard deviation over samples and positions."""
        x = to_float(x)
        if x.ndim < 2 or not len(x):
            raise DataError(f"normalisation needs a non-empty batch (N, C, ...), got shape {x.shape}")
        axes = (0, *range(2, x.ndim))
        mean = x.mean(axis=axes, dtype=np.float64)
        std = x.std(axis=axes, dtype=np.float64)
        return cls(mean.astype(np.float32), np.where(std < MIN_STD, 1.0, std).astype(np.float32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(N, C, ...) inputs (uint8 pixels or float) -> float32 normalised inputs, same shape."""
        x = to_float(x)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return ((x - self.mean.reshape(shape)) / self.std.reshape(shape)).astype(np.float32)

    @property
    def nbytes(self) -> int:
        return int(self.mean.nbytes + self.std.nbytes)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> Normalization:
        return cls(np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32))
