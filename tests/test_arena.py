"""The static arena plan of a training step: lifetimes counted by hand on a small stage, planned tensors
checked (independently of the planner) never to share bytes while both are live, and the MobileNet-V1 adaptive
stage planned within 10% of its lower bound."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinycl.device.arena import ArenaPlan, plan_arena, training_schedule
from tinycl.device.trainer import DeviceTrainer
from tinycl.errors import ModelError
from tinycl.model.build import build, get_weights
from tinycl.model.mobilenet import mobilenet_v1
from tinycl.model.spec import Layer, ModelSpec
from tinycl.model.split import Split
from tinycl.model.zoo import digits_cnn


def mobilenet_v1_adaptive() -> ModelSpec:
    """MobileNet-V1 1.0/128 above the default latent replay layer: 512x8x8 latent up to the 50-way head."""
    return Split.at(mobilenet_v1((3, 128, 128), n_classes=50), "conv5_4/dw").adaptive_spec


def overlaps_while_live(plan: ArenaPlan) -> list[tuple[int, str, str]]:
    """(call, a, b) for every pair of tensors live at the same call whose byte ranges intersect."""
    bad = []
    tensors = plan.schedule.tensors
    for t in range(len(plan.schedule.ops)):
        live = sorted((plan.offsets[x.name], plan.offsets[x.name] + x.nbytes, x.name)
                      for x in tensors.values() if x.first <= t <= x.last and x.name in plan.offsets)
        for (_, end, a), (start, _, b) in zip(live, live[1:], strict=False):
            if start < end:
                bad.append((t, a, b))
    return bad


def test_lifetimes_and_bounds_counted_by_hand():
    spec = ModelSpec((4,), (Layer("fc1", "linear", channels=3, activation="relu"), Layer("fc2", "linear", channels=2)))
    s = training_schedule(spec, momentum=True)
    assert [op.name for op in s.ops] == [
        "zero grads", "load input", "forward fc1", "forward fc2", "loss", "weight grad fc2", "input grad fc2",
        "activation grad fc1", "weight grad fc1", "sgd"]  # no input grad for fc1: the first trainable layer
    life = {name: (x.first, x.last) for name, x in s.tensors.items() if x.kind not in ("param", "param_grad",
                                                                                        "momentum")}
    assert life == {"input": (1, 8), "fc1.out": (2, 7), "fc2.out": (3, 4), "fc2.out.grad": (4, 6),
                    "fc1.out.grad": (6, 8)}
    persistent = 3 * 4 * (4 * 3 + 3 + 3 * 2 + 2)  # weights, their gradients, momentum: 23 floats each
    # most live at "input grad fc2": input 4 + fc1.out 3 + fc2.out.grad 2 + fc1.out.grad 3 floats
    assert s.lower_bound() == persistent + 4 * 12
    assert s.separate_bytes() == persistent + 4 * (4 + 3 + 2 + 2 + 3)
    plan = plan_arena(s, alignment=4)
    assert plan.size == plan.lower_bound and not overlaps_while_live(plan)


def test_mobilenet_v1_adaptive_stage_within_ten_percent_of_lower_bound():
    spec = mobilenet_v1_adaptive()
    s = training_schedule(spec, momentum=True)
    assert s.bytes_by_kind()["param"] == 4 * spec.num_params() == 4 * 2_171_904
    assert s.tensors["input"].nbytes == 4 * 512 * 8 * 8
    for kinds in (("input", "activation", "gradient"), None):  # the per-sample workspace alone, and everything
        plan = plan_arena(s, kinds=kinds) if kinds else plan_arena(s)
        assert not overlaps_while_live(plan)
        assert plan.lower_bound <= plan.size <= 1.10 * plan.lower_bound, plan.report()
        assert plan.size < plan.separate_bytes
        assert all(offset % 16 == 0 for offset in plan.offsets.values())


def test_checker_catches_an_overlapping_plan():
    s = training_schedule(digits_cnn().with_layers(digits_cnn().layers[3:], input_shape=(32, 2, 2)))
    plan = plan_arena(s)
    assert not overlaps_while_live(plan) and not plan.conflicts()
    bad = dataclasses.replace(plan, offsets={**plan.offsets, "conv4.out": plan.offsets["input"]})
    assert overlaps_while_live(bad) and ("input", "conv4.out") in bad.conflicts()


def random_spec(rng: np.random.Generator) -> ModelSpec:
    """A random sequential stage of the device's ops (drawn again until every kernel fits its input)."""
    while True:
        layers, c, hw = [], int(rng.integers(1, 6)), int(rng.integers(4, 10))
        for i in range(int(rng.integers(1, 6))):
            kind = rng.choice(["conv2d", "depthwise_conv2d", "pointwise", "avg_pool2d", "relu6"])
            k, s = int(rng.integers(1, 4)), int(rng.integers(1, 3))
            pad = "same" if rng.random() < 0.5 else "valid"
            if kind == "pointwise":
                c = int(rng.integers(1, 9))
                layers.append(Layer(f"l{i}", "conv2d", channels=c, activation="relu"))
            elif kind == "conv2d":
                c = int(rng.integers(1, 9))
                layers.append(Layer(f"l{i}", "conv2d", channels=c, kernel=(k, k), stride=(s, s), padding=pad))
            elif kind == "depthwise_conv2d":
                layers.append(Layer(f"l{i}", kind, kernel=(k, k), stride=(s, s), padding=pad, activation="relu6"))
            elif kind == "avg_pool2d":
                layers.append(Layer(f"l{i}", kind, kernel=(k, k), stride=(s, s), padding="same"))
            else:
                layers.append(Layer(f"l{i}", "relu6"))
        layers += [Layer("gap", "global_avg_pool"), Layer("head", "linear", channels=int(rng.integers(2, 6)))]
        try:
            return ModelSpec((c, hw, hw), tuple(layers), name="random")
        except ModelError:  # a kernel larger than its input
            continue


