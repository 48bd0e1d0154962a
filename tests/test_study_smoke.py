"""The quantized-latent-replay study as grid files and a report step (benchmarks/grids/qlr_*.toml,
benchmarks/qlr_grid_report.py), without running the study: the grids cover the issue's factors, the report's
numbers are the trials' numbers (means, sds and paired differences computed here by hand), and the study configs
load."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from conftest import require_shared_model

from tinycl.config import load_config, save_config
from tinycl.sweep.grid import load_grid

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import qlr_grid_report as report  # noqa: E402


def test_grids_cover_the_issue_factors():
    study = load_grid(REPO / "benchmarks/grids/qlr_study.toml")
    bits = {(t.config.memory.bits, t.config.memory.range) for t in study.trials if t.config.strategy == "latent_replay"}
    assert {32, 8, 6, 4, 3, 2} <= {b for b, _ in bits} and (2, "mse") in bits
    assert {t.config.strategy for t in study.trials} == {"latent_replay", "joint", "naive"}
    assert {t.config.seed for t in study.trials} >= {0, 1, 2}
    layers = load_grid(REPO / "benchmarks/grids/qlr_layers.toml").trials
    for layer in ("Conv2d_11_pointwise", "Conv2d_13_pointwise", "AvgPool_1a"):  # every bar's bit width at each
        at = {(t.config.strategy, t.config.memory.bits) for t in layers if t.config.model.split == layer}
        assert {("latent_replay", b) for b in (32, 8, 6, 4)} | {("joint", 32), ("naive", 32)} <= at, layer
        assert any(not t.config.train.batch_renorm for t in layers if t.config.model.split == layer), layer  # plain
    parts = {(t.config.train.batch_renorm, t.config.memory.policy, t.config.train.replay_mix, t.config.train.cwr)
             for t in study.trials if t.config.strategy == "latent_replay" and t.config.memory.bits == 32}
    assert {(False, "class_balanced", "class_balanced", False), (True, "nicv2", "class_balanced", False),
            (True, "class_balanced", "pellegrini", False), (True, "class_balanced", "class_balanced", True)} <= parts
    assert any(t.config.memory.granularity == "channel" and t.config.memory.bits == 2 for t in study.trials)
    lr_layers = load_grid(REPO / "benchmarks/grids/qlr_lr_layers.toml").trials
    assert all(t.config.data.validation for t in lr_layers)
    assert {t.config.model.split for t in lr_layers} == {"Conv2d_11_pointwise", "Conv2d_13_pointwise", "AvgPool_1a"}
    assert {t.config.memory.capacity for t in load_grid(REPO / "benchmarks/grids/qlr_n.toml").trials} >= {375, 3000}
    assert {t.config.data.protocol for t in load_grid(REPO / "benchmarks/grids/qlr_nic.toml").trials} == {"nic"}
    assert all(t.config.data.validation for t in load_grid(REPO / "benchmarks/grids/qlr_lr.toml").trials)


BASE = REPO / "benchmarks/configs/cifar10_mobilenet_full.toml"


def _trial(root: Path, name: str, overrides: list[str], acc: float, avg: float, replay: int) -> None:
    d = root / "trials" / name
    d.mkdir(parents=True)
    save_config(load_config(BASE, overrides), d / "config.toml")
    memory = {"frozen_weights": 100, "replay_memory": replay, "device_arena": 1000}
    (d / "result.json").write_text(json.dumps({
        "status": "ok", "trial": name, "values": {},
        "metrics": {"final_accuracy": acc, "average_incremental_accuracy": avg, "memory_bytes": memory,
                    "replay_bytes": replay, "seconds": 60.0}}))


def test_report_numbers_come_from_the_trials(tmp_path):
    fp32 = {0: 0.70, 1: 0.72, 2: 0.69}
    two = {0: 0.68, 1: 0.71, 2: 0.66}
    for seed in fp32:
        _trial(tmp_path, f"fp32-{seed}", [f"seed={seed}"], fp32[seed], 0.8, 4000)
        _trial(tmp_path, f"q2-{seed}", [f"seed={seed}", "memory.bits=2", "memory.range=mse"], two[seed], 0.79, 250)
        _trial(tmp_path, f"joint-{seed}", [f"seed={seed}", "strategy=joint"], 0.80, 0.85, 0)
        # new latents exact: its own table, never the bits table's
        exact = [f"seed={seed}", "memory.bits=2", "memory.range=mse", "memory.new_latents=exact"]
        _trial(tmp_path, f"q2e-{seed}", exact, two[seed] - 0.3, 0.5, 250)
        # one range per channel: its own bits-table row, and the 2-bit bar's best
        _trial(tmp_path, f"q2c-{seed}", [f"seed={seed}", "memory.bits=2", "memory.range=mse",
                                         "memory.granularity=channel"], two[seed] + 0.01, 0.79, 250)
        # fitted levels (memory.code lloyd, range left "max"): a row of their own, never the max row's
        _trial(tmp_path, f"q2l-{seed}", [f"seed={seed}", "memory.bits=2", "memory.code=lloyd",
                                         "memory.granularity=channel"], two[seed] + 0.005, 0.79, 260)
        # the recipe with one part changed: the ablation table's row, not the AR1*-style or plain rows
        _trial(tmp_path, f"nobrn-{seed}", [f"seed={seed}", "train.batch_renorm=false"], fp32[seed] - 0.1, 0.7, 4000)
    # a held-out (lr search) run: in the lr table only, never mixed into the test-set tables
    _trial(tmp_path, "lr", ["data.validation=0.1", "strategy=joint"], 0.99, 0.99, 0)
    for seed, (f, q) in enumerate(((0.66, 0.65), (0.68, 0.66))):  # another layer: fp32 and 4 bits, 2 seeds
        layer = ["model.split=AvgPool_1a", f"seed={seed}"]
        _trial(tmp_path, f"pool-{seed}", layer, f, 0.7, 1000)
        _trial(tmp_path, f"pool4-{seed}", [*layer, "memory.bits=4"], q, 0.7, 125)
    # the lr search at that layer: 0.001 is the replay learner's best (the layer table shows it beside the lr used)
    for lr, acc in ((0.001, 0.9), (0.003, 0.8)):
        _trial(tmp_path, f"pool-lr{lr}", ["model.split=AvgPool_1a", "data.validation=0.1", f"train.lr={lr}"], acc,
               acc, 1000)
    (tmp_path / "trials" / "broken").mkdir()  # an unfinished trial: skipped
    page = tmp_path / "page.md"
    page.write_text(f"# Study\n\nprose kept\n\n{report.BEGIN}\nold\n{report.END}\n\nafter\n")
    sys.argv = ["qlr_grid_report.py", str(tmp_path), "--out", str(page)]
    report.main()
    text = page.read_text()
    assert text.startswith("# Study\n\nprose kept") and text.endswith("after\n") and "\nold\n" not in text
    d = 100 * (np.array(list(two.values())) - np.array(list(fp32.values())))
    se = d.std(ddof=1) / np.sqrt(3)
    q2 = 100 * np.array(list(two.values()))
    assert f"| 2 | mse | {q2.mean():.1f} +- {q2.std(ddof=1):.1f} (3)" in text
    assert f"{d.mean():+.2f} (SE {se:.2f}, 3; {'resolved' if abs(d.mean()) > 2 * se else 'unresolved'})" in text
    assert "| Conv2d_10_depthwise | 0.001 | **99.0 (1)** |" in text  # the held-out runs are the lr table's only
    assert "| AvgPool_1a | 0.003 | - | 80.0 (1) |" in text and "| AvgPool_1a | 0.001 | - | **90.0 (1)** |" in text
    assert "| joint >= 70% at the default layer | 80.0% | yes |" in text
    dc = d + 1.0
    assert f"| 2 | mse, per channel | {q2.mean() + 1:.1f} +- {q2.std(ddof=1):.1f} (3) | {dc.mean():+.2f}" in text
    assert f"| 2-bit (best levels: mse, per channel) within 1.5 of fp32 | {dc.mean():+.2f}" in text
    lloyd = f"| 2 | lloyd, per channel | {q2.mean() + 0.5:.1f} +- {q2.std(ddof=1):.1f} (3) | {dc.mean() - 0.5:+.2f}"
    assert lloyd in text
    assert "| 2 | max |" not in text
    assert "| AR1*-style LR with no BRN | 60.3 +- 1.5 (3) | -10.00 (SE 0.00, 3; resolved) |" in text
    assert f"| 2 | mse | {q2.mean() - 30:.1f} +- {q2.std(ddof=1):.1f} (3) | {q2.mean():.1f} +- " in text
    assert "| 2 | mse | 3" not in text.split("### New latents")[0]
    assert "| every replay layer: 4-bit within 0.5 of fp32 (paired, SE <= 0.5) | Conv2d_10_depthwise -; " \
           "AvgPool_1a -1.50 (SE 0.50, 2; resolved) | - |" in text  # not measured at the default layer
    assert "| AvgPool_1a | 0.001 / - | 0.001 / - | - | - | - | 67.0 +- 1.4 (2) | 65.5 +- 0.7 (2) | - | " \
           "-1.50 (SE 0.50, 2; resolved) |" in text
    assert "16.0x less" in text and (tmp_path / report.PARETO_PNG).stat().st_size > 1000


def test_study_configs_load():
    cfg = load_config(REPO / "benchmarks/configs/cifar10_mobilenet_full.toml")
    assert cfg.model.arch.endswith("mobilenet_v1_0.25_128_quant.tflite") and cfg.model.split == "Conv2d_10_depthwise"
    assert cfg.data.n_train is None and cfg.train.batch_renorm and cfg.memory.policy == "class_balanced"
    core50 = load_config(REPO / "benchmarks/configs/core50_nicv2_391_mobilenet.toml")
    assert (core50.data.protocol, core50.memory.capacity, core50.memory.bits, core50.train.batch_size,
            core50.train.epochs) == ("core50-nicv2-391", 1500, 8, 128, 4)
    model = require_shared_model(Path(core50.model.arch).name)
    from tinycl.model.split import Split
    from tinycl.model.tflite import load_tflite

    split = Split.at(load_tflite(model).spec, core50.model.split)
    assert split.index == 20 and split.latent_shape == (512, 14, 14)  # layer 19 is frozen, the papers' conv5_4/dw
