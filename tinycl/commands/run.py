"""`tinycl run CONFIG.toml [--set key=value ...] [--out DIR] [--resume]`: one configured experiment.

Shows what it is doing: decoding the data, pre-deployment training (epochs), the frozen stage's pass over the
data (samples, with ETA), one line per experience (accuracy on the classes seen, replay bytes) and a summary
table. Writes DIR/config.toml (the full config), metrics.json, accuracy_matrix.csv, accuracy.png and the saved
learner DIR/learner/ (frozen stage as int8 .tflite, weights and replay memory as safetensors, state as JSON; see
`tinycl predict`, `tinycl export --from`), atomically after every experience. DIR is locked while a run writes
it: a second run on it stops with one line. --resume continues after the last finished experience from
DIR/learner/, without pre-deployment training.
Torch uses one thread by default (--threads): the adaptive stage's tensors are small, more threads mostly wait."""

from __future__ import annotations

import argparse
import sys
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
    p.add_argument("--no-progress", action="store_true", help="no progress bars or per-experience lines")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: small tensors gain nothing from more; the frozen pass runs one "
                        "batch per thread)")
    p.set_defaults(handler=run)


def bars_for(quiet: bool):
    """Progress bars (tinycl.runner.Bars) on stderr: tqdm with counts, rate and ETA; None when quiet."""
    if quiet:
        return None
    from tqdm import tqdm

    return lambda desc, total, unit: tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)


def run(args) -> int:
    import torch

    from tinycl.config import load_config
    from tinycl.demo import format_table
    from tinycl.io import run_lock
    from tinycl.runner import open_run, prepare, run_experiment, warm_latents

    torch.set_num_threads(max(1, args.threads))
    cfg = load_config(args.config, args.overrides)
    out = args.out or Path("runs") / args.config.stem
    bars = bars_for(args.no_progress)
    say = (lambda line: None) if args.no_progress else print
    with run_lock(out):
        saved = open_run(out, cfg, args.resume)  # checked (config, checksums) before anything is computed
        if saved is not None:
            say(f"resuming {out} after experience {saved.matrix()['done']}: frozen stage, normalisation and adaptive "
                f"stage from {saved.path} (no pre-deployment training)")
        setup = prepare(cfg, saved=saved, bars=bars)
        warm_latents(setup, bars)
        n = len(setup.scenario)

        def line(m: dict) -> None:
            i = m["experiences_done"] - 1
            exp = setup.scenario.train[i]
            say(f"experience {i + 1}/{n}: {len(exp)} samples of classes {list(exp.classes)}; accuracy on classes "
                f"seen {100 * m['accuracy_after_each'][-1]:.1f}%, replay {m['replay_bytes']:,} B, "
                f"{m['seconds']:.1f} s")
            if i + 1 in m["collapsed_after"]:  # a warning even with --no-progress
                print(f"warning: after experience {i + 1} the learner predicts one class for every test sample "
                      f"(collapsed, with a finite loss): lower train.lr, or set train.clip_norm or "
                      f"train.batch_renorm", file=sys.stderr)

        m = run_experiment(cfg, out, resume=args.resume, setup=setup, saved=saved, on_experience=line)
    print(format_table([m]))
    print(f"wrote {out}: metrics.json, accuracy_matrix.csv, accuracy.png, learner/")
    return 0
