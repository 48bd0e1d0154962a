"""What an on-device latent-replay learner computes and stores (no device).

`Workload` is the learner's configuration; `buffers` gives the bytes of every buffer the device holds, each
from the code that allocates that buffer (`ReplayMemory.bytes_for`, `QuantizedModel.nbytes_for`, the arena
planner of tinycl.device.arena); per-layer MACs come from tinycl.flops.layer_macs. A target (cost.targets)
turns these counts into placement, time and energy (cost.model). `from_config` builds the learner
`tinycl run` builds (tinycl.runner.prepare, the strategy registry) and reads its workload off that learner.

Training one sample through the adaptive stage costs, per layer with weights: the forward MACs, the same
again for the weight gradient, and the same again for the input gradient, which the first trainable layer
skips (nothing below it is trained). The frozen stage runs once per new sample in int8: its latents are cached
for later epochs and replayed from memory, never recomputed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tinycl.device.arena import activation_nbytes
from tinycl.errors import ConfigError, ModelError
from tinycl.memory import ReplayMemory, check_bits
from tinycl.model.quantized import QuantizedModel
from tinycl.model.spec import ModelSpec
from tinycl.model.split import Split

__all__ = ["Workload", "buffers", "requant_nbytes", "frozen_scratch_nbytes", "planned_arena_bytes",
           "MEMORY_REPORT_KEYS", "paper_workload", "build_learner", "from_config", "workload_of"]

FP32 = 4


@dataclass(frozen=True)
class Workload:
    """A latent-replay learner on a device.

    split: the model and its frozen/adaptive boundary. capacity: N latents in the replay memory (0: no
    replay). bits: Q per stored value (32 = fp32). batch_size: samples per mini-batch (new + replayed).
    samples_per_experience: new samples an experience brings. new_per_batch: new samples per mini-batch
    (None: the learner's rule, TrainConfig.mix: Pellegrini et al.'s 21 new + 107 replayed for 300 new
    samples, N = 1500, B = 128). epochs: passes over an experience's new samples. momentum: SGD keeps a
    momentum buffer. micro_batch: samples per forward/backward pass, gradients accumulated over the mini-batch
    (None: the whole mini-batch at once; 1: PULP-TrainLib's batch-size-1 kernels). frozen_bits: 8 (int8
    frozen stage) or 32. granularity: replay quantizer scales per "tensor" or per "channel"; code: "uniform" or
    "lloyd" (ReplayMemory's). n_classes: label
    range (labels take 1 byte up to 256 classes, else 2). adaptive_spec: what trains on the device (None:
    split.adaptive_spec; an imported model's adaptive stage has a new head for the data set's classes).
    """

    split: Split
    capacity: int
    bits: int
    batch_size: int
    samples_per_experience: int
    new_per_batch: int | None = None
    epochs: int = 1
    momentum: bool = True
    micro_batch: int | None = None
    frozen_bits: int = 8
    granularity: str = "tensor"
    code: str = "uniform"
    n_classes: int = 10
    adaptive_spec: ModelSpec | None = None

    def __post_init__(self):
        if self.capacity < 0 or self.batch_size < 1 or self.samples_per_experience < 1 or self.epochs < 1:
            raise ConfigError("capacity must be >= 0; batch_size, samples_per_experience and epochs >= 1")
        check_bits(self.bits, "replay bits")
        if self.frozen_bits not in (8, 32):
            raise ConfigError(f"frozen_bits must be 8 (int8) or 32 (fp32), got {self.frozen_bits}")
        if self.granularity not in ("tensor", "channel"):
            raise ConfigError(f"granularity {self.granularity!r}; allowed: tensor, channel")
        if self.new_per_batch is None:
            from tinycl.learners.base import TrainConfig  # the learner's own rule, not a copy of it

            new, _ = TrainConfig(batch_size=self.batch_size).mix(self.samples_per_experience, self.capacity)
            object.__setattr__(self, "new_per_batch", new)
        if not 1 <= self.new_per_batch <= self.batch_size:
            raise ConfigError(f"new_per_batch must be in 1..{self.batch_size}, got {self.new_per_batch}")
        if self.capacity == 0 and self.new_per_batch != self.batch_size:
            raise ConfigError("without a replay memory (capacity 0) every sample of a mini-batch is new")
        if self.micro_batch is None:
            object.__setattr__(self, "micro_batch", self.batch_size)
        if not 1 <= self.micro_batch <= self.batch_size:
            raise ConfigError(f"micro_batch must be in 1..{self.batch_size}, got {self.micro_batch}")
        if self.adaptive_spec is None:
            object.__setattr__(self, "adaptive_spec", self.split.adaptive_spec)
        if not self.adaptive_spec.num_params():
            raise ConfigError(f"nothing to train after split layer {self.split.layer!r}")

    @property
    def replayed_per_batch(self) -> int:
        return self.batch_size - self.new_per_batch

    @property
    def steps_per_experience(self) -> int:
        """Mini-batches per experience: every epoch walks the new samples `new_per_batch` at a time."""
        return self.epochs * math.ceil(self.samples_per_experience / self.new_per_batch)

    @property
    def passes_per_batch(self) -> int:
        """Forward/backward passes per mini-batch (weights are read once per pass)."""
        return math.ceil(self.batch_size / self.micro_batch)


def frozen_scratch_nbytes(frozen: ModelSpec, bits: int = 8) -> int:
    """Peak bytes of one frozen-stage inference (one sample): the largest input + output pair of a layer."""
    per = 1 if bits == 8 else FP32
    peak, prev = math.prod(frozen.input_shape) * per, math.prod(frozen.input_shape) * per
    for name in frozen.names:
        out = math.prod(frozen.output_shape(name)) * per
        peak, prev = max(peak, prev + out), out
    return peak


def planned_arena_bytes(w: Workload) -> int | None:
    """The training arena the device planner (tinycl.device.arena) lays out for one pass: the stage input,
    activations and activation gradients of one sample, times `micro_batch` (every tensor scales with the
    samples of a pass, so does the plan). None if the planner cannot run the stage."""
    from tinycl.device.arena import plan_arena, training_schedule

    try:
        schedule = training_schedule(w.adaptive_spec, momentum=w.momentum)
    except ModelError:  # an op the device runtime does not train: fall back to the estimate
        return None
    return plan_arena(schedule, kinds=("input", "activation", "gradient")).size * w.micro_batch


# buffers() key -> Learner.memory_report() key of the same bytes (tests/test_cost.py checks they are equal)
MEMORY_REPORT_KEYS = {"frozen_weights": "frozen_weights", "adaptive_weights": "adaptive_weights",
                      "gradients": "gradients", "momentum": "optimizer_state", "replay": "replay_memory"}


def requant_nbytes(frozen: ModelSpec) -> int:
    """Bytes the C runtime's int8 requantization records (tinycl.device.int8.requant_fields, as `tinycl export`
    writes them) take beyond the 8 bytes per weight scale `QuantizedModel.nbytes_for` counts: an int32 multiplier
    and shift per output channel (a per-tensor scale is expanded) and, when non-zero in the runtime's int8 domain,
    an int32 weight zero point per channel (uint8 models)."""
    from tinycl.device.int8 import code_offset

    total = 0
    for layer in frozen.layers:
        shapes = frozen.weight_shapes(layer)
        if not shapes:
            continue
        channels, wq = shapes["weight"][0], layer.quant.weight if layer.quant is not None else None
        scales = len(wq.scale) if wq is not None else channels
        w_zero = wq is not None and any(z != code_offset(wq) for z in wq.zero_point)
        total += (12 if w_zero else 8) * channels - 8 * scales
    return total


def buffers(w: Workload, arena_bytes: int | None = None, code_nbytes: int = 0) -> dict[str, int]:
    """Bytes of every device buffer, by kind (cost.targets.BUFFER_KINDS), each from the code that allocates it.

    arena_bytes: the training arena if known (planned_arena_bytes, or measured); otherwise the kept-activation
    estimate of `activation_nbytes` is used. Training and frozen inference share the arena (they never run
    at the same time), so it is the larger of the two. code_nbytes: the runtime's code (Target.code_nbytes);
    the read-only kinds (cost.targets.FLASH_KINDS) are what the device's flash holds."""
    adaptive, frozen = w.adaptive_spec, w.split.frozen_spec
    params = adaptive.num_params() * FP32  # fp32 torch parameters, as memory_report counts them
    train = arena_bytes if arena_bytes is not None else activation_nbytes(adaptive, w.micro_batch)
    latent = math.prod(w.split.latent_shape) * (1 if w.frozen_bits == 8 else FP32)
    cached = w.samples_per_experience if w.epochs > 1 else w.new_per_batch
    replay = ReplayMemory.bytes_for(w.capacity, w.split.latent_shape, w.bits, granularity=w.granularity,
                                    code=w.code, n_classes=w.n_classes) if w.capacity else 0
    return {
        "activations": max(train, frozen_scratch_nbytes(frozen, w.frozen_bits) if frozen.layers else 0),
        "adaptive_weights": params,
        "gradients": params,
        "momentum": params if w.momentum else 0,
        "latent_cache": cached * latent if frozen.layers else 0,
        "replay": replay,
        "frozen_weights": QuantizedModel.nbytes_for(frozen) if w.frozen_bits == 8 else frozen.num_params() * FP32,
        "requant": requant_nbytes(frozen) if w.frozen_bits == 8 else 0,
        "initial_weights": params,
        "code": code_nbytes,
    }


