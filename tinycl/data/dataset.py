"""A data set is just arrays: train and test inputs (float32, batch first) and integer labels."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tinycl.errors import DataError

__all__ = ["Dataset", "to_float"]


def to_float(x: np.ndarray) -> np.ndarray:
    """The network's float32 input: uint8 pixels scaled to [0, 1], float data unchanged."""
    x = np.asarray(x)
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32, copy=False)


@dataclass(frozen=True)
class Dataset:
    """x_*: (N, *sample_shape), images uint8 CHW (0..255, as stored), other data float32 (e.g. audio
    features, sensor windows); `to_float` gives the network's input. y_*: (N,) int64 labels in
    [0, len(classes)).

    meta: loader facts, e.g. "source" (the path read), "train_groups"/"test_groups" (speaker or subject of
    each sample), "raw_bits" (bits per value of the input as originally stored)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        """Every loader's output passes here, so these are checked once for all of them (built-in or not)."""
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise DataError(f"{self.name}: class names must be distinct and at least one, got {self.classes}")
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if len(x) != len(y):
                raise DataError(f"{self.name}: {len(x)} {split} inputs but {len(y)} labels; expected equal counts")
            if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
                raise DataError(f"{self.name}: {split} labels are {y.dtype} of shape {y.shape}; expected integers (N,)")
            if len(y) and (y.min() < 0 or y.max() >= len(self.classes)):
                raise DataError(f"{self.name}: {split} labels outside 0..{len(self.classes) - 1} "
                                f"({len(self.classes)} classes)")
            if x.dtype.kind not in "uif":
                raise DataError(f"{self.name}: {split} inputs are {x.dtype}; expected numbers (uint8 or float)")
            if x.dtype.kind == "f" and not np.isfinite(x).all():
                bad = int(np.size(x) - np.isfinite(x).sum())
                raise DataError(f"{self.name}: {split} inputs hold {bad:,} NaN or infinite values; expected finite")
        if len(self.y_train) == 0:
            raise DataError(f"{self.name}: no training samples; expected at least one")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(f"{self.name}: train samples {self.x_train.shape[1:]} != test {self.x_test.shape[1:]}")

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def subset(self, n_train: int | None, n_test: int | None, rng: np.random.Generator) -> Dataset:
        """A class-stratified random subset (for quick runs); None keeps a split whole."""
        for key, n in (("n_train", n_train), ("n_test", n_test)):
            if n is not None and n < self.n_classes:
                raise DataError(f"data.{key} = {n} is fewer than the {self.n_classes} classes of {self.name}; a "
                                f"class-stratified subset needs at least one sample per class")

        def pick(y, n):
            if n is None or n >= len(y):
                return np.arange(len(y))
            idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[: max(1, round(n * np.mean(y == c)))]
                                  for c in np.unique(y)])
            return np.sort(idx)
        tr, te = pick(self.y_train, n_train), pick(self.y_test, n_test)
        meta = dict(self.meta)
        # per-sample arrays in meta (train_groups, test_files, ...) follow their split
        for prefix, idx, n in (("train_", tr, len(self.y_train)), ("test_", te, len(self.y_test))):
            for key, value in self.meta.items():
                if key.startswith(prefix) and isinstance(value, np.ndarray | list) and len(value) == n:
                    meta[key] = np.asarray(value)[idx]
        return Dataset(self.name, self.x_train[tr], self.y_train[tr], self.x_test[te], self.y_test[te],
                       self.classes, meta)
