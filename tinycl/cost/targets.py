"""Device targets for the cost model: clock, throughput, power and memory tiers, each number with its source.

A target is a frozen record; `sources` maps every parameter name to where the number comes from: a datasheet
or paper (named), the figures collected in docs DESIGN.md, or the word "assumption" with the reasoning.
The check in `__post_init__` refuses a target with an uncited parameter.

Buffer kinds a tier can hold (`Tier.holds`), in the order the placer fills them (see cost.model.place):
  activations       one training step's kept activations (the arena), also the frozen stage's int8 scratch
  adaptive_weights  fp32 weights of the adaptive stage
  gradients         fp32 weight gradients (accumulated over a mini-batch)
  momentum          fp32 SGD momentum (absent for plain SGD)
  latent_cache      int8 latents of the current experience's new samples (computed once, reused every epoch)
  replay            the replay memory: N packed Q-bit latents + quantizer parameters + labels
  frozen_weights    the frozen stage: int8 weights, int32 biases, per-channel scales (read-only)
  requant           what the C runtime's int8 requantization records take beyond frozen_weights' scales: a
                    multiplier and shift per output channel (a per-tensor scale is expanded), + the weight zero point
  initial_weights   the adaptive stage's fp32 starting weights (read-only: copied into RAM at start-up)
  code              the C runtime's code, constants and tables (Target.code_nbytes, measured from the ELF)
Units: bytes, Hz, watts, joules, seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from tinycl.errors import ConfigError, ModelError

__all__ = ["Tier", "Target", "TARGETS", "BUFFER_KINDS", "FLASH_KINDS", "get_target"]

BUFFER_KINDS = ("activations", "adaptive_weights", "gradients", "momentum", "latent_cache", "replay",
                "frozen_weights", "requant", "initial_weights", "code")
KiB, MiB = 1024, 1024 * 1024
_RAM = ("activations", "adaptive_weights", "gradients", "momentum", "latent_cache", "replay")
FLASH_KINDS = ("frozen_weights", "requant", "initial_weights", "code")  # read-only: non-volatile memory


def _check_sources(obj, names: list[str]) -> None:
    missing = [n for n in names if not obj.sources.get(n)]
    if missing:
        raise ModelError(f"{type(obj).__name__} {obj.name!r}: no source given for {', '.join(missing)}")
    unknown = sorted(set(obj.sources) - set(names))
    if unknown:
        raise ModelError(f"{type(obj).__name__} {obj.name!r}: sources for unknown parameters {', '.join(unknown)}")


@dataclass(frozen=True)
class Tier:
    """One memory of a target. On-chip tiers cost nothing extra to access (their energy is in the target's
    active power); off-chip tiers add transfer time (bytes / bandwidth), energy per byte moved, and the power
    to retain their contents while the device sleeps."""

    name: str
    size: int  # bytes
    holds: tuple[str, ...]  # buffer kinds that may live here (BUFFER_KINDS)
    sources: dict[str, str]
    off_chip: bool = False
    bandwidth: float = 0.0  # B/s, off-chip only
    energy_per_byte: float = 0.0  # J per byte moved, off-chip only
    retention_w: float = 0.0  # W while the SoC sleeps, off-chip only

    def __post_init__(self):
        bad = [k for k in self.holds if k not in BUFFER_KINDS]
        if bad:
            raise ModelError(f"tier {self.name!r} holds unknown buffer kinds {bad}; allowed: {', '.join(BUFFER_KINDS)}")
        if self.off_chip and self.bandwidth <= 0:
            raise ModelError(f"off-chip tier {self.name!r} needs a bandwidth > 0")
        cited = ["size"] + (["bandwidth", "energy_per_byte", "retention_w"] if self.off_chip else [])
        _check_sources(self, cited)


@dataclass(frozen=True)
class Target:
    """A device. MAC/cycle figures are sustained rates of whole layers on all `cores`, not peak rates.

    fwd_macs_per_cycle: fp32 forward kernels. bwd_macs_per_cycle: fp32 weight- and input-gradient kernels.
    int8_macs_per_cycle: int8 inference of the frozen stage. active_w: power while computing (cores + on-chip
    memories). sleep_w: retentive sleep between learning steps (on-chip memories kept). dma_overlap: off-chip
    transfers run under compute (DMA double buffering) rather than stalling it. code_nbytes: flash the runtime's
    code takes (0: not known, not counted)."""

    name: str
    title: str
    clock_hz: float
    cores: int
    fwd_macs_per_cycle: float
    bwd_macs_per_cycle: float
    int8_macs_per_cycle: float
    active_w: float
    sleep_w: float
    dma_overlap: bool
    tiers: tuple[Tier, ...]
    sources: dict[str, str] = field(repr=False)
    code_nbytes: int = 0

    def __post_init__(self):
        skip = ("name", "title", "tiers", "sources") + (("code_nbytes",) if not self.code_nbytes else ())
        names = [f.name for f in fields(self) if f.name not in skip]
        _check_sources(self, names)
        for key in ("clock_hz", "fwd_macs_per_cycle", "bwd_macs_per_cycle", "int8_macs_per_cycle", "active_w"):
            if getattr(self, key) <= 0:
                raise ModelError(f"target {self.name!r}: {key} must be > 0")
        if len({t.name for t in self.tiers}) != len(self.tiers):
            raise ModelError(f"target {self.name!r}: tier names must be unique")

    @property
    def on_chip_bytes(self) -> int:
        return sum(t.size for t in self.tiers if not t.off_chip)


# -- sources quoted more than once -----------------------------------------------------------------------------
_TRAINLIB_M4 = ("PULP-TrainLib (Nadalini et al., SAMOS 2022) abstract: 4.39 MAC/cycle on 8 cores is 36.6x an "
                "STM32L4 on the same layer-training workload -> 4.39 / 36.6 = 0.12 MAC/cycle; used for forward "
                "and backward alike")
_CMSIS_INT8 = ("assumption: int8 convolutions with 2-way SIMD MACs (SMLAD, CMSIS-NN style) sustain about "
               "0.5 MAC/cycle on a Cortex-M4 including im2col and requantization")


def _off_chip(name: str, mib: int, bandwidth: float, energy_per_byte: float, retention_w: float,
              why: tuple[str, str, str, str], holds: tuple[str, ...] = _RAM) -> Tier:
    """An off-chip memory of `mib` MiB: B/s, J per byte moved, W retained in sleep; `why`: the sources of its
    size, bandwidth, energy per byte and retention power, in that order."""
    sources = dict(zip(("size", "bandwidth", "energy_per_byte", "retention_w"), why, strict=True))
    return Tier(name, mib * MiB, holds, sources, off_chip=True, bandwidth=bandwidth,
                energy_per_byte=energy_per_byte, retention_w=retention_w)


def _sd_card() -> Tier:
    return _off_chip("sd_card", 1024, 10e6, 25e-9, 0.0, (
        "assumption: a 1 GiB SD card (SPI/SDIO) as bulk store for the replay memory",
        "assumption: 10 MB/s sustained block reads over 4-bit SDIO",
        "assumption: ~80 mA at 3.3 V while transferring 10 MB/s -> ~25 nJ/B",
        "assumption: flash is non-volatile; the card is power-gated during sleep (0 W)"),
        ("replay", "latent_cache", "initial_weights"))


def _psram(size_mib: int, bus: str) -> Tier:
    return _off_chip(f"{bus.lower()}_psram", size_mib, 50e6, 0.5e-9, 0.3e-3, (
        f"assumption: {size_mib} MiB of PSRAM on the {bus} interface (external, not on the die)",
        f"assumption: 50 MB/s sustained memory-mapped reads over {bus}",
        "assumption: ~25 mA at 1.8-3.3 V for 50 MB/s -> ~0.5 nJ/B",
        "assumption: PSRAM self-refresh standby ~100 uA at 3.3 V -> 0.3 mW"))


# the off-chip memories the VEGA and STM32H7 boards are assumed to carry
_HYPERRAM = _off_chip("hyperram", 64, 200e6, 0.15e-9, 0.15e-3, (
    "assumption: 64 MiB HyperRAM, sized after the paper's 'less than 64 MB' learner",
    "assumption: 200 MB/s effective over HyperBus (8-bit DDR, ~400 MB/s peak)",
    "assumption: ~25 mA at 1.8 V for 333 MB/s plus I/O -> ~0.15 nJ/B",
    "assumption: HyperRAM hybrid sleep, ~0.15 mW for 64 MiB"))
_FMC_SDRAM = _off_chip("fmc_sdram", 32, 100e6, 0.3e-9, 1e-3, (
    "assumption: 32 MiB SDRAM on the FMC (as on ST's evaluation boards)",
    "assumption: 100 MB/s effective (16-bit SDRAM at 100 MHz, through the M7 cache)",
    "assumption: ~0.3 nJ/B for SDRAM plus board I/O",
    "assumption: SDRAM self-refresh ~1 mW for 32 MiB"))


# -- the targets ------------------------------------------------------------------------------------------------
VEGA = Target(
    name="vega", title="VEGA (22 nm PULP SoC: controller core + 9-core FP32 cluster, 8 workers)",
    clock_hz=450e6, cores=8, fwd_macs_per_cycle=2.21, bwd_macs_per_cycle=1.70, int8_macs_per_cycle=16.0,
    active_w=49.4e-3, sleep_w=1.7e-6, dma_overlap=True,
    tiers=(
        Tier("L1", 128 * KiB, ("activations",), {
            "size": "assumption: 128 KiB cluster L1 (TCDM); with L2 it makes the 1.6 MB SRAM of DESIGN.md"}),
        Tier("L2", 1536 * KiB, _RAM, {
            "size": "assumption: 1.5 MiB L2 = DESIGN.md's 1.6 MB SRAM minus L1"}),
        Tier("MRAM", 4 * MiB, ("frozen_weights",), {"size": "DESIGN.md: 4 MB MRAM (non-volatile)"}),
        _HYPERRAM,
    ),
    sources={
        "clock_hz": "inferred: Vega (Rossi et al., JSSC 2022) abstract: 32.2 GOPS peak on 9 cores x 4-way int8 "
                    "SIMD (8 ops/cycle/core) -> ~447 MHz cluster clock",
        "cores": "DESIGN.md: 9-core cluster, 8 workers",
        "fwd_macs_per_cycle": "DESIGN.md: a predecessor reports 2.21 MAC/cycle forward on 8 cores",
        "bwd_macs_per_cycle": "DESIGN.md: a predecessor reports 1.70 MAC/cycle backward on 8 cores",
        "int8_macs_per_cycle": "assumption: half of the 8-core int8 SIMD peak (8 x 4 MAC/cycle), PULP-NN class kernels",
        "active_w": "Vega JSSC 2022 abstract: 49.4 mW at the 32.2 GOPS peak-performance point",
        "sleep_w": "Vega JSSC 2022 abstract: 1.7 uW fully retentive cognitive sleep mode",
        "dma_overlap": "DESIGN.md/paper abstract: data tiling over the memory hierarchy; cluster DMA double "
                       "buffering hides transfers (assumed complete)",
    },
)

# tinycl's own C runtime on a Cortex-M4F: instructions per MAC MEASURED under QEMU mps2-an386 (-icount, exact
# instruction counts; benchmarks/m4f_kernels.py, docs/firmware.md), turned into cycles with the Cortex-M4 TRM's
# timings (ASSUMED: vfma.f32 3 cycles, vldr 2, others 1, no flash wait states): pointwise forward 1.85 instr/MAC
# + 2 (vfma) + 0.5 (8 loads per 16 MACs) = 4.35 cycles/MAC; weight/input gradient 1.97 / 1.88 + 2.5 = 4.4
_TCL_M4F_RATES = (0.23, 0.22, 0.07)
_TCL_M4F_SOURCES = {
    "fwd_macs_per_cycle": "measured 1.85 instructions/MAC (tinycl pointwise forward, QEMU mps2-an386, "
                          "benchmarks/m4f_kernels.py) + assumed Cortex-M4 TRM timings (vfma 3, vldr 2 cycles) "
                          "-> 4.35 cycles/MAC",
    "bwd_macs_per_cycle": "measured 1.88-1.97 instructions/MAC (tinycl pointwise weight/input gradient, QEMU) + "
                          "assumed TRM timings -> 4.4 cycles/MAC",
    "int8_macs_per_cycle": "measured 12.9 instructions/MAC (tinycl's plain-C int8 conv2d, no SMLAD; QEMU) x an "
                           "assumed 1.1 cycles per instruction -> 0.07 MAC/cycle",
}


# The C runtime's flash besides the learner's arrays, MEASURED: `make -C fw size` (arm-none-eabi-size -A, GCC 12.2,
# newlib-nano, -O2) of the exported MobileNet-V1 0.25 learner of docs/firmware.md, flash (.text + .data) minus its
# frozen weights, biases, requantization records and initial adaptive weights: code (kernels, int8 stage, learner,
# save/restore, libc), the layer tables and the start-up code. The digits learner links fewer int8 kernels (-2.6 KB).
TCL_M4F_CODE_NBYTES = {"-O2": 39_276, "-Os": 31_428}
_TCL_M4F_CODE_SOURCE = ("measured: flash of the exported MobileNet-V1 0.25 learner's Cortex-M4F ELF (-O2, "
                        "arm-none-eabi-size) minus its weight arrays (docs/firmware.md)")


def _cortex_m4f(name: str, title: str, mhz: float, sleep_w: float, sram: tuple[int, str], flash: tuple[int, str],
                external: tuple[Tier, ...], sources: dict[str, str],
                rates: tuple[float, float, float] = (0.12, 0.12, 0.5)) -> Target:
    """A Cortex-M4F part: one core at `mhz`, PULP-TrainLib's fp32 and CMSIS-NN-class int8 rates, 100 uA/MHz at
    3.3 V while running, stalls on external memory. sram: (KiB, source); flash: (MiB, source); external: its
    off-chip tiers. `sources` cites clock_hz, active_w and sleep_w (and may replace the shared citations)."""
    shared = {"cores": "datasheet: one Cortex-M4F", "fwd_macs_per_cycle": _TRAINLIB_M4,
              "bwd_macs_per_cycle": _TRAINLIB_M4, "int8_macs_per_cycle": _CMSIS_INT8,
              "dma_overlap": "assumption: memory-mapped external memory stalls the core (no double buffering)",
              "code_nbytes": _TCL_M4F_CODE_SOURCE}
    tiers = (Tier("SRAM", sram[0] * KiB, _RAM, {"size": sram[1]}),
             Tier("flash", flash[0] * MiB, FLASH_KINDS, {"size": flash[1]}), *external)
    return Target(name=name, title=title, clock_hz=mhz * 1e6, cores=1, fwd_macs_per_cycle=rates[0],
                  bwd_macs_per_cycle=rates[1], int8_macs_per_cycle=rates[2], active_w=100e-6 * mhz * 3.3,
                  sleep_w=sleep_w,
                  dma_overlap=False, tiers=tiers, sources={**shared, **sources},
                  code_nbytes=TCL_M4F_CODE_NBYTES["-O2"])


def _stm32l4(name: str, part: str, board: str, mhz: int, sleep_ua: float, bus: str, sram: tuple[int, str],
             flash: tuple[int, str]) -> Target:
    """An STM32L4 part as ST's summary gives it (quoted in Zephyr's `board` docs), with OctoSPI/QuadSPI PSRAM
    and an SD card as external memory. sram: (KiB, what the summary says); flash: (MiB, what it says)."""
    summary = f"{part} summary (ST, quoted in Zephyr {board} docs)"
    return _cortex_m4f(
        name, f"{part[:9]} (Cortex-M4F, {mhz} MHz, {sram[0]} KB SRAM, {flash[0]} MB flash)", mhz, sleep_ua * 1e-6 * 3.3,
        sram=(sram[0], f"{summary}: {sram[1]}"), flash=(flash[0], f"{summary}: {flash[1]}"),
        external=(_psram(32, bus), _sd_card()),
        sources={"clock_hz": f"{summary}: up to {mhz} MHz",
                 "active_w": f"{summary}: 100 uA/MHz run mode, x {mhz} MHz x 3.3 V (assumed supply)",
                 "sleep_w": f"assumption: Stop 2 with SRAM retention ~{sleep_ua:g} uA at 3.3 V"})


STM32L4 = _stm32l4("stm32l4", "STM32L4R5ZI", "nucleo_l4r5zi", 120, 3.0, "OCTOSPI",
                   sram=(640, "640 Kbytes of SRAM"), flash=(2, "2-Mbyte flash"))
STM32L476 = _stm32l4("stm32l476", "STM32L476RG", "nucleo_l476rg", 80, 1.4, "QUADSPI",
                     sram=(128, "128 KB SRAM (96 KB SRAM1 + 32 KB SRAM2)"), flash=(1, "1 MB flash"))

STM32H7 = Target(
    name="stm32h7", title="STM32H743 (Cortex-M7, 480 MHz, 1 MB SRAM, 2 MB flash)",
    clock_hz=480e6, cores=1, fwd_macs_per_cycle=0.25, bwd_macs_per_cycle=0.25, int8_macs_per_cycle=1.0,
    active_w=0.40, sleep_w=1e-3, dma_overlap=False,
    tiers=(
        Tier("SRAM", 1024 * KiB, _RAM, {"size": "STM32H743 summary: 1 MB RAM (AXI SRAM + SRAM1-4 + TCMs, "
                                                "several blocks; treated as one)"}),
        Tier("flash", 2 * MiB, FLASH_KINDS, {"size": "STM32H743 summary: 2 MB flash"}),
        _FMC_SDRAM,
        _sd_card(),
    ),
    sources={
        "clock_hz": "STM32H743 summary: Cortex-M7 up to 480 MHz",
        "cores": "datasheet: one Cortex-M7 (double-precision FPU)",
        "fwd_macs_per_cycle": "assumption: ~2x the Cortex-M4F's 0.12 (dual issue, 64-bit loads, caches)",
        "bwd_macs_per_cycle": "assumption: as forward",
        "int8_macs_per_cycle": "assumption: ~1 MAC/cycle for CMSIS-NN int8 kernels on the dual-issue M7",
        "active_w": "assumption: ~120 mA at 3.3 V at 480 MHz (order of the DS12110 Run-mode tables, not "
                    "checked against the datasheet here)",
        "sleep_w": "assumption: Stop mode with SRAM retention ~0.3 mA at 3.3 V",
        "dma_overlap": "assumption: the core reads external SDRAM through its cache and stalls on misses",
        "code_nbytes": "assumption: as the Cortex-M4F build (" + _TCL_M4F_CODE_SOURCE + "); Thumb-2 either way",
    },
    code_nbytes=TCL_M4F_CODE_NBYTES["-O2"],
)

CORTEX_M4F = _cortex_m4f(
    "cortex-m4f", "generic Cortex-M4F (100 MHz, 256 KB SRAM, 1 MB flash, no external memory)", 100, 5e-6 * 3.3,
    sram=(256, "assumption: a mid-range Cortex-M4F part"), flash=(1, "assumption: a mid-range Cortex-M4F part"),
    external=(), sources={"clock_hz": "assumption: a mid-range Cortex-M4F part", "cores": "assumption: one core",
                          "active_w": "assumption: 100 uA/MHz at 3.3 V, like the STM32L4 parts",
                          "sleep_w": "assumption: ~5 uA retentive stop mode at 3.3 V",
                          "dma_overlap": "assumption: no external memory", **_TCL_M4F_SOURCES},
    rates=_TCL_M4F_RATES)

_QEMU_MPS2 = "QEMU 7.2 hw/arm/mps2.c, machine mps2-an386 (Arm AN386 FPGA image for the MPS2 board)"
MPS2_AN386 = _cortex_m4f(
    "mps2-an386", "Arm MPS2 AN386 (Cortex-M4F, 25 MHz, 4 MB SSRAM1 for code, 4 MB SSRAM2/3), as QEMU emulates it",
    25, 5e-6 * 3.3, sram=(4096, f"{_QEMU_MPS2}: 4 MB ZBT SSRAM2/3 at 0x20000000 (data)"),
    flash=(4, f"{_QEMU_MPS2}: 4 MB ZBT SSRAM1 at 0x0 (code; the board's 'flash')"), external=(),
    sources={"clock_hz": f"{_QEMU_MPS2}: 25 MHz system clock", "cores": "one Cortex-M4F",
             "active_w": "assumption: 100 uA/MHz at 3.3 V, like the STM32L4 parts (the FPGA board's power is not "
                         "a microcontroller's)",
             "sleep_w": "assumption: ~5 uA retentive stop mode at 3.3 V",
             "dma_overlap": "no external memory is used", **_TCL_M4F_SOURCES},
    rates=_TCL_M4F_RATES)

TARGETS: dict[str, Target] = {t.name: t for t in (VEGA, STM32L4, STM32L476, STM32H7, CORTEX_M4F, MPS2_AN386)}


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise ConfigError(f"unknown target {name!r}; allowed: {', '.join(TARGETS)}")
    return TARGETS[name]
