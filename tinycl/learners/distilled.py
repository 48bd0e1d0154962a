"""Distilled replay with model size adaption (Rüb et al. 2024, as far as it is known; see docs/DESIGN.md).

Per experience: train the adaptive stage on the new real data plus every distilled set so far, the mini-batches
balanced by class so a few synthetic samples per old class are not swamped by the new data; let the growth policy
widen the adaptive stage (function preserving); distil the new classes (Distribution Matching, tinycl.distill) into
a Q-bit replay memory; drop the raw data. Each class keeps `distill.fraction` (or `ipc`) of its samples for good,
or with `distill.budget` the classes seen so far share a fixed number of samples: the older sets are cut to make
room. Distillation runs on latents (after the frozen stage) or on raw inputs.
FLOPs of training, of the frozen stage and of distillation are logged per experience (tinycl.flops).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from tinycl.data.dataset import to_float
from tinycl.distill import DistillConfig, distill, embedder_spec, resolve_augment
from tinycl.errors import ConfigError
from tinycl.flops import distill_flops, inference_flops
from tinycl.frozen import LatentCache
from tinycl.growth import GrowthConfig, GrowthPolicy, GrowthState, make_policy
from tinycl.learners.base import Learner, TrainConfig
from tinycl.memory import ReplayMemory
from tinycl.model.build import SpecModule, build, get_weights
from tinycl.model.grow import add_outputs, growable_layers, widen_all
from tinycl.model.spec import ModelSpec
from tinycl.scenarios import Experience

__all__ = ["DistilledReplay", "MemoryFactory"]

MemoryFactory = Callable[[int, tuple[int, ...]], ReplayMemory]  # (capacity, sample shape) -> an empty memory


class DistilledReplay(Learner):
    """encoder, adaptive, train: as every Learner. distill: how to distil. new_memory: makes the Q-bit memory
    that stores one experience's distilled set. growth / policy: when to widen (policy defaults to the one
    growth.policy names). model_spec: the whole network (frozen + adaptive), the embedder of input-space
    distillation with distill.embedder "model"."""

    def __init__(self, encoder: LatentCache, adaptive: SpecModule, train: TrainConfig, *, distill: DistillConfig,
                 new_memory: MemoryFactory, growth: GrowthConfig | None = None, policy: GrowthPolicy | None = None,
                 model_spec: ModelSpec | None = None, seed: int = 0):
        super().__init__(encoder, adaptive, train, seed=seed)
        self.distill_cfg, self.new_memory = distill, new_memory
        self.growth_cfg = growth or GrowthConfig()
        self.policy = policy or make_policy(self.growth_cfg)
        spec = adaptive.spec
        allowed = growable_layers(spec)
        if unknown := [n for n in self.growth_cfg.layers if n not in allowed]:
            raise ConfigError(f"growth.layers {unknown} cannot grow; allowed: {', '.join(allowed) or 'none'}")
        self.grow_layers = tuple(self.growth_cfg.layers) or tuple(allowed)
        widths = {ly.name: ly.channels for ly in spec.layers}
        self.initial_widths = {n: widths[n] for n in self.grow_layers}
        cap = max(self.growth_cfg.max_factor, self.growth_cfg.start_factor)
        self.max_widths = {n: math.ceil(w * cap - 1e-9) for n, w in self.initial_widths.items()}
        # split at the input (nothing frozen): latents are the (normalised) inputs, so latent space is input space
        at_input = not encoder.stage.spec.layers
        self.space = "latent" if at_input else distill.space
        if self.space == "latent":
            self.sample_shape = tuple(spec.input_shape)
            self.embed_spec = embedder_spec(distill.embedder, spec, self.sample_shape)
        else:
            self.sample_shape = tuple(encoder.stage.spec.input_shape)
            self.embed_spec = embedder_spec(distill.embedder, model_spec, self.sample_shape)
        self.distill_cfg = replace(distill, augment=resolve_augment(
            distill.augment, self.sample_shape, "input" if at_input else distill.space))
        self.stores_: list[ReplayMemory] = []  # one Q-bit memory per experience's distilled set
        self.growth_log_: list[dict] = []
        self.distill_log_: list[dict] = []
        self._zr = np.zeros((0, *spec.input_shape), np.float32)  # decoded replay latents of this experience
        self._yr = np.zeros(0, np.int64)
        self._by_class: list[np.ndarray] = []
        self._workspace = 0
        self._losses: list[float] = []  # training loss of each step of the current training (growth's evidence)
        self._epochs_run = train.epochs
        if self.growth_cfg.start_factor > 1:
            self._grow(self.growth_cfg.start_factor, experience=-1, reason="start_factor at deployment")

    # -- one experience: Learner.partial_fit calls these around training ----------------------------------------
    def _before_training(self, experience: Experience) -> None:
        if self.distill_cfg.budget is not None:
            self._quota(experience.y)  # a budget this stream cannot share fails before the experience trains
        self._ensure_outputs(experience.y)
        self._load_replay()

    def _after_experience(self, experience: Experience, z: np.ndarray) -> int:
        return self._distil(experience, z)

    def _train(self, z_new: np.ndarray, y_new: np.ndarray, lr: float) -> None:
        """Train (Learner._train), then let the growth policy decide; after a growth, with growth.retrain_epochs,
        train the wider model again on the same data and decide again (growth.max_factor bounds the loop)."""
        self._losses, self._epochs_run = [], self.train_cfg.epochs
        super()._train(z_new, y_new, lr)
        while self._maybe_grow(self.experiences_seen, z_new, y_new) and self.growth_cfg.retrain_epochs:
            self._retrain(z_new, y_new, lr)

    def _retrain(self, z: np.ndarray, y: np.ndarray, lr: float) -> None:
        """growth.retrain_epochs more epochs on the grown model. Their passes are priced at the grown size in
        their own FLOPs entry (partial_fit prices its entry at the size the experience started with)."""
        passes, cfg = self.sample_passes, self.train_cfg
        self.train_cfg = replace(cfg, epochs=self.growth_cfg.retrain_epochs)
        try:
            self._losses, self._epochs_run = [], self.train_cfg.epochs
            super()._train(z, y, lr)
        finally:
            self.train_cfg = cfg
        n, self.sample_passes = self.sample_passes - passes, passes
        self.flops_.add(self.experiences_seen, self.adaptive.spec, train_samples=n)

    def _step(self, opt, z: np.ndarray, y: np.ndarray) -> float:
        loss = super()._step(opt, z, y)
        self._losses.append(float(loss))
        return loss

    def _loss_curve(self) -> tuple[float, float]:
        """(mean training loss of the last epoch, its relative fall from the epoch before; nan if one epoch)."""
        if not self._losses:
            return float("nan"), float("nan")
        epochs = [float(np.mean(c)) for c in np.array_split(np.asarray(self._losses), self._epochs_run) if len(c)]
        drop = (epochs[-2] - epochs[-1]) / epochs[-2] if len(epochs) > 1 and epochs[-2] > 0 else float("nan")
        return epochs[-1], drop

    def _ensure_outputs(self, y: np.ndarray) -> None:
        """Add output units when labels exceed the head (a model deployed with fewer outputs than classes)."""
        head = math.prod(self.adaptive.spec.output_shape())
        need = int(y.max()) + 1 if len(y) else 0
        if need > head:
            spec, weights = add_outputs(self.adaptive.spec, get_weights(self.adaptive), need - head, self.rng)
            self.adaptive = build(spec, weights)
            self.growth_log_.append({"experience": self.experiences_seen, "outputs": [head, need],
                                     "reason": "new classes"})

    # -- replay: every distilled set so far, class-balanced -----------------------------------------------------------
    def _load_replay(self) -> None:
        """Decode the stored sets once per experience (the device decodes each replayed sample; same values, and
        the frozen FLOPs of input-space replay are counted per replayed sample in `_replay_batch`)."""
        if not self.stores_:
            return
        parts = [m.read(np.arange(m.size)) for m in self.stores_]
        x, self._yr = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        self._zr = self.encoder.stage(x) if self.space == "input" else x
        self._by_class = [np.flatnonzero(self._yr == c) for c in np.unique(self._yr)]

    def _replay_size(self) -> int:
        return len(self._yr)

    def _replay_classes(self) -> np.ndarray:
        return np.unique(self._yr).astype(np.int64)

    def _replay_batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        cls = self.rng.integers(0, len(self._by_class), size=n)
        idx = np.array([self._by_class[c][self.rng.integers(len(self._by_class[c]))] for c in cls], np.int64)
        if self.space == "input":  # the device runs every replayed input through the frozen stage
            self.frozen_reruns += n
        return self._zr[idx], self._yr[idx]

    def _mix(self, y_new: np.ndarray) -> tuple[int, int]:
        """(new, replayed) per mini-batch: replayed share = old classes / all classes seen (train.replay_ratio
        overrides), so each class, real or distilled, gets about the same share of every batch."""
        old = set(np.unique(self._yr).tolist())
        share = len(old) / len(old | set(np.unique(y_new).tolist())) if old else None
        return self.train_cfg.mix(len(y_new), len(self._yr), share)

    # -- growth -----------------------------------------------------------------------------------------------------
    def _held_accuracy(self, z: np.ndarray, y: np.ndarray) -> float:
        """Class-balanced accuracy on the data the learner holds now: new real latents + distilled sets."""
        zs, ys = np.concatenate([z, self._zr]), np.concatenate([y, self._yr])
        hits = self.predict_latents(zs) == ys
        return float(np.mean([hits[ys == c].mean() for c in np.unique(ys)]))

    def _width_factor(self) -> float:
        widths = {ly.name: ly.channels for ly in self.adaptive.spec.layers}
        return min((widths[n] / w for n, w in self.initial_widths.items()), default=1.0)

    def _widened(self, factor: float):
        return widen_all(self.adaptive.spec, get_weights(self.adaptive), factor, self.rng, self.growth_cfg.noise,
                         self.grow_layers, self.max_widths)

    def _maybe_grow(self, index: int, z: np.ndarray, y: np.ndarray) -> bool:
        """Ask the policy, grow if it says so, log the decision either way; True if the model grew."""
        def flops_if(factor: float) -> int:
            spec, _, _ = widen_all(self.adaptive.spec, get_weights(self.adaptive), factor, np.random.default_rng(0),
                                   0.0, self.grow_layers, self.max_widths)
            return inference_flops(spec)

        loss, drop = self._loss_curve()
        state = GrowthState(index, self._held_accuracy(z, y), len(np.union1d(y, self._yr)), self._width_factor(),
                            inference_flops(self.adaptive.spec), flops_if, loss, drop)
        decision = self.policy(state)
        entry = {"experience": index, "accuracy_held": state.accuracy, "loss": loss, "loss_drop": drop,
                 "factor": decision.factor, "reason": decision.reason}
        if decision.factor > 1:
            entry.update(self._grow(decision.factor, index, decision.reason, log=False))
        else:
            entry["inference_flops"] = state.inference_flops
        self.growth_log_.append(entry)
        return decision.factor > 1

    def _grow(self, factor: float, experience: int, reason: str, log: bool = True) -> dict:
        spec, weights, changes = self._widened(factor)
        self.adaptive = build(spec, weights)
        entry = {"widths": {k: list(v) for k, v in changes.items()}, "inference_flops": inference_flops(spec),
                 "params": spec.num_params()}
        if log:
            self.growth_log_.append({"experience": experience, "factor": factor, "reason": reason, **entry})
        return entry

    # -- distillation -----------------------------------------------------------------------------------------------
    def _distil(self, experience: Experience, z: np.ndarray) -> int:
        """Distil this experience's classes into a new Q-bit memory; returns the FLOPs it took."""
        cfg, cut = self.distill_cfg, None
        if cfg.budget is not None:  # a shared budget: the older sets make room for the new classes first
            cut = self._quota(experience.y)
            self._cut(cut)
            cfg = replace(cfg, ipc=cut, budget=None)
        data = z if self.space == "latent" else to_float(experience.x)
        x_syn, y_syn, info = distill(data, experience.y, cfg, self.embed_spec, self.rng)
        memory = self.new_memory(len(y_syn), self.sample_shape)
        memory.write(np.arange(len(y_syn)), x_syn, y_syn)
        self.stores_.append(memory)
        d = math.prod(self.sample_shape)
        flops = 0
        for c in info.values():
            n_real = min(cfg.real_batch, c["real"])
            flops += distill_flops(self.embed_spec, n_real, c["synthetic"], cfg.iterations)
            if cfg.iterations:  # fp32 synthetic set + its momentum + one real batch, while a class is distilled
                self._workspace = max(self._workspace, (2 * c["synthetic"] + n_real) * d * 4)
        self.distill_log_.append({"experience": experience.index, "classes": {str(k): v for k, v in info.items()},
                                  "bytes": memory.nbytes, "flops": flops, "older_sets_cut_to": cut})
        return flops

    def _quota(self, y_new: np.ndarray) -> int:
        """Synthetic samples per class under distill.budget: budget // classes seen so far (new and stored), the
        class-balanced memory's quota (tinycl.memory.class_balanced_policy)."""
        stored = np.concatenate([m.labels[: m.size] for m in self.stores_]) if self.stores_ else np.zeros(0, int)
        if again := np.intersect1d(y_new, stored).tolist():
            raise ConfigError(f"distill.budget shares the samples of class-incremental streams, where each class "
                              f"arrives in one experience; classes {again} arrive again: unset distill.budget")
        classes = np.union1d(y_new, stored)
        quota = self.distill_cfg.budget // len(classes)
        if quota < 1:
            raise ConfigError(f"distill.budget {self.distill_cfg.budget} is below the {len(classes)} classes seen "
                              f"so far; allowed: at least one synthetic sample per class")
        return quota

    def _cut(self, quota: int) -> None:
        """Keep the first `quota` samples of each class in every stored set. A cut set is a smaller memory with the
        same quantizer, so its codes are the ones stored (the device moves them; nothing is requantized)."""
        for i, m in enumerate(self.stores_):
            labels = m.labels[: m.size]
            keep = np.concatenate([np.flatnonzero(labels == c)[:quota] for c in np.unique(labels)])
            if len(keep) == m.size:
                continue
            x, y = m.read(keep)
            cut = self.new_memory(len(keep), self.sample_shape).share_quantizer(m)
            cut.write(np.arange(len(keep)), x, y)
            self.stores_[i] = cut

    # -- accounting and checkpoints ---------------------------------------------------------------------------------
    @property
    def replay_stores(self) -> list:
        return list(self.stores_)

    @property
    def stored_bits(self) -> int | None:
        """Bits of its distilled sets: of the memories it holds, or before the first, of the ones it makes."""
        return (self.stores_[0] if self.stores_ else self.new_memory(1, self.sample_shape)).bits

    def memory_report(self) -> dict[str, int]:
        return {**super().memory_report(), "distill_workspace": int(self._workspace)}

    def extra_metrics(self) -> dict:
        """For metrics.json (Learner.extra_metrics' keys): growth decisions and distillation per experience."""
        return {**super().extra_metrics(), "growth": list(self.growth_log_), "distill": list(self.distill_log_),
                "synthetic_per_class": {str(k): v for k, v in self.synthetic_counts().items()}}

    def synthetic_counts(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for m in self.stores_:
            for c in m.labels[: m.size].tolist():
                counts[int(c)] = counts.get(int(c), 0) + 1
        return counts

    def state_dict(self) -> dict:
        return {**super().state_dict(), "spec": self.adaptive.spec,
                "stores": [(m.capacity, m.state_dict()) for m in self.stores_], "growth_log": self.growth_log_,
                "distill_log": self.distill_log_, "workspace": self._workspace}

    def load_state_dict(self, state: dict) -> None:
        self.adaptive = build(state["spec"])  # the saved model may have grown
        super().load_state_dict(state)
        self.stores_ = []
        for capacity, s in state["stores"]:
            m = self.new_memory(capacity, self.sample_shape)
            m.load_state_dict(s)
            self.stores_.append(m)
        self.growth_log_, self.distill_log_ = list(state["growth_log"]), list(state["distill_log"])
        self._workspace = state["workspace"]

