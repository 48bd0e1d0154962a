"""TFLite import: the shared models become the one model description with their quantization and integer
weights in tinycl's layout; export and import are inverse; broken or unsupported files fail with one line;
the float adaptive stage above any split; `tinycl inspect`. (Bit-exactness against LiteRT: test_intexec.py.)"""

import numpy as np
import pytest
import tflite
import torch
from litert_util import random_qmodel, shared_model
from test_intexec import spec_head, spec_ops

from tinycl.cli import main
from tinycl.errors import ModelError
from tinycl.model import tflite_export
from tinycl.model.adapt import adaptive_stage
from tinycl.model.build import build
from tinycl.model.quantized import QuantizedModel
from tinycl.model.spec import Layer, LayerQuant, ModelSpec, TensorQuant
from tinycl.model.tflite import load_tflite, supported_ops
from tinycl.model.tflite_export import to_tflite
from tinycl.quant.intexec import IntegerFrozenStage

MODELS = ("mobilenet_v1_0.25_128_quant.tflite", "mobilenet_v1_0.75_192_quant.tflite",
          "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite", "micro_speech_quantized.tflite")


def _raw_weights(path, operator: int) -> np.ndarray:
    """The weight tensor of one operator, read straight from the flatbuffer (TFLite layout)."""
    buf = path.read_bytes()
    model = tflite.Model.GetRootAsModel(buf, 0)
    graph = model.Subgraphs(0)
    tensor = graph.Tensors(graph.Operators(operator).Inputs(1))
    data = model.Buffers(tensor.Buffer()).DataAsNumpy()
    return data.view(np.uint8 if tensor.Type() == 3 else np.int8).reshape(tensor.ShapeAsNumpy())


