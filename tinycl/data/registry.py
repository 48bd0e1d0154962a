"""Data set names -> loaders. Each loader takes the data root (a directory) and keyword options and returns a
Dataset read from the official layout under that root (see each loader's LAYOUT; `tinycl data list`).

Where the data is: an explicit root (`--data-root`, `data.root` in a run config), else $TINYCL_DATA, else
`../shared/data` relative to the working directory (the layout of this project's checkouts).
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

from tinycl.data.cifar10 import load_cifar10
from tinycl.data.core50 import load_core50
from tinycl.data.dataset import Dataset
from tinycl.data.digits import load_digits
from tinycl.data.har import load_har
from tinycl.data.mnist import load_mnist
from tinycl.data.speech_commands import load_speech_commands
from tinycl.errors import ConfigError

__all__ = ["LOADERS", "load_dataset", "default_data_root", "resolve_data_root", "loader_options"]

LOADERS = {
    "digits": load_digits,
    "mnist": load_mnist,
    "cifar10": load_cifar10,
    "speech_commands": load_speech_commands,
    "har": load_har,
    "core50": load_core50,
}

DEFAULT_DATA_ROOT = Path("..") / "shared" / "data"


def default_data_root() -> Path:
    """$TINYCL_DATA if set, else ../shared/data relative to the working directory."""
    return Path(os.environ.get("TINYCL_DATA") or DEFAULT_DATA_ROOT)


def resolve_data_root(root: str | Path | None = None) -> Path:
    """The data root: `root` if given (--data-root), else default_data_root()."""
    return Path(root) if root else default_data_root()


def loader_options(name: str) -> tuple[str, ...]:
    """The keyword options a loader accepts (besides the root)."""
    params = inspect.signature(LOADERS[name]).parameters.values()
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def load_dataset(name: str, root: str | Path | None = None, **options) -> Dataset:
    """LOADERS[name](root, **options), with errors naming the allowed data sets and options."""
    if name not in LOADERS:
        raise ConfigError(f"unknown data set {name!r}; allowed: {', '.join(sorted(LOADERS))}")
    if unknown := sorted(set(options) - set(loader_options(name))):
        raise ConfigError(f"data set {name}: unknown options {unknown}; allowed: "
                          f"{', '.join(loader_options(name)) or 'none'}")
    return LOADERS[name](resolve_data_root(root), **options)
