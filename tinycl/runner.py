"""One experiment from a RunConfig: data -> scenario -> (pre-deployment training) -> frozen stage -> learner
-> accuracy matrix and memory report, written atomically after every experience so a run can resume.

    setup = prepare(cfg)                     # shared by every strategy with the same data/model/seed
    learner = make_learner(cfg, setup)       # tinycl.strategies: the one table of strategies
    for exp in setup.scenario.train: learner.partial_fit(exp); evaluate(...)

`run_experiment` is that loop; the CLI, the demo and the benchmarks call it.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tinycl.config import RunConfig, config_to_dict, save_config
from tinycl.data.dataset import Dataset, to_float
from tinycl.data.normalize import Normalization
from tinycl.data.registry import load_dataset
from tinycl.errors import ConfigError, TinyclError
from tinycl.frozen import FloatFrozenStage, FloatInput, FrozenStage, ImageInput, LatentCache
from tinycl.io import atomic_save, atomic_write_bytes, atomic_write_json
from tinycl.learners.base import Learner
from tinycl.metrics import AccuracyMatrix
from tinycl.model.build import build, get_weights
from tinycl.model.spec import ModelSpec
from tinycl.model.split import Split
from tinycl.model.zoo import get_model
from tinycl.protocols import PROTOCOLS
from tinycl.quant.intexec import IntegerFrozenStage
from tinycl.quant.ptq import quantize_model
from tinycl.scenarios import Experience, Scenario, hold_out
from tinycl.strategies import make_learner

__all__ = ["Setup", "NormalizedInput", "prepare", "pretrain", "make_learner", "run_experiment", "evaluate",
           "with_strategy"]


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
    normalization: Normalization | None = None  # applied to every input before the frozen stage (stored with it)
    predeploy: Experience | None = None  # the pre-deployment data (None: experience 0 of the stream)


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


def prepare(cfg: RunConfig, *, dataset: Dataset | None = None, pretrain: bool = True) -> Setup:
    """The data, scenario, model, split, frozen stage and adaptive stage of `cfg`.

    dataset: the data set cfg.data names, already loaded (it is not read again; cfg.data's n_train/n_test subset
    is still taken from it). pretrain: False skips pre-deployment training (random weights of the same shapes:
    enough for shapes, bytes and FLOPs). The pre-deployment data is experience 0 or, with model.pretrain_data =
    "holdout", a share of the training data split off before the stream is cut (`scenarios.hold_out`). The input
    normalisation and a zoo model's int8 frozen stage are fitted on it, as a deployment would be; the frozen stage
    then runs on the integer executor, as a .tflite model's does."""
    rng = np.random.default_rng(cfg.seed)
    ds = dataset if dataset is not None else load_dataset(cfg.data.name, cfg.data.root, **cfg.data.options)
    if cfg.data.n_train or cfg.data.n_test:
        ds = ds.subset(cfg.data.n_train, cfg.data.n_test, rng)
    held = None
    if cfg.model.pretrain_data == "holdout":
        ds, held = hold_out(ds, cfg.model.pretrain_share, rng)
    scenario = PROTOCOLS[cfg.data.protocol](ds, rng=rng, config=cfg.data)
    predeploy = held or scenario.train[0]
    if cfg.model.arch.endswith(".tflite"):
        spec, split, frozen, adaptive = _imported(cfg, ds)
        norm = None  # the file's own uint8 input quantization is its preprocessing
    else:
        norm = Normalization.fit(predeploy.x) if cfg.model.normalize == "channel" else None
        spec, split, frozen, adaptive = _zoo(cfg, ds, predeploy, norm, trained=pretrain)
    frozen = _fed(frozen, ds, norm)
    return Setup(ds, scenario, spec, split, frozen, LatentCache(frozen), *adaptive, norm, held)


def _imported(cfg: RunConfig, ds: Dataset) -> tuple[ModelSpec, Split, FrozenStage, tuple[ModelSpec, dict]]:
    """An int8 .tflite file as the pretrained model: its integer frozen stage, bit-exact with LiteRT, and a float
    adaptive stage (dequantized layers above the split, a new head for the data set's classes)."""
    from tinycl.model.adapt import adaptive_stage
    from tinycl.model.tflite import load_tflite

    if cfg.model.frozen != "int8":
        raise ConfigError("model.frozen must be int8 for a .tflite model: its frozen stage runs in integers")
    qmodel = load_tflite(cfg.model.arch)
    split = Split.at(qmodel.spec, cfg.model.split)
    adaptive = adaptive_stage(qmodel, split.layer, ds.n_classes, torch.Generator().manual_seed(cfg.seed))
    return qmodel.spec, split, IntegerFrozenStage(split.frozen_model(qmodel)), adaptive


