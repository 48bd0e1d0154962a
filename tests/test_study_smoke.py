"""The quantized-latent-replay study's driver and report (benchmarks/qlr_study.py, qlr_report.py), without
running the study: the grid covers the issue's factors, finished runs are found again on resume, the report's
numbers are the records' numbers (mean, sd, paired deltas by hand), and both study configs load."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import require_shared_model

from tinycl.config import load_config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import qlr_report  # noqa: E402
import qlr_study  # noqa: E402


def test_grid_covers_the_issue_factors():
    ci = qlr_study.grid("ci", "core") + qlr_study.grid("ci", "extra")
    default = [r for r in ci if r["strategy"] == "latent_replay" and r["layer"] == qlr_study.DEFAULT_LAYER
               and r["n"] == 1500 and r["range"] == "max"]
    assert {(r["bits"], r["granularity"]) for r in default} >= {(b, g) for b in (8, 7, 6, 4, 2)
                                                               for g in ("tensor", "channel")} | {(32, "tensor")}
    assert len({r["layer"] for r in ci if r["strategy"] == "latent_replay"}) >= 3
    assert {r["n"] for r in ci} == {375, 750, 1500, 3000}
    assert {r["range"] for r in ci} == {"max", "percentile", "mse"}
    assert {r["strategy"] for r in ci} == {"naive", "joint", "latent_replay"}
    nic = qlr_study.grid("nic", "core")
    assert {r["bits"] for r in nic if r["strategy"] == "latent_replay"} >= {32, 8, 7, 4, 2}
    cfg = load_config(qlr_study.CONFIG)
    keys = [qlr_study.run_key(p, s, r, 1e-3, cfg) for p in ("ci", "nic") for s in (0, 1, 2)
            for t in ("core", "extra") for r in qlr_study.grid(p, t)]
    assert len(keys) == len(set(keys))  # every run has its own key: resume skips exactly the finished ones


def test_results_file_appends_and_reads_back(tmp_path):
    path = tmp_path / "runs.jsonl"
    for k in range(3):
        qlr_study.append_result(path, {"key": f"k{k}", "value": k})
    assert [r["key"] for r in qlr_study.read_results(path)] == ["k0", "k1", "k2"]
    assert not list(tmp_path.glob("*.tmp*"))  # written through a temporary file, renamed


def _record(seed, bits, acc, strategy="latent_replay", gran="tensor", rng="max", replay=1000):
    r = {"part": "bits", "strategy": strategy, "layer": qlr_study.DEFAULT_LAYER, "n": 1500, "bits": bits,
         "granularity": gran, "range": rng}
    cfg = load_config(qlr_study.CONFIG, ["train.epochs=2"])
    return {"key": qlr_study.run_key("ci", seed, r, 1e-3, cfg), "kind": "study", "protocol": "ci", "seed": seed,
            "lr": 1e-3, **r, "final_accuracy": acc, "average_incremental_accuracy": acc + 0.1,
            "replay_bytes": replay, "learner_bytes": replay + 500,
            "wall_seconds": 10.0, "peak_rss_mib": 100.0}


def test_report_numbers_come_from_the_records(tmp_path):
    fp32 = [0.50, 0.54, 0.46]
    q8 = [0.49, 0.54, 0.44]  # paired deltas -1, 0, -2 points: mean -1.00, sd 1.00
    records = [_record(s, 32, a, replay=4000) for s, a in enumerate(fp32)]
    records += [_record(s, 8, a) for s, a in enumerate(q8)]
    records += [_record(s, 32, 0.2, strategy="naive", replay=0) for s in range(3)]
    doc = tmp_path / "study.md"
    doc.write_text(f"# Study\n\nprose kept\n\n{qlr_report.BEGIN}\nold\n{qlr_report.END}\n\nafter\n")
    qlr_report.write_report(records, doc)
    text = doc.read_text()
    assert text.startswith("# Study\n\nprose kept") and text.rstrip().endswith("after") and "\nold\n" not in text
    row8 = next(line for line in text.splitlines() if line.startswith("| latent_replay | 8 |"))
    cells = [c.strip() for c in row8.split("|")[1:-1]]
    m, s = np.mean(q8) * 100, np.std(np.array(q8) * 100, ddof=1)
    assert cells[3] == f"{m:.2f} ± {s:.2f}" and cells[4] == "-1.00 ± 1.00"
    assert cells[5] == f"{m + 10:.2f} ± {s:.2f}" and cells[6] == "-1.00 ± 1.00"
    assert cells[7] == "3" and cells[9] == "1,000"
    assert (tmp_path / "qlr_study_ci_e2.png").stat().st_size > 1000


def test_study_configs_load():
    cfg = load_config(qlr_study.CONFIG)
    assert cfg.model.arch.endswith("mobilenet_v1_0.25_128_quant.tflite") and cfg.model.split == "Conv2d_10_depthwise"
    core50 = load_config(REPO / "benchmarks/configs/core50_nicv2_391_mobilenet.toml")
    assert (core50.data.protocol, core50.memory.capacity, core50.memory.bits, core50.train.batch_size,
            core50.train.epochs) == ("core50-nicv2-391", 1500, 8, 128, 4)
    model = require_shared_model(Path(core50.model.arch).name)
    from tinycl.model.split import Split
    from tinycl.model.tflite import load_tflite

    split = Split.at(load_tflite(model).spec, core50.model.split)
    assert split.index == 20 and split.latent_shape == (512, 14, 14)  # layer 19 is frozen, the papers' conv5_4/dw


def test_results_file_is_valid_jsonl_if_present():
    path = REPO / "docs/results/qlr_study_runs.jsonl"
    if not path.exists():
        pytest.skip(f"no study results at {path}")
    for line in path.read_text().splitlines():
        r = json.loads(line)
        assert r["replay_bytes"] <= r["learner_bytes"]
