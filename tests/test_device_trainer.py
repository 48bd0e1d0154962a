"""Device mode: several SGD steps on the C runtime end with the weights torch.optim.SGD gives; the runtime is
compiled with -Wall -Wextra -Werror and run once (a training step and the int8 kernels) under AddressSanitizer
and UndefinedBehaviorSanitizer."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import sanitized_runtime

from tinycl.device.trainer import DeviceTrainer
from tinycl.errors import DataError, ModelError
from tinycl.model.build import build, get_weights
from tinycl.model.spec import Layer, ModelSpec
from tinycl.model.split import Split
from tinycl.model.zoo import digits_cnn, har_cnn, mlp

RTOL = 1e-5


def every_op() -> ModelSpec:
    """Every kernel: a pooling layer before the first trainable one (no backward), strided/padded conv,
    depthwise, pointwise, standalone relu/relu6, padded average pooling, flatten, linear."""
    return ModelSpec((3, 9, 9), (
        Layer("pool0", "avg_pool2d", kernel=(3, 3), padding="same"),
        Layer("conv", "conv2d", channels=8, kernel=(3, 3), stride=(2, 2), padding="same", activation="relu6"),
        Layer("dw", "depthwise_conv2d", kernel=(3, 3), padding="same", activation="relu"),
        Layer("pw", "conv2d", channels=12),
        Layer("relu", "relu"),
        Layer("pool", "avg_pool2d", kernel=(2, 2), stride=(2, 2), padding=(1, 0, 1, 0)),
        Layer("conv2", "conv2d", channels=10, kernel=(2, 2)),
        Layer("relu6", "relu6"),
        Layer("flat", "flatten"),
        Layer("fc", "linear", channels=16, activation="relu"),
        Layer("head", "linear", channels=5),
    ), name="every_op")


def mobilenet_like() -> ModelSpec:
    """The MobileNet-V1 adaptive stage's structure at a width that trains in milliseconds."""
    def dw(name, stride):
        return Layer(name, "depthwise_conv2d", kernel=(3, 3), stride=(stride, stride), padding="same",
                     activation="relu6")
    return ModelSpec((16, 8, 8), (
        Layer("pw1", "conv2d", channels=16, activation="relu6"), dw("dw2", 1),
        Layer("pw2", "conv2d", channels=24, activation="relu6"), dw("dw3", 2),
        Layer("pw3", "conv2d", channels=32, activation="relu6"),
        Layer("gap", "global_avg_pool"), Layer("fc", "linear", channels=7, bias=False),
    ), name="mobilenet_like")


SPECS = {
    "every_op": every_op,
    "mobilenet_like": mobilenet_like,
    "digits_cnn[conv2:]": lambda: Split.at(digits_cnn(), "conv2").adaptive_spec,
    "har_cnn[conv2:]": lambda: Split.at(har_cnn(width=4), "conv2").adaptive_spec,  # 1x9 kernels, stride (1, 2)
    "mlp": lambda: mlp(input_shape=(4, 4, 4), n_classes=6, hidden=20),
}


def torch_and_device(spec: ModelSpec, seed: int, **sgd):
    module = build(spec, generator=torch.Generator().manual_seed(seed))
    twin = copy.deepcopy(module)
    return module, torch.optim.SGD(module.parameters(), **sgd), twin, DeviceTrainer(twin, **sgd)


def batch(spec: ModelSpec, n: int, rng: np.random.Generator):
    x = rng.standard_normal((n, *spec.input_shape)).astype(np.float32)
    return x, rng.integers(0, int(np.prod(spec.output_shape())), n)


def torch_step(module, opt, x, y) -> float:
    opt.zero_grad()
    loss = F.cross_entropy(module(torch.from_numpy(x)), torch.from_numpy(y))
    loss.backward()
    opt.step()
    return loss.item()


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for layer in a:
        for key, want in a[layer].items():
            scale = float(np.abs(want).max()) or 1.0
            np.testing.assert_allclose(b[layer][key], want, rtol=RTOL, atol=RTOL * scale, err_msg=f"{layer} {key}")


