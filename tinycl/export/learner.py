"""What an exported learner is made of, read off the learner `tinycl run` builds, and every check before any file
is written: the strategy, memory and training options the C learner implements, the ops the C runtime has
kernels for, and latents the replay quantizer can take from the device's integer codes.

`DeviceLearner.build(cfg, run_dir=None)` prepares the setup (with pre-deployment training, as `tinycl run`) and
the learner in device mode (`train.device = true`: the portable random generator and the C training step), and
with `run_dir` takes the run's saved learner (RUN_DIR/learner, tinycl.saved: frozen stage, normalisation and
trained state, no re-training, nothing unpickled) so the device continues where the host left off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tinycl.config import RunConfig
from tinycl.data.dataset import to_float
from tinycl.device.arena import training_schedule
from tinycl.device.int8 import check_c_exact
from tinycl.errors import ConfigError, ModelError
from tinycl.frozen import FloatInput
from tinycl.model.ops import OPS
from tinycl.quant.intexec import IntegerFrozenStage
from tinycl.quant.requant import Requant, prepare

__all__ = ["DeviceLearner", "input_codes", "device_config", "unsupported_ops", "MIXES", "POLICIES"]

# the replay mixes and memory policies the firmware implements (tinycl/csrc/firmware/learner.c: TCL_MIX_*,
# TCL_POLICY_*, named as train.replay_mix and memory.policy)
MIXES = ("ratio", "pellegrini", "class_balanced")
POLICIES = ("nicv2", "class_balanced")


def device_config(cfg: RunConfig) -> RunConfig:
    """cfg in device mode: the learner the firmware repeats step for step."""
    return replace(cfg, train=replace(cfg.train, device=True))


def _integer_stage(stage) -> IntegerFrozenStage:
    while not isinstance(stage, IntegerFrozenStage):
        if not hasattr(stage, "stage"):
            raise ConfigError("tinycl export needs an int8 frozen stage (model.frozen = \"int8\" and a split after "
                              "at least one layer)")
        stage = stage.stage
    return stage


def input_codes(stage, x: np.ndarray) -> np.ndarray:
    """The int8 frozen stage's input codes (N, *input_shape) for data set samples x, through the same feeding the
    host applies (its wrappers' normalisation `norm`, resizing `pixels` or pixel scaling, then the model's input
    quantization): what a device's sensor front end hands to tcl_predict / tcl_learn."""
    while not isinstance(stage, IntegerFrozenStage):
        if hasattr(stage, "norm"):
            x = stage.norm(x)
        elif hasattr(stage, "pixels"):
            x = stage.pixels(x)
        elif isinstance(stage, FloatInput):
            x = to_float(x)
        stage = _integer_stage(stage) if not hasattr(stage, "stage") else stage.stage
    return stage.quantize(x)


def unsupported_ops(frozen_spec, adaptive_spec) -> list[str]:
    """'layer (op)' for every layer the C runtime has no kernel for: int8 kernels below the split, fp32 training
    kernels above it (the op table's `int8` and `device` fields)."""
    bad = [f"{ly.name} ({ly.op}, frozen)" for ly in frozen_spec.layers if not OPS[ly.op].int8]
    bad += [f"{ly.name} ({ly.op}, adaptive)" for ly in adaptive_spec.layers if OPS[ly.op].device is None]
    return bad


