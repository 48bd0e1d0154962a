"""Data sets, read from local files in their official layouts (never downloaded)."""

from tinycl.data.dataset import Dataset, to_float
from tinycl.data.registry import LOADERS, load_dataset, resolve_data_root

__all__ = ["Dataset", "LOADERS", "load_dataset", "resolve_data_root", "to_float"]