def paper_workload(epochs: int = 4) -> Workload:
    """The device setting of Ravaglia et al. 2021 as DESIGN.md records it: MobileNet-V1 1.0 at 128x128 with a
    50-way bias-free head, split after conv5_4/dw (latent 512x8x8), N = 1500 latents at 8 bit, mini-batches of
    128 = 21 new + 107 replayed out of 300 new samples per CORe50 batch, `epochs` passes (4 in the public
    setting), plain SGD and batch-size-1 kernels (PULP-TrainLib)."""
    from tinycl.model.mobilenet import mobilenet_v1

    split = Split.at(mobilenet_v1((3, 128, 128), n_classes=50), "conv5_4/dw")
    return Workload(split, capacity=1500, bits=8, batch_size=128, samples_per_experience=300, epochs=epochs,
                    momentum=False, micro_batch=1, n_classes=50)


def build_learner(cfg):
    """(setup, learner) exactly as `tinycl run` builds them, without pre-deployment training: the same shapes
    and bytes, random weights (cost does not depend on their values)."""
    from tinycl.runner import prepare
    from tinycl.strategies import make_learner

    setup = prepare(cfg, pretrain=False)
    return setup, make_learner(cfg, setup)


def _new_per_experience(scenario) -> int:
    """Mean new samples of the experiences after the first (the first is the pre-deployment data)."""
    sizes = [len(e.y) for e in scenario.train[1:]] or [len(scenario.train[0].y)]
    return max(1, round(sum(sizes) / len(sizes)))


