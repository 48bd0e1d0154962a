"""`tinycl compare RUN_DIR... [--out DIR]`: runs made by hand (tinycl run) in one table.

Each RUN_DIR holds a run's config.toml and metrics.json. The table's axes are the config keys whose values
differ between the runs; its metrics are those of `tinycl sweep`'s table. Prints the table as Markdown; with
--out also writes results.csv, results.md, results_summary.md and pareto.png there.
"""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="runs made by hand in one table and one Pareto plot", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+", help="run directories (with config.toml and metrics.json)")
    p.add_argument("--out", type=Path, default=None, help="also write the table and plot into this directory")
    p.set_defaults(handler=run)


def _read(run: Path) -> tuple[dict, dict]:
    from tinycl.errors import ConfigError

    try:
        config = tomllib.loads((run / "config.toml").read_text())
        metrics = json.loads((run / "metrics.json").read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{run} is not a finished run directory (config.toml + metrics.json): {err}") from None
    return config, metrics


def run(args) -> int:
    from tinycl.sweep.results import flatten, markdown_table, write_report

    runs = [(path, *_read(path)) for path in args.runs]
    flat = [flatten(config) for _, config, _ in runs]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    axes = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1]
    results = [{"trial": str(path), "values": {a: f.get(a) for a in axes}, "status": "ok", "metrics": metrics}
               for (path, _, metrics), f in zip(runs, flat, strict=True)]
    print(markdown_table(results, axes), end="")
    if args.out:
        paths = write_report(results, axes, args.out, title="tinycl compare")
        print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0
