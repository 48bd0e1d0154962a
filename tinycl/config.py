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

from tinycl.data.options import Key
from tinycl.distill import DistillConfig
from tinycl.errors import ConfigError
from tinycl.growth import GrowthConfig
from tinycl.learners.base import TrainConfig
from tinycl.learners.replay import NEW_LATENTS
from tinycl.quant.qparams import CODES, RANGE_METHODS
from tinycl.strategies import STRATEGIES

__all__ = ["RunConfig", "DataConfig", "ModelConfig", "MemoryConfig", "TrainConfig", "DistillConfig", "GrowthConfig",
           "load_config", "read_config_file", "save_config", "KEYS", "check_values", "config_to_dict",
           "config_from_dict", "apply_overrides", "set_value"]


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
    validation: float | None = None  # (0, 1): hold out this share of the training data as the test data, to
    # choose settings without reading the test set (the same images for every seed); None: the real test set
    options: dict = field(default_factory=dict)  # the loader's own options, e.g. {per_class = 500} (docs/data.md)

    def __post_init__(self):
        from tinycl.data.registry import GENERIC, check_options, get_loader
        from tinycl.protocols import PROTOCOLS

        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"data.protocol {self.protocol!r} is not known; allowed: {', '.join(PROTOCOLS)}")
        get_loader(self.name)  # ConfigError naming the known loaders
        check_options(self.name, self.options)
        if self.name in GENERIC and not self.root:
            raise ConfigError(f"data.root must name the folder, archive or array file the {self.name} loader reads")
        if self.root and not Path(self.root).exists() and not any(c in self.root for c in "\n\0"):
            raise ConfigError(f"data.root {self.root!r} does not exist; give an existing folder or file")
        n = KNOWN_CLASSES.get(self.name)
        if n is not None and (self.first_classes > n or self.classes_per_experience > n):
            raise ConfigError(f"data.first_classes = {self.first_classes}, data.classes_per_experience = "
                              f"{self.classes_per_experience}: the {self.name} data set has {n} classes; "
                              f"allowed: 1..{n}")
        for key in ("first_classes", "classes_per_experience", "first_size", "batch_size"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"data.{key} must be >= 1, got {getattr(self, key)}")


# classes of the built-in data sets whose class count is fixed (speech_commands: the default keywords)
KNOWN_CLASSES = {"digits": 10, "mnist": 10, "cifar10": 10, "har": 6, "core50": 50}
PRETRAIN_DATA = ("first", "holdout")


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "digits_cnn"  # a model in tinycl.model.zoo.ZOO, or a path to an int8 .tflite file
    split: str | int = "conv3"  # latent layer (a name or an index); "input": nothing frozen, the whole model trains
    frozen: str = "int8"  # frozen stage precision: int8 (post-training quantized) or fp32
    width: float | None = None  # zoo width (digits_cnn, har_cnn: conv1 channels, default 16; mobilenet_v1: multiplier)
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
    code: str = "uniform"  # uniform (affine) levels, or lloyd (2**Q levels fitted to the calibration data)
    new_latents: str = "exact"  # latent_replay: new latents as the frozen stage gives them, or "quantized" as stored

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
        if self.code == "lloyd" and self.range != "max":
            raise ConfigError(f"memory.range {self.range!r} applies to uniform codes; with memory.code \"lloyd\" the "
                              f"levels are fitted to the data: leave memory.range \"max\"")
        if self.new_latents not in NEW_LATENTS:
            raise ConfigError(f"memory.new_latents {self.new_latents!r}; allowed: {', '.join(NEW_LATENTS)}")


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
        check_values(self)