@pytest.mark.parametrize("seed", range(25))
def test_random_stages_never_overlap(seed):
    spec = random_spec(np.random.default_rng(seed))
    s = training_schedule(spec, momentum=bool(seed % 2))
    plan = plan_arena(s, alignment=4)
    assert not overlaps_while_live(plan)
    assert s.lower_bound() <= plan.size <= s.separate_bytes()
    assert max(plan.offsets[n] + x.nbytes for n, x in s.tensors.items()) <= plan.size


@pytest.mark.parametrize("seed", range(6))
def test_random_stages_train_like_torch_in_their_planned_arena(seed):
    """The runtime works in the planned offsets (tensors reuse each other's bytes) and still matches torch."""
    spec = random_spec(np.random.default_rng(seed))
    module = build(spec, generator=torch.Generator().manual_seed(seed))
    twin = copy.deepcopy(module)
    opt = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.5)
    dev = DeviceTrainer(twin, lr=0.1, momentum=0.5, alignment=4)
    assert dev.plan.size < dev.plan.separate_bytes  # something is shared
    rng = np.random.default_rng(seed)
    for _ in range(2):
        x = rng.standard_normal((3, *spec.input_shape)).astype(np.float32)
        y = rng.integers(0, spec.output_shape()[0], 3)
        opt.zero_grad()
        F.cross_entropy(module(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        opt.step()
        dev.step(x, y)
    for name, arrays in get_weights(module).items():
        for key, want in arrays.items():
            got = get_weights(twin)[name][key]
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max(), err_msg=name)


def test_bad_alignment_and_unsupported_ops_are_user_errors():
    s = training_schedule(mobilenet_v1_adaptive())
    with pytest.raises(ModelError, match="power of two"):
        plan_arena(s, alignment=12)
    spec = ModelSpec((2, 4, 4), (Layer("a", "conv2d", channels=2), Layer("b", "conv2d", channels=2),
                                 Layer("sum", "add", inputs=("a", "b")), Layer("gap", "global_avg_pool"),
                                 Layer("fc", "linear", channels=2)))
    with pytest.raises(ModelError, match="allowed ops"):
        training_schedule(spec)
