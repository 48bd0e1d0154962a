"""The device cost model: where each buffer lives, and the time, energy and battery lifetime of learning.

`estimate(workload, target)` places every buffer of the learner (cost.workload.buffers) in the target's
memory tiers, then costs one training mini-batch (with the frozen stage run on its new samples) and one whole
experience:

  compute time  = MACs / (MAC/cycle of the kernel kind) / clock, kernel kinds: int8 frozen forward, fp32
                  forward (and the SGD update), fp32 backward (weight and input gradients)
  transfer time = bytes moved to and from each off-chip tier / its bandwidth
  latency       = max(compute, transfer) if the target overlaps DMA with compute, else their sum
  energy        = active power x latency + bytes moved off chip x energy per byte
  lifetime      = battery energy / (energy of one mini-batch + sleep power x the rest of the period)

The model is a first-order one: sustained MAC/cycle figures per kernel kind, no cache or tiling effects
beyond them, and on-chip memory accesses folded into the active power. docs/cost_model.md discusses how it
lands against the paper's figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tinycl.cost.targets import BUFFER_KINDS, Target, Tier
from tinycl.cost.workload import FP32, Workload, buffers, planned_arena_bytes
from tinycl.errors import ConfigError
from tinycl.flops import layer_macs

__all__ = ["Battery", "Overflow", "Cost", "CostReport", "place", "estimate", "NOT_MODELLED", "OPTIONAL_KINDS"]

# flash contents besides the frozen weights: placed where a target's tiers say, not counted where none does
OPTIONAL_KINDS = ("requant", "initial_weights", "code")
NOT_MODELLED = "(not modelled)"


@dataclass(frozen=True)
class Battery:
    """A battery: capacity in mAh at a nominal voltage. Default: 3.3 Ah (the battery of the paper's press
    write-up) at 3.7 V (an assumed single Li-ion cell)."""

    capacity_mah: float = 3300.0
    volts: float = 3.7

    def __post_init__(self):
        if self.capacity_mah <= 0 or self.volts <= 0:
            raise ConfigError(f"battery capacity and voltage must be > 0, got {self.capacity_mah} mAh, "
                              f"{self.volts} V")

    @property
    def joules(self) -> float:
        return self.capacity_mah * 3.6 * self.volts


@dataclass(frozen=True)
class Overflow:
    """A buffer that fits no tier allowed to hold it: `tier` is the allowed tier with the most free space."""

    kind: str
    nbytes: int
    tier: str
    free: int

    @property
    def over(self) -> int:
        return self.nbytes - self.free


def place(sizes: dict[str, int], target: Target, external: bool = True):
    """Greedy placement: buffers in BUFFER_KINDS order (most accessed first), each in the first tier (target
    order, fastest first) allowed to hold it with room left. Buffers are not split across tiers.

    Buffers of OPTIONAL_KINDS go nowhere (NOT_MODELLED) on a target none of whose tiers holds them.

    Returns ({kind: tier name, None or NOT_MODELLED}, {tier name: bytes used}, [Overflow])."""
    tiers = [t for t in target.tiers if external or not t.off_chip]
    used = {t.name: 0 for t in tiers}
    where: dict[str, str | None] = {}
    overflows = []
    for kind in BUFFER_KINDS:
        n = sizes.get(kind, 0)
        if n == 0:
            continue
        allowed = [t for t in tiers if kind in t.holds]
        if kind in OPTIONAL_KINDS and not any(kind in t.holds for t in target.tiers):
            where[kind] = NOT_MODELLED  # a target that does not model this part of its flash (e.g. VEGA's)
            continue
        home = next((t for t in allowed if t.size - used[t.name] >= n), None)
        if home is not None:
            used[home.name] += n
            where[kind] = home.name
            continue
        where[kind] = None
        if allowed:
            best = max(allowed, key=lambda t: t.size - used[t.name])
            overflows.append(Overflow(kind, n, best.name, best.size - used[best.name]))
        else:
            overflows.append(Overflow(kind, n, "none", 0))
    return where, used, overflows


@dataclass(frozen=True)
class Cost:
    """MACs by kernel kind, off-chip bytes by tier, and the resulting time (s) and energy (J)."""

    macs: dict[str, int]
    offchip_bytes: dict[str, int]
    compute_s: float
    transfer_s: float
    seconds: float
    joules: float

    @property
    def total_macs(self) -> int:
        return sum(self.macs.values())


def _cost(macs: dict[str, int], traffic: dict[str, int], target: Target, tiers: dict[str, Tier]) -> Cost:
    cycles = (macs["frozen_int8"] / target.int8_macs_per_cycle
              + (macs["frozen_fp32"] + macs["forward"] + macs["optimizer"]) / target.fwd_macs_per_cycle
              + (macs["weight_grad"] + macs["input_grad"]) / target.bwd_macs_per_cycle)
    compute = cycles / target.clock_hz
    transfer = sum(n / tiers[t].bandwidth for t, n in traffic.items())
    seconds = max(compute, transfer) if target.dma_overlap else compute + transfer
    joules = target.active_w * seconds + sum(n * tiers[t].energy_per_byte for t, n in traffic.items())
    return Cost(macs, traffic, compute, transfer, seconds, joules)


@dataclass(frozen=True)
class CostReport:
    target: Target
    workload: Workload
    buffers: dict[str, int]  # bytes by kind
    placement: dict[str, str | None]  # kind -> tier name (None: does not fit)
    used: dict[str, int]  # bytes used by tier
    overflows: list[Overflow]
    arena_source: str  # "given", "planned" (tinycl.device.arena) or "estimated" (kept activations)
    batch: Cost  # one mini-batch, including the frozen stage on its new samples
    experience: Cost  # every mini-batch of one experience
    battery: Battery
    period_s: float
    sleep_w: float  # SoC retentive sleep + retention of the off-chip tiers in use
    lifetime_h: float | None  # None: a mini-batch takes longer than the period
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not self.overflows

    @property
    def off_chip(self) -> list[str]:
        """Buffer kinds placed in off-chip tiers."""
        off = {t.name for t in self.target.tiers if t.off_chip}
        return [k for k, t in self.placement.items() if t in off]


def _traffic(w: Workload, sizes: dict[str, int], where: dict[str, str | None], off: set[str],
             experience: bool) -> dict[str, int]:
    """Bytes moved to/from off-chip tiers for one mini-batch (experience=False: a first-epoch mini-batch) or
    for all mini-batches of an experience. Weights are read once per pass (forward, input gradient), gradients
    read and written once per pass, and the SGD update reads and writes weights, gradients and momentum."""
    adaptive = w.adaptive_spec
    first = next((m.params for m in layer_macs(adaptive) if m.params), 0) * FP32
    p, passes = sizes["adaptive_weights"], w.passes_per_batch
    steps = w.steps_per_experience if experience else 1
    new = w.samples_per_experience if experience else w.new_per_batch
    latent = math.prod(w.split.latent_shape)
    per_kind = {
        "adaptive_weights": steps * (passes * (2 * p - first) + 2 * p),
        "gradients": steps * 2 * passes * p,
        "momentum": steps * 2 * sizes["momentum"],
        "activations": steps * 2 * passes * sizes["activations"],
        # new latents are written once and read by every mini-batch that uses them
        "latent_cache": (new + steps * w.new_per_batch) * latent * (1 if w.frozen_bits == 8 else FP32),
        "replay": math.ceil(steps * w.replayed_per_batch * latent * w.bits / 8)
        + (math.ceil(min(w.capacity, w.samples_per_experience) * latent * w.bits / 8) if experience else 0),
        "frozen_weights": new * sizes["frozen_weights"],
    }
    traffic: dict[str, int] = {}
    for kind, n in per_kind.items():
        tier = where.get(kind)
        if tier in off and n:
            traffic[tier] = traffic.get(tier, 0) + n
    return traffic


def _macs(w: Workload, experience: bool) -> dict[str, int]:
    layers = layer_macs(w.adaptive_spec)
    steps = w.steps_per_experience if experience else 1
    samples = steps * w.batch_size
    new = w.samples_per_experience if experience else w.new_per_batch
    frozen = new * w.split.frozen_spec.macs()
    params = w.adaptive_spec.num_params()
    return {
        "frozen_int8": frozen if w.frozen_bits == 8 else 0,
        "frozen_fp32": frozen if w.frozen_bits == 32 else 0,
        "forward": samples * sum(m.forward for m in layers),
        "weight_grad": samples * sum(m.weight_grad for m in layers),
        "input_grad": samples * sum(m.input_grad for m in layers),
        # SGD per parameter: weight decay, momentum and update (one MAC each; plain SGD: two)
        "optimizer": steps * params * (3 if w.momentum else 2),
    }


def estimate(workload: Workload, target: Target, *, arena_bytes: int | None = None, battery: Battery = Battery(),
             period_s: float = 60.0, external: bool = True) -> CostReport:
    """Cost `workload` on `target`. arena_bytes: the training arena, if known; else the device planner's
    (tinycl.device.arena) when it can plan the stage, else the kept-activation estimate.
    period_s: one mini-batch is learned every `period_s` seconds, the device sleeping in between.
    external: allow the target's off-chip tiers (False: on-chip memory only)."""
    if period_s <= 0:
        raise ConfigError(f"the learning period must be > 0 s, got {period_s}")
    if arena_bytes is not None and arena_bytes < 0:
        raise ConfigError(f"arena_bytes must be >= 0, got {arena_bytes}")
    source = "given"
    if arena_bytes is None:
        arena_bytes = planned_arena_bytes(workload)
        source = "planned" if arena_bytes is not None else "estimated"
    sizes = buffers(workload, arena_bytes, target.code_nbytes)
    where, used, overflows = place(sizes, target, external)
    tiers = {t.name: t for t in target.tiers}
    off = {t.name for t in target.tiers if t.off_chip}
    batch = _cost(_macs(workload, False), _traffic(workload, sizes, where, off, False), target, tiers)
    exp = _cost(_macs(workload, True), _traffic(workload, sizes, where, off, True), target, tiers)
    in_use = {t for t in where.values() if t in off}
    sleep_w = target.sleep_w + sum(tiers[t].retention_w for t in in_use)
    lifetime = None
    notes = []
    if batch.seconds <= period_s:
        per_period = batch.joules + sleep_w * (period_s - batch.seconds)
        lifetime = battery.joules / per_period * period_s / 3600
        if lifetime > 10 * 8760:
            notes.append("a lifetime beyond 10 years: the battery's self-discharge, not modelled, decides it")
    else:
        notes.append(f"one mini-batch takes {batch.seconds:.1f} s, longer than the {period_s:g} s period")
    return CostReport(target, workload, sizes, where, used, overflows, source, batch, exp, battery,
                      period_s, sleep_w, lifetime, notes)
