"""The float adaptive stage of an integer model cut at a layer: what trains on the device.

`adaptive_stage(qmodel, "Conv2d_11_pointwise", n_classes=10, generator=g)` returns (spec, weights) such that
`tinycl.model.build(spec, weights)` is a trainable fp32 torch module taking the frozen stage's float latents:
the layers above the split with dequantized weights (scale * (q - zero_point)), a new head for `n_classes`
in place of the model's classifier, and no softmax (learners train on logits).

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
from tinycl.model.build import build, get_weights
from tinycl.model.quantized import QuantizedModel
from tinycl.model.spec import Layer, ModelSpec
from tinycl.model.split import Split

__all__ = ["adaptive_stage"]

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
