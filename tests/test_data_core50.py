"""CORe50: the NICv2-391 lists (real, when present) and the image loader on a fixture in the official layout
whose images are named after real lines of the shipped lists."""

import tarfile
import zipfile

import numpy as np
import pytest
from conftest import require_shared_data
from data_fixtures import write_core50

from tinycl.data.core50 import count_core50, load_core50, read_nicv2_lists
from tinycl.errors import ConfigError, DataError
from tinycl.protocols import core50_nicv2_391

LISTS = "core50/nicv2_391_filelists.tar.gz"
# Real lines of the shipped lists (run0 batches 00, 01 and 17; test_filelist.txt), checked below when present.
REAL_LINES = {
    "run0/train_batch_00_filelist.txt": ["s1/o1/C_01_01_000.png 0", "s1/o1/C_01_01_001.png 0",
                                         "s1/o11/C_01_11_000.png 10"],
    "run0/train_batch_01_filelist.txt": ["s2/o21/C_02_21_230.png 20", "s2/o21/C_02_21_223.png 20"],
    "run0/train_batch_17_filelist.txt": ["s1/o9/C_01_09_153.png 8", "s1/o9/C_01_09_090.png 8"],
    "test_filelist.txt": ["s3/o1/C_03_01_001.png 0", "s3/o1/C_03_01_002.png 0", "s3/o11/C_03_11_000.png 10",
                          "s3/o11/C_03_11_001.png 10", "s3/o21/C_03_21_000.png 20", "s3/o21/C_03_21_001.png 20",
                          "s3/o9/C_03_09_000.png 8", "s3/o9/C_03_09_001.png 8"],
}


def _fixture(root, rng_seed=0):
    """A 3-batch run0 (batches 00, 01 and, as its batch 02, the real batch 17) and an 8-line test list."""
    lists = {"run0/train_batch_00_filelist.txt": REAL_LINES["run0/train_batch_00_filelist.txt"],
             "run0/train_batch_01_filelist.txt": REAL_LINES["run0/train_batch_01_filelist.txt"],
             "run0/train_batch_02_filelist.txt": REAL_LINES["run0/train_batch_17_filelist.txt"],
             "test_filelist.txt": REAL_LINES["test_filelist.txt"]}
    return write_core50(root / "core50", np.random.default_rng(rng_seed), lists)


@pytest.fixture(scope="module")
def real_lists():
    root = require_shared_data(LISTS)
    return read_nicv2_lists(root / LISTS)


def test_real_nicv2_391_lists(real_lists):
    assert len(real_lists.runs) == 10
    union = None
    for run in real_lists.runs:
        assert len(run) == 391
        _, first = run[0]
        assert len(set(first.tolist())) == 10 and len(first) == 2999  # batch 0: ~3,000 images of 10 classes
        assert all(len(set(labels.tolist())) == 1 and len(labels) <= 300 for _, labels in run[1:])  # one class each
        paths = {p for batch, _ in run for p in batch}
        union = paths if union is None else union
        assert paths == union  # every run covers the same 119,894 images, in another order
    assert len(union) == 119894
    test_paths, test_labels = real_lists.test
    assert len(test_paths) == 44972 and len(test_paths[::20]) == 2249
    assert {p.split("/")[0] for p in test_paths} == {"s3", "s7", "s10"}  # the test sessions
    assert {p.split("/")[0] for p in union} == {f"s{k}" for k in (1, 2, 4, 5, 6, 8, 9, 11)}
    assert set(test_labels.tolist()) == set(range(50))


def test_fixture_lines_are_real(real_lists):
    for name, lines in REAL_LINES.items():
        if name == "test_filelist.txt":
            paths, labels = real_lists.test
        else:
            paths, labels = real_lists.runs[0][int(name.split("_")[2])]
        real = {f"{p} {y}" for p, y in zip(paths, labels, strict=True)}
        assert set(lines) <= real, name


def test_real_protocol_structure_without_images(real_lists, tmp_path):
    """The protocol builder on the real lists, with a stand-in data set (1x1 pixel per listed image)."""
    from tinycl.data.dataset import Dataset

    train = real_lists.train_paths()
    paths = sorted(train)
    test_paths, test_labels = real_lists.test
    ds = Dataset("core50", np.zeros((len(paths), 1, 1, 1), np.uint8), np.array([train[p] for p in paths]),
                 np.zeros((2249, 1, 1, 1), np.uint8), test_labels[::20], tuple(f"o{k}" for k in range(1, 51)),
                 {"lists": real_lists.source, "train_paths": np.array(paths)})
    for run in (0, 9):
        sc = core50_nicv2_391(ds, run=run, lists=real_lists)
        assert len(sc.train) == 391 and sc.name == f"core50-nicv2-391-run{run}"
        assert len(sc.train[0].classes) == 10 and all(len(e.classes) == 1 for e in sc.train[1:])
        assert sum(len(e) for e in sc.train) == 119894
        assert np.array_equal(np.sort(np.concatenate([e.ids for e in sc.train])), np.arange(119894))
        seen = set()
        for e, t in zip(sc.train, sc.test, strict=True):
            assert set(t.classes) == set(e.classes) - seen  # test[j]: the classes new in experience j
            seen |= set(e.classes)
        assert sum(len(t) for t in sc.test) == 2249 and seen == set(range(50))


