"""The saved learner (tinycl.saved) and run folders: a fresh process predicts what the run's learner predicts,
--resume after kill -9 ends as an uninterrupted run without pre-deployment training, nothing is unpickled, a
truncated or edited file is one line and changes nothing, and one run at a time writes a folder."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tinycl.cli import main
from tinycl.config import load_config
from tinycl.metrics import AccuracyMatrix
from tinycl.runner import load_predictor, make_learner, prepare
from tinycl.saved import SavedLearner, save_learner

TOML = ('strategy = "latent_replay"\n[data]\nn_train = 300\nn_test = 100\nfirst_classes = 4\n'
        'classes_per_experience = 2\n[model]\npretrain_epochs = 3\n[memory]\ncapacity = 30\nbits = 4\n'
        '[train]\nepochs = 1\nbatch_size = 16\n')
REPO = Path(__file__).resolve().parents[1]
# runs a config like `tinycl run`, stopping (asleep) after experience 1 is saved, until killed
SLOW = """
import sys, time
from pathlib import Path
from tinycl.config import load_config
from tinycl.runner import run_experiment
def stop(i):
    if i == 1:
        Path(sys.argv[3]).write_text("saved")
        time.sleep(300)
run_experiment(load_config(Path(sys.argv[1])), Path(sys.argv[2]), progress=stop)
"""


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.toml"
    path.write_text(TOML)
    return path


@pytest.fixture(scope="module")
def finished(config, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "full"
    assert main(["run", str(config), "--out", str(out), "--no-progress"]) == 0
    return out


def _metrics(out: Path) -> dict:
    m = json.loads((out / "metrics.json").read_text())
    return {k: v for k, v in m.items() if k not in ("seconds", "latents_computed")}


def _one_line_error(capsys, *words):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


@pytest.mark.parametrize("frozen,strategy", [("int8", "latent_replay"), ("fp32", "joint")])
def test_reloads_in_a_fresh_process_and_predicts_identically(config, tmp_path, frozen, strategy):
    cfg = load_config(config, [f"model.frozen='{frozen}'", f"strategy='{strategy}'"])
    setup = prepare(cfg)
    learner = make_learner(cfg, setup)
    for exp in setup.scenario.train:
        learner.partial_fit(exp)
    save_learner(tmp_path / "learner", cfg, setup, learner, AccuracyMatrix(len(setup.scenario)), 0.0)
    x = np.concatenate([t.x for t in setup.scenario.test])
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np; from tinycl.runner import load_predictor; "
            "p, _ = load_predictor(sys.argv[1]); np.save(sys.argv[2], p.predict(np.load(sys.argv[3])))")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "learner"), str(tmp_path / "p.npy"),
                    str(tmp_path / "x.npy")], check=True, cwd=REPO)
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), learner.predict(x))
    assert (tmp_path / "learner" / "frozen.tflite").exists() == (frozen == "int8")


def test_predict_command_prints_labels_and_writes_csv(finished, tmp_path, capsys):
    learner, saved = load_predictor(finished)
    x = np.random.default_rng(0).integers(0, 17, (5, *saved.data["sample_shape"])).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    assert main(["predict", str(finished), str(tmp_path / "x.npz")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [int(line.split("\t")[1]) for line in lines] == learner.predict(x).tolist()
    assert main(["predict", str(finished / "learner"), str(tmp_path / "x.npz"), "--csv", str(tmp_path / "p.csv")]) == 0
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 6
    np.save(tmp_path / "bad.npy", np.zeros((2, 3)))
    assert main(["predict", str(finished), str(tmp_path / "bad.npy")]) == 2
    _one_line_error(capsys, "bad.npy", "shape (2, 3)")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    assert main(["predict", str(finished), str(tmp_path / "obj.npy")]) == 2
    _one_line_error(capsys, "obj.npy")


def _start_slow(config, out, marker):
    """A slow run in a subprocess, returned once it has written `marker` (mid-run, holding the lock) or ended."""
    proc = subprocess.Popen([sys.executable, "-c", SLOW, str(config), str(out), str(marker)], cwd=REPO)
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    return proc


def test_resume_after_kill_9_equals_an_uninterrupted_run_without_pretraining(config, finished, tmp_path,
                                                                              monkeypatch, capsys):
    out, marker = tmp_path / "cut", tmp_path / "marker"
    proc = _start_slow(config, out, marker)
    try:
        assert marker.exists()
        os.kill(proc.pid, signal.SIGKILL)  # holding the lock: the kernel releases it
    finally:
        proc.wait()
    assert SavedLearner.load(out).matrix()["done"] == 2

    def no_pretraining(*args, **kwargs):
        raise AssertionError("pre-deployment training ran again")

    monkeypatch.setattr("tinycl.runner.pretrain", no_pretraining)
    assert main(["run", str(config), "--out", str(out), "--resume"]) == 0
    assert "no pre-deployment training" in capsys.readouterr().out
    assert _metrics(out) == _metrics(finished)
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_a_crafted_pickle_is_never_loaded(finished, tmp_path, capsys, config):
    """A checkpoint.pt whose unpickling runs os.system, in a folder without a saved learner, and the same bytes
    put in place of arrays.safetensors with a matching manifest: neither runs."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    payload = pickle.dumps({"config": {}, "learner": Evil()})
    old = tmp_path / "old"
    old.mkdir()
    (old / "checkpoint.pt").write_bytes(payload)
    assert main(["run", str(config), "--out", str(old), "--resume", "--no-progress"]) == 2
    _one_line_error(capsys, "checkpoint.pt", "not read")
    assert main(["export", "--from", str(old), "--out", str(tmp_path / "fw")]) == 2
    _one_line_error(capsys, "checkpoint.pt")
    forged = tmp_path / "forged"
    subprocess.run(["cp", "-r", str(finished), str(forged)], check=True)
    (forged / "learner" / "arrays.safetensors").write_bytes(payload)
    manifest = json.loads((forged / "learner" / "manifest.json").read_text())
    from tinycl.io import sha256

    manifest["files"]["arrays.safetensors"] = {"bytes": len(payload),
                                               "sha256": sha256(forged / "learner" / "arrays.safetensors")}
    (forged / "learner" / "manifest.json").write_text(json.dumps(manifest))
    assert main(["run", str(config), "--out", str(forged), "--resume", "--no-progress"]) == 2
    _one_line_error(capsys, "arrays.safetensors")
    assert main(["predict", str(forged), str(tmp_path / "none.npy")]) == 2
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncate", "edit"])
def test_a_damaged_learner_is_one_line_and_nothing_is_overwritten(finished, tmp_path, config, capsys, damage):
    run = tmp_path / "run"
    subprocess.run(["cp", "-r", str(finished), str(run)], check=True)
    target = run / "learner" / ("arrays.safetensors" if damage == "truncate" else "state.json")
    data = target.read_bytes()
    edited = data.replace(b'"elapsed": ', b'"elapsed": 9')
    target.write_bytes(data[: len(data) // 2] if damage == "truncate" else edited)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main(["run", str(config), "--out", str(run), "--resume", "--no-progress"]) == 2
    _one_line_error(capsys, target.name, "truncated or edited")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_two_runs_on_one_folder_cannot_both_write(config, tmp_path, capsys):
    out, marker = tmp_path / "busy", tmp_path / "marker"
    proc = _start_slow(config, out, marker)
    try:
        before = (out / "metrics.json").read_bytes()
        for extra in ([], ["--set", "memory.bits=8"]):  # the same config, and another one
            assert main(["run", str(config), "--out", str(out), "--no-progress", *extra]) == 2
            _one_line_error(capsys, "in use by another tinycl run", f"pid {proc.pid}")
        assert (out / "metrics.json").read_bytes() == before
    finally:
        proc.kill()
        proc.wait()
    # the dead process's lock is taken over; another config on the finished folder is refused
    assert main(["run", str(config), "--out", str(out), "--no-progress", "--set", "memory.bits=8"]) == 2
    _one_line_error(capsys, "another config")


def test_a_failed_run_leaves_no_folder(config, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["run", str(config), "--out", str(out), "--set", "model.split='conv9'", "--no-progress"]) == 2
    _one_line_error(capsys, "conv9")
    assert not out.exists()


def test_export_from_a_run_takes_its_saved_learner(config, tmp_path, monkeypatch):
    from tinycl.export import DeviceLearner

    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--no-progress", "--set", "train.replay_ratio=0.5"]) == 0
    monkeypatch.setattr("tinycl.runner.pretrain", lambda *a, **k: pytest.fail("pre-deployment training ran"))
    dl = DeviceLearner.build(None, run_dir=out)
    saved = SavedLearner.load(out)
    np.testing.assert_array_equal(dl.memory.buffer, saved.learner_state()["memory"]["buffer"])
    assert dl.cfg.train.device and dl.learner.experiences_seen == saved.matrix()["done"]
