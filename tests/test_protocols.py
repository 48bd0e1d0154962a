"""Named protocols: structure checked by hand counts on small data sets, and split-MNIST on the real MNIST."""

from types import SimpleNamespace

import numpy as np
import pytest
from conftest import require_shared_data

from tinycl.data.dataset import Dataset
from tinycl.errors import ConfigError
from tinycl.protocols import PROTOCOLS, build_protocol


def _ds(name, n_classes, per_class=(12, 4), groups=False):
    rng = np.random.default_rng(0)
    y_tr = np.repeat(np.arange(n_classes), per_class[0])
    y_te = np.repeat(np.arange(n_classes), per_class[1])
    meta = {"train_groups": np.arange(len(y_tr)) % 7, "test_groups": np.arange(len(y_te)) % 7 + 7} if groups else {}
    return Dataset(name, rng.normal(size=(len(y_tr), 2)).astype(np.float32), rng.permutation(y_tr),
                   rng.normal(size=(len(y_te), 2)).astype(np.float32), y_te,
                   tuple(f"c{k}" for k in range(n_classes)), meta)


def _check_conventions(sc, ds):
    """ids: train 0..n_train-1 (each once at most), test offset by n_train; test[j] = classes new in j."""
    train_ids = np.concatenate([e.ids for e in sc.train])
    assert len(np.unique(train_ids)) == len(train_ids) and train_ids.max() < len(ds.y_train)
    seen = set()
    for e, t in zip(sc.train, sc.test, strict=True):
        assert np.array_equal(e.y, ds.y_train[e.ids]) and np.array_equal(e.x, ds.x_train[e.ids])
        new = set(e.classes) - seen
        seen |= set(e.classes)
        assert set(t.classes) == new and np.array_equal(np.sort(t.ids - len(ds.y_train)),
                                                        np.flatnonzero(np.isin(ds.y_test, list(new))))


@pytest.mark.parametrize("name,dataset", [("split-mnist", "mnist"), ("split-cifar10", "cifar10")])
def test_split_ten_classes(name, dataset):
    ds = _ds(dataset, 10)
    sc = build_protocol(name, ds, rng=np.random.default_rng(0))
    assert sc.name == name and len(sc) == 5
    assert [e.classes for e in sc.train] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert all(len(e) == 24 for e in sc.train)
    _check_conventions(sc, ds)
    shuffled = build_protocol(name, ds, rng=np.random.default_rng(3), shuffle=True)
    again = build_protocol(name, ds, rng=np.random.default_rng(3), shuffle=True)
    assert [e.classes for e in shuffled.train] == [e.classes for e in again.train]  # same seed, same order
    order = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert build_protocol(name, ds, class_order=order).train[0].classes == (8, 9)


def test_har_ci():
    ds = _ds("har", 6, groups=True)
    sc = build_protocol("har-ci", ds)
    assert [e.classes for e in sc.train] == [(0, 1), (2, 3), (4, 5)]
    _check_conventions(sc, ds)


def test_kws_ci_drop_and_first():
    ds = _ds("speech_commands", 12, groups=True)
    dropped = build_protocol("kws-ci", ds)
    assert dropped.n_classes == 10 and dropped.class_names == ds.classes[2:]
    assert [e.classes for e in dropped.train] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    # labels are keyword indices: experience 0 holds the clips of dataset classes 2 and 3 (yes, no)
    assert len(dropped.train[0]) == 24 and sum(len(e) for e in dropped.train) == 120
    first = build_protocol("kws-ci", ds, filler="first")
    assert [e.classes for e in first.train] == [(0, 1, 2, 3), (4, 5), (6, 7), (8, 9), (10, 11)]
    _check_conventions(first, ds)
    with pytest.raises(ConfigError, match="filler 'x' not allowed; allowed: drop, first"):
        build_protocol("kws-ci", ds, filler="x")


