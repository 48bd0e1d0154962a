"""tinycl export with the published learner's options (benchmarks/configs/cifar10_mobilenet_full.toml): batch
renormalization after each trainable conv, the class-balanced memory policy, the class-balanced replay mix and new
latents in the memory's form (memory.new_latents = "quantized"). The
exported project must print, on the host build and under QEMU, exactly the lines of the Python learner in device
mode; the saved state carries batch renormalization's running statistics.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from conftest import REPO, run_powerloss
from test_export import DIGITS, SMALL, host_run, qemu_run, require_tools

from tinycl.config import load_config
from tinycl.errors import ConfigError
from tinycl.export import DeviceLearner, export_project, reference_lines
from tinycl.export.codegen import slot_nbytes, state_fields
from tinycl.export.project import TOOLS
from tinycl.export.scenario import seen_accuracies

# a memory of 23 slots for 10 classes: classes over their quota give up slots at every experience
OPTIONS = ["memory.policy=class_balanced", "train.replay_mix=class_balanced", "train.batch_renorm=true",
           "train.brn_warmup=5", "memory.new_latents=quantized", "memory.capacity=23", "memory.bits=4",
           "train.batch_size=10"]


@pytest.fixture(scope="module")
def balanced(tmp_path_factory):
    out = tmp_path_factory.mktemp("fw") / "balanced"
    dl = DeviceLearner.build(load_config(DIGITS, SMALL + OPTIONS))
    export_project(dl, out)
    return dl, out, reference_lines(dl)


def test_the_options_are_those_of_the_published_learner(balanced):
    published = load_config(REPO / "benchmarks/configs/cifar10_mobilenet_full.toml")
    dl, _, _ = balanced
    for cfg in (published, dl.cfg):
        assert cfg.memory.policy == "class_balanced" and cfg.train.batch_renorm
        assert cfg.train.replay_mix == "class_balanced" and cfg.memory.new_latents == "quantized"
    assert any(ly.op == "batch_renorm" for ly in dl.learner.adaptive.spec.layers)


def test_host_build_prints_the_python_device_run(balanced):
    dl, out, reference = balanced
    assert len(reference) == len(dl.setup.scenario.train)
    assert host_run(out) == reference


def test_fp32_memory_prints_the_python_device_run(tmp_path):
    """The published learner's fp32 row: the memory holds the latents' float32 values (no quantizer, so new latents
    stay exact whatever memory.new_latents says)."""
    dl = DeviceLearner.build(load_config(DIGITS, [*SMALL, *OPTIONS, "memory.bits=32"]))
    export_project(dl, tmp_path)
    assert dl.memory.scale_ is None and dl.memory.buffer.dtype == np.float32
    assert host_run(tmp_path) == reference_lines(dl)


def test_cortex_m4f_under_qemu_prints_the_python_device_run(balanced):
    require_tools(*TOOLS)
    _, out, reference = balanced
    assert qemu_run(out) == reference
    symbols = subprocess.run(["arm-none-eabi-nm", str(out / "build/cortex-m4f/learner.elf")], capture_output=True,
                             text=True, check=True).stdout
    assert "__aeabi_d" not in symbols  # batch statistics and the mix in float32 and integers only


def test_accuracies_are_those_of_tinycl_run_in_device_mode(balanced):
    from tinycl.runner import run_experiment

    dl, _, reference = balanced
    metrics = run_experiment(dl.cfg)
    assert metrics["accuracy_after_each"] == pytest.approx(seen_accuracies(reference), abs=0)


def test_the_saved_state_holds_the_running_statistics(balanced):
    """The weights field (saved by tcl_save, CRC'd in every line) ends each batch renormalization layer with its
    running mean and var, as the host learner holds them; the slot grows by exactly those bytes."""
    dl, _, _ = balanced
    fields = state_fields(dl)
    params = dl.learner.adaptive.params
    brn = [ly.name for ly in dl.learner.adaptive.spec.layers if ly.op == "batch_renorm"]
    running = sum(params[n].running_mean.numel() + params[n].running_var.numel() for n in brn)
    trained = sum(p.numel() for p in dl.learner.adaptive.parameters())
    assert len(fields["weights"]) == 4 * (trained + running)
    layer = params[brn[-1]]
    tail = np.concatenate([layer.running_mean.numpy(), layer.running_var.numpy()]).astype("<f4").tobytes()
    assert fields["weights"].find(tail) >= 0
    assert not np.allclose(layer.running_var.numpy(), 1.0)  # trained, not the initial values
    assert slot_nbytes(fields) % 8 == 0


def test_power_loss_keeps_the_running_statistics(tmp_path):
    """tests/c/powerloss.c on a learner with batch renormalization and the class-balanced policy: every cut of a
    save restores the old or the new state (running statistics included in the CRC'd payload), never a torn one."""
    cfg = load_config(DIGITS, ["model.width=4", "model.pretrain_epochs=1", "data.n_train=200", "data.n_test=50",
                               "train.epochs=1", *OPTIONS])
    dl = DeviceLearner.build(cfg)
    export_project(dl, tmp_path)
    words = run_powerloss(tmp_path)
    # bytes one save writes: the target slot's magic cleared (4), the payload, the 20-byte header
    assert int(words[2]) == 4 + sum(len(v) for v in state_fields(dl).values()) + 20
    assert words[10] == "0" and words[-1] == "rejected"


def test_class_balanced_mix_is_the_hosts_at_every_share(balanced):
    """The firmware reads its class-balanced split from a table of the host's own TrainConfig.mix (float64 rounding,
    which an integer formula misses at ties: b = 6, 5 of 12 classes only in memory gives 3, not 3.5 -> 4)."""
    from tinycl.learners.base import TrainConfig

    assert TrainConfig(batch_size=6).mix(1, 1, 5 / 12)[0] == 3  # 6 * (1 - 5 / 12) = 3.4999999999999996 in float64
    dl, out, _ = balanced
    t = dl.learner.train_cfg
    source = (out / "src/tcl_model.c").read_text()
    table = source.split("MIX_CUR[")[1].split("{")[1].split("}")[0]
    n = dl.setup.scenario.n_classes
    want = [t.mix(1, 1, k / m)[0] for m in range(1, n + 1) for k in range(m)]
    assert [int(v) for v in table.replace(",", " ").split()] == want


@pytest.mark.parametrize("option,message", [("train.cwr=true", "train.cwr"),
                                            ("train.warmup_steps=10", "train.warmup_steps"),
                                            ("memory.policy=reservoir", "memory.policy 'reservoir'"),
                                            ("memory.range=mse", "memory.range 'mse'")])
def test_options_the_firmware_lacks_are_one_line(option, message):
    with pytest.raises(ConfigError, match="tinycl export does not support") as err:
        DeviceLearner.build(load_config(DIGITS, ["model.pretrain_epochs=0", option]))
    assert message in str(err.value) and "\n" not in str(err.value)
