"""Growth policies: after each experience, decide whether (and by how much) the adaptive stage widens.

A policy is any callable `policy(state: GrowthState) -> GrowthDecision`; the learner applies a decision with
tinycl.model.grow (function preserving, so growing never costs accuracy by itself) and logs every decision,
grown or not. `GROWTH_POLICIES` maps config names to factories taking a GrowthConfig.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from tinycl.errors import ConfigError

__all__ = ["GrowthConfig", "GrowthState", "GrowthDecision", "GrowthPolicy", "NoGrowth", "AccuracyTarget",
           "Schedule", "OnDemand", "GROWTH_POLICIES", "make_policy"]


@dataclass(frozen=True)
class GrowthConfig:
    policy: str = "none"  # none, accuracy (grow while accuracy < target), schedule (grow after experiences `at`),
    # on_demand (grow when the training loss plateaus above loss_target, or accuracy < target)
    target: float = 0.95  # accuracy, on_demand: class-balanced accuracy on the data the learner holds
    loss_target: float = 0.2  # on_demand: a last-epoch training loss above this that has plateaued asks for growth
    plateau: float = 0.1  # on_demand: the loss has plateaued when its last epoch fell by less than this share
    retrain_epochs: int = 0  # epochs trained again on the experience after growing (0: the next experience trains it)
    factor: float = 1.5  # one growth step multiplies each growing layer's width by this
    max_factor: float = 2.0  # no layer grows beyond max_factor x its width at deployment
    at: tuple[int, ...] = ()  # schedule policy: experiences after which to grow
    start_factor: float = 1.0  # widen once at deployment (a fixed larger model: start_factor > 1, policy none)
    max_inference_flops: int | None = None  # budget: never grow past this many FLOPs per inference
    noise: float = 0.01  # symmetry-breaking noise of the copies' outgoing weights (function preserved anyway)
    layers: tuple[str, ...] = ()  # layers that grow; empty: every growable hidden layer of the adaptive stage

    def __post_init__(self):
        if self.policy not in GROWTH_POLICIES:
            raise ConfigError(f"growth.policy {self.policy!r}; allowed: {', '.join(GROWTH_POLICIES)}")
        if not 0 < self.target <= 1:
            raise ConfigError(f"growth.target must be in (0, 1], got {self.target}")
        if self.factor <= 1 or self.max_factor < 1 or self.start_factor < 1:
            raise ConfigError("growth.factor must be > 1, growth.max_factor and growth.start_factor >= 1")
        if self.start_factor > self.max_factor and self.policy != "none":
            raise ConfigError("growth.start_factor must be <= growth.max_factor when a policy grows")
        if self.noise < 0:
            raise ConfigError(f"growth.noise must be >= 0, got {self.noise}")
        if self.max_inference_flops is not None and self.max_inference_flops < 1:
            raise ConfigError("growth.max_inference_flops must be >= 1 or unset")
        if self.loss_target < 0 or not 0 <= self.plateau < 1 or self.retrain_epochs < 0:
            raise ConfigError("growth.loss_target must be >= 0, growth.plateau in [0, 1), growth.retrain_epochs >= 0")


@dataclass(frozen=True)
class GrowthState:
    """What a policy sees after experience `experience` was trained."""

    experience: int
    accuracy: float  # class-balanced accuracy of the trained model on the data it holds (new real + distilled)
    classes_seen: int
    width_factor: float  # current width / width at deployment (the smallest over the growing layers)
    inference_flops: int  # of the adaptive stage now
    flops_if: Callable[[float], int]  # inference FLOPs after growing by a factor
    loss: float = float("nan")  # mean training loss of the last epoch on this experience (nan: not measured)
    loss_drop: float = float("nan")  # its relative fall from the epoch before (nan: one epoch only)


@dataclass(frozen=True)
class GrowthDecision:
    factor: float  # 1.0: do not grow
    reason: str


GrowthPolicy = Callable[[GrowthState], GrowthDecision]


def _capped(cfg: GrowthConfig, state: GrowthState, reason: str) -> GrowthDecision:
    """Grow by cfg.factor, less if max_factor or the FLOPs budget would be passed."""
    factor = min(cfg.factor, cfg.max_factor / state.width_factor)
    if factor <= 1 + 1e-9:
        return GrowthDecision(1.0, f"{reason}, but the width is at max_factor {cfg.max_factor}")
    if cfg.max_inference_flops is not None and state.flops_if(factor) > cfg.max_inference_flops:
        return GrowthDecision(1.0, f"{reason}, but {state.flops_if(factor):,} FLOPs per inference would pass the "
                                   f"budget of {cfg.max_inference_flops:,}")
    return GrowthDecision(factor, reason)


class NoGrowth:
    def __init__(self, cfg: GrowthConfig):
        self.cfg = cfg

    def __call__(self, state: GrowthState) -> GrowthDecision:
        return GrowthDecision(1.0, "policy none")


class AccuracyTarget:
    """Grow while the trained model's class-balanced accuracy on the data it holds is below `target`: a model
    that cannot fit what it holds lacks capacity (forgetting, which growth cannot fix, does not show there)."""

    def __init__(self, cfg: GrowthConfig):
        self.cfg = cfg

    def __call__(self, state: GrowthState) -> GrowthDecision:
        if state.accuracy >= self.cfg.target:
            return GrowthDecision(1.0, f"accuracy {state.accuracy:.3f} >= target {self.cfg.target}")
        return _capped(self.cfg, state, f"accuracy {state.accuracy:.3f} < target {self.cfg.target}")


class Schedule:
    """Grow after the experiences listed in `at`."""

    def __init__(self, cfg: GrowthConfig):
        self.cfg = cfg

    def __call__(self, state: GrowthState) -> GrowthDecision:
        if state.experience not in self.cfg.at:
            return GrowthDecision(1.0, f"experience {state.experience} not in schedule")
        return _capped(self.cfg, state, f"scheduled after experience {state.experience}")


class OnDemand:
    """Grow when the model stops learning the experience: its training loss has plateaued (fell by less than
    `plateau` over the last epoch) above `loss_target`, or its class-balanced accuracy on the data it holds is
    below `target`. A model that still improves, or that fits what it holds, keeps its size."""

    def __init__(self, cfg: GrowthConfig):
        self.cfg = cfg

    def __call__(self, state: GrowthState) -> GrowthDecision:
        c = self.cfg
        flat = not state.loss_drop >= c.plateau  # nan (one epoch) counts as flat
        fell = "one epoch: no fall measured" if math.isnan(state.loss_drop) else f"fell {state.loss_drop:.1%}"
        if state.loss > c.loss_target and flat:
            return _capped(c, state, f"loss {state.loss:.3f} > {c.loss_target} and {fell} (plateau: < {c.plateau:.0%} "
                                     f"in the last epoch)")
        if state.accuracy < c.target:
            return _capped(c, state, f"accuracy {state.accuracy:.3f} < target {c.target}")
        return GrowthDecision(1.0, f"loss {state.loss:.3f} ({fell}), accuracy {state.accuracy:.3f}: no need")


GROWTH_POLICIES: dict[str, Callable[[GrowthConfig], GrowthPolicy]] = {
    "none": NoGrowth, "accuracy": AccuracyTarget, "schedule": Schedule, "on_demand": OnDemand}


def make_policy(cfg: GrowthConfig) -> GrowthPolicy:
    return GROWTH_POLICIES[cfg.policy](cfg)
