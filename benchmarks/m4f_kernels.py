"""Instructions per MAC of every C kernel on an emulated Cortex-M4F (QEMU mps2-an386 with -icount shift=0, one
instruction per virtual nanosecond, counted by SysTick), at -O2 and -Os.

    python benchmarks/m4f_kernels.py [--out docs/firmware_kernels.md]

Needs gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm. The shapes are MobileNet-like
(benchmarks/m4f_kernels.c); the counts are exact up to SysTick's 40-instruction tick and include each call's
set-up. tinycl/cost/targets.py's Cortex-M figures cite these numbers (docs/firmware.md).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "tinycl/csrc"
TEMPLATES = ROOT / "tinycl/export/templates"
FLAGS = ["-std=c99", "-ffp-contract=off", "-DTCL_NO_DOUBLE", "-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16",
         "-mfloat-abi=hard", "-ffunction-sections", "-fdata-sections", "--specs=nano.specs", "--specs=nosys.specs",
         "-nostartfiles", "-Wl,--gc-sections"]


def measure(opt: str) -> list[tuple[str, str, int, int]]:
    """(kernel, phase, MACs, instructions) per call, built with `opt`."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "tcl_model.h").write_text("#define TCL_STATE_REGION_BYTES 8u\n")
        (tmp / "tcl_learner.h").write_text('#include "tinycl.h"\n'
                                           "int32_t tcl_flash_read(uint32_t o, uint8_t *d, uint32_t n);\n"
                                           "int32_t tcl_flash_write(uint32_t o, const uint8_t *d, uint32_t n);\n")
        elf = tmp / "kernels.elf"
        sources = [str(p) for p in sorted(CSRC.glob("*.c"))]
        for name in ("platform_qemu.c", "startup_mps2.c", "platform.h"):  # beside the stub headers above
            shutil.copyfile(TEMPLATES / name, tmp / name)
        sources += [str(ROOT / "benchmarks/m4f_kernels.c"), str(tmp / "platform_qemu.c"), str(tmp / "startup_mps2.c")]
        subprocess.run(["arm-none-eabi-gcc", *FLAGS, opt, f"-I{tmp}", f"-I{CSRC}", "-T",
                        str(TEMPLATES / "mps2_an386.ld"), "-o", str(elf), *sources, "-lm"], check=True)
        out = subprocess.run(["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-monitor", "none", "-serial",
                              "none", "-semihosting-config", "enable=on,target=native", "-icount", "shift=0",
                              "-kernel", str(elf)], capture_output=True, text=True, check=True, timeout=600)
        out = out.stdout + out.stderr
    rows = []
    for line in out.splitlines():
        if len(line.split()) != 4:
            raise RuntimeError(f"unexpected output from the kernel driver: {line!r}")
        kernel, phase, macs, insns = line.split()
        rows.append((kernel, phase, int(macs), int(insns)))
    return rows


def table(results: dict[str, list]) -> str:
    opts = list(results)
    head = "| kernel | phase | MACs | " + " | ".join(f"instr/MAC {o}" for o in opts) + " |"
    lines = [head, "| --- | --- | ---: | " + " | ".join("---:" for _ in opts) + " |"]
    for i, (kernel, phase, macs, _) in enumerate(results[opts[0]]):
        cells = " | ".join(f"{results[o][i][3] / macs:.2f}" for o in opts)
        lines.append(f"| {kernel} | {phase} | {macs:,} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="write the table to this markdown file")
    args = parser.parse_args()
    results = {opt: measure(opt) for opt in ("-O2", "-Os")}
    text = table(results)
    print(text)
    if args.out:
        args.out.write_text(f"Command: `python benchmarks/m4f_kernels.py --out {args.out}`\n\n{text}\n")


if __name__ == "__main__":
    main()