# -- every key: its meaning and allowed values, written once (checked here, listed by `tinycl config`) ---------
MAX_SEED = 2 ** 32 - 1  # numpy's and torch's seeds agree on 0..2**32-1 on every platform
MAX_CAPACITY = 10 ** 7  # replay samples: more than any data set here holds (CORe50's 119,894 training images)
MAX_BATCH = 65536  # a mini-batch beyond this fits no device, and for images not a host's RAM either
MAX_STEPS = 10 ** 7  # epochs, iterations, warm-up steps: beyond this a run never ends
MAX_LR = 1e10  # 1e308 overflows to inf; below this, a diverging step is caught by the learner with one line


def _names(registry: str):
    """The names in a registry, looked up when listed (the registries import the learners)."""
    def names():
        from tinycl.data.registry import LOADERS
        from tinycl.memory import POLICIES
        from tinycl.protocols import PROTOCOLS

        return {"strategies": STRATEGIES, "loaders": LOADERS, "protocols": PROTOCOLS, "policies": POLICIES,
                "ranges": RANGE_METHODS}[registry]
    return names


def _path_text(value) -> str | None:
    if "\n" in value or "\0" in value:
        return "a path cannot hold a newline or NUL character"
    return None


def _bits(value) -> str | None:
    return None if value in (*range(1, 9), 32) else "not a stored width"


