"""The distilled-replay study's report step (benchmarks/distilled_report.py) on a real sweep: the study's own grid
(benchmarks/grids/distilled_mnist.toml, every row) on a small MNIST subset with 2 seeds, run by `tinycl sweep`;
the page's tables must hold every row, and their numbers must be the trials' (means, sds, paired differences and
FLOPs ratios computed here from the result.json files, by each trial's grid values, not by the report's code)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import tomli_w
from conftest import require_shared_data

from tinycl.sweep.results import device_bytes

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import distilled_report as report  # noqa: E402

# the grid's rows by their values (seed aside) -> the report's row names
ROWS = {(): "distilled + growth", (("growth.policy", "none"),): "distilled",
        (("growth.policy", "none"), ("growth.start_factor", 4.0)): "fixed large + distilled",
        (("distill.iterations", 0), ("growth.policy", "none")): "random real, 0 DM steps",
        (("distill.budget", 10), ("growth.policy", "none")): "distilled, shared budget",
        (("distill.budget", 10), ("distill.iterations", 0), ("growth.policy", "none")): "random real, shared budget",
        (("memory.capacity", 10), ("strategy", "latent_replay"), ("train.replay_mix", "class_balanced")):
            "random replay",
        (("memory.capacity", 10), ("memory.policy", "class_balanced"), ("strategy", "gdumb"), ("train.epochs", 2)):
            "GDumb-style",
        (("strategy", "naive"),): "naive", (("strategy", "joint"), ("train.epochs", 8)): "joint"}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """distilled_mnist.toml on 500 training images, 1 epoch, 5 DM steps, seeds 0 and 1 (20 trials)."""
    pytest.importorskip("ray")
    root = require_shared_data("mnist")
    tmp = tmp_path_factory.mktemp("distilled")
    spec = tomllib.loads((REPO / "benchmarks/grids/distilled_mnist.toml").read_text())
    spec["base"] = str(REPO / "benchmarks/configs/split_mnist_distilled.toml")
    spec["set"] = {"data.root": str(root), "data.n_train": 500, "data.n_test": 200, "train.epochs": 1,
                   "distill.iterations": 5, "distill.real_batch": 32, "growth.retrain_epochs": 0}
    spec["cross"]["seed"] = [0, 1]
    for row in spec["rows"]:
        if row.get("strategy") in ("latent_replay", "gdumb"):
            row["memory.capacity"] = 10  # 1 per class (1% of 50, at least 1): the distilled sets' count here
        if "distill.budget" in row:
            row["distill.budget"] = 10  # the random-replay row's count here
        if row.get("strategy") == "gdumb":
            row["train.epochs"] = 2
    (tmp / "grid.toml").write_text(tomli_w.dumps(spec))
    done = subprocess.run([sys.executable, "-m", "tinycl.cli", "sweep", str(tmp / "grid.toml"), "--out",
                           str(tmp / "out"), "--workers", "1", "--no-progress"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return tmp / "out"


def _trials(out: Path) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for path in (out / "trials").glob("*/result.json"):
        r = json.loads(path.read_text())
        assert r["status"] == "ok", r
        key = tuple(sorted((k, v) for k, v in r["values"].items() if k != "seed"))
        rows.setdefault(ROWS[key], []).append(r)
    return rows


def _ms(values) -> str:
    a = 100 * np.array(values)
    return f"{a.mean():.1f} +- {a.std(ddof=1):.1f}"


def _paired(a: list[dict], b: list[dict], read) -> np.ndarray:
    by_seed = {r["values"]["seed"]: read(r["metrics"]) for r in b}
    return np.array([read(r["metrics"]) - by_seed[r["values"]["seed"]] for r in a])


def test_report_tables_hold_the_trials_numbers(sweep, tmp_path):
    page = tmp_path / "distilled.md"
    page.write_text(f"# Distilled replay\n\nprose kept\n\n{report.BEGIN}\nold\n{report.END}\n\nafter\n")
    report.main([str(sweep), "--steps", str(sweep), "--out", str(page)])
    text = page.read_text()
    assert text.startswith("# Distilled replay\n\nprose kept") and text.endswith("after\n") and "\nold\n" not in text
    trials = _trials(sweep)
    assert set(trials) == set(report.ROWS) and all(len(rs) == 2 for rs in trials.values())
    for row, rs in trials.items():
        m = [r["metrics"] for r in rs]
        replay, device = np.mean([x["replay_bytes"] for x in m]), np.mean([device_bytes(x["memory_bytes"]) for x in m])
        train, distill = (np.mean([x["flops"][k] for x in m]) / 1e9 for k in ("train_flops", "distill_flops"))
        assert (f"| split-mnist | {row} | 2 | {_ms([x['final_accuracy'] for x in m])} | "
                f"{_ms([x['forgetting'] for x in m])} | {replay:,.0f} | {device:,.0f} | {train:.2f} | "
                f"{distill:.2f} |") in text, row
    acc = lambda m: 100 * m["final_accuracy"]  # noqa: E731
    d = _paired(trials["distilled"], trials["random replay"], acc)
    assert f"| split-mnist | {d.mean():+.2f} (SE {d.std(ddof=1) / math.sqrt(2):.2f}, wins {(d > 0).sum()}/2) |" in text
    ds = _paired(trials["distilled, shared budget"], trials["random replay"], acc)
    assert f"| {ds.mean():+.2f} (SE {ds.std(ddof=1) / math.sqrt(2):.2f}, wins {(ds > 0).sum()}/2) |" in text
    assert "| distilled, shared budget above random replay of equal bytes (paired mean) on >= 3 of 4 " in text
    flops = lambda m: m["flops"]["train_flops"]  # noqa: E731
    large = {r["values"]["seed"]: flops(r["metrics"]) for r in trials["fixed large + distilled"]}
    ratio = [flops(r["metrics"]) / large[r["values"]["seed"]] for r in trials["distilled + growth"]]
    assert f"| {100 * np.mean(ratio):.0f}% ({100 * min(ratio):.0f}-{100 * max(ratio):.0f}) |" in text
    assert 0 < np.mean(ratio) < 1  # the fixed large model (width 32) costs more than width 8, grown or not
    # the step curve: the fixed-small learner at 0 and 5 DM steps, paired against 0
    d5 = _paired(trials["distilled"], trials["random real, 0 DM steps"], acc)
    assert f"| split-mnist | 5 | 2 | {_ms([r['metrics']['final_accuracy'] for r in trials['distilled']])} | " \
           f"{d5.mean():+.2f} (SE {d5.std(ddof=1) / math.sqrt(2):.2f}" in text
    joint = np.mean(100 * np.array([r["metrics"]["final_accuracy"] for r in trials["joint"]]))
    assert f"| split-mnist: joint >= 98% | {joint:.1f}% | {'yes' if joint >= 98 else 'no'} |" in text
    assert (tmp_path / "distilled_split-mnist.png").stat().st_size > 1000
