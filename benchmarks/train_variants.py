"""Final accuracy of a few training variants on one prepared setup (data, frozen stage and latents computed once).

    python benchmarks/train_variants.py benchmarks/configs/cifar10_mobilenet_qlr.toml \
        --set data.n_train=4000 --set data.n_test=1000 \
        --variant pellegrini:train.replay_mix=pellegrini --variant balanced:train.replay_mix=class_balanced

Each --variant is NAME:KEY=VALUE[,KEY=VALUE...] (the same keys as --set) applied on top of the config; a variant
that diverges prints the one-line error instead of an accuracy. Seeds: --seeds 0 1 runs each variant per seed
(the setup is prepared once per seed).
"""

from __future__ import annotations

import argparse
import time

import torch

from tinycl.config import RunConfig, apply_overrides, config_from_dict, config_to_dict, load_config
from tinycl.errors import TinyclError
from tinycl.runner import prepare, run_experiment


def variant(cfg: RunConfig, spec: str) -> tuple[str, RunConfig]:
    name, _, sets = spec.partition(":")
    data = apply_overrides(config_to_dict(cfg), [s for s in sets.split(",") if s])
    return name, config_from_dict(RunConfig, data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--variant", action="append", default=[])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = ap.parse_args()
    torch.set_num_threads(1)
    for seed in args.seeds:
        base = load_config(args.config, [*args.set, f"seed={seed}"])
        setup = prepare(base)
        for name, cfg in (variant(base, v) for v in args.variant or ["base:"]):
            t0 = time.perf_counter()
            try:
                acc = f"{run_experiment(cfg, setup=setup)['final_accuracy']:.4f}"
            except TinyclError as err:
                acc = f"error: {err}"
            print(f"seed {seed}  {name:24s} {acc}  ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