def test_nic_mirrors_nicv2_statistics():
    ds = _ds("any", 10, per_class=(400, 10))  # 4,000 training samples
    sc = build_protocol("nic", ds, rng=np.random.default_rng(1))
    # defaults: 10/5 = 2 classes first, 2.5% = 100 samples, then batches of 0.25% = 10 samples of one class
    assert len(sc.train[0].classes) == 2 and len(sc.train[0]) == 100
    assert all(len(e.classes) == 1 and len(e) == 10 for e in sc.train[1:])
    assert len(sc) == 1 + (4000 - 100) // 10
    _check_conventions(sc, ds)
    again = build_protocol("nic", ds, rng=np.random.default_rng(1))
    assert all(np.array_equal(a.ids, b.ids) for a, b in zip(sc.train, again.train, strict=True))
    small = build_protocol("nic", ds, rng=np.random.default_rng(1), first_classes=3, first_size=30, batch_size=50)
    assert len(small.train[0].classes) == 3 and len(small.train[1]) == 50
    with pytest.raises(ConfigError, match="needs an rng"):
        build_protocol("nic", ds)


def test_errors_list_what_is_allowed():
    with pytest.raises(ConfigError, match="unknown protocol 'split-svhn'; allowed: class_incremental, split-mnist, "
                                          "split-cifar10, core50-nicv2-391, nic, har-ci, kws-ci"):
        build_protocol("split-svhn", _ds("mnist", 10))
    with pytest.raises(ConfigError, match="protocol split-mnist is defined on data set mnist, got cifar10"):
        build_protocol("split-mnist", _ds("cifar10", 10))
    with pytest.raises(ConfigError, match=r"unknown parameters \['epochs'\]; allowed: class_order, shuffle"):
        build_protocol("split-mnist", _ds("mnist", 10), epochs=3)
    with pytest.raises(ConfigError, match="class_order must be a permutation of 0..9"):
        build_protocol("split-mnist", _ds("mnist", 10), class_order=[0, 1])


def test_config_object_supplies_named_parameters():
    cfg = SimpleNamespace(run=0, class_order=(5, 4, 3, 2, 1, 0), first_classes=5, other=1)  # a run's DataConfig
    sc = PROTOCOLS["har-ci"](_ds("har", 6), rng=np.random.default_rng(0), config=cfg)
    assert [e.classes for e in sc.train] == [(4, 5), (2, 3), (0, 1)]  # class_order used, the rest ignored
    cfg = SimpleNamespace(class_order=None)  # None: the protocol's default
    assert PROTOCOLS["har-ci"](_ds("har", 6), config=cfg).train[2].classes == (4, 5)


def test_split_mnist_on_real_mnist():
    from tinycl.data.mnist import load_mnist

    root = require_shared_data("mnist/train-images-idx3-ubyte.gz")
    ds = load_mnist(root)
    sc = build_protocol("split-mnist", ds, rng=np.random.default_rng(0))
    assert [len(e) for e in sc.train] == [5923 + 6742, 5958 + 6131, 5842 + 5421, 5918 + 6265, 5851 + 5949]
    assert [len(t) for t in sc.test] == [980 + 1135, 1032 + 1010, 982 + 892, 958 + 1028, 974 + 1009]
    _check_conventions(sc, ds)


def test_run_config_resolves_through_the_one_table():
    """data.protocol names a PROTOCOLS entry: class_incremental in label order, and nic with NICv2's shares
    where data.first_size / data.batch_size are unset; an unknown name lists the table."""
    from tinycl.config import DataConfig

    ds = _ds("any", 10, per_class=(400, 10))
    ci = DataConfig(name="digits", protocol="class_incremental", first_classes=4, classes_per_experience=3)
    sc = PROTOCOLS[ci.protocol](ds, rng=np.random.default_rng(0), config=ci)
    assert [e.classes for e in sc.train] == [(0, 1, 2, 3), (4, 5, 6), (7, 8, 9)] and sc.name == "any-ci"
    _check_conventions(sc, ds)
    nic = DataConfig(name="digits", protocol="nic", first_classes=2)
    sc = PROTOCOLS[nic.protocol](ds, rng=np.random.default_rng(1), config=nic)
    assert len(sc.train[0]) == 100 and all(len(e) == 10 for e in sc.train[1:])  # 2.5% and 0.25% of 4,000
    with pytest.raises(ConfigError, match="data.protocol 'nicv3' is not known; allowed: class_incremental, "):
        DataConfig(protocol="nicv3")
