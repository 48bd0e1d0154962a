"""CORe50 (50 household objects in 10 categories, 11 sessions) with the NICv2-391 protocol lists.

Files under <root>/core50/ (each also accepted as an explicit path option):
- protocol lists: `nicv2_391_filelists.tar.gz` or an extracted `NICv2_391/` folder holding
  `run0..run9/train_batch_00..390_filelist.txt` and `test_filelist.txt`; each line `s<session>/o<object>/
  C_<ss>_<oo>_<fff>.png <label>`, label = object - 1 (0..49);
- images: the official `core50_128x128/s1..s11/o1..o50/C_ss_oo_fff.png` folder, or the official
  `core50_128x128.zip`, read in place.

The data set holds only the images the lists name (119,894 train images, the same set in every run; 44,972
test images, of which the papers use every 20th: 2,249), so a run that is cut short (`max_batches`) or a
test subset reads only the files it needs. Batch order is the protocol's business: see
tinycl.protocols.core50_nicv2_391.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinycl.data.cache import cached_arrays
from tinycl.data.dataset import Dataset
from tinycl.data.files import ARCHIVE_ERRORS, decode_rgb, scan_tar
from tinycl.errors import ConfigError, DataError

__all__ = ["load_core50", "read_nicv2_lists", "find_core50_lists", "find_core50_images", "count_core50",
           "NICv2Lists", "CLASSES", "LAYOUT"]

CLASSES = tuple(f"o{k}" for k in range(1, 51))  # label = object id - 1
LISTS_TAR, LISTS_DIR, IMAGES = "nicv2_391_filelists.tar.gz", "NICv2_391", "core50_128x128"
LAYOUT = (f"core50/{LISTS_TAR} (or core50/{LISTS_DIR}/) for the protocol lists, and the images as "
          f"core50/{IMAGES}/s1..s11/o1..o50/*.png or core50/{IMAGES}.zip")
_BATCH = re.compile(r"(?:^|/)run(\d+)/train_batch_(\d+)_filelist\.txt$")
_FILE = re.compile(r"\s*(?:s\d+/o\d+/C_\d+_\d+_\d+\.png[ \t]+\d+\s*)*")  # lines "s1/o1/C_01_01_000.png 0"


@dataclass(frozen=True)
class NICv2Lists:
    """The NICv2-391 protocol: runs[r][b] = (paths, labels) of training batch b of run r; test = (paths, labels).
    paths: tuples of `s<session>/o<object>/<file>.png`; labels: int64 arrays 0..49."""

    source: Path
    runs: tuple[tuple[tuple[tuple[str, ...], np.ndarray], ...], ...]
    test: tuple[tuple[str, ...], np.ndarray]

    def train_paths(self, run: int | None = None, max_batches: int | None = None) -> dict[str, int]:
        """path -> label over the batches of one run (first max_batches), or over all runs."""
        runs = self.runs if run is None else [self.runs[run]]
        return {p: int(y) for batches in runs for paths, labels in batches[:max_batches]
                for p, y in zip(paths, labels, strict=True)}


def _parse(text: str, where: str) -> tuple[tuple[str, ...], np.ndarray]:
    if not _FILE.fullmatch(text):  # one C-speed check of the whole file; find the bad line only on failure
        for k, line in enumerate(text.splitlines(), 1):
            if line.strip() and not _FILE.fullmatch(line.strip()):
                raise DataError(f"{where} line {k}: {line!r}, expected 's<session>/o<object>/C_ss_oo_fff.png <label>'")
    tokens = text.split()
    return tuple(tokens[0::2]), np.array(tokens[1::2], dtype=np.int64)


def read_nicv2_lists(source: Path) -> NICv2Lists:
    """The protocol lists from the .tar.gz, the `NICv2_391/` folder, or a folder that contains it."""
    source = Path(source)
    if source.is_dir():
        top = source / LISTS_DIR if (source / LISTS_DIR).is_dir() else source
        texts = {p.relative_to(top).as_posix(): p.read_text() for p in top.glob("**/*_filelist.txt")}
    elif source.is_file():
        _, raw = scan_tar(source, lambda n: n.endswith("_filelist.txt"))
        texts = {n.split(LISTS_DIR + "/", 1)[-1]: b.decode() for n, b in raw.items()}
    else:
        raise DataError(f"{source} not found: expected the CORe50 NICv2-391 lists ({LISTS_TAR} or {LISTS_DIR}/)")
    runs: dict[int, dict[int, tuple]] = {}
    test = None
    for name, text in texts.items():
        if name.split("/")[-1] == "test_filelist.txt":
            test = _parse(text, f"{source}:{name}")
        elif m := _BATCH.search(name):
            runs.setdefault(int(m[1]), {})[int(m[2])] = _parse(text, f"{source}:{name}")
    if test is None or not runs:
        raise DataError(f"{source}: no run*/train_batch_*_filelist.txt or test_filelist.txt found; expected the "
                        f"NICv2-391 lists")
    for r, batches in runs.items():
        if sorted(batches) != list(range(len(batches))):
            raise DataError(f"{source}: run{r} has batches {min(batches)}..{max(batches)} with gaps; "
                            f"expected train_batch_00..{len(batches) - 1:02d}")
    if sorted(runs) != list(range(len(runs))):
        raise DataError(f"{source}: runs {sorted(runs)}, expected run0..run{len(runs) - 1}")
    return NICv2Lists(source, tuple(tuple(runs[r][b] for b in range(len(runs[r]))) for r in range(len(runs))), test)


def find_core50_lists(root: Path) -> Path:
    d = Path(root) / "core50"
    for p in (d / LISTS_TAR, d / LISTS_DIR):
        if p.exists():
            return p
    raise DataError(f"no CORe50 NICv2-391 lists in {d}: expected {LAYOUT}")


def find_core50_images(root: Path) -> Path:
    d = Path(root) / "core50"
    for p in (d / IMAGES, d / f"{IMAGES}.zip", Path(root) / IMAGES, Path(root) / f"{IMAGES}.zip"):
        if p.exists():
            return p
    raise DataError(f"no CORe50 images in {d}: expected {LAYOUT} (or pass images=PATH)")


class _Images:
    """Reads `s<k>/o<j>/<file>.png` from the image folder or the zip; DataError naming an absent image."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.zip = None
        if self.path.is_file():
            try:
                self.zip = zipfile.ZipFile(self.path)
            except (zipfile.BadZipFile, OSError) as err:
                raise DataError(f"{self.path}: not a readable zip ({err}); expected {IMAGES}.zip") from err
            self.members = {n.split(IMAGES + "/", 1)[-1]: n for n in self.zip.namelist() if n.endswith(".png")}
        elif (self.path / IMAGES).is_dir():
            self.path = self.path / IMAGES

    def files(self, rels) -> list[Path]:
        """The image files (for the cache key); the zip itself when reading from a zip."""
        return [self.path] if self.zip else [self._file(r) for r in rels]

    def _file(self, rel: str) -> Path:
        p = self.path / rel
        if not p.is_file():
            raise DataError(f"{p} not found: the NICv2-391 lists name it; expected {LAYOUT}")
        return p

    def read(self, rel: str) -> np.ndarray:
        """(3, 128, 128) uint8 RGB."""
        where = f"{self.path}:{rel}" if self.zip else str(self.path / rel)
        if self.zip is not None:
            if rel not in self.members:
                raise DataError(f"{self.path}: {IMAGES}/{rel} not found; the NICv2-391 lists name it")
            try:
                raw = self.zip.read(self.members[rel])
            except (zipfile.BadZipFile, *ARCHIVE_ERRORS) as err:
                raise DataError(f"{where}: unreadable ({err}); truncated archive?") from err
        else:
            raw = self._file(rel).read_bytes()
        return decode_rgb(raw, where, (128, 128), IMAGES)


