"""Every registered strategy through one suite, with a zoo model and with an imported .tflite frozen stage:
`partial_fit` returns the learner, a state dict loaded into a freshly built learner gives identical predictions,
metrics.json's bits are the bits the learner stores, its replay bytes are its stores' `nbytes`, and every
strategy writes the same metrics.json keys. Regression tests for the two bugs the registry removed."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from tinycl.config import DataConfig, MemoryConfig, ModelConfig, RunConfig, TrainConfig
from tinycl.data.registry import load_dataset
from tinycl.distill import DistillConfig
from tinycl.errors import ConfigError, ModelError
from tinycl.frozen import FloatInput
from tinycl.memory import ReplayMemory
from tinycl.model.build import build, get_weights
from tinycl.model.tflite_export import write_tflite
from tinycl.model.zoo import get_model
from tinycl.quant.intexec import IntegerFrozenStage
from tinycl.quant.ptq import quantize_model
from tinycl.runner import prepare, run_experiment, with_strategy
from tinycl.strategies import STRATEGIES, make_learner

TINY = RunConfig(
    seed=1,
    data=DataConfig(name="digits", first_classes=6, classes_per_experience=2, n_train=240, n_test=100),
    model=ModelConfig(arch="digits_cnn", split="conv3", pretrain_epochs=3),
    memory=MemoryConfig(capacity=20, bits=4),
    train=TrainConfig(epochs=1, batch_size=16, lr=0.01),
    distill=DistillConfig(ipc=2, iterations=3, real_batch=16),
)


@pytest.fixture(scope="module")
def tflite_path(tmp_path_factory):
    """A PTQ'd digits CNN written by tinycl's own TFLite writer, with a 12-way head: the data set's 10 classes
    get a new head, so the adaptive stage differs from the file's layers above the split (bug 2's condition)."""
    spec = get_model("digits_cnn", (1, 8, 8), 12)
    weights = get_weights(build(spec, generator=torch.Generator().manual_seed(0)))
    x = load_dataset("digits").x_train[:128]
    path = tmp_path_factory.mktemp("tflite") / "digits12.tflite"
    write_tflite(quantize_model(spec, weights, x), path)
    return path


@pytest.fixture(scope="module")
def setups(tflite_path):
    tfl = dataclasses.replace(TINY, model=dataclasses.replace(TINY.model, arch=str(tflite_path)))
    return {"zoo": (TINY, prepare(TINY)), "tflite": (tfl, prepare(tfl))}


def _fit(cfg, setup):
    learner = make_learner(cfg, setup)
    for exp in setup.scenario.train:
        assert learner.partial_fit(exp) is learner
    return learner


def _value_bits(learner) -> set[int]:
    """Bits per stored value, read off the stores themselves (packed memories, or float arrays)."""
    stores = learner.replay_stores
    return ({s.bits for s in stores if isinstance(s, ReplayMemory)}
            | {8 * s.itemsize for s in stores if isinstance(s, np.ndarray) and s.dtype.kind == "f"})


@pytest.mark.parametrize("model", ["zoo", "tflite"])
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_every_strategy(setups, strategy, model):
    cfg, setup = setups[model]
    cfg = with_strategy(cfg, strategy)
    learner = _fit(cfg, setup)  # partial_fit returns the learner
    test = setup.scenario.seen_test(len(setup.scenario) - 1)

    fresh = make_learner(cfg, setup)
    fresh.load_state_dict(learner.state_dict())
    np.testing.assert_array_equal(fresh.predict(test.x, test.ids), learner.predict(test.x, test.ids))

    m = run_experiment(cfg, setup=setup)  # the runner's loop: the same learner, the same seed
    assert m["bits"] == learner.stored_bits
    assert _value_bits(learner) == ({learner.stored_bits} if learner.stored_bits else set())
    assert m["replay_bytes"] == m["memory_bytes"]["replay_memory"] == learner.replay_nbytes
    assert learner.replay_nbytes == sum(s.nbytes for s in learner.replay_stores)
    assert (learner.replay_nbytes > 0) == (strategy != "naive")
    assert m["final_accuracy"] == pytest.approx(float((learner.predict(test.x, test.ids) == test.y).mean()))


def test_one_metrics_schema(setups):
    cfg, setup = setups["zoo"]
    keys = {}
    for strategy in STRATEGIES:
        m = run_experiment(with_strategy(cfg, strategy), setup=setup)
        keys[strategy] = set(m), set(m["flops"])
        assert m["flops"]["train_flops"] == sum(e["train_flops"] for e in m["flops"]["per_experience"]) > 0
    assert len(set(map(str, keys.values()))) == 1, keys


def test_zoo_int8_frozen_stage_runs_in_integers(setups):
    """Every latent comes from the device's arithmetic: the integer executor on the PTQ'd frozen stage."""
    _, setup = setups["zoo"]
    assert isinstance(setup.frozen, FloatInput) and isinstance(setup.frozen.stage, IntegerFrozenStage)
    exp = setup.scenario.train[0]
    q = setup.frozen.output_quant
    codes = setup.cache(exp.x, exp.ids) / q.scale[0] + q.zero_point[0]
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)


def test_bug1_distilled_replay_stores_the_bits_it_reports(setups):
    """run_experiment(strategy="distilled_replay", bits=4) reported 4 bits and stored 8."""
    cfg, setup = setups["zoo"]
    cfg = dataclasses.replace(cfg, memory=dataclasses.replace(cfg.memory, bits=8))
    m = run_experiment(cfg, setup=setup, strategy="distilled_replay", bits=4)
    learner = _fit(with_strategy(cfg, "distilled_replay", 4), setup)
    assert m["bits"] == 4 and {s.bits for s in learner.stores_} == {4}
    d = math.prod(setup.split.latent_shape)  # ipc 2 per class; 6 classes, then 2 and 2
    assert m["replay_bytes"] == sum(math.ceil(2 * n * d * 4 / 8) + 5 + 2 * n for n in (6, 2, 2))


def test_bug2_distilled_replay_with_a_tflite_frozen_stage(setups):
    """distilled_replay built its adaptive stage from the file's layers (a 12-way head) with the new head's
    weights (10-way), and failed; every strategy now builds from setup.adaptive_spec."""
    cfg, setup = setups["tflite"]
    assert setup.split.adaptive_spec.output_shape() == (12,) and setup.adaptive_spec.output_shape() == (10,)
    learner = make_learner(with_strategy(cfg, "distilled_replay"), setup)
    assert learner.adaptive.spec == setup.adaptive_spec
    assert learner.partial_fit(setup.scenario.train[0]) is learner


def test_registry_is_the_list_of_names():
    with pytest.raises(ConfigError, match="strategy 'magic' is not known; allowed: " + ", ".join(STRATEGIES)):
        RunConfig(strategy="magic")


def test_split_at_the_last_layer_of_a_zoo_model_is_one_line():
    cfg = dataclasses.replace(TINY, model=dataclasses.replace(TINY.model, split="head"))
    with pytest.raises(ConfigError, match="model.split 'head' is the last layer of digits_cnn: nothing is left"):
        prepare(cfg, pretrain=False)


def test_split_by_index_and_untrained_setup():
    cfg = dataclasses.replace(TINY, model=dataclasses.replace(TINY.model, split=2))
    setup = prepare(cfg, pretrain=False)
    assert setup.split.layer == "conv3" and setup.adaptive_spec == setup.split.adaptive_spec
    with pytest.raises(ModelError, match=r"split layer '2' names no layer; an index is written without quotes"):
        prepare(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, split="2")), dataset=setup.dataset,
                pretrain=False)
