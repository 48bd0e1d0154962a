"""Build a torch module from a ModelSpec, and move weights between the two as NumPy arrays."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tinycl.errors import ModelError
from tinycl.model.ops import pads
from tinycl.model.spec import Layer, ModelSpec

__all__ = ["SpecModule", "build", "get_weights", "set_weights"]


def _activation(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "relu":
        return F.relu(x)
    if name == "relu6":
        return F.relu6(x)
    return x


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
            # He initialisation (fan in): keeps the signal's scale through ReLU layers; biases start at 0
            weight = torch.empty(shapes["weight"])
            nn.init.kaiming_normal_(weight, nonlinearity="relu", generator=generator)
            holder.weight = nn.Parameter(weight)
            holder.bias = nn.Parameter(torch.zeros(shapes["bias"])) if "bias" in shapes else None
            self.params[layer.name] = holder
        self._keep = {n for layer in spec.layers for n in layer.inputs}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs: dict[str, torch.Tensor] = {"input": x}
        for layer in self.spec.layers:
            ins = [outputs[n] for n in layer.inputs] if layer.inputs else [x]
            x = self.run_layer(layer, ins)
            if layer.name in self._keep:
                outputs[layer.name] = x
        return x

    def run_layer(self, layer: Layer, ins: list[torch.Tensor]) -> torch.Tensor:
        x = ins[0]
        op = layer.op
        if op in ("conv2d", "depthwise_conv2d", "avg_pool2d", "max_pool2d"):
            t, b, l, r = pads(layer, x.shape[2], x.shape[3])
            if op == "max_pool2d":
                x = F.pad(x, (l, r, t, b), value=float("-inf")) if t + b + l + r else x
                return F.max_pool2d(x, layer.kernel, layer.stride)
            if op == "avg_pool2d":
                # TFLite averages over the valid (unpadded) window elements only
                if t + b + l + r == 0:
                    return F.avg_pool2d(x, layer.kernel, layer.stride)
                return _avg_pool_valid(x, layer, (t, b, l, r))
            p = self.params[layer.name]
            x = F.pad(x, (l, r, t, b)) if t + b + l + r else x
            groups = x.shape[1] if op == "depthwise_conv2d" else 1
            x = F.conv2d(x, p.weight, p.bias, stride=layer.stride, groups=groups)
            return _activation(x, layer.activation)
        if op == "linear":
            p = self.params[layer.name]
            return _activation(F.linear(x.flatten(1), p.weight, p.bias), layer.activation)
        if op == "global_avg_pool":
            return _activation(x.mean(dim=(2, 3)), layer.activation)
        if op == "flatten":
            return x.flatten(1)
        if op == "relu":
            return F.relu(x)
        if op == "relu6":
            return F.relu6(x)
        if op == "pad":
            t, b, l, r = layer.padding
            return F.pad(x, (l, r, t, b))
        if op == "add":
            return _activation(sum(ins[1:], ins[0]), layer.activation)
        if op == "quantize":  # a requantization between integer tensors: the identity in float
            return x
        if op == "softmax":
            return F.softmax(x, dim=1)
        if op == "reshape":
            return x.reshape(x.shape[0], *layer.shape)
        raise AssertionError(op)


def _avg_pool_valid(x: torch.Tensor, layer: Layer, pads: tuple[int, int, int, int]) -> torch.Tensor:
    t, b, l, r = pads
    summed = F.avg_pool2d(F.pad(x, (l, r, t, b)), layer.kernel, layer.stride, divisor_override=1)
    ones = F.pad(torch.ones_like(x[:1, :1]), (l, r, t, b))
    count = F.avg_pool2d(ones, layer.kernel, layer.stride, divisor_override=1)
    return summed / count


def build(spec: ModelSpec, weights: dict[str, dict[str, np.ndarray]] | None = None,
          generator: torch.Generator | None = None) -> SpecModule:
    """The torch module of `spec`, initialised from `weights` where given, else randomly from `generator`."""
    module = SpecModule(spec, generator)
    if weights:
        set_weights(module, weights)
    return module


def get_weights(module: SpecModule) -> dict[str, dict[str, np.ndarray]]:
    """Float32 NumPy copies of every layer's parameters: {layer: {"weight": ..., "bias": ...}}."""
    out = {}
    for name, p in module.params.items():
        out[name] = {"weight": p.weight.detach().cpu().numpy().copy()}
        if p.bias is not None:
            out[name]["bias"] = p.bias.detach().cpu().numpy().copy()
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
