"""Batch renormalization: the op against a reference written from Ioffe (2017)'s equations, its insertion into an
adaptive stage (the same function at deployment), and growth through it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinycl.model.adapt import insert_batch_renorm
from tinycl.model.build import build, get_weights
from tinycl.model.grow import widen
from tinycl.model.ops import BRN_EPS, BRN_MOMENTUM
from tinycl.model.spec import Layer, ModelSpec


def reference(x, gamma, beta, mean, var, r_max, d_max, training):
    """Ioffe (2017), Algorithm 1, per channel (axis 1): returns (y, new running mean, new running var)."""
    axes, view = (0, 2, 3), (1, -1, 1, 1)
    sigma = torch.sqrt(var + BRN_EPS)
    if not training:
        return gamma.view(view) * (x - mean.view(view)) / sigma.view(view) + beta.view(view), mean, var
    mu_b = x.sum(axes) / (x.numel() / x.shape[1])
    var_b = ((x - mu_b.view(view)) ** 2).sum(axes) / (x.numel() / x.shape[1])
    sigma_b = torch.sqrt(var_b + BRN_EPS)
    r = torch.clamp(sigma_b.detach() / sigma, 1 / r_max, r_max)
    d = torch.clamp((mu_b.detach() - mean) / sigma, -d_max, d_max)
    xhat = (x - mu_b.view(view)) / sigma_b.view(view) * r.view(view) + d.view(view)
    y = gamma.view(view) * xhat + beta.view(view)
    return y, mean + BRN_MOMENTUM * (mu_b.detach() - mean), var + BRN_MOMENTUM * (var_b.detach() - var)


@pytest.mark.parametrize("training,r_max,d_max", [(True, 1.25, 0.5), (True, 1.0, 0.0), (True, 3.0, 5.0),
                                                  (False, 1.25, 0.5)])
def test_forward_and_backward_match_the_paper(training, r_max, d_max):
    g = torch.Generator().manual_seed(0)
    spec = ModelSpec((3, 4, 5), (Layer("brn", "batch_renorm"),))
    module = build(spec).train(training)
    p = module.params["brn"]
    p.r_max, p.d_max = r_max, d_max
    with torch.no_grad():
        p.weight.copy_(torch.rand(3, generator=g) + 0.5)
        p.bias.copy_(torch.randn(3, generator=g))
        p.running_mean.copy_(torch.randn(3, generator=g))
        p.running_var.copy_(torch.rand(3, generator=g) + 0.2)
    gamma, beta = p.weight.detach().clone().requires_grad_(), p.bias.detach().clone().requires_grad_()
    mean, var = p.running_mean.clone(), p.running_var.clone()
    x = (torch.randn(6, 3, 4, 5, generator=g) * 2 + 1).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    dy = torch.randn(6, 3, 4, 5, generator=g)

    y = module(x)
    y.backward(dy)
    y_ref, mean_ref, var_ref = reference(x_ref, gamma, beta, mean, var, r_max, d_max, training)
    y_ref.backward(dy)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(p.weight.grad, gamma.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(p.bias.grad, beta.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(p.running_mean, mean_ref)
    torch.testing.assert_close(p.running_var, var_ref)


def stage() -> tuple[ModelSpec, dict]:
    spec = ModelSpec((4, 6, 6), (
        Layer("pw", "conv2d", channels=8, activation="relu6"),
        Layer("dw", "depthwise_conv2d", kernel=(3, 3), padding="same", activation="relu6"),
        Layer("conv", "conv2d", channels=6, kernel=(3, 3), stride=(2, 2), padding="same", activation="relu"),
        Layer("pool", "global_avg_pool"),
        Layer("fc", "linear", channels=8, activation="relu"),
        Layer("head", "linear", channels=3),
    ))
    module = build(spec, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    return spec, get_weights(module)


def test_inserting_batch_renorm_keeps_the_deployed_function():
    spec, weights = stage()
    rng = np.random.default_rng(0)
    first = rng.uniform(0, 6, (100, 4, 6, 6)).astype(np.float32)  # the first experience's latents
    new_spec, new_weights = insert_batch_renorm(spec, weights, first, batch_size=32)
    assert [ly.op for ly in new_spec.layers] == ["conv2d", "batch_renorm", "depthwise_conv2d", "batch_renorm",
                                                 "conv2d", "batch_renorm", "global_avg_pool", "linear", "linear"]
    assert new_spec.layers[1].activation == "relu6" and new_spec.layers[0].activation == "none"
    x = torch.as_tensor(rng.uniform(0, 6, (20, 4, 6, 6)).astype(np.float32))
    with torch.no_grad():
        want = build(spec, weights).eval()(x)
        got = build(new_spec, new_weights).eval()(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
    # the statistics are the first experience's: the pointwise conv's pre-activation mean per channel
    pre = torch.nn.functional.conv2d(torch.as_tensor(first), torch.as_tensor(weights["pw"]["weight"]),
                                     torch.as_tensor(weights["pw"]["bias"]))
    np.testing.assert_allclose(new_weights["pw/brn"]["running_mean"], pre.mean((0, 2, 3)).numpy(), rtol=1e-4,
                               atol=1e-5)


def test_growth_copies_batch_renorm_statistics_per_unit():
    spec, weights = stage()
    spec, weights = insert_batch_renorm(spec, weights, np.random.default_rng(3).uniform(0, 6, (50, 4, 6, 6))
                                        .astype(np.float32))
    wide, wide_w = widen(spec, weights, "pw", 12, np.random.default_rng(0))
    assert wide_w["pw/brn"]["running_var"].shape == (12,) and wide_w["dw/brn"]["weight"].shape == (12,)
    x = torch.rand(5, 4, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(build(wide, wide_w).eval()(x), build(spec, weights).eval()(x), rtol=1e-5,
                                   atol=1e-5)