def _decode(images: _Images, split: dict[str, dict[str, int]]) -> dict[str, np.ndarray]:
    out = {}
    for name, entries in split.items():
        paths = sorted(entries)
        x = np.empty((len(paths), 3, 128, 128), dtype=np.uint8)  # preallocated: the full train set is ~5.9 GB
        for i, p in enumerate(paths):
            x[i] = images.read(p)
        out[f"x_{name}"] = x
        out[f"y_{name}"] = np.array([entries[p] for p in paths], dtype=np.int64)
        out[f"{name}_paths"] = np.array(paths, dtype=str)
    return out


def _selection(lists: NICv2Lists, run: int | None, max_batches: int | None,
               test_every: int) -> dict[str, dict[str, int]]:
    n_runs = len(lists.runs)
    if run is not None and not 0 <= run < n_runs:
        raise ConfigError(f"run must be in 0..{n_runs - 1} or None (all runs), got {run}")
    if max_batches is not None and not 1 <= max_batches <= len(lists.runs[run or 0]):
        raise ConfigError(f"max_batches must be in 1..{len(lists.runs[run or 0])} or None, got {max_batches}")
    if test_every < 1:
        raise ConfigError(f"test_every must be >= 1 (1: all 44,972 test images, 20: the papers' 2,249), "
                          f"got {test_every}")
    test_paths, test_labels = lists.test
    test = {p: int(y) for p, y in zip(test_paths[::test_every], test_labels[::test_every], strict=True)}
    train = lists.train_paths(run if run is not None or max_batches is None else 0, max_batches)
    return {"train": train, "test": test}


