"""`tinycl data list [--data-root DIR]`: which data sets are found where, with their train/test counts, and
where to put the missing ones.

The data root is --data-root, else $TINYCL_DATA, else ../shared/data relative to the working directory.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="list the data sets found under the data root",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = actions.add_parser("list", help="data sets found, their paths and train/test counts",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ls.add_argument("--data-root", type=Path, default=None,
                    help="data root (default: $TINYCL_DATA, else ../shared/data)")
    p.set_defaults(handler=run)


def run(args) -> int:
    from tinycl.data.catalog import catalog, format_table
    from tinycl.data.registry import resolve_data_root

    root = resolve_data_root(args.data_root)
    where = "" if root.is_dir() else "  (not a directory: every data set is missing)"
    print(f"data root: {root.resolve()}{where}")
    print(format_table(catalog(root)))
    return 0
