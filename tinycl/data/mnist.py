"""MNIST from its four official IDX files (gzip-compressed or not) under <root>/mnist/.

IDX format (big-endian): magic = 0x00 0x00 <dtype 0x08 = uint8> <n_dims>, then one uint32 per dimension,
then the values. Images: magic 2051, dims (N, 28, 28); labels: magic 2049, dims (N,).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from tinycl.data.cache import cached_arrays
from tinycl.data.dataset import Dataset
from tinycl.errors import DataError

__all__ = ["load_mnist", "find_mnist", "count_mnist", "read_idx", "LAYOUT"]

LAYOUT = ("mnist/{train-images-idx3-ubyte,train-labels-idx1-ubyte,t10k-images-idx3-ubyte,"
          "t10k-labels-idx1-ubyte}.gz (the four official IDX files)")
FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
MAGIC = {3: 2051, 1: 2049}  # n_dims -> magic number of uint8 IDX files


def find_mnist(root: Path) -> dict[str, Path]:
    """The four IDX files under root/mnist (".gz" or uncompressed); DataError naming the first missing one."""
    found = {}
    for key, stem in FILES.items():
        for name in (stem + ".gz", stem):
            if (root / "mnist" / name).is_file():
                found[key] = root / "mnist" / name
                break
        else:
            raise DataError(f"{root / 'mnist' / (stem + '.gz')} not found: expected {LAYOUT}")
    return found


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _header(f, path: Path, n_dims: int) -> tuple[int, ...]:
    head = f.read(4 + 4 * n_dims)
    if len(head) < 4 + 4 * n_dims:
        raise DataError(f"{path}: truncated IDX header; expected {4 + 4 * n_dims} bytes")
    magic, *dims = struct.unpack(f">{1 + n_dims}I", head)
    if magic != MAGIC[n_dims]:
        raise DataError(f"{path}: IDX magic number {magic}, expected {MAGIC[n_dims]} "
                        f"(uint8 {'images' if n_dims == 3 else 'labels'}); is this the right file?")
    if dims[0] == 0 or any(d == 0 for d in dims) or (n_dims == 3 and tuple(dims[1:]) != (28, 28)):
        raise DataError(f"{path}: IDX header announces dims {tuple(dims)}; expected at least one "
                        f"{'28x28 image' if n_dims == 3 else 'label'}")
    return tuple(dims)


def read_idx(path: Path, n_dims: int, header_only: bool = False) -> np.ndarray | tuple[int, ...]:
    """The uint8 array of shape dims stored in an IDX file (or just its dims if header_only)."""
    try:
        with _open(path) as f:
            dims = _header(f, path, n_dims)
            if header_only:
                return dims
            data = f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: unreadable or truncated ({err}); expected an IDX file, optionally gzipped") from err
    need = int(np.prod(dims))
    if len(data) < need:
        raise DataError(f"{path}: truncated, {len(data)} bytes of data but its header announces {dims} = {need}")
    return np.frombuffer(data, dtype=np.uint8, count=need).reshape(dims)


def count_mnist(root: Path) -> tuple[int, int]:
    """(n_train, n_test) from the label files' headers, without decoding."""
    files = find_mnist(root)
    return read_idx(files["train_labels"], 1, True)[0], read_idx(files["test_labels"], 1, True)[0]


def _decode(files: dict[str, Path]) -> dict[str, np.ndarray]:
    out = {}
    for split in ("train", "test"):
        x = read_idx(files[f"{split}_images"], 3)
        y = read_idx(files[f"{split}_labels"], 1)
        if len(x) != len(y):
            raise DataError(f"{files[f'{split}_images']}: {len(x)} images but {files[f'{split}_labels']} has "
                            f"{len(y)} labels; expected equal counts")
        if len(y) and y.max() > 9:
            raise DataError(f"{files[f'{split}_labels']}: label {y.max()} found, expected digits 0..9")
        out[f"x_{split}"] = x[:, None]  # (N, 1, 28, 28): CHW with one channel
        out[f"y_{split}"] = y.astype(np.int64)
    return out


def load_mnist(root: Path, *, cache: bool | str | Path = True) -> Dataset:
    """MNIST: x uint8 (N, 1, 28, 28) 0..255, y int64 digits; 60,000 train / 10,000 test in the official files.

    cache: True (default dir), False (off) or a cache directory (see tinycl.data.cache)."""
    files = find_mnist(Path(root))
    a = cached_arrays("mnist", files.values(), {}, lambda: _decode(files), cache)
    return Dataset("mnist", a["x_train"], a["y_train"], a["x_test"], a["y_test"], tuple(str(d) for d in range(10)),
                   {"source": str(Path(root) / "mnist"), "raw_bits": 8})
