"""A small on-disk cache of decoded data sets: one .npz per (loader, source files, options).

The key is the source files' paths, sizes and modification times plus the loader's options, so replacing or
touching a source file invalidates its entry. The cache is an optimisation only: an unwritable or corrupt
cache falls back to decoding, and `cache=False` bypasses it. Writes are atomic (tinycl.io.atomic_output), so
an interrupted write never leaves a half-written entry behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from tinycl.io import atomic_output

__all__ = ["cache_dir", "cache_key", "cached_arrays", "find_cached"]

# Bump when a loader's decoded output changes meaning, so old entries are not reused.
FORMAT_VERSION = 2


def cache_dir(cache: bool | str | Path = True) -> Path | None:
    """The cache directory: `cache` if it is a path, else $TINYCL_CACHE, else ~/.cache/tinycl; None if off."""
    if cache is False:
        return None
    if cache is not True:
        return Path(cache)
    return Path(os.environ.get("TINYCL_CACHE") or Path.home() / ".cache" / "tinycl")


def cache_key(loader: str, sources: Iterable[Path], options: dict) -> str:
    """Hex digest of the loader name, each source's absolute path, size and mtime (ns), and the options."""
    stats = []
    for p in sources:
        st = os.stat(p)
        stats.append([os.path.abspath(p), st.st_size, st.st_mtime_ns])  # abspath: cheap on 100k image files
    blob = json.dumps([FORMAT_VERSION, loader, stats, options], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _entry(directory: Path, loader: str, key: str) -> Path:
    return directory / f"{loader}-{key}.npz"


def _read(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None  # unreadable entry: decode again (and overwrite it)


def find_cached(loader: str, sources: Iterable[Path], options: dict,
                cache: bool | str | Path = True) -> dict[str, np.ndarray] | None:
    """The cached arrays for this key, or None (no entry, cache off, or unreadable entry)."""
    directory = cache_dir(cache)
    if directory is None:
        return None
    path = _entry(directory, loader, cache_key(loader, sources, options))
    return _read(path) if path.is_file() else None


def cached_arrays(loader: str, sources: Iterable[Path], options: dict, build: Callable[[], dict[str, np.ndarray]],
                  cache: bool | str | Path = True) -> dict[str, np.ndarray]:
    """`build()` (a dict of arrays, no object dtypes), read from the cache when an entry for this key exists.

    sources: the files whose bytes `build` reads (their size/mtime key the entry)."""
    sources = list(sources)
    directory = cache_dir(cache)
    if directory is None:
        return build()
    path = _entry(directory, loader, cache_key(loader, sources, options))
    if path.is_file() and (arrays := _read(path)) is not None:
        return arrays
    arrays = build()
    try:
        with atomic_output(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)  # uncompressed: the point of the cache is a fast second load
    except OSError:
        pass  # read-only or full disk: the cache is never required
    return arrays
