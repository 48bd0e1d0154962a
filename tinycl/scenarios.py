"""Scenarios: a data set cut into a stream of experiences, `for exp in scenario.train: learner.partial_fit(exp)`.

The builders here are generic; tinycl.protocols.PROTOCOLS names them and the standard benchmarks' protocols,
and is the one table a run config's `data.protocol` resolves through.

Every sample carries an id, unique in the scenario (train ids first, then test ids), so a frozen stage's
latent of a sample is computed once and cached. `test[j]` holds the test data of the classes that first
appear in experience j (empty when j brings no new class), so R[i, j] reads "accuracy on what experience j
introduced, after training on experience i".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinycl.data.dataset import Dataset
from tinycl.errors import ConfigError

__all__ = ["Experience", "Scenario", "class_incremental", "nic_stream", "hold_out", "validation_split"]


@dataclass(frozen=True)
class Experience:
    index: int
    x: np.ndarray
    y: np.ndarray
    ids: np.ndarray
    classes: tuple[int, ...]  # classes present in this experience

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Scenario:
    name: str
    train: tuple[Experience, ...]
    test: tuple[Experience, ...]
    n_classes: int
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.train)

    def seen_test(self, i: int) -> Experience:
        """All test data of the classes seen up to experience i."""
        parts = [e for e in self.test[: i + 1] if len(e)]
        return Experience(i, np.concatenate([e.x for e in parts]), np.concatenate([e.y for e in parts]),
                          np.concatenate([e.ids for e in parts]), tuple(c for e in parts for c in e.classes))


def _experience(i, ds_x, ds_y, idx, id_offset=0):
    y = ds_y[idx]
    return Experience(i, ds_x[idx], y, idx + id_offset, tuple(int(c) for c in np.unique(y)))


def _tests(ds: Dataset, new_classes: list[list[int]]) -> tuple[Experience, ...]:
    offset = len(ds.y_train)
    return tuple(_experience(i, ds.x_test, ds.y_test, np.flatnonzero(np.isin(ds.y_test, cls)), offset)
                 for i, cls in enumerate(new_classes))


def class_incremental(ds: Dataset, *, first_classes: int = 2, classes_per_experience: int = 2,
                      class_order: list[int] | None = None, rng: np.random.Generator | None = None) -> Scenario:
    """Experience 0 holds `first_classes` classes, each later one the next `classes_per_experience` classes.

    class_order: a permutation of the labels; default: 0..C-1 (or shuffled by `rng` if given)."""
    n = ds.n_classes
    if class_order is None:
        class_order = list(rng.permutation(n)) if rng is not None else list(range(n))
    if sorted(class_order) != list(range(n)):
        raise ConfigError(f"class_order must be a permutation of 0..{n - 1}, got {class_order}")
    if not 1 <= first_classes <= n:
        raise ConfigError(f"data.first_classes must be in 1..{n} (the classes of {ds.name!r}), got {first_classes}")
    if not 1 <= classes_per_experience <= max(n - first_classes, 1):
        raise ConfigError(f"data.classes_per_experience must be in 1..{max(n - first_classes, 1)} (the classes of "
                          f"{ds.name!r} after experience 0), got {classes_per_experience}")
    groups = [class_order[:first_classes]]
    groups += [class_order[i: i + classes_per_experience] for i in range(first_classes, n, classes_per_experience)]
    train = tuple(_experience(i, ds.x_train, ds.y_train, np.flatnonzero(np.isin(ds.y_train, g)))
                  for i, g in enumerate(groups))
    return Scenario(f"{ds.name}-ci", train, _tests(ds, groups), n, ds.classes)


def nic_stream(ds: Dataset, *, first_classes: int = 10, first_size: int = 3000, batch_size: int = 300,
               rng: np.random.Generator) -> Scenario:
    """A NIC-style stream (new instances and classes): experience 0 has `first_size` samples of
    `first_classes` random classes; every later experience holds `batch_size` samples of a single class,
    drawn without replacement from the remaining data of all classes, in random order."""
    n = ds.n_classes
    if not 1 <= first_classes <= n:
        raise ConfigError(f"first_classes must be in 1..{n}, got {first_classes}")
    if batch_size < 1 or first_size < first_classes:
        raise ConfigError("batch_size must be >= 1 and first_size >= first_classes")
    first = rng.permutation(n)[:first_classes]
    pool = rng.permutation(np.flatnonzero(np.isin(ds.y_train, first)))
    # equal share per first class, as NICv2's batch 0 takes one object (session) per class
    per_class = first_size // first_classes
    first_idx = np.concatenate([pool[ds.y_train[pool] == c][:per_class] for c in first])
    rest = np.setdiff1d(np.arange(len(ds.y_train)), first_idx)
    batches = []
    for c in range(n):
        idx = rng.permutation(rest[ds.y_train[rest] == c])
        batches += [idx[i: i + batch_size] for i in range(0, len(idx) - batch_size + 1, batch_size)]
    order = rng.permutation(len(batches))
    stream = [np.sort(first_idx)] + [np.sort(batches[k]) for k in order]
    train = tuple(_experience(i, ds.x_train, ds.y_train, idx) for i, idx in enumerate(stream))
    seen: set[int] = set()
    new_classes = []
    for e in train:
        new_classes.append([c for c in e.classes if c not in seen])
        seen.update(e.classes)
    return Scenario(f"{ds.name}-nic", train, _tests(ds, new_classes), n, ds.classes)



def _keep_train(ds: Dataset, keep: np.ndarray) -> Dataset:
    """ds with only the training samples where `keep` (per-sample train_* meta arrays follow them)."""
    meta = {k: (np.asarray(v)[keep] if k.startswith("train_") and isinstance(v, np.ndarray | list)
                and len(v) == len(keep) else v) for k, v in ds.meta.items()}
    return Dataset(ds.name, ds.x_train[keep], ds.y_train[keep], ds.x_test, ds.y_test, ds.classes, meta)


def hold_out(ds: Dataset, share: float, rng: np.random.Generator) -> tuple[Dataset, Experience]:
    """Split about `share` of the training data off as pre-deployment data, disjoint from the continual stream.

    Whole groups (meta "train_groups": the speakers of Speech Commands, the subjects of HAR) when the loader
    gives them, drawn at random until they hold `share` of the samples: the model is then pre-trained on other
    people than the ones it meets on the device. Without groups, a class-stratified random share. Returns (the
    data set the stream is cut from, the pre-deployment data as an Experience of index -1)."""
    if not 0 < share < 1:
        raise ConfigError(f"model.pretrain_share must be in (0, 1), got {share}")
    n = len(ds.y_train)
    groups = ds.meta.get("train_groups")
    if isinstance(groups, np.ndarray | list) and len(groups) == n:
        groups = np.asarray(groups)
        names, counts = np.unique(groups, return_counts=True)
        order = rng.permutation(len(names))
        taken = order[: int(np.searchsorted(np.cumsum(counts[order]), share * n)) + 1]
        pre = np.isin(groups, names[taken])
    else:
        pre = np.zeros(n, bool)
        for c in np.unique(ds.y_train):
            idx = np.flatnonzero(ds.y_train == c)
            pre[rng.choice(idx, size=max(1, round(share * len(idx))), replace=False)] = True
    return _keep_train(ds, ~pre), _experience(-1, ds.x_train, ds.y_train, np.flatnonzero(pre))


def validation_split(ds: Dataset, share: float, rng: np.random.Generator) -> Dataset:
    """The data set with about `share` of its training data (class-stratified, or whole groups where the loader
    names them) as its test data, and the rest as its training data: for choosing hyperparameters without
    reading the real test set."""
    if not 0 < share < 1:
        raise ConfigError(f"data.validation must be in (0, 1), got {share}")
    rest, held = hold_out(ds, share, rng)
    groups = ds.meta.get("train_groups")
    meta = dict(rest.meta)
    meta.update({k: v for k, v in ds.meta.items() if not k.startswith(("train_", "test_"))})
    if isinstance(groups, np.ndarray | list) and len(groups) == len(ds.y_train):
        meta["test_groups"] = np.asarray(groups)[held.ids]
    return Dataset(ds.name, rest.x_train, rest.y_train, held.x, held.y, ds.classes, meta)
