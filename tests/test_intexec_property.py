"""Exactness as a property: random integer models shaped like real converters' output (tests/qmodel_gen.py:
int8 / uint8, per-tensor / per-channel, multipliers from 2**-20 to above 1, zero points at the ends of the range,
fused and separate activations, SAME / VALID, strides, residual ADDs, MEANs that rescale), fed uniformly random
full-range codes, equal LiteRT at every layer for both kernel sets, exactly. Also the ops PyTorch and TF2 exports
add (CONCATENATION, MUL with squeeze-excite broadcasting, NCHW TRANSPOSEs), and `COMPATIBILITY`, the table that
docs/tflite.md shows, checked against the docs."""

import re

import numpy as np
import pytest
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litert_util import assert_every_layer_equals_litert, interpreter
from qmodel_gen import _Builder, act_quant, full_range_codes, random_model

from tinycl.model.quantized import QuantizedModel
from tinycl.model.spec import Layer, TensorQuant
from tinycl.model.split import Split
from tinycl.model.tflite import read_tflite
from tinycl.model.tflite_export import to_tflite
from tinycl.quant.intexec import IntegerFrozenStage

CONFIGS = [("int8", True), ("int8", False), ("uint8", False)]
# a bounded number of generated models per configuration keeps `make test` lean; the sweep that found the
# divergences fixed here ran 400 seeds (see docs/tflite.md)
FEW = settings(max_examples=6, deadline=None, derandomize=True, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SEEDS = st.integers(0, 2**32 - 1)


def _write(tmp_path, q: QuantizedModel, name: str, **kwargs):
    path = tmp_path / name
    path.write_bytes(to_tflite(q, **kwargs))
    return path


@pytest.mark.parametrize("dtype,per_channel", CONFIGS)
@FEW
@given(seed=SEEDS)
def test_generated_models_equal_litert_at_every_layer(tmp_path, dtype, per_channel, seed):
    rng = np.random.default_rng(seed)
    q = random_model(rng, dtype, per_channel)
    xs = full_range_codes(q.spec.input_quant, (4, *q.spec.input_shape), rng)
    assert_every_layer_equals_litert(_write(tmp_path, q, f"gen{seed}.tflite"), xs)


def _joins(rng: np.random.Generator, dtype: str, per_channel: bool) -> QuantizedModel:
    """conv -> depthwise; CONCATENATION of both; MUL of both; squeeze-excite: MEAN keep_dims then MUL."""
    c = int(rng.integers(1, 40))
    b = _Builder(rng, dtype, per_channel, (c, 6, 7))
    b.weighted(Layer("c1", "conv2d", channels=c, kernel=(3, 3), padding="same", activation="relu"), "input")
    b.weighted(Layer("d2", "depthwise_conv2d", kernel=(3, 3), padding="same"), "c1")
    b.append(Layer("cat", "concat", inputs=("c1", "d2")), act_quant(rng, dtype) if rng.random() < 0.5
             else b.quant_of("c1"))
    product = float(b.quant_of("c1").scale[0] * b.quant_of("d2").scale[0])
    b.append(Layer("m", "mul", inputs=("c1", "d2"), activation=str(rng.choice(["none", "relu"]))),
             act_quant(rng, dtype, product * 2.0 ** rng.uniform(4, 9)))
    b.append(Layer("g", "global_avg_pool", inputs=("m",)), b.quant_of("m"))
    b.append(Layer("r", "reshape", shape=(c, 1, 1)), b.quant_of("m"))
    product = float(b.quant_of("m").scale[0] * b.quant_of("r").scale[0])
    b.append(Layer("se", "mul", inputs=("m", "r")), act_quant(rng, dtype, product * 2.0 ** rng.uniform(4, 9)))
    return QuantizedModel(b.spec(), b.weights)


@pytest.mark.parametrize("dtype,per_channel", CONFIGS)
@FEW
@given(seed=SEEDS)
def test_concatenation_and_mul_equal_litert(tmp_path, dtype, per_channel, seed):
    rng = np.random.default_rng(seed)
    q = _joins(rng, dtype, per_channel)
    xs = full_range_codes(q.spec.input_quant, (3, *q.spec.input_shape), rng)
    assert_every_layer_equals_litert(_write(tmp_path, q, f"joins{seed}.tflite"), xs)


@pytest.mark.parametrize("seed", range(6))
def test_hard_swish_every_code_equals_litert(tmp_path, seed):
    """All 256 input codes through HARD_SWISH (MobileNet-V3's activation) at random scales and zero points."""
    rng = np.random.default_rng(seed)
    dtype = ("int8", "uint8")[seed % 2]
    b = _Builder(rng, dtype, True, (1, 16, 16))
    b.append(Layer("h", "hard_swish"), act_quant(rng, dtype, float(b.input_quant.scale[0]) * 2.0 ** rng.uniform(-3, 3)))
    iq = b.input_quant
    xs = np.arange(iq.qmin, iq.qmax + 1).reshape(1, 1, 16, 16).astype(np.int8 if dtype == "int8" else np.uint8)
    assert_every_layer_equals_litert(_write(tmp_path, QuantizedModel(b.spec(), {}), "hs.tflite"), xs)


@pytest.mark.parametrize("seed", range(6))
def test_logistic_every_code_equals_litert(tmp_path, seed):
    """All 256 input codes through LOGISTIC (squeeze-excite gates), its output at TFLite's fixed 1/256 scale."""
    rng = np.random.default_rng(seed)
    dtype = ("int8", "uint8")[seed % 2]
    b = _Builder(rng, dtype, True, (1, 16, 16))
    b.input_quant = act_quant(rng, dtype, 2.0 ** rng.uniform(-8, -1))
    b.append(Layer("g", "logistic"), TensorQuant((1 / 256,), (-128 if dtype == "int8" else 0,), dtype))
    iq = b.input_quant
    xs = np.arange(iq.qmin, iq.qmax + 1).reshape(1, 1, 16, 16).astype(np.int8 if dtype == "int8" else np.uint8)
    assert_every_layer_equals_litert(_write(tmp_path, QuantizedModel(b.spec(), {}), "lg.tflite"), xs)


@pytest.mark.parametrize("float_io", [False, True])
def test_pytorch_style_nchw_model_imports_and_runs_exactly(tmp_path, float_io):
    """A PyTorch export's form: an NCHW input TRANSPOSEd to NHWC first, the feature-map output TRANSPOSEd back."""
    rng = np.random.default_rng(7)
    q = random_model(rng, "int8", True, ops=("conv2d", "depthwise_conv2d", "add"))
    q = Split.at(q.spec, q.spec.index("mean") - 1).frozen_model(q)  # end on a feature map
    path = _write(tmp_path, q, "nchw.tflite", nchw=True, float_io=float_io)
    imp = read_tflite(path)
    assert imp.input_nchw and imp.output_nchw and imp.model.spec.input_shape == q.spec.input_shape
    iq = q.spec.input_quant
    codes = full_range_codes(iq, (3, *q.spec.input_shape), rng)
    x = (codes.astype(np.float32) - iq.zero_point[0]) * np.float32(iq.scale[0]) if float_io else codes
    for kernels in ("optimized", "reference"):
        stage = IntegerFrozenStage(imp.model, kernels=kernels)
        got = stage(x) if float_io else stage.codes(x)
        it = interpreter(path, kernels)
        inp, out = it.get_input_details()[0], it.get_output_details()[0]
        for i in range(len(x)):
            it.set_tensor(inp["index"], x[i: i + 1])  # NCHW, as the file takes it
            it.invoke()
            assert np.array_equal(it.get_tensor(out["index"]), got[i: i + 1]), (kernels, i)


# -- the compatibility table (docs/tflite.md shows exactly this) -------------------------------------------
BOTH = "optimized, reference"
COMPATIBILITY = (
    ("CONV_2D", "int8 (per tensor / per channel), uint8; SAME / VALID, strides 1-2, kernels 1-5; fused NONE / "
                "RELU / RELU6; multipliers 2^-20 .. >1", BOTH),
    ("DEPTHWISE_CONV_2D", "as CONV_2D; per-channel scales on TFLite's quantized dimension 3; any channel count "
                          "(LiteRT's optimized int8 kernel rounds ties differently on the last C mod 8 channels)",
     BOTH),
    ("FULLY_CONNECTED", "int8 per tensor / per channel, uint8; over features or flattened feature maps", BOTH),
    ("ADD", "two activations of one shape, any scales; output scale within 4x of the larger input scale on "
            "int8 optimized (LiteRT saturates to int16 in its vector code)", BOTH),
    ("MUL", "two activations, broadcasting (squeeze-excite: C x 1 x 1)", BOTH),
    ("CONCATENATION", "channel axis, inputs in one quantization (a QUANTIZE before any that differs)", BOTH),
    ("MEAN", "over H and W, keep_dims or not, rescaling; per-channel int8 models (16-channel blocks)", BOTH),
    ("AVERAGE_POOL_2D, MAX_POOL_2D", "SAME / VALID, strides, in the input's quantization (+ QUANTIZE)", BOTH),
    ("QUANTIZE", "float input (leading); requantizing int8 / uint8 (16-element blocks on optimized)", BOTH),
    ("PAD, RESHAPE, RELU, RELU6, SOFTMAX, DEQUANTIZE (trailing)", "as before this table", BOTH),
    ("HARD_SWISH", "int8, uint8, any input / output scales TFLite accepts (every input code)", BOTH),
    ("LOGISTIC", "int8, uint8, output at TFLite's fixed scale 1/256 (every input code)", BOTH),
    ("TRANSPOSE", "folded: NCHW -> NHWC of the input, NHWC -> NCHW of the output", BOTH),
)


def compatibility_markdown() -> str:
    rows = ["| TFLite operator | exact for | kernel sets |", "| --- | --- | --- |"]
    rows += [f"| {op} | {what} | {kernels} |" for op, what, kernels in COMPATIBILITY]
    return "\n".join(rows)


def test_docs_show_the_compatibility_table_of_these_tests():
    docs = (REPO / "docs" / "tflite.md").read_text()
    table = re.search(r"<!-- compatibility: .*? -->\n(.*?)\n<!-- /compatibility -->", docs, re.S)
    assert table is not None and table.group(1) == compatibility_markdown(), (
        "docs/tflite.md's compatibility table is not the one the tests check; paste:\n" + compatibility_markdown())
