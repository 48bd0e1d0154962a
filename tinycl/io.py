"""Atomic file writes: a result file is either the old one or the complete new one, never half written."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_output", "atomic_write_bytes", "atomic_write_json", "atomic_save"]


@contextmanager
def atomic_output(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yields a unique temporary path beside `path`; on a normal exit it is moved onto `path` (atomically), on
    any exception it is removed. Write the file there (a compiler's -o, np.savez, torch.save, ...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, allow_nan=True) + "\n").encode())


def atomic_save(path: Path, writer) -> None:
    """Call writer(tmp_path) to produce the file, then move it into place."""
    with atomic_output(path, suffix=f".tmp{Path(path).suffix}") as tmp:
        writer(tmp)
