"""The strategies, by name: the one list of them. `make_learner(cfg, setup)` builds `STRATEGIES[cfg.strategy]`.

A factory `(cfg: RunConfig, setup: Setup) -> Learner` takes the run config and what `tinycl.runner.prepare` made
of it. Every learner's adaptive stage is built from `setup.adaptive_spec` and `setup.adaptive_weights` (the one
source of the adaptive stage, for zoo and .tflite models alike), and every replay memory from `cfg.memory`; a
learner reports the bits it stores itself (`Learner.stored_bits`). Config validation, `tinycl run`, the demo,
`tinycl cost` and the benchmarks read this table: a new strategy is one function and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tinycl.errors import ConfigError
from tinycl.learners.base import Learner
from tinycl.learners.distilled import DistilledReplay
from tinycl.learners.replay import Joint, LatentReplay, RawReplay
from tinycl.memory import ReplayMemory
from tinycl.model.build import SpecModule, build

if TYPE_CHECKING:
    from tinycl.config import RunConfig
    from tinycl.runner import Setup

__all__ = ["STRATEGIES", "Factory", "make_learner", "adaptive_module", "new_memory"]

Factory = Callable[["RunConfig", "Setup"], Learner]

RAW_BITS = 8  # raw replay stores inputs as 8-bit codes: an image's own precision


def adaptive_module(setup: Setup) -> SpecModule:
    """A fresh trainable copy of the setup's adaptive stage."""
    return build(setup.adaptive_spec, setup.adaptive_weights)


def new_memory(cfg: RunConfig, setup: Setup, capacity: int, shape: tuple[int, ...],
               bits: int | None = None) -> ReplayMemory:
    """An empty memory of `capacity` samples of `shape` at `bits` (default cfg.memory.bits), quantized as
    cfg.memory says, with labels for the scenario's classes."""
    m = cfg.memory
    return ReplayMemory(capacity, tuple(shape), m.bits if bits is None else bits, granularity=m.granularity,
                        range_method=m.range, n_classes=setup.scenario.n_classes)


def naive(cfg: RunConfig, setup: Setup) -> Learner:
    """Fine-tuning on the new data only (the lower bound)."""
    return Learner(setup.cache, adaptive_module(setup), cfg.train, seed=cfg.seed)


def joint(cfg: RunConfig, setup: Setup) -> Learner:
    """Every latent kept in float32 and trained on at each experience (the upper bound)."""
    return Joint(setup.cache, adaptive_module(setup), cfg.train, seed=cfg.seed)


def latent_replay(cfg: RunConfig, setup: Setup) -> Learner:
    """cfg.memory.capacity latents at cfg.memory.bits, inserted by cfg.memory.policy."""
    memory = new_memory(cfg, setup, cfg.memory.capacity, setup.split.latent_shape)
    return LatentReplay(setup.cache, adaptive_module(setup), cfg.train, memory=memory, policy=cfg.memory.policy,
                        seed=cfg.seed)


def raw_replay(cfg: RunConfig, setup: Setup) -> Learner:
    """Inputs as 8-bit codes, as many as fit the bytes of latent_replay's memory (cfg.memory.capacity latents at
    cfg.memory.bits), so the two are compared at equal bytes."""
    m, n_classes, shape = cfg.memory, setup.scenario.n_classes, setup.dataset.sample_shape
    budget = ReplayMemory.bytes_for(m.capacity, setup.split.latent_shape, m.bits, granularity=m.granularity,
                                    n_classes=n_classes)
    capacity = ReplayMemory.capacity_for(budget, shape, RAW_BITS, granularity=m.granularity, n_classes=n_classes)
    memory = new_memory(cfg, setup, capacity, shape, RAW_BITS)
    return RawReplay(setup.cache, adaptive_module(setup), cfg.train, memory=memory, policy=m.policy, seed=cfg.seed)


def distilled_replay(cfg: RunConfig, setup: Setup) -> Learner:
    """Distilled sets of every experience at cfg.memory.bits (cfg.distill), the adaptive stage grown as cfg.growth
    says."""
    def memory(capacity: int, shape: tuple[int, ...]) -> ReplayMemory:
        return new_memory(cfg, setup, capacity, shape)

    return DistilledReplay(setup.cache, adaptive_module(setup), cfg.train, distill=cfg.distill, growth=cfg.growth,
                           new_memory=memory, model_spec=setup.spec, seed=cfg.seed)


STRATEGIES: dict[str, Factory] = {
    "naive": naive,
    "joint": joint,
    "latent_replay": latent_replay,
    "raw_replay": raw_replay,
    "distilled_replay": distilled_replay,
}


def make_learner(cfg: RunConfig, setup: Setup) -> Learner:
    """The learner of cfg.strategy for a runner Setup."""
    if cfg.strategy not in STRATEGIES:
        raise ConfigError(f"strategy {cfg.strategy!r} is not known; allowed: {', '.join(STRATEGIES)}")
    return STRATEGIES[cfg.strategy](cfg, setup)
