"""One experiment from a RunConfig: data -> scenario -> (pre-deployment training) -> frozen stage -> learner
-> accuracy matrix and memory report, written atomically after every experience with the saved learner
(OUT/learner/, tinycl.saved) so a run can resume, and be used for prediction or exported, without re-training.

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
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import tomli_w
import torch
import torch.nn.functional as F

from tinycl.config import RunConfig, config_to_dict, save_config
from tinycl.data.dataset import Dataset, to_float
from tinycl.data.normalize import Normalization
from tinycl.data.registry import load_dataset
from tinycl.errors import ConfigError, TinyclError
from tinycl.frozen import FloatFrozenStage, FloatInput, FrozenStage, ImageInput, LatentCache
from tinycl.io import atomic_write_bytes, atomic_write_json, clean_temporaries, recover_dir, run_lock
from tinycl.learners.base import Learner
from tinycl.metrics import AccuracyMatrix
from tinycl.model.build import build, get_weights
from tinycl.model.spec import ModelSpec
from tinycl.model.split import Split
from tinycl.model.zoo import get_model
from tinycl.protocols import PROTOCOLS
from tinycl.quant.intexec import IntegerFrozenStage
from tinycl.quant.ptq import quantize_model
from tinycl.saved import SavedLearner, save_learner, verify
from tinycl.scenarios import Experience, Scenario, hold_out, validation_split
from tinycl.strategies import make_learner, train_config

VALIDATION_SEED = 20260  # draws data.validation's held-out share, independent of the run's seed

__all__ = ["Setup", "NormalizedInput", "prepare", "pretrain", "make_learner", "run_experiment", "evaluate",
           "with_strategy", "load_predictor", "warm_latents", "Bars"]

# progress bars: bars(description, total, unit) -> a context manager with .update(n) (e.g. tqdm); None: silent
Bars = Callable[[str, int, str], object]


def _bar(bars: Bars | None, desc: str, total: int, unit: str):
    return bars(desc, total, unit) if bars is not None else nullcontext(None)


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
             seed: int, bars: Bars | None = None) -> dict:
    """Train the whole float model on the pre-deployment data ("in the cloud"); returns its weights."""
    gen = torch.Generator().manual_seed(seed)
    model = build(spec, generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))
    xt, yt = torch.as_tensor(to_float(x)), torch.as_tensor(y)
    model.train()
    with _bar(bars, "pre-deployment training", epochs, "epoch") as bar:
        for _ in range(epochs):
            for idx in torch.randperm(len(yt), generator=gen).split(batch_size):
                opt.zero_grad()
                F.cross_entropy(model(xt[idx]), yt[idx]).backward()
                opt.step()
            sched.step()
            if bar is not None:
                bar.update(1)
    weights = get_weights(model)
    if not all(np.isfinite(a).all() for arrays in weights.values() for a in arrays.values()):
        raise TinyclError(f"pre-deployment training diverged (non-finite weights) at model.pretrain_lr={lr}; "
                          f"lower model.pretrain_lr")
    return weights


def prepare(cfg: RunConfig, *, dataset: Dataset | None = None, pretrain: bool = True,
            saved: SavedLearner | None = None, bars: Bars | None = None) -> Setup:
    """The data, scenario, model, split, frozen stage and adaptive stage of `cfg`.

    dataset: the data set cfg.data names, already loaded (it is not read again; cfg.data's n_train/n_test subset
    is still taken from it). pretrain: False skips pre-deployment training (random weights of the same shapes:
    enough for shapes, bytes and FLOPs). The pre-deployment data is experience 0 or, with model.pretrain_data =
    "holdout", a share of the training data split off before the stream is cut (`scenarios.hold_out`). The input
    normalisation and a zoo model's int8 frozen stage are fitted on it, as a deployment would be; the frozen stage
    then runs on the integer executor, as a .tflite model's does.
    saved: the saved learner of this run (tinycl.saved, e.g. to resume): its frozen stage, normalisation and
    deployed adaptive stage are taken as they are (no pre-deployment training, no quantization); only the data
    are read. bars: progress bars for decoding and pre-deployment training (see `Bars`)."""
    rng = np.random.default_rng(cfg.seed)
    if dataset is not None:
        ds = dataset
    else:
        with _bar(bars, f"decoding {cfg.data.name}", 1, "data set") as bar:
            ds = load_dataset(cfg.data.name, cfg.data.root, **cfg.data.options)
            if bar is not None:
                bar.update(1)
    if cfg.data.validation:  # the same held-out images for every seed, so settings are compared on one set
        ds = validation_split(ds, cfg.data.validation, np.random.default_rng(VALIDATION_SEED))
    if cfg.data.n_train or cfg.data.n_test:
        ds = ds.subset(cfg.data.n_train, cfg.data.n_test, rng)
    held = None
    if cfg.model.pretrain_data == "holdout":
        ds, held = hold_out(ds, cfg.model.pretrain_share, rng)
    scenario = PROTOCOLS[cfg.data.protocol](ds, rng=rng, config=cfg.data)
    predeploy = held or scenario.train[0]
    if saved is not None:
        spec, split, frozen, adaptive, norm = _from_saved(cfg, ds, scenario, saved)
    elif cfg.model.arch.endswith(".tflite"):
        spec, split, frozen, adaptive = _imported(cfg, ds)
        norm = None  # the file's own uint8 input quantization is its preprocessing
    else:
        norm = Normalization.fit(predeploy.x) if cfg.model.normalize == "channel" else None
        spec, split, frozen, adaptive = _zoo(cfg, ds, predeploy, norm, trained=pretrain, bars=bars)
    frozen = _fed(frozen, ds.name, ds.sample_shape, norm)
    return Setup(ds, scenario, spec, split, frozen, LatentCache(frozen), *adaptive, norm, held)


def _from_saved(cfg: RunConfig, ds: Dataset, scenario: Scenario, saved: SavedLearner):
    """The model parts of a saved learner, after checking it was made for this data (shape, classes, stream)."""
    d = saved.data
    have = (tuple(ds.sample_shape), scenario.n_classes, len(scenario))
    if (tuple(d["sample_shape"]), d["n_classes"], d["experiences"]) != have:
        raise ConfigError(f"saved learner {saved.path} was made for samples of shape {tuple(d['sample_shape'])}, "
                          f"{d['n_classes']} classes, {d['experiences']} experiences; data.{cfg.data.name} now gives "
                          f"{have[0]}, {have[1]}, {have[2]}: the data changed, start a new --out")
    spec = saved.spec
    return spec, Split.at(spec, cfg.model.split), saved.frozen_stage(), saved.deployed(), saved.normalization


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


def _zoo(cfg: RunConfig, ds: Dataset, predeploy: Experience, norm: Normalization | None, *, trained: bool,
         bars: Bars | None = None) -> tuple[ModelSpec, Split, FrozenStage, tuple[ModelSpec, dict]]:
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
                        batch_size=cfg.train.batch_size, seed=cfg.seed, bars=bars) if trained and m.pretrain_epochs
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


def _fed(stage: FrozenStage, name: str, sample_shape: tuple[int, ...], norm: Normalization | None = None
         ) -> FrozenStage:
    """A frozen stage fed data set `name`'s samples (of `sample_shape`) as its model takes them: uint8 pixel codes
    resized to the model's input (image models with a uint8 input, e.g. TFLite MobileNets), else the float input,
    normalised by `norm` if given."""
    if isinstance(stage, FloatFrozenStage):  # takes the float input itself
        return NormalizedInput(stage, norm) if norm is not None else stage
    spec = stage.spec
    if spec.input_quant.dtype == "uint8" and len(sample_shape) == 3:
        if sample_shape[0] != spec.input_shape[0]:
            raise ConfigError(f"data set {name!r} has {sample_shape[0]}-channel images; the model takes "
                              f"{spec.input_shape[0]} channels")
        return ImageInput(stage, tuple(spec.input_shape[1:]))
    if tuple(sample_shape) != tuple(spec.input_shape):
        raise ConfigError(f"data set {name!r} has samples of shape {tuple(sample_shape)}; the model takes "
                          f"{tuple(spec.input_shape)}")
    return NormalizedInput(stage, norm) if norm is not None else FloatInput(stage)


def evaluate(learner: Learner, scenario: Scenario, i: int) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Row i of the accuracy matrix, the accuracy on all test data seen up to experience i, and (classes predicted
    on that data, classes in it)."""
    row = np.full(len(scenario), np.nan)
    correct = total = 0
    predicted, classes = set(), set()
    for j, test in enumerate(scenario.test):
        if not len(test):
            continue
        guess = learner.predict(test.x, test.ids)
        hits = guess == test.y
        row[j] = hits.mean()
        if j <= i:
            correct, total = correct + hits.sum(), total + len(hits)
            predicted.update(np.unique(guess).tolist())
            classes.update(np.unique(test.y).tolist())
    return row, (correct / total if total else float("nan")), (len(predicted), len(classes))


