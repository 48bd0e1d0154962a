"""Every fp32 kernel of the C runtime and every gradient against torch autograd, on the torch module the host
trains (tinycl.model.build); packing of Q-bit codes exactly against tinycl.quant.packing."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import require_shared_model

from tinycl.device.int8 import DeviceIntegerModel
from tinycl.errors import ModelError
from tinycl.model.build import build, get_weights
from tinycl.model.spec import Layer, ModelSpec
from tinycl.model.tflite import load_tflite
from tinycl.quant import packing
from tinycl.quant.fixedpoint import TIES, multiply_by_quantized_multiplier, quantize_multiplier
from tinycl.quant.intexec import KERNELS, IntegerModel, quantize_input
from tinycl.quant.ptq import quantize_model
from tinycl.quant.qparams import dequantize
from tinycl.runtime import conv_shape, load_library

RTOL = 1e-5


@pytest.fixture(scope="module")
def lib():
    return load_library()


def close(got: np.ndarray, want: torch.Tensor | np.ndarray, what: str) -> None:
    want = want.detach().numpy() if isinstance(want, torch.Tensor) else want
    scale = float(np.abs(want).max()) or 1.0
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=RTOL, atol=RTOL * scale, err_msg=what)


def torch_layer(layer: Layer, in_shape: tuple[int, ...], seed: int):
    """Forward and autograd backward of one layer on one sample, through the host's SpecModule.
    Returns (spec, numpy arrays x, dy, w, b, and torch results y, dx, dw, db)."""
    spec = ModelSpec(in_shape, (layer,))
    g = torch.Generator().manual_seed(seed)
    module = build(spec, generator=g)
    with torch.no_grad():  # random biases too (the module starts them at zero)
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    x = torch.randn(1, *in_shape, generator=g, requires_grad=True)
    y = module.run_layer(layer, [x])
    dy = torch.randn(y.shape, generator=g)
    y.backward(dy)
    p = module.params[layer.name] if layer.has_weights else None
    arrays = {"x": x.detach().numpy()[0].copy(), "dy": dy.numpy()[0].copy(),
              "w": None if p is None else p.weight.detach().numpy().copy(),
              "b": None if p is None or p.bias is None else p.bias.detach().numpy().copy()}
    grads = {"y": y[0], "dx": x.grad[0],
             "dw": None if p is None else p.weight.grad, "db": None if p is None or p.bias is None else p.bias.grad}
    return spec, arrays, grads


def run_weighted(lib, kind: str, layer: Layer, in_shape: tuple[int, ...], seed: int) -> None:
    spec, a, ref = torch_layer(layer, in_shape, seed)
    s = conv_shape(spec, layer)
    rng = np.random.default_rng(seed)
    nan = np.float32(np.nan)
    y = np.full(ref["y"].numel(), nan, np.float32)  # forward and input-grad kernels must overwrite
    dx = np.full(ref["dx"].numel(), nan, np.float32)
    dw0 = rng.standard_normal(a["w"].shape).astype(np.float32)  # weight-grad kernels accumulate
    db0 = None if a["b"] is None else rng.standard_normal(a["b"].shape).astype(np.float32)
    dw, db = dw0.copy(), None if db0 is None else db0.copy()
    if kind == "linear":
        n_in, n_out = a["x"].size, a["w"].shape[0]
        lib.linear_forward(n_in, n_out, a["x"], a["w"], a["b"], y)
        lib.linear_weight_grad(n_in, n_out, a["x"], a["dy"], dw, db)
        lib.linear_input_grad(n_in, n_out, a["dy"], a["w"], dx)
    else:
        getattr(lib, f"{kind}_forward")(s, a["x"], a["w"], a["b"], y)
        getattr(lib, f"{kind}_weight_grad")(s, a["x"], a["dy"], dw, db)
        getattr(lib, f"{kind}_input_grad")(s, a["dy"], a["w"], dx)
    # the runtime fuses the activation after the kernel; these layers have none, so y is the kernel's output
    close(y, ref["y"], f"{kind} forward")
    close(dx, ref["dx"], f"{kind} input grad")
    close(dw - dw0, ref["dw"], f"{kind} weight grad")
    if db is not None:
        close(db - db0, ref["db"], f"{kind} bias grad")


CONV_CASES = [  # in_shape, out channels, kernel, stride, padding
    ((3, 7, 7), 5, (3, 3), (1, 1), "same"),
    ((4, 8, 9), 6, (3, 3), (2, 2), "same"),
    ((2, 9, 8), 3, (5, 3), (2, 1), (2, 1, 0, 2)),
    ((3, 6, 6), 4, (2, 2), (2, 2), "valid"),
    ((2, 5, 5), 3, (1, 1), (2, 2), "valid"),
    ((2, 7, 6), 3, (3, 3), (3, 2), "same"),
    ((1, 4, 4), 2, (4, 4), (1, 1), "valid"),
    ((2, 8, 8), 3, (3, 3), (2, 2), "same"),  # 3 x 3 fast paths: stride 2 from an even column, stride 1 too narrow
    ((2, 3, 2), 2, (3, 3), (1, 1), "same"),
    ((2, 2, 3), 2, (3, 3), (2, 2), "same"),
]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv2d(lib, case, bias):
    in_shape, cout, k, s, pad = CONV_CASES[case]
    layer = Layer("conv", "conv2d", channels=cout, kernel=k, stride=s, padding=pad, bias=bias)
    run_weighted(lib, "conv2d", layer, in_shape, seed=case)


# 3 x 3 depthwise on the planes of MobileNet's late layers and around them: each kind of border row and column of
# depthwise.c's specialised code (SAME at even and odd sizes, symmetric, VALID) and the planes too small for it
DEPTHWISE_CASES = [(shape, stride, pad) for shape in ((4, 8, 8), (3, 4, 4), (3, 7, 7), (2, 5, 6))
                   for stride in (1, 2) for pad in ("same", "valid", (1, 1, 1, 1))]
DEPTHWISE_CASES += [((2, 2, 2), 1, "same"), ((2, 1, 3), 2, "same"), ((2, 8, 8), 2, (2, 2, 2, 2)),
                    ((2, 3, 3), 2, (0, 1, 1, 0)), ((2, 6, 5), 1, (2, 0, 0, 2))]


@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_depthwise(lib, case):
    in_shape, _, k, s, pad = CONV_CASES[case]
    layer = Layer("dw", "depthwise_conv2d", kernel=k, stride=s, padding=pad, bias=case % 2 == 0)
    run_weighted(lib, "depthwise", layer, in_shape, seed=10 + case)


@pytest.mark.parametrize("case", range(len(DEPTHWISE_CASES)))
def test_depthwise_3x3(lib, case):
    in_shape, stride, pad = DEPTHWISE_CASES[case]
    layer = Layer("dw", "depthwise_conv2d", kernel=(3, 3), stride=(stride, stride), padding=pad, bias=case % 2 == 1)
    run_weighted(lib, "depthwise", layer, in_shape, seed=100 + case)


@pytest.mark.parametrize("in_shape,cout", [((5, 3, 7), 6), ((16, 8, 8), 9), ((1, 1, 1), 1), ((7, 4, 4), 13),
                                           ((32, 2, 2), 8)])
def test_pointwise(lib, in_shape, cout):
    layer = Layer("pw", "conv2d", channels=cout, bias=cout % 2 == 1)
    run_weighted(lib, "pointwise", layer, in_shape, seed=cout)


@pytest.mark.parametrize("in_shape,n_out", [((7,), 5), ((64,), 10), ((1,), 1), ((130,), 50), ((4, 3, 3), 6)])
def test_linear(lib, in_shape, n_out):
    layer = Layer("fc", "linear", channels=n_out, bias=n_out != 50)
    run_weighted(lib, "linear", layer, in_shape, seed=n_out)


@pytest.mark.parametrize("in_shape,k,s,pad", [((3, 7, 7), (3, 3), (2, 2), "same"), ((2, 8, 8), (2, 2), (2, 2), "valid"),
                                              ((2, 5, 6), (3, 2), (1, 2), (1, 1, 0, 1)), ((1, 4, 4), (4, 4), (1, 1),
                                                                                          "valid")])
def test_avgpool(lib, in_shape, k, s, pad):
    layer = Layer("pool", "avg_pool2d", kernel=k, stride=s, padding=pad)
    spec, a, ref = torch_layer(layer, in_shape, seed=3)
    shape = conv_shape(spec, layer)
    y = np.full(ref["y"].numel(), np.nan, np.float32)
    dx = np.full(ref["dx"].numel(), np.nan, np.float32)
    lib.avgpool_forward(shape, a["x"], y)
    lib.avgpool_input_grad(shape, a["dy"], dx)
    close(y, ref["y"], "avgpool forward")
    close(dx, ref["dx"], "avgpool input grad")


def test_global_avgpool(lib):
    c, h, w = 6, 5, 3
    _, a, ref = torch_layer(Layer("gap", "global_avg_pool"), (c, h, w), seed=4)
    y, dx = np.empty(c, np.float32), np.empty(c * h * w, np.float32)
    lib.global_avgpool_forward(c, h * w, a["x"], y)
    lib.global_avgpool_input_grad(c, h * w, a["dy"], dx)
    close(y, ref["y"], "global avgpool forward")
    close(dx, ref["dx"], "global avgpool input grad")


@pytest.mark.parametrize("act", ["relu", "relu6"])
def test_activations(lib, act):
    code = lib.constant(f"TCL_ACT_{act.upper()}")
    x = torch.tensor([-2.0, -0.0, 0.0, 0.5, 3.0, 5.999, 6.0, 6.5, 100.0] * 3, requires_grad=True)
    y = F.relu(x) if act == "relu" else F.relu6(x)
    dy = torch.linspace(-1, 1, x.numel())
    y.backward(dy)
    xs, n = x.detach().numpy().copy(), x.numel()
    out, dx = np.empty(n, np.float32), np.empty(n, np.float32)
    lib.activation_forward(code, n, xs, out)
    lib.activation_input_grad(code, n, out, dy.numpy(), dx)
    np.testing.assert_array_equal(out, y.detach().numpy())
    np.testing.assert_array_equal(dx, x.grad.numpy())
    lib.activation_forward(code, n, xs, xs)  # in place, as the runtime fuses it
    np.testing.assert_array_equal(xs, out)


@pytest.mark.parametrize("n,label", [(10, 3), (50, 0), (1, 0), (7, 6)])
def test_softmax_xent(lib, n, label):
    z = torch.randn(n, generator=torch.Generator().manual_seed(n)) * 5
    z[label if n > 1 else 0] += 30.0 * (n % 2)  # a large logit: the max shift must keep expf finite
    zr = z.clone().requires_grad_(True)
    loss = F.cross_entropy(zr[None], torch.tensor([label]))
    (loss * 0.25).backward()  # scale 1/4: a sample of a mini-batch of 4
    dz = np.empty(n, np.float32)
    got = lib.softmax_xent(n, z.numpy(), label, 0.25, dz)
    assert got == pytest.approx(loss.item(), rel=RTOL, abs=RTOL)
    close(dz, zr.grad, "softmax xent grad")


@pytest.mark.parametrize("momentum,wd", [(0.0, 0.0), (0.9, 0.0), (0.9, 5e-4), (0.0, 1e-2)])
def test_sgd_matches_torch(lib, momentum, wd):
    g = torch.Generator().manual_seed(1)
    p = torch.nn.Parameter(torch.randn(37, generator=g))
    opt = torch.optim.SGD([p], lr=0.1, momentum=momentum, weight_decay=wd)
    w = p.detach().numpy().copy()
    v = np.zeros_like(w) if momentum else None
    for _ in range(4):
        grad = torch.randn(37, generator=g)
        p.grad = grad.clone()
        opt.step()
        lib.sgd_update(w.size, w, grad.numpy(), v, 0.1, momentum, wd)
        close(w, p.detach(), "sgd weights")
        if momentum:
            close(v, opt.state[p]["momentum_buffer"], "sgd momentum buffer")


# -- Q-bit replay codes: exact against tinycl.quant.packing --------------------------------------------------
@pytest.mark.parametrize("bits", range(1, 9))
def test_pack_unpack_exact(lib, bits):
    rng = np.random.default_rng(bits)
    for count in (1, 7, 8, 13, 1000):
        codes = rng.integers(0, 2**bits, count, dtype=np.uint8)
        want = packing.pack_codes(codes, bits)
        assert lib.packed_nbytes(count, bits) == want.size == math.ceil(count * bits / 8)
        packed = np.full(want.size, 0xA5, np.uint8)  # garbage: packing must write every byte
        lib.pack_codes(codes, count, bits, packed)
        np.testing.assert_array_equal(packed, want)
        back = np.empty(count, np.uint8)
        lib.unpack_codes(want, count, bits, back)
        np.testing.assert_array_equal(back, codes)


@pytest.mark.parametrize("bits", [1, 3, 5, 7, 8])
def test_write_read_codes_at_offsets(lib, bits):
    rng = np.random.default_rng(100 + bits)
    count = 257
    ref = packing.pack_codes(rng.integers(0, 2**bits, count, dtype=np.uint8), bits)
    buf = ref.copy()
    for start, n in ((0, 5), (3, 11), (250, 7), (101, 1)):
        codes = rng.integers(0, 2**bits, n, dtype=np.uint8)
        packing.write_codes(ref, start, codes, bits)
        lib.write_codes(buf, start, codes, n, bits)
        np.testing.assert_array_equal(buf, ref)
        got = np.empty(n, np.uint8)
        lib.read_codes(buf, start, n, bits, got)
        np.testing.assert_array_equal(got, packing.read_codes(ref, start, n, bits))


@pytest.mark.parametrize("bits,per_channel", [(8, False), (4, True), (3, False), (7, True)])
def test_dequantize_codes_exact(lib, bits, per_channel):
    rng = np.random.default_rng(bits)
    n_chan, chan_size, samples = 4, 6, 3
    codes = rng.integers(0, 2**bits, (samples, n_chan, chan_size), dtype=np.uint8)
    packed = packing.pack_codes(codes, bits)
    c = n_chan if per_channel else 1
    scale = rng.uniform(0.01, 0.5, c).astype(np.float32)
    zero = rng.integers(0, 2**bits, c).astype(np.int32)
    shape = (1, n_chan, 1) if per_channel else ()
    want = dequantize(codes[1], scale.reshape(shape[1:]) if per_channel else scale[0],
                      zero.reshape(shape[1:]) if per_channel else zero[0])
    out = np.empty(n_chan * chan_size, np.float32)
    lib.dequantize_codes(packed, n_chan * chan_size, n_chan * chan_size, bits, c, chan_size, scale,
                         zero, out)
    np.testing.assert_array_equal(out, want.ravel())  # sample 1 of 3, read from the middle of the buffer


# -- int8 inference kernels: exactly the integer executor (tinycl.quant.intexec) -----------------------------
@pytest.mark.parametrize("ties", TIES)
def test_fixed_point_multiply_exact(lib, ties):
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.integers(-(2**31), 2**31, 3000), [0, 1, -1, 2**31 - 1, -(2**31), 12345, -12345],
                        -rng.integers(1, 2**12, 1000) * 2**19])  # many exact halves for the second rounding
    real = np.concatenate([rng.uniform(1e-6, 0.999, 2000), rng.uniform(1.0, 300.0, 500),
                           2.0 ** -rng.integers(0, 30, 1507)])
    mult, shift = quantize_multiplier(real)
    mult, shift = np.concatenate([mult, [2**31 - 1, 2**30]]), np.concatenate([shift, [0, -31]])
    n = x.size
    want = multiply_by_quantized_multiplier(x, mult[:n], shift[:n], ties)
    ok = (want >= -(2**31)) & (want < 2**31)  # TFLite requires the result to fit int32
    code = lib.constant(f"TCL_TIES_{ties.upper()}")
    got = np.array([lib.multiply_by_quantized_multiplier(int(a), int(m), int(s), code)
                    for a, m, s in zip(x[ok], mult[:n][ok], shift[:n][ok], strict=True)])
    np.testing.assert_array_equal(got, want[ok])
    other = multiply_by_quantized_multiplier(x, mult[:n], shift[:n], TIES[1 - TIES.index(ties)])
    assert np.any(other[ok] != want[ok])  # the inputs reach the ties where the two roundings differ


def ptq_model(seed: int, channels: int = 16):
    """A post-training quantized int8 model (per-channel weights) with every C int8 op; `channels` of its 1x1
    conv (16: whole vector blocks of LiteRT's optimized kernels everywhere)."""
    spec = ModelSpec((3, 11, 10), (
        Layer("conv", "conv2d", channels=8, kernel=(3, 3), stride=(2, 2), padding="same", activation="relu6"),
        Layer("dw", "depthwise_conv2d", kernel=(3, 3), padding="same", activation="relu"),
        Layer("pw", "conv2d", channels=channels),
        Layer("avg", "avg_pool2d", kernel=(2, 2), stride=(1, 1), padding="same"),
        Layer("relu", "relu"),
        Layer("max", "max_pool2d", kernel=(3, 3), stride=(2, 2), padding="same"),
        Layer("dw2", "depthwise_conv2d", kernel=(2, 2), stride=(1, 2), padding=(1, 0, 0, 1), bias=False),
        Layer("flat", "flatten"),
        Layer("fc", "linear", channels=10, activation="relu6"),
        Layer("head", "linear", channels=4),
    ), name="int8_ops")
    module = build(spec, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)) * 0.3)
    calib = np.random.default_rng(seed).standard_normal((64, *spec.input_shape)).astype(np.float32)
    return quantize_model(spec, get_weights(module), calib), calib


