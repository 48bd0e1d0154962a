"""The integer executor equals LiteRT bit for bit: the fixed-point primitives against a transcription of
TFLite's scalar C code, every tensor of the shared models, every supported op on small random models (written
to .tflite by tinycl's exporter), float I/O, and post-training-quantized torch models.

LiteRT runs with its built-in kernels: "optimized" = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
"reference" = OpResolverType.BUILTIN_REF (see tinycl.quant.intexec for why not the XNNPACK delegate)."""

import numpy as np
import pytest
import torch
from litert_util import IMAGES, image, interpreter, litert_layers, random_codes, random_qmodel, shared_model

from tinycl.errors import ConfigError, DataError, ModelError
from tinycl.frozen import FakeQuantFrozenStage, LatentCache
from tinycl.model.build import build, get_weights
from tinycl.model.quantized import QuantizedModel
from tinycl.model.spec import Layer, ModelSpec
from tinycl.model.tflite import read_tflite
from tinycl.model.tflite_export import to_tflite
from tinycl.model.zoo import digits_cnn
from tinycl.quant import intexec
from tinycl.quant.fixedpoint import multiply_by_quantized_multiplier, quantize_multiplier
from tinycl.quant.intexec import IntegerFrozenStage, IntegerModel
from tinycl.quant.ptq import quantize_model
from tinycl.quant.requant import prepare


# -- fixed point ------------------------------------------------------------------------------------------
def _srdhm(a: int, b: int) -> int:  # gemmlowp SaturatingRoundingDoublingHighMul, in Python integers
    v = a * b + ((1 << 30) if a * b >= 0 else 1 - (1 << 30))
    return (v >> 31) if v >= 0 else -((-v) >> 31)  # C integer division truncates toward zero


def _rdbpot(x: int, e: int) -> int:  # gemmlowp RoundingDivideByPOT
    mask = (1 << e) - 1
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if (x & mask) > threshold else 0)


def _mbqm(x: int, q: int, shift: int) -> int:  # TFLite MultiplyByQuantizedMultiplier (double rounding)
    left, right = max(shift, 0), max(-shift, 0)
    return _rdbpot(_srdhm(x * (1 << left), q), right)


def test_multiply_by_quantized_multiplier_matches_tflite_scalar_code():
    rng = np.random.default_rng(0)
    x = rng.integers(-2**24, 2**24, 3000)
    q = rng.integers(2**30, 2**31, 3000)
    q[:1000] &= ~((1 << rng.integers(0, 31, 1000)) - 1)  # trailing zero bits make exact ties
    shift = rng.integers(-20, 2, 3000)
    got = multiply_by_quantized_multiplier(x, q, shift, ties="away")
    want = [_mbqm(int(a), int(b), int(s)) for a, b, s in zip(x, q, shift, strict=True)]
    np.testing.assert_array_equal(got, want)


def test_second_rounding_ties():
    # -6 * 0.5 * 2**-1 = -1.5: the first rounding gives -3 exactly, the second breaks the tie
    assert multiply_by_quantized_multiplier(-6, 2**30, -1, ties="away") == -2
    assert multiply_by_quantized_multiplier(-6, 2**30, -1, ties="up") == -1
    assert multiply_by_quantized_multiplier(6, 2**30, -1, ties="away") == 2
    assert multiply_by_quantized_multiplier(6, 2**30, -1, ties="up") == 2


@pytest.mark.parametrize("real,q,shift", [
    (0.5, 2**30, 0), (1.0, 2**30, 1), (0.75, 3 * 2**29, 0), (0.0, 0, 0), (2.0**-40, 0, 0),
    (1 - 2.0**-34, 2**30, 1),  # rounds up to 2**31: renormalised
    (0.1, 1717986918, -3),
])
def test_quantize_multiplier(real, q, shift):
    assert tuple(int(v) for v in quantize_multiplier(real)) == (q, shift)


# -- the shared models ------------------------------------------------------------------------------------
def _assert_layers_equal(ref: dict, mine: dict, where: str):
    assert ref.keys() <= mine.keys()
    for name, want in ref.items():
        got = mine[name]
        assert np.array_equal(want.reshape(got.shape), got), (
            f"{where}: layer {name!r} differs in {int((want.reshape(got.shape) != got).sum())} of {got.size}")


