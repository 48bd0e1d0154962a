"""Distribution Matching: it lowers the matching loss measured on random nets it never saw, keeps the set's size
and label balance, augments real and synthetic samples alike, and builds its embedders from layer records."""

import numpy as np
import pytest
import torch

from tinycl.data.digits import load_digits
from tinycl.distill import (
    DistillConfig,
    RandomEmbedder,
    augment,
    class_budget,
    convnet_spec,
    distill,
    distill_class,
    embedder_spec,
    matching_loss,
    resolve_augment,
)
from tinycl.errors import ConfigError
from tinycl.model.zoo import digits_cnn


@pytest.fixture(scope="module")
def digits():
    ds = load_digits()
    return ds.x_train, ds.y_train


@pytest.mark.parametrize("embedder,augment_kind,lr", [("model", "none", 1.0), ("convnet", "image", 1.0),
                                                     ("mlp", "signal", 0.1)])
def test_distillation_lowers_matching_loss(digits, embedder, augment_kind, lr):
    x, y = digits
    xc = x[y == 3]
    cfg = DistillConfig(space="input", ipc=4, iterations=40, real_batch=64, embedder=embedder, augment=augment_kind,
                        lr=lr)
    spec = embedder_spec(embedder, digits_cnn(), xc.shape[1:])
    syn, losses = distill_class(xc, 4, spec, cfg, np.random.default_rng(0))
    init = xc[np.random.default_rng(0).choice(len(xc), size=4, replace=False)]  # distill_class's first draw
    before = matching_loss(xc, init, spec, n_nets=16, seed=12345)
    after = matching_loss(xc, syn, spec, n_nets=16, seed=12345)
    assert after < 0.5 * before, (before, after)
    assert syn.shape == (4, 1, 8, 8) and syn.dtype == np.float32
    assert xc.min() <= syn.min() and syn.max() <= xc.max()  # stays inside the real data's range
    assert len(losses) == 40


def test_size_and_label_balance(digits):
    x, y = digits
    cfg = DistillConfig(fraction=0.05, iterations=2, real_batch=16)
    spec = embedder_spec("model", digits_cnn(), x.shape[1:])
    xs, ys, info = distill(x, y, cfg, spec, np.random.default_rng(0))
    counts = np.bincount(y)
    want = [class_budget(n, cfg) for n in counts]
    assert want == [max(1, round(0.05 * n)) for n in counts]
    np.testing.assert_array_equal(np.bincount(ys), want)
    assert len(xs) == len(ys) == sum(want) and np.all(np.diff(ys) >= 0)
    assert {c: v["synthetic"] for c, v in info.items()} == dict(enumerate(want))
    # ipc overrides the fraction; never more than the class has
    assert class_budget(100, DistillConfig(ipc=7)) == 7 and class_budget(3, DistillConfig(ipc=7)) == 3
    assert class_budget(10, DistillConfig()) == 1  # 1% of 10 rounds to 0: at least one sample per class


def test_augmentation_is_shared_and_differentiable():
    x = torch.rand(3, 3, 16, 16, requires_grad=True)
    for kind in ("image", "image_flip", "signal"):
        for seed in range(6):
            a, b = augment(x, kind, seed), augment(x.detach().clone(), kind, seed)
            torch.testing.assert_close(a, b, rtol=0, atol=0)  # same seed, same transform
            assert a.shape == x.shape
    augment(x, "image", 1).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert not torch.equal(augment(x, "image", 1), x)
    assert resolve_augment("auto", (3, 32, 32), "input") == "image"
    assert resolve_augment("auto", (6, 128), "input") == "signal"
    assert resolve_augment("auto", (32, 4, 4), "latent") == "none"


def test_embedders_from_layer_records():
    spec = embedder_spec("model", digits_cnn(), (1, 8, 8))
    assert spec.names == ["conv1", "conv2", "conv3", "conv4", "pool", "fc1"]  # the head is dropped
    # a model with a single weighted layer leaves nothing: DM's ConvNet instead
    head_only = digits_cnn().with_layers(digits_cnn().layers[-1:], input_shape=(64,))
    assert embedder_spec("model", head_only, (64,)).name == "dm_mlp"
    signal = convnet_spec((6, 32))
    assert signal.output_shape() == (64 * 4,)  # (6, 1, 32) -> three 1x2 pools -> 64 x 1 x 4
    emb = RandomEmbedder(signal)
    emb.resample(torch.Generator().manual_seed(0))
    assert emb(torch.randn(2, 6, 32)).shape == (2, 256)
    with pytest.raises(ConfigError, match="embedder model reads"):
        embedder_spec("model", digits_cnn(), (1, 9, 9))


@pytest.mark.parametrize("kwargs,message", [
    ({"space": "pixels"}, "distill.space 'pixels'; allowed: latent, input"),
    ({"ipc": 0}, "distill.ipc must be >= 1"),
    ({"fraction": 0.0}, "distill.fraction must be in (0, 1]"),
    ({"embedder": "resnet"}, "allowed: model, convnet, mlp"),
    ({"augment": "mixup"}, "allowed: auto, none, image, image_flip, signal"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        DistillConfig(**kwargs)
