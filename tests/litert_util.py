"""Helpers for tests that compare tinycl's integer path with LiteRT: shared-model lookup, small random quantized
models built from specs, and running a .tflite buffer in LiteRT keeping every intermediate tensor."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from conftest import require_module, require_shared_model

from tinycl.model.build import build, get_weights
from tinycl.model.quantized import QuantizedModel
from tinycl.model.spec import LayerQuant, ModelSpec, TensorQuant
from tinycl.model.tflite import TfliteImport

RESOLVERS = {"optimized": "BUILTIN_WITHOUT_DEFAULT_DELEGATES", "reference": "BUILTIN_REF"}
IMAGES = ("cat.bmp", "grace_hopper.bmp")


def shared_model(name: str) -> Path:
    return require_shared_model(name)


def image(name: str, size: int) -> np.ndarray:
    """A reference image resized with PIL's default resize, as (1, 3, size, size) uint8 (the README's recipe)."""
    from PIL import Image

    with Image.open(require_shared_model(name)) as img:
        return np.asarray(img.convert("RGB").resize((size, size)))[None].transpose(0, 3, 1, 2).copy()


def interpreter(model: bytes | Path, kernels: str = "optimized"):
    """A LiteRT interpreter with the given built-in kernel set, keeping all intermediate tensors."""
    lite = require_module("ai_edge_litert.interpreter")
    resolver = getattr(lite.OpResolverType, RESOLVERS[kernels])
    source = dict(model_path=str(model)) if isinstance(model, Path) else dict(model_content=bytes(model))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        it = lite.Interpreter(**source, experimental_op_resolver_type=resolver,
                              experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    return it


def to_nhwc(x: np.ndarray) -> np.ndarray:
    return x.transpose(0, 2, 3, 1) if x.ndim == 4 else x


def assert_every_layer_equals_litert(path: Path, xs: np.ndarray, kernels=("optimized", "reference")) -> None:
    """Every layer of the .tflite at `path`, imported and run by tinycl on codes xs (N, *input_shape), equals
    LiteRT's tensor for each sample and each kernel set, exactly."""
    from tinycl.model.tflite import read_tflite
    from tinycl.quant.intexec import IntegerModel

    imp = read_tflite(path)
    for k in kernels:
        it = interpreter(path, k)
        mine = IntegerModel(imp.model, k).run(xs, keep_all=True)
        for i in range(len(xs)):
            for name, want in litert_layers(it, imp, xs[i: i + 1]).items():
                got = mine[name][i: i + 1]
                diff = int((want.reshape(got.shape) != got).sum())
                assert diff == 0, f"{path.name} {k}: layer {name!r} differs in {diff} of {got.size} (sample {i})"


def litert_layers(it, imp: TfliteImport, x_chw: np.ndarray, dtype=None) -> dict[str, np.ndarray]:
    """Run one sample (1, *input_shape) CHW through LiteRT; every layer's tensor, converted to CHW."""
    inp = it.get_input_details()[0]
    x = (x_chw if imp.input_nchw else to_nhwc(x_chw)).reshape(inp["shape"]).astype(dtype or inp["dtype"])
    it.set_tensor(inp["index"], x)
    it.invoke()
    out = {}
    for name, t in imp.tensor_of.items():
        y = it.get_tensor(t)
        if name in imp.hwc_flattened:  # TFLite holds this flattened map in HWC order
            c, h, w = imp.hwc_flattened[name]
            y = y.reshape(len(y), h, w, c).transpose(0, 3, 1, 2).reshape(len(y), -1)
        out[name] = y.transpose(0, 3, 1, 2) if y.ndim == 4 else y
    return out


def _act_quant(lo: float, hi: float, dtype: str) -> TensorQuant:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    qmin, qmax = (0, 255) if dtype == "uint8" else (-128, 127)
    scale = float(np.float32((hi - lo) / 255.0 if hi > lo else 1.0))
    zero = int(np.clip(np.round(qmin - lo / scale), qmin, qmax))
    return TensorQuant((scale,), (zero,), dtype)


def random_qmodel(spec: ModelSpec, dtype: str = "int8", per_channel: bool = True, seed: int = 0,
                  calibration: np.ndarray | None = None) -> QuantizedModel:
    """A quantized model with random weights: activations asymmetric (int8 or uint8) from calibration ranges,
    weights int8 symmetric (per channel or per tensor) or uint8 asymmetric per tensor, softmax outputs at the
    scale TFLite requires (1/256)."""
    rng = np.random.default_rng(seed)
    module = build(spec, generator=torch.Generator().manual_seed(seed)).eval()
    weights = get_weights(module)
    if calibration is None:
        calibration = rng.standard_normal((16, *spec.input_shape)).astype(np.float32)
    x = torch.as_tensor(calibration, dtype=torch.float32)
    outputs, ranges = {"input": x}, {"input": (x.min().item(), x.max().item())}
    with torch.no_grad():
        for layer in spec.layers:
            ins = [outputs[n] for n in layer.inputs] if layer.inputs else [x]
            # "quantize" is the identity in float (build.py may not know it yet)
            x = outputs[layer.name] = ins[0] if layer.op == "quantize" else module.run_layer(layer, ins)
            ranges[layer.name] = (x.min().item(), x.max().item())
    quant = {name: _act_quant(lo, hi, dtype) for name, (lo, hi) in ranges.items()}
    layers, qweights, prev = [], {}, "input"
    for layer in spec.layers:
        out_q = quant[layer.name]
        if layer.op == "softmax":
            out_q = TensorQuant((1 / 256,), (0 if dtype == "uint8" else -128,), dtype)
        w_q = None
        if layer.name in weights:
            w = weights[layer.name]["weight"]
            flat = w.reshape(w.shape[0], -1)
            if dtype == "uint8":
                lo, hi = min(flat.min(), 0.0), max(flat.max(), 0.0)
                s = np.float32((hi - lo) / 255.0)
                z = int(np.clip(np.round(-lo / s), 0, 255))
                qw = np.clip(np.round(w / s) + z, 0, 255).astype(np.uint8)
                w_q = TensorQuant((float(s),), (z,), "uint8")
                w_scale = np.full(w.shape[0], s, np.float32)
            else:
                m = np.abs(flat).max(axis=1) if per_channel else np.full(w.shape[0], np.abs(flat).max())
                w_scale = (np.maximum(m, 1e-8) / 127.0).astype(np.float32)
                qw = np.clip(np.round(w / w_scale.reshape((-1,) + (1,) * (w.ndim - 1))), -127, 127).astype(np.int8)
                scales = w_scale if per_channel else w_scale[:1]
                w_q = TensorQuant(tuple(map(float, scales)), (0,) * len(scales), "int8")
            qweights[layer.name] = {"weight": qw}
            source = layer.inputs[0] if layer.inputs else prev
            b_scale = np.float64(np.float32(quant[source].scale[0])) * w_scale.astype(np.float64)
            qweights[layer.name]["bias"] = np.round(weights[layer.name]["bias"] / b_scale).astype(np.int32)
        quant[layer.name] = out_q
        layers.append(layer.__class__(**{**layer.__dict__, "quant": LayerQuant(out_q, w_q)}))
        prev = layer.name
    return QuantizedModel(spec.with_layers(layers, input_quant=quant["input"]), qweights)


def random_codes(q: TensorQuant, shape, rng: np.random.Generator) -> np.ndarray:
    dt = np.uint8 if q.dtype == "uint8" else np.int8
    return rng.integers(q.qmin, q.qmax + 1, shape).astype(dt)
