"""The device cost model: MACs and bytes against hand counts, torch's FLOP counter and the arrays tinycl
allocates; placement (fits / does not fit); time, energy and lifetime arithmetic; the `tinycl cost` CLI."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, require_shared_data, require_shared_model, shared_data_dir
from data_fixtures import write_core50
from torch.utils.flop_counter import FlopCounterMode

from tinycl.cli import main
from tinycl.config import load_config
from tinycl.cost import model as cost_model
from tinycl.cost import workload
from tinycl.cost.model import Battery, estimate, place
from tinycl.cost.targets import BUFFER_KINDS, FLASH_KINDS, TARGETS, Target, Tier, get_target
from tinycl.cost.workload import (
    MEMORY_REPORT_KEYS,
    Workload,
    buffers,
    from_config,
    paper_workload,
    planned_arena_bytes,
)
from tinycl.device.arena import activation_nbytes
from tinycl.errors import ConfigError, ModelError
from tinycl.flops import layer_macs
from tinycl.memory import ReplayMemory
from tinycl.model.build import build, get_weights
from tinycl.model.mobilenet import mobilenet_v1
from tinycl.model.quantized import QuantizedModel
from tinycl.model.spec import Layer, ModelSpec
from tinycl.model.split import Split
from tinycl.model.zoo import digits_cnn
from tinycl.quant.ptq import quantize_model


def tiny_split() -> Split:
    """2x4x4 -> c1 conv 3x3 (4) | latent 4x4x4 -> c2 depthwise 3x3 s2 -> c3 conv 1x1 (6) -> pool -> head (3)."""
    spec = ModelSpec((2, 4, 4), (
        Layer("c1", "conv2d", channels=4, kernel=(3, 3), padding="same", activation="relu"),
        Layer("c2", "depthwise_conv2d", kernel=(3, 3), stride=(2, 2), padding=(1, 1, 1, 1), activation="relu"),
        Layer("c3", "conv2d", channels=6, activation="relu"),
        Layer("pool", "global_avg_pool"),
        Layer("head", "linear", channels=3, bias=False),
    ), name="tiny")
    return Split.at(spec, "c1")


def tiny_workload(**kw) -> Workload:
    args = dict(capacity=10, bits=3, batch_size=8, samples_per_experience=20, new_per_batch=2, epochs=2,
                momentum=True, micro_batch=4, n_classes=3)
    return Workload(tiny_split(), **{**args, **kw})


# -- counts -------------------------------------------------------------------------------------------------
def test_layer_macs_by_hand():
    m = {x.name: x for x in layer_macs(tiny_split().adaptive_spec)}
    # c2: 4 channels x 2x2 outputs x 9 taps; first trainable layer: no input gradient
    assert (m["c2"].forward, m["c2"].weight_grad, m["c2"].input_grad, m["c2"].params) == (144, 144, 0, 40)
    # c3: 6 x 2x2 outputs x 4 inputs; head: 3 x 6
    assert (m["c3"].forward, m["c3"].input_grad, m["c3"].params) == (96, 96, 30)
    assert (m["head"].forward, m["head"].input_grad, m["head"].params) == (18, 18, 18)
    assert (m["pool"].forward, m["pool"].weight_grad, m["pool"].params) == (0, 0, 0)


def _torch_flops(spec: ModelSpec, x: torch.Tensor, backward: bool) -> tuple[int, torch.Tensor]:
    module = build(spec, generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter:
        out = module(x)
        if backward:
            F.cross_entropy(out, torch.zeros(len(x), dtype=torch.long)).backward()
    return counter.get_total_flops(), out


def test_training_macs_match_torch_flop_counter():
    # torch counts 2 FLOPs per MAC and skips the input gradient of a leaf input, as the device does.
    # (Its backward count of grouped convolutions is off by the group count, so no depthwise layer here.)
    split = Split.at(digits_cnn(), "conv3")
    x = torch.randn(3, *split.latent_shape)
    macs = sum(m.forward + m.weight_grad + m.input_grad for m in layer_macs(split.adaptive_spec))
    assert _torch_flops(split.adaptive_spec, x, backward=True)[0] == 2 * 3 * macs


def test_mobilenet_shapes_and_forward_macs():
    spec = mobilenet_v1((3, 128, 128), n_classes=50)
    assert spec.index("conv5_4/dw") == 19 and len(spec.layers) == 29
    assert spec.output_shape("conv5_4/dw") == (512, 8, 8)
    assert spec.output_shape("conv5_6/dw") == (512, 4, 4) and spec.output_shape("conv6/sep") == (1024, 4, 4)
    flops, out = _torch_flops(spec, torch.randn(2, 3, 128, 128), backward=False)
    assert flops == 2 * 2 * spec.macs() and out.shape == (2, 50)
    # published figures of MobileNet-V1 1.0/224 (1000 classes): 569 M mult-adds, 4.2 M parameters
    big = mobilenet_v1((3, 224, 224), n_classes=1000, head_bias=True)
    assert round(big.macs() / 1e6) == 569 and round(big.num_params() / 1e5) == 42


def test_replay_bytes_equal_the_replay_memory_arrays():
    for bits, gran, n_classes in ((3, "tensor", 3), (8, "channel", 300), (32, "tensor", 10), (1, "tensor", 2)):
        mem = ReplayMemory(10, (4, 4, 4), bits, granularity=gran, n_classes=n_classes)
        w = tiny_workload(bits=bits, granularity=gran, n_classes=n_classes)
        assert buffers(w)["replay"] == mem.nbytes
    # hand count: ceil(10 * 64 * 3 / 8) codes + one scale and zero point + 10 labels
    assert buffers(tiny_workload())["replay"] == 240 + 5 + 10
    # DESIGN.md: 1500 latents of 512x8x8 at 8 bit = 46.9 MiB
    assert round(buffers(paper_workload())["replay"] / 2**20, 1) == 46.9
    assert buffers(tiny_workload(capacity=0, new_per_batch=8))["replay"] == 0


def test_frozen_bytes_equal_the_quantized_model():
    split = Split.at(digits_cnn(), "conv3")
    weights = get_weights(build(split.spec, generator=torch.Generator().manual_seed(0)))
    frozen_w, _ = split.split_weights(weights)
    calib = np.random.default_rng(0).random((16, 1, 8, 8), dtype=np.float32)
    qmodel = quantize_model(split.frozen_spec, frozen_w, calib)
    assert QuantizedModel.nbytes_for(split.frozen_spec) == QuantizedModel.nbytes_for(qmodel.spec) == qmodel.nbytes
    w = Workload(split, capacity=10, bits=8, batch_size=8, samples_per_experience=20)
    assert buffers(w)["frozen_weights"] == qmodel.nbytes
    fp32 = sum(a.nbytes for arrays in frozen_w.values() for a in arrays.values())
    assert buffers(replace(w, frozen_bits=32))["frozen_weights"] == fp32


def test_frozen_bytes_of_an_imported_model_from_its_quant_records():
    from tinycl.model.tflite import load_tflite

    qmodel = load_tflite(require_shared_model("mobilenet_v1_0.25_128_quant.tflite"))
    assert QuantizedModel.nbytes_for(qmodel.spec) == qmodel.nbytes


def test_buffers_by_hand():
    w = tiny_workload()
    sizes = buffers(w)
    params = (40 + 30 + 18) * 4
    assert sizes["adaptive_weights"] == sizes["gradients"] == sizes["momentum"] == params
    # kept activations at 4 samples per pass: latent 64 + c2 16 + c3 24 + pool 6 + head 3 values, fp32
    assert sizes["activations"] == activation_nbytes(w.split.adaptive_spec, 4) == 4 * (64 + 16 + 24 + 6 + 3) * 4
    assert sizes["latent_cache"] == 20 * 64  # 2 epochs: all 20 new latents kept, int8
    assert sizes["replay"] == 255
    assert sizes["frozen_weights"] == 4 * 2 * 9 + 4 * 4 + 8 * 4
    assert buffers(tiny_workload(momentum=False, epochs=1))["momentum"] == 0
    assert buffers(tiny_workload(epochs=1))["latent_cache"] == 2 * 64
    assert buffers(w, arena_bytes=5000)["activations"] == 5000


def test_workload_mix_and_steps_follow_the_learner():
    w = paper_workload()
    assert (w.new_per_batch, w.replayed_per_batch) == (21, 107)  # Pellegrini et al., N = 1500
    assert w.steps_per_experience == 4 * math.ceil(300 / 21)
    assert tiny_workload().passes_per_batch == 2
    with pytest.raises(ConfigError, match="micro_batch"):
        tiny_workload(micro_batch=9)


# -- placement -------------------------------------------------------------------------------------------------
def _target(tiers, **kw) -> Target:
    args = dict(name="t", title="test", clock_hz=1e6, cores=1, fwd_macs_per_cycle=1.0, bwd_macs_per_cycle=0.5,
                int8_macs_per_cycle=2.0, active_w=1.0, sleep_w=1e-3, dma_overlap=False, tiers=tuple(tiers))
    args.update(kw)
    names = [k for k in args if k not in ("name", "title", "tiers")]
    return Target(**args, sources={k: "test" for k in names})


RAM = tuple(k for k in BUFFER_KINDS if k not in FLASH_KINDS)


def test_fits_and_does_not_fit():
    sizes = buffers(tiny_workload())  # activations 1808, params 352 x 3, cache 1280, replay 255, frozen 120
    ram = sum(v for k, v in sizes.items() if k not in FLASH_KINDS)
    flash = Tier("flash", 1000, FLASH_KINDS, {"size": "test"})
    where, used, over = place(sizes, _target([Tier("sram", ram, RAM, {"size": "test"}), flash]))
    # flash: the frozen weights and the adaptive stage's initial weights (no code given, no requantization beyond)
    assert not over and used == {"sram": ram, "flash": 120 + 352} and set(where.values()) == {"sram", "flash"}
    # 100 bytes short: the replay memory (placed last of the RAM buffers) overflows by exactly 100
    where, used, over = place(sizes, _target([Tier("sram", ram - 100, RAM, {"size": "test"}), flash]))
    assert [(o.kind, o.tier, o.free, o.over) for o in over] == [("replay", "sram", 155, 100)]
    assert where["replay"] is None


def test_off_chip_tier_takes_the_overflow_and_costs_transfers():
    w = tiny_workload()
    sizes = buffers(w)
    ram = sum(v for k, v in sizes.items() if k not in (*FLASH_KINDS, "replay"))
    ext = Tier("ext", 10**6, ("replay",), {"size": "t", "bandwidth": "t", "energy_per_byte": "t",
                                           "retention_w": "t"},
               off_chip=True, bandwidth=1000.0, energy_per_byte=1e-3, retention_w=0.5)
    tiers = [Tier("sram", ram, RAM, {"size": "test"}), Tier("flash", 1000, FLASH_KINDS, {"size": "t"}), ext]
    arena = sizes["activations"]
    r = estimate(w, _target(tiers), arena_bytes=arena)
    assert r.arena_source == "given"
    assert r.fits and r.placement["replay"] == "ext" and r.off_chip == ["replay"]
    # a mini-batch reads its 6 replayed latents: ceil(6 * 64 * 3 / 8) bytes at 1000 B/s, 1 mJ/B
    assert r.batch.offchip_bytes == {"ext": 144}
    assert r.batch.transfer_s == pytest.approx(0.144)
    assert r.batch.seconds == pytest.approx(r.batch.compute_s + 0.144)
    assert r.batch.joules == pytest.approx(1.0 * r.batch.seconds + 0.144)
    assert r.sleep_w == pytest.approx(1e-3 + 0.5)
    overlapped = estimate(w, _target(tiers, dma_overlap=True), arena_bytes=arena)
    assert overlapped.batch.seconds == pytest.approx(max(overlapped.batch.compute_s, 0.144))
    # without the off-chip tier the replay memory does not fit
    assert [o.kind for o in estimate(w, _target(tiers), arena_bytes=arena, external=False).overflows] == ["replay"]


# -- time, energy, lifetime --------------------------------------------------------------------------------
def test_time_energy_and_lifetime_by_hand():
    w = tiny_workload()
    r = estimate(w, _target([Tier("sram", 10**6, RAM, {"size": "t"}),
                             Tier("flash", 10**6, FLASH_KINDS, {"size": "t"})]),
                 battery=Battery(1000, 3.0), period_s=10)
    frozen = 2 * 4 * 16 * 2 * 9  # 2 new samples x c1 (4 x 4x4 outputs x 2 inputs x 9 taps)
    fwd, wg, ig = 8 * (144 + 96 + 18), 8 * (144 + 96 + 18), 8 * (96 + 18)
    opt = 88 * 3
    assert r.batch.macs == {"frozen_int8": frozen, "frozen_fp32": 0, "forward": fwd, "weight_grad": wg,
                            "input_grad": ig, "optimizer": opt}
    seconds = (frozen / 2.0 + (fwd + opt) / 1.0 + (wg + ig) / 0.5) / 1e6
    assert r.batch.seconds == pytest.approx(seconds) and r.batch.joules == pytest.approx(seconds * 1.0)
    per_period = seconds * 1.0 + 1e-3 * (10 - seconds)
    assert r.lifetime_h == pytest.approx(1000 * 3.6 * 3.0 / per_period * 10 / 3600)
    # an experience: 20 new samples once through the frozen stage, 2 epochs x 10 mini-batches
    assert r.experience.macs["frozen_int8"] == 10 * frozen and r.experience.macs["forward"] == 20 * fwd
    slow = estimate(w, _target([Tier("sram", 10**6, RAM, {"size": "t"}),
                                Tier("flash", 10**6, FLASH_KINDS, {"size": "t"})]), period_s=1e-4)
    assert slow.lifetime_h is None and "longer than" in slow.notes[0]


def test_every_target_parameter_is_cited():
    for t in TARGETS.values():
        assert all(t.sources.values()) and all(all(tier.sources.values()) for tier in t.tiers)
    with pytest.raises(ModelError, match="no source given for active_w"):
        bad = dict(name="x", title="x", clock_hz=1.0, cores=1, fwd_macs_per_cycle=1.0, bwd_macs_per_cycle=1.0,
                   int8_macs_per_cycle=1.0, active_w=1.0, sleep_w=0.0, dma_overlap=False, tiers=())
        Target(**bad, sources={k: "s" for k in bad if k not in ("name", "title", "tiers", "active_w")})
    with pytest.raises(ConfigError, match="allowed: vega, stm32l4"):
        get_target("esp32")


def test_paper_setting_lands_near_the_papers_ratios():
    # Regression guard on docs/cost_model.md: the paper reports 65x faster and 37x less energy on VEGA than on
    # an STM32L4; the model's assumptions put it within a factor of 1.5 of both.
    w = paper_workload(epochs=1)
    vega, l4 = estimate(w, get_target("vega")), estimate(w, get_target("stm32l4"))
    assert vega.fits and l4.fits
    assert 65 / 1.5 < l4.batch.seconds / vega.batch.seconds < 65 * 1.5
    assert 37 / 1.5 < l4.batch.joules / vega.batch.joules < 37 * 1.5


# -- CLI -------------------------------------------------------------------------------------------------------
def test_cli_demo_learner(capsys):
    assert main(["cost", "--target", "stm32l4"]) == 0
    out = capsys.readouterr().out
    assert "digits_cnn, split after conv3" in out and "N=100 at 8 bit" in out and "FITS" in out
    assert "lifetime: 3300 mAh at 3.7 V" in out


def test_cli_config_that_does_not_fit_is_a_report(tmp_path, capsys):
    cfg = tmp_path / "big.toml"
    cfg.write_text('[memory]\ncapacity = 200000\nbits = 8\n[train]\nbatch_size = 32\n')
    assert main(["cost", str(cfg), "--target", "cortex-m4f", "--period-s", "30"]) == 0
    out = capsys.readouterr().out
    assert "DOES NOT FIT: replay memory needs" in out and "tier SRAM" in out
    assert "one mini-batch every 30 s" in out


def test_cli_paper_all_targets_and_errors(capsys):
    assert main(["cost", "--paper", "--epochs", "1", "--target", "all"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("target") and len(lines) == 2 + len(TARGETS)
    assert main(["cost", "--target", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["tinycl cost: error: unknown target 'nope'; allowed: " + ", ".join(TARGETS)]


def test_arena_from_the_device_planner_when_it_can_plan():
    w = paper_workload(epochs=1)
    planned = planned_arena_bytes(w)
    r = estimate(w, get_target("vega"))
    assert r.arena_source == "planned" and r.buffers["activations"] == planned
    # batch-size-1 kernels: one sample's input, activations and their gradients (more than the kept activations)
    assert planned >= activation_nbytes(w.split.adaptive_spec, 1)
    assert estimate(w, get_target("vega"), arena_bytes=123).buffers["activations"] == max(
        123, buffers(w, 0)["activations"])


# -- `tinycl cost` on the shipped configs, against the learner `tinycl run` builds ---------------------------------
CONFIGS = sorted((REPO / "benchmarks" / "configs").glob("*.toml"))
# per data set, overrides that keep a test fast: they change the new samples per experience, not one byte of
# the buffers memory_report counts (test_bytes_do_not_depend_on_data_overrides_or_training)
FAST = {"cifar10": ["data.options.per_class=20"], "mnist": ["data.n_train=500", "data.n_test=100"]}
# CORe50 NICv2-391 lists in the official layout; the real images are not offline, these are random 128x128 PNGs
CORE50_LISTS = {"run0/train_batch_00_filelist.txt": ["s1/o1/C_01_01_000.png 0", "s1/o11/C_01_11_000.png 10"],
                "run0/train_batch_01_filelist.txt": ["s2/o21/C_02_21_230.png 20", "s2/o21/C_02_21_223.png 20"],
                "run0/train_batch_02_filelist.txt": ["s1/o9/C_01_09_153.png 8", "s1/o9/C_01_09_090.png 8"],
                "test_filelist.txt": ["s3/o1/C_03_01_000.png 0", "s3/o21/C_03_21_000.png 20"]}


def _sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def _overrides(path: Path, tmp_path: Path) -> list[str]:
    """--set values that run `path` here: the shared model file, the data root, a synthetic CORe50 tree."""
    cfg = load_config(path)
    out = list(FAST.get(cfg.data.name, []))
    if cfg.model.arch.endswith(".tflite"):
        out.append(f'model.arch="{require_shared_model(Path(cfg.model.arch).name)}"')
    if cfg.data.name == "core50":
        write_core50(tmp_path / "core50", np.random.default_rng(0), CORE50_LISTS)
        out.append(f'data.root="{tmp_path}"')
    elif cfg.data.name != "digits":
        out.append(f'data.root="{require_shared_data(cfg.data.name)}"')
    return out


def _cost_cli(args: list[str], monkeypatch, capsys):
    """Run `tinycl cost ARGS`; (its output, its CostReport, the (setup, learner) it built)."""
    built, reports = [], []
    build_learner, estimate_ = workload.build_learner, cost_model.estimate
    monkeypatch.setattr(workload, "build_learner", lambda cfg: built.append(build_learner(cfg)) or built[-1])
    monkeypatch.setattr(cost_model, "estimate", lambda *a, **k: reports.append(estimate_(*a, **k)) or reports[-1])
    assert main(["cost", *args]) == 0
    return capsys.readouterr().out, reports[0], built[0]


def _assert_bytes_match(sizes: dict[str, int], learner) -> None:
    report = learner.memory_report()
    assert {k: sizes[k] for k in MEMORY_REPORT_KEYS} == {k: report[v] for k, v in MEMORY_REPORT_KEYS.items()}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_cost_runs_on_every_benchmark_config(path, tmp_path, monkeypatch, capsys):
    out, r, (setup, learner) = _cost_cli([str(path), "--target", "vega", *_sets(_overrides(path, tmp_path))],
                                         monkeypatch, capsys)
    _assert_bytes_match(r.buffers, learner)
    assert all(f"{r.buffers[k]:,}" in out for k in MEMORY_REPORT_KEYS if r.buffers[k])
    assert r.workload.adaptive_spec == learner.adaptive.spec and r.workload.split.layer == setup.split.layer
    # the kept-activation estimate at the mini-batch is the learner's peak_activations
    batch = learner.train_cfg.batch_size
    assert activation_nbytes(r.workload.adaptive_spec, batch) == learner.memory_report()["peak_activations"]


def test_index_split_of_a_tflite_config(tmp_path, monkeypatch, capsys):
    path = REPO / "benchmarks/configs/cifar10_mobilenet_qlr.toml"
    sets = _sets(_overrides(path, tmp_path))
    _, named, _ = _cost_cli([str(path), "--target", "vega", *sets], monkeypatch, capsys)
    _, indexed, _ = _cost_cli([str(path), "--target", "vega", *sets, "--set", 'model.split=19'], monkeypatch, capsys)
    assert named.workload.split.layer == indexed.workload.split.layer == "Conv2d_10_depthwise"
    assert indexed.buffers == named.buffers


def test_bytes_do_not_depend_on_data_overrides_or_training():
    # the learner the runner builds (pre-deployment training included) holds the bytes cost reports for a
    # learner built without training and on a subset of the data
    from tinycl.runner import prepare
    from tinycl.strategies import make_learner

    cfg = load_config(REPO / "benchmarks/configs/digits_qlr.toml", ["model.pretrain_epochs=1"])
    small = buffers(from_config(load_config(REPO / "benchmarks/configs/digits_qlr.toml", ["data.n_train=300"])))
    _assert_bytes_match(small, make_learner(cfg, prepare(cfg)))


def test_core50_without_images_is_a_one_line_error(capsys):
    root = require_shared_data("core50/nicv2_391_filelists.tar.gz")
    if list((root / "core50").glob("core50_128x128*")):
        return  # the images are here: test_cost_runs_on_every_benchmark_config covers the protocol's shapes
    path = REPO / "benchmarks/configs/core50_nicv2_391_mobilenet.toml"
    assert main(["cost", str(path), "--target", "vega", "--set", f'data.root="{shared_data_dir()}"']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tinycl cost: error: no CORe50 images in ")
