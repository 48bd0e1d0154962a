"""Generic loaders for a user's own files, usable from a config alone: a folder of images or of WAV clips, as
a directory or an archive (.tar.gz, .tgz, .tar, .zip, read in place).

Layouts (any prefix folders above them are ignored):
- `<class>/<file>`: the class is the folder; the test set is drawn by the rule below;
- `{train,test}/<class>/<file>`: the split is given by the folders.
WAV clips may instead take their label from the file name (`label = "<regex>"` with a group named `label`) and a
speaker or session from it (`group = "<regex>"` with a group named `group`), so no speaker is on both sides.

The drawn split (`split = "share"`): within each class, files sorted by name, every k-th file is test, k =
round(1 / test_share) (test_share 0.2: the 5th, 10th, ...); with groups (`split = "group"`): a group is test when
a salted sha1 of its name falls below test_share (the speech_commands rule), so the split never depends on a seed.
Classes are sorted by name unless `classes` gives the ones to keep, in label order. The data set keeps its own
name (`name`, default the folder or archive name) and class names in every output.
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from tinycl.data.audio import LogMelConfig, fit_clip, log_mel, read_wav_any, resample
from tinycl.data.cache import cached_arrays
from tinycl.data.dataset import Dataset
from tinycl.data.files import scan_tar
from tinycl.data.options import Key
from tinycl.data.speech_commands import speaker_split
from tinycl.errors import ConfigError, DataError

__all__ = ["load_image_folder", "load_wav_folder", "list_files", "IMAGE_EXT", "ARCHIVE_EXT", "IMAGE_KEYS",
           "WAV_KEYS", "dataset_name"]

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp")
ARCHIVE_EXT = (".tar.gz", ".tgz", ".tar", ".zip")
MAX_FILES = 10 ** 7


def _check_regex(value) -> str | None:
    if value == "folder":
        return None
    try:
        re.compile(value)
    except re.error as err:
        return f"not a regular expression ({err})"
    return None


COMMON_KEYS = {
    "set_name": Key("the data set's name in every output; unset: the folder or archive name", text="a name"),
    "split": Key("train/test: folders (train/ and test/), share (every k-th file of each class), group "
                 "(whole groups by a salted hash), auto (folders if there, else group if `group` is set, else share)",
                 choices=("auto", "folders", "share", "group")),
    "test_share": Key("share of the files (or groups) drawn for the test set", 0, 1, True, True),
    "classes": Key("class names to keep, in label order; unset: every class, sorted by name",
                   text="a list of names"),
    "cache": Key("decoded-data cache: true, false or a directory", text="true, false, a directory"),
}
IMAGE_KEYS = {
    **COMMON_KEYS,
    "size": Key("[height, width] every image is resized to; unset: all images must have the first one's size",
                1, 4096, items=True),
    "gray": Key("read images as one gray channel instead of RGB", text="true, false"),
}
WAV_KEYS = {
    **COMMON_KEYS,
    "label": Key('where a clip\'s label comes from: "folder", or a regex on the file name with a group named '
                 '`label`', text='"folder" or a regex', test=_check_regex),
    "group": Key("a regex on the file name with a group named `group` (speaker, session) for disjoint splits; "
                 "unset: none", text="a regex", test=_check_regex),
    "features": Key("the audio front end (data.options.features.<key>); clips at any rate are resampled to its "
                    "sample_rate", text="a table"),
}


def dataset_name(path: Path, name: str | None) -> str:
    """`name`, else the file or folder name without its archive extension."""
    if name:
        return name
    base = path.name
    for ext in ARCHIVE_EXT + (".npz", ".npy"):
        if base.lower().endswith(ext):
            return base[: -len(ext)]
    return base


def list_files(path: Path, extensions: tuple[str, ...]) -> tuple[dict[str, bytes] | None, list[str]]:
    """(bytes by name for an archive (None for a directory), sorted names relative to `path`) of the files with
    one of `extensions`, from a directory or a .tar(.gz)/.zip archive."""
    path = Path(path)
    wanted = lambda n: n.lower().endswith(extensions) and not n.split("/")[-1].startswith(".")  # noqa: E731
    if path.is_dir():
        names = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
        return None, [n for n in names if wanted(n)]
    if not path.is_file():
        raise DataError(f"{path} not found: expected a folder or an archive ({', '.join(ARCHIVE_EXT)})")
    if path.name.lower().endswith(".zip"):
        try:
            with zipfile.ZipFile(path) as z:
                names = sorted(n for n in z.namelist() if wanted(n) and not n.endswith("/"))
                return {n: z.read(n) for n in names}, names
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as err:
            raise DataError(f"{path}: truncated or corrupt zip ({err}); expected a complete .zip file") from err
    if path.name.lower().endswith(ARCHIVE_EXT):
        _, raw = scan_tar(path, wanted)
        return raw, sorted(raw)
    raise DataError(f"{path}: not a folder or an archive; expected one of {', '.join(ARCHIVE_EXT)}")


def _read(path: Path, raw: dict[str, bytes] | None, name: str) -> bytes:
    return (Path(path) / name).read_bytes() if raw is None else raw[name]


def _plan(path: Path, names: list[str], split: str, test_share: float, classes, label_of, group_of):
    """(names, labels, groups, sides, class names): each file's class, group and side ("train"/"test")."""
    if not names:
        raise DataError(f"{path}: no files found; expected <class>/<file> or {{train,test}}/<class>/<file>")
    if len(names) > MAX_FILES:
        raise DataError(f"{path}: {len(names):,} files; at most {MAX_FILES:,} are read")
    parts = [n.split("/") for n in names]
    has_folders = all(len(p) >= 3 and p[-3] in ("train", "test") for p in parts)
    if split == "auto":
        split = "folders" if has_folders else "group" if group_of is not None else "share"
    if split == "folders" and not has_folders:
        raise DataError(f"{path}: split = folders needs every file under train/<class>/ or test/<class>/")
    if split == "group" and group_of is None:
        raise ConfigError("data.options.split = group needs data.options.group (a regex naming the group)")
    labels = [label_of(n) for n in names]
    found = sorted(set(labels))
    keep = list(classes) if classes else found
    if missing := [c for c in keep if c not in found]:
        raise ConfigError(f"data.options.classes {missing} have no files in {path}; found: {', '.join(found)}")
    index = {c: i for i, c in enumerate(keep)}
    rows = [(n, index[c], group_of(n) if group_of else n) for n, c in zip(names, labels, strict=True) if c in index]
    k = max(2, round(1 / test_share))
    seen: Counter = Counter()
    out = []
    for n, y, g in rows:
        if split == "folders":
            side = n.split("/")[-3]
        elif split == "group":
            side = speaker_split(g, 100 * test_share)
        else:
            seen[y] += 1
            side = "test" if seen[y] % k == 0 else "train"
        out.append((n, y, g, side))
    sides = Counter(r[3] for r in out)
    if not sides["train"] or not sides["test"]:
        raise DataError(f"{path}: split = {split} gives {sides['train']} train and {sides['test']} test files; "
                        f"need both (more files per class, another data.options.test_share, or train/ and test/)")
    return out, tuple(keep), split


