"""Each learner on tiny data, the mini-batch mix, checkpoints and the run loop with resume."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from tinycl.config import DataConfig, MemoryConfig, ModelConfig, RunConfig, TrainConfig
from tinycl.errors import ConfigError
from tinycl.learners.base import Learner
from tinycl.learners.replay import Joint, LatentReplay, RawReplay
from tinycl.runner import make_learner, prepare, run_experiment, with_strategy

TINY = RunConfig(
    seed=3,
    data=DataConfig(name="digits", first_classes=4, classes_per_experience=2, n_train=400, n_test=200),
    model=ModelConfig(arch="digits_cnn", split="conv2", pretrain_epochs=5),
    memory=MemoryConfig(capacity=40, bits=4),
    train=TrainConfig(epochs=2, batch_size=16, lr=0.01, replay_ratio=0.5),
)


@pytest.fixture(scope="module")
def setup():
    return prepare(TINY)


def test_mix_follows_pellegrini():
    cfg = TrainConfig(batch_size=128)
    assert cfg.mix(300, 1500) == (21, 107)
    assert cfg.mix(300, 3000) == (12, 116)
    assert cfg.mix(300, 0) == (128, 0)
    assert TrainConfig(batch_size=32, replay_ratio=0.75).mix(100, 50) == (8, 24)
    # a learner's own share (distilled replay: old classes / all classes) in place of Pellegrini's rule ...
    assert cfg.mix(300, 40, share=0.75) == (32, 96)
    # ... unless train.replay_ratio fixes it
    assert TrainConfig(batch_size=32, replay_ratio=0.5).mix(100, 50, share=0.75) == (16, 16)


@pytest.mark.parametrize("strategy,cls", [("naive", Learner), ("joint", Joint), ("latent_replay", LatentReplay),
                                          ("raw_replay", RawReplay)])
def test_each_learner_end_to_end(setup, strategy, cls):
    learner = make_learner(with_strategy(TINY, strategy), setup)
    assert type(learner) is cls
    for exp in setup.scenario.train:
        assert learner.partial_fit(exp) is learner
    test = setup.scenario.seen_test(len(setup.scenario) - 1)
    pred = learner.predict(test.x, test.ids)
    assert pred.shape == test.y.shape and pred.dtype == np.int64
    assert (pred == test.y).mean() > 0.1  # better than chance over 10 classes
    from tinycl.flops import training_flops

    flops = learner.extra_metrics()["flops"]
    assert sum(e["train_samples"] for e in flops["per_experience"]) == learner.sample_passes > 0
    assert flops["train_flops"] == learner.sample_passes * training_flops(learner.adaptive.spec)
    report = learner.memory_report()
    assert report["adaptive_weights"] == sum(p.numel() * 4 for p in learner.adaptive.parameters())
    assert report["frozen_weights"] == setup.frozen.nbytes > 0
    if strategy in ("latent_replay", "raw_replay"):
        stored = set(learner.memory.labels[: learner.memory.size].tolist())
        for exp in setup.scenario.train:
            assert stored & set(exp.classes), f"the memory holds samples of experience {exp.index}"
        assert report["replay_memory"] == learner.memory.nbytes


def test_raw_replay_gets_the_latent_memory_bytes(setup):
    latent = make_learner(with_strategy(TINY, "latent_replay"), setup)
    raw = make_learner(with_strategy(TINY, "raw_replay"), setup)
    budget = latent.memory.nbytes
    assert raw.memory.nbytes <= budget
    bigger = type(raw.memory)(raw.memory.capacity + 1, raw.memory.sample_shape, 8)
    assert bigger.nbytes > budget


def test_naive_forgets_and_replay_remembers(setup):
    first = setup.scenario.test[0]
    accs = {}
    for strategy in ("naive", "latent_replay"):
        learner = make_learner(with_strategy(TINY, strategy), setup)
        for exp in setup.scenario.train:
            learner.partial_fit(exp)
        accs[strategy] = (learner.predict(first.x, first.ids) == first.y).mean()
    assert accs["latent_replay"] > accs["naive"] + 0.2


def test_state_dict_round_trip(setup):
    a = make_learner(with_strategy(TINY, "latent_replay"), setup)
    a.partial_fit(setup.scenario.train[0])
    b = make_learner(with_strategy(TINY, "latent_replay"), setup)
    b.load_state_dict(a.state_dict())
    for learner in (a, b):
        learner.partial_fit(setup.scenario.train[1])
    x = setup.scenario.test[0]
    np.testing.assert_array_equal(a.predict(x.x, x.ids), b.predict(x.x, x.ids))
    np.testing.assert_array_equal(a.memory.buffer, b.memory.buffer)


def test_run_writes_results_and_resumes_identically(tmp_path, setup):
    full = run_experiment(TINY, tmp_path / "full", setup=setup)
    for name in ("config.toml", "metrics.json", "accuracy_matrix.csv", "accuracy.png", "learner/manifest.json"):
        assert (tmp_path / "full" / name).exists()

    def stop_after_first(i):
        if i == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(TINY, tmp_path / "cut", setup=setup, progress=stop_after_first)
    resumed = run_experiment(TINY, tmp_path / "cut", setup=setup, resume=True)
    assert resumed["experiences_done"] == len(setup.scenario)
    for key in ("final_accuracy", "forgetting", "accuracy_after_each", "replay_bytes"):
        assert resumed[key] == full[key]
    rows = (tmp_path / "full" / "accuracy_matrix.csv").read_text().strip().splitlines()
    assert len(rows) == len(setup.scenario)


def test_resume_refuses_another_config(tmp_path, setup):
    from tinycl.errors import ConfigError

    run_experiment(TINY, tmp_path, setup=setup)
    other = replace(TINY, memory=replace(TINY.memory, bits=8))
    with pytest.raises(ConfigError, match="different config"):
        run_experiment(other, tmp_path, setup=setup, resume=True)


def test_device_mode_learns_the_same_as_torch(setup):
    """Latent replay with every training step on the C runtime ends with the torch learner's weights."""
    cfg = replace(TINY, train=replace(TINY.train, epochs=1))
    host = make_learner(with_strategy(cfg, "latent_replay"), setup)
    device = make_learner(with_strategy(replace(cfg, train=replace(cfg.train, device=True)), "latent_replay"), setup)
    host.rng = type(device.rng)(cfg.seed)  # device mode draws from the portable generator: the same draws here
    for exp in setup.scenario.train[:2]:
        host.partial_fit(exp)
        device.partial_fit(exp)
    for (name, a), (_, b) in zip(host.adaptive.state_dict().items(), device.adaptive.state_dict().items(),
                                 strict=True):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)