def _metrics(cfg: RunConfig, setup: Setup, matrix: AccuracyMatrix, learner: Learner, seconds: float) -> dict:
    """metrics.json: the same keys for every strategy; bits and bytes as the learner stores them; the data set by
    its own name and class names (a generic loader's data set is not called after the loader)."""
    report = learner.memory_report()
    return {"strategy": cfg.strategy, "data_set": setup.dataset.name, "classes": list(setup.dataset.classes),
            "bits": learner.stored_bits, **matrix.result(), "seconds": seconds,
            "experiences_done": matrix.done, "accuracy_after_each": matrix.seen_accuracy[: matrix.done].tolist(),
            "collapsed_after": matrix.collapsed(),
            "memory_bytes": report, "replay_bytes": report["replay_memory"],
            "latents_computed": learner.encoder.computed, **learner.extra_metrics()}


def _write_results(out: Path, metrics: dict, matrix: AccuracyMatrix) -> None:
    atomic_write_json(out / "metrics.json", metrics)
    buf = io.StringIO()
    csv.writer(buf).writerows([[f"{v:.6f}" if not np.isnan(v) else "" for v in r] for r in matrix.R[: matrix.done]])
    atomic_write_bytes(out / "accuracy_matrix.csv", buf.getvalue().encode())


def with_strategy(cfg: RunConfig, strategy: str | None = None, bits: int | None = None) -> RunConfig:
    """cfg with another strategy and/or memory bits (None: cfg's own)."""
    return replace(cfg, strategy=strategy or cfg.strategy,
                   memory=cfg.memory if bits is None else replace(cfg.memory, bits=bits))