def _folder_label(path: Path, name: str) -> str:
    parts = name.split("/")
    if len(parts) < 2:
        raise DataError(f"{path}: {name} is not in a class folder; expected <class>/<file>")
    return parts[-2]


def _pattern(path: Path, regex: str, group: str, what: str):
    pattern = re.compile(regex)

    def of(name: str) -> str:
        m = pattern.search(name.split("/")[-1])
        if m is None:
            raise DataError(f"{path}: file name {name.split('/')[-1]!r} does not match data.options.{what} "
                            f"{regex!r}; every file must")
        return m.group(group) if group in pattern.groupindex else m.group(1 if pattern.groups else 0)
    return of


def _arrays(rows, extra: dict) -> dict[str, np.ndarray]:
    out = {}
    for side in ("train", "test"):
        idx = [i for i, r in enumerate(rows) if r[3] == side]
        out[f"y_{side}"] = np.array([rows[i][1] for i in idx], dtype=np.int64)
        out[f"{side}_groups"] = np.array([rows[i][2] for i in idx], dtype=str)
        out[f"{side}_files"] = np.array([rows[i][0] for i in idx], dtype=str)
        for key, values in extra.items():
            out[f"{key}_{side}" if key == "x" else f"{side}_{key}"] = values[idx]
    return out


def _dataset(name: str, path: Path, a: dict, options: dict, **meta) -> Dataset:
    return Dataset(name, a["x_train"], a["y_train"], a["x_test"], a["y_test"], tuple(str(c) for c in a["classes"]),
                   {"source": str(path), "layout": str(a["layout"]), **meta,
                    **{k: a[k] for k in a if k.startswith(("train_", "test_"))}})


