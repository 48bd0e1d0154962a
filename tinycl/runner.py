"""One experiment from a RunConfig: data -> scenario -> (pre-deployment training) -> frozen stage -> learner
-> accuracy matrix and memory report, written atomically after every experience so a run can resume.

    setup = prepare(cfg)                     # shared by every strategy with the same data/model/seed
    learner = make_learner(cfg, setup)
    for exp in setup.scenario.train: learner.partial_fit(exp); evaluate(...)
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tinycl.config import RunConfig, config_to_dict, save_config
from tinycl.data.dataset import Dataset, to_float
from tinycl.data.registry import load_dataset
from tinycl.errors import ConfigError, TinyclError
from tinycl.frozen import FakeQuantFrozenStage, FloatFrozenStage, FrozenStage, ImageInput, LatentCache
from tinycl.io import atomic_save, atomic_write_bytes, atomic_write_json
from tinycl.learners.base import Learner
from tinycl.learners.replay import Joint, LatentReplay, RawReplay
from tinycl.memory import ReplayMemory
from tinycl.metrics import AccuracyMatrix
from tinycl.model.build import build, get_weights
from tinycl.model.spec import ModelSpec
from tinycl.model.split import Split
from tinycl.model.zoo import get_model
from tinycl.quant.ptq import quantize_model
from tinycl.scenarios import Scenario, class_incremental, nic_stream

__all__ = ["Setup", "prepare", "make_learner", "run_experiment", "evaluate"]


@dataclass
class Setup:
    """Everything a learner is built from; computed once per (data, model, seed)."""

    dataset: Dataset
    scenario: Scenario
    spec: ModelSpec
    split: Split
    frozen: FrozenStage
    cache: LatentCache
    adaptive_spec: ModelSpec  # what trains on the device (for imported models: with a new head)
    adaptive_weights: dict  # its float weights: after pre-deployment training, or dequantized from the file


def _scenario(cfg: RunConfig, ds: Dataset, rng: np.random.Generator) -> Scenario:
    d = cfg.data
    if d.protocol == "class_incremental":
        return class_incremental(ds, first_classes=d.first_classes, classes_per_experience=d.classes_per_experience,
                                 class_order=list(d.class_order) if d.class_order else None)
    if d.protocol == "nic":
        return nic_stream(ds, first_classes=d.first_classes, first_size=d.first_size, batch_size=d.batch_size,
                          rng=rng)
    try:
        from tinycl.protocols import PROTOCOLS
    except ImportError:
        PROTOCOLS = {}
    if d.protocol not in PROTOCOLS:
        raise ConfigError(f"data.protocol {d.protocol!r} is not known; allowed: class_incremental, nic, "
                          f"{', '.join(PROTOCOLS)}")
    return PROTOCOLS[d.protocol](ds, rng=rng, config=d)


def pretrain(spec: ModelSpec, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, batch_size: int,
             seed: int) -> dict:
    """Train the whole float model on the pre-deployment data ("in the cloud"); returns its weights."""
    gen = torch.Generator().manual_seed(seed)
    model = build(spec, generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))
    xt, yt = torch.as_tensor(to_float(x)), torch.as_tensor(y)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(yt), generator=gen).split(batch_size):
            opt.zero_grad()
            F.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
        sched.step()
    weights = get_weights(model)
    if not all(np.isfinite(a).all() for arrays in weights.values() for a in arrays.values()):
        raise TinyclError(f"pre-deployment training diverged (non-finite weights) at model.pretrain_lr={lr}; "
                          f"lower model.pretrain_lr")
    return weights


def _split_layer(spec: ModelSpec, layer: str) -> str:
    """A layer given by name, or by its index in `tinycl inspect`'s table."""
    if layer.isdigit() and layer not in spec.names:
        if int(layer) >= len(spec.layers):
            raise ConfigError(f"model.split index {layer} is out of range 0..{len(spec.layers) - 1}")
        return spec.names[int(layer)]
    return layer


