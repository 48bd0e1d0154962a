"""The float adaptive stage of an integer model cut at a layer: what trains on the device.

`adaptive_stage(qmodel, "Conv2d_11_pointwise", n_classes=10, generator=g)` returns (spec, weights) such that
`tinycl.model.build(spec, weights)` is a trainable fp32 torch module taking the frozen stage's float latents:
the layers above the split with dequantized weights (scale * (q - zero_point)), a new head for `n_classes`
in place of the model's classifier, and no softmax (learners train on logits).

`insert_batch_renorm(spec, weights, latents)` puts a batch renormalization layer after each trainable conv of an
adaptive stage (TFLite files fold batch norm into the convs) that computes exactly the same function at first:
its statistics come from the latents given (the first experience's), its affine parameters undo them.

Which layer is the classifier: the last layer with weights when only shape ops (reshape, flatten) and softmax
follow it; it is replaced by a layer of the same kind with `n_classes` outputs. If the part above the split
has no such layer (a backbone without classifier, e.g. the embedding extractor, or a split above the
classifier), a linear head is appended. New parameters are drawn from `generator` (torch's default init).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from tinycl.errors import ConfigError, ModelError
from tinycl.model.build import build, get_weights, set_weights
from tinycl.model.ops import BRN_EPS
from tinycl.model.quantized import QuantizedModel
from tinycl.model.spec import Layer, ModelSpec
from tinycl.model.split import Split

__all__ = ["adaptive_stage", "insert_batch_renorm"]

_SHAPE_OPS = ("reshape", "flatten")


def adaptive_stage(qmodel: QuantizedModel, split_layer: str | int | None, n_classes: int,
                   generator: torch.Generator | None = None, head_bias: bool = True
                   ) -> tuple[ModelSpec, dict[str, dict[str, np.ndarray]]]:
    """(float spec, float32 weights) of the layers above `split_layer` with a new `n_classes` head.

    split_layer: the last frozen layer (its output is the latent; a name or an index), or None / "input" to train
    everything."""
    if n_classes < 1:
        raise ConfigError(f"n_classes must be at least 1, got {n_classes}")
    spec = qmodel.spec
    upper = Split.at(spec, split_layer).adaptive_spec
    layers = [replace(ly, quant=None) for ly in upper.layers]
    for ly in layers:
        if ly.op == "quantize" and any(ly.name in other.inputs for other in layers):
            raise ModelError(f"cannot make layer {ly.name!r} (a requantization) float: other layers read it")
    layers = [ly for ly in layers if ly.op != "quantize"]  # requantization is the identity in float
    while layers and layers[-1].op == "softmax":
        layers.pop()

    keep = {ly.name for ly in layers}
    head = _classifier_index(layers)
    if head is not None:  # a classifier gives one value per class: no spatial extent left
        c = layers[head].channels if layers[head].op != "depthwise_conv2d" else 0
        if c == 0 or np.prod(upper.output_shape(layers[head].name)) != c:
            head = None
    if head is None:
        name = _unique("head", keep)
        layers.append(Layer(name, "linear", channels=n_classes, bias=head_bias))
        new = {name}
    else:
        old = layers[head]
        layers[head] = replace(old, channels=n_classes, bias=head_bias, activation="none")
        # shape ops after the head now carry n_classes values: flatten them
        layers[head + 1:] = [Layer(ly.name, "flatten", inputs=ly.inputs) for ly in layers[head + 1:]]
        new = {old.name}
    adaptive = upper.with_layers(layers, input_shape=upper.input_shape, input_quant=None,
                                 name=f"{spec.name}[adaptive:{n_classes}]")

    weights = get_weights(build(adaptive, generator=generator))
    dequantized = qmodel.dequantized_weights()
    for ly in adaptive.layers:
        if ly.name in dequantized and ly.name not in new:
            weights[ly.name] = {k: v for k, v in dequantized[ly.name].items() if k in weights[ly.name]}
    return adaptive, weights


def _classifier_index(layers: list[Layer]) -> int | None:
    for i in range(len(layers) - 1, -1, -1):
        if layers[i].has_weights:
            return i
        if layers[i].op not in _SHAPE_OPS:
            return None
    return None


def _unique(base: str, taken: set[str]) -> str:
    name, k = base, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


def insert_batch_renorm(spec: ModelSpec, weights: dict[str, dict[str, np.ndarray]], latents: np.ndarray,
                        batch_size: int = 256) -> tuple[ModelSpec, dict[str, dict[str, np.ndarray]]]:
    """(spec, weights) with a batch_renorm layer after every conv2d / depthwise_conv2d except the classifier; the
    conv's fused activation moves behind it. latents (N, *spec.input_shape) float32: the data its statistics
    are taken from. In eval mode the new stage computes the old one's function: running mean/var = the conv's
    output mean and (biased) variance per channel, gamma = sqrt(var + eps), beta = mean."""
    head = _classifier_index(list(spec.layers))
    layers, renamed = [], {}
    for i, ly in enumerate(spec.layers):
        ly = replace(ly, inputs=tuple(renamed.get(n, n) for n in ly.inputs))
        if ly.op not in ("conv2d", "depthwise_conv2d") or i == head:
            layers.append(ly)
            continue
        name = _unique(f"{ly.name}/brn", set(spec.names) | {x.name for x in layers})
        layers += [replace(ly, activation="none"), Layer(name, "batch_renorm", activation=ly.activation)]
        renamed[ly.name] = name
    new = spec.with_layers(layers, input_quant=spec.input_quant)
    module = build(new, {**weights, **{n: _identity(new, n) for n in renamed.values()}}).eval()
    sums = {n: np.zeros((3, new.output_shape(n)[0])) for n in renamed.values()}

    def step(layer: Layer, ins: list[torch.Tensor]) -> torch.Tensor:
        if layer.name in sums:  # per-channel count, sum and sum of squares of the conv's output
            x = ins[0].double().transpose(0, 1).reshape(ins[0].shape[1], -1)
            sums[layer.name] += np.stack([np.full(len(x), x.shape[1]), x.sum(1).numpy(), (x * x).sum(1).numpy()])
        return module.run_layer(layer, ins)

    with torch.no_grad():
        for start in range(0, len(latents), batch_size):
            new.walk(step, torch.as_tensor(np.asarray(latents[start: start + batch_size], np.float32)))
    set_weights(module, {n: _undoing(*s) for n, s in sums.items()})
    return new, get_weights(module)


def _identity(spec: ModelSpec, name: str) -> dict[str, np.ndarray]:
    c = spec.output_shape(name)[0]
    ones, zeros = np.ones(c, np.float32), np.zeros(c, np.float32)
    return {"weight": ones, "bias": zeros, "running_mean": zeros, "running_var": ones - np.float32(BRN_EPS)}


def _undoing(count: np.ndarray, total: np.ndarray, squares: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics of one channel set and the affine parameters that undo them (float64 sums in, float32 out)."""
    mean = total / np.maximum(count, 1)
    var = np.maximum(squares / np.maximum(count, 1) - mean * mean, 0.0)
    return {"weight": np.sqrt(var + BRN_EPS).astype(np.float32), "bias": mean.astype(np.float32),
            "running_mean": mean.astype(np.float32), "running_var": var.astype(np.float32)}
