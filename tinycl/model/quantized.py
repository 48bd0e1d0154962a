"""An integer model: the layer records with their quantization, and the integer parameters.

Both the TFLite importer (`tinycl.model.tflite`) and post-training quantization (`tinycl.quant.ptq`) produce
this form, and the integer executor (`tinycl.quant.intexec`), the C int8 path and the exporter read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tinycl.model.spec import ModelSpec, TensorQuant

__all__ = ["QuantizedModel"]


@dataclass(frozen=True)
class QuantizedModel:
    """An integer model: `spec` with `quant` on every layer and `input_quant`, and integer parameters
    {layer: {"weight": int8 or uint8 array, "bias": int32 array}}."""

    spec: ModelSpec
    weights: dict

    def dequantized_weights(self) -> dict[str, dict[str, np.ndarray]]:
        """Float32 weights equal to scale * (q - zero_point), for running the model in float."""
        out = {}
        for layer in self.spec.layers:
            if layer.name not in self.weights:
                continue
            wq = layer.quant.weight
            w = self.weights[layer.name]["weight"].astype(np.float32)
            shape = (-1,) + (1,) * (w.ndim - 1)
            w_scale = np.asarray(wq.scale, np.float32).reshape(shape)
            w_zero = np.asarray(wq.zero_point, np.float32).reshape(shape)
            out[layer.name] = {"weight": (w - w_zero) * w_scale}
            if "bias" in self.weights[layer.name]:
                in_scale = self.input_quant_of(layer.name).scale[0]
                out[layer.name]["bias"] = (self.weights[layer.name]["bias"].astype(np.float64)
                                           * in_scale * np.asarray(wq.scale)).astype(np.float32)
        return out

    def input_quant_of(self, name: str) -> TensorQuant:
        """Quantization of the (first) tensor layer `name` reads."""
        source = self.spec.sources(self.spec.layers[self.spec.index(name)])[0]
        return self.spec.input_quant if source == "input" else self.spec.layers[self.spec.index(source)].quant.output

    @property
    def nbytes(self) -> int:
        """Bytes of integer parameters plus their per-channel scales (float32) and zero points (int32)."""
        total = sum(a.nbytes for arrays in self.weights.values() for a in arrays.values())
        for layer in self.spec.layers:
            if layer.quant is not None and layer.quant.weight is not None:
                total += 8 * len(layer.quant.weight.scale)
        return total

    @classmethod
    def nbytes_for(cls, spec: ModelSpec) -> int:
        """What `nbytes` of a quantized model of `spec` is, without its weights: 1 byte per weight (int8 or
        uint8), 4 per bias (int32), 8 per weight scale (float32 scale + int32 zero point). The scales are the
        layers' own `quant` records where present, else one per output channel (as quant.ptq quantizes)."""
        total = 0
        for layer in spec.layers:
            shapes = spec.weight_shapes(layer)
            if not shapes:
                continue
            wq = layer.quant.weight if layer.quant is not None else None
            scales = len(wq.scale) if wq is not None else shapes["weight"][0]
            total += math.prod(shapes["weight"]) + 4 * math.prod(shapes.get("bias", (0,))) + 8 * scales
        return total
