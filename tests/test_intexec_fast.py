"""The executor's fast path computes the same bits as its reference arithmetic: Float64Multiplier (torch, and the
C runtime's tcl_requant_f64 form of it) against TFLite's fixed-point requantization on the whole int32 range,
and the C kernels (tinycl/csrc/int8_fast.c) against the torch path on generated models, every layer; their
buffers are checked before C sees them. Against LiteRT itself: tests/test_intexec*.py."""

import numpy as np
import pytest
import torch
from litert_util import assert_every_layer_equals_litert
from qmodel_gen import _Builder, _conv_layer, full_range_codes, random_model

from tinycl.errors import DataError
from tinycl.model.quantized import QuantizedModel
from tinycl.model.spec import Layer
from tinycl.model.tflite_export import to_tflite
from tinycl.quant import intexec
from tinycl.quant.fixedpoint import Float64Multiplier, multiply_by_quantized_multiplier
from tinycl.quant.intexec import IntegerModel
from tinycl.runtime import load_library


@pytest.fixture(scope="module")
def lib():
    return load_library()


def _multipliers(rng: np.random.Generator, c: int, left: int, right: int):
    q = rng.integers(2**30, 2**31, c)
    q[: c // 2] &= ~((1 << rng.integers(0, 31, c // 2)) - 1)  # trailing zero bits make exact ties
    q[0], q[1] = 2**30, 3 * 2**29
    shift = rng.integers(-right, left + 1, c)
    shift[0], shift[1] = -right, left
    return q, shift


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("left,right", [(0, 0), (0, 12), (3, 9), (1, 5)])
def test_float64_multiplier_equals_fixed_point_on_the_int32_range(lib, dtype, left, right):
    rng = np.random.default_rng(left * 100 + right)
    c = 37
    q, shift = _multipliers(rng, c, left, right)
    away = rng.random(c) < 0.5
    lo, hi = (-128, 127) if dtype == "int8" else (0, 255)
    out_zero = int(rng.choice([lo, hi, (lo + hi) // 2]))
    act_min, act_max = out_zero, hi  # a fused RELU
    f = Float64Multiplier(q, shift, away, out_zero, act_min, act_max, dtype)
    assert f.limit == 2.0 ** (31 - left)
    limit = int(f.limit)
    real = q * 2.0 ** (shift - 31)
    # around |x M| = 2**9, where the proof switches from exact arithmetic to both results clamping alike
    edge = np.clip(np.rint(rng.uniform(-1.5, 1.5, (300, c)) * 2**9 / real), 1 - limit, limit - 1).astype(np.int64)
    x = np.concatenate([rng.integers(-limit + 1, limit, (300, c)), rng.integers(-2**12, 2**12, (300, c)), edge,
                        np.full((1, c), limit - 1), np.full((1, c), 1 - limit)])
    # ties of the second rounding: x q 2**-31 lands on a half of 2**right
    x[:50, 0] = (2 * rng.integers(-2**10, 2**10, 50) + 1) * (1 << max(right - 1, 0)) * 2  # q = 2**30
    want = np.empty_like(x)
    for k in range(c):
        y = multiply_by_quantized_multiplier(x[:, k], q[k], shift[k], "away" if away[k] else "up")
        want[:, k] = np.clip(y + out_zero, act_min, act_max)
    got = f(torch.from_numpy(x.astype(np.float64)))
    np.testing.assert_array_equal(got.numpy().astype(np.int64), want)
    # the same map in C: y = requantized acc + add (add = 0), flat spans of whole rows
    length = c * 7
    rec = lib.new("tcl_requant_f64", **f.arrays(c, length))
    y = np.empty(x.shape, np.uint8)
    assert lib.fast_requant_rows(len(x), c, c, x.astype(np.int32), np.zeros(c, np.int32), None, rec, y) == 0
    np.testing.assert_array_equal(y.view(np.int8 if dtype == "int8" else np.uint8), want)


@pytest.mark.parametrize("kernels", ["optimized", "reference"])
@pytest.mark.parametrize("dtype,per_channel", [("int8", True), ("int8", False), ("uint8", False)])
def test_fast_kernels_equal_the_torch_path_at_every_layer(dtype, per_channel, kernels):
    used = 0
    for seed in range(8):
        rng = np.random.default_rng(seed)
        q = random_model(rng, dtype, per_channel)
        fast = IntegerModel(q, kernels)
        used += sum(getattr(k, "fast", None) is not None for k in fast.kernels.values())
        x = full_range_codes(q.spec.input_quant, (3, *q.spec.input_shape), rng)
        want = IntegerModel(q, kernels, fast=False).run(x, keep_all=True)
        got = fast.run(x, keep_all=True)
        for name, y in want.items():
            assert np.array_equal(got[name], y), f"seed {seed}: layer {name!r} differs"
    assert used >= 8  # the generated models exercise the fast kernels, not only the fallback


def _wide(rng: np.random.Generator, dtype: str, per_channel: bool) -> QuantizedModel:
    """Convolutions of every layout the fast kernels take: a 3-channel input read as NCHW, then NHWC activations
    of few (< 16) and many channels, 1x1 (strided), 3x3 and 5x5, depthwise of wide layers, SAME / VALID."""
    b = _Builder(rng, dtype, per_channel, (3, int(rng.integers(9, 20)), int(rng.integers(9, 20))))
    for i, (op, channels) in enumerate([("conv2d", int(rng.integers(4, 12))), ("conv2d", int(rng.integers(17, 40))),
                                        ("depthwise_conv2d", 0), ("conv2d", int(rng.integers(2, 9))),
                                        ("conv2d", int(rng.integers(40, 70))), ("depthwise_conv2d", 0)]):
        c, h, w = b.shape_of(b.last())
        b.weighted(_conv_layer(rng, f"{op}_{i}", op, channels, h, w), b.last())
    b.append(Layer("mean", "global_avg_pool"), b.quant_of(b.last()))
    return QuantizedModel(b.spec(), b.weights)


@pytest.mark.parametrize("dtype,per_channel", [("int8", True), ("int8", False), ("uint8", False)])
@pytest.mark.parametrize("seed", range(3))
def test_fast_kernels_on_wide_layers_equal_litert(tmp_path, dtype, per_channel, seed):
    rng = np.random.default_rng(seed)
    q = _wide(rng, dtype, per_channel)
    fast = IntegerModel(q)
    assert any(getattr(k, "fast", None) is not None for k in fast.kernels.values())
    path = tmp_path / f"wide{seed}.tflite"
    path.write_bytes(to_tflite(q))
    assert_every_layer_equals_litert(path, full_range_codes(q.spec.input_quant, (3, *q.spec.input_shape), rng))


def test_mobilenet_layers_take_the_fast_path():
    from litert_util import shared_model

    from tinycl.model.tflite import load_tflite

    model = IntegerModel(load_tflite(shared_model("mobilenet_v1_1.0_224_quant_embedding_extractor.tflite")))
    weighted = [k for k in model.kernels.values() if hasattr(k, "fast")]
    assert weighted and all(k.fast is not None for k in weighted)


def test_fast_buffers_are_checked(lib):
    c = 4
    f = Float64Multiplier(np.full(c, 2**30), np.zeros(c), np.zeros(c, bool), 0, -128, 127, "int8")
    rec = lib.new("tcl_requant_f64", **f.arrays(c, 256))
    acc = np.zeros((10, c), np.int32)
    with pytest.raises(DataError, match="reads or writes 40 elements, the array holds 36"):
        lib.fast_requant_rows(10, c, c, acc, np.zeros(c, np.int32), None, rec, np.empty(36, np.uint8))
    with pytest.raises(DataError, match="int32 array"):
        lib.fast_requant_rows(10, c, c, acc, np.zeros(c), None, rec, np.empty(40, np.uint8))
    short = lib.new("tcl_requant_f64", **f.arrays(c, 8))
    assert lib.fast_requant_rows(10, c, c, acc, np.zeros(c, np.int32), None, short, np.empty(40, np.uint8)) == 0
    # a span that is not whole pixels: refused by C, nothing written
    odd = lib.new("tcl_requant_f64", **{**f.arrays(c, 8), "len": 6})
    assert lib.fast_requant_rows(10, c, c, acc, np.zeros(c, np.int32), None, odd, np.empty(40, np.uint8)) == -1


def test_fast_false_runs_the_torch_path():
    q = random_model(np.random.default_rng(3), "uint8", False)
    assert any(getattr(k, "fast", None) is not None for k in IntegerModel(q).kernels.values())
    assert all(getattr(k, "fast", None) is None for k in IntegerModel(q, fast=False).kernels.values())


def test_without_a_compiler_the_torch_path_runs(monkeypatch):
    monkeypatch.setattr(intexec, "_fast_library", lambda: None)
    q = random_model(np.random.default_rng(0), "int8", True)
    model = IntegerModel(q)
    assert all(getattr(k, "fast", None) is None for k in model.kernels.values())
    x = full_range_codes(q.spec.input_quant, (2, *q.spec.input_shape), np.random.default_rng(1))
    assert model.run(x).shape[0] == 2
