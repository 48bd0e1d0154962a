"""Splits in a residual network, end to end: a small residual int8 model written with tinycl's own .tflite
writer; `tinycl inspect` marks the valid split points; a split inside a residual block is refused with one line
naming the crossing tensor and the nearest valid points (Split, inspect, run); at a valid point it trains."""

import json

import numpy as np
import pytest
from qmodel_gen import _Builder

from tinycl.cli import main
from tinycl.errors import ModelError
from tinycl.model.quantized import QuantizedModel
from tinycl.model.spec import Layer, TensorQuant
from tinycl.model.split import Split, valid_points
from tinycl.model.tflite import load_tflite
from tinycl.model.tflite_export import to_tflite


@pytest.fixture(scope="module")
def residual(tmp_path_factory):
    """(1, 8, 8) int8 input (the digits data set's images) -> two residual blocks -> MEAN -> 10 logits."""
    b = _Builder(np.random.default_rng(0), "int8", True, (1, 8, 8))
    b.input_quant = TensorQuant((1 / 255,), (-128,), "int8")
    b.weighted(Layer("c0", "conv2d", channels=8, kernel=(3, 3), padding="same", activation="relu"), "input")
    b.weighted(Layer("b1", "depthwise_conv2d", kernel=(3, 3), padding="same"), "c0")
    b.append(Layer("a1", "add", inputs=("c0", "b1"), activation="relu"), b.quant_of("c0"))
    b.weighted(Layer("c2", "conv2d", channels=8, kernel=(1, 1), activation="relu"), "a1")
    b.weighted(Layer("b3", "depthwise_conv2d", kernel=(3, 3), padding="same"), "c2")
    b.append(Layer("a3", "add", inputs=("c2", "b3")), b.quant_of("c2"))
    b.append(Layer("mean", "global_avg_pool"), b.quant_of("a3"))
    b.weighted(Layer("logits", "linear", channels=10), "mean")
    path = tmp_path_factory.mktemp("residual") / "residual.tflite"
    path.write_bytes(to_tflite(QuantizedModel(b.spec(), b.weights)))
    return path


def test_valid_points_and_the_one_line_refusal(residual):
    spec = load_tflite(residual).spec
    assert [spec.names[i] for i in valid_points(spec)] == ["c0", "a1", "c2", "a3", "mean", "logits"]
    with pytest.raises(ModelError) as info:
        Split.at(spec, "b1")
    message = str(info.value)
    assert "\n" not in message and "'c0' cross(es) the cut" in message
    assert "nearest valid split points: 0 (c0), 2 (a1), 3 (c2)" in message


def test_inspect_marks_valid_points_and_refuses_a_cut_inside_a_block(residual, capsys):
    assert main(["inspect", str(residual)]) == 0
    rows = {line.split()[1]: line.split()[-1] for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows["b1"] == rows["b3"] == "no" and rows["a1"] == rows["c0"] == "yes"
    for classes in ([], ["--classes", "4"]):
        assert main(["inspect", str(residual), "--split", "b3", *classes]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "'c2' cross(es) the cut" in err and "Traceback" not in err
    assert main(["inspect", str(residual), "--split", "c0", "--classes", "4"]) == 0  # feeds a later skip: valid


def _run(residual, tmp_path, split: str) -> int:
    config = tmp_path / "res.toml"
    config.write_text('strategy = "latent_replay"\n[data]\nn_train = 200\nn_test = 60\nfirst_classes = 6\n'
                      'classes_per_experience = 2\n[train]\nepochs = 1\nbatch_size = 16\n[memory]\ncapacity = 20\n'
                      'bits = 4\n')
    return main(["run", str(config), "--set", f"model.arch='{residual}'", "--set", f"model.split='{split}'",
                 "--out", str(tmp_path / split), "--no-progress"])


def test_run_refuses_a_split_inside_a_block_and_trains_at_a_valid_one(residual, tmp_path, capsys):
    assert _run(residual, tmp_path, "b1") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'c0' cross(es) the cut" in err
    assert _run(residual, tmp_path, "a1") == 0
    metrics = json.loads((tmp_path / "a1" / "metrics.json").read_text())
    assert metrics["experiences_done"] == 3 and 0.0 <= metrics["final_accuracy"] <= 1.0