KEYS = {
    "strategy": Key("the learner, by name in `tinycl.strategies.STRATEGIES`", choices=_names("strategies")),
    "seed": Key("seeds every random choice: subsets, hold-out, initialisation, order, memory policies, "
                "distillation", 0, MAX_SEED),
    "data.name": Key("data set: a built-in one (`tinycl data list`), a generic loader (image_folder, wav_folder, "
                     "arrays: `data.root` is the folder, archive or file) or one registered in Python (docs/data.md)",
                     choices=_names("loaders")),
    "data.root": Key("data root (built-in sets), or the data set itself (generic loaders); unset: `$TINYCL_DATA`, "
                     "else `../shared/data`", text="a path", test=_path_text),
    "data.protocol": Key("how the data set is cut into experiences (`tinycl.protocols`)", choices=_names("protocols")),
    "data.first_classes": Key("class_incremental, nic: classes in experience 0", 1, 100000),
    "data.classes_per_experience": Key("class_incremental: new classes per later experience; at most the data "
                                       "set's classes", 1, 100000),
    "data.class_order": Key("a permutation of the labels; unset: label order", 0, 100000, items=True,
                            text="permutation of 0..C-1"),
    "data.first_size": Key("nic: samples in experience 0; unset: 2.5% of the training set (NICv2's share)",
                           1, 10 ** 9),
    "data.batch_size": Key("nic: samples per later experience; unset: 0.25%", 1, 10 ** 9),
    "data.run": Key("core50-nicv2-391: which official run", 0, 9),
    "data.n_train": Key("a class-stratified subset of the training data (drawn with `seed`); unset: all; at least "
                        "one sample per class", 2, 10 ** 9),
    "data.n_test": Key("the same for the test data", 1, 10 ** 9),
    "data.validation": Key("hold out this share of the training data (class-stratified, or whole speakers/subjects) "
                           "as the test data, the same images for every seed: for choosing settings without reading "
                           "the test set", 0, 1, True, True),
    "data.options": Key("the loader's own options, e.g. `{per_class = 500}` (listed below per loader)",
                        text="the loader's options"),
    "model.arch": Key("a zoo model (`tinycl.model.zoo.ZOO`) or a path to an int8 `.tflite` file (its own weights "
                      "and input quantization; no pre-training, no normalisation)",
                      text="digits_cnn, har_cnn, mlp, mobilenet_v1, a `.tflite` file", test=_path_text),
    "model.split": Key('the last frozen layer (its output is the latent): a name or an index from `tinycl '
                       'inspect` (an integer; a string always names a layer); `"input"`: nothing frozen, the whole '
                       'model trains on the device and a memory holds inputs', 0, 10000,
                       text="`input`, a layer before the last"),
    "model.frozen": Key("precision of the frozen stage: post-training quantized int8 (the integer executor) or "
                        "fp32", choices=("int8", "fp32")),
    "model.width": Key("zoo model width: digits_cnn's and har_cnn's conv1 channels (others 2x, 4x; default 16), "
                       "mlp's hidden units, mobilenet_v1's multiplier", 0, 4096, open_lo=True),
    "model.pretrain_data": Key("the pre-deployment data: `first` = experience 0; `holdout` = `pretrain_share` of "
                               "the training data split off before the stream is cut (whole speakers / subjects "
                               "where the loader knows them), so it is not in the stream",
                               choices=("first", "holdout")),
    "model.pretrain_share": Key("holdout: share of the training data", 0, 1, True, True),
    "model.pretrain_epochs": Key('epochs of "cloud" training of the whole float model on the pre-deployment data; '
                                 "0: none (initial weights)", 0, 100000),
    "model.pretrain_lr": Key("its SGD learning rate (momentum 0.9, cosine schedule)", 0, MAX_LR, open_lo=True),
    "model.normalize": Key("input normalisation (x - mean) / std per input channel, fitted on the pre-deployment "
                           "data, applied before the frozen stage and saved with the run", choices=("channel", "none")),
    "memory.capacity": Key("N, samples in the replay memory (distilled_replay: unused, one memory per experience "
                           "sized by `[distill]`); its bytes must fit in this machine's RAM", 1, MAX_CAPACITY),
    "memory.bits": Key("Q, bits per stored value (packed); 32 keeps float32", text="1..8, 32", test=_bits),
    "memory.policy": Key("which samples are kept", choices=_names("policies")),
    "memory.granularity": Key("one quantizer scale per tensor or per channel", choices=("tensor", "channel")),
    "memory.range": Key("the range the quantizer covers, from the first data written", choices=_names("ranges")),
    "memory.code": Key("uniform: 2**Q levels evenly spaced over that range (a scale and zero point per tensor or "
                       "channel); lloyd: 2**Q levels fitted to the first data written by Lloyd-Max (1-D k-means), "
                       "a float32 table per tensor or channel that the device decodes through (memory.range "
                       "unused; no firmware export yet)", choices=CODES),
    "memory.new_latents": Key("latent_replay with Q < 32: `exact` trains and predicts on new latents as the frozen "
                              "stage gives them (only replayed ones are Q-bit); `quantized` passes them through the "
                              "memory's quantizer too (calibrated on experience 0's latents), so old and new classes "
                              "reach the adaptive stage in one form", choices=NEW_LATENTS),
    "train.epochs": Key("passes over each experience's new data", 1, 100000),
    "train.batch_size": Key("mini-batch size, new + replayed samples", 2, MAX_BATCH),
    "train.lr": Key("SGD learning rate (after the first experience, if `first_lr` is set)", 0, MAX_LR, True),
    "train.first_lr": Key("learning rate on experience 0; unset: `lr`", 0, MAX_LR, True),
    "train.momentum": Key("SGD momentum (a new optimizer per experience)", 0, 1, open_hi=True),
    "train.weight_decay": Key("SGD weight decay", 0, 1, open_hi=True),
    "train.replay_ratio": Key('share of each mini-batch taken from memory (mix "ratio")', 0, 1, True, True),
    "train.replay_mix": Key("pellegrini (cur = n_new // ((n_new + N) // B)), class_balanced (replayed share = "
                            "classes only in memory / classes present), ratio (`replay_ratio`); unset: ratio if "
                            "`replay_ratio` is set, else the strategy's default",
                            choices=("pellegrini", "class_balanced", "ratio")),
    "train.device": Key("run every training step on the C runtime, as the device computes it", text="true, false"),
    "train.batch_renorm": Key("batch renormalization after each trainable conv of the adaptive stage (AR1*)",
                              text="true, false"),
    "train.brn_warmup": Key("steps over which batch renormalization's r_max / d_max ramp up to 1.25 / 0.5",
                            0, MAX_STEPS),
    "train.cwr": Key("CWR* head: consolidated class weights, new classes start at zero", text="true, false"),
    "train.head_lr_factor": Key("the head's learning rate is `lr` times this", 0, 1000, open_lo=True),
    "train.clip_norm": Key("clip the gradient's global L2 norm to this per step", 0, 1e6, open_lo=True),
    "train.warmup_steps": Key("per experience, the learning rate ramps up linearly over this many steps",
                              0, MAX_STEPS),
    "distill.space": Key("distil the frozen stage's outputs (latent) or the raw inputs (input, replayed through the "
                         'frozen stage); at `model.split = "input"` the two are the same', choices=("latent", "input")),
    "distill.ipc": Key("synthetic samples per class; unset: `fraction` of the class's training samples", 1, 10 ** 6),
    "distill.budget": Key("synthetic samples kept in all, shared equally by the classes seen so far: each new class is "
                          "distilled into budget // classes seen and the older sets are cut to it, so the replay "
                          "memory is full from the first experience and never grows (random replay's class-balanced "
                          "memory of `budget` samples holds as many); unset: each class keeps `ipc` or `fraction` "
                          "of its samples for good; excludes `ipc`; class-incremental streams only (each class in one "
                          "experience)", 1, 10 ** 6),
    "distill.fraction": Key("share of a class's training samples kept as synthetic ones (at least 1 per class)",
                            0, 1, open_lo=True),
    "distill.iterations": Key("DM optimisation steps per class (DM itself: 20,000 on a GPU); 0: random real samples",
                              0, MAX_STEPS),
    "distill.lr": Key("SGD learning rate on the synthetic samples (DM's)", 0, 1e4, open_lo=True),
    "distill.momentum": Key("its momentum (DM's)", 0, 1, open_hi=True),
    "distill.real_batch": Key("real samples drawn per step (DM's)", 1, MAX_BATCH),
    "distill.embedder": Key("the random embedding networks, redrawn every step: the model itself without its head, "
                            "DM's ConvNet, or an MLP", choices=("model", "convnet", "mlp")),
    "distill.augment": Key("the same random transform on real and synthetic batches: image (DSA: crop, scale, "
                           "rotate, color), image_flip (+ flip), signal (time shift, amplitude, noise), spectrogram "
                           "(shift along frames, gain, noise), none; auto: image for input-space images, signal for "
                           "(C, T) / (C, 1, T) windows, none in latent space",
                           choices=("auto", "none", "image", "image_flip", "signal", "spectrogram")),
    "growth.policy": Key("none; accuracy (grow while the class-balanced accuracy on the held data, new + distilled, "
                         "is below `target`); schedule (grow after the experiences in `at`); on_demand (grow when the "
                         "training loss has plateaued above `loss_target`, or accuracy is below `target`)",
                         choices=("none", "accuracy", "schedule", "on_demand")),
    "growth.target": Key("accuracy, on_demand: the held-data accuracy below which the model grows", 0, 1, True),
    "growth.loss_target": Key("on_demand: a last-epoch training loss above this, once plateaued, asks for growth",
                              0, 1e6),
    "growth.plateau": Key("on_demand: the loss has plateaued when its last epoch fell by less than this share",
                          0, 1, open_hi=True),
    "growth.retrain_epochs": Key("after growing, train the wider model this many more epochs on the same "
                                 "experience, then decide again; 0: the next experience trains it", 0, 100000),
    "growth.factor": Key("one growth step multiplies each growing layer's width by this", 1, 16, open_lo=True),
    "growth.max_factor": Key("no layer grows beyond this times its width at deployment", 1, 64),
    "growth.at": Key("schedule: experiences after which to grow", 0, 10 ** 6, items=True,
                     text="experience indices"),
    "growth.start_factor": Key("widen once at deployment (a fixed larger model: > 1 with policy none); <= "
                               "max_factor when a policy grows", 1, 64),
    "growth.max_inference_flops": Key("never grow past this many FLOPs per inference of the adaptive stage",
                                      1, 10 ** 15),
    "growth.noise": Key("relative noise that splits a copied unit's outgoing weight unevenly between copies (breaks "
                        "their symmetry; the function is still preserved)", 0, 10),
    "growth.layers": Key('the layers that grow; empty: every growable hidden layer of the adaptive stage (at split '
                         '"input": every layer but the head)', text="names of growable layers"),
}


