"""tinycl export: the C learner computes what the host learner in device mode computes, bit for bit.

The exported project is built with the host C compiler and, with gcc-arm-none-eabi, libnewlib-arm-none-eabi and
qemu-system-arm installed, for the Cortex-M4F and run under QEMU's mps2-an386; both must print the lines the Python
learner in device mode gives for the same stream (correct counts per test set and CRC-32s of the predictions, the
adaptive weights, the replay memory and the saved state). Without those packages the cross-build tests skip naming
them (they fail under TINYCL_REQUIRE_REFERENCES=1, as .ci/run sets). Streams are small; docs/firmware.md has the
full-size runs.
"""

from __future__ import annotations

import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, missing_reference, require_shared_model, run_powerloss

from tinycl.config import load_config
from tinycl.device.rng import PortableRng
from tinycl.errors import ConfigError, ModelError
from tinycl.export import DeviceLearner, export_project, fit, footprint, predicted, reference_lines
from tinycl.export.learner import unsupported_ops
from tinycl.export.project import TOOLS, flash_nbytes, ram_nbytes
from tinycl.export.scenario import seen_accuracies
from tinycl.runtime import load_library

DIGITS = REPO / "benchmarks/configs/digits_qlr.toml"
SMALL = ["model.pretrain_epochs=2", "data.n_train=300", "data.n_test=100", "train.epochs=2"]
QEMU = ["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-monitor", "none", "-serial", "none",
        "-semihosting-config", "enable=on,target=native", "-kernel", "build/cortex-m4f/learner.elf"]


def require_tools(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        missing_reference(f"{', '.join(missing)} not found: install the Debian packages gcc-arm-none-eabi, "
                          f"libnewlib-arm-none-eabi and qemu-system-arm")


def lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("experience")]


def host_run(out: Path) -> list[str]:
    result = subprocess.run(["make", "-s", "-C", str(out), "run-host"], capture_output=True, text=True, check=True)
    return lines(result.stdout)


