"""UCI HAR: the windowing recipe by hand, the official text layout on a fixture, and the raw HAPT recordings."""

import zipfile

import numpy as np
import pytest
from conftest import require_shared_data
from data_fixtures import write_uci_har

from tinycl.data.har import ACTIVITIES, TEST_SUBJECTS, count_har, load_har, window_recordings
from tinycl.errors import DataError

RAW = "har/hapt_raw_50hz.npz"


def test_windowing_by_hand():
    # experiment 1: 300 samples of walking (1), 20 of a transition (7), 200 of sitting (4);
    # experiment 2: 130 samples of walking, 100 unlabelled (-1)
    label = np.array([1] * 300 + [7] * 20 + [4] * 200 + [1] * 130 + [-1] * 100)
    experiment = np.array([1] * 520 + [2] * 230)
    starts, labels = window_recordings(label, experiment)
    # walking run 0..299: starts 0, 64, 128 (192 + 128 > 300); sitting run 320..519: 320, 384;
    # the second walking run 520..649: 520 only; transitions and unlabelled samples: none
    assert starts.tolist() == [0, 64, 128, 320, 384, 520]
    assert labels.tolist() == [1, 1, 1, 4, 4, 1]
    # a run that continues across two experiments is cut at the boundary
    s, _ = window_recordings(np.ones(200, int), np.array([1] * 100 + [2] * 100))
    assert s.size == 0


def test_official_layout_fixture(tmp_path):
    a = write_uci_har(tmp_path / "har", np.random.default_rng(0))
    ds = load_har(tmp_path, cache=False)
    assert ds.classes == ACTIVITIES and ds.x_train.shape == (12, 6, 1, 128) and ds.x_test.shape == (6, 6, 1, 128)
    for split in ("train", "test"):
        x = getattr(ds, f"x_{split}")[:, :, 0]
        want = np.stack([a[split]["signals"][s] for s in ("total_acc_x", "total_acc_y", "total_acc_z",
                                                           "body_gyro_x", "body_gyro_y", "body_gyro_z")], axis=1)
        np.testing.assert_allclose(x, want, rtol=1e-6)  # written with 8 significant digits
        assert np.array_equal(getattr(ds, f"y_{split}"), a[split]["y"] - 1)
        assert np.array_equal(ds.meta[f"{split}_groups"], a[split]["subject"])
    assert count_har(tmp_path) == (12, 6)


def test_official_zip(tmp_path):
    write_uci_har(tmp_path / "src" / "har", np.random.default_rng(1))
    (tmp_path / "zipped" / "har").mkdir(parents=True)
    with zipfile.ZipFile(tmp_path / "zipped" / "har" / "UCI HAR Dataset.zip", "w") as z:
        for f in sorted((tmp_path / "src" / "har").rglob("*.txt")):
            z.write(f, f.relative_to(tmp_path / "src" / "har").as_posix())
    from_zip = load_har(tmp_path / "zipped", cache=False)
    ref = load_har(tmp_path / "src", cache=False)
    assert np.array_equal(from_zip.x_train, ref.x_train) and np.array_equal(from_zip.y_test, ref.y_test)
    assert np.array_equal(from_zip.meta["test_groups"], ref.meta["test_groups"])


def test_official_layout_errors(tmp_path):
    write_uci_har(tmp_path / "har", np.random.default_rng(2))
    top = tmp_path / "har" / "UCI HAR Dataset"
    (top / "test" / "Inertial Signals" / "body_gyro_z_test.txt").unlink()
    with pytest.raises(DataError, match=r"body_gyro_z_test.txt not found: expected the official UCI HAR layout"):
        load_har(tmp_path, cache=False)
    write_uci_har(tmp_path / "har", np.random.default_rng(2))
    f = top / "train" / "Inertial Signals" / "total_acc_y_train.txt"
    f.write_text("\n".join(f.read_text().splitlines()[:-1]) + "\n")  # one window short
    with pytest.raises(DataError, match=r"total_acc_y_train.txt: shape \(11, 128\), expected \(12, 128\)"):
        load_har(tmp_path, cache=False)
    f.write_text("1.0 abc\n")
    with pytest.raises(DataError, match="total_acc_y_train.txt: not a whitespace-separated table of numbers"):
        load_har(tmp_path, cache=False)


def test_missing(tmp_path):
    with pytest.raises(DataError, match=r"no UCI HAR found in .*har: expected har/'UCI HAR Dataset'/"):
        load_har(tmp_path)


def test_real_raw_recordings():
    root = require_shared_data(RAW)
    ds = load_har(root)
    assert ds.x_train.shape[1:] == (6, 1, 128) and ds.x_train.dtype == np.float32
    train_subjects, test_subjects = set(ds.meta["train_groups"]), set(ds.meta["test_groups"])
    assert test_subjects == set(TEST_SUBJECTS) and not train_subjects & test_subjects
    assert len(train_subjects | test_subjects) == 30
    assert set(ds.y_train) == set(ds.y_test) == set(range(6))
    # UCI HAR has 7,352 / 2,947 windows; cutting the raw recordings the same way gives within 2% of that
    assert abs(len(ds.y_train) - 7352) / 7352 < 0.02 and abs(len(ds.y_test) - 2947) / 2947 < 0.02
    assert count_har(root) == (len(ds.y_train), len(ds.y_test))
    # reference: each window is a 128-sample slice of one run of the raw recording
    with np.load(root / RAW) as z:
        signals, label, experiment, subject = z["signals"], z["label"], z["experiment"], z["subject"]
    starts, _ = window_recordings(label, experiment)
    train_starts = starts[~np.isin(subject[starts], TEST_SUBJECTS)]
    for k in (0, 1234, len(train_starts) - 1):
        s = train_starts[k]
        np.testing.assert_array_equal(ds.x_train[k, :, 0], signals[s: s + 128].T)
        assert np.all(label[s: s + 128] == ds.y_train[k] + 1)
    # gravity: the mean acceleration magnitude of a resting (laying) window is about 1 g
    lay = ds.x_train[ds.y_train == ACTIVITIES.index("LAYING")][:, :3, 0]
    assert 0.9 < np.linalg.norm(lay.mean(axis=2), axis=1).mean() < 1.1

