"""Every shipped config learns, and every config key is documented.

Each file in benchmarks/configs/ runs on a small subset of its real data (the overrides below, the file's own
settings otherwise) and must beat naive fine-tuning on the same setup by the stated margin (points of final
accuracy). The subsets keep the whole file near a minute on 2 cores; the full-data figures are in
docs/results/ with their commands.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from conftest import REPO, require_shared_data, shared_data_dir, shared_models_dir

from tinycl.config import RunConfig, load_config
from tinycl.runner import prepare, run_experiment

CONFIGS = REPO / "benchmarks" / "configs"

# config -> (overrides for a quick run, margin over naive in points, data the config reads under the data root)
QUICK = {
    "digits_qlr": ([], 20, None),
    "split_mnist": (["data.n_train=4000", "data.n_test=500"], 10, "mnist"),
    "split_mnist_distilled": (["data.n_train=2000", "data.n_test=500", "distill.iterations=10", "distill.ipc=5",
                               "growth.retrain_epochs=0", "train.epochs=2"], 15, "mnist"),
    "nic_mnist": (["data.n_train=4000", "data.n_test=500", "data.first_size=1000", "data.batch_size=300"], 5,
                  "mnist"),
    "har_ci": (["data.n_train=1500", "data.n_test=600", "model.pretrain_epochs=5"], 10, "har"),
    "har_ci_distilled": (["data.n_train=1500", "data.n_test=600", "model.pretrain_epochs=5", "distill.iterations=10",
                          "growth.retrain_epochs=0"], 15, "har"),
    "kws_ci": (["data.n_train=2000", "data.n_test=400", "model.pretrain_epochs=5"], 5, "speech_commands"),
    "kws_ci_distilled": (["data.n_train=2000", "data.n_test=400", "model.pretrain_epochs=5", "distill.iterations=10",
                          "distill.ipc=5", "growth.retrain_epochs=0"], 4, "speech_commands"),
    "split_cifar10": (["data.n_train=1500", "data.n_test=300"], 3, "cifar10"),
    "split_cifar10_distilled": (["data.n_train=1500", "data.n_test=300", "distill.iterations=10", "distill.ipc=5",
                                 "growth.retrain_epochs=0"], 3, "cifar10"),
    "cifar10_mobilenet_qlr": (["data.n_train=1000", "data.n_test=200"], 5, "cifar10"),
    "cifar10_mobilenet_full": (["data.n_train=1000", "data.n_test=200"], 5, "cifar10"),
}
NEEDS_IMAGES = ("core50_nicv2_391", "core50_nicv2_391_mobilenet")  # CORe50's images are not available offline


def test_every_config_has_a_quick_run():
    names = {p.stem for p in CONFIGS.glob("*.toml")}
    assert names == set(QUICK) | set(NEEDS_IMAGES)


def _quick(name: str) -> RunConfig:
    overrides, _, data = QUICK[name]
    root = [f"data.root={str(shared_data_dir())!r}"] if data else []
    cfg = load_config(CONFIGS / f"{name}.toml", [*root, *overrides])
    if cfg.model.arch.endswith(".tflite"):  # the configs name it relative to the repository
        arch = shared_models_dir() / Path(cfg.model.arch).name
        if not arch.exists():
            pytest.skip(f"model {arch} not found")
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, arch=str(arch)))
    return cfg


@pytest.mark.parametrize("name", sorted(QUICK))
def test_config_beats_naive(name):
    _, margin, data = QUICK[name]
    if data:
        require_shared_data(data)
    torch.set_num_threads(1)
    cfg = _quick(name)
    setup = prepare(cfg)
    learned = run_experiment(cfg, setup=setup)["final_accuracy"]
    naive = run_experiment(cfg, setup=setup, strategy="naive")["final_accuracy"]
    assert 100 * (learned - naive) >= margin, f"{name}: {cfg.strategy} {learned:.3f} vs naive {naive:.3f}"


@pytest.mark.parametrize("name", NEEDS_IMAGES)
def test_core50_configs_load(name):
    cfg = load_config(CONFIGS / f"{name}.toml")  # validated; running needs the images
    assert cfg.data.protocol == "core50-nicv2-391"


def _keys(cls, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            out += _keys(type(default), f"{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


def test_every_key_is_documented():
    doc = (REPO / "docs" / "config.md").read_text()
    sections = {"": doc.split("## [data]")[0]}
    for part in doc.split("\n## [")[1:]:
        sections[part.split("]")[0] + "."] = part
    missing = []
    for key in _keys(RunConfig):
        section, name = (key.rsplit(".", 1)[0] + ".", key.rsplit(".", 1)[1]) if "." in key else ("", key)
        if f"| `{name}` |" not in sections.get(section, ""):
            missing.append(key)
    assert not missing, f"keys not documented in docs/config.md: {missing}"
