"""CIFAR-10 under <root>/cifar10/, in any of its distributed layouts (first found wins):

1. `cifar-10-batches-py/` (the official python version: pickled `data_batch_1..5`, `test_batch`,
   `batches.meta`), or the official archive `cifar-10-python.tar.gz` holding that folder;
2. the image-folder layout `{train,test}/<class>/*.{jpg,png}`, as a directory or inside any `*.tar.gz`
   (read straight from the archive, optionally below one top-level folder).

Labels follow the official class order (airplane .. truck); image-folder classes are matched by name.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from tinycl.data.cache import cached_arrays
from tinycl.data.dataset import Dataset
from tinycl.data.files import decode_rgb, iter_tar, require_file, scan_tar, tar_names
from tinycl.errors import DataError

__all__ = ["load_cifar10", "find_cifar10", "count_cifar10", "CLASSES", "LAYOUT"]

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
LAYOUT = ("cifar10/cifar-10-batches-py/ (official python batches) or cifar10/cifar-10-python.tar.gz, "
          "or the image folders cifar10/{train,test}/<class>/*.jpg|png as a directory or a .tar.gz")
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
IMAGE_EXT = (".jpg", ".jpeg", ".png")


def find_cifar10(root: Path) -> tuple[str, Path]:
    """(kind, path): kind is "batches-dir", "batches-tar", "folder-dir" or "folder-tar"."""
    d = Path(root) / "cifar10"
    if (d / "cifar-10-batches-py").is_dir():
        return "batches-dir", d / "cifar-10-batches-py"
    if (d / "cifar-10-python.tar.gz").is_file():
        return "batches-tar", d / "cifar-10-python.tar.gz"
    if (d / "train").is_dir() and (d / "test").is_dir():
        return "folder-dir", d
    tars = sorted(d.glob("*.tar.gz")) + sorted(d.glob("*.tgz")) if d.is_dir() else []
    if tars:
        return "folder-tar", tars[0]
    raise DataError(f"no CIFAR-10 found in {d}: expected {LAYOUT}")


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR batches contain (dicts, lists, bytes and numpy arrays): a pickle is code,
    and a data file should not run any."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not part of a CIFAR batch")
        return super().find_class(module, name)


def _unpickle(raw: bytes, where: str) -> dict:
    try:
        obj = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as err:  # any failure here means "not a CIFAR batch"
        raise DataError(f"{where}: not a readable CIFAR-10 python batch ({err})") from err
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _batch_arrays(batch: dict, where: str) -> tuple[np.ndarray, np.ndarray]:
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{where}: expected keys b'data' and b'labels', found {sorted(batch)}")
    data = np.asarray(batch["data"])
    if data.dtype != np.uint8:
        raise DataError(f"{where}: data is {data.dtype}; expected uint8 pixels")
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{where}: data has shape {data.shape}, expected (N, 3072) = 1024 R, 1024 G, 1024 B")
    labels = np.asarray(batch["labels"])
    if labels.ndim != 1 or len(labels) != len(data):
        raise DataError(f"{where}: {len(data)} images but labels of shape {labels.shape}; expected one label per image")
    if len(labels) and (labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise DataError(f"{where}: labels must be integers 0..{len(CLASSES) - 1}, got {labels.dtype} "
                        f"{labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _read_batches(kind: str, path: Path, per_class: int | None) -> dict[str, np.ndarray]:
    if kind == "batches-dir":
        raw = {f.name: f.read_bytes() for f in _batch_files(path)}
    else:
        wanted = set(BATCHES["train"] + BATCHES["test"])
        raw = {n.rsplit("/", 1)[-1]: b for n, b in iter_tar(path, lambda n: n.rsplit("/", 1)[-1] in wanted)}
        if missing := wanted - set(raw):
            raise DataError(f"{path}: missing {sorted(missing)}; expected cifar-10-batches-py/ with "
                            "data_batch_1..5 and test_batch")
    out = {}
    for split, names in BATCHES.items():
        xs, ys = zip(*(_batch_arrays(_unpickle(raw[n], f"{path}/{n}"), f"{path}/{n}") for n in names), strict=True)
        x, y = np.concatenate(xs), np.concatenate(ys)
        keep = _first_per_class(y, per_class)
        out[f"x_{split}"], out[f"y_{split}"] = x[keep], y[keep]
    return out


def _batch_files(path: Path) -> list[Path]:
    files = [path / name for name in BATCHES["train"] + BATCHES["test"]]
    for f in files:
        require_file(f, "the official python batches data_batch_1..5 and test_batch")
    return files


def _first_per_class(y: np.ndarray, per_class: int | None) -> np.ndarray:
    if per_class is None:
        return np.arange(len(y))
    return np.sort(np.concatenate([np.flatnonzero(y == c)[:per_class] for c in range(len(CLASSES))]))


def _folder_entry(name: str) -> tuple[str, str] | None:
    """(split, class) of an image path `[prefix/]{train,test}/<class>/<file>`, else None."""
    parts = name.split("/")
    if len(parts) < 3 or not parts[-1].lower().endswith(IMAGE_EXT) or parts[-3] not in ("train", "test"):
        return None
    return parts[-3], parts[-2]


def _label(cls: str, where: str) -> int:
    if cls not in CLASSES:
        raise DataError(f"{where}: class folder {cls!r} is not a CIFAR-10 class; expected one of {', '.join(CLASSES)}")
    return CLASSES.index(cls)


def _read_folders(kind: str, path: Path, per_class: int | None) -> dict[str, np.ndarray]:
    if kind == "folder-dir":
        names = sorted(p.relative_to(path).as_posix() for p in path.glob("*/*/*"))
        entries = {n: e for n in names if (e := _folder_entry(n))}
        chosen = _choose(entries, per_class)
        images = {n: decode_rgb((path / n).read_bytes(), str(path / n), (32, 32)) for n in chosen}
    else:
        # one pass over the archive keeps every image's (compressed, ~1 kB) bytes; then decode the chosen ones
        names, raw = scan_tar(path, lambda n: _folder_entry(n) is not None)
        entries = {n: _folder_entry(n) for n in raw}
        chosen = _choose(entries, per_class)
        images = {n: decode_rgb(raw[n], f"{path}:{n}", (32, 32)) for n in chosen}
    out = {}
    for split in ("train", "test"):
        names = sorted(n for n in chosen if entries[n][0] == split)
        if not names:
            raise DataError(f"{path}: no {split}/<class>/ images found; expected {LAYOUT}")
        out[f"x_{split}"] = np.stack([images[n] for n in names])
        out[f"y_{split}"] = np.array([_label(entries[n][1], f"{path}:{n}") for n in names], dtype=np.int64)
    return out


def _choose(entries: dict[str, tuple[str, str]], per_class: int | None) -> set[str]:
    """All image names, or the first `per_class` (by sorted name) of each (split, class)."""
    if per_class is None:
        return set(entries)
    groups: dict[tuple[str, str], list[str]] = {}
    for n in sorted(entries):
        groups.setdefault(entries[n], []).append(n)
    return {n for names in groups.values() for n in names[:per_class]}


def count_cifar10(root: Path) -> tuple[int, int]:
    """(n_train, n_test) without decoding pixels: member names for image folders; batch lengths otherwise."""
    kind, path = find_cifar10(root)
    if kind.startswith("batches"):
        a = _read_batches(kind, path, None)  # unpickling is a memory copy, not a decode
        return len(a["y_train"]), len(a["y_test"])
    names = sorted(str(p.relative_to(path)) for p in path.glob("*/*/*")) if kind == "folder-dir" else tar_names(path)
    splits = [e[0] for n in names if (e := _folder_entry(n))]
    return splits.count("train"), splits.count("test")


def load_cifar10(root: Path, *, per_class: int | None = None, cache: bool | str | Path = True) -> Dataset:
    """CIFAR-10: x uint8 (N, 3, 32, 32) RGB 0..255, y int64 in the official class order; 50,000 / 10,000.

    per_class: keep only the first n images of each class and split (sorted by file name, or batch order),
        for quick runs and tests; None keeps all.
    cache: True (default dir), False (off) or a cache directory (see tinycl.data.cache)."""
    if per_class is not None and per_class < 1:
        raise DataError(f"per_class must be >= 1 or None, got {per_class}")
    kind, path = find_cifar10(Path(root))
    read = _read_batches if kind.startswith("batches") else _read_folders
    if kind == "batches-dir":
        sources = _batch_files(path)
    elif kind == "folder-dir":
        sources = sorted(p for p in path.glob("*/*/*") if p.is_file())
    else:
        sources = [path]
    a = cached_arrays("cifar10", sources, {"per_class": per_class}, lambda: read(kind, path, per_class), cache)
    return Dataset("cifar10", a["x_train"], a["y_train"], a["x_test"], a["y_test"], CLASSES,
                   {"source": str(path), "layout": kind, "raw_bits": 8})
