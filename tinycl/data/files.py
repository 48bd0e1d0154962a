"""Reading source files and archives with errors that name the file and what was expected.

Archives are read in place (never unpacked to disk). A truncated or corrupt archive surfaces as a DataError
instead of an EOFError/zlib.error/tarfile.ReadError traceback from deep inside the standard library.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from tinycl.errors import DataError

__all__ = ["require_file", "tar_names", "scan_tar", "iter_tar", "decode_rgb", "ARCHIVE_ERRORS"]

# What tarfile/gzip raise on a truncated or corrupt archive.
ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)


def require_file(path: Path, expected: str) -> Path:
    """`path` if it is a file, else DataError "<path> not found: expected <expected>"."""
    if not Path(path).is_file():
        raise DataError(f"{path} not found: expected {expected}")
    return Path(path)


def _bad_archive(path: Path, err: BaseException) -> DataError:
    return DataError(f"{path}: truncated or corrupt archive ({type(err).__name__}: {err}); "
                     "expected a complete .tar or .tar.gz file, re-download or re-copy it")


def tar_names(path: Path) -> list[str]:
    """Names of the regular files in a tar(.gz), in archive order, without a leading './'.

    Reads the whole stream (a tar has no index), which also detects truncation."""
    return scan_tar(path)[0]


@contextlib.contextmanager
def _open_tar(path: Path) -> Iterator[tarfile.TarFile]:
    """A tar(.gz) opened for one streaming pass. On leaving, the archive must have ended at its end-of-archive
    marker (a zero block) and a gzip stream at its end-of-stream marker, checked against the bytes read:
    tarfile alone reads an archive cut at a member boundary as a complete, shorter one."""
    with open(path, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        fileobj = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
        with tarfile.open(fileobj=fileobj, mode="r|" if gz else "r|*") as tar:
            yield tar
            stream = tar.fileobj  # tarfile's _Stream: `pos` counts the bytes it has read
            if tar.offset and stream.pos < tar.offset + tarfile.BLOCKSIZE:
                raise tarfile.ReadError(f"no end-of-archive marker after byte {tar.offset:,}: the archive was cut "
                                        "short")
            while stream.read(1 << 20):  # the rest (record padding): gzip checks its end-of-stream marker and CRC
                pass


def scan_tar(path: Path, read: Callable[[str], bool] = lambda name: False) -> tuple[list[str], dict[str, bytes]]:
    """One pass over a tar(.gz): the names of all regular files, and the bytes of those `read` selects
    (small index files, e.g. a list of test files). A truncated archive is a DataError."""
    names, contents = [], {}
    try:
        with _open_tar(path) as tar:
            for m in tar:
                if m.isfile():
                    names.append(_clean(m.name))
                    if read(names[-1]):
                        contents[names[-1]] = tar.extractfile(m).read()
    except ARCHIVE_ERRORS as err:
        raise _bad_archive(path, err) from err
    return names, contents


def iter_tar(path: Path, want: Callable[[str], bool] = lambda name: True) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each regular file in a tar(.gz) whose cleaned name passes `want`, streamed in archive
    order (one pass, no seeking back: fast on .tar.gz); read to the end, so a truncated archive is a DataError
    even when every wanted member was read."""
    try:
        with _open_tar(path) as tar:
            for m in tar:
                name = _clean(m.name)
                if m.isfile() and want(name):
                    f = tar.extractfile(m)
                    yield name, f.read()
    except ARCHIVE_ERRORS as err:
        raise _bad_archive(path, err) from err


def _clean(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


def decode_rgb(raw: bytes, where: str, size: tuple[int, int], layout: str = "") -> np.ndarray:
    """An encoded image (PNG, JPEG, ...) -> uint8 (3, H, W) RGB; DataError naming `where` if it is unreadable or
    not `size` (width, height)."""
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(raw)).convert("RGB")
    except Exception as err:
        raise DataError(f"{where}: not a readable image ({err})") from err
    if img.size != tuple(size):
        raise DataError(f"{where}: image is {img.size[0]}x{img.size[1]}, expected {size[0]}x{size[1]}"
                        + (f" ({layout})" if layout else ""))
    return np.asarray(img).transpose(2, 0, 1)