@pytest.mark.parametrize("name,size,kernels,n_images,n_random", [
    ("mobilenet_v1_0.25_128_quant.tflite", 128, "optimized", 2, 2),
    ("mobilenet_v1_0.25_128_quant.tflite", 128, "reference", 1, 1),
    ("mobilenet_v1_0.75_192_quant.tflite", 192, "optimized", 2, 1),
    ("mobilenet_v1_0.75_192_quant.tflite", 192, "reference", 1, 0),
    ("mobilenet_v1_1.0_224_quant_embedding_extractor.tflite", 224, "optimized", 1, 0),
])
def test_mobilenet_every_tensor_equals_litert(name, size, kernels, n_images, n_random):
    path = shared_model(name)
    imp = read_tflite(path)
    rng = np.random.default_rng(0)
    xs = [image(f, size) for f in IMAGES[:n_images]]
    xs += [rng.integers(0, 256, (1, 3, size, size)).astype(np.uint8) for _ in range(n_random)]
    it = interpreter(path, kernels)
    mine = IntegerModel(imp.model, kernels).run(np.concatenate(xs), keep_all=True)
    assert len(mine) == len(imp.model.spec.layers)
    for i, x in enumerate(xs):
        ref = litert_layers(it, imp, x)
        assert len(ref) == len(imp.model.spec.layers)
        _assert_layers_equal(ref, {k: v[i: i + 1] for k, v in mine.items()}, f"{name} input {i}")


@pytest.mark.parametrize("kernels", ["optimized", "reference"])
def test_micro_speech_every_tensor_equals_litert(kernels):
    path = shared_model("micro_speech_quantized.tflite")
    imp = read_tflite(path)
    rng = np.random.default_rng(0)
    xs = rng.integers(-128, 128, (12, 1960)).astype(np.int8)
    xs[0], xs[1] = -128, 127  # the extremes
    xs[2] = np.linspace(-128, 127, 1960).astype(np.int8)  # a smooth ramp, like a spectrogram
    it = interpreter(path, kernels)
    mine = IntegerModel(imp.model, kernels).run(xs, keep_all=True)
    for i in range(len(xs)):
        _assert_layers_equal(litert_layers(it, imp, xs[i: i + 1]), {k: v[i: i + 1] for k, v in mine.items()},
                             f"micro_speech input {i}")


@pytest.mark.parametrize("name,size,labels,scores", [
    ("mobilenet_v1_0.25_128_quant.tflite", 128, ("tiger cat", "academic gown"), (60, 69)),
    ("mobilenet_v1_0.75_192_quant.tflite", 192, ("tabby", "military uniform"), (91, 105)),
])
def test_reference_images_top1(name, size, labels, scores):
    """Top-1 labels as in the models' README; scores (uint8 codes) are those of LiteRT's built-in kernels,
    the table in docs/tflite.md (the README's are XNNPACK's)."""
    names = shared_model("imagenet_labels.txt").read_text().splitlines()
    stage = IntegerFrozenStage(read_tflite(shared_model(name)).model)
    codes = stage.codes(np.concatenate([image(f, size) for f in IMAGES]))
    for c, label, score in zip(codes, labels, scores, strict=True):
        assert names[int(c.argmax())].startswith(label)
        assert int(c.max()) == score


# -- every op, on small random models written to .tflite ---------------------------------------------------
def spec_ops() -> ModelSpec:
    return ModelSpec((8, 12, 12), (
        Layer("c1", "conv2d", channels=16, kernel=(3, 3), padding="same", activation="relu"),
        Layer("d2", "depthwise_conv2d", kernel=(3, 3), padding="same"),
        Layer("a3", "add", inputs=("c1", "d2"), activation="relu"),
        Layer("m4", "max_pool2d", kernel=(2, 2), stride=(2, 2)),
        Layer("p5", "avg_pool2d", kernel=(3, 3), padding="same"),
        Layer("pd6", "pad", padding=(1, 1, 0, 2)),
        Layer("r7", "relu6"),
        Layer("q8", "quantize"),
        Layer("g9", "global_avg_pool"),
        Layer("f10", "linear", channels=10),
        Layer("s11", "softmax"),
    ), name="ops")


def spec_head() -> ModelSpec:  # MEAN with keep_dims, a 1x1 classifier, stride-2 SAME on odd sizes
    return ModelSpec((6, 5, 7), (
        Layer("c1", "conv2d", channels=12, kernel=(3, 3), stride=(2, 2), padding="same", activation="relu6"),
        Layer("g2", "global_avg_pool"),
        Layer("r3", "reshape", shape=(12, 1, 1)),
        Layer("c4", "conv2d", channels=9, kernel=(1, 1)),
        Layer("f5", "flatten"),
        Layer("s6", "softmax"),
    ), name="head")


