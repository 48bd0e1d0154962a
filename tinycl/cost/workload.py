"""What an on-device latent-replay learner computes and stores, counted from the layer records (no device).

`Workload` is the learner's configuration; `layer_macs` counts training MACs per layer and sample, and
`buffers` counts the bytes of every buffer the device holds. A target (cost.targets) turns these counts into
placement, time and energy (cost.model).

Training one sample through the adaptive stage costs, per layer with weights: the forward MACs, the same
again for the weight gradient, and the same again for the input gradient, which the first trainable layer
skips (nothing below it is trained). The frozen stage runs once per new sample in int8: its latents are cached
for later epochs and replayed from memory, never recomputed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tinycl.errors import ConfigError, ModelError
from tinycl.model.spec import ModelSpec
from tinycl.model.split import Split
from tinycl.quant.packing import packed_nbytes

__all__ = ["Workload", "LayerMacs", "layer_macs", "buffers", "replay_nbytes", "frozen_nbytes",
           "activation_nbytes", "frozen_scratch_nbytes", "paper_workload",
           "from_config", "planned_arena_bytes"]

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
    frozen stage) or 32. granularity: replay quantizer scales per "tensor" or per "channel". n_classes: label
    range (labels take 1 byte up to 256 classes, else 2).
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
    n_classes: int = 10

    def __post_init__(self):
        if self.capacity < 0 or self.batch_size < 1 or self.samples_per_experience < 1 or self.epochs < 1:
            raise ConfigError("capacity must be >= 0; batch_size, samples_per_experience and epochs >= 1")
        if self.bits not in (32, *range(1, 9)):
            raise ConfigError(f"replay bits must be 32 or 1..8, got {self.bits}")
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
        if not self.split.adaptive_spec.num_params():
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


@dataclass(frozen=True)
class LayerMacs:
    """MACs of one adaptive layer for one sample (fp32). params: its parameter count."""

    name: str
    forward: int
    weight_grad: int
    input_grad: int
    params: int


def layer_macs(adaptive: ModelSpec) -> list[LayerMacs]:
    """Per layer of the adaptive stage: forward, weight-gradient and input-gradient MACs for one sample.

    Weight and input gradients of conv, depthwise and linear layers cost what the forward pass costs; the
    first layer with weights has no input gradient. Layers without weights (pooling, activations) count 0."""
    out, first = [], True
    for layer in adaptive.layers:
        fwd = adaptive.macs(layer)
        if layer.has_weights:
            out.append(LayerMacs(layer.name, fwd, fwd, 0 if first else fwd, adaptive.num_params(layer)))
            first = False
        else:
            out.append(LayerMacs(layer.name, fwd, 0, 0, 0))
    return out


def replay_nbytes(capacity: int, latent_shape: tuple[int, ...], bits: int, granularity: str = "tensor",
                  n_classes: int = 10) -> int:
    """Bytes of a replay memory (as tinycl.memory.ReplayMemory.nbytes): ceil(N * D * Q / 8) packed codes,
    one float32 scale + uint8 zero point per tensor or channel (none at 32 bits), one label per slot."""
    if capacity == 0:
        return 0
    d = math.prod(latent_shape)
    codes = capacity * d * FP32 if bits == 32 else packed_nbytes(capacity * d, bits)
    qparams = 0 if bits == 32 else (latent_shape[0] if granularity == "channel" else 1) * (4 + 1)
    return codes + qparams + capacity * (1 if n_classes <= 256 else 2)


def frozen_nbytes(frozen: ModelSpec, bits: int = 8) -> int:
    """Bytes of the frozen stage's parameters (as tinycl.quant.ptq.QuantizedModel.nbytes): int8 weights, int32
    biases and a float32 scale + int32 zero point per output channel; or fp32 everything at 32 bits."""
    total = 0
    for layer in frozen.layers:
        shapes = frozen.weight_shapes(layer)
        if not shapes:
            continue
        if bits == 32:
            total += sum(math.prod(s) for s in shapes.values()) * FP32
            continue
        total += math.prod(shapes["weight"]) + 8 * shapes["weight"][0]
        total += math.prod(shapes["bias"]) * 4 if "bias" in shapes else 0
    return total


def activation_nbytes(adaptive: ModelSpec, micro_batch: int) -> int:
    """fp32 activations one training pass keeps for its backward pass: the stage input and every layer's
    output, at `micro_batch` samples. A stand-in until the device arena planner gives the exact size; it
    leaves out gradient buffers and in-place reuse, so the real arena can be smaller or larger."""
    kept = math.prod(adaptive.input_shape) + sum(math.prod(adaptive.output_shape(n)) for n in adaptive.names)
    return micro_batch * kept * FP32


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
    samples of a pass, so does the plan). None if the planner is not installed or cannot run the stage."""
    try:
        from tinycl.device.arena import plan_arena, training_schedule
    except ImportError:
        return None
    try:
        schedule = training_schedule(w.split.adaptive_spec, momentum=w.momentum)
    except ModelError:  # an op the device runtime does not train: fall back to the estimate
        return None
    return plan_arena(schedule, kinds=("input", "activation", "gradient")).size * w.micro_batch


