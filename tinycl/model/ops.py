"""The op table: each op of the layer records defined once, and read by every other module.

An `OpDef` says what an op is: its output shape, its parameter shapes, its multiply-accumulates, its torch
forward, how post-training quantization and TFLite treat its output's quantization, how growth passes units
through it, which TFLite operators import as it, and which C kernels run it on the device. `ModelSpec` (shapes,
parameters, MACs), `build` (torch), PTQ, the TFLite importer and writer, growth, FLOPs, the cost model and the
device arena all look the op up here. The integer kernel of an op is the one other host-side place an op is
written (`tinycl.quant.intexec.INTEGER_KERNELS`).

Tensors are CHW (batch first when batched); conv weights OIHW, depthwise (C, 1, kh, kw), linear (out, in).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from tinycl.errors import ModelError

__all__ = ["OpDef", "OPS", "ACTIVATIONS", "pads", "window_counts", "register_op", "activate", "ops_where",
           "BRN_EPS", "BRN_MOMENTUM", "BRN_LIMITS"]

Shape = tuple[int, ...]
ACTIVATIONS = ("none", "relu", "relu6")


@dataclass(frozen=True)
class OpDef:
    """One op. Callables take the layer record (tinycl.model.spec.Layer) first.

    out_shape(layer, input shapes) -> output shape (no batch axis); raise ModelError where the inputs do not fit.
    forward(layer, inputs, params) -> torch output (batch first); params holds .weight / .bias for weighted ops.
    weight_shapes(layer, input shape) -> {"weight": ..., "bias": ...}; None: the op has no parameters.
    init(weight, generator): fills a new weight tensor in place (default: He initialisation, fan in, which keeps
      the signal's scale through ReLU layers); biases start at 0.
    macs(layer, input shape, output shape) -> multiply-accumulates of one forward pass for one sample.
    quant: how post-training quantization quantizes the output: "own" (its calibrated range), "input" (values
      only move or are selected: the input's quantization), "softmax" (TFLite's fixed scale 1/256, zero -128).
    same_quant: TFLite requires the output quantization to equal the input's (true for every "input" op); a
      model whose layer differs runs it in the input's quantization and then requantizes.
    units: how growth (Net2WiderNet) sees it: "pass" (output unit k is a function of input unit k only),
      "mix" (every output reads every input unit: where a widened unit's outgoing weights are divided),
      "block" (growth cannot pass).
    tflite: the TFLite builtin operators imported as this op.
    device: the C training kernel (tinycl.device.arena), "view" (no kernel: same bytes), None: not trainable
      on the device. int8: the C int8 path (tinycl.device.int8) has a kernel.
    state(layer, input shape) -> {name: (shape, initial value)}: state that is not trained (running statistics),
      held by the torch module as buffers, saved in state dicts and weights dicts; None: no such state.
    """

    name: str
    out_shape: Callable
    forward: Callable
    weight_shapes: Callable | None = None
    init: Callable = lambda w, generator: torch.nn.init.kaiming_normal_(w, nonlinearity="relu", generator=generator)
    macs: Callable = lambda layer, x, y: 0
    quant: str = "own"
    same_quant: bool = False
    units: str = "block"
    tflite: tuple[str, ...] = ()
    device: str | None = None
    int8: bool = False
    state: Callable | None = None

    def __post_init__(self):
        if self.quant == "input":
            object.__setattr__(self, "same_quant", True)
        if self.quant not in ("own", "input", "softmax") or self.units not in ("pass", "mix", "block"):
            raise ModelError(f"op {self.name!r}: quant {self.quant!r} / units {self.units!r} not known")

    @property
    def has_weights(self) -> bool:
        return self.weight_shapes is not None


# -- geometry ------------------------------------------------------------------------------------------------
def pads(layer, h: int, w: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zero padding of a conv or pool over an h x w input."""
    if layer.padding == "valid":
        return (0, 0, 0, 0)
    if layer.padding == "same":
        out = []
        for size, k, s in ((h, layer.kernel[0], layer.stride[0]), (w, layer.kernel[1], layer.stride[1])):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            out += [total // 2, total - total // 2]
        return tuple(out)
    return tuple(layer.padding)


def window_counts(layer, h: int, w: int) -> np.ndarray:
    """(oh, ow) int64: how many taps of each output position's window lie inside the h x w input (TFLite's
    average pooling divides by this count, not by the window size)."""
    t, b, l, r = pads(layer, h, w)
    (kh, kw), (sh, sw) = layer.kernel, layer.stride
    oh, ow = (h + t + b - kh) // sh + 1, (w + l + r - kw) // sw + 1
    rows = np.clip(np.arange(oh) * sh - t + kh, 0, h) - np.clip(np.arange(oh) * sh - t, 0, h)
    cols = np.clip(np.arange(ow) * sw - l + kw, 0, w) - np.clip(np.arange(ow) * sw - l, 0, w)
    return np.outer(rows, cols).astype(np.int64)


def _window_shape(layer, ins: list[Shape]) -> Shape:
    x = ins[0]
    if len(x) != 3:
        raise ModelError(f"layer {layer.name!r} ({layer.op}) needs a CHW input, got shape {x}")
    c, h, w = x
    t, b, l, r = pads(layer, h, w)
    oh = (h + t + b - layer.kernel[0]) // layer.stride[0] + 1
    ow = (w + l + r - layer.kernel[1]) // layer.stride[1] + 1
    if oh < 1 or ow < 1:
        raise ModelError(f"layer {layer.name!r}: kernel {layer.kernel} does not fit input {x}")
    return (layer.channels if layer.op == "conv2d" else c, oh, ow)


def _same(layer, ins: list[Shape]) -> Shape:
    return ins[0]


def _with_bias(layer, weight: Shape) -> dict[str, Shape]:
    return {"weight": weight, **({"bias": (weight[0],)} if layer.bias else {})}


def _pad_input(x: torch.Tensor, layer, value: float = 0.0) -> torch.Tensor:
    t, b, l, r = pads(layer, x.shape[2], x.shape[3])
    return F.pad(x, (l, r, t, b), value=value) if t + b + l + r else x


# -- torch forwards ------------------------------------------------------------------------------------------
def activate(x: torch.Tensor, name: str) -> torch.Tensor:
    """A fused activation by name (ACTIVATIONS)."""
    if name == "relu":
        return F.relu(x)
    if name == "relu6":
        return F.relu6(x)
    return x


def _conv(layer, ins, p):
    x = _pad_input(ins[0], layer)
    groups = x.shape[1] if layer.op == "depthwise_conv2d" else 1
    return activate(F.conv2d(x, p.weight, p.bias, stride=layer.stride, groups=groups), layer.activation)


def _avg_pool(layer, ins, p):
    x = ins[0]
    if not any(pads(layer, x.shape[2], x.shape[3])):
        return F.avg_pool2d(x, layer.kernel, layer.stride)
    counts = torch.from_numpy(window_counts(layer, x.shape[2], x.shape[3])).to(x.dtype)
    summed = F.avg_pool2d(_pad_input(x, layer), layer.kernel, layer.stride, divisor_override=1)
    return summed / counts  # TFLite averages over the valid (unpadded) taps only


def _max_pool(layer, ins, p):
    return F.max_pool2d(_pad_input(ins[0], layer, float("-inf")), layer.kernel, layer.stride)


# Batch renormalization (Ioffe 2017): r_max and d_max as the latent-replay papers use them (DESIGN.md); the
# learner ramps them up from 1 and 0 (BRN_LIMITS gives the final values), and may set p.r_max / p.d_max.
BRN_EPS = 1e-5
BRN_MOMENTUM = 0.01  # update rate of the running statistics: slow, so a few new classes do not drag them
BRN_LIMITS = (1.25, 0.5)


def _batch_renorm(layer, ins, p):
    """Train mode: y = gamma * ((x - mu_B) / sigma_B * r + d) + beta, r = clip(sigma_B / sigma, 1/r_max, r_max),
    d = clip((mu_B - mu) / sigma, -d_max, d_max) held constant (no gradient), then the running statistics move
    by BRN_MOMENTUM towards the batch's (biased variance). Eval mode: the running statistics normalize."""
    x = ins[0]
    if not p.training:
        y = F.batch_norm(x, p.running_mean, p.running_var, p.weight, p.bias, training=False, eps=BRN_EPS)
        return activate(y, layer.activation)
    r_max, d_max = getattr(p, "r_max", BRN_LIMITS[0]), getattr(p, "d_max", BRN_LIMITS[1])
    with torch.no_grad():
        var, mu = torch.var_mean(x, (0, *range(2, x.dim())), unbiased=False)
        std = torch.sqrt(p.running_var + BRN_EPS)
        r = (torch.sqrt(var + BRN_EPS) / std).clamp(1 / r_max, r_max)
        d = ((mu - p.running_mean) / std).clamp(-d_max, d_max)
        p.running_mean += BRN_MOMENTUM * (mu - p.running_mean)
        p.running_var += BRN_MOMENTUM * (var - p.running_var)
    # gamma * ((x - mu_B) / sigma_B * r + d) + beta is batch normalization with weight gamma * r and bias
    # gamma * d + beta: one fused kernel, whose gradient flows through mu_B and sigma_B as the formula's does
    y = F.batch_norm(x, None, None, p.weight * r, p.weight * d + p.bias, training=True, eps=BRN_EPS)
    return activate(y, layer.activation)


def _explicit_pad(layer, ins: list[Shape]) -> Shape:
    if isinstance(layer.padding, str) or len(layer.padding) != 4:
        raise ModelError(f"layer {layer.name!r}: pad needs explicit (top, bottom, left, right) padding")
    x = ins[0]
    t, b, l, r = layer.padding
    return (x[0], x[1] + t + b, x[2] + l + r)


def _reshape_shape(layer, ins: list[Shape]) -> Shape:
    if math.prod(layer.shape) != math.prod(ins[0]):
        raise ModelError(f"layer {layer.name!r}: cannot reshape {ins[0]} to {layer.shape}")
    return tuple(layer.shape)


def _add_shape(layer, ins: list[Shape]) -> Shape:
    if any(s != ins[0] for s in ins):
        raise ModelError(f"layer {layer.name!r}: add needs equal shapes, got {ins}")
    return ins[0]


def _concat_shape(layer, ins: list[Shape]) -> Shape:
    if any(len(s) != len(ins[0]) or s[1:] != ins[0][1:] for s in ins):
        raise ModelError(f"layer {layer.name!r}: concat joins channels (axis 0) of equal other dims, got {ins}")
    return (sum(s[0] for s in ins), *ins[0][1:])


def _broadcast_shape(layer, ins: list[Shape]) -> Shape:
    if all(len(s) == len(ins[0]) for s in ins):
        try:
            return tuple(np.broadcast_shapes(*ins))
        except ValueError:
            pass
    raise ModelError(f"layer {layer.name!r}: {layer.op} needs inputs of one rank that broadcast, got {ins}")


# -- the table -----------------------------------------------------------------------------------------------
OPS: dict[str, OpDef] = {}


def ops_where(predicate: Callable[[OpDef], bool]) -> tuple[str, ...]:
    """Names of the ops for which predicate(op) holds, in table order (for "allowed: ..." messages)."""
    return tuple(name for name, op in OPS.items() if predicate(op))


def register_op(op: OpDef) -> OpDef:
    """Add an op to the table (its name must be new); returns it."""
    if op.name in OPS:
        raise ModelError(f"op {op.name!r} is defined already")
    OPS[op.name] = op
    return op


for _op in (
    OpDef("conv2d", _window_shape, _conv,
          weight_shapes=lambda ly, x: _with_bias(ly, (ly.channels, x[0], *ly.kernel)),
          macs=lambda ly, x, y: math.prod(y) * x[0] * ly.kernel[0] * ly.kernel[1],
          units="mix", tflite=("CONV_2D",), device="conv2d", int8=True),
    OpDef("depthwise_conv2d", _window_shape, _conv,
          weight_shapes=lambda ly, x: _with_bias(ly, (x[0], 1, *ly.kernel)),
          macs=lambda ly, x, y: math.prod(y) * ly.kernel[0] * ly.kernel[1],
          units="pass", tflite=("DEPTHWISE_CONV_2D",), device="depthwise", int8=True),
    OpDef("linear", lambda ly, ins: (ly.channels,),
          lambda ly, ins, p: activate(F.linear(ins[0].flatten(1), p.weight, p.bias), ly.activation),
          weight_shapes=lambda ly, x: _with_bias(ly, (ly.channels, math.prod(x))),
          macs=lambda ly, x, y: ly.channels * math.prod(x),
          units="mix", tflite=("FULLY_CONNECTED",), device="linear", int8=True),
    OpDef("avg_pool2d", _window_shape, _avg_pool, same_quant=True, units="pass", tflite=("AVERAGE_POOL_2D",),
          device="avgpool", int8=True),
    OpDef("max_pool2d", _window_shape, _max_pool, quant="input", units="pass", tflite=("MAX_POOL_2D",), int8=True),
    OpDef("global_avg_pool", lambda ly, ins: (ins[0][0],),  # (C, H, W) -> (C,): MEAN over H and W
          lambda ly, ins, p: activate(ins[0].mean(dim=(2, 3)), ly.activation), units="pass", tflite=("MEAN",),
          device="global_avgpool"),
    OpDef("flatten", lambda ly, ins: (math.prod(ins[0]),), lambda ly, ins, p: ins[0].flatten(1), quant="input",
          units="pass", device="view", int8=True),
    OpDef("reshape", _reshape_shape, lambda ly, ins, p: ins[0].reshape(ins[0].shape[0], *ly.shape), quant="input",
          tflite=("RESHAPE",), device="view", int8=True),
    OpDef("relu", _same, lambda ly, ins, p: F.relu(ins[0]), units="pass", tflite=("RELU",), device="activation",
          int8=True),
    OpDef("relu6", _same, lambda ly, ins, p: F.relu6(ins[0]), units="pass", tflite=("RELU6",),
          device="activation", int8=True),
    OpDef("pad", _explicit_pad, lambda ly, ins, p: F.pad(ins[0], (ly.padding[2], ly.padding[3], *ly.padding[:2])),
          quant="input", units="pass", tflite=("PAD",)),
    OpDef("add", _add_shape,  # elementwise sum of the outputs named in `inputs`
          lambda ly, ins, p: activate(sum(ins[1:], ins[0]), ly.activation), tflite=("ADD",)),
    OpDef("softmax", _same, lambda ly, ins, p: F.softmax(ins[0], dim=1), quant="softmax", tflite=("SOFTMAX",)),
    # a requantization between integer tensors (to this layer's output quantization): the identity in float
    OpDef("quantize", _same, lambda ly, ins, p: ins[0], tflite=("QUANTIZE",), int8=True),
    # channels of the outputs named in `inputs`, in order (TFLite CONCATENATION on NHWC's last axis)
    OpDef("concat", _concat_shape, lambda ly, ins, p: torch.cat(ins, dim=1), quant="input", tflite=("CONCATENATION",)),
    # elementwise product of the two outputs named in `inputs`, broadcasting (e.g. squeeze-excite: C x 1 x 1)
    OpDef("mul", _broadcast_shape, lambda ly, ins, p: activate(ins[0] * ins[1], ly.activation), tflite=("MUL",)),
    OpDef("hard_swish", _same, lambda ly, ins, p: F.hardswish(ins[0]), units="pass", tflite=("HARD_SWISH",)),
    # sigmoid; TFLite fixes its output quantization as softmax's (scale 1/256)
    OpDef("logistic", _same, lambda ly, ins, p: torch.sigmoid(ins[0]), quant="softmax", units="pass",
          tflite=("LOGISTIC",)),
    # per channel (axis 1) of a CHW or feature input; only in a float adaptive stage (TFLite folds BN into convs)
    OpDef("batch_renorm", _same, _batch_renorm,
          weight_shapes=lambda ly, x: {"weight": (x[0],), "bias": (x[0],)},
          init=lambda w, generator: torch.nn.init.ones_(w), macs=lambda ly, x, y: math.prod(y), units="pass",
          device="batchrenorm",
          state=lambda ly, x: {"running_mean": ((x[0],), 0.0), "running_var": ((x[0],), 1.0)}),
):
    register_op(_op)