def test_a_diverging_lr_is_a_one_line_error(setup):
    from tinycl.errors import TinyclError

    cfg = replace(TINY, train=replace(TINY.train, lr=1e9))
    learner = make_learner(cfg, setup)
    with pytest.raises(TinyclError, match=r"^training diverged: .*train\.lr") as err:
        for exp in setup.scenario.train:
            learner.partial_fit(exp)
    assert "\n" not in str(err.value)


def test_class_balanced_mix_gives_each_class_present_an_equal_share(setup):
    cfg = replace(TINY, train=replace(TINY.train, replay_mix="class_balanced", batch_size=20))
    learner = make_learner(cfg, setup)
    learner.partial_fit(setup.scenario.train[0])  # memory now holds 4 classes; 2 new ones come next
    assert learner._mix(setup.scenario.train[1].y) == (7, 13)  # replayed 4 / 6 of 20
    assert TrainConfig(replay_mix="pellegrini", replay_ratio=0.5).mix_rule == "pellegrini"
    with pytest.raises(ConfigError, match="replay_ratio"):
        TrainConfig(replay_mix="ratio")


def test_ar1_recipe_options_train(setup):
    """Batch renormalization, CWR*, a head lr factor, clipping and warm-up together; the head is evaluated with the
    consolidated rows and the classes never seen keep zero rows."""
    cfg = replace(TINY, train=replace(TINY.train, batch_renorm=True, cwr=True, head_lr_factor=10.0, clip_norm=1.0,
                                      warmup_steps=5, brn_warmup=10))
    learner = make_learner(cfg, setup)
    assert sum(ly.op == "batch_renorm" for ly in learner.adaptive.spec.layers) == 2  # after conv3 and conv4
    learner.partial_fit(setup.scenario.train[0])
    w = learner.adaptive.params["head"].weight.detach().numpy()
    np.testing.assert_allclose(w, learner.head_.cw_[:, :-1], rtol=1e-6)
    unseen = np.setdiff1d(np.arange(10), setup.scenario.train[0].y)
    assert not w[unseen].any()
    assert learner.adaptive.params["conv3/brn"].r_max == pytest.approx(1.25)  # warmed up after > 10 steps
    state = learner.state_dict()
    again = make_learner(cfg, setup)
    again.load_state_dict(state)
    np.testing.assert_array_equal(again.head_.cw_, learner.head_.cw_)