def _prepare_tflite(cfg: RunConfig, ds: Dataset) -> tuple[ModelSpec, Split, FrozenStage, ModelSpec, dict]:
    """An int8 .tflite file as the pretrained model: its integer frozen stage, bit-exact with LiteRT, and a float
    adaptive stage (dequantized layers above the split, a new head for the data set's classes)."""
    from tinycl.model.adapt import adaptive_stage
    from tinycl.model.tflite import load_tflite
    from tinycl.quant.intexec import IntegerFrozenStage

    qmodel = load_tflite(cfg.model.arch)
    spec = qmodel.spec
    split = Split.at(spec, _split_layer(spec, cfg.model.split))
    frozen: FrozenStage = IntegerFrozenStage(qmodel, upto=split.layer)
    if cfg.model.frozen != "int8":
        raise ConfigError("model.frozen must be int8 for a .tflite model: its frozen stage runs in integers")
    if len(ds.sample_shape) == 3:  # images: resized to the model's input size
        if ds.sample_shape[0] != spec.input_shape[0]:
            raise ConfigError(f"data set {ds.name!r} has {ds.sample_shape[0]}-channel images; the model takes "
                              f"{spec.input_shape[0]} channels")
        frozen = ImageInput(frozen, tuple(spec.input_shape[1:]))
    elif ds.sample_shape != tuple(spec.input_shape):
        raise ConfigError(f"data set {ds.name!r} has samples of shape {ds.sample_shape}; the model takes "
                          f"{tuple(spec.input_shape)}")
    adaptive_spec, adaptive_w = adaptive_stage(qmodel, split.layer, ds.n_classes,
                                               torch.Generator().manual_seed(cfg.seed))
    return spec, split, frozen, adaptive_spec, adaptive_w


def prepare(cfg: RunConfig) -> Setup:
    rng = np.random.default_rng(cfg.seed)
    ds = load_dataset(cfg.data.name, cfg.data.root, **cfg.data.options)
    if cfg.data.n_train or cfg.data.n_test:
        ds = ds.subset(cfg.data.n_train, cfg.data.n_test, rng)
    scenario = _scenario(cfg, ds, rng)
    first = scenario.train[0]
    if cfg.model.arch.endswith(".tflite"):
        spec, split, frozen, adaptive_spec, adaptive_w = _prepare_tflite(cfg, ds)
        return Setup(ds, scenario, spec, split, frozen, LatentCache(frozen), adaptive_spec, adaptive_w)
    spec = get_model(cfg.model.arch, ds.sample_shape, ds.n_classes)
    split = Split.at(spec, _split_layer(spec, cfg.model.split))
    weights = pretrain(spec, first.x, first.y, epochs=cfg.model.pretrain_epochs, lr=cfg.model.pretrain_lr,
                       batch_size=cfg.train.batch_size, seed=cfg.seed)
    frozen_w, adaptive_w = split.split_weights(weights)
    if cfg.model.frozen == "int8":
        # calibrated on the pre-deployment data, as a deployment would be
        frozen = FakeQuantFrozenStage(quantize_model(split.frozen_spec, frozen_w, to_float(first.x)))
    else:
        frozen = FloatFrozenStage(split.frozen_spec, frozen_w)
    return Setup(ds, scenario, spec, split, frozen, LatentCache(frozen), split.adaptive_spec, adaptive_w)


def _memory(cfg: RunConfig, shape, bits: int, capacity: int, n_classes: int) -> ReplayMemory:
    m = cfg.memory
    return ReplayMemory(capacity, shape, bits, granularity=m.granularity, range_method=m.range, n_classes=n_classes)


def make_learner(cfg: RunConfig, setup: Setup, strategy: str | None = None, bits: int | None = None) -> Learner:
    """The learner of `strategy` (default cfg.strategy) with memory bits `bits` (default cfg.memory.bits).
    raw_replay gets the byte budget of a latent memory of cfg.memory.capacity latents at cfg.memory.bits."""
    strategy = strategy or cfg.strategy
    bits = cfg.memory.bits if bits is None else bits
    adaptive = build(setup.adaptive_spec, setup.adaptive_weights)
    args = (setup.cache, adaptive, cfg.train)
    n_classes = setup.scenario.n_classes
    if strategy == "naive":
        return Learner(*args, seed=cfg.seed)
    if strategy == "joint":
        return Joint(*args, seed=cfg.seed)
    if strategy == "latent_replay":
        memory = _memory(cfg, setup.split.latent_shape, bits, cfg.memory.capacity, n_classes)
        return LatentReplay(*args, memory=memory, policy=cfg.memory.policy, seed=cfg.seed)
    if strategy == "raw_replay":
        budget = _memory(cfg, setup.split.latent_shape, bits, cfg.memory.capacity, n_classes).nbytes
        input_shape = setup.dataset.sample_shape
        capacity = ReplayMemory.capacity_for(budget, input_shape, 8, granularity=cfg.memory.granularity,
                                             n_classes=n_classes)
        memory = _memory(cfg, input_shape, 8, capacity, n_classes)
        return RawReplay(*args, memory=memory, policy=cfg.memory.policy, seed=cfg.seed)
    if strategy == "distilled_replay":
        from tinycl.learners.distilled import make_distilled

        return make_distilled(cfg, setup, bits)
    raise ConfigError(f"strategy {strategy!r} is not known")


