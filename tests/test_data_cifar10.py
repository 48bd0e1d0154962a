"""CIFAR-10 loader: official python batches, image folders (directory and .tar.gz), and the real JPEG archive."""

import io
import pickle
from collections import Counter

import numpy as np
import pytest
from conftest import require_shared_data
from data_fixtures import CIFAR_CLASSES, cifar_batches, tar_dir, write_cifar_batches, write_cifar_folders
from PIL import Image

from tinycl.data.cifar10 import CLASSES, count_cifar10, load_cifar10
from tinycl.data.files import iter_tar, tar_names
from tinycl.errors import DataError

REAL = "cifar10/cifar10-jpg.tar.gz"


def _expected(batches, names):
    x = np.concatenate([batches[n][b"data"] for n in names]).reshape(-1, 3, 32, 32)
    y = np.concatenate([batches[n][b"labels"] for n in names])
    return x, y


def test_python_batches_folder(tmp_path):
    batches = cifar_batches(np.random.default_rng(0))
    write_cifar_batches(tmp_path / "cifar10" / "cifar-10-batches-py", batches)
    ds = load_cifar10(tmp_path, cache=False)
    x, y = _expected(batches, [f"data_batch_{i}" for i in range(1, 6)])
    assert np.array_equal(ds.x_train, x) and np.array_equal(ds.y_train, y)
    # the official row layout: 1024 red, then 1024 green, then 1024 blue values, rows of 32
    assert ds.x_train[3, 1, 2, 5] == batches["data_batch_1"][b"data"][3, 1024 + 2 * 32 + 5]
    xt, yt = _expected(batches, ["test_batch"])
    assert np.array_equal(ds.x_test, xt) and np.array_equal(ds.y_test, yt)
    assert ds.classes == CIFAR_CLASSES and count_cifar10(tmp_path) == (100, 20)
    sub = load_cifar10(tmp_path, per_class=1, cache=False)
    assert np.bincount(sub.y_train, minlength=10).max() == 1


def test_official_python_archive(tmp_path):
    batches = cifar_batches(np.random.default_rng(1))
    write_cifar_batches(tmp_path / "src" / "cifar-10-batches-py", batches)
    (tmp_path / "cifar10").mkdir()
    tar_dir(tmp_path / "src" / "cifar-10-batches-py", tmp_path / "cifar10" / "cifar-10-python.tar.gz",
            "cifar-10-batches-py")
    ds = load_cifar10(tmp_path, cache=False)
    x, y = _expected(batches, ["test_batch"])
    assert np.array_equal(ds.x_test, x) and np.array_equal(ds.y_test, y) and len(ds.y_train) == 100


def test_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    batches = cifar_batches(np.random.default_rng(0))
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    write_cifar_batches(folder, batches)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(DataError, match=r"data_batch_3: not a readable CIFAR-10 python batch .*builtins.print"):
        load_cifar10(tmp_path, cache=False)


def test_missing_batch_names_it(tmp_path):
    write_cifar_batches(tmp_path / "cifar10" / "cifar-10-batches-py", cifar_batches(np.random.default_rng(0)))
    (tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match=r"test_batch not found: expected the official python batches"):
        load_cifar10(tmp_path)


def test_image_folders_dir_and_tar(tmp_path):
    written = write_cifar_folders(tmp_path / "cifar10", np.random.default_rng(2))
    ds = load_cifar10(tmp_path, cache=False)
    order = sorted(r for r in written if r.startswith("train/"))
    assert np.array_equal(ds.x_train, np.stack([written[r][1] for r in order]))  # PNG: lossless
    assert ds.y_train.tolist() == [written[r][0] for r in order]
    assert np.bincount(ds.y_test).tolist() == [2] * 10
    # the same folders in a .tar.gz below a top-level folder, read in place
    other = tmp_path / "other"
    (other / "cifar10").mkdir(parents=True)
    tar_dir(tmp_path / "cifar10", other / "cifar10" / "cifar10-png.tar.gz", "cifar10")
    from_tar = load_cifar10(other, cache=False)
    assert np.array_equal(from_tar.x_train, ds.x_train) and np.array_equal(from_tar.y_test, ds.y_test)
    assert count_cifar10(other) == (30, 20)
    first = load_cifar10(other, per_class=1, cache=False)
    assert np.array_equal(first.x_test, ds.x_test[::2])  # the first file of each class, by name


def test_unknown_class_folder_and_bad_image(tmp_path):
    write_cifar_folders(tmp_path / "cifar10", np.random.default_rng(3), per_class=(1, 1))
    (tmp_path / "cifar10" / "train" / "zebra").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "cifar10" / "train" / "zebra" / "0000.png")
    with pytest.raises(DataError, match=r"class folder 'zebra' is not a CIFAR-10 class; expected one of airplane"):
        load_cifar10(tmp_path, cache=False)
    (tmp_path / "cifar10" / "train" / "zebra" / "0000.png").unlink()
    Image.new("RGB", (64, 64)).save(tmp_path / "cifar10" / "train" / "cat" / "0001.png")
    with pytest.raises(DataError, match=r"cat/0001.png: image is 64x64, expected 32x32"):
        load_cifar10(tmp_path, cache=False)


def test_truncated_archive_names_file(tmp_path):
    write_cifar_folders(tmp_path / "src", np.random.default_rng(4), per_class=(2, 1))
    (tmp_path / "cifar10").mkdir()
    archive = tmp_path / "cifar10" / "cifar10-jpg.tar.gz"
    tar_dir(tmp_path / "src", archive, ".")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cifar10-jpg.tar.gz: truncated or corrupt archive"):
        load_cifar10(tmp_path, cache=False)


def test_real_cifar10_counts_and_subset():
    root = require_shared_data(REAL)
    # counts from the archive's member list (decoding all 60,000 JPEGs is for the benchmark)
    names = tar_names(root / REAL)
    per = Counter(tuple(n.split("/")[:2]) for n in names if n.endswith(".jpg"))
    assert {k: v for k, v in per.items() if k[0] == "train"} == {("train", c): 5000 for c in CLASSES}
    assert {k: v for k, v in per.items() if k[0] == "test"} == {("test", c): 1000 for c in CLASSES}
    ds = load_cifar10(root, per_class=2, cache=False)
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_train.dtype == np.uint8
    assert np.bincount(ds.y_train).tolist() == [2] * 10 and np.bincount(ds.y_test).tolist() == [2] * 10
    # reference: PIL decoding of the same members, picked independently
    want = {f"train/{c}/{n}" for c in ("airplane", "truck")
            for n in sorted(m.split("/")[-1] for m in names if m.startswith(f"train/{c}/"))[:2]}
    ref = {n: np.asarray(Image.open(io.BytesIO(b)).convert("RGB")).transpose(2, 0, 1)
           for n, b in iter_tar(root / REAL, want.__contains__)}
    for k, name in enumerate(sorted(n for n in want if "airplane" in n)):
        assert np.array_equal(ds.x_train[k], ref[name])
    assert ds.y_train[-1] == CLASSES.index("truck") and np.array_equal(ds.x_train[-1], ref[max(want)])
