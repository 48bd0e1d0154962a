"""The DistilledReplay learner end to end on the digits: it beats naive fine-tuning, stores exactly its distilled
sets at Q bits (bytes counted by hand), grows without changing its predictions, logs FLOPs and growth into
metrics.json, checkpoints through growth, and `tinycl run` takes its options with the usual one-line errors."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from tinycl.cli import main
from tinycl.config import DataConfig, MemoryConfig, ModelConfig, RunConfig, TrainConfig
from tinycl.distill import DistillConfig
from tinycl.errors import ConfigError
from tinycl.flops import inference_flops, training_flops
from tinycl.growth import GrowthConfig, GrowthDecision
from tinycl.model.grow import widen_all
from tinycl.runner import make_learner, prepare, run_experiment

CFG = RunConfig(
    strategy="distilled_replay", seed=0,
    data=DataConfig(name="digits", first_classes=4, classes_per_experience=2),
    model=ModelConfig(pretrain_epochs=15),
    memory=MemoryConfig(bits=8),
    train=TrainConfig(epochs=2, batch_size=32, lr=0.01),
    distill=DistillConfig(ipc=3, iterations=15, real_batch=32),
    growth=GrowthConfig(policy="schedule", at=(1,), factor=1.5),
)


@pytest.fixture(scope="module")
def setup():
    return prepare(CFG)


def test_end_to_end_beats_naive_and_counts_bytes_and_flops(setup, tmp_path):
    m = run_experiment(CFG, tmp_path / "run", setup=setup)
    naive = run_experiment(CFG, setup=setup, strategy="naive")
    assert m["final_accuracy"] > naive["final_accuracy"] + 0.2, (m["final_accuracy"], naive["final_accuracy"])
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk["flops"]["train_flops"] == m["flops"]["train_flops"] > 0
    # 4 experiences (4 + 3 x 2 classes), ipc 3 per class; latents 32 x 2 x 2 at 8 bits
    assert m["synthetic_per_class"] == {str(c): 3 for c in range(10)}
    d = 32 * 2 * 2
    by_hand = sum(math.ceil(n * 3 * d * 8 / 8) + 5 + n * 3 for n in (4, 2, 2, 2))  # codes + scale/zero + labels
    assert m["replay_bytes"] == m["memory_bytes"]["replay_memory"] == by_hand
    assert m["memory_bytes"]["distill_workspace"] == (2 * 3 + 32) * d * 4
    # growth after experience 1 only, by the factor asked; FLOPs priced on the spec each experience trained
    grown = [g for g in m["growth"] if g["factor"] > 1]
    assert [g["experience"] for g in grown] == [1] and grown[0]["widths"] == {"conv4": [64, 96], "fc1": [64, 96]}
    per = m["flops"]["per_experience"]
    small = setup.split.adaptive_spec
    large, _, _ = widen_all(small, setup.adaptive_weights, 1.5, np.random.default_rng(0))
    assert [e["inference_flops"] for e in per] == [inference_flops(s) for s in (small, small, large, large)]
    for e, spec in zip(per, (small, small, large, large), strict=True):
        assert e["train_flops"] == e["train_samples"] * training_flops(spec)
        assert e["distill_flops"] > 0 and e["frozen_flops"] > 0
    assert per[0]["train_samples"] == 2 * len(setup.scenario.train[0])  # 2 epochs, nothing to replay yet
    assert m["flops"]["fixed_model"]["train_flops"] == sum(e["train_samples"] for e in per) * training_flops(large)
    assert 0 < m["flops"]["train_flops_ratio_to_fixed"] < 1


def test_growth_keeps_predictions(setup):
    learner = make_learner(CFG, setup)
    probe = setup.scenario.test[0]
    z = learner.encoder(probe.x, probe.ids)
    seen = {}

    def policy(state):
        with torch.no_grad():
            seen["before"] = learner.adaptive(torch.as_tensor(z)).numpy()
        return GrowthDecision(2.0, "test")

    learner.policy = policy
    learner.partial_fit(setup.scenario.train[0])
    with torch.no_grad():
        after = learner.adaptive(torch.as_tensor(z)).numpy()
    np.testing.assert_allclose(after, seen["before"], atol=1e-5, rtol=0)
    assert learner.adaptive.spec.layers[learner.adaptive.spec.index("fc1")].channels == 128
    assert inference_flops(learner.adaptive.spec) == learner.growth_log_[-1]["inference_flops"]


def test_checkpoint_through_growth_continues_identically(setup):
    a = make_learner(CFG, setup)
    for exp in setup.scenario.train[:2]:
        a.partial_fit(exp)
    b = make_learner(CFG, setup)
    b.load_state_dict(a.state_dict())
    assert b.adaptive.spec == a.adaptive.spec and b.replay_nbytes == a.replay_nbytes
    for learner in (a, b):
        learner.partial_fit(setup.scenario.train[2])
    test = setup.scenario.seen_test(2)
    np.testing.assert_array_equal(a.predict(test.x, test.ids), b.predict(test.x, test.ids))


def test_input_space_and_fixed_large_model(setup):
    cfg = dataclasses.replace(CFG, distill=dataclasses.replace(CFG.distill, space="input"),
                              growth=GrowthConfig(policy="none", start_factor=2.0))
    learner = make_learner(cfg, setup)
    assert learner.adaptive.spec.layers[learner.adaptive.spec.index("conv4")].channels == 128  # large from the start
    for exp in setup.scenario.train[:2]:
        learner.partial_fit(exp)
    assert all(m.sample_shape == (1, 8, 8) for m in learner.stores_)  # raw inputs were distilled
    summary = learner.extra_metrics()["flops"]
    assert summary["train_flops_ratio_to_fixed"] == 1.0
    e1 = summary["per_experience"][1]
    # replayed inputs run through the frozen stage again: more frozen work than the new samples alone
    new = len(setup.scenario.train[1])
    assert e1["frozen_flops"] > new * inference_flops(learner.encoder.stage.spec)
    assert e1["train_flops"] == e1["train_samples"] * training_flops(learner.adaptive.spec)


def _toml(tmp_path, extra=""):
    path = tmp_path / "distilled.toml"
    path.write_text('strategy = "distilled_replay"\n[data]\nn_train = 300\nn_test = 100\nfirst_classes = 6\n'
                    'classes_per_experience = 2\n[model]\npretrain_epochs = 3\n[train]\nepochs = 1\nbatch_size = 16\n'
                    '[distill]\nipc = 2\niterations = 5\nreal_batch = 16\n[growth]\npolicy = "accuracy"\n'
                    'target = 0.99\nfactor = 1.25\n' + extra)
    return path


def test_cli_runs_learner_from_config(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["run", str(_toml(tmp_path)), "--out", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["strategy"] == "distilled_replay" and len(metrics["flops"]["per_experience"]) == 3
    assert all("accuracy_held" in g for g in metrics["growth"])
    saved = (out / "config.toml").read_text()
    assert "[distill]" in saved and "[growth]" in saved and 'policy = "accuracy"' in saved
    assert main(["run", str(_toml(tmp_path)), "--out", str(out), "--resume", "--no-progress"]) == 0
    assert json.loads((out / "metrics.json").read_text())["final_accuracy"] == metrics["final_accuracy"]


@pytest.mark.parametrize("override,message", [
    ("distill.space=pixels", "distill.space 'pixels'; allowed: latent, input"),
    ("distill.bogus=1", "unknown config key 'distill.bogus'; allowed in distill: space"),
    ("distill.ipc=many", "distill.ipc must be of type int, got 'many'"),
    ("growth.policy=magic", "growth.policy 'magic'; allowed: none, accuracy, schedule"),
    ("growth.factor=1", "growth.factor must be > 1"),
    ("growth.at=[1.5]", "growth.at must be of type int"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, override, message):
    assert main(["run", str(_toml(tmp_path)), "--set", override, "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_distilled_sets_stored_at_q_bits(setup):
    stores = {}
    for bits in (32, 4):
        cfg = dataclasses.replace(CFG, memory=MemoryConfig(bits=bits, granularity="channel"))
        learner = make_learner(cfg, setup)
        learner.partial_fit(setup.scenario.train[0])
        (stores[bits],) = learner.stores_
    memory, d, n = stores[4], 32 * 2 * 2, 4 * 3
    assert memory.codes().max() <= 15
    assert memory.nbytes == math.ceil(n * d * 4 / 8) + 32 * 5 + n  # packed codes, per-channel qparams, labels
    exact, y = stores[32].read(np.arange(n))
    x, y4 = memory.read(np.arange(n))
    assert np.array_equal(y, y4) and np.array_equal(np.bincount(y), [3, 3, 3, 3])
    # the same distilled set (same seed), rounded to 4 bits: at most half a step per channel off
    step = memory.scale_.reshape(1, -1, 1, 1)
    assert np.all(np.abs(x - exact) <= step / 2 + 1e-5)


def test_growth_layers_are_checked(setup):
    cfg = dataclasses.replace(CFG, growth=GrowthConfig(layers=("conv1",)))
    with pytest.raises(ConfigError, match=r"growth.layers \['conv1'\] cannot grow; allowed: conv4, fc1"):
        make_learner(cfg, setup)


def test_budget_is_shared_by_the_classes_seen_and_cuts_keep_the_codes(setup):
    """distill.budget 20 over 4 + 2 + 2 classes: 5 per class after experience 0, then 3 and 2 (20 // 6, 20 // 8),
    the older sets cut to the first ones of each class with their codes unchanged; the replay bytes never grow."""
    cfg = dataclasses.replace(CFG, distill=DistillConfig(budget=20, iterations=5, real_batch=32),
                              growth=GrowthConfig(policy="none"))
    learner = make_learner(cfg, setup)
    sizes, before = [], None
    for k, exp in enumerate(setup.scenario.train[:3]):
        learner.partial_fit(exp)
        quota = (5, 3, 2)[k]
        assert set(learner.synthetic_counts().values()) == {quota}
        if before is not None:  # the first store after a cut: its first `quota` samples per class, same codes
            labels = before.labels[: before.size]
            keep = np.concatenate([np.flatnonzero(labels == c)[:quota] for c in np.unique(labels)])
            assert np.array_equal(learner.stores_[0].codes(), before.codes()[keep])
        before = learner.stores_[0]
        sizes.append(learner.replay_nbytes)
        assert learner.distill_log_[-1]["older_sets_cut_to"] == quota
    assert sizes[0] >= sizes[1] >= sizes[2]
    with pytest.raises(ConfigError, match=r"classes \[0, 1, 2, 3\] arrive again: unset distill.budget"):
        learner.partial_fit(setup.scenario.train[0])  # a class that comes back would hold two shares
    with pytest.raises(ConfigError, match="distill.budget must be >= 1 and excludes distill.ipc"):
        DistillConfig(budget=20, ipc=3)
    tiny = make_learner(dataclasses.replace(cfg, distill=DistillConfig(budget=3, iterations=0)), setup)
    with pytest.raises(ConfigError, match="distill.budget 3 is below the 4 classes seen so far"):
        tiny.partial_fit(setup.scenario.train[0])