def evaluate(learner: Learner, scenario: Scenario, i: int) -> tuple[np.ndarray, float]:
    """Row i of the accuracy matrix, and the accuracy on all test data seen up to experience i."""
    row = np.full(len(scenario), np.nan)
    correct = total = 0
    for j, test in enumerate(scenario.test):
        if not len(test):
            continue
        hits = learner.predict(test.x, test.ids) == test.y
        row[j] = hits.mean()
        if j <= i:
            correct, total = correct + hits.sum(), total + len(hits)
    return row, (correct / total if total else float("nan"))


def _write_results(out: Path, cfg: RunConfig, matrix: AccuracyMatrix, learner: Learner, seconds: float,
                   strategy: str, bits) -> dict:
    metrics = {"strategy": strategy, "bits": bits, **matrix.result(), "seconds": seconds,
               "experiences_done": matrix.done, "accuracy_after_each": matrix.seen_accuracy[: matrix.done].tolist(),
               "memory_bytes": learner.memory_report(), "latents_computed": learner.encoder.computed}
    metrics["replay_bytes"] = metrics["memory_bytes"]["replay_memory"]
    metrics.update(learner.extra_metrics())  # FLOPs; distilled_replay: its FLOPs log, growth decisions
    atomic_write_json(out / "metrics.json", metrics)
    buf = io.StringIO()
    csv.writer(buf).writerows([[f"{v:.6f}" if not np.isnan(v) else "" for v in r] for r in matrix.R[: matrix.done]])
    atomic_write_bytes(out / "accuracy_matrix.csv", buf.getvalue().encode())
    return metrics


def run_experiment(cfg: RunConfig, out: Path | None = None, *, resume: bool = False, setup: Setup | None = None,
                   strategy: str | None = None, bits: int | None = None,
                   progress: Callable[[int], None] | None = None) -> dict:
    """Run all experiences; with `out`, write config, metrics.json, accuracy_matrix.csv and a checkpoint after each
    experience (atomically). `resume` continues from the checkpoint in `out`."""
    strategy = strategy or cfg.strategy
    bits = {"naive": None, "joint": 32, "raw_replay": 8}.get(strategy, cfg.memory.bits if bits is None else bits)
    setup = setup or prepare(cfg)
    learner = make_learner(cfg, setup, strategy, bits if strategy == "latent_replay" else cfg.memory.bits)
    matrix = AccuracyMatrix(len(setup.scenario))
    start, elapsed = 0, 0.0
    ckpt = out / "checkpoint.pt" if out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
        if resume and ckpt.exists():
            state = torch.load(ckpt, weights_only=False)
            if state["config"] != config_to_dict(cfg):
                raise ConfigError(f"cannot resume: {out} holds a run with a different config; use a new --out")
            learner.load_state_dict(state["learner"])
            matrix.R, matrix.seen_accuracy, matrix.done = state["R"], state["seen"], state["done"]
            start, elapsed = state["done"], state["elapsed"]
        save_config(cfg, out / "config.toml")
    metrics = {}
    for i in range(start, len(setup.scenario)):
        t0 = time.perf_counter()
        learner.partial_fit(setup.scenario.train[i])
        elapsed += time.perf_counter() - t0
        matrix.update(i, *evaluate(learner, setup.scenario, i))
        if out:
            metrics = _write_results(out, cfg, matrix, learner, elapsed, strategy, bits)
            state = {"config": config_to_dict(cfg), "learner": learner.state_dict(), "R": matrix.R,
                     "seen": matrix.seen_accuracy, "done": matrix.done, "elapsed": elapsed}
            atomic_save(ckpt, lambda p, s=state: torch.save(s, p))
        if progress:
            progress(i)
    if out:
        from tinycl.plots import plot_accuracy

        plot_accuracy({strategy: matrix.seen_accuracy[: matrix.done]}, out / "accuracy.png",
                      title=f"{cfg.data.name}: accuracy on classes seen")
        return json.loads((out / "metrics.json").read_text()) if not metrics else metrics
    return {"strategy": strategy, "bits": bits, **matrix.result(), "seconds": elapsed,
            "accuracy_after_each": matrix.seen_accuracy.tolist(), "memory_bytes": learner.memory_report(),
            "replay_bytes": learner.replay_nbytes,
            **learner.extra_metrics()}
