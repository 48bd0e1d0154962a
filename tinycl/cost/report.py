"""Plain-text rendering of cost reports: one target in full, or several side by side."""

from __future__ import annotations

import math

from tinycl.cost.model import CostReport
from tinycl.cost.targets import Target

__all__ = ["format_report", "format_summary", "format_target", "si"]

_PREFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "u"), (1e-9, "n"))
_ARENA = {"given": "the training arena as given",
          "planned": "the training arena planned by tinycl.device.arena (input, activations and their gradients "
                     "of one sample, x samples per pass)",
          "estimated": "no arena planner for this stage; the sum of fp32 activations kept for the backward pass "
                       "at the pass size (no gradient buffers)"}
_LABELS = {"activations": "activations", "adaptive_weights": "adaptive weights (fp32)",
           "gradients": "gradients (fp32)", "momentum": "momentum (fp32)", "latent_cache": "new-latent cache",
           "replay": "replay memory", "frozen_weights": "frozen weights", "requant": "requantization records",
           "initial_weights": "initial adaptive weights", "code": "runtime code"}


def si(value: float, unit: str) -> str:
    """3 significant digits with an SI prefix: si(0.0123, "J") -> "12.3 mJ"."""
    if value == 0:
        return f"0 {unit}"
    for scale, prefix in _PREFIXES:
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _hours(h: float | None) -> str:
    if h is None:
        return "none: the device cannot keep up (see the note)"
    return f"{h:,.0f} h ({h / 24:,.1f} days)" if h >= 48 else f"{h:.1f} h"


def format_report(r: CostReport) -> str:
    w, t = r.workload, r.target
    latent = "x".join(map(str, w.split.latent_shape))
    lines = [
        f"target: {t.name} - {t.title}",
        f"model: {w.split.spec.name}, split after {w.split.layer} (latent {latent} = "
        f"{math.prod(w.split.latent_shape):,} values); frozen stage {'int8' if w.frozen_bits == 8 else 'fp32'}",
        f"learner: {f'replay memory N={w.capacity} at {w.bits} bit' if w.capacity else 'no replay memory'}; "
        f"mini-batch {w.batch_size} = {w.new_per_batch} new "
        f"+ {w.replayed_per_batch} replayed, {w.micro_batch} sample(s) per pass; {w.epochs} epoch(s) of "
        f"{w.samples_per_experience} new samples = {w.steps_per_experience} mini-batches per experience; SGD "
        f"{'with' if w.momentum else 'without'} momentum",
        "",
        f"{'buffer':<26}{'bytes':>14}  tier",
    ]
    for kind, n in r.buffers.items():
        if n:
            label = _LABELS[kind] + (" *" if kind == "activations" else "")
            label += f" ({'int8' if w.frozen_bits == 8 else 'fp32'})" if kind == "frozen_weights" else ""
            lines.append(f"  {label:<24}{n:>14,}  {r.placement[kind] or 'DOES NOT FIT'}")
    lines += ["", f"{'tier':<16}{'size':>14}{'used':>14}{'free':>14}"]
    for tier in t.tiers:
        if tier.name not in r.used:
            continue
        used = r.used[tier.name]
        where = " (off chip)" if tier.off_chip else ""
        lines.append(f"  {tier.name:<14}{tier.size:>14,}{used:>14,}{tier.size - used:>14,}{where}")
    lines.append("")
    if r.fits:
        off = ", ".join(_LABELS[k] for k in r.off_chip)
        lines.append("FITS" + (f" (off-chip memory holds: {off})" if off else " on chip"))
    else:
        for o in r.overflows:
            lines.append(f"DOES NOT FIT: {_LABELS[o.kind]} needs {o.nbytes:,} B but tier {o.tier} has {o.free:,} B "
                         f"free: over by {o.over:,} B ({si(o.over, 'B')})")
    lines += ["", f"{'':<24}{'per mini-batch':>18}{'per experience':>18}"]
    for key, label in (("frozen_int8", "frozen int8 MACs"), ("frozen_fp32", "frozen fp32 MACs"),
                       ("forward", "forward MACs"), ("weight_grad", "weight-grad MACs"),
                       ("input_grad", "input-grad MACs"), ("optimizer", "SGD update MACs")):
        if r.experience.macs[key]:
            lines.append(f"  {label:<22}{r.batch.macs[key]:>18,}{r.experience.macs[key]:>18,}")
    rows = (("total MACs", r.batch.total_macs, r.experience.total_macs, None),
            ("compute", r.batch.compute_s, r.experience.compute_s, "s"),
            ("off-chip transfers", r.batch.transfer_s, r.experience.transfer_s, "s"),
            ("latency", r.batch.seconds, r.experience.seconds, "s"),
            ("energy", r.batch.joules, r.experience.joules, "J"))
    for label, a, b, unit in rows:
        if unit is None:
            lines.append(f"  {label:<22}{a:>18,}{b:>18,}")
        elif label != "off-chip transfers" or b:
            lines.append(f"  {label:<22}{si(a, unit):>18}{si(b, unit):>18}")
    if r.batch.transfer_s:
        how = "overlapped with compute (DMA)" if t.dma_overlap else "added to compute (the core waits)"
        lines.append(f"  off-chip transfers are {how}")
    b = r.battery
    lines += ["", f"lifetime: {b.capacity_mah:g} mAh at {b.volts:g} V ({si(b.joules, 'J')}), one mini-batch every "
              f"{r.period_s:g} s, sleeping at {si(r.sleep_w, 'W')} in between: {_hours(r.lifetime_h)}"]
    lines += [f"note: {n}" for n in r.notes]
    lines.append("* activations: " + _ARENA[r.arena_source] + ", or the frozen stage's inference scratch if larger")
    return "\n".join(lines)


def format_summary(reports: list[CostReport]) -> str:
    """One line per target; speed and energy relative to the first report."""
    base = reports[0]
    head = (f"{'target':<12}{'fits':>6}{'latency/batch':>15}{'energy/batch':>14}{'lifetime':>12}"
            f"{'latency':>10}{'energy':>10}  (ratio to {base.target.name})")
    lines = [head, "-" * len(head)]
    for r in reports:
        life = f"{r.lifetime_h:,.0f} h" if r.lifetime_h is not None else "-"
        lines.append(f"{r.target.name:<12}{'yes' if r.fits else 'NO':>6}{si(r.batch.seconds, 's'):>15}"
                     f"{si(r.batch.joules, 'J'):>14}{life:>12}{r.batch.seconds / base.batch.seconds:>9.3g}x"
                     f"{r.batch.joules / base.batch.joules:>9.3g}x")
    return "\n".join(lines)


def format_target(t: Target) -> str:
    """A target's parameters, each with its source."""
    lines = [f"target: {t.name} - {t.title}"]
    for key, source in t.sources.items():
        lines.append(f"  {key} = {getattr(t, key)!r}: {source}")
    for tier in t.tiers:
        where = "off chip" if tier.off_chip else "on chip"
        lines.append(f"  tier {tier.name} ({where}), holds {', '.join(tier.holds) or 'nothing'}:")
        lines += [f"    {key} = {getattr(tier, key)!r}: {source}" for key, source in tier.sources.items()]
    return "\n".join(lines)