def check_values(cfg, where: str = "") -> None:
    """Check every value of a config (dataclass) against KEYS, naming the full key path of the first bad one."""
    for f in dataclasses.fields(cfg):
        value, path = getattr(cfg, f.name), f"{where}{f.name}"
        if dataclasses.is_dataclass(value):
            check_values(value, f"{path}.")
        elif path in KEYS:
            KEYS[path].check(value, path)


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
    return cls(**kwargs)  # each section's __post_init__, then RunConfig's check_values against KEYS


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
    except (tomllib.TOMLDecodeError, RecursionError):
        return text  # a bare word is a string


def set_value(data: dict, key: str, value, where: str | None = None) -> dict:
    """Set dotted `key` (e.g. "memory.bits") of a nested config dict to `value`, making sections as needed.
    `where` names the source in errors (default: the key)."""
    parts = key.strip().split(".")
    if not all(part.strip() for part in parts) or len(parts) > MAX_DEPTH:
        raise ConfigError(f"{where or key}: expected a key path like memory.bits")
    node = data
    for part in parts[:-1]:
        if not isinstance(node, dict):
            raise ConfigError(f"{where or key}: {part!r} is not a section")
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


MAX_CONFIG_BYTES = 1 << 20  # a run config is a page of text; a larger file is not one
MAX_DEPTH = 8  # tables/arrays nested deeper than any config needs (data.options.features.x is 4 levels)