def buffers(w: Workload, arena_bytes: int | None = None) -> dict[str, int]:
    """Bytes of every device buffer, by kind (cost.targets.BUFFER_KINDS).

    arena_bytes: the training arena if known (planned_arena_bytes, or measured); otherwise the kept-activation
    estimate of `activation_nbytes` is used. Training and frozen inference share the arena (they never run
    at the same time), so it is the larger of the two."""
    adaptive, frozen = w.split.adaptive_spec, w.split.frozen_spec
    params = adaptive.num_params() * FP32
    train = arena_bytes if arena_bytes is not None else activation_nbytes(adaptive, w.micro_batch)
    latent = math.prod(w.split.latent_shape) * (1 if w.frozen_bits == 8 else FP32)
    cached = w.samples_per_experience if w.epochs > 1 else w.new_per_batch
    return {
        "activations": max(train, frozen_scratch_nbytes(frozen, w.frozen_bits) if frozen.layers else 0),
        "adaptive_weights": params,
        "gradients": params,
        "momentum": params if w.momentum else 0,
        "latent_cache": cached * latent if frozen.layers else 0,
        "replay": replay_nbytes(w.capacity, w.split.latent_shape, w.bits, w.granularity, w.n_classes),
        "frozen_weights": frozen_nbytes(frozen, w.frozen_bits),
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


def from_config(cfg, samples_per_experience: int | None = None, micro_batch: int | None = None,
                epochs: int | None = None) -> Workload:
    """The workload of a run config (tinycl.config.RunConfig): model, split, memory and training settings.

    The data set gives the input shape and class count; samples per experience come from the protocol
    (nic: data.batch_size; class_incremental: the mean training samples per class x classes_per_experience)
    unless given."""
    from tinycl.data.registry import load_dataset
    from tinycl.model.zoo import get_model

    if cfg.strategy not in ("latent_replay", "naive"):
        raise ConfigError(f"the cost model covers strategy latent_replay and naive, not {cfg.strategy!r}")
    ds = load_dataset(cfg.data.name, cfg.data.root)
    if samples_per_experience is None:
        if cfg.data.protocol == "nic":
            samples_per_experience = cfg.data.batch_size
        elif cfg.data.protocol == "class_incremental":
            n_train = cfg.data.n_train or len(ds.y_train)
            samples_per_experience = round(n_train / ds.n_classes * cfg.data.classes_per_experience)
        else:
            raise ConfigError(f"protocol {cfg.data.protocol!r}: give the new samples per experience "
                              f"(--samples-per-experience)")
    split = Split.at(get_model(cfg.model.arch, ds.sample_shape, ds.n_classes), cfg.model.split)
    capacity = cfg.memory.capacity if cfg.strategy == "latent_replay" else 0
    new, _ = cfg.train.mix(samples_per_experience, capacity)
    return Workload(split, capacity=capacity, bits=cfg.memory.bits, batch_size=cfg.train.batch_size,
                    samples_per_experience=samples_per_experience, new_per_batch=new,
                    epochs=epochs or cfg.train.epochs, momentum=cfg.train.momentum > 0, micro_batch=micro_batch,
                    frozen_bits=8 if cfg.model.frozen == "int8" else 32, granularity=cfg.memory.granularity,
                    n_classes=ds.n_classes)
