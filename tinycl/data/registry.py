"""Data set names -> loaders. Each loader takes the data root (a directory) and returns a Dataset."""

from __future__ import annotations

import os
from pathlib import Path

from tinycl.data.dataset import Dataset
from tinycl.data.digits import load_digits
from tinycl.errors import ConfigError

__all__ = ["LOADERS", "load_dataset", "default_data_root"]

LOADERS = {
    "digits": load_digits,
}


def default_data_root() -> Path:
    """--data-root if given, else $TINYCL_DATA, else ../shared/data beside the working directory."""
    return Path(os.environ.get("TINYCL_DATA", Path("..") / "shared" / "data"))


def load_dataset(name: str, root: str | Path | None = None, **kwargs) -> Dataset:
    if name not in LOADERS:
        raise ConfigError(f"unknown data set {name!r}; allowed: {', '.join(sorted(LOADERS))}")
    return LOADERS[name](Path(root) if root else default_data_root(), **kwargs)
