"""`tinycl sweep GRID.toml [--out DIR] [--address ADDR] [--workers N] [--resume] [--target NAME]`: run a grid of
experiments as Ray tasks, locally (all cores by default) or on a cluster (--address auto, or ray://HOST:10001).

A grid file is a base run config plus axes (docs/sweep.md). Data loading, pre-deployment training and the frozen
stage's latents are computed once per distinct data/model/split and shared by every trial that needs them. Each
trial writes DIR/trials/<name>/ (config.toml, metrics.json, checkpoint, result.json) atomically; a rerun skips
finished trials, --resume also continues unfinished ones from their checkpoints, and a trial that fails is
recorded with its one-line error while the others go on. At the end: DIR/results.csv, results.md (every axis and
metric, the Pareto flag), results_summary.md (mean +- sd over seeds) and pareto.png (accuracy vs device bytes;
with --target also accuracy vs latency and vs energy per training mini-batch on that device).
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="run a grid of experiments on Ray (local or a cluster): one table, a Pareto plot",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("grid", type=Path, help="grid file (TOML): base config + axes")
    p.add_argument("--out", type=Path, default=None, help="output directory (default: runs/<grid name>)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--workers", type=int, default=None, help="CPUs of the local Ray (default: all cores)")
    p.add_argument("--resume", action="store_true", help="continue unfinished trials from their checkpoints")
    p.add_argument("--target", default=None, help="also cost each learner on this device (see tinycl cost)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=run)


def run(args) -> int:
    from tqdm import tqdm

    from tinycl.errors import ConfigError
    from tinycl.sweep import load_grid, run_sweep
    from tinycl.sweep.results import write_report

    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.target is not None:
        from tinycl.cost.targets import get_target

        get_target(args.target)  # an unknown target is an error before anything runs
    grid = load_grid(args.grid)
    out = args.out or Path("runs") / args.grid.stem
    with tqdm(total=len(grid.trials), desc="sweep", unit="trial", disable=args.no_progress) as bar:
        def progress(done, running, failed, total):
            bar.update(done - bar.n)
            bar.set_postfix(running=running, failed=failed)

        results = run_sweep(grid, out, address=args.address, workers=args.workers, resume=args.resume,
                            target=args.target, progress=progress)
    paths = write_report(results, list(grid.axes), out, title=args.grid.stem)
    failed = [r for r in results if r["status"] != "ok"]
    print(f"{len(results) - len(failed)} of {len(results)} trials finished, {len(failed)} failed -> "
          f"{', '.join(str(p) for p in paths)}")
    for r in failed:
        print(f"  failed: {r['trial']}: {r['error']}")
    return 0