def count_core50(root: Path) -> tuple[int, int]:
    """(n_train, n_test) over all runs and the full test list, from the lists alone."""
    lists = read_nicv2_lists(find_core50_lists(root))
    return len(lists.train_paths()), len(lists.test[0])


def load_core50(root: Path, *, run: int | None = None, max_batches: int | None = None, test_every: int = 20,
                lists: str | Path | None = None, images: str | Path | None = None,
                cache: bool | str | Path = True) -> Dataset:
    """CORe50 images named by the NICv2-391 lists: x uint8 (N, 3, 128, 128) RGB, y int64 object 0..49.

    run, max_batches: load only the images of batches 0..max_batches-1 of `run` (run defaults to 0 then);
        both None: every training image (the same 119,894 in all runs).
    test_every: keep every n-th line of test_filelist.txt (20: the papers' 2,249 images; 1: all 44,972).
    lists, images: explicit paths; default: found under root/core50 (see LAYOUT).
    meta: "train_paths"/"test_paths" (list paths, sorted: the sample order), "train_groups"/"test_groups"
    (session 1..11), "lists" (the list source, for the protocol).
    cache: True (default dir), False (off) or a cache directory (see tinycl.data.cache)."""
    lists_path = Path(lists) if lists else find_core50_lists(Path(root))
    nic = read_nicv2_lists(lists_path)
    split = _selection(nic, run, max_batches, test_every)
    reader = _Images(Path(images) if images else find_core50_images(Path(root)))
    sources = [lists_path] if lists_path.is_file() else sorted(lists_path.glob("**/*_filelist.txt"))
    sources += reader.files(sorted(set(split["train"]) | set(split["test"])))
    options = {"run": run, "max_batches": max_batches, "test_every": test_every}
    a = cached_arrays("core50", sources, options, lambda: _decode(reader, split), cache)
    session = {s: np.array([int(p.split("/")[0][1:]) for p in a[f"{s}_paths"]], dtype=np.int64)
               for s in ("train", "test")}
    return Dataset("core50", a["x_train"], a["y_train"], a["x_test"], a["y_test"], CLASSES,
                   {"source": str(reader.path), "lists": str(lists_path), "raw_bits": 8,
                    "train_paths": a["train_paths"], "test_paths": a["test_paths"],
                    "train_groups": session["train"], "test_groups": session["test"]})