def _depth(value, level: int = 0) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max([_depth(v, level + 1) for v in value.values()], default=level + 1)
    if isinstance(value, list):
        return max([_depth(v, level + 1) for v in value], default=level + 1)
    return level


def read_config_file(path: str | Path) -> dict:
    """The TOML table in `path`, or a one-line ConfigError: not a regular file, larger than 1 MiB, not UTF-8,
    not TOML, or nested deeper than MAX_DEPTH."""
    shown = repr(str(path))  # repr: a newline or control character in the name stays on one line
    path = Path(path)
    try:
        if not path.exists():
            raise ConfigError(f"config file {shown} not found")
        if not path.is_file():
            raise ConfigError(f"config file {shown} is not a regular file (a directory or a device); give a .toml file")
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {shown} is {path.stat().st_size:,} bytes; allowed: at most "
                              f"{MAX_CONFIG_BYTES:,} (a run config is a page of TOML)")
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"config file {shown} cannot be read: {err.strerror or err}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {shown} is not UTF-8 text (byte {err.start}: {raw[err.start]:#04x}); TOML "
                          f"files are UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {shown} is not valid TOML: {err}") from None
    except RecursionError:
        raise ConfigError(f"config file {shown} nests arrays or tables too deeply; allowed: {MAX_DEPTH} levels") \
            from None
    if _depth(data) > MAX_DEPTH:
        raise ConfigError(f"config file {shown} nests arrays or tables deeper than {MAX_DEPTH} levels")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """The RunConfig of a TOML file (None: the defaults) with `section.key=value` overrides; ConfigError (one
    line, naming the key path and what is allowed) on anything else."""
    data = read_config_file(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    if _depth(data) > MAX_DEPTH:
        raise ConfigError(f"--set values nest arrays or tables deeper than {MAX_DEPTH} levels")
    return config_from_dict(RunConfig, data)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    from tinycl.io import atomic_write_bytes

    atomic_write_bytes(Path(path), tomli_w.dumps(config_to_dict(cfg)).encode())
