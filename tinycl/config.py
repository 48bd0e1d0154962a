"""Run configuration: frozen dataclasses, validated on construction; TOML is only how they are saved.

`load_config(path, overrides=["memory.bits=7"])` reads a TOML file (every key optional, defaults below) and
applies `section.key=value` overrides; unknown keys and values of the wrong type raise ConfigError naming what
is allowed. `save_config` writes the full config beside a run's results. Every key, its meaning and its range is
documented in docs/config.md (tests/test_configs.py checks that none is missing there).
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from tinycl.distill import DistillConfig
from tinycl.errors import ConfigError
from tinycl.growth import GrowthConfig
from tinycl.learners.base import TrainConfig
from tinycl.quant.qparams import RANGE_METHODS
from tinycl.strategies import STRATEGIES

__all__ = ["RunConfig", "DataConfig", "ModelConfig", "MemoryConfig", "TrainConfig", "DistillConfig", "GrowthConfig",
           "load_config", "save_config", "config_to_dict", "config_from_dict", "apply_overrides",
           "set_value"]


@dataclass(frozen=True)
class DataConfig:
    name: str = "digits"  # a data set in tinycl.data.LOADERS
    root: str | None = None  # data root; None: $TINYCL_DATA, else ../shared/data
    protocol: str = "class_incremental"  # a protocol in tinycl.protocols.PROTOCOLS: class_incremental, nic, ...
    first_classes: int = 5  # classes in experience 0 (the pre-deployment data)
    classes_per_experience: int = 1  # class_incremental: new classes per later experience
    class_order: tuple[int, ...] | None = None  # None: 0..C-1
    first_size: int | None = None  # nic: samples in experience 0 (None: NICv2's share, 2.5% of the training set)
    batch_size: int | None = None  # nic: samples per later experience (None: NICv2's share, 0.25%)
    run: int = 0  # protocols with fixed runs (core50-nicv2-391): which run
    n_train: int | None = None  # use a class-stratified subset of the training data (None: all)
    n_test: int | None = None  # ... and of the test data
    options: dict = field(default_factory=dict)  # the loader's own options, e.g. {per_class = 500} (docs/data.md)

    def __post_init__(self):
        from tinycl.data.registry import LOADERS, loader_options
        from tinycl.protocols import PROTOCOLS

        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"data.protocol {self.protocol!r} is not known; allowed: {', '.join(PROTOCOLS)}")
        if self.name not in LOADERS:
            raise ConfigError(f"data.name {self.name!r} is not known; allowed: {', '.join(sorted(LOADERS))}")
        unknown = sorted(set(self.options) - set(loader_options(self.name)))
        if unknown:
            raise ConfigError(f"data.options {', '.join(unknown)} not known to the {self.name} loader; allowed: "
                              f"{', '.join(loader_options(self.name)) or 'none'}")
        for key in ("first_classes", "classes_per_experience", "first_size", "batch_size"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"data.{key} must be >= 1, got {getattr(self, key)}")


PRETRAIN_DATA = ("first", "holdout")


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "digits_cnn"  # a model in tinycl.model.zoo.ZOO, or a path to an int8 .tflite file
    split: str | int = "conv3"  # latent layer (a name or an index); "input": nothing frozen, the whole model trains
    frozen: str = "int8"  # frozen stage precision: int8 (post-training quantized) or fp32
    width: float | None = None  # zoo model width (digits_cnn: channels of conv1, default 16; mobilenet_v1: multiplier)
    pretrain_data: str = "first"  # pre-deployment data: first (experience 0) or holdout (disjoint, see docs/data.md)
    pretrain_share: float = 0.2  # holdout: share of the training data (whole speakers/subjects when known)
    pretrain_epochs: int = 40  # "cloud" training of the whole model on the pre-deployment data (0: none)
    pretrain_lr: float = 0.05
    normalize: str = "channel"  # input normalisation fitted on the pre-deployment data: channel or none

    def __post_init__(self):
        if self.frozen not in ("int8", "fp32"):
            raise ConfigError(f"model.frozen {self.frozen!r}; allowed: int8, fp32")
        if self.pretrain_epochs < 0 or self.pretrain_lr <= 0:
            raise ConfigError("model.pretrain_epochs must be >= 0 and model.pretrain_lr > 0")
        if self.pretrain_data not in PRETRAIN_DATA:
            raise ConfigError(f"model.pretrain_data {self.pretrain_data!r}; allowed: {', '.join(PRETRAIN_DATA)}")
        if not 0 < self.pretrain_share < 1:
            raise ConfigError(f"model.pretrain_share must be in (0, 1), got {self.pretrain_share}")
        if self.normalize not in ("channel", "none"):
            raise ConfigError(f"model.normalize {self.normalize!r}; allowed: channel, none")
        if self.width is not None and self.width <= 0:
            raise ConfigError(f"model.width must be > 0 or unset, got {self.width}")


@dataclass(frozen=True)
class MemoryConfig:
    capacity: int = 100  # N, samples in the replay memory
    bits: int = 8  # Q: 32 (fp32) or 1..8 bits per stored value
    policy: str = "nicv2"  # nicv2, reservoir, class_balanced
    granularity: str = "tensor"  # one scale per tensor, or per channel
    range: str = "max"  # quantizer range: max, percentile, mse

    def __post_init__(self):
        from tinycl.memory import POLICIES, check_bits

        if self.capacity < 1:
            raise ConfigError(f"memory.capacity must be >= 1, got {self.capacity}")
        check_bits(self.bits, "memory.bits")
        if self.policy not in POLICIES:
            raise ConfigError(f"memory.policy {self.policy!r}; allowed: {', '.join(POLICIES)}")
        if self.granularity not in ("tensor", "channel"):
            raise ConfigError(f"memory.granularity {self.granularity!r}; allowed: tensor, channel")
        if self.range not in RANGE_METHODS:
            raise ConfigError(f"memory.range {self.range!r}; allowed: {', '.join(RANGE_METHODS)}")


@dataclass(frozen=True)
class RunConfig:
    strategy: str = "latent_replay"  # a name in tinycl.strategies.STRATEGIES
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)  # distilled_replay: dataset distillation
    growth: GrowthConfig = field(default_factory=GrowthConfig)  # distilled_replay: model size adaption

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy {self.strategy!r} is not known; allowed: {', '.join(STRATEGIES)}")


# -- (de)serialisation with type checks ----------------------------------------------------------------------
def _check_type(value, hint, where: str):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _check_type(value, opt, where)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table, got {value!r}")
        return dict(value)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(_check_type(v, typing.get_args(hint)[0], where) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (type(value) is not hint):
        raise ConfigError(f"{where} must be of type {hint.__name__}, got {value!r}")
    return value


def config_from_dict(cls, data: dict, where: str = ""):
    """Build dataclass `cls` from a nested dict, checking keys and types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            raise ConfigError(f"unknown config key {path!r}; allowed in {where or 'the top level'}: {', '.join(names)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = config_from_dict(hint, value, path)
        else:
            kwargs[key] = _check_type(value, hint, path)
    return cls(**kwargs)


def config_to_dict(cfg) -> dict:
    """Nested dict of a config, None values left out (TOML has no null; they are the defaults)."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = config_to_dict(value)
        elif value is not None and value != {}:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def _parse_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word is a string


def set_value(data: dict, key: str, value, where: str | None = None) -> dict:
    """Set dotted `key` (e.g. "memory.bits") of a nested config dict to `value`, making sections as needed.
    `where` names the source in errors (default: the key)."""
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{where or key}: {part!r} is not a section")
    node[parts[-1]] = value
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `section.key=value` strings (values in TOML syntax; bare words are strings) to a config dict."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. memory.bits=7")
        key, text = item.split("=", 1)
        set_value(data, key, _parse_value(text.strip()), where=f"--set {item!r}")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    data = {}
    if path is not None:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"config file {path} is not valid TOML: {err}") from None
    return config_from_dict(RunConfig, apply_overrides(data, overrides or []))


def save_config(cfg: RunConfig, path: str | Path) -> None:
    from tinycl.io import atomic_write_bytes

    atomic_write_bytes(Path(path), tomli_w.dumps(config_to_dict(cfg)).encode())
