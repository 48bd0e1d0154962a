"""What `tinycl data list` reports: which data sets are found under a data root, where, with how many samples,
and for missing ones where to put them. Counts come from headers, archive member lists or protocol lists,
never from decoding; they are remembered in the cache directory (keyed like the data cache) so a second
listing is instant.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tinycl.data import cifar10, core50, har, mnist, speech_commands
from tinycl.data.cache import cache_dir, cache_key
from tinycl.data.digits import load_digits
from tinycl.errors import DataError, TinyclError
from tinycl.io import atomic_write_json

__all__ = ["Entry", "catalog", "format_table"]


@dataclass(frozen=True)
class Entry:
    name: str
    status: str  # "found" (loadable), "present" (quick: headers read), "missing", "partial", "error" (refused)
    path: str  # what was found, or where it is expected
    n_train: int | None = None
    n_test: int | None = None
    note: str = ""


def _counted(name: str, sources: list[Path], count: Callable[[], tuple[int, int]]) -> tuple[int, int]:
    """count(), remembered in the cache directory under the sources' size/mtime key."""
    directory = cache_dir()
    files = [p for p in sources if p.is_file()]
    path = directory / f"counts-{name}-{cache_key(name, files, {})}.json" if files else None
    if path is not None and path.is_file():
        try:
            n_train, n_test = json.loads(path.read_text())
            return int(n_train), int(n_test)
        except (OSError, ValueError, TypeError):
            pass
    result = count()
    if path is not None:
        try:
            atomic_write_json(path, [int(result[0]), int(result[1])])
        except OSError:
            pass  # counting works without a cache
    return result


def _entry(name: str, root: Path, layout: str, find: Callable[[Path], object],
           count: Callable[[Path], tuple[int, int]]) -> Entry:
    try:
        found = find(root)
    except DataError:
        return Entry(name, "missing", str(root / name), note=f"put {layout} under {root}")
    if isinstance(found, dict):  # MNIST: its four files
        sources = list(found.values())
        path = sources[0].parent
    else:  # (kind, path) or a path: an archive keys the count cache; a folder is cheap to count again
        path = found[1] if isinstance(found, tuple) else found
        sources = [path] if path.is_file() else []
    try:
        n_train, n_test = _counted(name, sources, lambda: count(root))
    except DataError as err:
        return Entry(name, "error", str(path), note=str(err))
    return Entry(name, "found", str(path), n_train, n_test)


def _core50(root: Path) -> Entry:
    entry = _entry("core50", root, core50.LAYOUT, core50.find_core50_lists, core50.count_core50)
    if entry.status != "found":
        return entry
    try:
        images = core50.find_core50_images(root)
    except DataError:
        return Entry("core50", "partial", entry.path, entry.n_train, entry.n_test,
                     f"NICv2-391 lists only; put the images as {root / 'core50' / core50.IMAGES}/s1..s11/o1..o50/"
                     f"*.png or {core50.IMAGES}.zip")
    return Entry("core50", "found", f"{entry.path} + {images}", entry.n_train, entry.n_test,
                 "the papers test on every 20th test image (2,249)")


def _digits() -> Entry:
    ds = load_digits()
    return Entry("digits", "found", "sklearn.datasets (embedded)", len(ds.y_train), len(ds.y_test))


def _loaded(entry: Entry, root: Path) -> Entry:
    """The entry after loading its data set with the loader's own checks (through the cache, so only the first
    listing decodes): "found" means loadable; a refused file becomes an "error" row naming the problem."""
    from tinycl.data.registry import load_dataset

    if entry.status != "found":
        return entry
    try:
        ds = load_dataset(entry.name, root)
    except TinyclError as err:
        return Entry(entry.name, "error", entry.path, note=str(err))
    except Exception as err:  # a loader bug must not hide the other data sets: report it on its row
        return Entry(entry.name, "error", entry.path, note=f"{type(err).__name__}: {err}")
    return Entry(entry.name, "found", entry.path, len(ds.y_train), len(ds.y_test), entry.note)


def catalog(root: Path, quick: bool = False) -> list[Entry]:
    """One Entry per data set with a loader that reads files (the embedded `digits` set is always there).

    quick: counts from headers and member lists only ("present": the files are there and their headers read);
    otherwise every data set but CORe50 is loaded with its loader's checks ("found": loadable). CORe50's lists are
    parsed either way; its 119,894 images are only opened by a run."""
    root = Path(root)
    entries = []
    for name, layout, find, count in (
            ("mnist", mnist.LAYOUT, mnist.find_mnist, mnist.count_mnist),
            ("cifar10", cifar10.LAYOUT, cifar10.find_cifar10, cifar10.count_cifar10),
            ("speech_commands", speech_commands.LAYOUT, speech_commands.find_speech_commands,
             speech_commands.count_speech_commands),
            ("har", har.LAYOUT, har.find_har, har.count_har)):
        try:
            entry = _entry(name, root, layout, find, count)
        except Exception as err:  # never abort the listing: one error row per data set
            entry = Entry(name, "error", str(root / name), note=f"{type(err).__name__}: {err}")
        if quick and entry.status == "found":
            entry = Entry(entry.name, "present", entry.path, entry.n_train, entry.n_test, entry.note)
        entries.append(entry if quick else _loaded(entry, root))
    try:
        core = _core50(root)
    except Exception as err:
        core = Entry("core50", "error", str(root / "core50"), note=f"{type(err).__name__}: {err}")
    return [_digits(), *entries, core]


def format_table(entries: list[Entry]) -> str:
    """A plain-text table: data set, status, train, test, path; notes on the lines below."""
    rows = [("data set", "status", "train", "test", "path")]
    rows += [(e.name, e.status, f"{e.n_train:,}" if e.n_train is not None else "-",
              f"{e.n_test:,}" if e.n_test is not None else "-", e.path) for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for k, r in enumerate(rows):
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2].rjust(widths[2]), r[3].rjust(widths[3]), r[4]]
        lines.append("  ".join(cells).rstrip())
        if k and entries[k - 1].note:
            lines.append(" " * (widths[0] + 2) + "-> " + entries[k - 1].note)
    return "\n".join(lines)
