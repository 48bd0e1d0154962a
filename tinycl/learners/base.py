"""The learner contract and the training loop shared by every strategy.

A learner owns a frozen stage (behind a LatentCache) and an adaptive stage (a torch SpecModule, fp32).
`partial_fit(experience)` learns one experience and returns the learner; `predict(x)` gives labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from tinycl.errors import ConfigError, TinyclError
from tinycl.flops import FlopsLog, inference_flops
from tinycl.frozen import LatentCache
from tinycl.learners.cwr import ConsolidatedHead
from tinycl.model.build import SpecModule
from tinycl.model.ops import BRN_LIMITS
from tinycl.scenarios import Experience

__all__ = ["Learner", "TrainConfig", "MIXES"]

MIXES = ("pellegrini", "class_balanced", "ratio")



def _device():
    """tinycl.device, imported when device mode is used (it compiles and loads the C runtime)."""
    import tinycl.device

    return tinycl.device


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 4  # passes over each experience's new data
    batch_size: int = 128  # mini-batch size, new + replayed samples
    lr: float = 1e-3  # SGD learning rate after the first experience
    first_lr: float | None = None  # learning rate on experience 0 (None: lr)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    replay_ratio: float | None = None  # share of a mini-batch taken from memory, used by replay_mix "ratio"
    # how a mini-batch mixes new and replayed samples: "pellegrini" (cur = n_new // ((n_new + N) // B)),
    # "class_balanced" (replayed share = classes only in memory / all classes present), "ratio" (replay_ratio);
    # None: "ratio" if replay_ratio is set, else the protocol's default (tinycl.strategies.DEFAULT_MIX)
    replay_mix: str | None = None
    device: bool = False  # run each training step on the C runtime (tinycl.device), exactly as the device would
    batch_renorm: bool = False  # AR1*: batch renormalization after each trainable conv of the adaptive stage
    brn_warmup: int = 200  # training steps over which BRN's r_max / d_max ramp from 1 / 0 to 1.25 / 0.5
    cwr: bool = False  # AR1*'s CWR* head: consolidated class weights, new classes start at zero
    head_lr_factor: float = 1.0  # the head's (last weighted layer's) lr = lr x this
    clip_norm: float | None = None  # clip the gradient's global L2 norm to this per step; None: no clipping
    warmup_steps: int = 0  # per experience, lr ramps linearly over this many steps (0: none)

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 2:
            raise ConfigError(f"train.epochs must be >= 1 and train.batch_size >= 2, got {self.epochs}, "
                              f"{self.batch_size}")
        if self.lr <= 0 or (self.first_lr is not None and self.first_lr <= 0):
            raise ConfigError("train.lr and train.first_lr must be > 0")
        if not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ConfigError("train.momentum must be in [0, 1) and train.weight_decay >= 0")
        if self.replay_ratio is not None and not 0 < self.replay_ratio < 1:
            raise ConfigError(f"train.replay_ratio must be in (0, 1) or unset, got {self.replay_ratio}")
        if self.replay_mix not in (None, *MIXES):
            raise ConfigError(f"train.replay_mix {self.replay_mix!r}; allowed: {', '.join(MIXES)}")
        if self.replay_mix == "ratio" and self.replay_ratio is None:
            raise ConfigError('train.replay_mix "ratio" needs train.replay_ratio (the replayed share, in (0, 1))')
        if self.head_lr_factor <= 0 or (self.clip_norm is not None and self.clip_norm <= 0):
            raise ConfigError("train.head_lr_factor must be > 0 and train.clip_norm > 0 or unset")
        if self.warmup_steps < 0 or self.brn_warmup < 0:
            raise ConfigError("train.warmup_steps and train.brn_warmup must be >= 0")
        self._check_device()

    def _check_device(self) -> None:
        """The C runtime's step is plain SGD on every parameter at one lr (warm-up changes it between steps)."""
        if not self.device:
            return
        for key, unsupported in (("head_lr_factor", self.head_lr_factor != 1.0),
                                 ("clip_norm", self.clip_norm is not None)):
            if unsupported:
                raise ConfigError(f"train.{key} is not supported with train.device = true (the C runtime's step); "
                                  f"unset one of them")

    @property
    def mix_rule(self) -> str:
        """replay_mix, with None resolved without a protocol: "ratio" if replay_ratio is set, else "pellegrini"."""
        return self.replay_mix or ("ratio" if self.replay_ratio is not None else "pellegrini")

    def mix(self, n_new: int, n_memory: int, share: float | None = None) -> tuple[int, int]:
        """(new, replayed) samples per mini-batch of `batch_size`, for n_new new samples and n_memory in memory.

        The replayed share is `replay_ratio` under the "ratio" rule, else `share` (a learner's own rule) if given,
        else Pellegrini et al.'s cur = n_new // ((n_new + N) // B). Both parts keep at least one sample."""
        b = self.batch_size
        if n_memory == 0:
            return b, 0
        ratio = self.replay_ratio if self.mix_rule == "ratio" else share
        cur = n_new // max((n_new + n_memory) // b, 1) if ratio is None else round(b * (1 - ratio))
        cur = min(max(cur, 1), b - 1)
        return cur, b - cur