def open_run(out: Path, cfg: RunConfig, resume: bool) -> SavedLearner | None:
    """With `out` locked (`io.run_lock`): put back a saved learner a kill left under its temporary name, remove
    other temporaries, and return the saved learner to resume from (None: start afresh). Refused with one line:
    resuming another config's run, a saved learner that fails its checksums, and starting over a run of another
    config (its results would be silently replaced)."""
    recover_dir(out / "learner", _complete)
    clean_temporaries(out)
    if resume and (out / "learner").exists():
        saved = SavedLearner.load(out)
        saved.check_config(cfg)
        return saved
    if resume and (out / "checkpoint.pt").exists():
        raise ConfigError(f"cannot resume: {out} holds only a checkpoint.pt of an older tinycl, which is not read "
                          f"(unpickling can run code); start afresh in a new --out")
    config = out / "config.toml"
    if config.exists() and config.read_bytes() != tomli_w.dumps(config_to_dict(cfg)).encode():
        raise ConfigError(f"--out {out} holds a run of another config (its config.toml differs); give another "
                          f"--out, or remove that folder")
    return None


def _complete(path: Path) -> bool:
    try:
        verify(path)
        return True
    except TinyclError:
        return False


def run_experiment(cfg: RunConfig, out: Path | None = None, *, resume: bool = False, setup: Setup | None = None,
                   strategy: str | None = None, bits: int | None = None,
                   progress: Callable[[int], None] | None = None, saved: SavedLearner | None = None,
                   on_experience: Callable[[dict], None] | None = None) -> dict:
    """Run all experiences of `cfg` (with `strategy` / memory `bits` in place of cfg's, if given) and return its
    metrics. With `out` (locked while the run writes: `io.run_lock`), write config.toml, normalization.json (the
    input normalisation, if any), metrics.json, accuracy_matrix.csv and the saved learner (learner/, tinycl.saved)
    after each experience (atomically) and accuracy.png at the end; `resume` continues from the saved learner in
    `out` (`saved`: it, already loaded by `open_run`).
    setup: prepare(cfg)'s result, to share between runs of the same data, model and seed.
    progress(i), on_experience(metrics so far): called after experience i."""
    cfg = with_strategy(cfg, strategy, bits)
    if out is None:
        return _run(cfg, None, setup or prepare(cfg), None, progress, on_experience)
    out = Path(out)
    with run_lock(out):
        if saved is None:
            saved = open_run(out, cfg, resume)
        return _run(cfg, out, setup or prepare(cfg, saved=saved), saved, progress, on_experience)


