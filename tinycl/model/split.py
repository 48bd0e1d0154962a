"""The boundary between the frozen stage and the adaptive stage, as an object: the one place a model is cut.

`Split.at(spec, "conv3")` makes the output of layer `conv3` the latent: `conv3` is the last frozen layer,
every layer after it is adaptive (trained on the device). The layer may be given by name, by its index in
`tinycl inspect`'s table (an integer; a string is always a name), or as None / "input" (nothing frozen); the last layer
is allowed too (the adaptive stage is then empty, and an imported model gets a new head above it). The cut is
checked once, here: it is valid only where the latent is the one tensor that crosses it (`valid_points`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from tinycl.errors import ModelError
from tinycl.model.quantized import QuantizedModel
from tinycl.model.spec import ModelSpec

__all__ = ["Split", "crossing", "valid_points"]


def crossing(spec: ModelSpec, index: int) -> list[str]:
    """Names of the tensors (layer outputs, or "input") that cross a cut after layers[:index], other than the
    latent itself: what an adaptive layer would read from the frozen side."""
    latent = spec.layers[index - 1].name if index else "input"
    frozen = {"input", *spec.names[:index]}
    out = []
    for layer in spec.layers[index:]:
        out += [n for n in spec.sources(layer) if n in frozen and n != latent and n not in out]
    return out


def valid_points(spec: ModelSpec) -> list[int]:
    """Indices i such that a cut after layer i is valid (only its output crosses)."""
    return [i for i in range(len(spec.layers)) if not crossing(spec, i + 1)]


def _index(spec: ModelSpec, layer: str | int | None) -> int:
    """Number of frozen layers for a split given by name, index or None/"input"."""
    if layer is None or layer == "input":
        return 0
    if isinstance(layer, bool) or not isinstance(layer, int | str):
        raise ModelError(f"split layer must be a layer name or an index, got {layer!r}")
    if isinstance(layer, str) and layer not in spec.names:
        if layer.strip().isdigit():  # a TOML string names a layer: an index is an integer (split = 19)
            raise ModelError(f"split layer {layer!r} names no layer; an index is written without quotes "
                             f"(split = {layer.strip()}); allowed: input, 0..{len(spec.layers) - 1}, or a name")
        raise ModelError(f"unknown split layer {layer!r}; allowed: input, a layer index 0.."
                         f"{len(spec.layers) - 1}, or a name: {', '.join(spec.names)}")
    if isinstance(layer, int):
        if not 0 <= layer < len(spec.layers):
            raise ModelError(f"split index {layer} is out of range; allowed: 0..{len(spec.layers) - 1}")
        return layer + 1
    return spec.index(layer) + 1


@dataclass(frozen=True)
class Split:
    spec: ModelSpec
    index: int  # layers[:index] are frozen; the latent is the output of layers[index - 1] (or the input)

    @classmethod
    def at(cls, spec: ModelSpec, layer: str | int | None) -> Split:
        """Split after `layer` (its output is the latent): a name, an index, or None / "input"."""
        index = _index(spec, layer)
        if cross := crossing(spec, index):
            points = valid_points(spec)
            near = sorted(points, key=lambda i: abs(i - (index - 1)))[:3]
            raise ModelError(f"cannot split after layer {index - 1} ({spec.names[index - 1]!r}): besides the "
                             f"latent, {', '.join(map(repr, cross))} cross(es) the cut (a skip connection); nearest "
                             f"valid split points: {', '.join(f'{i} ({spec.names[i]})' for i in sorted(near))}")
        return cls(spec, index)

    @property
    def layer(self) -> str:
        """Name of the latent layer (the last frozen layer), or "input"."""
        return self.spec.layers[self.index - 1].name if self.index else "input"

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return self.spec.output_shape(self.layer) if self.index else tuple(self.spec.input_shape)

    @property
    def frozen_spec(self) -> ModelSpec:
        return self.spec.with_layers(self.spec.layers[: self.index], input_quant=self.spec.input_quant,
                                     name=f"{self.spec.name}[frozen]")

    @property
    def adaptive_spec(self) -> ModelSpec:
        latent = self.layer
        layers = [ly if latent not in ly.inputs else _rename_inputs(ly, latent)
                  for ly in self.spec.layers[self.index:]]
        return self.spec.with_layers(layers, input_shape=self.latent_shape, name=f"{self.spec.name}[adaptive]")

    def split_weights(self, weights: dict[str, dict[str, np.ndarray]]):
        """(frozen weights, adaptive weights) of a whole-model weight dict."""
        frozen = set(self.spec.names[: self.index])
        return ({k: v for k, v in weights.items() if k in frozen},
                {k: v for k, v in weights.items() if k not in frozen})

    def frozen_model(self, qmodel: QuantizedModel) -> QuantizedModel:
        """The frozen part of an integer model of this split's spec: its layers and integer weights."""
        if qmodel.spec.names != self.spec.names:
            raise ModelError(f"model {qmodel.spec.name!r} is not the model this split cuts ({self.spec.name!r})")
        return QuantizedModel(self.frozen_spec, self.split_weights(qmodel.weights)[0])


def _rename_inputs(layer, latent):
    # In the adaptive stage the latent is the stage's input, which layers name "input".
    return replace(layer, inputs=tuple("input" if n == latent else n for n in layer.inputs))