def _sources(path: Path, names: list[str] | None) -> list[Path]:
    return [path] if path.is_file() else [path / n for n in names]


def load_image_folder(root: Path, *, set_name: str | None = None, split: str = "auto", test_share: float = 0.2,
                      classes: tuple[str, ...] | None = None, size: tuple[int, int] | None = None, gray: bool = False,
                      cache: bool | str | Path = True) -> Dataset:
    """Images `<class>/*.png|jpg` (or `{train,test}/<class>/...`) in a folder or archive (module doc):
    x uint8 (N, 3 or 1, H, W), y int64 in the order of `classes` (default: class folders sorted)."""
    from PIL import Image

    path = Path(root)
    if size is not None and len(size) != 2:
        raise ConfigError(f"data.options.size = {list(size)}: expected [height, width]")

    def build():
        raw, names = list_files(path, IMAGE_EXT)
        rows, keep, how = _plan(path, names, split, test_share, classes, lambda n: _folder_label(path, n), None)
        images, first = [], None
        for n, *_ in rows:
            try:
                img = Image.open(io.BytesIO(_read(path, raw, n))).convert("L" if gray else "RGB")
            except Exception as err:  # any decoder failure: this file is not an image
                raise DataError(f"{path}:{n}: not a readable image ({err})") from err
            if size is not None:
                img = img.resize((size[1], size[0]), Image.BILINEAR)
            elif first is None:
                first = (n, img.size)
            elif img.size != first[1]:
                raise DataError(f"{path}:{n} is {img.size[0]}x{img.size[1]} but {first[0]} is "
                                f"{first[1][0]}x{first[1][1]}; set data.options.size = [height, width] to resize")
            a = np.asarray(img, dtype=np.uint8)
            images.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
        return {**_arrays(rows, {"x": np.stack(images)}), "classes": np.array(keep, dtype=str),
                "layout": np.array(how)}

    sources = _sources(path, list_files(path, IMAGE_EXT)[1] if path.is_dir() else None)
    options = {"split": split, "test_share": test_share, "classes": classes, "size": size, "gray": gray}
    a = cached_arrays("image_folder", sources, options, build, cache)
    return _dataset(dataset_name(path, set_name), path, a, options, raw_bits=8)


def load_wav_folder(root: Path, *, set_name: str | None = None, label: str = "folder", group: str | None = None,
                    split: str = "auto", test_share: float = 0.2, classes: tuple[str, ...] | None = None,
                    features: LogMelConfig | dict | None = None, cache: bool | str | Path = True) -> Dataset:
    """WAV clips (PCM, any rate, mono or averaged to mono) in a folder or archive (module doc), resampled to the
    front end's rate: x float32 (N, 1, frames, mels) log-mel; meta "train_groups"/"test_groups" (the `group`
    regex's match, else the file), "sample_rates" (clips per rate found)."""
    path = Path(root)
    features = LogMelConfig.from_options(features, "data.options.features")
    label_of = (lambda n: _folder_label(path, n)) if label == "folder" else _pattern(path, label, "label", "label")
    group_of = _pattern(path, group, "group", "group") if group else None

    def build():
        raw, names = list_files(path, (".wav",))
        rows, keep, how = _plan(path, names, split, test_share, classes, label_of, group_of)
        waves = np.empty((len(rows), features.clip_samples), dtype=np.float32)
        rates = np.empty(len(rows), dtype=np.int64)
        for i, (n, *_) in enumerate(rows):
            x, rates[i] = read_wav_any(_read(path, raw, n), f"{path}:{n}")
            waves[i] = fit_clip(resample(x, int(rates[i]), features.sample_rate), features.clip_samples)
        return {**_arrays(rows, {"x": log_mel(waves, features)[:, None], "rates": rates}),
                "classes": np.array(keep, dtype=str), "layout": np.array(how)}

    sources = _sources(path, list_files(path, (".wav",))[1] if path.is_dir() else None)
    options = {"label": label, "group": group, "split": split, "test_share": test_share, "classes": classes,
               "features": features.__dict__}
    a = cached_arrays("wav_folder", sources, options, build, cache)
    rates = Counter(int(r) for r in np.concatenate([a["train_rates"], a["test_rates"]]))
    return _dataset(dataset_name(path, set_name), path, a, options, raw_bits=32, sample_rate=features.sample_rate,
                    sample_rates=dict(sorted(rates.items())))
