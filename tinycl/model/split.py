"""The boundary between the frozen stage and the adaptive stage, as an object.

`Split.at(spec, "conv3")` makes the output of layer `conv3` the latent: `conv3` is the last frozen layer,
every layer after it is adaptive (trained on the device). The name is checked once, here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from tinycl.errors import ModelError
from tinycl.model.spec import ModelSpec

__all__ = ["Split"]


@dataclass(frozen=True)
class Split:
    spec: ModelSpec
    index: int  # layers[:index] are frozen; the latent is the output of layers[index - 1] (or the input)

    @classmethod
    def at(cls, spec: ModelSpec, layer: str | None) -> Split:
        """Split after `layer` (its output is the latent). None or "input" means nothing is frozen."""
        if layer in (None, "input"):
            return cls(spec, 0)
        if layer not in spec.names:
            raise ModelError(f"unknown split layer {layer!r}; allowed: input, {', '.join(spec.names)}")
        split = cls(spec, spec.index(layer) + 1)
        if split.index == len(spec.layers):
            raise ModelError(f"split layer {layer!r} is the last layer: nothing would be left to train; "
                             f"allowed: input, {', '.join(spec.names[:-1])}")
        frozen = set(spec.names[: split.index])
        for ly in split.adaptive_spec.layers:
            crossing = [n for n in ly.inputs if n in frozen and n != split.layer]
            if crossing:
                raise ModelError(f"cannot split at {layer!r}: adaptive layer {ly.name!r} reads frozen "
                                 f"layer(s) {crossing}; choose a layer no skip connection crosses")
        return split

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


def _rename_inputs(layer, latent):
    # In the adaptive stage the latent is the stage's input, which layers name "input".
    return replace(layer, inputs=tuple("input" if n == latent else n for n in layer.inputs))