def spec_flat() -> ModelSpec:  # explicit padding, flattening feature maps into a linear layer
    return ModelSpec((4, 5, 6), (
        Layer("c1", "conv2d", channels=6, kernel=(3, 3), padding=(1, 1, 1, 1), activation="relu"),
        Layer("f2", "flatten"),
        Layer("l3", "linear", channels=7, activation="relu"),
        Layer("l4", "linear", channels=5),
    ), name="flat")


@pytest.mark.parametrize("make_spec", [spec_ops, spec_head, spec_flat])
@pytest.mark.parametrize("dtype,per_channel", [("int8", True), ("int8", False), ("uint8", False)])
@pytest.mark.parametrize("kernels", ["optimized", "reference"])
def test_every_op_equals_litert(tmp_path, make_spec, dtype, per_channel, kernels):
    q = random_qmodel(make_spec(), dtype, per_channel, seed=0)
    path = tmp_path / "m.tflite"
    path.write_bytes(to_tflite(q))
    imp = read_tflite(path)
    it = interpreter(path, kernels)
    rng = np.random.default_rng(1)
    xs = random_codes(imp.model.spec.input_quant, (6, *imp.model.spec.input_shape), rng)
    mine = IntegerModel(imp.model, kernels).run(xs, keep_all=True)
    for i in range(len(xs)):
        _assert_layers_equal(litert_layers(it, imp, xs[i: i + 1]), {k: v[i: i + 1] for k, v in mine.items()},
                             f"{make_spec.__name__} {dtype} input {i}")


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("kernels", ["optimized", "reference"])
def test_float_input_and_output_equal_litert(tmp_path, dtype, kernels):
    spec = ModelSpec((3, 9, 9), (
        Layer("c1", "conv2d", channels=5, kernel=(3, 3), stride=(2, 2), padding="same"),
        Layer("r2", "relu"),
        Layer("d3", "depthwise_conv2d", kernel=(3, 3), activation="relu"),
        Layer("l4", "linear", channels=4),
    ))
    q = random_qmodel(spec, dtype, dtype == "int8", seed=3)
    path = tmp_path / "f.tflite"
    path.write_bytes(to_tflite(q, float_io=True))
    imp = read_tflite(path)
    assert imp.input_float and imp.output_dequantized and imp.model.spec.input_quant == q.spec.input_quant
    stage = IntegerFrozenStage(imp.model, kernels=kernels)
    it = interpreter(path, kernels)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((16, 3, 9, 9)) * 1.5).astype(np.float32)
    x[:, 0, 0, :6] = (np.arange(6) - 2.5) * np.float32(q.spec.input_quant.scale[0])  # exact rounding ties
    got = stage(x)
    for i in range(len(x)):
        inp = it.get_input_details()[0]
        it.set_tensor(inp["index"], x[i: i + 1].transpose(0, 2, 3, 1))
        it.invoke()
        want = it.get_tensor(it.get_output_details()[0]["index"])
        assert want.dtype == np.float32 and np.array_equal(want.reshape(got[i].shape), got[i])


# -- post-training-quantized torch models ------------------------------------------------------------------
@pytest.fixture(scope="module")
def ptq_digits():
    spec = digits_cnn()
    weights = get_weights(build(spec, generator=torch.Generator().manual_seed(0)))
    rng = np.random.default_rng(0)
    q = quantize_model(spec, weights, rng.standard_normal((256, *spec.input_shape)).astype(np.float32))
    return q, rng.standard_normal((64, *spec.input_shape)).astype(np.float32)


def test_ptq_model_close_to_fake_quant(ptq_digits):
    q, x = ptq_digits
    lsb = q.spec.layers[-1].quant.output.scale[0]
    diff = np.abs(FakeQuantFrozenStage(q)(x) - IntegerFrozenStage(q)(x)) / lsb
    assert diff.max() <= 2 + 1e-3  # the two differ only in how requantization rounds
    assert diff.mean() < 0.5