@pytest.mark.parametrize("kernels", KERNELS)
def test_int8_kernels_equal_the_integer_executor(lib, kernels):
    qmodel, calib = ptq_model(seed=5)
    codes = quantize_input(calib[:6] * 1.5, qmodel.spec.input_quant)  # beyond the calibration range: clamps
    want = IntegerModel(qmodel, kernels).run(codes, keep_all=True)
    got = DeviceIntegerModel(qmodel, kernels, library=lib).run_all(codes)
    for name in qmodel.spec.names:
        assert got[name].dtype == want[name].dtype
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert len(np.unique(want["head"])) > 4  # the check compares informative codes, not a constant


def test_int8_kernels_refuse_what_they_cannot_reproduce_and_run_it_with_reference_kernels(lib):
    """12 channels: LiteRT's optimized kernels break ties up in 8- and 16-wide vector blocks and away from zero in
    the rest, one rule a C record cannot hold: refused in one line; TFLite Micro's kernels run it exactly."""
    qmodel, calib = ptq_model(seed=5, channels=12)
    with pytest.raises(ModelError, match="'avg': its 12 channels are not a whole number of LiteRT's vector blocks"):
        DeviceIntegerModel(qmodel, "optimized", library=lib)
    codes = quantize_input(calib[:6] * 1.5, qmodel.spec.input_quant)
    want = IntegerModel(qmodel, "reference").run(codes, keep_all=True)
    got = DeviceIntegerModel(qmodel, "reference", library=lib).run_all(codes)
    for name in qmodel.spec.names:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.mark.parametrize("kernels", KERNELS)
