"""Named continual-learning protocols: the standard ways each benchmark is cut into experiences.

    scenario = PROTOCOLS["split-mnist"](load_mnist(root), rng=np.random.default_rng(0))

Each entry is a builder `(dataset, *, rng, **params) -> Scenario`; `build_protocol(name, ...)` does the same
with errors that list the allowed names and parameters. This is the one table of scenarios: a run config's
`data.protocol` names an entry, and its other `data.*` keys named like the builder's parameters fill them.
Conventions are tinycl.scenarios': train sample ids 0..n_train-1, test ids offset by n_train, test[j] = test
data of the classes first seen in experience j.

| name | data set | experiences |
| --- | --- | --- |
| class_incremental | any | first_classes classes, then classes_per_experience at a time, in class_order (label order) |
| split-mnist | mnist | 5 x 2 digits, {0,1}, {2,3}, ... (class-incremental) |
| split-cifar10 | cifar10 | 5 x 2 classes in label order (class-incremental) |
| core50-nicv2-391 | core50 | the official NICv2-391 run (0..9): batch 0 = 10 classes, then 390 one-class batches |
| nic | any | NICv2's statistics on any labelled data set: K classes first, then single-class batches |
| har-ci | har | 3 x 2 activities in label order |
| kws-ci | speech_commands | 5 x 2 of the 10 keywords (speaker-disjoint train/test from the loader) |
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tinycl.data.dataset import Dataset
from tinycl.errors import ConfigError, DataError
from tinycl.scenarios import Experience, Scenario, class_incremental, nic_stream

__all__ = ["PROTOCOLS", "Protocol", "build_protocol", "class_incremental_order", "split_mnist", "split_cifar10",
           "core50_nicv2_391", "nic", "har_ci", "kws_ci"]

# NICv2-391's proportions: batch 0 holds 10 of the 50 classes and 2,999 of the 119,894 training images
# (2.5%); each later batch 300 images (0.25%) of one class.
NIC_FIRST_CLASS_SHARE, NIC_FIRST_SHARE, NIC_BATCH_SHARE = 10 / 50, 3000 / 119894, 300 / 119894


def _order(n: int, class_order, shuffle: bool, rng: np.random.Generator | None) -> list[int]:
    if class_order is not None:
        order = [int(c) for c in class_order]
        if sorted(order) != list(range(n)):
            raise ConfigError(f"class_order must be a permutation of 0..{n - 1}, got {order}")
        return order
    if shuffle:
        if rng is None:
            raise ConfigError("shuffle=True needs an rng")
        return [int(c) for c in rng.permutation(n)]
    return list(range(n))


def _named(scenario: Scenario, name: str) -> Scenario:
    return Scenario(name, scenario.train, scenario.test, scenario.n_classes, scenario.class_names)


def class_incremental_order(ds: Dataset, *, rng: np.random.Generator | None = None, first_classes: int = 2,
                            classes_per_experience: int = 2, class_order=None) -> Scenario:
    """Class-incremental on any data set: `first_classes` classes first, then `classes_per_experience` at a
    time, in `class_order` (default: label order; rng unused, the order is never drawn)."""
    order = _order(ds.n_classes, class_order, False, None)
    return class_incremental(ds, first_classes=first_classes, classes_per_experience=classes_per_experience,
                             class_order=order)


def split_mnist(ds: Dataset, *, rng: np.random.Generator | None = None, class_order=None,
                shuffle: bool = False) -> Scenario:
    """Split-MNIST, class-incremental: 5 experiences of 2 digits, {0,1}, {2,3}, {4,5}, {6,7}, {8,9}.
    class_order: another permutation of 0..9; shuffle: draw one from rng."""
    order = _order(ds.n_classes, class_order, shuffle, rng)
    return _named(class_incremental(ds, first_classes=2, classes_per_experience=2, class_order=order), "split-mnist")


def split_cifar10(ds: Dataset, *, rng: np.random.Generator | None = None, class_order=None,
                  shuffle: bool = False) -> Scenario:
    """Split-CIFAR-10, class-incremental: 5 experiences of 2 classes in label order (airplane+automobile, ...).
    class_order: another permutation of 0..9; shuffle: draw one from rng."""
    order = _order(ds.n_classes, class_order, shuffle, rng)
    return _named(class_incremental(ds, first_classes=2, classes_per_experience=2, class_order=order),
                  "split-cifar10")


def har_ci(ds: Dataset, *, rng: np.random.Generator | None = None, class_order=None, shuffle: bool = False) -> Scenario:
    """UCI HAR class-incremental: 3 experiences of 2 activities in label order (walking + upstairs,
    downstairs + sitting, standing + laying); class_order / shuffle as for split-mnist."""
    order = _order(ds.n_classes, class_order, shuffle, rng)
    return _named(class_incremental(ds, first_classes=2, classes_per_experience=2, class_order=order), "har-ci")


def kws_ci(ds: Dataset, *, rng: np.random.Generator | None = None, class_order=None, shuffle: bool = False,
           filler: str = "drop") -> Scenario:
    """Keyword spotting class-incremental over the 10 keywords: 5 experiences of 2 keywords (yes+no, up+down, ...).

    The train/test split is the loader's (speaker-disjoint). filler: "drop" removes the _silence_/_unknown_
    clips (10 classes, labels = keyword index); "first" keeps them in experience 0 beside the first two
    keywords, micro_speech's four classes. class_order: a permutation of the keyword indices 0..9."""
    if filler not in ("drop", "first"):
        raise ConfigError(f"filler {filler!r} not allowed; allowed: drop, first")
    n_kw = ds.n_classes - 2  # the loader's classes: _silence_, _unknown_, keywords...
    order = _order(n_kw, class_order, shuffle, rng)
    if filler == "first":
        order = [0, 1] + [c + 2 for c in order]
        return _named(class_incremental(ds, first_classes=4, classes_per_experience=2, class_order=order), "kws-ci")
    tr, te = ds.y_train >= 2, ds.y_test >= 2
    meta = {}
    for key, value in ds.meta.items():  # per-sample arrays (groups, files) follow the samples kept
        keep = tr if key.startswith("train_") else te if key.startswith("test_") else None
        if keep is None or not isinstance(value, np.ndarray):
            meta[key] = value
        elif len(value) == len(keep):
            meta[key] = value[keep]
        # else: an array that no longer matches the samples (e.g. after Dataset.subset): dropped
    keywords = Dataset(ds.name, ds.x_train[tr], ds.y_train[tr] - 2, ds.x_test[te], ds.y_test[te] - 2,
                       ds.classes[2:], meta)
    return _named(class_incremental(keywords, first_classes=2, classes_per_experience=2, class_order=order), "kws-ci")


