"""`tinycl cost [CONFIG.toml] --target NAME`: will a learner fit a device, and what does learning cost there?

Prints the bytes of every buffer and the memory tier it lands in (fits / does not fit, naming the tier and the
overflow), MACs, latency and energy per training mini-batch and per experience, and the battery lifetime when
one mini-batch is learned every --period-s seconds. CONFIG is a run config: the learner costed is the one
`tinycl run CONFIG` builds (its data set, .tflite or zoo model, split, strategy), without pre-deployment
training. Without CONFIG the demo learner (digits_cnn split after conv3, N = 100) is costed; --paper costs the
paper's MobileNet-V1 setting instead.
--target all prints one summary line per target. A configuration that does not fit is a report (exit 0).
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    p = sub.add_parser("cost", help="device memory, latency, energy and lifetime of a learner",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", type=Path, nargs="?", default=None, help="TOML run config (default: the demo learner)")
    p.add_argument("--target", required=True, help="device: vega, stm32l4, stm32l476, stm32h7, cortex-m4f, or all")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set memory.bits=4 (repeatable)")
    p.add_argument("--paper", action="store_true",
                   help="cost the paper's setting: MobileNet-V1 128x128 split after conv5_4/dw, N=1500 at 8 bit, "
                        "mini-batch 128 (21 new + 107 replayed), plain SGD, batch-size-1 kernels")
    p.add_argument("--battery-mah", type=float, default=3300.0, help="battery capacity (default 3300 mAh)")
    p.add_argument("--volts", type=float, default=3.7, help="battery voltage (default 3.7 V, one Li-ion cell)")
    p.add_argument("--period-s", type=float, default=60.0, help="one mini-batch is learned every ... s (default 60)")
    p.add_argument("--samples-per-experience", type=int, default=None,
                   help="new samples per experience (default: the scenario's mean after experience 0)")
    p.add_argument("--epochs", type=int, default=None, help="passes over each experience's new samples")
    p.add_argument("--micro-batch", type=int, default=None,
                   help="samples per forward/backward pass (default: the whole mini-batch; 1: batch-size-1 kernels)")
    p.add_argument("--arena-bytes", type=int, default=None, help="planned training arena size, if known")
    p.add_argument("--on-chip-only", action="store_true", help="do not use the target's off-chip memories")
    p.add_argument("--show-target", action="store_true", help="first print each target's parameters and sources")
    p.set_defaults(handler=run)


def _workload(args):
    from dataclasses import replace

    from tinycl.cost.workload import from_config, paper_workload

    if args.paper:
        if args.config is not None or args.overrides:
            from tinycl.errors import ConfigError

            raise ConfigError("--paper replaces the run config; give either CONFIG/--set or --paper")
        w = paper_workload(**({"epochs": args.epochs} if args.epochs else {}))
        changes = {k: v for k, v in (("samples_per_experience", args.samples_per_experience),
                                     ("micro_batch", args.micro_batch)) if v is not None}
        return replace(w, new_per_batch=None, **changes) if changes else w
    from tinycl.config import apply_overrides, config_from_dict, config_to_dict, load_config

    if args.config is None:
        from tinycl.config import RunConfig
        from tinycl.demo import DEMO_CONFIG

        cfg = config_from_dict(RunConfig, apply_overrides(config_to_dict(DEMO_CONFIG), args.overrides))
    else:
        cfg = load_config(args.config, args.overrides)
    return from_config(cfg, args.samples_per_experience, args.micro_batch, args.epochs)


def run(args) -> int:
    from tinycl.cost.model import Battery, estimate
    from tinycl.cost.report import format_report, format_summary, format_target
    from tinycl.cost.targets import TARGETS, get_target

    targets = list(TARGETS.values()) if args.target == "all" else [get_target(args.target)]
    battery = Battery(args.battery_mah, args.volts)
    workload = _workload(args)
    reports = [estimate(workload, t, arena_bytes=args.arena_bytes, battery=battery, period_s=args.period_s,
                        external=not args.on_chip_only) for t in targets]
    if args.show_target:
        print("\n\n".join(format_target(t) for t in targets), end="\n\n")
    print(format_report(reports[0]) if len(reports) == 1 else format_summary(reports))
    return 0