def test_int8_kernels_run_a_real_uint8_tflite_mobilenet_exactly(lib, kernels):
    """MobileNet-V1 0.25/128 (uint8 weights and activations with zero points) up to its logits."""
    qmodel = load_tflite(require_shared_model("mobilenet_v1_0.25_128_quant.tflite"))
    upto = qmodel.spec.index("SpatialSqueeze1") + 1  # the softmax after it has no C kernel
    spec = qmodel.spec.with_layers(qmodel.spec.layers[:upto], input_quant=qmodel.spec.input_quant)
    qmodel = dataclasses.replace(qmodel, spec=spec)
    codes = np.random.default_rng(0).integers(0, 256, (2, *spec.input_shape), dtype=np.uint8)
    want = IntegerModel(qmodel, kernels).run(codes, keep_all=True)
    got = DeviceIntegerModel(qmodel, kernels, library=lib).run_all(codes)
    for name in spec.names:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.mark.parametrize("shape,r_max,d_max", [((3, 4, 5), 1.25, 0.5), ((5, 1, 1), 1.0, 0.0), ((2, 3, 3), 3.0, 5.0)])
def test_batchrenorm_kernels_match_torch(lib, shape, r_max, d_max):
    """Train mode over a batch of 6, one sample per call: the batch statistics from tcl_batchrenorm_moments, the
    backward's batch sums from tcl_batchrenorm_grad_sums, against torch autograd through the op."""
    from tinycl.model.ops import BRN_EPS

    g = torch.Generator().manual_seed(sum(shape))
    module = build(ModelSpec(shape, (Layer("brn", "batch_renorm"),))).train()
    p = module.params["brn"]
    p.r_max, p.d_max = r_max, d_max
    with torch.no_grad():
        for t, lo in ((p.weight, 0.5), (p.running_var, 0.2)):
            t.copy_(torch.rand(t.shape, generator=g) + lo)
        p.bias.copy_(torch.randn(shape[0], generator=g))
        p.running_mean.copy_(torch.randn(shape[0], generator=g))
    mean, std = p.running_mean.numpy().copy(), np.sqrt(p.running_var.numpy() + BRN_EPS)
    x = (torch.randn(6, *shape, generator=g) * 2 + 1).requires_grad_()
    dy = torch.randn(6, *shape, generator=g)
    y = module(x)
    y.backward(dy)
    c, hw = shape[0], shape[1] * shape[2]
    xs, dys = x.detach().numpy(), dy.numpy()
    w, b = p.weight.detach().numpy().copy(), p.bias.detach().numpy().copy()

    moments = np.zeros(2 * c, np.float32)
    for s in xs:
        lib.batchrenorm_moments(c, hw, np.ascontiguousarray(s), None, moments)
    count = len(xs) * hw
    mu = moments[:c] / count
    sigma = np.sqrt(np.maximum(moments[c:] / count - mu * mu, 0) + BRN_EPS)
    r, d = np.clip(sigma / std, 1 / r_max, r_max), np.clip((mu - mean) / std, -d_max, d_max)
    stats = np.concatenate([mu, sigma, r, d]).astype(np.float32)
    sums = np.zeros(2 * c, np.float32)
    for s, ds in zip(xs, dys, strict=True):
        lib.batchrenorm_grad_sums(c, hw, np.ascontiguousarray(ds), np.ascontiguousarray(s), stats, sums)
    sums /= count
    dw, db = np.zeros(c, np.float32), np.zeros(c, np.float32)
    for i, (s, ds) in enumerate(zip(xs, dys, strict=True)):
        s, ds = np.ascontiguousarray(s), np.ascontiguousarray(ds)
        out, dx = np.empty(shape, np.float32), np.empty(shape, np.float32)
        lib.batchrenorm_forward(c, hw, s, w, b, stats, out)
        lib.batchrenorm_weight_grad(c, hw, s, ds, stats, dw, db)
        lib.batchrenorm_input_grad(c, hw, ds, s, w, stats, sums, dx)
        close(out, y[i], f"forward, sample {i}")
        close(dx, x.grad[i], f"input gradient, sample {i}")
    close(dw, p.weight.grad, "gamma gradient (accumulated)")
    close(db, p.bias.grad, "beta gradient (accumulated)")


