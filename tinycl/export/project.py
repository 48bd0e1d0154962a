"""`export_project`: the directory `tinycl export` writes, and its footprint.

DIR/src/         the C runtime (tinycl/csrc and csrc/firmware, copied) and the generated tcl_model.h / tcl_model.c
DIR/main.c, platform.h, platform_host.c, platform_qemu.c, startup_mps2.c, mps2_an386.ld, Makefile  (templates/)
DIR/scenario.bin the configured stream (tinycl.export.scenario)

`fit(dl, target)` checks the learner against a target's memories as the cost model places buffers (on chip only);
`footprint(dir)` builds the Cortex-M4F ELF and reads flash and RAM from it (arm-none-eabi-size -A).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tinycl.cost.model import place
from tinycl.cost.targets import FLASH_KINDS, TCL_M4F_CODE_NBYTES, Target
from tinycl.cost.workload import buffers, planned_arena_bytes, workload_of
from tinycl.errors import ConfigError
from tinycl.export.codegen import TEMPLATES, Plan, generate
from tinycl.export.learner import DeviceLearner
from tinycl.export.scenario import write_scenario
from tinycl.runtime import CSRC

__all__ = ["export_project", "fit", "flash_nbytes", "footprint", "predicted", "ram_nbytes", "Footprint", "BOARD_FILES",
           "TOOLS"]

BOARD_FILES = ("main.c", "platform.h", "platform_host.c", "platform_qemu.c", "startup_mps2.c", "mps2_an386.ld",
               "Makefile")
# Debian packages of the cross toolchain and the emulator, by the program they provide
TOOLS = {"arm-none-eabi-gcc": "gcc-arm-none-eabi", "arm-none-eabi-size": "binutils-arm-none-eabi",
         "qemu-system-arm": "qemu-system-arm"}


def predicted(dl: DeviceLearner, code_nbytes: int = TCL_M4F_CODE_NBYTES["-O2"]) -> dict[str, int]:
    """The cost model's buffers (tinycl.cost.workload.buffers) for this learner as the firmware runs it: one sample
    per pass, the whole arena planned (weights, gradients, momentum, one sample's tensors), the largest experience's
    latents buffered; `code_nbytes` of runtime code (default: the measured Cortex-M4F -O2 build)."""
    w = workload_of(dl.cfg, dl.setup, dl.learner, samples_per_experience=dl.max_new, micro_batch=1)
    return buffers(w, planned_arena_bytes(w), code_nbytes)


def flash_nbytes(sizes: dict[str, int]) -> int:
    """Flash of the cost model's buffers: the read-only kinds (cost.targets.FLASH_KINDS)."""
    return sum(n for k, n in sizes.items() if k in FLASH_KINDS)


def ram_nbytes(sizes: dict[str, int]) -> int:
    return sum(n for k, n in sizes.items() if k not in FLASH_KINDS)


def fit(dl: DeviceLearner, target: Target) -> dict[str, int]:
    """The cost model's buffers, placed on `target`'s on-chip memories; ConfigError naming the tier and the
    overflow in bytes if one does not fit."""
    sizes = predicted(dl, target.code_nbytes)
    _, _, overflows = place(sizes, target, external=False)
    if overflows:
        o = overflows[0]
        raise ConfigError(f"the learner does not fit {target.name}: {o.kind.replace('_', ' ')} needs {o.nbytes:,} B, "
                          f"{o.tier} has {o.free:,} B left: {o.over:,} B over")
    return sizes


def export_project(dl: DeviceLearner, out: Path, experiences: int | None = None) -> Plan:
    """Write the project for learner `dl` into `out` (created; files of an earlier export are replaced)."""
    out = Path(out)
    src = out / "src"
    src.mkdir(parents=True, exist_ok=True)
    plan = Plan(dl)
    for path in [*CSRC.glob("*.c"), *CSRC.glob("*.h"), *(CSRC / "firmware").glob("*.[ch]")]:
        shutil.copyfile(path, src / path.name)
    header, source = generate(dl, plan)
    (src / "tcl_model.h").write_text(header)
    (src / "tcl_model.c").write_text(source)
    for name in BOARD_FILES:
        shutil.copyfile(TEMPLATES / name, out / name)
    write_scenario(dl, out / "scenario.bin", experiences)
    return plan


@dataclass(frozen=True)
class Footprint:
    """Bytes of the Cortex-M4F ELF: flash = code + constants + the initial values of .data; RAM = .data + .bss;
    state = the two flash slots (.state)."""

    flash: int
    ram: int
    state: int
    sections: dict


def missing_tools(names=tuple(TOOLS)) -> list[str]:
    return [n for n in names if shutil.which(n) is None]


def footprint(out: Path, opt: str = "-O2") -> Footprint:
    """Build `make cortex-m4f OPT=opt` in the exported project `out` and read its sections."""
    missing = missing_tools(("arm-none-eabi-gcc", "arm-none-eabi-size"))
    if missing:
        raise ConfigError(f"measuring the footprint needs {', '.join(missing)} (Debian: "
                          f"{', '.join(sorted({TOOLS[m] for m in missing}))})")
    subprocess.run(["make", "-s", "-C", str(out), "clean"], check=True, capture_output=True)
    build = subprocess.run(["make", "-s", "-C", str(out), "cortex-m4f", f"OPT={opt}"], capture_output=True,
                           text=True)
    if build.returncode != 0:
        raise RuntimeError(f"the Cortex-M4F build failed:\n{build.stderr}")
    text = subprocess.run(["arm-none-eabi-size", "-A", str(out / "build/cortex-m4f/learner.elf")],
                          capture_output=True, text=True, check=True).stdout
    sections = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sections[parts[0]] = int(parts[1])
    flash = sections.get(".text", 0) + sections.get(".ARM.exidx", 0) + sections.get(".data", 0)
    ram = sections.get(".data", 0) + sections.get(".bss", 0)
    return Footprint(flash, ram, sections.get(".state", 0), sections)