def from_config(cfg, samples_per_experience: int | None = None, micro_batch: int | None = None,
                epochs: int | None = None) -> Workload:
    """The workload of a run config (tinycl.config.RunConfig): that of the learner `tinycl run` builds."""
    setup, learner = build_learner(cfg)
    return workload_of(cfg, setup, learner, samples_per_experience, micro_batch, epochs)


def workload_of(cfg, setup, learner, samples_per_experience: int | None = None, micro_batch: int | None = None,
                epochs: int | None = None) -> Workload:
    """The workload read off a built learner: its split, adaptive stage, replay memory and training settings.
    Samples per experience: the scenario's mean after experience 0, unless given."""
    memory = getattr(learner, "memory", None)
    if learner.replay_nbytes and (memory is None or memory.sample_shape != tuple(setup.split.latent_shape)):
        raise ConfigError(f"the cost model covers learners that replay latents from a ReplayMemory "
                          f"(latent_replay) or nothing (naive); strategy {cfg.strategy!r} stores something else")
    train = learner.train_cfg
    spe = samples_per_experience or _new_per_experience(setup.scenario)
    capacity = memory.capacity if memory is not None else 0
    return Workload(setup.split, capacity=capacity, bits=memory.bits if memory is not None else 32,
                    batch_size=train.batch_size, samples_per_experience=spe,
                    new_per_batch=train.mix(spe, capacity)[0], epochs=epochs or train.epochs,
                    momentum=train.momentum > 0, micro_batch=micro_batch,
                    frozen_bits=8 if cfg.model.frozen == "int8" else 32,
                    granularity=memory.granularity if memory is not None else "tensor",
                    code=memory.code if memory is not None else "uniform",
                    n_classes=setup.scenario.n_classes, adaptive_spec=learner.adaptive.spec)