@pytest.mark.parametrize("key,value", [("clip_norm", 1.0), ("head_lr_factor", 10.0)])
def test_device_mode_refuses_what_the_c_step_lacks(key, value):
    with pytest.raises(ConfigError, match=rf"^train\.{key} is not supported with train\.device"):
        TrainConfig(device=True, **{key: value})


def test_new_latents_quantized_reach_the_adaptive_stage_as_stored(setup):
    """memory.new_latents = "quantized": new latents are trained on and predicted from in the memory's Q-bit form
    (calibrated on experience 0 before the first step); "exact" leaves them as the frozen stage gives them."""
    cfg = replace(TINY, memory=replace(TINY.memory, new_latents="quantized"))
    learner = make_learner(cfg, setup)
    seen = []
    train = learner._train
    learner._train = lambda z, y, lr: (seen.append(z.copy()), train(z, y, lr))
    exp = setup.scenario.train[0]
    learner.partial_fit(exp)
    mem = learner.memory
    assert mem.scale_ is not None
    z = setup.cache(exp.x, exp.ids)
    assert np.array_equal(seen[0], mem.decode(mem.encode(z)))  # on the grid before the first step
    assert not np.array_equal(seen[0], z)
    test = setup.scenario.test[0]
    assert np.array_equal(learner.predict(test.x, test.ids),
                          learner.predict_latents(mem.decode(mem.encode(setup.cache(test.x, test.ids)))))
    exact = make_learner(TINY, setup)
    exact._train = lambda z, y, lr: seen.append(z.copy())
    exact.partial_fit(exp)
    assert np.array_equal(seen[-1], z)
    with pytest.raises(ConfigError, match="memory.new_latents 'q'; allowed: exact, quantized"):
        MemoryConfig(new_latents="q")


def test_gdumb_trains_on_the_memory_alone_from_the_deployed_weights(setup):
    cfg = replace(with_strategy(TINY, "gdumb"), memory=replace(TINY.memory, policy="class_balanced"))
    learner = make_learner(cfg, setup)
    deployed = {k: v.clone() for k, v in learner.adaptive.state_dict().items()}
    seen = []
    train = learner._train

    def spy(z, y, lr):
        seen.append((z.copy(), y.copy(), {k: v.clone() for k, v in learner.adaptive.state_dict().items()}))
        train(z, y, lr)

    learner._train = spy
    for exp in setup.scenario.train[:2]:
        learner.partial_fit(exp)
    mem = learner.memory
    z_mem, y_mem = mem.read(np.arange(mem.size))
    assert np.array_equal(seen[1][0], z_mem) and np.array_equal(seen[1][1], y_mem)  # the memory, nothing else
    assert set(y_mem.tolist()) == set(np.concatenate([e.y for e in setup.scenario.train[:2]]).tolist())
    for _, _, weights in seen:  # every experience starts from the deployed weights
        assert all(torch.equal(weights[k], deployed[k]) for k in deployed)
    assert learner.sample_passes == TINY.train.epochs * (len(seen[0][1]) + len(seen[1][1]))