def test_batchrenorm_kernels_in_eval_mode_match_torch(lib):
    """Eval statistics (running mean, sqrt(running var + eps), r = 1, d = 0) and sums = NULL (statistics constant)
    against torch's eval-mode forward and autograd."""
    from tinycl.model.ops import BRN_EPS

    g = torch.Generator().manual_seed(3)
    module = build(ModelSpec((4, 3, 2), (Layer("brn", "batch_renorm"),))).eval()
    p = module.params["brn"]
    with torch.no_grad():
        for t in (p.weight, p.bias, p.running_mean):
            t.copy_(torch.randn(4, generator=g))
        p.running_var.copy_(torch.rand(4, generator=g) + 0.1)
    x = torch.randn(1, 4, 3, 2, generator=g, requires_grad=True)
    dy = torch.randn(1, 4, 3, 2, generator=g)
    y = module(x)
    y.backward(dy)
    stats = np.concatenate([p.running_mean.numpy(), np.sqrt(p.running_var.numpy() + BRN_EPS), np.ones(4),
                            np.zeros(4)]).astype(np.float32)
    w, b = p.weight.detach().numpy().copy(), p.bias.detach().numpy().copy()
    xs, dys = x.detach().numpy()[0].copy(), dy.numpy()[0].copy()
    out, dx = np.empty((4, 3, 2), np.float32), np.empty((4, 3, 2), np.float32)
    lib.batchrenorm_forward(4, 6, xs, w, b, stats, out)
    lib.batchrenorm_input_grad(4, 6, dys, xs, w, stats, None, dx)
    close(out, y[0], "eval forward")
    close(dx, x.grad[0], "eval input gradient")
