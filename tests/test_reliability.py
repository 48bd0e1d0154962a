"""Issue 16's malformed cases as regression tests: every config case ends in one line naming the key, exit 2,
nothing written; corrupted data files are refused by their loader and shown as error rows by `tinycl data list`."""

import gzip
import os
import tarfile

import numpy as np
import pytest
from data_fixtures import write_mnist

from tinycl.cli import main
from tinycl.data.catalog import catalog
from tinycl.data.files import tar_names
from tinycl.errors import DataError

BASE = '[data]\nn_train = 200\nn_test = 50\n[model]\npretrain_epochs = 1\n[train]\nepochs = 1\n'

# (override, text the one-line error must hold): the 27 accepted-nonsense values and the tracebacks that
# a value caused; each names its full key path
VALUES = [(f"{k}={v}", k) for k in ("train.lr", "train.first_lr", "train.weight_decay", "distill.lr",
                                    "growth.factor", "growth.max_factor", "growth.start_factor")
          for v in ("nan", "inf")] + [
    ("data.n_train=-1", "data.n_train"), ("data.n_train=0", "data.n_train"), ("data.n_train=1", "data.n_train"),
    ("data.n_test=0", "data.n_test"), ("data.n_test=-5", "data.n_test"), ("data.run=-1", "data.run"),
    ("data.classes_per_experience=100", "data.classes_per_experience"),
    ("memory.capacity=1000000000", "memory.capacity"), ("memory.capacity=1000000000000", "memory.capacity"),
    ("train.lr=1e308", "train.lr"), ("seed=-1", "seed"), ("seed=18446744073709551616", "seed"),
    ("train.batch_size=9223372036854775807", "train.batch_size"), ("train.batch_size=1000000000", "train.batch_size"),
    ("data.options.features={f_max = 9000.0}", "data.options"), ("data.root='a\nb'", "data.root"),
]


def _run(tmp_path, capsys, config, *overrides) -> str:
    out = tmp_path / "out"
    code = main(["run", str(config), "--out", str(out), "--no-progress", *[a for o in overrides for a in ("--set", o)]])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not out.exists(), "nothing may be written"
    return err


@pytest.mark.parametrize("override,key", VALUES)
def test_nonsense_value_is_one_line_naming_its_key(tmp_path, capsys, override, key):
    config = tmp_path / "c.toml"
    config.write_text(BASE)
    assert key in _run(tmp_path, capsys, config, override)


FILES = {
    "invalid UTF-8": b'strategy = "naive"\n# \xff\xfe\n',
    "nested arrays": b"seed = " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "nested tables": b"seed = " + b"{a = " * 3000 + b"1" + b"}" * 3000 + b"\n",
    "deep but parsable": b"[data.options]\nx = [[[[[[[[[[1]]]]]]]]]]\n",
}


@pytest.mark.parametrize("case", sorted(FILES))
def test_bad_config_files(tmp_path, capsys, case):
    config = tmp_path / "c.toml"
    config.write_bytes(FILES[case])
    assert "config file" in _run(tmp_path, capsys, config)


def test_config_paths_that_are_not_files(tmp_path, capsys):
    assert "not a regular file" in _run(tmp_path, capsys, tmp_path)
    assert "not a regular file" in _run(tmp_path, capsys, "/dev/null")  # a character device
    odd = tmp_path / "a\nb.toml"
    assert "not found" in _run(tmp_path, capsys, odd)  # repr keeps the newline on one line


def test_classes_beyond_the_data_set(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(BASE)
    assert "digits data set has 10 classes" in _run(tmp_path, capsys, config, "data.first_classes=11")


# -- data files ----------------------------------------------------------------------------------------------
def test_mnist_with_zero_images_is_refused_and_listed_as_error(tmp_path):
    write_mnist(tmp_path, np.random.default_rng(0))
    head = (2051).to_bytes(4, "big") + (0).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(head))
    rows = {e.name: e for e in catalog(tmp_path)}
    assert rows["mnist"].status == "error" and "expected at least one 28x28 image" in rows["mnist"].note
    assert rows["digits"].status == "found"  # the listing went on


def test_tar_cut_at_a_member_boundary_is_refused(tmp_path):
    for i in range(4):
        (tmp_path / f"f{i}.bin").write_bytes(os.urandom(2000))
    with tarfile.open(tmp_path / "a.tar", "w") as tar:
        for i in range(4):
            tar.add(tmp_path / f"f{i}.bin", arcname=f"f{i}.bin")
    with tarfile.open(tmp_path / "a.tar") as tar:
        cut = tar.getmembers()[2].offset
    raw = (tmp_path / "a.tar").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(gzip.compress(raw[:cut]))  # a complete gzip of a cut tar
    (tmp_path / "half.tar.gz").write_bytes(gzip.compress(raw)[: len(gzip.compress(raw)) // 2])
    assert len(tar_names(tmp_path / "a.tar")) == 4
    for name in ("cut.tar.gz", "half.tar.gz"):
        with pytest.raises(DataError, match="truncated or corrupt archive"):
            tar_names(tmp_path / name)


def test_cifar_batch_with_short_labels_is_refused(tmp_path):
    from data_fixtures import cifar_batches, write_cifar_batches

    from tinycl.data.cifar10 import load_cifar10

    batches = cifar_batches(np.random.default_rng(0), per_batch=10)
    batches["data_batch_2"][b"labels"] = batches["data_batch_2"][b"labels"][:5]
    write_cifar_batches(tmp_path / "cifar10" / "cifar-10-batches-py", batches)
    with pytest.raises(DataError, match="10 images but labels of shape"):
        load_cifar10(tmp_path, cache=False)


def test_har_with_nan_signals_is_refused(tmp_path):
    from tinycl.data.har import load_har

    n = 2000
    (tmp_path / "har").mkdir()
    sig = np.zeros((n, 6), np.float32)
    sig[5, 2] = np.nan
    np.savez(tmp_path / "har" / "hapt_raw_50hz.npz", signals=sig, label=np.ones(n, np.int8),
             subject=np.full(n, 2, np.int8), experiment=np.ones(n, np.int16))
    with pytest.raises(DataError, match="finite"):
        load_har(tmp_path, cache=False)
    np.savez(tmp_path / "har" / "hapt_raw_50hz.npz", signals=np.zeros((n, 6), np.float32),
             label=np.full(n, np.nan), subject=np.full(n, 2, np.int8), experiment=np.ones(n, np.int16))
    with pytest.raises(DataError, match="expected integers"):
        load_har(tmp_path, cache=False)
