"""A seeded generator of random integer models shaped like what real converters produce, for property tests
against LiteRT: int8 (per tensor or per channel, depthwise on TFLite's quantized dimension 3) or uint8 (per
tensor, weight zero points anywhere), multipliers from 2**-20 to above 1, zero points at the ends of the range,
fused and separate activations, SAME / VALID, strides, dilation-free and dilated convs, residual ADDs and MEANs
that rescale. `random_model(rng, dtype, per_channel)` -> QuantizedModel; the exporter writes it as .tflite."""

from __future__ import annotations

import numpy as np

from tinycl.model.quantized import QuantizedModel
from tinycl.model.spec import Layer, LayerQuant, ModelSpec, TensorQuant

_RANGE = {"int8": (-128, 127), "uint8": (0, 255)}


def _zero(rng: np.random.Generator, dtype: str) -> int:
    lo, hi = _RANGE[dtype]
    return int(rng.choice([lo, hi, lo + 1, hi - 1, int(rng.integers(lo, hi + 1)), (lo + hi + 1) // 2]))


def act_quant(rng: np.random.Generator, dtype: str, scale: float | None = None) -> TensorQuant:
    """An activation quantization: scale log-uniform in [2**-10, 1] (or `scale`), zero point often extreme."""
    s = float(np.float32(scale if scale is not None else 2.0 ** rng.uniform(-10, 0)))
    return TensorQuant((s,), (_zero(rng, dtype),), dtype)


class _Builder:
    def __init__(self, rng: np.random.Generator, dtype: str, per_channel: bool, input_shape):
        self.rng, self.dtype, self.per_channel = rng, dtype, per_channel
        self.input_quant = act_quant(rng, dtype)
        self.layers: list[Layer] = []
        self.weights: dict = {}
        self.input_shape = tuple(input_shape)

    def spec(self) -> ModelSpec:
        return ModelSpec(self.input_shape, tuple(self.layers), input_quant=self.input_quant, name="gen")

    def quant_of(self, name: str) -> TensorQuant:
        return self.input_quant if name == "input" else self.spec().layers[self.spec().index(name)].quant.output

    def last(self) -> str:
        return self.layers[-1].name if self.layers else "input"

    def shape_of(self, name: str):
        return self.spec().output_shape(name) if name != "input" else self.input_shape

    def append(self, layer: Layer, out_q: TensorQuant, weight_q: TensorQuant | None = None) -> str:
        self.layers.append(Layer(**{**layer.__dict__, "quant": LayerQuant(out_q, weight_q)}))
        return layer.name

    def weighted(self, layer: Layer, source: str) -> str:
        """A conv / depthwise / linear layer on `source` with random weights and a multiplier that spreads
        typical accumulators over the output range (sometimes far below or above it)."""
        rng, dtype = self.rng, self.dtype
        probe = ModelSpec(self.shape_of(source), (layer,))
        shapes = probe.weight_shapes(layer)
        n_out, taps = shapes["weight"][0], int(np.prod(shapes["weight"][1:]))
        w_max = int(rng.choice([127, 40, 3]))
        if dtype == "uint8":
            zw = int(rng.integers(0, 256))
            w = np.clip(zw + rng.integers(-w_max, w_max + 1, shapes["weight"]), 0, 255).astype(np.uint8)
            w_scale = np.full(1, 2.0 ** rng.uniform(-9, -2), np.float32)
            wq = TensorQuant((float(w_scale[0]),), (zw,), "uint8")
        else:
            w = rng.integers(-w_max, w_max + 1, shapes["weight"]).astype(np.int8)
            n_scales = n_out if self.per_channel else 1
            w_scale = (2.0 ** rng.uniform(-9, -2, n_scales)).astype(np.float32)
            wq = TensorQuant(tuple(map(float, w_scale)), (0,) * n_scales, "int8", axis=0)
        in_q = self.quant_of(source)
        acc_std = np.sqrt(taps) * w_max * 74.0
        target = 2.0 ** rng.uniform(-4, 3) * 128.0 / acc_std  # the multiplier, before per-channel spread
        out_scale = float(in_q.scale[0]) * float(w_scale.mean()) / target
        out_q = act_quant(rng, dtype, out_scale)
        weights = {"weight": w}
        if layer.bias:
            weights["bias"] = (rng.standard_normal(n_out) * acc_std * rng.choice([0.1, 1.0, 4.0])).astype(np.int32)
        self.weights[layer.name] = weights
        return self.append(layer, out_q, wq)


def _conv_layer(rng, name: str, op: str, channels: int, h: int, w: int) -> Layer:
    k = int(rng.choice([1, 3, 3, 5])) if min(h, w) >= 5 else 1
    stride = int(rng.choice([1, 1, 2]))
    return Layer(name, op, channels=channels if op == "conv2d" else 0, kernel=(k, k), stride=(stride, stride),
                 padding=str(rng.choice(["same", "valid"])), activation=str(rng.choice(["none", "relu", "relu6"])),
                 bias=True)  # LiteRT's integer convs require a bias


def random_model(rng: np.random.Generator, dtype: str = "int8", per_channel: bool = True,
                 ops: tuple[str, ...] = ("conv2d", "depthwise_conv2d", "add", "avg_pool2d", "max_pool2d", "relu",
                                         "relu6"),
                 n_layers: int = 4) -> QuantizedModel:
    """A chain of `n_layers` random layers drawn from `ops` on a small random input, then MEAN (sometimes with
    keep_dims) and a linear classifier."""
    b = _Builder(rng, dtype, per_channel, (int(rng.integers(1, 9)), int(rng.integers(5, 14)),
                                           int(rng.integers(5, 14))))
    for i in range(n_layers):
        c, h, w = b.shape_of(b.last())
        op = str(rng.choice(ops))
        name = f"{op}_{i}"
        if op in ("conv2d", "depthwise_conv2d"):
            b.weighted(_conv_layer(rng, name, op, int(rng.integers(1, 17)), h, w), b.last())
        elif op == "add":
            src = b.last()
            branch = Layer(f"branch_{i}", "depthwise_conv2d", kernel=(3, 3), padding="same",
                           activation=str(rng.choice(["none", "relu"])))
            b.weighted(branch, src)
            # the output scale within 4x of the larger input's: LiteRT's optimized int8 ADD saturates the rescaled
            # sum to int16 in its vector code, which tinycl does not model (docs/tflite.md)
            larger = max(float(b.quant_of(src).scale[0]), float(b.quant_of(branch.name).scale[0]))
            b.append(Layer(name, "add", inputs=(src, branch.name), activation=str(rng.choice(["none", "relu6"]))),
                     act_quant(rng, dtype, larger * 2.0 ** rng.uniform(-2, 2)))
        elif op in ("avg_pool2d", "max_pool2d"):
            k = int(min(h, w, rng.choice([2, 3])))
            same = rng.random() < 0.7  # mostly in the input's quantization, sometimes a rescaling QUANTIZE after
            q = b.quant_of(b.last()) if same else act_quant(rng, dtype)
            b.append(Layer(name, op, kernel=(k, k), stride=(int(rng.choice([1, 2])),) * 2,
                           padding=str(rng.choice(["same", "valid"])),
                           activation=str(rng.choice(["none", "none", "relu", "relu6"]))), q)
        elif op in ("relu", "relu6"):
            b.append(Layer(name, op), act_quant(rng, dtype, float(b.quant_of(b.last()).scale[0])
                                               * 2.0 ** rng.uniform(-1, 1)))
    c = b.shape_of(b.last())[0]
    b.append(Layer("mean", "global_avg_pool"), act_quant(rng, dtype, float(b.quant_of(b.last()).scale[0])
                                                       * 2.0 ** rng.uniform(-2, 1)))
    if rng.random() < 0.5:
        b.append(Layer("mean_keep", "reshape", shape=(c, 1, 1)), b.quant_of("mean"))
    b.weighted(Layer("logits", "linear", channels=int(rng.integers(2, 12))), b.last())
    return QuantizedModel(b.spec(), b.weights)


def full_range_codes(q: TensorQuant, shape, rng: np.random.Generator) -> np.ndarray:
    """Uniform random codes over the dtype's whole range, with the first two samples at its ends."""
    lo, hi = _RANGE[q.dtype]
    x = rng.integers(lo, hi + 1, shape)
    x[:1], x[1:2] = lo, hi
    return x.astype(np.uint8 if q.dtype == "uint8" else np.int8)
