"""FLOPs from the layer records: a hand count on a small network, torch's own FLOP counter on dense layers, and
the per-experience log with a fixed model of the final size re-priced on the same samples."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tinycl.flops import FlopsLog, distill_flops, inference_flops, layer_macs, training_flops
from tinycl.model.build import build
from tinycl.model.spec import Layer, ModelSpec

# input 1x4x4 -> conv 2ch 3x3 same (2x4x4) -> depthwise 3x3 valid (2x2x2) -> global pool (2) -> linear 3
SMALL = ModelSpec((1, 4, 4), (
    Layer("conv", "conv2d", channels=2, kernel=(3, 3), padding="same", activation="relu"),
    Layer("dw", "depthwise_conv2d", kernel=(3, 3)),
    Layer("pool", "global_avg_pool"),
    Layer("fc", "linear", channels=3),
))


def test_hand_count():
    # MACs: conv 2*4*4 outputs x 1*3*3 = 288; depthwise 2*2*2 outputs x 3*3 = 72; linear 3 x 2 = 6
    macs = layer_macs(SMALL)
    assert [(m.name, m.forward, m.params) for m in macs] == [("conv", 288, 20), ("dw", 72, 20), ("pool", 0, 0),
                                                              ("fc", 6, 9)]
    assert inference_flops(SMALL) == 2 * (288 + 72 + 6) == 732
    # backward: weight gradients 288 + 72 + 6; input gradients of dw and fc only (conv is the first layer)
    assert [(m.weight_grad, m.input_grad) for m in macs] == [(288, 0), (72, 72), (0, 0), (6, 6)]
    assert training_flops(SMALL) == 732 + 732 + 156 == 1620
    # distillation: per iteration, 4 real + 2 synthetic forward, 2 synthetic back to the input (all layers)
    assert distill_flops(SMALL, n_real=4, n_syn=2, iterations=10) == 10 * (4 * 732 + 2 * (732 + 732))


@pytest.mark.parametrize("layers,shape", [
    ((Layer("c", "conv2d", channels=3, kernel=(3, 3), padding="same", activation="relu"),
      Layer("c2", "conv2d", channels=4, kernel=(3, 3), stride=(2, 2)), Layer("fc", "linear", channels=5)), (2, 6, 6)),
    ((Layer("f", "flatten"), Layer("h", "linear", channels=7, activation="relu"), Layer("o", "linear", channels=3)),
     (2, 3)),
])
def test_matches_torch_flop_counter(layers, shape):
    """torch counts 2 FLOPs per MAC and skips the input gradient of a leaf input, as we do."""
    spec = ModelSpec(shape, layers)
    model = build(spec)
    x = torch.randn(3, *shape)
    with FlopCounterMode(display=False) as fc:
        model(x)
    assert fc.get_total_flops() == 3 * inference_flops(spec)
    with FlopCounterMode(display=False) as fc:
        model(x).sum().backward()
    assert fc.get_total_flops() == 3 * training_flops(spec)


def test_log_and_fixed_model():
    big = ModelSpec((1, 4, 4), (Layer("conv", "conv2d", channels=4, kernel=(3, 3), padding="same",
                                      activation="relu"),) + SMALL.layers[1:])
    log = FlopsLog()
    log.add(0, SMALL, train_samples=10, frozen_flops=100, distill=7)
    log.add(1, big, train_samples=20)
    s = log.summary(fixed=big)
    assert s["train_flops"] == 10 * training_flops(SMALL) + 20 * training_flops(big)
    assert s["total_flops"] == s["train_flops"] + 107
    assert s["final_inference_flops"] == inference_flops(big)
    assert s["fixed_model"]["train_flops"] == 30 * training_flops(big)
    assert s["fixed_model"]["total_flops"] == 30 * training_flops(big) + 107
    assert s["train_flops_ratio_to_fixed"] == pytest.approx(s["train_flops"] / (30 * training_flops(big)))
    assert [e["experience"] for e in s["per_experience"]] == [0, 1]
