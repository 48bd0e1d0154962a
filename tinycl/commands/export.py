"""`tinycl export CONFIG [--from RUN_DIR] --out DIR`: the learner of a run config as a C99 project for a
microcontroller (docs/firmware.md).

DIR holds the C runtime and the generated tables of this learner (int8 frozen stage, fp32 adaptive stage, arena
offsets, replay memory), main.c streaming DIR/scenario.bin (the configured stream), and one Makefile with a host
and a Cortex-M4F build: `make -C DIR run-host`, `make -C DIR run-qemu` (QEMU mps2-an386). --from RUN_DIR exports
the state a finished `tinycl run --out RUN_DIR` ended with, so the device continues where the host left off.
The learner must fit --target's memories (the cost model's tiers, on chip): otherwise one line naming the tier
and the overflow, exit 2. With the Arm toolchain installed, the ELF's flash and RAM are printed beside the cost
model's figures.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="the learner as a C99 project for a microcontroller (host and Cortex-M4F)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", type=Path, nargs="?", default=None, help="TOML run config (not with --from)")
    p.add_argument("--from", dest="run_dir", type=Path, default=None,
                   help="a finished run directory (tinycl run --out): export its config and final state")
    p.add_argument("--out", type=Path, required=True, help="directory to write the project into")
    p.add_argument("--target", default="mps2-an386", help="device whose memories it must fit (default mps2-an386)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set memory.capacity=50 (repeatable)")
    p.add_argument("--experiences", type=int, default=None, help="write only the first K experiences to the scenario")
    p.set_defaults(handler=run)


def run(args) -> int:
    from tinycl.config import load_config
    from tinycl.cost.targets import get_target
    from tinycl.errors import ConfigError
    from tinycl.export import DeviceLearner, export_project, fit, footprint, missing_tools
    from tinycl.export.project import flash_nbytes, ram_nbytes

    if (args.config is None) == (args.run_dir is None):
        raise ConfigError("give a CONFIG or --from RUN_DIR (one of them)")
    target = get_target(args.target)
    cfg = load_config(args.config, args.overrides) if args.config else None
    dl = DeviceLearner.build(cfg, run_dir=args.run_dir)
    sizes = fit(dl, target)
    plan = export_project(dl, args.out, args.experiences)
    print(f"wrote {args.out}: {dl.cfg.model.arch} split at {dl.cfg.model.split!r}, N = {dl.memory.capacity} "
          f"at {dl.memory.bits} bit, arena {plan.trainer.plan.size:,} B")
    ram, flash = ram_nbytes(sizes), flash_nbytes(sizes)
    print(f"cost model ({target.name}): RAM {ram:,} B, flash {flash:,} B (frozen stage "
          f"{sizes['frozen_weights'] + sizes['requant']:,}, initial weights {sizes['initial_weights']:,}, code "
          f"{sizes['code']:,})")
    if not missing_tools(("arm-none-eabi-gcc", "arm-none-eabi-size")):
        fp = footprint(args.out)
        print(f"Cortex-M4F ELF (-O2): flash {fp.flash:,} B ({(fp.flash - flash) / flash:+.1%}; code, constants, "
              f".data image), RAM {fp.ram:,} B ({(fp.ram - ram) / ram:+.1%}; .data + .bss), state slots "
              f"{fp.state:,} B")
    print(f"run: make -C {args.out} run-host   |   make -C {args.out} run-qemu")
    return 0
