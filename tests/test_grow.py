"""Net2WiderNet growth: a widened network computes the same function (torch outputs within 1e-5) for every layer
kind that can grow, the noise breaks the copies' symmetry without changing outputs, and impossible growth raises."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinycl.errors import ModelError
from tinycl.model.build import build, get_weights
from tinycl.model.grow import add_outputs, growable_layers, widen, widen_all
from tinycl.model.spec import Layer, ModelSpec
from tinycl.model.zoo import digits_cnn, mlp

C = "conv2d"
# (name, input shape, layers, layer to widen): every path a widened layer's units can take to its consumer
CASES = [
    ("conv->conv", (3, 6, 6), [Layer("a", C, channels=4, kernel=(3, 3), padding="same", activation="relu"),
                               Layer("b", C, channels=5, kernel=(3, 3), stride=(2, 2), padding="same")], "a"),
    ("conv->depthwise->conv", (2, 6, 6), [
        Layer("a", C, channels=4, kernel=(1, 1), activation="relu6"),
        Layer("dw", "depthwise_conv2d", kernel=(3, 3), padding="same", activation="relu"),
        Layer("b", C, channels=3, kernel=(1, 1))], "a"),
    ("conv->pools,pad,relu->conv", (2, 8, 8), [
        Layer("a", C, channels=3, kernel=(3, 3)),
        Layer("r", "relu"), Layer("mp", "max_pool2d", kernel=(2, 2), stride=(2, 2)),
        Layer("p", "pad", padding=(1, 0, 0, 1)),
        Layer("ap", "avg_pool2d", kernel=(2, 2), stride=(1, 1), padding="same"),
        Layer("b", C, channels=2, kernel=(2, 2))], "a"),
    ("conv->global_avg_pool->linear", (2, 5, 5), [
        Layer("a", C, channels=6, kernel=(3, 3), activation="relu"), Layer("g", "global_avg_pool"),
        Layer("fc", "linear", channels=3)], "a"),
    ("conv->flatten->linear", (2, 4, 4), [
        Layer("a", C, channels=3, kernel=(3, 3), padding="same", activation="relu"), Layer("f", "flatten"),
        Layer("fc", "linear", channels=4)], "a"),
    ("conv->linear (implicit flatten)", (2, 3, 3), [
        Layer("a", C, channels=3, kernel=(2, 2), activation="relu"), Layer("fc", "linear", channels=4)], "a"),
    ("linear->linear", (7,), [Layer("h", "linear", channels=5, activation="relu"),
                              Layer("fc", "linear", channels=3)], "h"),
]


def _outputs(spec, weights, x):
    with torch.no_grad():
        return build(spec, weights)(torch.as_tensor(x)).numpy()


def _random(spec, seed=0):
    weights = get_weights(build(spec, generator=torch.Generator().manual_seed(seed)))
    rng = np.random.default_rng(seed)
    for arrays in weights.values():  # non-zero biases, so copying them is tested too
        if "bias" in arrays:
            arrays["bias"] = rng.normal(0, 0.5, arrays["bias"].shape).astype(np.float32)
    return weights


@pytest.mark.parametrize("noise", [0.0, 0.05])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_widen_preserves_outputs(case, noise):
    _, shape, layers, name = case
    spec = ModelSpec(shape, tuple(layers))
    weights = _random(spec)
    x = np.random.default_rng(1).normal(size=(8, *shape)).astype(np.float32)
    old = spec.layers[spec.index(name)].channels
    new_spec, new_w = widen(spec, weights, name, 2 * old + 1, np.random.default_rng(2), noise=noise)
    assert new_spec.layers[new_spec.index(name)].channels == 2 * old + 1
    assert new_spec.output_shape() == spec.output_shape()
    np.testing.assert_allclose(_outputs(new_spec, new_w, x), _outputs(spec, weights, x), atol=1e-5, rtol=0)
    # the input weights are untouched
    np.testing.assert_array_equal(weights[name]["weight"], _random(spec)[name]["weight"])


def test_widen_all_on_zoo_models_and_growable_layers():
    rng = np.random.default_rng(0)
    for spec, x_shape in ((digits_cnn(), (1, 8, 8)), (mlp((12,), hidden=9, depth=3), (12,))):
        weights = _random(spec)
        assert "head" not in growable_layers(spec)
        x = rng.normal(size=(5, *x_shape)).astype(np.float32)
        grown, w2, changes = widen_all(spec, weights, 1.5, rng, noise=0.01)
        assert set(changes) == set(growable_layers(spec))
        assert all(new == int(np.ceil(old * 1.5)) for old, new in changes.values())
        np.testing.assert_allclose(_outputs(grown, w2, x), _outputs(spec, weights, x), atol=1e-5, rtol=0)
        assert grown.num_params() > spec.num_params()


def test_widen_all_respects_max_width():
    spec = mlp((4,), hidden=10, depth=2)
    grown, _, changes = widen_all(spec, _random(spec), 2.0, np.random.default_rng(0), max_width={"fc1": 13})
    assert changes == {"fc1": (10, 13), "fc2": (10, 20)}
    assert [ly.channels for ly in grown.layers if ly.op == "linear"] == [13, 20, 10]


def test_noise_breaks_symmetry_of_copies():
    """Copies of a unit get identical incoming-weight gradients without noise and different ones with it."""
    spec = ModelSpec((4,), (Layer("h", "linear", channels=2, activation="relu"), Layer("o", "linear", channels=3)))
    weights = _random(spec)
    x = torch.as_tensor(np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32))
    y = torch.arange(16) % 3
    for noise, same in ((0.0, True), (0.1, False)):
        grown, w2 = widen(spec, weights, "h", 4, np.random.default_rng(3), noise=noise)
        g = np.concatenate([np.arange(2), np.random.default_rng(3).integers(0, 2, size=2)])  # widen's copy map
        model = build(grown, w2)
        F.cross_entropy(model(x), y).backward()
        grad = model.params["h"].weight.grad.numpy()
        copy, original = 2, g[2]
        # a copy's gradient is its original's scaled by the ratio of their outgoing shares (1 without noise)
        assert np.linalg.norm(grad[original]) > 1e-3
        r = grad[copy] @ grad[original] / (grad[original] @ grad[original])
        np.testing.assert_allclose(grad[copy], r * grad[original], atol=1e-6)
        assert (abs(r - 1) < 1e-5) == same


def test_add_outputs_keeps_old_logits():
    spec = digits_cnn(n_classes=4)
    weights = _random(spec)
    x = np.random.default_rng(0).random((6, 1, 8, 8)).astype(np.float32)
    grown, w2 = add_outputs(spec, weights, 3, np.random.default_rng(0), scale=1.0)
    out, ref = _outputs(grown, w2, x), _outputs(spec, weights, x)
    assert out.shape == (6, 7)
    np.testing.assert_allclose(out[:, :4], ref, atol=1e-6, rtol=0)
    zero_spec, zero_w = add_outputs(spec, weights, 2, np.random.default_rng(0))
    assert np.all(_outputs(zero_spec, zero_w, x)[:, 4:] == 0)


def test_add_outputs_through_a_trailing_flatten():
    """Imported TFLite classifiers end in a 1x1 conv and a flatten (MobileNet's Conv2d_1c_1x1, SpatialSqueeze)."""
    spec = ModelSpec((3, 1, 1), (Layer("logits", "conv2d", channels=4, kernel=(1, 1)), Layer("squeeze", "flatten")))
    weights = _random(spec)
    x = np.random.default_rng(1).random((5, 3, 1, 1)).astype(np.float32)
    grown, w2 = add_outputs(spec, weights, 2, np.random.default_rng(0), scale=1.0)
    assert grown.output_shape() == (6,) and [ly.op for ly in grown.layers] == ["conv2d", "flatten"]
    np.testing.assert_allclose(_outputs(grown, w2, x)[:, :4], _outputs(spec, weights, x), atol=1e-6, rtol=0)
    with pytest.raises(ModelError, match="last weighted layer 'pool' is 'avg_pool2d'"):
        add_outputs(ModelSpec((3, 4, 4), (Layer("pool", "avg_pool2d", kernel=(4, 4)), Layer("f", "flatten"))), {}, 1,
                    np.random.default_rng(0))


@pytest.mark.parametrize("layers,name,width,message", [
    ([Layer("h", "linear", channels=3)], "h", 5, "read by 0 layers"),
    ([Layer("h", "linear", channels=3), Layer("o", "linear", channels=2)], "h", 2, "never removes units"),
    ([Layer("h", "linear", channels=3), Layer("o", "linear", channels=2)], "o", 4, "read by 0 layers"),
    ([Layer("a", C, channels=2, kernel=(1, 1)), Layer("b", C, channels=2, kernel=(1, 1)),
      Layer("s", "add", inputs=("a", "b"))], "a", 4, "read by 2 layers"),
    ([Layer("a", C, channels=2, kernel=(1, 1)), Layer("r", "reshape", shape=(4, 2, 1)),
      Layer("o", "linear", channels=2)], "a", 4, "reshape"),
    ([Layer("a", C, channels=2, kernel=(1, 1)), Layer("g", "global_avg_pool"),
      Layer("o", "linear", channels=2)], "g", 4, "only layers that mix units widen: conv2d, linear"),
])
def test_impossible_growth_raises(layers, name, width, message):
    spec = ModelSpec((2, 2, 2), tuple(layers))
    with pytest.raises(ModelError, match=message):
        widen(spec, _random(spec), name, width, np.random.default_rng(0))