def qemu_run(out: Path) -> list[str]:
    subprocess.run(["make", "-s", "-C", str(out), "cortex-m4f"], capture_output=True, check=True)
    result = subprocess.run(QEMU, cwd=out, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return lines(result.stdout + result.stderr)  # QEMU's semihosting console is on stderr when not a terminal


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A small digits learner exported, and the lines of the Python learner in device mode on its stream."""
    out = tmp_path_factory.mktemp("fw") / "digits"
    dl = DeviceLearner.build(load_config(DIGITS, SMALL))
    export_project(dl, out)
    return dl, out, reference_lines(dl)


# -- the pieces C and Python must agree on ----------------------------------------------------------------
def test_portable_rng_draws_as_c():
    lib = load_library()
    c, py = lib.new("tcl_rng"), PortableRng(12345)
    lib.rng_seed(c, 12345)
    assert [lib.rng_next(c) for _ in range(50)] == [py.next() for _ in range(50)]
    assert [lib.rng_below(c, n) for n in (1, 3, 7, 100, 2**31 + 5)] == [py.below(n) for n in (1, 3, 7, 100,
                                                                                                2**31 + 5)]
    perm = np.zeros(37, np.uint16)
    lib.rng_permutation(c, perm, 37)
    assert perm.tolist() == py.permutation(37).tolist()
    sample = np.zeros(20, np.uint16)
    lib.rng_sample(c, sample, 20, 6)
    assert sample[:6].tolist() == py.choice(20, size=6, replace=False).tolist()
    assert sorted(py.permutation(10).tolist()) == list(range(10))


def test_crc_quantize_and_math_are_the_hosts():
    lib = load_library()
    data = np.random.default_rng(0).integers(0, 256, 1000).astype(np.uint8)
    assert lib.crc32(0, data, 1000) == zlib.crc32(data.tobytes())
    from tinycl.quant.qparams import quantize

    x = np.concatenate([np.random.default_rng(1).uniform(0, 3, 2000), np.arange(0, 40) * 0.05 + 0.025])
    x = x.astype(np.float32)
    scale = np.array([0.05], np.float32)
    codes = np.zeros(len(x), np.uint8)
    lib.quantize_codes(x, len(x), 6, 1, len(x), scale, np.zeros(1, np.int32), codes)
    np.testing.assert_array_equal(codes, quantize(x, scale[0], 0, 6))
    for v in np.linspace(-80, 0, 997, dtype=np.float32):
        assert abs(lib.expf(float(v)) / np.exp(np.float64(v)) - 1) < 3e-7
    for v in np.linspace(1, 1000, 997, dtype=np.float32):
        assert abs(lib.logf(float(v)) - np.log(np.float64(v))) < 3e-7 * max(1.0, np.log(np.float64(v)))


# -- the exported learner -----------------------------------------------------------------------------------
def test_host_build_prints_the_python_device_run(digits):
    dl, out, reference = digits
    assert len(reference) == len(dl.setup.scenario.train)
    assert host_run(out) == reference


def test_accuracies_are_those_of_tinycl_run_in_device_mode(digits):
    """The reference lines come from the learner `tinycl run --set train.device=true` runs: same accuracies."""
    from tinycl.runner import run_experiment

    dl, _, reference = digits
    metrics = run_experiment(dl.cfg)
    assert metrics["accuracy_after_each"] == pytest.approx(seen_accuracies(reference), abs=0)


def test_cortex_m4f_under_qemu_prints_the_python_device_run(digits):
    require_tools(*TOOLS)
    _, out, reference = digits
    assert qemu_run(out) == reference
    symbols = subprocess.run(["arm-none-eabi-nm", str(out / "build/cortex-m4f/learner.elf")], capture_output=True,
                             text=True, check=True).stdout
    assert "__aeabi_d" not in symbols and "fmaf" not in symbols  # no double arithmetic; vfma.f32 inline


def test_ram_and_flash_are_the_cost_models(digits):
    """RAM and flash of the ELF (-O2) within 5% of the cost model's buffers (docs/firmware.md)."""
    require_tools("arm-none-eabi-gcc", "arm-none-eabi-size")
    dl, out, _ = digits
    fp, sizes = footprint(out), predicted(dl)
    assert abs(fp.ram - ram_nbytes(sizes)) <= 0.05 * ram_nbytes(sizes)
    assert abs(fp.flash - flash_nbytes(sizes)) <= 0.05 * flash_nbytes(sizes)


def test_mobilenet_late_split_on_qemu(tmp_path):
    """The int8 MobileNet-V1 0.25 .tflite as the frozen stage, split at Conv2d_13_depthwise (256 x 4 x 4)."""
    require_shared_model("mobilenet_v1_0.25_128_quant.tflite")
    require_tools(*TOOLS)
    cfg = load_config(REPO / "benchmarks/configs/cifar10_mobilenet_qlr.toml",
                      ["data.n_train=20", "data.n_test=10", "model.split=Conv2d_13_depthwise", "memory.capacity=20",
                       "train.epochs=1", "train.batch_size=8", "train.replay_mix=pellegrini"])
    dl = DeviceLearner.build(cfg)
    export_project(dl, tmp_path, experiences=2)
    reference = reference_lines(dl, experiences=2)
    assert qemu_run(tmp_path) == reference
    # flash: the uint8 model's requantization records (multiplier, shift, weight zero point per channel) counted
    flash = flash_nbytes(predicted(dl))
    assert predicted(dl)["requant"] > 0 and abs(footprint(tmp_path).flash - flash) <= 0.05 * flash


def test_power_loss_at_every_byte_of_a_save(tmp_path):
    """tests/c/powerloss.c cuts a save after every possible number of bytes: the learner restarts from the old
    or the new state, never a torn one, keeps learning from either, and rejects corrupt slots by their CRC."""
    cfg = load_config(DIGITS, ["model.width=4", "memory.capacity=20", "memory.bits=4", "model.pretrain_epochs=1",
                               "data.n_train=200", "data.n_test=50", "train.epochs=1"])
    export_project(DeviceLearner.build(cfg), tmp_path)
    words = run_powerloss(tmp_path)
    total = int(words[2])
    assert words[4] == str(total + 1) and words[10] == "0" and words[-1] == "rejected"
    assert int(words[6]) + int(words[8]) == total + 1 and int(words[8]) >= 1


# -- bad input: one line ----------------------------------------------------------------------------------
def test_a_learner_that_does_not_fit_is_one_line(capsys):
    from tinycl.cli import main

    code = main(["export", str(DIGITS), "--out", "/nonexistent/never", "--target", "cortex-m4f",
                 "--set", "model.pretrain_epochs=0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "does not fit cortex-m4f: " in err and " needs " in err and "SRAM has" in err and "B over" in err


def test_unsupported_options_and_ops_are_named():
    with pytest.raises(ConfigError, match="does not support strategy 'naive'.*memory.range 'mse'"):
        DeviceLearner.build(load_config(DIGITS, ["strategy=naive", "memory.range=mse"]))
    with pytest.raises(ConfigError, match="does not support memory.code 'lloyd'"):
        DeviceLearner.build(load_config(DIGITS, ["memory.code=lloyd"]))
    from tinycl.model.spec import Layer, ModelSpec

    frozen = ModelSpec((1, 8, 8), (Layer("c", "conv2d", channels=2, kernel=(3, 3)), Layer("s", "softmax")))
    adaptive = ModelSpec((2, 6, 6), (Layer("m", "max_pool2d", kernel=(2, 2), stride=(2, 2)),
                                          Layer("fc", "linear", channels=3)))
    assert unsupported_ops(frozen, adaptive) == ["s (softmax, frozen)", "m (max_pool2d, adaptive)"]
    with pytest.raises(ModelError):
        raise ModelError(f"the C runtime has no kernel for: {', '.join(unsupported_ops(frozen, adaptive))}")


def test_fit_names_the_tier(digits):
    from tinycl.cost.targets import get_target

    dl, _, _ = digits
    assert fit(dl, get_target("mps2-an386"))["replay"] == dl.memory.nbytes