def _run(cfg: RunConfig, out: Path | None, setup: Setup, saved: SavedLearner | None, progress, on_experience
         ) -> dict:
    learner = make_learner(cfg, setup)
    matrix = AccuracyMatrix(len(setup.scenario))
    elapsed = saved.restore(learner, matrix) if saved is not None else 0.0
    if out:
        save_config(cfg, out / "config.toml")
        if setup.normalization is not None:
            atomic_write_json(out / "normalization.json", setup.normalization.to_dict())
        (out / "checkpoint.pt").unlink(missing_ok=True)  # an older tinycl's pickle: never read, not left beside
    for i in range(matrix.done, len(setup.scenario)):
        t0 = time.perf_counter()
        learner.partial_fit(setup.scenario.train[i])
        elapsed += time.perf_counter() - t0
        matrix.update(i, *evaluate(learner, setup.scenario, i))
        if out:
            _write_results(out, _metrics(cfg, setup, matrix, learner, elapsed), matrix)
            save_learner(out / "learner", cfg, setup, learner, matrix, elapsed)
        if on_experience:
            on_experience(_metrics(cfg, setup, matrix, learner, elapsed))
        if progress:
            progress(i)
    metrics = _metrics(cfg, setup, matrix, learner, elapsed)
    if out:
        from tinycl.plots import plot_accuracy

        plot_accuracy({cfg.strategy: matrix.seen_accuracy[: matrix.done]}, out / "accuracy.png",
                      title=f"{setup.dataset.name}: accuracy on classes seen")
    return metrics


def warm_latents(setup: Setup, bars: Bars | None = None, chunk: int = 2048) -> None:
    """Compute every stream sample's latent into the setup's cache, with a progress bar (the frozen pass). The
    learner would compute the same ones experience by experience: chunks are whole batches of a float stage
    (256 samples) from each experience's start, so every latent is bit-identical to the one computed later."""
    parts = [e for e in (*setup.scenario.train, *setup.scenario.test) if len(e)]
    cache = setup.cache
    with _bar(bars, "frozen stage (latents)", sum(len(e) for e in parts), "sample") as bar:
        for e in parts:
            for start in range(0, len(e), chunk):
                z = cache.stage(e.x[start: start + chunk])
                cache.preload(e.ids[start: start + chunk], z)  # appended, not re-stacked per chunk
                cache.computed += len(z)
                if bar is not None:
                    bar.update(len(z))


def load_predictor(path: Path) -> tuple[Learner, SavedLearner]:
    """A saved learner (a run folder or its learner/) as a Learner that predicts what the run's learner predicts:
    its frozen stage fed as in the run, its adaptive stage as trained. No data, no training, nothing unpickled."""
    saved = SavedLearner.load(path)
    d = saved.data
    stage = _fed(saved.frozen_stage(), d["name"], tuple(d["sample_shape"]), saved.normalization)
    learner = Learner(LatentCache(stage), build(saved.adaptive_spec()), train_config(saved.cfg), seed=saved.cfg.seed)
    saved.restore_weights(learner.adaptive)
    return learner, saved
