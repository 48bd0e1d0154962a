"""The strategies, by name: the one list of them. `make_learner(cfg, setup)` builds `STRATEGIES[cfg.strategy]`.

A factory `(cfg: RunConfig, setup: Setup) -> Learner` takes the run config and what `tinycl.runner.prepare` made
of it. Every learner's adaptive stage is built from `setup.adaptive_spec` and `setup.adaptive_weights` (the one
source of the adaptive stage, for zoo and .tflite models alike), and every replay memory from `cfg.memory`; a
learner reports the bits it stores itself (`Learner.stored_bits`). Config validation, `tinycl run`, the demo,
`tinycl cost` and the benchmarks read this table: a new strategy is one function and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from tinycl.errors import ConfigError
from tinycl.learners.base import Learner, TrainConfig
from tinycl.learners.distilled import DistilledReplay
from tinycl.learners.replay import GDumb, Joint, LatentReplay, RawReplay
from tinycl.memory import ReplayMemory
from tinycl.model.adapt import insert_batch_renorm
from tinycl.model.build import SpecModule, build

if TYPE_CHECKING:
    from tinycl.config import RunConfig
    from tinycl.runner import Setup

__all__ = ["STRATEGIES", "DEFAULT_MIX", "Factory", "make_learner", "adaptive_module", "new_memory", "train_config"]

Factory = Callable[["RunConfig", "Setup"], Learner]

RAW_BITS = 8  # raw replay stores inputs as 8-bit codes: an image's own precision

# train.replay_mix when unset (and train.replay_ratio unset), per protocol; other protocols: "pellegrini".
# Measured (docs/architecture.md, Learners): on split streams of 2 new classes per experience Pellegrini's rule
# replays too little of the old classes.
DEFAULT_MIX = {"split-cifar10": "class_balanced", "split-mnist": "class_balanced",
               "class_incremental": "class_balanced"}


def train_config(cfg: RunConfig) -> TrainConfig:
    """cfg.train with replay_mix resolved: as set, "ratio" if replay_ratio is set, else DEFAULT_MIX's choice."""
    t = cfg.train
    if t.replay_mix is not None or t.replay_ratio is not None:
        return replace(t, replay_mix=t.mix_rule)
    return replace(t, replay_mix=DEFAULT_MIX.get(cfg.data.protocol, "pellegrini"))


def adaptive_module(cfg: RunConfig, setup: Setup) -> SpecModule:
    """A fresh trainable copy of the setup's adaptive stage; with train.batch_renorm, batch renormalization after
    each trainable conv, its statistics from the first experience's latents (the same function at deployment)."""
    spec, weights = setup.adaptive_spec, setup.adaptive_weights
    if cfg.train.batch_renorm:
        first = setup.scenario.train[0]
        spec, weights = insert_batch_renorm(spec, weights, setup.cache(first.x, first.ids))
    return build(spec, weights)


def new_memory(cfg: RunConfig, setup: Setup, capacity: int, shape: tuple[int, ...],
               bits: int | None = None) -> ReplayMemory:
    """An empty memory of `capacity` samples of `shape` at `bits` (default cfg.memory.bits), quantized as
    cfg.memory says, with labels for the scenario's classes."""
    m = cfg.memory
    return ReplayMemory(capacity, tuple(shape), m.bits if bits is None else bits, granularity=m.granularity,
                        range_method=m.range, code=m.code, n_classes=setup.scenario.n_classes)


def naive(cfg: RunConfig, setup: Setup) -> Learner:
    """Fine-tuning on the new data only (the lower bound)."""
    return Learner(setup.cache, adaptive_module(cfg, setup), train_config(cfg), seed=cfg.seed)


def joint(cfg: RunConfig, setup: Setup) -> Learner:
    """Every latent kept in float32 and trained on at each experience (the upper bound)."""
    return Joint(setup.cache, adaptive_module(cfg, setup), train_config(cfg), seed=cfg.seed)


def latent_replay(cfg: RunConfig, setup: Setup) -> Learner:
    """cfg.memory.capacity latents at cfg.memory.bits, inserted by cfg.memory.policy."""
    memory = new_memory(cfg, setup, cfg.memory.capacity, setup.split.latent_shape)
    return LatentReplay(setup.cache, adaptive_module(cfg, setup), train_config(cfg), memory=memory,
                        policy=cfg.memory.policy, new_latents=cfg.memory.new_latents, seed=cfg.seed)


def gdumb(cfg: RunConfig, setup: Setup) -> Learner:
    """GDumb-style: cfg.memory.capacity latents (cfg.memory.policy, class_balanced as in GDumb), and the adaptive
    stage retrained from its deployed weights on the memory alone at every experience."""
    memory = new_memory(cfg, setup, cfg.memory.capacity, setup.split.latent_shape)
    return GDumb(setup.cache, adaptive_module(cfg, setup), train_config(cfg), memory=memory,
                 policy=cfg.memory.policy, new_latents=cfg.memory.new_latents, seed=cfg.seed)


def raw_replay(cfg: RunConfig, setup: Setup) -> Learner:
    """Inputs as 8-bit codes, as many as fit the bytes of latent_replay's memory (cfg.memory.capacity latents at
    cfg.memory.bits), so the two are compared at equal bytes."""
    m, n_classes, shape = cfg.memory, setup.scenario.n_classes, setup.dataset.sample_shape
    budget = ReplayMemory.bytes_for(m.capacity, setup.split.latent_shape, m.bits, granularity=m.granularity,
                                    code=m.code, n_classes=n_classes)
    capacity = ReplayMemory.capacity_for(budget, shape, RAW_BITS, granularity=m.granularity, code=m.code,
                                         n_classes=n_classes)
    memory = new_memory(cfg, setup, capacity, shape, RAW_BITS)
    return RawReplay(setup.cache, adaptive_module(cfg, setup), train_config(cfg), memory=memory, policy=m.policy,
                     seed=cfg.seed)


def distilled_replay(cfg: RunConfig, setup: Setup) -> Learner:
    """Distilled sets of every experience at cfg.memory.bits (cfg.distill), the adaptive stage grown as cfg.growth
    says."""
    def memory(capacity: int, shape: tuple[int, ...]) -> ReplayMemory:
        return new_memory(cfg, setup, capacity, shape)

    if cfg.train.cwr and (cfg.growth.policy != "none" or cfg.growth.start_factor != 1.0):
        raise ConfigError("train.cwr keeps one consolidated row per class of a fixed head; growth changes the head: "
                          "set growth.policy = \"none\" (and growth.start_factor = 1) or train.cwr = false")
    return DistilledReplay(setup.cache, adaptive_module(cfg, setup), train_config(cfg), distill=cfg.distill,
                           growth=cfg.growth, new_memory=memory, model_spec=setup.spec, seed=cfg.seed)


STRATEGIES: dict[str, Factory] = {
    "naive": naive,
    "joint": joint,
    "latent_replay": latent_replay,
    "raw_replay": raw_replay,
    "distilled_replay": distilled_replay,
    "gdumb": gdumb,
}


def make_learner(cfg: RunConfig, setup: Setup) -> Learner:
    """The learner of cfg.strategy for a runner Setup."""
    if cfg.strategy not in STRATEGIES:
        raise ConfigError(f"strategy {cfg.strategy!r} is not known; allowed: {', '.join(STRATEGIES)}")
    return STRATEGIES[cfg.strategy](cfg, setup)