@dataclass
class DeviceLearner:
    """The exported learner's parts. cfg: the run config in device mode; setup, learner: what `tinycl run` builds
    (learner in device mode, trained state loaded from `run_dir` if given); stage: the int8 frozen stage;
    records: its requantization records (tinycl.quant.requant.prepare)."""

    cfg: RunConfig
    setup: object
    learner: object
    stage: IntegerFrozenStage
    records: dict

    @classmethod
    def build(cls, cfg: RunConfig, run_dir: Path | None = None) -> DeviceLearner:
        from tinycl.runner import prepare as prepare_setup
        from tinycl.strategies import make_learner

        saved = _saved_run(Path(run_dir)) if run_dir is not None else None
        cfg = device_config(saved.cfg if saved is not None else cfg)
        _check_config(cfg)
        setup = prepare_setup(cfg, saved=saved)
        stage = _integer_stage(setup.frozen)
        bad = unsupported_ops(stage.spec, setup.adaptive_spec)
        if bad:
            raise ModelError(f"the C runtime has no kernel for: {', '.join(bad)}")
        training_schedule(setup.adaptive_spec)  # sequential, trainable: one-line ModelError otherwise
        learner = make_learner(cfg, setup)
        if learner.train_cfg.mix_rule not in MIXES:  # resolved by the protocol's default
            raise ConfigError(f"tinycl export does not support train.replay_mix {learner.train_cfg.mix_rule!r} "
                              f"(the firmware mixes by {', '.join(MIXES)}): set train.replay_mix or replay_ratio")
        if saved is not None:
            _load_run(learner, saved)
        records = prepare(stage.qmodel, stage.model.kernels_name)
        check_c_exact(stage.qmodel, records)
        out = cls(cfg, setup, learner, stage, records)
        out._check_latents()
        return out

    # -- geometry ------------------------------------------------------------------------------------------
    @property
    def memory(self):
        return self.learner.memory

    @property
    def latent_quant(self):
        return self.stage.output_quant

    @property
    def n_chan(self) -> int:
        return self.memory.sample_shape[0] if self.memory.granularity == "channel" else 1

    @property
    def chan_size(self) -> int:
        return self.memory.values_per_sample // self.n_chan

    @property
    def max_new(self) -> int:
        """New samples buffered per experience: the largest experience of the configured stream."""
        return max(len(e.y) for e in self.setup.scenario.train)

    def _check_latents(self) -> None:
        last = self.stage.spec.layers[-1]
        rec: Requant = self.records[last.name]
        low = rec.then.act_min if rec.then is not None else rec.act_min
        if low < self.latent_quant.zero_point[0]:
            raise ConfigError(f"tinycl export needs latents >= 0 (a ReLU or ReLU6 at the split): layer {last.name!r} "
                              f"can output codes below its zero point")
        if any(r is not None and r.real_scale is not None for r in self.records.values()):
            raise ConfigError("the firmware requantizes in integers only; LiteRT's reference FULLY_CONNECTED "
                              "(float64 real_scale) is not on the device path")
        if self.setup.scenario.n_classes > 256:
            raise ConfigError(f"the firmware stores labels as uint8: {self.setup.scenario.n_classes} classes > 256")
        if max(self.max_new, self.memory.capacity) > 65535:
            raise ConfigError("the firmware indexes samples with uint16: keep experiences and memory.capacity "
                              "below 65536")

    def latents_nbytes(self) -> int:
        return math.prod(self.stage.spec.output_shape()) if self.stage.spec.layers else 0


def _check_config(cfg: RunConfig) -> None:
    """The options the C learner implements (one line naming the first that it does not)."""
    t, m = cfg.train, cfg.memory
    problems = []
    if cfg.strategy != "latent_replay":
        problems.append(f"strategy {cfg.strategy!r} (the firmware runs latent_replay)")
    if not (1 <= m.bits <= 8 or m.bits == 32):
        problems.append(f"memory.bits {m.bits} (the firmware stores 1..8-bit codes or fp32 values)")
    if m.policy not in POLICIES:
        problems.append(f"memory.policy {m.policy!r} (the firmware inserts by {', '.join(POLICIES)})")
    if m.range != "max":
        problems.append(f"memory.range {m.range!r} (the firmware calibrates by max)")
    if m.code != "uniform":
        problems.append(f"memory.code {m.code!r} (the firmware stores uniform codes)")
    if t.mix_rule not in MIXES:
        problems.append(f"train.replay_mix {t.mix_rule!r} (the firmware mixes by {', '.join(MIXES)})")
    for key, on in (("cwr", t.cwr), ("warmup_steps", t.warmup_steps),
                    ("clip_norm", t.clip_norm is not None), ("head_lr_factor", t.head_lr_factor != 1.0)):
        if on:
            problems.append(f"train.{key}")
    if cfg.model.frozen != "int8":
        problems.append("model.frozen fp32 (the firmware's frozen stage is int8)")
    if problems:
        raise ConfigError(f"tinycl export does not support {'; '.join(problems)}")


def _saved_run(run_dir: Path):
    from tinycl.saved import SavedLearner

    if not (run_dir / "learner").is_dir() and not (run_dir / "manifest.json").exists():
        raise ConfigError(f"--from {run_dir}: no learner/ there (a directory written by tinycl run --out; an older "
                          f"run's checkpoint.pt is not read: unpickling can run code)")
    return SavedLearner.load(run_dir)


def _load_run(learner, saved) -> None:
    """The learner state of a finished run (its saved learner); a host run's numpy generator state cannot continue
    on the device, whose draws then start from the run's seed."""

    state = saved.learner_state()
    rng = state["rng"]
    if not (isinstance(rng, dict) and "s" in rng):
        state = {**state, "rng": learner.rng.state}
    saved.restore(learner, state=state)
