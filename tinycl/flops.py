"""Floating-point operations of inference, training and distillation, counted from a ModelSpec.

Conventions (those of the training-kernel literature, e.g. PULP-TrainLib's three kernels per layer):
- forward of a conv2d / depthwise_conv2d / linear layer = 2 x its MACs (one multiply + one add each);
- backward = weight gradient (2 x MACs: the same products, reduced over the output positions) + input gradient
  (2 x MACs: the transposed op). The first trainable layer needs no input gradient (nothing below it trains).
- Bias additions, activations, pooling and the loss are not counted: they are element-wise, under 1% here.
Counts are per sample; a log multiplies them by the samples the learner actually processed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tinycl.model.spec import ModelSpec

__all__ = ["LayerMacs", "layer_macs", "inference_flops", "training_flops", "input_grad_flops", "distill_flops",
           "FlopsLog"]


@dataclass(frozen=True)
class LayerMacs:
    """Multiply-accumulates of one layer for one sample; params: its parameter count. The one per-layer count
    that FLOPs here and the device cost model (tinycl.cost) both read."""

    name: str
    forward: int
    weight_grad: int
    input_grad: int
    params: int


def layer_macs(spec: ModelSpec) -> list[LayerMacs]:
    """Per layer of `spec` (the trained part): forward, weight-gradient and input-gradient MACs for one sample.

    Weight and input gradients of conv, depthwise and linear layers cost what their forward pass costs; the
    first layer with weights has no input gradient (training never needs it). Layers without weights count
    their forward MACs as spec.macs gives them (0 for element-wise ops) and no gradients."""
    out, first = [], True
    for layer in spec.layers:
        fwd = spec.macs(layer)
        if not layer.has_weights:
            out.append(LayerMacs(layer.name, fwd, 0, 0, 0))
            continue
        out.append(LayerMacs(layer.name, fwd, fwd, 0 if first else fwd, spec.num_params(layer)))
        first = False
    return out


def inference_flops(spec: ModelSpec) -> int:
    """FLOPs of one forward pass for one sample."""
    return 2 * spec.macs()


def training_flops(spec: ModelSpec) -> int:
    """FLOPs of one training step's forward + backward for one sample (spec = the trained part)."""
    return 2 * sum(m.forward + m.weight_grad + m.input_grad for m in layer_macs(spec))


def input_grad_flops(spec: ModelSpec) -> int:
    """FLOPs of back-propagating to the input through every weighted layer (no weight gradients), one sample:
    what distillation needs to move a synthetic sample."""
    return 2 * spec.macs()


def distill_flops(embed: ModelSpec, n_real: int, n_syn: int, iterations: int) -> int:
    """Distribution matching of one class: per iteration the real batch and the synthetic set run forward
    through a random embedding net, and the synthetic set's gradient runs back to its inputs."""
    per_iter = n_real * inference_flops(embed) + n_syn * (inference_flops(embed) + input_grad_flops(embed))
    return int(iterations * per_iter)


@dataclass
class FlopsLog:
    """FLOPs a learner spent, per experience. `add` records the spec used and the samples processed; the
    total for a fixed model of another size (e.g. the final one) re-prices the same sample counts."""

    entries: list[dict] = field(default_factory=list)

    def add(self, experience: int, spec: ModelSpec, *, train_samples: int, frozen_flops: int = 0,
            distill: int = 0) -> dict:
        """train_samples: sample passes (forward + backward) through `spec`, the trained part.
        frozen_flops: forward FLOPs spent in the frozen stage. distill: distillation FLOPs."""
        entry = {"experience": experience, "train_samples": int(train_samples),
                 "train_flops": int(train_samples) * training_flops(spec), "frozen_flops": int(frozen_flops),
                 "distill_flops": int(distill), "inference_flops": inference_flops(spec),
                 "params": spec.num_params()}
        entry["total_flops"] = entry["train_flops"] + entry["frozen_flops"] + entry["distill_flops"]
        self.entries.append(entry)
        return entry

    def summary(self, fixed: ModelSpec | None = None) -> dict:
        """Totals; with `fixed`, also the training FLOPs a model of that spec would have spent on the same
        sample passes (frozen and distillation FLOPs unchanged: they do not depend on the trained part)."""
        out = {"per_experience": [dict(e) for e in self.entries]}
        for key in ("train_flops", "frozen_flops", "distill_flops", "total_flops"):
            out[key] = int(sum(e[key] for e in self.entries))
        out["final_inference_flops"] = self.entries[-1]["inference_flops"] if self.entries else 0
        if fixed is not None:
            train = sum(e["train_samples"] for e in self.entries) * training_flops(fixed)
            out["fixed_model"] = {"train_flops": int(train), "inference_flops": inference_flops(fixed),
                                  "total_flops": int(train + out["frozen_flops"] + out["distill_flops"]),
                                  "params": fixed.num_params()}
            out["train_flops_ratio_to_fixed"] = out["train_flops"] / train if train else float("nan")
        return out