def test_loader_on_fixture(tmp_path):
    images = _fixture(tmp_path)
    ds = load_core50(tmp_path, test_every=2, cache=False)
    assert ds.x_train.shape == (7, 3, 128, 128) and ds.x_train.dtype == np.uint8
    for split in ("train", "test"):
        for k, p in enumerate(ds.meta[f"{split}_paths"]):
            assert np.array_equal(getattr(ds, f"x_{split}")[k], images[p])  # PNG: exact pixels
            assert getattr(ds, f"y_{split}")[k] == int(p.split("/")[1][1:]) - 1  # label = object - 1
    assert list(ds.meta["test_paths"]) == [line.split()[0] for line in REAL_LINES["test_filelist.txt"][::2]]
    assert ds.meta["train_groups"].tolist() == [int(p.split("/")[0][1:]) for p in ds.meta["train_paths"]]
    assert count_core50(tmp_path) == (7, 8)
    sc = core50_nicv2_391(ds, run=0)
    assert [e.classes for e in sc.train] == [(0, 10), (20,), (8,)]
    assert [t.classes for t in sc.test] == [(0, 10), (20,), (8,)]
    in_list_order = [images["s2/o21/C_02_21_230.png"], images["s2/o21/C_02_21_223.png"]]
    assert np.array_equal(sc.train[1].x, np.stack(in_list_order))
    assert np.all(sc.test[2].ids >= 7)  # test ids after the train ids


def test_loader_reads_only_what_a_short_run_needs(tmp_path):
    _fixture(tmp_path)
    (tmp_path / "core50" / "core50_128x128" / "s1" / "o9" / "C_01_09_153.png").unlink()  # used by batch 02 only
    ds = load_core50(tmp_path, run=0, max_batches=2, test_every=4, cache=False)
    assert len(ds.y_train) == 5 and len(ds.y_test) == 2
    assert len(core50_nicv2_391(ds, run=0, max_batches=2).train) == 2
    with pytest.raises(DataError, match=r"run0 train_batch_02 names s1/o9/C_01_09_153.png, which the data set does "
                                         r"not hold; load it with"):
        core50_nicv2_391(ds, run=0)
    with pytest.raises(DataError, match=r"s1/o9/C_01_09_153.png not found: the NICv2-391 lists name it"):
        load_core50(tmp_path, cache=False)
    with pytest.raises(ConfigError, match=r"run must be in 0..0 or None"):
        load_core50(tmp_path, run=3, max_batches=1)


def test_lists_tar_and_images_zip(tmp_path):
    images = _fixture(tmp_path / "src")
    d = tmp_path / "core50"
    d.mkdir()
    with tarfile.open(d / "nicv2_391_filelists.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "core50" / "NICv2_391", arcname="NICv2_391")
    with zipfile.ZipFile(d / "core50_128x128.zip", "w") as z:
        for f in sorted((tmp_path / "src" / "core50" / "core50_128x128").rglob("*.png")):
            z.write(f, f.relative_to(tmp_path / "src" / "core50").as_posix())
    ds = load_core50(tmp_path, test_every=1, cache=False)
    assert len(ds.y_test) == 8 and np.array_equal(ds.x_test[0], images["s3/o1/C_03_01_001.png"])
    ref = load_core50(tmp_path / "src", test_every=1, cache=False)
    assert np.array_equal(ds.x_train, ref.x_train) and np.array_equal(ds.y_train, ref.y_train)


def test_bad_lists_and_images(tmp_path):
    _fixture(tmp_path)
    top = tmp_path / "core50" / "NICv2_391"
    (top / "run0" / "train_batch_01_filelist.txt").unlink()
    with pytest.raises(DataError, match=r"run0 has batches 0..2 with gaps"):
        load_core50(tmp_path)
    (top / "run0" / "train_batch_01_filelist.txt").write_text("s2/o21/C_02_21_230.png\n")
    with pytest.raises(DataError, match=r"train_batch_01_filelist.txt line 1: 's2/o21/C_02_21_230.png', expected"):
        load_core50(tmp_path)
    _fixture(tmp_path)
    from PIL import Image

    Image.new("RGB", (350, 350)).save(tmp_path / "core50" / "core50_128x128" / "s1" / "o1" / "C_01_01_000.png")
    with pytest.raises(DataError, match=r"C_01_01_000.png: image is 350x350, expected 128x128"):
        load_core50(tmp_path, cache=False)
    with pytest.raises(DataError, match=r"no CORe50 images in"):
        load_core50(tmp_path / "elsewhere", lists=top)
