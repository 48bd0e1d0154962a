"""A run whose pretrained model is an int8 .tflite file: integer frozen stage, float adaptive stage with a new
head, images resized to the model's input."""

import numpy as np
import pytest
from conftest import require_shared_data, require_shared_model

from tinycl.config import load_config
from tinycl.errors import ConfigError
from tinycl.frozen import ImageInput
from tinycl.quant.intexec import IntegerFrozenStage
from tinycl.runner import make_learner, prepare, run_experiment


@pytest.fixture(scope="module")
def cfg():
    root = require_shared_data("cifar10")
    model = require_shared_model("mobilenet_v1_0.25_128_quant.tflite")
    return load_config(None, [f"model.arch='{model}'", "model.split=24", "data.name='cifar10'",
                              f"data.root='{root}'", "data.options.per_class=6", "data.first_classes=4",
                              "data.classes_per_experience=3", "memory.capacity=8", "memory.bits=4",
                              "train.epochs=1", "train.batch_size=8"])


def test_tflite_model_runs_end_to_end(cfg, tmp_path):
    setup = prepare(cfg)
    assert setup.split.layer == "Conv2d_12_pointwise" and setup.split.latent_shape == (256, 4, 4)
    assert isinstance(setup.frozen, ImageInput) and isinstance(setup.frozen.stage, IntegerFrozenStage)
    assert setup.adaptive_spec.output_shape() == (10,)  # a new 10-way head in place of ImageNet's 1001
    metrics = run_experiment(cfg, tmp_path, setup=setup)
    assert metrics["experiences_done"] == 3
    # each image went through the integer frozen stage exactly once (the latent cache)
    assert metrics["latents_computed"] == len(setup.dataset.y_train) + len(setup.dataset.y_test)
    # latents are on the layer's int8 grid
    z = setup.cache(setup.scenario.train[0].x, setup.scenario.train[0].ids)
    q = setup.frozen.output_quant
    codes = z / q.scale[0] + q.zero_point[0]
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)
    learner = make_learner(cfg, setup)
    assert learner.memory.sample_shape == (256, 4, 4)


def test_tflite_frozen_stage_must_be_int8(cfg):
    from dataclasses import replace

    with pytest.raises(ConfigError, match="must be int8"):
        prepare(replace(cfg, model=replace(cfg.model, frozen="fp32")))
