"""The op table: one entry defines an op for every reader (shapes, parameters, MACs, torch, PTQ, FLOPs, growth,
the device arena, the TFLite importer's list), and every op of the table is complete."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tinycl.errors import ModelError
from tinycl.flops import inference_flops, training_flops
from tinycl.model import Layer, ModelSpec, build, get_weights
from tinycl.model.ops import OPS, OpDef, ops_where, pads, register_op, window_counts
from tinycl.model.tflite import supported_ops
from tinycl.quant.ptq import quantize_model


@pytest.fixture
def toy_op():
    """A made-up weighted op, "scale_shift": y = x * w[c] + b[c] per channel (a per-channel affine map)."""
    op = OpDef("scale_shift", lambda ly, ins: ins[0],
               lambda ly, ins, p: ins[0] * p.weight.view(1, -1, 1, 1) + p.bias.view(1, -1, 1, 1),
               weight_shapes=lambda ly, x: {"weight": (x[0],), "bias": (x[0],)},
               init=lambda w, generator: torch.nn.init.uniform_(w, 0.5, 1.5, generator=generator),
               macs=lambda ly, x, y: math.prod(y), units="pass")
    register_op(op)
    yield op
    del OPS["scale_shift"]


def test_an_op_defined_once_reaches_every_reader(toy_op):
    spec = ModelSpec((2, 4, 4), (Layer("c", "conv2d", channels=3, kernel=(3, 3), padding="same", activation="relu"),
                                 Layer("s", "scale_shift"),
                                 Layer("fc", "linear", channels=5)))
    assert spec.output_shape("s") == (3, 4, 4)
    assert spec.weight_shapes(spec.layers[1]) == {"weight": (3,), "bias": (3,)}
    assert spec.num_params(spec.layers[1]) == 6 and spec.macs(spec.layers[1]) == 48
    assert inference_flops(spec) == 2 * (4 * 4 * 3 * 2 * 9 + 48 + 5 * 48)
    assert training_flops(spec) > inference_flops(spec)
    module = build(spec, generator=torch.Generator().manual_seed(0))  # torch, parameters included
    x = torch.randn(2, 2, 4, 4)
    p = module.params
    y = torch.relu(torch.nn.functional.conv2d(x, p["c"].weight, p["c"].bias, padding=1))
    y = y * p["s"].weight.view(1, -1, 1, 1) + p["s"].bias.view(1, -1, 1, 1)
    torch.testing.assert_close(module(x), torch.nn.functional.linear(y.flatten(1), p["fc"].weight, p["fc"].bias))
    q = quantize_model(spec, get_weights(module), np.random.default_rng(0).random((8, 2, 4, 4), np.float32))
    assert q.weights["s"]["weight"].dtype == np.int8  # PTQ quantizes its parameters like any weighted op
    assert "scale_shift" not in ops_where(lambda op: op.device is not None)  # no C kernel: device mode refuses it
    with pytest.raises(ModelError, match="defined already"):
        register_op(toy_op)


@pytest.mark.parametrize("name", list(OPS))
def test_every_op_is_complete(name):
    op = OPS[name]
    assert op.name == name and callable(op.out_shape) and callable(op.forward)
    assert op.quant in ("own", "input", "softmax") and op.units in ("pass", "mix", "block")
    assert all(t in supported_ops() for t in op.tflite)
    assert op.device in (None, "view", "conv2d", "depthwise", "linear", "avgpool", "global_avgpool", "activation",
                         "batchrenorm")


@pytest.mark.parametrize("padding,stride",
                         [("same", (1, 1)), ("same", (2, 2)), ("valid", (2, 2)), ((1, 0, 2, 1), (1, 2))])
def test_window_counts_count_the_valid_taps(padding, stride):
    layer = Layer("p", "avg_pool2d", kernel=(3, 3), stride=stride, padding=padding)
    h, w = 7, 6
    t, b, l, r = pads(layer, h, w)
    ones = np.pad(np.ones((h, w)), ((t, b), (l, r)))
    oh, ow = (h + t + b - 3) // stride[0] + 1, (w + l + r - 3) // stride[1] + 1
    expected = [[ones[i * stride[0]: i * stride[0] + 3, j * stride[1]: j * stride[1] + 3].sum() for j in range(ow)]
                for i in range(oh)]
    np.testing.assert_array_equal(window_counts(layer, h, w), expected)


@pytest.fixture
def flip_op():
    """A made-up data-movement op, "channel_flip" (reverses the channel order), with its integer kernel: the op
    table entry and the integer kernel table are the two places an op is written on the host."""
    from tinycl.quant import intexec

    op = register_op(OpDef("channel_flip", lambda ly, ins: ins[0], lambda ly, ins, p: ins[0].flip(1), quant="input"))
    intexec.INTEGER_KERNELS["channel_flip"] = lambda layer, record, qmodel: (lambda ins: ins[0][:, ::-1])
    yield op
    del OPS["channel_flip"], intexec.INTEGER_KERNELS["channel_flip"]


def test_a_new_op_reaches_torch_the_integer_executor_and_flops(flip_op):
    from tinycl.quant.intexec import IntegerModel, quantize_input

    spec = ModelSpec((1, 5, 5), (Layer("c", "conv2d", channels=4, kernel=(3, 3), activation="relu"),
                                 Layer("f", "channel_flip"), Layer("fc", "linear", channels=3)))
    plain = spec.with_layers([spec.layers[0], spec.layers[2]])
    assert inference_flops(spec) == inference_flops(plain)  # moving values costs no MACs
    weights = get_weights(build(spec, generator=torch.Generator().manual_seed(1)))
    x = np.random.default_rng(1).random((6, 1, 5, 5), np.float32)
    out = build(spec, weights)(torch.from_numpy(x))
    flipped = {**weights, "fc": {"weight": weights["fc"]["weight"].reshape(3, 4, 3, 3)[:, ::-1].reshape(3, -1),
                                 "bias": weights["fc"]["bias"]}}
    torch.testing.assert_close(out, build(plain, flipped)(torch.from_numpy(x)))  # torch: the flip is applied
    q = quantize_model(spec, weights, x)
    assert q.spec.layers[1].quant.output == q.spec.layers[0].quant.output  # PTQ: "input" rule
    codes = IntegerModel(q).run(quantize_input(x, q.spec.input_quant), keep_all=True)
    np.testing.assert_array_equal(codes["f"], codes["c"][:, ::-1])  # the integer executor runs it
