"""MNIST loader: the official IDX files (real data when present, else skipped) and small IDX fixtures."""

import gzip
import os

import numpy as np
import pytest
from conftest import require_shared_data
from data_fixtures import idx_bytes, write_mnist

from tinycl.data.mnist import count_mnist, load_mnist
from tinycl.errors import DataError

# The official per-digit counts of MNIST (LeCun et al.), train and t10k.
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_real_mnist_counts_and_classes():
    root = require_shared_data("mnist/train-images-idx3-ubyte.gz")
    assert count_mnist(root) == (60000, 10000)  # from the headers alone
    ds = load_mnist(root)
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    assert np.bincount(ds.y_train).tolist() == TRAIN_COUNTS
    assert np.bincount(ds.y_test).tolist() == TEST_COUNTS
    assert ds.y_train[:3].tolist() == [5, 0, 4] and ds.y_test[:3].tolist() == [7, 2, 1]  # the famous first digits
    assert ds.x_train.max() == 255 and ds.x_train[:, :, 0, 0].max() == 0  # ink on a black border
    cached = load_mnist(root)  # second load: from the cache, identical
    assert np.array_equal(cached.x_train, ds.x_train) and np.array_equal(cached.y_test, ds.y_test)


def test_fixture_roundtrip_gz_and_plain(tmp_path):
    a = write_mnist(tmp_path, np.random.default_rng(0))
    ds = load_mnist(tmp_path, cache=False)
    assert np.array_equal(ds.x_train[:, 0], a["x_train"]) and np.array_equal(ds.y_train, a["y_train"])
    assert np.array_equal(ds.x_test[:, 0], a["x_test"]) and np.array_equal(ds.y_test, a["y_test"])
    # uncompressed files (as some unpackers leave them) read the same
    for f in (tmp_path / "mnist").glob("*.gz"):
        f.with_suffix("").write_bytes(gzip.decompress(f.read_bytes()))
        f.unlink()
    plain = load_mnist(tmp_path, cache=False)
    assert np.array_equal(plain.x_train, ds.x_train)


def test_wrong_magic_names_file(tmp_path):
    write_mnist(tmp_path, np.random.default_rng(0))
    bad = tmp_path / "mnist" / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(idx_bytes(np.zeros((50, 28, 28), np.uint8))))  # an image file posing as labels
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: IDX magic number 2051, expected 2049"):
        load_mnist(tmp_path, cache=False)


def test_truncated_file_names_file(tmp_path):
    write_mnist(tmp_path, np.random.default_rng(0))
    f = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:200])  # a cut-off download: gzip stream ends early
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz"):
        load_mnist(tmp_path, cache=False)
    f.write_bytes(gzip.compress(idx_bytes(np.zeros((20, 28, 28), np.uint8))[:-100]))  # complete gzip, short data
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: truncated"):
        load_mnist(tmp_path, cache=False)


def test_missing_file_names_it(tmp_path):
    write_mnist(tmp_path, np.random.default_rng(0))
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz not found: expected mnist/"):
        load_mnist(tmp_path)


def test_cache_is_keyed_by_size_and_mtime(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("TINYCL_CACHE", str(cache))
    a = write_mnist(tmp_path, np.random.default_rng(0))
    first = load_mnist(tmp_path)
    entries = list(cache.glob("mnist-*.npz"))
    assert len(entries) == 1 and not list(cache.glob("*.tmp"))  # one entry, no temporary left behind
    assert np.array_equal(load_mnist(tmp_path).x_train, first.x_train)
    # new labels in the same file name: new size/mtime -> new entry, new content
    labels = tmp_path / "mnist" / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes((a["y_train"] + 1) % 10)))
    os.utime(labels, ns=(1, 1))
    assert np.array_equal(load_mnist(tmp_path).y_train, (a["y_train"] + 1) % 10)
    assert len(list(cache.glob("mnist-*.npz"))) == 2


def test_corrupt_or_unwritable_cache_is_not_required(tmp_path, monkeypatch):
    write_mnist(tmp_path, np.random.default_rng(0))
    cache = tmp_path / "cache"
    monkeypatch.setenv("TINYCL_CACHE", str(cache))
    ref = load_mnist(tmp_path)
    entry = next(cache.glob("mnist-*.npz"))
    entry.write_bytes(b"not a zip")  # a corrupt entry is decoded again and replaced
    assert np.array_equal(load_mnist(tmp_path).x_test, ref.x_test)
    assert np.load(entry)["x_test"].shape == ref.x_test.shape
    blocker = tmp_path / "file"
    blocker.write_text("x")  # the cache "directory" is a file: writing fails, loading still works
    assert np.array_equal(load_mnist(tmp_path, cache=blocker / "sub").x_train, ref.x_train)
    off = load_mnist(tmp_path, cache=False)
    assert np.array_equal(off.y_train, ref.y_train)
