"""The model description: shapes, MACs, torch module, split."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinycl.errors import ModelError
from tinycl.frozen import FakeQuantFrozenStage, FloatFrozenStage, LatentCache
from tinycl.model.build import build, get_weights
from tinycl.model.spec import Layer, ModelSpec
from tinycl.model.split import Split
from tinycl.model.zoo import digits_cnn
from tinycl.quant.ptq import quantize_model


def test_shapes_params_macs_by_hand():
    spec = digits_cnn()
    assert spec.output_shape("conv1") == (16, 8, 8)
    assert spec.output_shape("conv2") == (32, 4, 4)  # SAME, stride 2
    assert spec.output_shape("pool") == (64,)
    # conv1: 16*8*8 outputs x 1*3*3; conv2: 32*4*4 x 16*9
    assert spec.macs(spec.layers[0]) == 16 * 64 * 9
    assert spec.macs(spec.layers[1]) == 32 * 16 * 16 * 9
    assert spec.num_params(spec.layers[1]) == 32 * 16 * 9 + 32
    module = build(spec)
    assert spec.num_params() == sum(p.numel() for p in module.parameters())


def test_tf_same_padding_matches_explicit_pad():
    spec = ModelSpec((3, 7, 7), (Layer("c", "conv2d", channels=4, kernel=(3, 3), stride=(2, 2), padding="same"),))
    m = build(spec, generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 3, 7, 7)
    # TF SAME for 7 -> 4 with k=3, s=2: total pad 2, split 1/1; for 8 -> pad 1 at the bottom/right only
    ref = F.conv2d(F.pad(x, (1, 1, 1, 1)), m.params["c"].weight, m.params["c"].bias, stride=2)
    torch.testing.assert_close(m(x), ref)
    spec8 = ModelSpec((3, 8, 8), spec.layers)
    assert spec8.output_shape() == (4, 4, 4)
    m8 = build(spec8, get_weights(m))
    x8 = torch.randn(1, 3, 8, 8)
    ref8 = F.conv2d(F.pad(x8, (0, 1, 0, 1)), m.params["c"].weight, m.params["c"].bias, stride=2)
    torch.testing.assert_close(m8(x8), ref8)


def test_split_is_an_object_and_composes():
    spec = digits_cnn()
    split = Split.at(spec, "conv3")
    assert split.layer == "conv3" and split.latent_shape == (32, 2, 2)
    assert split.adaptive_spec.input_shape == (32, 2, 2)
    weights = get_weights(build(spec, generator=torch.Generator().manual_seed(1)))
    fw, aw = split.split_weights(weights)
    x = np.random.default_rng(0).random((5, 1, 8, 8)).astype(np.float32)
    whole = build(spec, weights)(torch.as_tensor(x))
    z = FloatFrozenStage(split.frozen_spec, fw)(x)
    torch.testing.assert_close(build(split.adaptive_spec, aw)(torch.as_tensor(z)), whole)
    with pytest.raises(ModelError, match="allowed: input, a layer index 0..6, or a name: conv1"):
        Split.at(spec, "conv9")
    last = Split.at(spec, len(spec.layers) - 1)  # the last layer, by index: nothing left to train
    assert last.layer == "head" and not last.adaptive_spec.layers
    assert Split.at(spec, 2) == split  # an index as tinycl inspect numbers it
    with pytest.raises(ModelError, match="an index is written without quotes"):  # a string names a layer
        Split.at(spec, "2")
    with pytest.raises(ModelError, match="out of range"):
        Split.at(spec, len(spec.layers))


def test_int8_frozen_stage_close_to_float_and_accounted():
    spec = digits_cnn()
    split = Split.at(spec, "conv3")
    fw, _ = split.split_weights(get_weights(build(spec, generator=torch.Generator().manual_seed(2))))
    x = np.random.default_rng(0).random((64, 1, 8, 8)).astype(np.float32)
    q = quantize_model(split.frozen_spec, fw, x)
    for layer in q.spec.layers:
        w = q.weights[layer.name]
        assert w["weight"].dtype == np.int8 and w["bias"].dtype == np.int32
        assert len(layer.quant.weight.scale) == layer.channels  # per output channel
    expected = sum(a.nbytes for d in q.weights.values() for a in d.values())
    expected += sum(8 * ly.channels for ly in q.spec.layers)  # float32 scale + int32 zero point per channel
    assert q.nbytes == expected
    fq, fl = FakeQuantFrozenStage(q)(x), FloatFrozenStage(split.frozen_spec, fw)(x)
    out_scale = q.spec.layers[-1].quant.output.scale[0]
    # latents lie on the int8 grid and stay within a few steps of the float stage
    grid = (fq / out_scale) - np.round(fq / out_scale)
    assert np.abs(grid).max() < 1e-3
    # three int8 layers: errors of a few steps at most, well under one step on average
    assert np.abs(fq - fl).max() < 8 * out_scale
    assert np.abs(fq - fl).mean() < out_scale


def test_latent_cache_runs_each_sample_once():
    spec = digits_cnn()
    split = Split.at(spec, "conv2")
    fw, _ = split.split_weights(get_weights(build(spec)))
    cache = LatentCache(FloatFrozenStage(split.frozen_spec, fw))
    x = np.random.default_rng(0).random((10, 1, 8, 8)).astype(np.float32)
    a = cache(x[:6], np.arange(6))
    b = cache(x[3:], np.arange(3, 10))
    assert cache.computed == 10
    np.testing.assert_array_equal(a[3:], b[:3])
