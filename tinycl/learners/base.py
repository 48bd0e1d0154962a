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

from tinycl.errors import ConfigError
from tinycl.frozen import LatentCache
from tinycl.model.build import SpecModule
from tinycl.scenarios import Experience

__all__ = ["Learner", "TrainConfig"]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 4  # passes over each experience's new data
    batch_size: int = 128  # mini-batch size, new + replayed samples
    lr: float = 1e-3  # SGD learning rate after the first experience
    first_lr: float | None = None  # learning rate on experience 0 (None: lr)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    replay_ratio: float | None = None  # share of a mini-batch taken from memory; None: Pellegrini's rule
    device: bool = False  # run each training step on the C runtime (tinycl.device), exactly as the device would

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

    def mix(self, n_new: int, n_memory: int) -> tuple[int, int]:
        """(new, replayed) samples per mini-batch. Pellegrini et al.: cur = n_new // ((n_new + N) // B)."""
        b = self.batch_size
        if n_memory == 0:
            return b, 0
        if self.replay_ratio is None:
            cur = n_new // max((n_new + n_memory) // b, 1)
        else:
            cur = round(b * (1 - self.replay_ratio))
        cur = min(max(cur, 1), b - 1)
        return cur, b - cur


class Learner:
    """Base class: fine-tunes the adaptive stage on each experience's latents (naive fine-tuning).

    Subclasses change what is mixed into the mini-batches (`_replay_batch`) and what is kept after an
    experience (`_after_experience`)."""

    name = "naive"

    def __init__(self, encoder: LatentCache, adaptive: SpecModule, train: TrainConfig, *, seed: int = 0):
        self.encoder, self.adaptive, self.train_cfg = encoder, adaptive, train
        self.rng = np.random.default_rng(seed)
        self.torch_rng = torch.Generator().manual_seed(seed)
        self.experiences_seen = 0
        self.sample_passes = 0  # samples through one training step of the adaptive stage, so far

    # -- the contract --------------------------------------------------------------------------------------
    def partial_fit(self, experience: Experience) -> Learner:
        z = self.encoder(experience.x, experience.ids)
        lr = self.train_cfg.first_lr if self.experiences_seen == 0 and self.train_cfg.first_lr else self.train_cfg.lr
        self._train(z, experience.y, lr)
        self._after_experience(experience, z)
        self.experiences_seen += 1
        return self

    def predict(self, x: np.ndarray, ids: np.ndarray | None = None, batch_size: int = 512) -> np.ndarray:
        """Labels (N,) int64 for inputs (N, *input_shape)."""
        return self.predict_latents(self.encoder(x, ids), batch_size)

    def predict_latents(self, z: np.ndarray, batch_size: int = 512) -> np.ndarray:
        self.adaptive.eval()
        with torch.no_grad():
            out = [self.adaptive(torch.as_tensor(z[i: i + batch_size])).argmax(1).numpy()
                   for i in range(0, len(z), batch_size)]
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    # -- hooks ------------------------------------------------------------------------------------------------
    def _replay_size(self) -> int:
        return 0

    def _replay_batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _after_experience(self, experience: Experience, z: np.ndarray) -> None:
        pass

    # -- training -------------------------------------------------------------------------------------------
    def _optimizer(self, lr: float):
        """A new optimizer per experience (momentum restarts, as in the latent-replay code): torch's SGD, or in
        device mode the C runtime's SGD step in its planned arena."""
        cfg = self.train_cfg
        if cfg.device:
            from tinycl.device import DeviceTrainer

            return DeviceTrainer(self.adaptive, lr, cfg.momentum, cfg.weight_decay)
        return torch.optim.SGD(self.adaptive.parameters(), lr=lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)

    def _mix(self, y_new: np.ndarray) -> tuple[int, int]:
        """(new, replayed) samples per mini-batch."""
        return self.train_cfg.mix(len(y_new), self._replay_size())

    def _train(self, z_new: np.ndarray, y_new: np.ndarray, lr: float) -> None:
        cfg = self.train_cfg
        cur, rep = self._mix(y_new)
        opt = self._optimizer(lr)
        self.adaptive.train()
        for _ in range(cfg.epochs):
            order = self.rng.permutation(len(y_new))
            for start in range(0, len(order), cur):
                idx = order[start: start + cur]
                zb, yb = z_new[idx], y_new[idx]
                if rep:
                    zr, yr = self._replay_batch(rep)
                    zb, yb = np.concatenate([zb, zr]), np.concatenate([yb, yr])
                self._step(opt, zb, yb)

    def _step(self, opt, z: np.ndarray, y: np.ndarray) -> float:
        self.sample_passes += len(y)
        if not isinstance(opt, torch.optim.Optimizer):  # device mode: forward, backward and update in C
            return opt.step(np.ascontiguousarray(z, np.float32), y)
        opt.zero_grad()
        loss = F.cross_entropy(self.adaptive(torch.as_tensor(z, dtype=torch.float32)), torch.as_tensor(y))
        loss.backward()
        opt.step()
        return float(loss.detach())

    # -- accounting and checkpoints --------------------------------------------------------------------------
    @property
    def replay_nbytes(self) -> int:
        return 0

    def memory_report(self) -> dict[str, int]:
        """Bytes the device holds for this learner, each counted from the arrays that hold it.

        `device_arena` (where present) is the C runtime's one static buffer for a training step and already
        holds the adaptive weights, gradients, momentum and activations: it is an alternative to those entries,
        not an addition (the device total is frozen_weights + replay_memory + device_arena)."""
        params = [p for p in self.adaptive.parameters()]
        weights = sum(p.numel() * p.element_size() for p in params)
        spec = self.adaptive.spec
        b = self.train_cfg.batch_size
        kept = math.prod(spec.input_shape) + sum(math.prod(spec.output_shape(n)) for n in spec.names)
        return {
            "frozen_weights": int(self.encoder.stage.nbytes),
            "adaptive_weights": int(weights),
            "gradients": int(weights),
            "optimizer_state": int(weights if self.train_cfg.momentum > 0 else 0),
            "replay_memory": int(self.replay_nbytes),
            # forward activations kept for the backward pass of one mini-batch, fp32, from the layer records
            "peak_activations": int(b * kept * 4),
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
        """For metrics.json: training FLOPs so far and inference FLOPs of the adaptive stage (tinycl.flops: forward
        2 x MACs; backward weight and input gradients), counted from the samples actually trained."""
        from tinycl.flops import inference_flops, training_flops

        spec = self.adaptive.spec
        return {"train_sample_passes": self.sample_passes,
                "train_flops": self.sample_passes * training_flops(spec),
                "inference_flops": inference_flops(spec)}

    def state_dict(self) -> dict:
        return {"adaptive": {k: v.clone() for k, v in self.adaptive.state_dict().items()},
                "rng": self.rng.bit_generator.state, "torch_rng": self.torch_rng.get_state(),
                "experiences_seen": self.experiences_seen, "sample_passes": self.sample_passes}

    def load_state_dict(self, state: dict) -> None:
        self.adaptive.load_state_dict(state["adaptive"])
        self.rng.bit_generator.state = state["rng"]
        self.torch_rng.set_state(state["torch_rng"])
        self.experiences_seen = state["experiences_seen"]
        self.sample_passes = state.get("sample_passes", 0)
