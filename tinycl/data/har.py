"""UCI HAR (human activity recognition, 30 subjects, smartphone on the waist, 50 Hz) under <root>/har/:

1. the official `UCI HAR Dataset/` folder (or `UCI HAR Dataset.zip`): the pre-cut windows in
   `{train,test}/Inertial Signals/*_{train,test}.txt`, labels `y_*.txt`, subjects `subject_*.txt`;
2. the raw UCI HAPT recordings `hapt_raw_50hz.npz` (arrays signals (N, 6), label, subject, experiment),
   windowed by UCI HAR's recipe: 128 samples (2.56 s) with 50% overlap, inside runs of one activity
   (labels 1-6; postural transitions 7-12 and unlabelled samples dropped), test = UCI HAR's test subjects.

x float32 (N, 6, 1, 128): acceleration x/y/z in g (with gravity: the official `total_acc_*`) and angular
velocity x/y/z in rad/s (`body_gyro_*`), the six channels a device's IMU gives, as CHW with H = 1 and W = time,
so the CHW model description, its conv2d layers (kernels (1, k)) and the C kernels take windows unchanged.
The official windows were median and 20 Hz low-pass filtered by the data set's authors; the raw recordings
are used as recorded (UCI HAR: 7,352 / 2,947 windows; this recipe on the raw recordings: 7,415 / 2,996).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from tinycl.data.cache import cached_arrays
from tinycl.data.dataset import Dataset
from tinycl.data.files import require_file
from tinycl.errors import DataError

__all__ = ["load_har", "find_har", "count_har", "window_recordings", "ACTIVITIES", "TEST_SUBJECTS", "LAYOUT"]

ACTIVITIES = ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING")
TEST_SUBJECTS = (2, 4, 9, 10, 12, 13, 18, 20, 24)  # UCI HAR's official test split
SIGNALS = ("total_acc_x", "total_acc_y", "total_acc_z", "body_gyro_x", "body_gyro_y", "body_gyro_z")
OFFICIAL = "UCI HAR Dataset"
RAW = "hapt_raw_50hz.npz"
LAYOUT = f"har/'{OFFICIAL}'/ (the official folder or .zip) or har/{RAW} (raw HAPT recordings)"
WINDOW, STEP = 128, 64


def find_har(root: Path) -> tuple[str, Path]:
    """(kind, path): kind "official-dir", "official-zip" or "raw-npz"."""
    d = Path(root) / "har"
    if (d / OFFICIAL).is_dir():
        return "official-dir", d / OFFICIAL
    if (d / f"{OFFICIAL}.zip").is_file():
        return "official-zip", d / f"{OFFICIAL}.zip"
    if (d / RAW).is_file():
        return "raw-npz", d / RAW
    raise DataError(f"no UCI HAR found in {d}: expected {LAYOUT}")


class _Official:
    """Reads files of the official layout from the folder or from inside the zip (below `UCI HAR Dataset/`)."""

    def __init__(self, kind: str, path: Path):
        self.kind, self.path = kind, path
        if kind == "official-zip":
            try:
                self.zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as err:
                raise DataError(f"{path}: not a readable zip ({err}); expected the official UCI HAR archive") from err
            self.names = {n.split(OFFICIAL + "/", 1)[-1]: n for n in self.zip.namelist()}

    def files(self, split: str) -> list[str]:
        return ([f"{split}/Inertial Signals/{s}_{split}.txt" for s in SIGNALS]
                + [f"{split}/y_{split}.txt", f"{split}/subject_{split}.txt"])

    def read(self, rel: str) -> bytes:
        if self.kind == "official-dir":
            return require_file(self.path / rel, f"the official UCI HAR layout ({LAYOUT})").read_bytes()
        if rel not in self.names:
            raise DataError(f"{self.path}: {OFFICIAL}/{rel} not found; expected the official UCI HAR layout")
        try:
            return self.zip.read(self.names[rel])
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise DataError(f"{self.path}: {rel} unreadable ({err}); truncated archive?") from err

    def numbers(self, rel: str, dtype) -> np.ndarray:
        text = self.read(rel)
        try:
            return np.loadtxt(io.BytesIO(text), dtype=dtype, ndmin=2)
        except ValueError as err:
            raise DataError(f"{self.path / rel}: not a whitespace-separated table of numbers ({err})") from err


def _read_official(kind: str, path: Path) -> dict[str, np.ndarray]:
    src = _Official(kind, path)
    out = {}
    for split in ("train", "test"):
        channels = [src.numbers(rel, np.float32) for rel in src.files(split)[:6]]
        y = src.numbers(f"{split}/y_{split}.txt", np.int64)[:, 0]
        subject = src.numbers(f"{split}/subject_{split}.txt", np.int64)[:, 0]
        for rel, c in zip(src.files(split), channels, strict=False):
            if c.shape != (len(y), WINDOW):
                raise DataError(f"{path / rel}: shape {c.shape}, expected ({len(y)}, {WINDOW}): one row of "
                                f"{WINDOW} samples per label in y_{split}.txt")
        if len(subject) != len(y) or y.min() < 1 or y.max() > 6:
            raise DataError(f"{path / split}: y_{split}.txt must hold labels 1..6, one per subject_{split}.txt row")
        out[f"x_{split}"] = np.stack(channels, axis=1)[:, :, None]  # (N, 6, 1, 128)
        if not np.isfinite(out[f"x_{split}"]).all():
            raise DataError(f"{path / split}: Inertial Signals hold NaN or infinite values; expected finite numbers")
        out[f"y_{split}"] = y - 1
        out[f"{split}_groups"] = subject
    return out


def window_recordings(label: np.ndarray, experiment: np.ndarray, window: int = WINDOW,
                      step: int = STEP) -> tuple[np.ndarray, np.ndarray]:
    """UCI HAR's windowing of raw recordings: (starts, labels) of every full window of `window` samples,
    `step` apart from the start of each run of one activity (label 1..6) within one experiment.

    label, experiment: (N,) per-sample arrays. starts: (W,) int64 sample indices; labels: (W,) int64 1..6."""
    label, experiment = np.asarray(label), np.asarray(experiment)
    cut = np.flatnonzero((np.diff(label) != 0) | (np.diff(experiment) != 0)) + 1
    bounds = np.concatenate([[0], cut, [len(label)]])
    starts, labels = [], []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if 1 <= label[a] <= 6 and b - a >= window:
            s = np.arange(a, b - window + 1, step)
            starts.append(s)
            labels.append(np.full(len(s), label[a], dtype=np.int64))
    if not starts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(starts).astype(np.int64), np.concatenate(labels)


def _raw_arrays(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            if missing := [k for k in keys if k not in z.files]:
                raise DataError(f"{path}: arrays {missing} missing; expected signals, label, subject, experiment")
            a = {k: z[k] for k in keys}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: not a readable .npz ({err}); expected the HAPT recordings {RAW}") from err
    n = len(a["label"])
    for k, v in a.items():
        if len(v) != n:
            raise DataError(f"{path}: array {k} has {len(v):,} rows, label has {n:,}; expected one row per sample")
        if k != "signals" and (v.ndim != 1 or v.dtype.kind not in "iu"):
            raise DataError(f"{path}: array {k} is {v.dtype} of shape {v.shape}; expected integers (N,)")
    if "signals" in a and (a["signals"].dtype.kind != "f" or not np.isfinite(a["signals"]).all()):
        raise DataError(f"{path}: signals must be finite floats; found {a['signals'].dtype} with NaN or inf")
    return a


def _split_raw(path: Path, with_signals: bool) -> dict[str, np.ndarray]:
    a = _raw_arrays(path, ("signals", "label", "subject", "experiment") if with_signals else
                    ("label", "subject", "experiment"))
    starts, labels = window_recordings(a["label"], a["experiment"])
    subject = a["subject"][starts].astype(np.int64)
    out = {}
    for split, mask in (("train", ~np.isin(subject, TEST_SUBJECTS)), ("test", np.isin(subject, TEST_SUBJECTS))):
        if with_signals:
            sig = a["signals"]
            if sig.ndim != 2 or sig.shape[1] != 6:
                raise DataError(f"{path}: signals have shape {sig.shape}, expected (N, 6)")
            idx = starts[mask][:, None] + np.arange(WINDOW)[None]  # (W, 128)
            out[f"x_{split}"] = np.ascontiguousarray(sig[idx].transpose(0, 2, 1)[:, :, None], dtype=np.float32)
        out[f"y_{split}"] = labels[mask] - 1
        out[f"{split}_groups"] = subject[mask]
    return out


def count_har(root: Path) -> tuple[int, int]:
    """(n_train, n_test): label file lines, or windows cut from the raw labels (no signals read)."""
    kind, path = find_har(root)
    if kind == "raw-npz":
        a = _split_raw(path, with_signals=False)
        return len(a["y_train"]), len(a["y_test"])
    src = _Official(kind, path)
    return tuple(len(src.read(f"{s}/y_{s}.txt").split()) for s in ("train", "test"))


def load_har(root: Path, *, cache: bool | str | Path = True) -> Dataset:
    """UCI HAR windows: x float32 (N, 6, 1, 128) (acc g, gyro rad/s), y int64 0..5 (ACTIVITIES);
    meta "train_groups"/"test_groups": subject (1..30) of each window.

    cache: True (default dir), False (off) or a cache directory (see tinycl.data.cache)."""
    kind, path = find_har(Path(root))
    if kind == "raw-npz":
        build = lambda: _split_raw(path, with_signals=True)  # noqa: E731
        sources = [path]
    else:
        src = _Official(kind, path)
        sources = [path / rel for s in ("train", "test") for rel in src.files(s)] if kind == "official-dir" else [path]
        for p in sources:
            require_file(p, f"the official UCI HAR layout ({LAYOUT})")
        build = lambda: _read_official(kind, path)  # noqa: E731
    a = cached_arrays("har", sources, {}, build, cache)
    return Dataset("har", a["x_train"], a["y_train"], a["x_test"], a["y_test"], ACTIVITIES,
                   {"source": str(path), "layout": kind, "raw_bits": 32,
                    "train_groups": a["train_groups"], "test_groups": a["test_groups"]})
