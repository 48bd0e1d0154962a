"""The embedded demo meets its claims, and the same seed gives the same summary."""

import json

import pytest

from tinycl.demo import SUMMARY_KEYS, run_demo


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    outs = [tmp_path_factory.mktemp(f"demo{i}") for i in range(2)]
    for out in outs:
        run_demo(out, show_progress=False)
    return [json.loads((out / "summary.json").read_text()) for out in outs], outs


def test_summary_rows_and_files(demo_runs):
    (rows, _), outs = demo_runs
    assert [(r["strategy"], r["bits"]) for r in rows] == [
        ("naive", None), ("latent_replay", 32), ("latent_replay", 8), ("latent_replay", 4), ("raw_replay", 8),
        ("joint", 32)]
    assert all(tuple(r) == SUMMARY_KEYS for r in rows)
    assert (outs[0] / "accuracy.png").stat().st_size > 1000


def test_demo_claims(demo_runs):
    rows = {(r["strategy"], r["bits"]): r for r in demo_runs[0][0]}
    fp32, q8 = rows[("latent_replay", 32)]["final_accuracy"], rows[("latent_replay", 8)]["final_accuracy"]
    assert fp32 - rows[("naive", None)]["final_accuracy"] >= 0.30
    assert abs(q8 - fp32) <= 0.01
    assert rows[("joint", 32)]["final_accuracy"] == max(r["final_accuracy"] for r in rows.values())
    assert rows[("latent_replay", 8)]["replay_bytes"] * 4 < rows[("latent_replay", 32)]["replay_bytes"] + 4 * 200


def test_same_seed_same_summary(demo_runs):
    a, b = demo_runs[0]
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in a]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in b]
