"""A data set given as arrays: an `.npz` file, or a folder of `.npy` files, holding either `x`, `y` (and optional
`groups`) split by the rule of tinycl.data.folders (every k-th sample of each class, or whole groups), or
`x_train`, `y_train`, `x_test`, `y_test` (and optional `train_groups`, `test_groups`) split already.

x: (N, *sample_shape), uint8 (kept as is, images) or any real dtype (float32); y: (N,) integer labels 0..C-1.
Everything is checked before use: equal lengths, integer labels in range, finite values; nothing is unpickled.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from tinycl.data.dataset import Dataset
from tinycl.data.folders import COMMON_KEYS, dataset_name
from tinycl.data.options import Key
from tinycl.data.speech_commands import speaker_split
from tinycl.errors import ConfigError, DataError

__all__ = ["load_arrays", "read_arrays", "ARRAY_KEYS"]

ARRAY_KEYS = {k: v for k, v in COMMON_KEYS.items() if k in ("set_name", "test_share")}
ARRAY_KEYS["split"] = Key("when the file holds x and y only: share (every k-th sample of each class) or group "
                          "(whole groups by a salted hash; needs `groups`); auto: group if there, else share",
                          choices=("auto", "share", "group"))
ARRAY_KEYS["classes"] = Key("class names, one per label 0..C-1; unset: the labels as text", text="a list of names")
NAMES = ("x", "y", "groups", "x_train", "y_train", "x_test", "y_test", "train_groups", "test_groups")


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz file or of the .npy files in a folder (without pickles), by name."""
    path = Path(path)
    try:
        if path.is_dir():
            return {f.stem: np.load(f, allow_pickle=False) for f in sorted(path.glob("*.npy")) if f.stem in NAMES}
        if path.suffix == ".npy":
            raise DataError(f"{path}: a single .npy holds no labels; give an .npz with x and y, or a folder of "
                            f"x.npy and y.npy")
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise DataError(f"{path} not found: expected an .npz file or a folder of .npy files") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: not a readable .npz/.npy ({err}); arrays must not need pickle") from err


def _check(path: Path, a: dict[str, np.ndarray], x: str, y: str, groups: str) -> None:
    if x not in a or y not in a:
        raise DataError(f"{path}: arrays {x} and {y} missing (found {', '.join(sorted(a)) or 'none'}); expected "
                        f"x, y[, groups] or x_train, y_train, x_test, y_test")
    xs, ys = a[x], a[y]
    if xs.ndim < 2 or xs.dtype.kind not in "uif":
        raise DataError(f"{path}: {x} is {xs.dtype} of shape {xs.shape}; expected numbers (N, *sample_shape)")
    if ys.ndim != 1 or len(ys) != len(xs):
        raise DataError(f"{path}: {y} has shape {ys.shape}, {x} has {len(xs):,} samples; expected one label each")
    if ys.dtype.kind == "f" and not (np.isfinite(ys).all() and (ys == np.round(ys)).all()):
        raise DataError(f"{path}: {y} holds non-integer or non-finite labels; expected integers 0..C-1")
    if ys.dtype.kind not in "iuf" or (len(ys) and ys.min() < 0):
        raise DataError(f"{path}: {y} must hold integer labels >= 0, got {ys.dtype}")
    if groups in a and len(a[groups]) != len(xs):
        raise DataError(f"{path}: {groups} has {len(a[groups]):,} entries, {x} has {len(xs):,}; expected one each")


def _draw(y: np.ndarray, groups: np.ndarray | None, split: str, test_share: float) -> np.ndarray:
    """Boolean test mask by the stated rule (tinycl.data.folders)."""
    if split == "group":
        return np.array([speaker_split(str(g), 100 * test_share) == "test" for g in groups])
    k = max(2, round(1 / test_share))
    test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        test[idx[k - 1:: k]] = True
    return test


def load_arrays(root: Path, *, set_name: str | None = None, split: str = "auto", test_share: float = 0.2,
                classes: tuple[str, ...] | None = None) -> Dataset:
    """A data set from arrays (module doc): x as stored if uint8, else float32; y int64."""
    path = Path(root)
    a = read_arrays(path)
    out = {}
    if "x_train" in a or "x_test" in a:
        for side in ("train", "test"):
            _check(path, a, f"x_{side}", f"y_{side}", f"{side}_groups")
            out[side] = (a[f"x_{side}"], a[f"y_{side}"], a.get(f"{side}_groups"))
        how = "given"
    else:
        _check(path, a, "x", "y", "groups")
        groups = a.get("groups")
        how = ("group" if groups is not None else "share") if split == "auto" else split
        if how == "group" and groups is None:
            raise ConfigError(f"data.options.split = group needs a groups array in {path}")
        test = _draw(a["y"], groups, how, test_share)
        for side, mask in (("train", ~test), ("test", test)):
            out[side] = (a["x"][mask], a["y"][mask], None if groups is None else groups[mask])
    n_classes = int(max(int(out[s][1].max()) if len(out[s][1]) else -1 for s in out)) + 1
    names = tuple(classes) if classes else tuple(str(c) for c in range(n_classes))
    if len(names) < n_classes:
        raise ConfigError(f"data.options.classes names {len(names)} classes but the labels reach {n_classes - 1}")
    arrays = {}
    for side, (x, y, g) in out.items():
        arrays[f"x_{side}"] = x if x.dtype == np.uint8 else x.astype(np.float32)
        arrays[f"y_{side}"] = y.astype(np.int64)
        if g is not None:
            arrays[f"{side}_groups"] = np.asarray(g).astype(str)
    if not len(arrays["y_test"]):
        raise DataError(f"{path}: the split gives no test samples; add samples or raise data.options.test_share")
    meta = {"source": str(path), "layout": how, "raw_bits": 8 if arrays["x_train"].dtype == np.uint8 else 32,
            **{k: v for k, v in arrays.items() if k.endswith("_groups")}}
    return Dataset(dataset_name(path, set_name), arrays["x_train"], arrays["y_train"], arrays["x_test"],
                   arrays["y_test"], names, meta)