def nic(ds: Dataset, *, rng: np.random.Generator, first_classes: int | None = None, first_size: int | None = None,
        batch_size: int | None = None) -> Scenario:
    """NIC (new instances and classes) on any labelled data set, mirroring NICv2-391's statistics: experience 0
    holds `first_classes` random classes (default: a fifth of them) and `first_size` samples (default 2.5% of
    the training set), each later experience `batch_size` samples of one class (default 0.25%), drawn without
    replacement in random order. On MNIST the defaults give 2 classes, 1,500 + 390 x 150 samples."""
    n_train = len(ds.y_train)
    k = first_classes or max(1, round(ds.n_classes * NIC_FIRST_CLASS_SHARE))
    size = first_size or max(k, round(n_train * NIC_FIRST_SHARE))
    batch = batch_size or max(1, round(n_train * NIC_BATCH_SHARE))
    return _named(nic_stream(ds, first_classes=k, first_size=size, batch_size=batch, rng=rng), "nic")


def core50_nicv2_391(ds: Dataset, *, rng: np.random.Generator | None = None, run: int = 0, lists=None,
                     max_batches: int | None = None) -> Scenario:
    """CORe50 NICv2-391, run 0..9 (batch orders fixed by the official lists; rng unused): experience b = the
    images of train_batch_b of the run, in list order. The data set must hold them: load it with
    load_core50(root) (all images) or load_core50(root, run=run, max_batches=...).

    lists: the protocol lists, a path or a NICv2Lists (default: the ones the loader read, ds.meta["lists"]);
    max_batches: use only the first n batches (quick runs); None: all 391."""
    from tinycl.data.core50 import NICv2Lists, read_nicv2_lists

    source = lists or ds.meta.get("lists")
    if source is None or "train_paths" not in ds.meta:
        raise ConfigError("core50-nicv2-391 needs a data set from load_core50 (meta 'lists' and 'train_paths')")
    if len(ds.meta["train_paths"]) != len(ds.y_train):
        raise ConfigError("core50-nicv2-391 needs the data set as loaded (meta 'train_paths' matches its samples); "
                          "load fewer images with load_core50(root, run=..., max_batches=...) instead of a subset")
    nic_lists = source if isinstance(source, NICv2Lists) else read_nicv2_lists(source)
    if not 0 <= run < len(nic_lists.runs):
        raise ConfigError(f"run must be in 0..{len(nic_lists.runs) - 1}, got {run}")
    batches = nic_lists.runs[run][:max_batches]
    index = {p: i for i, p in enumerate(np.asarray(ds.meta["train_paths"]).tolist())}
    train = []
    for b, (paths, labels) in enumerate(batches):
        try:
            idx = np.array([index[p] for p in paths], dtype=np.int64)
        except KeyError as err:
            raise DataError(f"run{run} train_batch_{b:02d} names {err.args[0]}, which the data set does not hold; "
                            f"load it with load_core50(root) or load_core50(root, run={run}, "
                            f"max_batches>={b + 1})") from None
        if not np.array_equal(ds.y_train[idx], labels):
            raise DataError(f"run{run} train_batch_{b:02d}: labels differ from the data set's for the same images")
        train.append(Experience(b, ds.x_train[idx], ds.y_train[idx], idx, tuple(int(c) for c in np.unique(labels))))
    seen: set[int] = set()
    test = []
    for e in train:
        new = [c for c in e.classes if c not in seen]
        seen.update(new)
        idx = np.flatnonzero(np.isin(ds.y_test, new))
        test.append(Experience(e.index, ds.x_test[idx], ds.y_test[idx], idx + len(ds.y_train),
                               tuple(int(c) for c in np.unique(ds.y_test[idx]))))
    return Scenario(f"core50-nicv2-391-run{run}", tuple(train), tuple(test), ds.n_classes, ds.classes)


