"""Atomic file writes, run-folder locks and checksums: a result file is either the old one or the complete new
one, never half written; one process writes a run folder at a time."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tinycl.errors import TinyclError

__all__ = ["atomic_output", "atomic_write_bytes", "atomic_write_json", "atomic_save", "atomic_dir", "sha256",
           "recover_dir", "run_lock", "clean_temporaries", "TEMP_MARK"]

TEMP_MARK = ".tmp"  # every temporary name made here contains it: `clean_temporaries` finds them by it
LOCK_NAME = ".tinycl.lock"


@contextmanager
def atomic_output(path: Path, suffix: str = TEMP_MARK) -> Iterator[Path]:
    """Yields a unique temporary path beside `path`; on a normal exit it is moved onto `path` (atomically), on
    any exception it is removed. Write the file there (a compiler's -o, np.savez, torch.save, ...). The name
    always contains TEMP_MARK (before `suffix`), so a kill's leftover is found by `clean_temporaries`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix.startswith(TEMP_MARK) else f"{TEMP_MARK}{suffix}"
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
    with atomic_output(path, suffix=f"{TEMP_MARK}{Path(path).suffix}") as tmp:
        writer(tmp)


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yields a new, empty, uniquely named directory beside `path`; on a normal exit it replaces `path` (the old
    directory is renamed away first, then removed), on any exception it is removed. A kill between the two renames
    leaves the complete new directory under its temporary name: `recover_dir(path)` puts it in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.new.", suffix=TEMP_MARK))
    try:
        yield new
        _fsync_dir(new)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old.", suffix=TEMP_MARK))
            os.replace(path, old)  # an empty directory as target: rename replaces it
        os.replace(new, path)
        _fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(new, ignore_errors=True)


def recover_dir(path: Path, complete) -> None:
    """After a kill inside `atomic_dir`: if `path` is missing, the newest complete leftover (`complete(dir)` is
    True) takes its place. Call with the folder locked."""
    path = Path(path)
    if path.exists():
        return
    left = sorted(path.parent.glob(f".{path.name}.new.*{TEMP_MARK}"), key=lambda p: p.stat().st_mtime)
    left += sorted(path.parent.glob(f".{path.name}.old.*{TEMP_MARK}"), key=lambda p: p.stat().st_mtime)
    for cand in left:
        if complete(cand):
            os.replace(cand, path)
            return


def _fsync_dir(path: Path) -> None:
    """Flush a directory's files and the directory itself (its entries) to disk."""
    for f in [*(p for p in path.iterdir() if p.is_file()), path]:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def clean_temporaries(folder: Path) -> list[Path]:
    """Remove what a killed writer left in `folder` (names from `atomic_output` / `atomic_dir`, which all start
    with '.' and contain TEMP_MARK). Call with the folder locked. Returns what was removed."""
    removed = []
    for p in Path(folder).glob(f".*{TEMP_MARK}*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_HELD: dict[Path, list] = {}  # folder -> [open lock file, depth]: a process may lock a folder it holds again


@contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold `folder`'s lock (an exclusive `flock` on folder/.tinycl.lock, holding the writer's pid). A second
    process gets a one-line TinyclError naming the holder; the lock of a process that died (even by kill -9) is
    released by the kernel, so the next run takes it over. Re-entrant within one process. A folder this call
    created and nothing but the lock was written to is removed again (a run that failed leaves no folder)."""
    import fcntl

    folder = Path(folder)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        key = folder.resolve()
        if key in _HELD:
            _HELD[key][1] += 1
        else:
            f = open(folder / LOCK_NAME, "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                f.seek(0)
                holder = f.read().strip() or "unknown"
                f.close()
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise TinyclError(f"--out {folder} is in use by another tinycl run (pid {holder}); wait for it to "
                                  f"finish or give another --out") from None
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}\n")
            f.flush()
            _HELD[key] = [f, 1]
    except OSError as err:
        raise TinyclError(f"--out {folder} cannot be written: {err.strerror or err}") from None
    try:
        yield
    finally:
        _HELD[key][1] -= 1
        if not _HELD[key][1]:
            if created and [p.name for p in folder.iterdir()] == [LOCK_NAME]:  # failed before writing: no trace
                (folder / LOCK_NAME).unlink()
                folder.rmdir()
            _HELD.pop(key)[0].close()  # closing releases the flock; a kept file is reused by the next run
