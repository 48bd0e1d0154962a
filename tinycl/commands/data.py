"""`tinycl data list [--data-root DIR] [--quick]`: which data sets are found where, with their train/test counts,
and where to put the missing ones. Each found data set is loaded with its loader's checks (through the cache, so
only the first listing decodes): "found" means loadable, and a file a loader refuses is an "error" row naming the
problem. --quick reads headers and member lists only ("present").

`tinycl data inspect PATH [--loader NAME] [--set option=value ...]`: what a generic loader makes of your own
folder, archive or array file before a run: name, classes, train/test counts per class, sample shape and dtype,
how the split was made, and for audio the sample rates found.

The data root is --data-root, else $TINYCL_DATA, else ../shared/data relative to the working directory.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

__all__ = ["add_parser", "run", "guess_loader"]


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="list the data sets found under the data root; inspect your own",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = actions.add_parser("list", help="data sets found, their paths and train/test counts",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ls.add_argument("--data-root", type=Path, default=None,
                    help="data root (default: $TINYCL_DATA, else ../shared/data)")
    ls.add_argument("--quick", action="store_true", help="headers only: do not load (status 'present')")
    ins = actions.add_parser("inspect", help="what a generic loader makes of a folder, archive or .npz",
                             description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ins.add_argument("path", type=Path, help="a folder, a .tar.gz/.tgz/.tar/.zip archive, an .npz or .npy folder")
    ins.add_argument("--loader", default=None, help="image_folder, wav_folder or arrays (default: guessed)")
    ins.add_argument("--set", dest="options", action="append", default=[], metavar="OPTION=VALUE",
                     help="a loader option as in data.options, e.g. --set 'label=^(?P<label>[a-z]+)_'")
    p.set_defaults(handler=run)


def guess_loader(path: Path) -> str:
    """arrays for .npz / a folder of .npy, wav_folder when the folder or archive holds .wav files, else
    image_folder."""
    from tinycl.data.folders import IMAGE_EXT, list_files

    if path.suffix in (".npz", ".npy") or (path.is_dir() and any(path.glob("*.npy"))):
        return "arrays"
    _, names = list_files(path, (".wav", *IMAGE_EXT))
    return "wav_folder" if any(n.lower().endswith(".wav") for n in names) else "image_folder"


def _inspect(args) -> int:
    from tinycl.config import apply_overrides
    from tinycl.data.registry import load_dataset
    from tinycl.errors import ConfigError

    options = apply_overrides({}, args.options)
    loader = args.loader or guess_loader(args.path)
    if loader not in ("image_folder", "wav_folder", "arrays"):
        raise ConfigError(f"--loader {loader!r}; allowed: image_folder, wav_folder, arrays")
    ds = load_dataset(loader, args.path, cache=False, **options) if loader != "arrays" \
        else load_dataset(loader, args.path, **options)
    print(f"{ds.name}: loader {loader}, {len(ds.y_train):,} train / {len(ds.y_test):,} test samples, "
          f"{ds.n_classes} classes, split: {ds.meta.get('layout')}")
    print(f"sample shape {ds.sample_shape} {ds.x_train.dtype}" + (
        f"; sample rates {ds.meta['sample_rates']} Hz, resampled to {ds.meta['sample_rate']} Hz"
        if "sample_rates" in ds.meta else ""))
    tr, te = Counter(ds.y_train.tolist()), Counter(ds.y_test.tolist())
    width = max(len(c) for c in ds.classes)
    print(f"{'class'.ljust(width)}  label  train  test")
    for i, c in enumerate(ds.classes):
        print(f"{c.ljust(width)}  {i:5d}  {tr[i]:5d}  {te[i]:4d}")
    for side in ("train", "test"):
        groups = ds.meta.get(f"{side}_groups")
        if groups is not None and loader != "image_folder" and len(set(groups.tolist())) < len(groups):
            print(f"{side} groups: {len(set(groups.tolist()))}")
    return 0


def run(args) -> int:
    if args.action == "inspect":
        return _inspect(args)
    from tinycl.data.catalog import catalog, format_table
    from tinycl.data.registry import resolve_data_root

    root = resolve_data_root(args.data_root)
    where = "" if root.is_dir() else "  (not a directory: every data set is missing)"
    print(f"data root: {root.resolve()}{where}")
    print(format_table(catalog(root, quick=args.quick)))
    return 0