@dataclass(frozen=True)
class Protocol:
    """A named builder and the data set it is defined on (None: any)."""

    name: str
    dataset: str | None
    build: Callable[..., Scenario]

    @property
    def params(self) -> tuple[str, ...]:
        """The builder's parameters besides the data set and rng."""
        return tuple(p for p in inspect.signature(self.build).parameters if p not in ("ds", "rng"))

    def __call__(self, ds: Dataset, *, rng: np.random.Generator | None = None, config=None, **params) -> Scenario:
        """Build the scenario. config: an object (e.g. the run's DataConfig) whose attributes named like this
        protocol's parameters (e.g. run, class_order), when not None, are used unless given in params."""
        if self.dataset is not None and ds.name != self.dataset:
            raise ConfigError(f"protocol {self.name} is defined on data set {self.dataset}, got {ds.name}")
        if config is not None:
            params = {**{p: getattr(config, p) for p in self.params if getattr(config, p, None) is not None}, **params}
        if unknown := sorted(set(params) - set(self.params)):
            raise ConfigError(f"protocol {self.name}: unknown parameters {unknown}; allowed: {', '.join(self.params)}")
        if rng is None and self.build is nic:  # the only builder whose result is random
            raise ConfigError(f"protocol {self.name} needs an rng (np.random.Generator)")
        return self.build(ds, rng=rng, **params)


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol("class_incremental", None, class_incremental_order),
    Protocol("split-mnist", "mnist", split_mnist),
    Protocol("split-cifar10", "cifar10", split_cifar10),
    Protocol("core50-nicv2-391", "core50", core50_nicv2_391),
    Protocol("nic", None, nic),
    Protocol("har-ci", "har", har_ci),
    Protocol("kws-ci", "speech_commands", kws_ci),
)}


def build_protocol(name: str, ds: Dataset, *, rng: np.random.Generator | None = None, **params) -> Scenario:
    """PROTOCOLS[name](ds, rng=rng, **params), with an error listing the protocols when the name is unknown."""
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {name!r}; allowed: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name](ds, rng=rng, **params)
