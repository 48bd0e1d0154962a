"""Data sets, read from local files in their official layouts (never downloaded)."""

from tinycl.data.dataset import Dataset
from tinycl.data.registry import LOADERS, load_dataset

__all__ = ["Dataset", "LOADERS", "load_dataset"]
