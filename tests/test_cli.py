"""The CLI: bad input gives one line and exit status 2; demo and run produce their files."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tinycl.cli import main


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text('strategy = "latent_replay"\n[data]\nn_train = 300\nn_test = 100\nfirst_classes = 6\n'
                    'classes_per_experience = 2\n[model]\npretrain_epochs = 3\n[train]\nepochs = 1\nbatch_size = 16\n')
    return path


@pytest.mark.parametrize("override,message", [
    ("memory.bits=9", "memory.bits must be one of 32, 8, 7, 6, 5, 4, 3, 2, 1 (32 = fp32), got 9"),
    ("memory.capacity=0", "memory.capacity must be >= 1"),
    ("model.split=conv9", "unknown split layer 'conv9'; allowed: input, a layer index"),
    ("memory.bogus=1", "unknown config key 'memory.bogus'; allowed in memory: capacity"),
    ("train.lr=fast", "train.lr must be of type float, got 'fast'"),
    ("strategy=magic", "strategy 'magic' is not known; allowed: naive"),
    ("memory", "expected section.key=value"),
])
def test_bad_input_is_one_line_exit_2(config, tmp_path, capsys, override, message):
    assert main(["run", str(config), "--set", override, "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_missing_and_broken_config(tmp_path, capsys):
    assert main(["run", str(tmp_path / "none.toml")]) == 2
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[memory\nbits = 8")
    assert main(["run", str(bad)]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_run_and_resume(config, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(config), "--set", "memory.bits=7", "--out", str(out), "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "final acc" in table and "latent_replay" in table  # the summary table, as the demo's
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["bits"] == 7 and metrics["experiences_done"] == 3
    assert "bits = 7" in (out / "config.toml").read_text()
    # resuming a finished run does no more work and gives the same metrics
    assert main(["run", str(config), "--set", "memory.bits=7", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert json.loads((out / "metrics.json").read_text())["final_accuracy"] == metrics["final_accuracy"]


def test_console_script_reports_error_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tinycl.cli", "run", str(tmp_path / "x.toml")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_run_and_demo_use_one_thread_by_default_and_say_so(capsys):
    for command in ("run", "demo"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "default 1" in " ".join(capsys.readouterr().out.split())


def test_run_shows_progress_and_experiences(config, tmp_path, capsys):
    assert main(["run", str(config), "--out", str(tmp_path / "r")]) == 0
    captured = capsys.readouterr()
    assert "experience 3/3" in captured.out and "accuracy on classes seen" in captured.out
    assert "replay" in captured.out
    for phase in ("decoding digits", "pre-deployment training", "frozen stage"):
        assert phase in captured.err  # tqdm bars on stderr: counts and ETA


def test_a_collapsed_learner_is_warned_about_and_recorded(config, tmp_path, capsys, monkeypatch):
    """A learner that predicts one class for every test sample (a finite loss, e.g. too large an lr) gets a warning
    line after each such experience, even with --no-progress, and metrics.json lists those experiences; a resumed
    run keeps the list (the counts are saved with the accuracy matrix)."""
    from tinycl.learners.base import Learner

    monkeypatch.setattr(Learner, "predict", lambda self, x, ids=None, batch_size=512: np.zeros(len(x), np.int64))
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: after experience") == 3 and "predicts one class for every test sample" in err
    assert json.loads((out / "metrics.json").read_text())["collapsed_after"] == [1, 2, 3]
    assert main(["run", str(config), "--out", str(out), "--resume", "--no-progress"]) == 0
    assert json.loads((out / "metrics.json").read_text())["collapsed_after"] == [1, 2, 3]
    monkeypatch.undo()
    assert main(["run", str(config), "--out", str(tmp_path / "fine"), "--no-progress"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert json.loads((tmp_path / "fine" / "metrics.json").read_text())["collapsed_after"] == []