def _zoo(cfg: RunConfig, ds: Dataset, predeploy: Experience, norm: Normalization | None, *, trained: bool
         ) -> tuple[ModelSpec, Split, FrozenStage, tuple[ModelSpec, dict]]:
    """A zoo model trained on the pre-deployment data (or left at its initial weights), cut at cfg.model.split;
    an int8 frozen stage is post-training quantized, calibrated on the pre-deployment data. Split at the input:
    no frozen layers (the identity), the whole model trains on the device."""
    m = cfg.model
    spec = get_model(m.arch, ds.sample_shape, ds.n_classes, **({} if m.width is None else {"width": m.width}))
    split = Split.at(spec, m.split)
    if not split.adaptive_spec.layers:
        raise ConfigError(f"model.split {m.split!r} is the last layer of {m.arch}: nothing is left to train; "
                          f"allowed: a layer before it, e.g. {spec.names[-2] if len(spec.names) > 1 else 'input'}")
    x = norm(predeploy.x) if norm is not None else to_float(predeploy.x)
    gen = torch.Generator().manual_seed(cfg.seed)
    weights = (pretrain(spec, x, predeploy.y, epochs=m.pretrain_epochs, lr=m.pretrain_lr,
                        batch_size=cfg.train.batch_size, seed=cfg.seed) if trained and m.pretrain_epochs
               else get_weights(build(spec, generator=gen)))
    if m.pretrain_data != "first":  # the pre-deployment classes are not the stream's: a fresh head
        weights[spec.names[-1]] = get_weights(build(spec, generator=gen))[spec.names[-1]]
    frozen_w, adaptive_w = split.split_weights(weights)
    if m.frozen == "int8" and split.index:
        frozen = IntegerFrozenStage(quantize_model(split.frozen_spec, frozen_w, x))
    else:  # fp32, or nothing frozen (the identity: the latent is the input)
        frozen = FloatFrozenStage(split.frozen_spec, frozen_w)
    return spec, split, frozen, (split.adaptive_spec, adaptive_w)


class NormalizedInput(FloatInput):
    """Feeds a frozen stage the normalised float input, norm(x) (the device applies the same before its first
    layer). nbytes: the stage's; the normalisation's own bytes are `norm.nbytes`."""

    def __init__(self, stage: FrozenStage, norm: Normalization):
        super().__init__(stage)
        self.norm = norm

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.stage(self.norm(x))


def _fed(stage: FrozenStage, ds: Dataset, norm: Normalization | None = None) -> FrozenStage:
    """A frozen stage fed the data set's samples as its model takes them: uint8 pixel codes resized to the model's
    input (image models with a uint8 input, e.g. TFLite MobileNets), else the float input, normalised by `norm`
    if given."""
    if isinstance(stage, FloatFrozenStage):  # takes the float input itself
        return NormalizedInput(stage, norm) if norm is not None else stage
    spec = stage.spec
    if spec.input_quant.dtype == "uint8" and len(ds.sample_shape) == 3:
        if ds.sample_shape[0] != spec.input_shape[0]:
            raise ConfigError(f"data set {ds.name!r} has {ds.sample_shape[0]}-channel images; the model takes "
                              f"{spec.input_shape[0]} channels")
        return ImageInput(stage, tuple(spec.input_shape[1:]))
    if ds.sample_shape != tuple(spec.input_shape):
        raise ConfigError(f"data set {ds.name!r} has samples of shape {ds.sample_shape}; the model takes "
                          f"{tuple(spec.input_shape)}")
    return NormalizedInput(stage, norm) if norm is not None else FloatInput(stage)


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


