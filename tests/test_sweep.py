"""tinycl sweep: grid files, trials on a local Ray, shared latents, failures recorded, kill -9 and resume, one
table, and tinycl compare."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tinycl.cli import main
from tinycl.errors import ConfigError
from tinycl.sweep import load_grid
from tinycl.sweep.results import finished_trials, grid_trials, mean_se, paired_by_seed, pareto, study_trials

REPO = Path(__file__).resolve().parents[1]
GRID = f"""
base = "{REPO / 'benchmarks/configs/digits_qlr.toml'}"
[set]
"model.pretrain_epochs" = 5
"train.epochs" = 2
[cross]
"memory.bits" = [8, 4]
seed = [0, 1]
[[rows]]
"memory.bits" = 9
[[rows]]
"model.split" = "conv9"
"""


def _sweep(grid: Path, out: Path, *extra: str, wait: bool = True):
    command = [sys.executable, "-m", "tinycl.cli", "sweep", str(grid), "--out", str(out), "--workers", "2",
               "--no-progress", *extra]
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def _table(out: Path) -> list[str]:
    """results.csv without the timing column (seconds differ between runs)."""
    rows = list(csv.reader((out / "results.csv").read_text().splitlines()))
    drop = rows[0].index("seconds")
    return [[c for k, c in enumerate(row) if k != drop] for row in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted sweep of GRID (4 trials, an invalid value, a failing split)."""
    root = tmp_path_factory.mktemp("sweep")
    grid = root / "grid.toml"
    grid.write_text(GRID)
    done = _sweep(grid, root / "ref")
    assert done.returncode == 0, done.stderr
    return grid, root / "ref", done.stdout


