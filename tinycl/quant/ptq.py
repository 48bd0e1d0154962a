"""Post-training quantization of a float model to an int8 `QuantizedModel`.

Weights: int8, symmetric (zero point 0, range [-127, 127]), one scale per output channel.
Biases: int32 with scale input_scale * weight_scale[c]. Activations: int8, asymmetric, one scale and zero
point per tensor, from the min/max seen on calibration data (range always includes 0).
The result carries its quantization in the layer records (`Layer.quant`), the same form the TFLite importer
produces, so one integer executor runs both.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from tinycl.model.build import build
from tinycl.model.ops import OPS
from tinycl.model.quantized import QuantizedModel
from tinycl.model.spec import LayerQuant, ModelSpec, TensorQuant

__all__ = ["quantize_model"]


def _tensor_quant(lo: float, hi: float) -> TensorQuant:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0 if hi > lo else 1.0
    zero = int(np.clip(np.round(-128 - lo / scale), -128, 127))
    return TensorQuant((float(scale),), (zero,), "int8")


def quantize_model(spec: ModelSpec, weights: dict, calibration: np.ndarray, batch_size: int = 256) -> QuantizedModel:
    """Quantize a float model (spec + float weights) using `calibration` inputs (N, *input_shape)."""
    module = build(spec, weights).eval()
    lo = {n: np.inf for n in ["input", *spec.names]}
    hi = {n: -np.inf for n in lo}
    with torch.no_grad():
        for start in range(0, len(calibration), batch_size):
            x = torch.as_tensor(np.asarray(calibration[start: start + batch_size], np.float32))
            lo["input"], hi["input"] = min(lo["input"], x.min().item()), max(hi["input"], x.max().item())
            for name, y in spec.walk(module.run_layer, x, keep_all=True).items():
                lo[name], hi[name] = min(lo[name], y.min().item()), max(hi[name], y.max().item())

    input_quant = _tensor_quant(lo["input"], hi["input"])
    quant_of = {"input": input_quant}
    layers, qweights = [], {}
    for i, layer in enumerate(spec.layers):
        in_q = quant_of[spec.sources(layer, i)[0]]
        rule = OPS[layer.op].quant
        if rule == "input":
            out_q = in_q
        elif rule == "softmax":  # TFLite fixes softmax outputs to scale 1/256, zero point -128
            out_q = TensorQuant((1 / 256,), (-128,), "int8")
        else:
            out_q = _tensor_quant(lo[layer.name], hi[layer.name])
        w_q = None
        if layer.name in weights:
            w = weights[layer.name]["weight"]
            w_scale = np.abs(w.reshape(w.shape[0], -1)).max(axis=1) / 127.0
            w_scale = np.where(w_scale > 0, w_scale, 1.0).astype(np.float32)
            shape = (-1,) + (1,) * (w.ndim - 1)
            qw = np.clip(np.round(w / w_scale.reshape(shape)), -127, 127).astype(np.int8)
            qweights[layer.name] = {"weight": qw}
            w_q = TensorQuant(tuple(map(float, w_scale)), (0,) * len(w_scale), "int8", axis=0)
            if "bias" in weights[layer.name]:
                b_scale = np.float64(in_q.scale[0]) * w_scale.astype(np.float64)
                qb = np.round(weights[layer.name]["bias"] / b_scale)
                qweights[layer.name]["bias"] = np.clip(qb, -(2**31), 2**31 - 1).astype(np.int32)
        quant_of[layer.name] = out_q
        layers.append(replace(layer, quant=LayerQuant(output=out_q, weight=w_q)))
    return QuantizedModel(spec.with_layers(layers, input_quant=input_quant), qweights)
