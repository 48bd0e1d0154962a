"""Learners beside naive fine-tuning: joint training (upper bound), latent replay (fp32 or Q-bit memory) and
raw-input replay (inputs stored, run through the frozen stage again when replayed)."""

from __future__ import annotations

import copy

import numpy as np

from tinycl.data.dataset import to_float
from tinycl.learners.base import Learner
from tinycl.memory import POLICIES, ReplayMemory
from tinycl.scenarios import Experience

__all__ = ["GDumb", "Joint", "LatentReplay", "RawReplay"]


NEW_LATENTS = ("exact", "quantized")  # memory.new_latents: how latent replay's new latents reach the adaptive stage


class Joint(Learner):
    """Upper bound: keeps every latent seen (float32) and trains on all of them at each experience."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._z: list[np.ndarray] = []
        self._y: list[np.ndarray] = []

    def _training_set(self, experience: Experience, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._z.append(z)
        self._y.append(experience.y)
        return np.concatenate(self._z), np.concatenate(self._y)

    def _replay_classes(self) -> np.ndarray:
        return np.unique(np.concatenate(self._y)) if self._y else np.zeros(0, np.int64)

    @property
    def replay_stores(self) -> list:
        return [*self._z, *self._y]

    @property
    def stored_bits(self) -> int | None:
        return 32  # latents kept as the frozen stage gives them, float32

    def state_dict(self) -> dict:
        return {**super().state_dict(), "z": list(self._z), "y": list(self._y)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._z, self._y = list(state["z"]), list(state["y"])


class LatentReplay(Learner):
    """Latent replay (Pellegrini et al. 2020; quantized: Ravaglia et al. 2021): the memory stores latents at
    `memory.bits` bits; replayed latents join the new ones on the batch axis at the split."""

    def __init__(self, *args, memory: ReplayMemory, policy: str = "nicv2", new_latents: str = "exact", **kwargs):
        super().__init__(*args, **kwargs)
        self.memory, self.policy = memory, POLICIES[policy]
        self.quantize_new = new_latents == "quantized" and memory.bits != 32

    def _latents(self, z: np.ndarray, fit: bool = False) -> np.ndarray:
        """With new_latents "quantized", new latents pass through the memory's quantizer, so the adaptive stage sees
        old (replayed) and new classes in one form: trained on exact new latents and Q-bit old ones, it learns to
        tell the two forms apart instead of the classes (docs/results/qlr_study.md). The quantizer is calibrated
        on experience 0's latents before the first step: m = min(n, capacity) of them, evenly spaced (i (n - 1) //
        (m - 1), in integers as the firmware computes it)."""
        if not self.quantize_new:
            return z
        if not self.memory.calibrated:
            if not fit:
                return z
            m = min(len(z), self.memory.capacity)
            self.memory.calibrate(z[np.arange(m, dtype=np.int64) * (len(z) - 1) // max(m - 1, 1)])
        return self.memory.decode(self.memory.encode(z)).astype(np.float32, copy=False)

    def _replay_size(self) -> int:
        return self.memory.size

    def _replay_batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        slots = self.rng.choice(self.memory.size, size=n, replace=n > self.memory.size)
        return self.memory.read(slots)

    def _replay_classes(self) -> np.ndarray:
        return np.unique(self.memory.labels[: self.memory.size]).astype(np.int64)

    def _stored(self, experience: Experience, z: np.ndarray) -> np.ndarray:
        return z

    def _keep(self, experience: Experience, z: np.ndarray) -> None:
        """The memory update: the policy picks which new samples take which slots."""
        new, slots = self.policy(self.memory, experience.y, experience.index, self.rng)
        self.memory.write(slots, self._stored(experience, z)[new], experience.y[new])
        self.memory.seen_ += len(experience.y)

    def _after_experience(self, experience: Experience, z: np.ndarray) -> int:
        self._keep(experience, z)
        return 0

    @property
    def replay_stores(self) -> list:
        return [self.memory]

    @property
    def stored_bits(self) -> int | None:
        return self.memory.bits

    def state_dict(self) -> dict:
        return {**super().state_dict(), "memory": self.memory.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.memory.load_state_dict(state["memory"])


class GDumb(LatentReplay):
    """GDumb-style (Prabhu et al. 2020): the memory is filled first (class-balanced, as memory.policy says), then the
    adaptive stage starts again from its deployed weights and trains on the memory alone, every experience; the
    new data are not trained on beyond what the memory keeps of them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._deployed = copy.deepcopy(self.adaptive.state_dict())

    def _training_set(self, experience: Experience, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._keep(experience, z)  # before training: the memory is the training set
        self.adaptive.load_state_dict(self._deployed)
        return self.memory.read(np.arange(self.memory.size))

    def _replay_size(self) -> int:
        return 0  # the memory is the training set, not a replay share

    def _after_experience(self, experience: Experience, z: np.ndarray) -> int:
        return 0


class RawReplay(LatentReplay):
    """Raw-input replay: the memory stores inputs (8-bit codes: an image's own precision); every replayed
    input runs through the frozen stage again, as it would on the device."""

    def _stored(self, experience: Experience, z: np.ndarray) -> np.ndarray:
        return to_float(experience.x)

    def _replay_batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = super()._replay_batch(n)
        return self._rerun_frozen(x), y
