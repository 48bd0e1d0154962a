"""Build a torch module from a ModelSpec, and move weights between the two as NumPy arrays."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tinycl.errors import ModelError
from tinycl.model.ops import OPS
from tinycl.model.spec import Layer, ModelSpec

__all__ = ["SpecModule", "build", "get_weights", "set_weights"]


class SpecModule(nn.Module):
    """A torch module that runs the layers of a ModelSpec in order (batch first, CHW)."""

    def __init__(self, spec: ModelSpec, generator: torch.Generator | None = None):
        super().__init__()
        self.spec = spec
        self.params = nn.ModuleDict()
        for layer in spec.layers:
            shapes = spec.weight_shapes(layer)
            if not shapes:
                continue
            holder = nn.Module()
            weight = torch.empty(shapes["weight"])
            OPS[layer.op].init(weight, generator)
            holder.weight = nn.Parameter(weight)
            holder.bias = nn.Parameter(torch.zeros(shapes["bias"])) if "bias" in shapes else None
            for key, (shape, value) in self._state(layer).items():  # running statistics: buffers, not trained
                holder.register_buffer(key, torch.full(shape, value))
            self.params[layer.name] = holder

    def _state(self, layer: Layer) -> dict:
        op = OPS[layer.op]
        return op.state(layer, self.spec.input_shape_of(layer.name)) if op.state else {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spec.walk(self.run_layer, x)

    def run_layer(self, layer: Layer, ins: list[torch.Tensor]) -> torch.Tensor:
        """One layer's torch forward (the op table's), on the outputs it reads."""
        return OPS[layer.op].forward(layer, ins, self.params[layer.name] if layer.name in self.params else None)


def build(spec: ModelSpec, weights: dict[str, dict[str, np.ndarray]] | None = None,
          generator: torch.Generator | None = None) -> SpecModule:
    """The torch module of `spec`, initialised from `weights` where given, else randomly from `generator`."""
    module = SpecModule(spec, generator)
    if weights:
        set_weights(module, weights)
    return module


def get_weights(module: SpecModule) -> dict[str, dict[str, np.ndarray]]:
    """Float32 NumPy copies of every layer's parameters and state: {layer: {"weight": ..., "bias": ...,
    "running_mean": ...}}."""
    out = {}
    for name, p in module.params.items():
        out[name] = {"weight": p.weight.detach().cpu().numpy().copy()}
        if p.bias is not None:
            out[name]["bias"] = p.bias.detach().cpu().numpy().copy()
        out[name].update({k: b.detach().cpu().numpy().copy() for k, b in p.named_buffers(recurse=False)})
    return out


def set_weights(module: SpecModule, weights: dict[str, dict[str, np.ndarray]]) -> None:
    with torch.no_grad():
        for name, arrays in weights.items():
            if name not in module.params:
                continue
            p = module.params[name]
            for key, value in arrays.items():
                target = getattr(p, key)
                if target is None:
                    continue
                if tuple(target.shape) != tuple(value.shape):
                    raise ModelError(f"layer {name!r} {key}: shape {tuple(value.shape)} does not fit "
                                     f"{tuple(target.shape)}")
                target.copy_(torch.as_tensor(np.asarray(value, dtype=np.float32)))
