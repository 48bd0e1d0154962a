"""Function-preserving growth of a network (Net2WiderNet, Chen et al. 2016) on a ModelSpec and its weights.

`widen(spec, weights, "fc1", 96, rng)` gives layer fc1 96 output units instead of 64: the new units copy random
old ones (their incoming weights and bias), and the layer that reads fc1 divides the incoming weights of each
copied unit by its number of copies, so the network computes the same function. Depthwise layers and pass-through
ops (activations, pools, pad, flatten) between the widened layer and its consumer widen with it.
To break the copies' symmetry, `noise` splits a copied unit's outgoing weight unevenly among its copies (the
shares still sum to the original), so gradients differ between copies while the function stays exactly the same.
Batch renormalization layers copy their parameters and running statistics per unit, like a depthwise one.

`add_outputs(spec, weights, n, rng)` adds output units (new classes) to the last layer; old outputs are unchanged.
Weights are {layer: {"weight": ndarray, "bias": ndarray}}, float32, OIHW / (out, in), as tinycl.model.build uses.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from tinycl.errors import ModelError
from tinycl.model.ops import OPS, ops_where
from tinycl.model.spec import ModelSpec

__all__ = ["widen", "widen_all", "add_outputs", "growable_layers"]

Weights = dict[str, dict[str, np.ndarray]]


def _readers(spec: ModelSpec, name: str) -> list[int]:
    """Indices of the layers that read the output of layer `name`."""
    i = spec.index(name)
    out = [j for j, ly in enumerate(spec.layers) if name in ly.inputs]
    if i + 1 < len(spec.layers) and not spec.layers[i + 1].inputs:
        out.append(i + 1)
    return sorted(out)


def _path_to_consumer(spec: ModelSpec, name: str) -> list[int]:
    """Layers from `name` to the first conv2d/linear that reads it (inclusive), following a single chain.
    ModelError when the chain branches, ends, or meets an op that mixes units (add, reshape)."""
    path, current = [], name
    while True:
        readers = _readers(spec, current)
        if len(readers) != 1:
            raise ModelError(f"cannot widen {name!r}: the output of {current!r} is read by "
                             f"{len(readers)} layers; growth needs a single chain to a conv2d or linear layer")
        j = readers[0]
        layer = spec.layers[j]
        path.append(j)
        if OPS[layer.op].units == "mix":
            return path
        if OPS[layer.op].units != "pass":
            raise ModelError(f"cannot widen {name!r}: its units reach a {layer.op!r} layer ({layer.name!r}); "
                             f"growth passes only through {', '.join(ops_where(lambda op: op.units == 'pass'))}")
        current = layer.name


def growable_layers(spec: ModelSpec) -> list[str]:
    """conv2d and linear layers whose output units can be widened (all but the output layer, and only those
    with a single chain to a conv2d/linear consumer)."""
    out = []
    for layer in spec.layers:
        if OPS[layer.op].units != "mix":
            continue
        try:
            _path_to_consumer(spec, layer.name)
        except ModelError:
            continue
        out.append(layer.name)
    return out


def _copy_map(old: int, new: int, rng: np.random.Generator) -> np.ndarray:
    """(new,) index of the old unit each new unit copies: the old units in order, then random old units."""
    return np.concatenate([np.arange(old), rng.integers(0, old, size=new - old)]).astype(np.int64)


def _split_shares(g: np.ndarray, old: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """(new,) share of its old unit's outgoing weight that each new unit carries; shares of one old unit sum to 1.
    noise = 0: 1 / copies (Net2WiderNet). noise > 0: 1 / copies + zero-sum perturbation of relative size noise."""
    counts = np.bincount(g, minlength=old).astype(np.float64)
    shares = 1.0 / counts[g]
    if noise > 0:
        eps = rng.normal(0.0, noise, size=len(g)) * shares
        mean = np.bincount(g, weights=eps, minlength=old) / counts  # remove each group's mean: sum stays 1
        shares = shares + eps - mean[g]
    return shares


def widen(spec: ModelSpec, weights: Weights, name: str, width: int, rng: np.random.Generator,
          noise: float = 0.0) -> tuple[ModelSpec, Weights]:
    """A new (spec, weights) in which conv2d/linear layer `name` has `width` output units and the network
    computes the same function (up to float32 rounding, noise or not).

    The input `weights` are not modified. rng chooses which units are copied and draws the symmetry-breaking
    noise (a relative standard deviation of each copy's outgoing share; 0.01 is a small value)."""
    layer = spec.layers[spec.index(name)]
    if OPS[layer.op].units != "mix":
        raise ModelError(f"cannot widen {name!r}: op {layer.op!r}; only layers that mix units widen: "
                         f"{', '.join(ops_where(lambda op: op.units == 'mix'))}")
    old = layer.channels
    if not isinstance(width, int | np.integer) or width < old:
        raise ModelError(f"cannot widen {name!r} from {old} to {width} units: growth never removes units")
    if noise < 0:
        raise ModelError(f"growth noise must be >= 0, got {noise}")
    path = _path_to_consumer(spec, name)
    out = {k: {a: v.copy() for a, v in arrays.items()} for k, arrays in weights.items()}
    if width == old:
        return spec, out
    g = _copy_map(old, int(width), rng)
    out[name] = {k: v[g] for k, v in weights[name].items()}
    new_layers = list(spec.layers)
    new_layers[spec.index(name)] = replace(layer, channels=int(width))
    unit_map = g  # which old unit each unit of the current tensor copies
    unit_size = 1  # values per unit along the flattened axis (after a flatten of C x H x W: H * W)
    for j in path:
        ly = spec.layers[j]
        if OPS[ly.op].units == "pass" and ly.name in weights:  # per-unit parameters (depthwise): copied
            out[ly.name] = {k: v[unit_map] for k, v in weights[ly.name].items()}
        elif ly.op == "flatten":
            shape = spec.input_shape_of(ly.name)
            unit_size = math.prod(shape[1:])
        elif OPS[ly.op].units == "mix":
            shares = _split_shares(unit_map, old, noise, rng).astype(np.float32)
            w = weights[ly.name]["weight"]
            if ly.op == "conv2d":
                out[ly.name]["weight"] = w[:, unit_map] * shares[None, :, None, None]
            else:
                shape_in = spec.input_shape_of(ly.name)
                if len(shape_in) > 1:  # linear flattens a C x H x W input itself
                    unit_size = math.prod(shape_in[1:])
                cols = (unit_map[:, None] * unit_size + np.arange(unit_size)).ravel()
                out[ly.name]["weight"] = w[:, cols] * np.repeat(shares, unit_size)[None, :]
    return spec.with_layers(new_layers, input_quant=spec.input_quant), out


def widen_all(spec: ModelSpec, weights: Weights, factor: float, rng: np.random.Generator, noise: float = 0.0,
              layers: tuple[str, ...] | None = None, max_width: dict[str, int] | None = None
              ) -> tuple[ModelSpec, Weights, dict[str, tuple[int, int]]]:
    """Widen every layer in `layers` (default: growable_layers(spec)) to ceil(channels * factor) units, capped
    at max_width[layer] if given. Returns (spec, weights, {layer: (old, new)} for the layers that grew)."""
    names = list(layers) if layers else growable_layers(spec)
    changes = {}
    for name in names:
        old = spec.layers[spec.index(name)].channels
        new = math.ceil(old * factor - 1e-9)
        if max_width and name in max_width:
            new = min(new, max_width[name])
        if new > old:
            spec, weights = widen(spec, weights, name, new, rng, noise)
            changes[name] = (old, new)
    return spec, weights, changes


def add_outputs(spec: ModelSpec, weights: Weights, n: int, rng: np.random.Generator,
                scale: float = 0.0) -> tuple[ModelSpec, Weights]:
    """Add `n` output units (e.g. new classes) to the model's head: its last linear or conv2d layer, followed only
    by weightless per-channel layers (a flatten, as imported TFLite classifiers end). Existing outputs are
    unchanged; new units get weights ~ U(-scale/sqrt(fan_in), scale/sqrt(fan_in)) and zero bias (scale 0: all
    zero, so a new class starts with logit 0)."""
    if not spec.layers:
        raise ModelError("cannot add outputs to an empty model")
    i = len(spec.layers) - 1
    while i > 0 and OPS[spec.layers[i].op].units == "pass" and not OPS[spec.layers[i].op].weight_shapes:
        i -= 1
    head = spec.layers[i]
    if OPS[head.op].units != "mix":
        raise ModelError(f"cannot add outputs: the last weighted layer {head.name!r} is {head.op!r}, not linear or "
                         f"conv2d")
    if n < 0:
        raise ModelError(f"cannot add {n} outputs: n must be >= 0")
    w = weights[head.name]["weight"]
    fan_in = math.prod(w.shape[1:])
    bound = scale / math.sqrt(fan_in)
    extra = rng.uniform(-bound, bound, size=(n, *w.shape[1:])).astype(np.float32)
    out = {k: {a: v.copy() for a, v in arrays.items()} for k, arrays in weights.items()}
    out[head.name]["weight"] = np.concatenate([w, extra])
    if "bias" in weights[head.name]:
        out[head.name]["bias"] = np.concatenate([weights[head.name]["bias"], np.zeros(n, np.float32)])
    layers = list(spec.layers)
    layers[i] = replace(head, channels=head.channels + n)
    return spec.with_layers(layers, input_quant=spec.input_quant), out
