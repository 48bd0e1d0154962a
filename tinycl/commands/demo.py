"""`tinycl demo [--out DIR]`: the embedded default, needing no files outside the package."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="continual learning on scikit-learn's digits, every strategy",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output directory (default: runs/demo)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: the demo's tensors are tiny, more threads only wait on each other)")
    p.set_defaults(handler=run)


def run(args) -> int:
    import torch

    from tinycl.demo import format_table, run_demo

    torch.set_num_threads(max(1, args.threads))
    rows = run_demo(args.out, show_progress=not args.no_progress)
    print(format_table(rows))
    print(f"wrote {args.out / 'summary.json'}, {args.out / 'accuracy.png'}")
    return 0