class Learner:
    """Base class: fine-tunes the adaptive stage on each experience's latents (naive fine-tuning).

    Subclasses change what is trained on (`_training_set`), what is mixed into the mini-batches
    (`_replay_batch`), and what happens before training (`_before_training`) and after it (`_after_experience`).
    Every learner logs the FLOPs it spends per experience (`flops_`, tinycl.flops.FlopsLog)."""

    def __init__(self, encoder: LatentCache, adaptive: SpecModule, train: TrainConfig, *, seed: int = 0):
        self.encoder, self.adaptive, self.train_cfg = encoder, adaptive, train
        # device mode draws from the portable generator the exported C learner repeats (tinycl/device/rng.py)
        self.rng = np.random.default_rng(seed) if not train.device else _device().PortableRng(seed)
        self.torch_rng = torch.Generator().manual_seed(seed)
        self.experiences_seen = 0
        self.sample_passes = 0  # samples through one training step of the adaptive stage, so far
        self.frozen_reruns = 0  # replayed samples run through the frozen stage again (input-space replay), so far
        self.flops_ = FlopsLog()
        self.steps_ = 0  # training steps so far (batch renormalization's warm-up)
        self.head_ = ConsolidatedHead(adaptive) if train.cwr else None

    # -- the contract --------------------------------------------------------------------------------------
    def partial_fit(self, experience: Experience) -> Learner:
        z = self._latents(self.encoder(experience.x, experience.ids), fit=True)
        self._before_training(experience)
        spec, passes, reruns = self.adaptive.spec, self.sample_passes, self.frozen_reruns
        if self.head_ is not None:
            self.head_.load(self.adaptive, np.union1d(experience.y, self._replay_classes()))
        self._train(*self._training_set(experience, z), self._lr())
        if self.head_ is not None:
            self.head_.update(self.adaptive, experience.y)
        extra = self._after_experience(experience, z)
        # on the device every new sample runs through the frozen stage once, whatever the host's cache holds
        frozen = (len(experience) + self.frozen_reruns - reruns) * inference_flops(self.encoder.stage.spec)
        self.flops_.add(experience.index, spec, train_samples=self.sample_passes - passes, frozen_flops=frozen,
                        distill=extra)
        self.experiences_seen += 1
        return self

    def predict(self, x: np.ndarray, ids: np.ndarray | None = None, batch_size: int = 512) -> np.ndarray:
        """Labels (N,) int64 for inputs (N, *input_shape)."""
        return self.predict_latents(self._latents(self.encoder(x, ids)), batch_size)

    def predict_latents(self, z: np.ndarray, batch_size: int = 512) -> np.ndarray:
        if self.train_cfg.device:  # the C forward pass, as the device predicts
            return _device().device_predict(self.adaptive, z)
        self.adaptive.eval()
        with torch.no_grad():
            out = [self.adaptive(torch.as_tensor(z[i: i + batch_size])).argmax(1).numpy()
                   for i in range(0, len(z), batch_size)]
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    # -- hooks ------------------------------------------------------------------------------------------------
    def _lr(self) -> float:
        """The learning rate of the coming experience: train.first_lr on experience 0 (if set), else train.lr."""
        cfg = self.train_cfg
        return cfg.first_lr if self.experiences_seen == 0 and cfg.first_lr else cfg.lr

    def _before_training(self, experience: Experience) -> None:
        pass

    def _latents(self, z: np.ndarray, fit: bool = False) -> np.ndarray:
        """The new latents (N, *latent_shape) as the adaptive stage receives them, in training (fit) and in
        prediction: as the frozen stage gives them."""
        return z

    def _training_set(self, experience: Experience, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(latents (N, *latent_shape), labels (N,)) the epochs run over: the new data."""
        return z, experience.y

    def _replay_size(self) -> int:
        return 0

    def _replay_batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _replay_classes(self) -> np.ndarray:
        """(k,) int64: the classes the learner replays (or keeps) besides the new data."""
        return np.zeros(0, np.int64)

    def _rerun_frozen(self, x: np.ndarray) -> np.ndarray:
        """Stored inputs (N, *input_shape) -> latents, through the frozen stage again, as the device does."""
        self.frozen_reruns += len(x)
        return self.encoder.stage(x)

    def _after_experience(self, experience: Experience, z: np.ndarray) -> int:
        """What is kept of the experience; returns the FLOPs that took beyond training (e.g. distillation)."""
        return 0

    # -- training -------------------------------------------------------------------------------------------
    def _optimizer(self, lr: float):
        """A new optimizer per experience (momentum restarts, as in the latent-replay code): torch's SGD (the head
        at lr x head_lr_factor), or in device mode the C runtime's SGD step in its planned arena."""
        cfg = self.train_cfg
        if cfg.device:
            from tinycl.device import DeviceTrainer

            return DeviceTrainer(self.adaptive, lr, cfg.momentum, cfg.weight_decay, brn_warmup=cfg.brn_warmup)
        head = self.adaptive.params[[ly.name for ly in self.adaptive.spec.layers if ly.has_weights][-1]]
        head_ids = {id(p) for p in head.parameters()}
        groups = [{"params": [p for p in self.adaptive.parameters() if id(p) not in head_ids], "lr_factor": 1.0},
                  {"params": list(head.parameters()), "lr_factor": cfg.head_lr_factor}]
        return torch.optim.SGD([g for g in groups if g["params"]], lr=lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)

    def _mix(self, y_new: np.ndarray) -> tuple[int, int]:
        """(new, replayed) samples per mini-batch, by train.replay_mix. class_balanced: replayed share = classes
        only in memory / all classes present, so each class gets about the same share of every batch."""
        share, old = None, self._replay_classes()
        if self.train_cfg.mix_rule == "class_balanced" and len(old):
            share = len(np.setdiff1d(old, y_new)) / len(np.union1d(old, y_new))
        return self.train_cfg.mix(len(y_new), self._replay_size(), share)

    def _train(self, z_new: np.ndarray, y_new: np.ndarray, lr: float) -> None:
        cfg = self.train_cfg
        cur, rep = self._mix(y_new)
        opt = self._optimizer(lr)
        self.adaptive.train()
        step = 0
        for _ in range(cfg.epochs):
            order = self.rng.permutation(len(y_new))
            for start in range(0, len(order), cur):
                idx = order[start: start + cur]
                zb, yb = z_new[idx], y_new[idx]
                if rep:
                    zr, yr = self._replay_batch(rep)
                    zb, yb = np.concatenate([zb, zr]), np.concatenate([yb, yr])
                self._set_lr(opt, lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else lr)
                self._step(opt, zb, yb)
                step += 1
        if not all(bool(torch.isfinite(p).all()) for p in self.adaptive.parameters()):  # the last step overflowed
            self._finite(float("nan"), lr)

    def _set_lr(self, opt, lr: float) -> None:
        if not isinstance(opt, torch.optim.Optimizer):
            opt.lr = lr
            return
        for group in opt.param_groups:
            group["lr"] = lr * group["lr_factor"]

    def _renorm_limits(self) -> None:
        """Batch renormalization's warm-up: r_max from 1 and d_max from 0 to BRN_LIMITS over train.brn_warmup
        steps (Ioffe 2017 starts them as plain batch norm, then relaxes them)."""
        warm = self.train_cfg.brn_warmup
        t = min(1.0, self.steps_ / warm) if warm else 1.0
        for layer in self.adaptive.spec.layers:
            if layer.op == "batch_renorm":
                p = self.adaptive.params[layer.name]
                p.r_max, p.d_max = 1.0 + (BRN_LIMITS[0] - 1.0) * t, BRN_LIMITS[1] * t

    def _step(self, opt, z: np.ndarray, y: np.ndarray) -> float:
        self.sample_passes += len(y)
        self.steps_ += 1
        if not isinstance(opt, torch.optim.Optimizer):  # device mode: forward, backward and update in C
            return self._finite(opt.step(np.ascontiguousarray(z, np.float32), y, brn_step=self.steps_), opt.lr)
        self._renorm_limits()
        opt.zero_grad()
        loss = F.cross_entropy(self.adaptive(torch.as_tensor(z, dtype=torch.float32)), torch.as_tensor(y))
        self._finite(float(loss.detach()), opt.param_groups[0]["lr"])
        loss.backward()
        if self.train_cfg.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.adaptive.parameters(), self.train_cfg.clip_norm)
        opt.step()
        return float(loss.detach())

    def _finite(self, loss: float, lr: float) -> float:
        """The loss, or a one-line error when it is not finite (a diverged run is never reported as accuracy)."""
        if not math.isfinite(loss):
            raise TinyclError(f"training diverged: the loss became {loss} at experience {self.experiences_seen} "
                              f"(step lr {lr:g}); lower train.lr (or train.first_lr), or set train.clip_norm or "
                              f"train.warmup_steps")
        return loss

    # -- accounting and checkpoints --------------------------------------------------------------------------
    @property
    def replay_stores(self) -> list:
        """The objects that hold replayed data on the device (ReplayMemory, or arrays), each with `nbytes`."""
        return []

    @property
    def replay_nbytes(self) -> int:
        return int(sum(store.nbytes for store in self.replay_stores))

    @property
    def stored_bits(self) -> int | None:
        """Bits per value of the replayed data it stores (32: float32), None when it stores nothing."""
        return None

    def memory_report(self) -> dict[str, int]:
        """Bytes the device holds for this learner, each counted from the arrays that hold it.

        `device_arena` (where present) is the C runtime's one static buffer for a training step and already
        holds the adaptive weights, gradients, momentum and activations: it is an alternative to those entries,
        not an addition (the device total is frozen_weights + replay_memory + device_arena)."""
        params = [p for p in self.adaptive.parameters()]
        weights = sum(p.numel() * p.element_size() for p in params)
        from tinycl.device.arena import activation_nbytes

        return {
            "frozen_weights": int(self.encoder.stage.nbytes),
            "adaptive_weights": int(weights),
            "gradients": int(weights),
            "optimizer_state": int(weights if self.train_cfg.momentum > 0 else 0),
            "replay_memory": int(self.replay_nbytes),
            # forward activations kept for the backward pass of one mini-batch, fp32, from the layer records
            "peak_activations": int(activation_nbytes(self.adaptive.spec, self.train_cfg.batch_size)),
            **self._device_arena(),
        }

    def _device_arena(self) -> dict[str, int]:
        """The C runtime's planned arena for one training step (one sample at a time, gradients accumulated
        over the mini-batch; weights, gradients and momentum included), where the C runtime supports the
        adaptive stage's ops."""
        from tinycl.device.arena import plan_arena, training_schedule
        from tinycl.errors import ModelError

        try:
            plan = plan_arena(training_schedule(self.adaptive.spec, momentum=self.train_cfg.momentum > 0))
        except ModelError:
            return {}
        return {"device_arena": int(plan.size)}

    def extra_metrics(self) -> dict:
        """For metrics.json, the same keys for every learner. flops: FLOPs per experience and in total
        (tinycl.flops: forward 2 x MACs, backward weight and input gradients, counted from the samples actually
        trained; frozen-stage and distillation FLOPs beside them), and what a model of the final size would have
        spent on the same samples. growth, distill, synthetic_per_class: model size changes, distillation per
        experience and synthetic samples per class (empty for a learner that does neither)."""
        return {"flops": self.flops_.summary(fixed=self.adaptive.spec), "growth": [], "distill": [],
                "synthetic_per_class": {}}

    def state_dict(self) -> dict:
        return {"adaptive": {k: v.clone() for k, v in self.adaptive.state_dict().items()},
                "rng": self.rng.bit_generator.state, "torch_rng": self.torch_rng.get_state(),
                "experiences_seen": self.experiences_seen, "sample_passes": self.sample_passes,
                "frozen_reruns": self.frozen_reruns, "flops": [dict(e) for e in self.flops_.entries],
                "steps": self.steps_, "cwr": None if self.head_ is None else self.head_.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.adaptive.load_state_dict(state["adaptive"])
        self.rng.bit_generator.state = state["rng"]
        self.torch_rng.set_state(state["torch_rng"])
        self.experiences_seen, self.sample_passes = state["experiences_seen"], state["sample_passes"]
        self.frozen_reruns, self.flops_ = state["frozen_reruns"], FlopsLog([dict(e) for e in state["flops"]])
        self.steps_ = state["steps"]
        if self.head_ is not None:
            self.head_.load_state_dict(state["cwr"])