def test_grid_expands_cross_zip_and_rows(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text('[cross]\nseed = [0, 1]\n[zip]\nstrategy = ["latent_replay", "raw_replay"]\n'
                    '"memory.capacity" = [50, 60]\n[[rows]]\nstrategy = "naive"\nwith = ["seed"]\n'
                    '[[rows]]\n"memory.bits" = 9\n')
    grid = load_grid(path)
    assert grid.axes == ("seed", "strategy", "memory.capacity", "memory.bits")
    assert [t.values for t in grid.trials[:2]] == [{"seed": 0, "strategy": "latent_replay", "memory.capacity": 50},
                                                   {"seed": 0, "strategy": "raw_replay", "memory.capacity": 60}]
    assert len(grid.trials) == 4 + 2 + 1 and grid.trials[4].config.strategy == "naive"
    assert grid.trials[5].config.seed == 1
    bad = grid.trials[-1]
    assert bad.config is None and "memory.bits must be one of" in bad.error
    assert len({t.slug for t in grid.trials}) == len(grid.trials)


@pytest.mark.parametrize("text,message", [
    ("[axes]\nseed = [0]\n", "unknown key"),
    ('[zip]\nseed = [0, 1]\nstrategy = ["naive"]\n', "equal lengths"),
    ("[cross]\nseed = 3\n", "non-empty list"),
    ('[[rows]]\nstrategy = "naive"\nwith = ["seed"]\n', "not \\[cross\\] axes"),
    ('base = "missing.toml"\n', "cannot be read"),
])
def test_malformed_grids_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "g.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_grid(path)


def test_failed_trials_are_recorded_while_the_others_finish(reference):
    _, out, stdout = reference
    results = {json.loads(p.read_text())["trial"]: json.loads(p.read_text())
               for p in (out / "trials").glob("*/result.json")}
    assert len(results) == 6 and "4 of 6 trials finished, 2 failed" in stdout
    assert "memory.bits must be one of" in results["memory.bits=9"]["error"]
    assert "unknown split layer 'conv9'" in results["model.split=conv9"]["error"]
    assert all(r["status"] == "ok" for name, r in results.items() if "seed" in name)
    table = (out / "results.md").read_text()
    assert "memory.bits=9" in table and (out / "pareto.png").stat().st_size > 1000


def test_a_study_reads_finished_trials_and_pairs_them_by_seed(reference):
    _, out, _ = reference
    trials = finished_trials([out])  # the two failed trials are left out
    assert sorted((t["cfg"]["memory.bits"], t["seed"]) for t in trials) == [(4, 0), (4, 1), (8, 0), (8, 1)]
    four, eight = ([t for t in trials if t["cfg"]["memory.bits"] == b] for b in (4, 8))
    acc = {(t["cfg"]["memory.bits"], t["seed"]): t["metrics"]["final_accuracy"] for t in trials}
    d = paired_by_seed(four, eight[1:], lambda t: t["metrics"]["final_accuracy"])  # seed 1 only in both
    assert d.tolist() == [acc[4, 1] - acc[8, 1]]
    d = paired_by_seed(four, eight, lambda t: t["metrics"]["final_accuracy"])
    assert d.tolist() == [acc[4, 0] - acc[8, 0], acc[4, 1] - acc[8, 1]]
    grid, _, _ = reference
    narrower = grid.parent / "narrower.toml"  # the grid after its 4-bit rows were changed: they are left out
    narrower.write_text(grid.read_text().replace('"memory.bits" = [8, 4]', '"memory.bits" = [8, 3]'))
    assert {t["cfg"]["memory.bits"] for t in grid_trials(trials, narrower)} == {8}
    assert grid_trials(trials, grid) == trials
    grids = grid.parent / "grids"  # a sweep directory named after a grid file there reads through that grid
    grids.mkdir(exist_ok=True)
    (grids / f"{out.name}.toml").write_text(narrower.read_text())
    assert study_trials([out], grids) == grid_trials(trials, narrower)
    assert study_trials([out], grid.parent / "no_grids") == trials
    mean, se = mean_se([1.0, 2.0, 6.0])
    assert mean == 3.0 and abs(se - (7 / 3) ** 0.5) < 1e-12  # sd 2.6458 / sqrt(3)
    assert np.isnan(mean_se([1.0])[1])


def test_latents_are_computed_once_per_data_model_split(reference):
    _, out, _ = reference
    groups = [json.loads(p.read_text()) for p in (out / "groups").glob("*.json")]
    # a zoo model is trained before deployment with the run's seed: one group per seed, each sample once
    assert len(groups) == 2 and all(g["samples"] == 1797 and g["setups"] == 1 for g in groups)
    for path in (out / "trials").glob("*/metrics.json"):
        assert json.loads(path.read_text())["latents_computed"] == 0  # every trial started from the shared ones


def test_sweep_killed_and_resumed_equals_an_uninterrupted_one(reference, tmp_path):
    grid, ref, _ = reference
    out = tmp_path / "killed"
    proc = _sweep(grid, out, wait=False)
    deadline = time.time() + 120
    while time.time() < deadline and not any(
            json.loads(p.read_text()).get("status") == "ok" for p in (out / "trials").glob("*/result.json")):
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)  # half-way: some trials done, others running or queued
    proc.wait()
    finished = sum(1 for _ in (out / "trials").glob("*/result.json"))
    assert finished < 6, "the sweep finished before it could be killed"
    done = _sweep(grid, out, "--resume")
    assert done.returncode == 0, done.stderr
    assert _table(out) == _table(ref)


def test_compare_puts_runs_made_by_hand_in_one_table(reference, tmp_path, capsys):
    _, ref, _ = reference
    runs = []
    for name in ("memory.bits=8,seed=0", "memory.bits=4,seed=0"):
        src = next(p.parent for p in (ref / "trials").glob("*/result.json")
                   if json.loads(p.read_text())["trial"] == name)
        runs.append(shutil.copytree(src, tmp_path / name.replace(",", "_")))
    assert main(["compare", *map(str, runs), "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "| memory.bits |" in out.splitlines()[0] and "seed" not in out.splitlines()[0]
    assert (tmp_path / "cmp" / "results.csv").exists()


@pytest.mark.parametrize("path", sorted((REPO / "benchmarks" / "grids").glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_grids_expand_to_valid_trials(path):
    grid = load_grid(path)
    assert grid.trials and not [t.error for t in grid.trials if t.error]


def test_pareto_front():
    rows = [{"status": "ok", "device_bytes": b, "final_accuracy": a} for b, a in ((10, 0.5), (20, 0.6), (30, 0.55),
                                                                                  (5, 0.4))]
    rows.append({"status": "failed", "device_bytes": None, "final_accuracy": None})
    assert pareto(rows) == [True, True, False, True, False]