def test_mobilenet_025_structure_and_layout():
    path = shared_model(MODELS[0])
    q = load_tflite(path)
    spec = q.spec
    ops = [ly.op for ly in spec.layers]
    assert len(ops) == 31 and ops.count("depthwise_conv2d") == 13 and ops.count("conv2d") == 15
    assert ops[-4:] == ["avg_pool2d", "conv2d", "flatten", "softmax"]
    assert spec.input_shape == (3, 128, 128) and spec.output_shape() == (1001,)
    assert spec.input_quant == TensorQuant((0.0078125,), (128,), "uint8")
    assert spec.names[:3] == ["Conv2d_0", "Conv2d_1_depthwise", "Conv2d_1_pointwise"]
    first = spec.layers[0]
    assert (first.kernel, first.stride, first.padding, first.activation) == ((3, 3), (2, 2), "same", "relu6")
    assert spec.output_shape("Conv2d_0") == (8, 64, 64) and spec.output_shape("AvgPool_1a") == (256, 1, 1)
    # OHWI -> OIHW and 1HWC -> C1HW, values untouched; uint8 weights keep their zero point
    np.testing.assert_array_equal(q.weights["Conv2d_0"]["weight"], _raw_weights(path, 0).transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(q.weights["Conv2d_1_depthwise"]["weight"],
                                  _raw_weights(path, 1)[0].transpose(2, 0, 1)[:, None])
    assert first.quant.weight.dtype == "uint8" and first.quant.weight.zero_point == (157,)
    assert q.weights["Conv2d_0"]["bias"].dtype == np.int32 and q.weights["Conv2d_0"]["bias"].shape == (8,)
    assert spec.num_params() == 467_593


def test_micro_speech_structure():
    q = load_tflite(shared_model(MODELS[3]))
    assert [(ly.op, ly.channels) for ly in q.spec.layers] == [("reshape", 0), ("conv2d", 8), ("linear", 4),
                                                             ("softmax", 0)]
    conv = q.spec.layers[1]  # DEPTHWISE_CONV_2D with depth multiplier 8 on one channel = a conv with 8 filters
    assert conv.quant.weight.dtype == "int8" and len(conv.quant.weight.scale) == 8
    assert q.weights[conv.name]["weight"].shape == (8, 1, 10, 8)
    assert q.spec.output_shape(conv.name) == (8, 25, 20) and q.spec.input_shape == (1960,)


def test_embedding_extractor_ends_in_its_pool():
    q = load_tflite(shared_model(MODELS[2]))
    assert q.spec.layers[-1].op == "avg_pool2d" and q.spec.output_shape() == (1024, 1, 1)


def test_fully_connected_on_feature_maps_is_permuted_to_chw(tmp_path):
    from tinycl.model.tflite import hwc_columns_to_chw

    rng = np.random.default_rng(0)
    c, h, w = 3, 2, 4
    x = rng.standard_normal((c, h, w))
    weight = rng.standard_normal((5, h * w * c))  # TFLite: over the NHWC-flattened input
    np.testing.assert_allclose(hwc_columns_to_chw(weight, (c, h, w)) @ x.ravel(),
                               weight @ x.transpose(1, 2, 0).ravel())


@pytest.mark.parametrize("dtype,per_channel", [("int8", True), ("uint8", False)])
def test_export_then_import_is_identity(tmp_path, dtype, per_channel):
    q = random_qmodel(spec_head(), dtype, per_channel, seed=2)
    path = tmp_path / "m.tflite"
    path.write_bytes(to_tflite(q))
    back = load_tflite(path)
    assert back.spec.input_quant == q.spec.input_quant
    for a, b in zip(back.spec.layers, q.spec.layers, strict=True):
        assert a.name == b.name and a.op == b.op and a.quant.output == b.quant.output
        assert back.spec.output_shape(a.name) == q.spec.output_shape(b.name)
        if b.has_weights:
            assert a.quant.weight == b.quant.weight
            for key in ("weight", "bias"):
                np.testing.assert_array_equal(back.weights[a.name][key], q.weights[b.name][key])


# -- bad files --------------------------------------------------------------------------------------------
def _one_line_model_error(path) -> str:
    with pytest.raises(ModelError) as info:
        load_tflite(path)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("keep", [0, 7, 64, 0.5, -500])
def test_truncated_file_is_one_line_error(tmp_path, keep):
    data = shared_model(MODELS[3]).read_bytes()
    n = keep if isinstance(keep, int) and keep >= 0 else (int(len(data) * keep) if keep > 0 else len(data) + keep)
    path = tmp_path / "cut.tflite"
    path.write_bytes(data[:n])
    message = _one_line_model_error(path)
    assert "truncated" in message or "not a .tflite" in message


def test_corrupt_and_foreign_files(tmp_path):
    rng = np.random.default_rng(0)
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x10\x00\x00\x00TFL3" + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    assert "truncated or corrupt" in _one_line_model_error(junk)
    text = tmp_path / "notes.tflite"
    text.write_text("not a model at all")
    assert "not a .tflite file" in _one_line_model_error(text)
    with pytest.raises(ModelError, match="cannot read model file"):
        load_tflite(tmp_path / "missing.tflite")


def test_unsupported_op_names_op_layer_and_supported_set(tmp_path):
    spec = ModelSpec((4, 6, 6), (Layer("c1", "conv2d", channels=4, kernel=(3, 3), padding="same"),
                                 Layer("act", "relu")))
    writer = tflite_export._Writer(random_qmodel(spec, "int8", True), False)
    emit = writer.op
    writer.op = lambda name, *a, **k: emit("TANH" if name == "RELU" else name, *a, **k)
    path = tmp_path / "tanh.tflite"
    path.write_bytes(writer.run())
    message = _one_line_model_error(path)
    assert "operator 1 TANH (output 'act') is not supported" in message
    assert "supported: " + ", ".join(supported_ops()) in message


def test_unsupported_dtype_names_it(tmp_path):
    q = random_qmodel(ModelSpec((2, 4, 4), (Layer("p", "max_pool2d", kernel=(2, 2), stride=(2, 2)),)), "int8")
    wide = TensorQuant((0.1,), (0,), "int32")
    layer = Layer("p", "max_pool2d", kernel=(2, 2), stride=(2, 2), quant=LayerQuant(wide))
    bad = QuantizedModel(q.spec.with_layers([layer], input_quant=wide), {})
    path = tmp_path / "i32.tflite"
    path.write_bytes(to_tflite(bad))
    message = _one_line_model_error(path)
    assert "int32 is not supported; supported: int8, uint8" in message


# -- split anywhere: the float adaptive stage --------------------------------------------------------------
def test_adaptive_stage_replaces_the_classifier_and_continues_the_integer_model():
    q = load_tflite(shared_model(MODELS[0]))
    split = "Conv2d_11_pointwise"
    spec, weights = adaptive_stage(q, split, n_classes=10, generator=torch.Generator().manual_seed(0))
    assert spec.input_shape == (128, 8, 8) and spec.output_shape() == (10,)
    assert spec.names[0] == "Conv2d_12_depthwise" and spec.layers[-2].name == "Conv2d_1c_1x1"
    assert [ly.op for ly in spec.layers[-2:]] == ["conv2d", "flatten"]  # softmax gone: learners want logits
    assert all(ly.quant is None for ly in spec.layers) and spec.input_quant is None
    dequantized = q.dequantized_weights()
    np.testing.assert_array_equal(weights["Conv2d_13_pointwise"]["weight"],
                                  dequantized["Conv2d_13_pointwise"]["weight"])
    assert weights["Conv2d_1c_1x1"]["weight"].shape == (10, 256, 1, 1)
    again = adaptive_stage(q, split, 10, generator=torch.Generator().manual_seed(0))[1]
    np.testing.assert_array_equal(again["Conv2d_1c_1x1"]["weight"], weights["Conv2d_1c_1x1"]["weight"])

    # the float layers on the frozen stage's latents track the integer model (up to its rounding)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (4, 3, 128, 128)).astype(np.uint8)
    latents = IntegerFrozenStage(q, upto=split)(x)
    module = build(spec, weights).eval()
    with torch.no_grad():
        z = torch.as_tensor(latents)
        for layer in spec.layers[:5]:  # up to and including the average pool
            z = module.run_layer(layer, [z])
        assert module(torch.as_tensor(latents)).shape == (4, 10)
    pooled = IntegerFrozenStage(q, upto="AvgPool_1a")(x)
    scale = q.spec.layers[q.spec.index("AvgPool_1a")].quant.output.scale[0]
    assert np.abs(z.numpy() - pooled).mean() < 2 * scale


def test_adaptive_stage_appends_a_head_to_a_backbone():
    q = load_tflite(shared_model(MODELS[3]))
    spec, weights = adaptive_stage(q, None, n_classes=3, generator=torch.Generator().manual_seed(1))
    assert [ly.op for ly in spec.layers] == ["reshape", "conv2d", "linear"] and spec.output_shape() == (3,)
    spec, _ = adaptive_stage(q, "labels_softmax", n_classes=3)  # split at the very end: only a new head
    assert [ly.op for ly in spec.layers] == ["linear"] and spec.input_shape == (4,)
    spec, _ = adaptive_stage(random_qmodel(spec_ops()), "g9", n_classes=4, head_bias=False)
    assert spec.layers[0].name == "f10" and not spec.layers[0].bias and spec.output_shape() == (4,)


# -- tinycl inspect ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_inspect_prints_every_layer(capsys, name):
    path = shared_model(name)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    q = load_tflite(path)
    assert len(out) == 2 + len(q.spec.layers)
    last = q.spec.layers[-1]
    assert out[-1].split()[:3] == [str(len(q.spec.layers) - 1), last.name, last.op]
    assert all(line.split()[-1] == "yes" for line in out[2:])  # sequential: every cut is a valid split


def test_inspect_split_reports_frozen_adaptive_and_latent(capsys):
    path = shared_model(MODELS[0])
    assert main(["inspect", str(path), "--split", "22", "--classes", "10"]) == 0
    out = capsys.readouterr().out
    assert "split after 'Conv2d_11_pointwise' (layer 22): latent 128x8x8 = 8,192 values" in out
    assert "frozen   (int8, integer):   23 layers" in out and "(new 10-class head)" in out
    assert "one latent: 8,192 B at 8 bits" in out


@pytest.mark.parametrize("args,message", [
    (["--split", "nope"], "unknown split layer 'nope'"),
    (["--split", "99"], "split index 99 is out of range"),
    (["--classes", "3"], "--classes needs --split"),
])
def test_inspect_bad_arguments(capsys, args, message):
    assert main(["inspect", str(shared_model(MODELS[3])), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_inspect_truncated_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "cut.tflite"
    path.write_bytes(shared_model(MODELS[0]).read_bytes()[:100_000])
    assert main(["inspect", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert "truncated or corrupt" in captured.err and "Traceback" not in captured.err


# -- hostile files: every problem is one line naming where it is ---------------------------------------------
def test_conv_bias_shorter_than_its_channels_is_one_line(tmp_path):
    spec = ModelSpec((3, 6, 6), (Layer("c1", "conv2d", channels=6, kernel=(3, 3), padding="same"),))
    q = random_qmodel(spec, "int8", True)
    q.weights["c1"]["bias"] = q.weights["c1"]["bias"][:4]
    path = tmp_path / "short_bias.tflite"
    path.write_bytes(to_tflite(q))
    message = _one_line_model_error(path)
    assert "operator 0 CONV_2D" in message and "bias 'c1/bias' has shape [4], the layer has 6 output" in message


@pytest.mark.parametrize("pos,bit", [(18157, 2), (17942, 3), (66, 3)])
def test_bit_flips_litert_rejects_are_refused(tmp_path, pos, bit):
    """Single-bit flips of micro_speech that LiteRT's flatbuffer verifier rejects (found by a seeded sweep)."""
    data = bytearray(shared_model(MODELS[3]).read_bytes())
    data[pos] ^= 1 << bit
    path = tmp_path / "flipped.tflite"
    path.write_bytes(bytes(data))
    assert "not a valid flatbuffer" in _one_line_model_error(path)


def test_any_bit_flip_loads_or_gives_one_line(tmp_path):
    data = shared_model(MODELS[3]).read_bytes()
    rng = np.random.default_rng(1)
    for k in range(120):
        flipped = bytearray(data)
        flipped[int(rng.integers(0, len(data)))] ^= 1 << int(rng.integers(0, 8))
        path = tmp_path / f"flip{k}.tflite"
        path.write_bytes(bytes(flipped))
        try:
            load_tflite(path)
        except ModelError as err:
            assert "\n" not in str(err) and "unpack_from" not in str(err), str(err)


@pytest.mark.parametrize("field,value,message", [
    ("scale", (0.0,), "scales must be positive and finite"),
    ("shape", (3, 0, 6), "dimensions must be 1.."),
])
def test_zero_scales_and_shapes_are_one_line(tmp_path, field, value, message):
    spec = ModelSpec((3, 6, 6), (Layer("c1", "conv2d", channels=4, kernel=(1, 1)),))
    q = random_qmodel(spec, "int8", True)
    writer = tflite_export._Writer(q, False)
    tensor = writer.tensor
    def patched(name, shape, dtype, quant=None, data=None, axis=0):  # noqa: E306
        if name == "input" and field == "scale":
            quant = TensorQuant(value, quant.zero_point, quant.dtype)
        if name == "input" and field == "shape":
            shape = [1, *value[1:], value[0]]
        return tensor(name, shape, dtype, quant, data, axis)
    writer.tensor = patched
    path = tmp_path / "bad.tflite"
    path.write_bytes(writer.run())
    assert message in _one_line_model_error(path)


def test_zero_stride_is_one_line_not_a_zero_division(tmp_path):
    spec = ModelSpec((3, 6, 6), (Layer("p", "max_pool2d", kernel=(2, 2), stride=(2, 2)),))
    writer = tflite_export._Writer(random_qmodel(spec, "int8", True), False)
    emit = writer.op
    writer.op = lambda name, ins, outs, options=None, **f: emit(
        name, ins, outs, options, **({**f, "StrideH": 0} if name == "MAX_POOL_2D" else f))
    path = tmp_path / "stride0.tflite"
    path.write_bytes(writer.run())
    message = _one_line_model_error(path)
    assert "operator 0 MAX_POOL_2D" in message and "window or stride [0, 2]" in message