def _metrics(cfg: RunConfig, matrix: AccuracyMatrix, learner: Learner, seconds: float) -> dict:
    """metrics.json: the same keys for every strategy; bits and bytes as the learner stores them."""
    report = learner.memory_report()
    return {"strategy": cfg.strategy, "bits": learner.stored_bits, **matrix.result(), "seconds": seconds,
            "experiences_done": matrix.done, "accuracy_after_each": matrix.seen_accuracy[: matrix.done].tolist(),
            "memory_bytes": report, "replay_bytes": report["replay_memory"],
            "latents_computed": learner.encoder.computed, **learner.extra_metrics()}


def _write_results(out: Path, metrics: dict, matrix: AccuracyMatrix) -> None:
    atomic_write_json(out / "metrics.json", metrics)
    buf = io.StringIO()
    csv.writer(buf).writerows([[f"{v:.6f}" if not np.isnan(v) else "" for v in r] for r in matrix.R[: matrix.done]])
    atomic_write_bytes(out / "accuracy_matrix.csv", buf.getvalue().encode())


def _checkpoint(cfg: RunConfig, setup: Setup, learner: Learner, matrix: AccuracyMatrix, elapsed: float) -> dict:
    """The run's saved state; the input normalisation is part of it (the device applies it before its first layer)."""
    norm = setup.normalization.to_dict() if setup.normalization is not None else None
    return {"config": config_to_dict(cfg), "learner": learner.state_dict(), "R": matrix.R,
            "seen": matrix.seen_accuracy, "done": matrix.done, "elapsed": elapsed, "normalization": norm}


def _resume(ckpt: Path, cfg: RunConfig, learner: Learner, matrix: AccuracyMatrix) -> float:
    """Load the checkpoint into learner and matrix; returns the training seconds it had spent."""
    state = torch.load(ckpt, weights_only=False)
    if state["config"] != config_to_dict(cfg):
        raise ConfigError(f"cannot resume: {ckpt.parent} holds a run with a different config; use a new --out")
    learner.load_state_dict(state["learner"])
    matrix.R, matrix.seen_accuracy, matrix.done = state["R"], state["seen"], state["done"]
    return state["elapsed"]


def with_strategy(cfg: RunConfig, strategy: str | None = None, bits: int | None = None) -> RunConfig:
    """cfg with another strategy and/or memory bits (None: cfg's own)."""
    return replace(cfg, strategy=strategy or cfg.strategy,
                   memory=cfg.memory if bits is None else replace(cfg.memory, bits=bits))


def run_experiment(cfg: RunConfig, out: Path | None = None, *, resume: bool = False, setup: Setup | None = None,
                   strategy: str | None = None, bits: int | None = None,
                   progress: Callable[[int], None] | None = None) -> dict:
    """Run all experiences of `cfg` (with `strategy` / memory `bits` in place of cfg's, if given) and return its
    metrics. With `out`, write config.toml, normalization.json (the input normalisation, if any), metrics.json,
    accuracy_matrix.csv and a checkpoint after each experience (atomically) and accuracy.png at the end; `resume`
    continues from the checkpoint in `out`.
    setup: prepare(cfg)'s result, to share between runs of the same data, model and seed."""
    cfg = with_strategy(cfg, strategy, bits)
    setup = setup or prepare(cfg)
    learner = make_learner(cfg, setup)
    matrix = AccuracyMatrix(len(setup.scenario))
    elapsed = 0.0
    ckpt = out / "checkpoint.pt" if out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
        if resume and ckpt.exists():
            elapsed = _resume(ckpt, cfg, learner, matrix)
        save_config(cfg, out / "config.toml")
        if setup.normalization is not None:
            atomic_write_json(out / "normalization.json", setup.normalization.to_dict())
    for i in range(matrix.done, len(setup.scenario)):
        t0 = time.perf_counter()
        learner.partial_fit(setup.scenario.train[i])
        elapsed += time.perf_counter() - t0
        matrix.update(i, *evaluate(learner, setup.scenario, i))
        if out:
            _write_results(out, _metrics(cfg, matrix, learner, elapsed), matrix)
            state = _checkpoint(cfg, setup, learner, matrix, elapsed)
            atomic_save(ckpt, lambda p, s=state: torch.save(s, p))
        if progress:
            progress(i)
    metrics = _metrics(cfg, matrix, learner, elapsed)
    if out:
        from tinycl.plots import plot_accuracy

        plot_accuracy({cfg.strategy: matrix.seen_accuracy[: matrix.done]}, out / "accuracy.png",
                      title=f"{cfg.data.name}: accuracy on classes seen")
    return metrics