@pytest.mark.parametrize("name", SPECS)
def test_sgd_steps_match_torch(name):
    spec = SPECS[name]()
    module, opt, twin, dev = torch_and_device(spec, seed=1, lr=0.05, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    for step in range(4):
        if step == 2:  # the learners lower the lr after the first experience
            dev.lr = 0.01
            for group in opt.param_groups:
                group["lr"] = 0.01
        x, y = batch(spec, 6 + step, rng)  # batch sizes that are not powers of two
        want = torch_step(module, opt, x, y)
        assert dev.step(x, y) == pytest.approx(want, rel=RTOL)
    assert_same_weights(get_weights(module), get_weights(twin))
    buffers = {layer: {key: opt.state[getattr(module.params[layer], key)]["momentum_buffer"].numpy()
                       for key in arrays} for layer, arrays in get_weights(module).items()}
    assert_same_weights(buffers, dev.momentum_buffers())
    with torch.no_grad():
        logits = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(dev.forward(x), logits, rtol=RTOL, atol=RTOL * np.abs(logits).max())


def test_plain_sgd_has_no_momentum_buffers():
    spec = mobilenet_like()
    module, opt, twin, dev = torch_and_device(spec, seed=2, lr=0.1)
    assert dev.momentum_buffers() == {}
    assert not any(t.kind == "momentum" for t in dev.schedule.tensors.values())
    rng = np.random.default_rng(1)
    for _ in range(3):
        x, y = batch(spec, 5, rng)
        torch_step(module, opt, x, y)
        dev.step(x, y)
    assert_same_weights(get_weights(module), get_weights(twin))


def test_device_reads_the_module_weights_each_step():
    """A learner may edit the module between steps (CWR* head consolidation): the device sees the edit."""
    spec = mobilenet_like()
    module, opt, twin, dev = torch_and_device(spec, seed=3, lr=0.05, momentum=0.9)
    rng = np.random.default_rng(2)
    x, y = batch(spec, 4, rng)
    torch_step(module, opt, x, y)
    dev.step(x, y)
    with torch.no_grad():
        for m in (module, twin):
            m.params["fc"].weight[2:] = 0.0
    x, y = batch(spec, 4, rng)
    torch_step(module, opt, x, y)
    dev.step(x, y)
    assert_same_weights(get_weights(module), get_weights(twin))


def renorm_stage() -> ModelSpec:
    """Batch renormalization after a pointwise, a depthwise (strided) and a linear layer (features: C x 1 x 1), the
    first right after the stage input (no input gradient), as insert_batch_renorm places them."""
    return ModelSpec((4, 6, 6), (
        Layer("in/brn", "batch_renorm"),
        Layer("pw", "conv2d", channels=8), Layer("pw/brn", "batch_renorm", activation="relu6"),
        Layer("dw", "depthwise_conv2d", kernel=(3, 3), stride=(2, 2), padding="same"),
        Layer("dw/brn", "batch_renorm", activation="relu"),
        Layer("gap", "global_avg_pool"), Layer("fc", "linear", channels=6),
        Layer("fc/brn", "batch_renorm", activation="relu"), Layer("head", "linear", channels=5),
    ), name="renorm_stage")


@pytest.mark.parametrize("warmup", [0, 3])
def test_batch_renorm_steps_match_torch(warmup):
    """Train mode: batch statistics over the mini-batch, r and d clipped (ramped over `warmup` steps as the learner
    does), gradients through mean_B and sigma_B; the running statistics move every step. Then eval mode."""
    from tinycl.model.ops import BRN_LIMITS

    spec = renorm_stage()
    module = build(spec, generator=torch.Generator().manual_seed(5)).train()
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():  # running statistics away from the batch's, so that r and d clip
        for name, buf in module.named_buffers():
            buf.copy_(torch.randn(buf.shape, generator=g) * 0.5 if name.endswith("mean")
                      else torch.rand(buf.shape, generator=g) * 2 + 0.3)
    twin = copy.deepcopy(module)
    opt = torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    dev = DeviceTrainer(twin, lr=0.05, momentum=0.9, weight_decay=5e-4, brn_warmup=warmup)
    rng = np.random.default_rng(3)
    for step in range(1, 5):
        t = min(1.0, step / warmup) if warmup else 1.0  # tinycl.learners.base.Learner._renorm_limits
        for layer in spec.layers:
            if layer.op == "batch_renorm":
                p = module.params[layer.name]
                p.r_max, p.d_max = 1.0 + (BRN_LIMITS[0] - 1.0) * t, BRN_LIMITS[1] * t
        x = rng.uniform(0, 3, (5 + step, *spec.input_shape)).astype(np.float32)
        y = rng.integers(0, 5, len(x))
        want = torch_step(module, opt, x, y)
        assert dev.step(x, y, brn_step=step) == pytest.approx(want, rel=RTOL)
    want, got = get_weights(module), get_weights(twin)
    assert "running_var" in got["pw/brn"]
    for layer in want:
        for key in want[layer]:
            # a bias right before batch renormalization has a zero gradient in exact arithmetic: its value is
            # rounding noise plus weight decay, compared against the layer's weight scale
            scale = float(np.abs(want[layer]["weight" if key == "bias" else key]).max()) or 1.0
            np.testing.assert_allclose(got[layer][key], want[layer][key], rtol=RTOL, atol=RTOL * scale,
                                       err_msg=f"{layer} {key}")
    module.eval()
    with torch.no_grad():
        logits = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(dev.forward(x), logits, rtol=RTOL, atol=RTOL * np.abs(logits).max())


def test_batch_renorm_statistics_are_the_batchs():
    """One step's statistics in the arena: mean_B, sigma_B of each layer's input, and the running statistics moved
    by BRN_MOMENTUM towards them (first layer: the stage input itself)."""
    from tinycl.model.ops import BRN_EPS, BRN_MOMENTUM

    spec = renorm_stage()
    module = build(spec, generator=torch.Generator().manual_seed(7))
    dev = DeviceTrainer(module, lr=0.01)
    x = np.random.default_rng(4).uniform(1, 5, (9, *spec.input_shape)).astype(np.float32)
    mean, var = x.mean((0, 2, 3), dtype=np.float64), x.var((0, 2, 3), dtype=np.float64)
    dev.step(x, np.arange(9) % 5)
    stats = dev.view("in/brn.stats").reshape(4, -1)
    np.testing.assert_allclose(stats[0], mean, rtol=1e-6)
    np.testing.assert_allclose(stats[1], np.sqrt(var + BRN_EPS), rtol=1e-6)
    p = module.params["in/brn"]
    np.testing.assert_allclose(p.running_mean.numpy(), BRN_MOMENTUM * mean, rtol=1e-6)
    np.testing.assert_allclose(p.running_var.numpy(), 1 + BRN_MOMENTUM * (var - 1), rtol=1e-6)


def test_user_errors():
    module = build(mobilenet_like(), generator=torch.Generator().manual_seed(0))
    dev = DeviceTrainer(module, lr=0.1)
    rng = np.random.default_rng(0)
    x, y = batch(mobilenet_like(), 3, rng)
    with pytest.raises(DataError, match=r"integer labels in \[0, 7\)"):
        dev.step(x, np.array([0, 7, 1]))
    with pytest.raises(DataError, match="integer labels"):
        dev.step(x, y.astype(np.float32))
    with pytest.raises(DataError, match="batch of shape"):
        dev.step(x[:, :8], y)
    spec = ModelSpec((2, 4, 4), (Layer("mp", "max_pool2d", kernel=(2, 2), stride=(2, 2)),
                                 Layer("flat", "flatten"), Layer("fc", "linear", channels=3)))
    with pytest.raises(ModelError, match="allowed ops"):
        DeviceTrainer(build(spec), lr=0.1)
    pool_only = ModelSpec((2, 4, 4), (Layer("gap", "global_avg_pool"),))
    with pytest.raises(ModelError, match="no trainable layer"):
        DeviceTrainer(build(pool_only), lr=0.1)


SANITIZED_RUN = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_device_trainer import every_op, torch_and_device, batch, torch_step, assert_same_weights
    from tinycl.runtime import Library, ffi
    from tinycl.device.trainer import DeviceTrainer
    from tinycl.model.build import get_weights
    lib = Library({lib!r})
    spec = every_op()
    module, opt, twin, _ = torch_and_device(spec, seed=4, lr=0.05, momentum=0.9, weight_decay=5e-4)
    dev = DeviceTrainer(twin, lr=0.05, momentum=0.9, weight_decay=5e-4, library=lib)
    rng = np.random.default_rng(0)
    for _ in range(2):
        x, y = batch(spec, 3, rng)
        torch_step(module, opt, x, y)
        dev.step(x, y)
    assert_same_weights(get_weights(module), get_weights(twin))
    from test_device_trainer import renorm_stage  # batch renormalization's passes over the batch, and eval mode
    from tinycl.model.build import build
    brn = DeviceTrainer(build(renorm_stage()), lr=0.05, momentum=0.9, library=lib)
    x = rng.uniform(0, 3, (5, 4, 6, 6)).astype(np.float32)
    brn.step(x, np.arange(5) % 5, brn_step=1)
    assert np.isfinite(brn.forward(x)).all()
    packed_from = np.arange(13, dtype=np.uint8) % 8
    packed = np.zeros(5, np.uint8)
    lib.pack_codes(packed_from, 13, 3, packed)
    from test_c_kernels import ptq_model
    from tinycl.device.int8 import DeviceIntegerModel
    from tinycl.quant.intexec import IntegerModel, quantize_input
    qmodel, calib = ptq_model(seed=5)
    codes = quantize_input(calib[:2], qmodel.spec.input_quant)
    for kernels in ("optimized", "reference"):
        got = DeviceIntegerModel(qmodel, kernels, library=lib).run_all(codes)
        want = IntegerModel(qmodel, kernels).run(codes, keep_all=True)
        assert all((got[n] == want[n]).all() for n in qmodel.spec.names)
    print("STEP OK", flush=True)
    short = np.zeros(4, np.uint8)  # 13 3-bit codes need 5 bytes: the sanitizer must stop this write, which only
    u8 = ffi().from_buffer  # the unchecked cffi library (lib.raw) lets through
    lib.raw.tcl_pack_codes(u8("uint8_t[]", packed_from), 13, 3, u8("uint8_t[]", short))
    print("NOT CAUGHT", flush=True)
""")


def test_training_step_under_address_and_undefined_sanitizers():
    lib, env = sanitized_runtime()
    code = SANITIZED_RUN.format(tests=str(Path(__file__).parent), lib=str(lib))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert "STEP OK" in run.stdout, run.stderr[-3000:]  # the step ran clean under both sanitizers
    assert "NOT CAUGHT" not in run.stdout and "heap-buffer-overflow" in run.stderr, run.stderr[-3000:]