@pytest.mark.parametrize("kernels", ["optimized", "reference"])
def test_ptq_model_exported_equals_litert(tmp_path, ptq_digits, kernels):
    q, x = ptq_digits
    path = tmp_path / "digits.tflite"
    path.write_bytes(to_tflite(q))
    imp = read_tflite(path)
    assert imp.model.spec.names == q.spec.names
    stage = IntegerFrozenStage(q, kernels=kernels)
    codes = stage.quantize(x[:8])
    mine = stage.model.run(codes, keep_all=True)
    it = interpreter(path, kernels)
    for i in range(len(codes)):
        _assert_layers_equal(litert_layers(it, imp, codes[i: i + 1]), {k: v[i: i + 1] for k, v in mine.items()},
                             f"digits_cnn input {i}")


# -- the frozen stage --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_qmodel() -> QuantizedModel:
    return random_qmodel(spec_ops(), "uint8", False, seed=5)


def test_frozen_stage_upto_codes_latents_and_bytes(small_qmodel):
    q = small_qmodel
    rng = np.random.default_rng(0)
    x = random_codes(q.spec.input_quant, (5, *q.spec.input_shape), rng)
    everything = IntegerModel(q).run(x, keep_all=True)
    stage = IntegerFrozenStage(q, upto="m4", batch_size=2)
    assert stage.spec.names == ["c1", "d2", "a3", "m4"]
    codes = stage.codes(x)
    np.testing.assert_array_equal(codes, everything["m4"])
    assert codes.dtype == np.uint8 and codes.shape == (5, *q.spec.output_shape("m4"))
    oq = q.spec.layers[3].quant.output
    latents = stage(x)
    assert latents.dtype == np.float32
    np.testing.assert_array_equal(latents, (codes.astype(np.float32) - oq.zero_point[0]) * np.float32(oq.scale[0]))
    frozen_arrays = [a for k in ("c1", "d2") for a in q.weights[k].values()]
    assert stage.nbytes == sum(a.nbytes for a in frozen_arrays) + 8 * 2  # + one scale and zero point per layer
    assert stage.run_all(x)["m4"].tolist() == codes.tolist()
    np.testing.assert_array_equal(IntegerFrozenStage(q, upto=3).codes(x), codes)  # by index, as Split takes it


def test_frozen_stage_float_input_equals_its_codes(small_qmodel):
    q = small_qmodel
    iq = q.spec.input_quant
    codes = random_codes(iq, (3, *q.spec.input_shape), np.random.default_rng(1))
    floats = (codes.astype(np.float32) - iq.zero_point[0]) * np.float32(iq.scale[0])
    stage = IntegerFrozenStage(q)
    np.testing.assert_array_equal(stage.quantize(floats), codes)
    np.testing.assert_array_equal(stage(floats), stage(codes))
    cache = LatentCache(stage)
    np.testing.assert_array_equal(cache(codes, ids=np.arange(3)), stage(codes))


def test_frozen_stage_input_errors(small_qmodel):
    stage = IntegerFrozenStage(small_qmodel)
    with pytest.raises(DataError, match="resize images"):
        stage(np.zeros((1, 8, 10, 10), np.uint8))
    with pytest.raises(DataError, match="uint8"):
        stage(np.zeros((1, 8, 12, 12), np.int16))


# -- requantization records ------------------------------------------------------------------------------
@pytest.mark.parametrize("kernels", ["optimized", "reference"])
def test_records_are_derived_once_and_read_by_the_kernels(small_qmodel, kernels):
    model = IntegerModel(small_qmodel, kernels)
    records = prepare(small_qmodel, kernels)
    assert model.records.keys() == records.keys() == set(small_qmodel.spec.names)
    for name, rec in records.items():
        kernel_rec = getattr(model.kernels[name], "rec", None)
        assert kernel_rec is None or kernel_rec is model.records[name], name  # the kernel holds the record
        if rec is not None:
            assert rec.multiplier.dtype == rec.shift.dtype == np.int32
            assert (rec.ties == "away") == (kernels == "reference" or small_qmodel.spec.layers[
                small_qmodel.spec.index(name)].op not in ("conv2d", "linear"))


def test_records_and_kernel_errors(small_qmodel, monkeypatch):
    with pytest.raises(ConfigError, match="allowed: optimized, reference"):
        prepare(small_qmodel, "fast")
    monkeypatch.delitem(intexec.INTEGER_KERNELS, "max_pool2d")  # the table is the one place kernels are registered
    with pytest.raises(ModelError, match="layer 'm4': op 'max_pool2d' has no integer kernel"):
        IntegerModel(small_qmodel)
