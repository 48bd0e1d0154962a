"""`tinycl run CONFIG.toml [--set key=value ...] [--out DIR] [--resume]`: one configured experiment.

Writes DIR/config.toml (the full config), metrics.json, accuracy_matrix.csv and accuracy.png, atomically after
every experience; --resume continues after the last finished experience."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run one configured experiment", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", type=Path, help="TOML run config (every key optional)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set memory.bits=7 (repeatable)")
    p.add_argument("--out", type=Path, default=None, help="output directory (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out after its last experience")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.set_defaults(handler=run)


def run(args) -> int:
    import torch
    from tqdm import tqdm

    from tinycl.config import load_config
    from tinycl.runner import prepare, run_experiment

    if args.threads:
        torch.set_num_threads(max(1, args.threads))
    cfg = load_config(args.config, args.overrides)
    out = args.out or Path("runs") / args.config.stem
    setup = prepare(cfg)
    with tqdm(total=len(setup.scenario), desc=cfg.strategy, unit="exp", disable=args.no_progress) as bar:
        m = run_experiment(cfg, out, resume=args.resume, setup=setup, progress=lambda i: bar.update())
    print(f"{m['strategy']} bits={m['bits']}: final accuracy {100 * m['final_accuracy']:.1f}%, forgetting "
          f"{100 * m['forgetting']:.1f}%, replay {m['replay_bytes']:,} bytes, {m['seconds']:.1f} s -> {out}")
    return 0
