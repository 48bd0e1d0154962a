"""Data sets, read from local files in their official layouts (never downloaded), or from a user's own folders and
arrays (image_folder, wav_folder, arrays); `register_loader` adds a loader written in Python."""

from tinycl.data.dataset import Dataset, to_float
from tinycl.data.registry import LOADERS, load_dataset, register_loader, resolve_data_root

__all__ = ["Dataset", "LOADERS", "load_dataset", "register_loader", "resolve_data_root", "to_float"]
