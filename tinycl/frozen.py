"""The frozen stage: the lower part of the network, never trained, run in int8 on the device.

Every frozen stage maps a batch of inputs to float32 latents and reports the bytes its parameters take.
An int8 frozen stage is `tinycl.quant.intexec.IntegerFrozenStage` (the device's integer arithmetic), fed the
data set's samples as the model takes them: `FloatInput` (the network's float input, quantized by the model's
input quantization) or `ImageInput` (uint8 pixel codes, resized). `FakeQuantFrozenStage` is the float reference
it is tested against. `LatentCache` runs a frozen stage once per sample: the stage is fixed, so a sample's
latent never changes.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from tinycl.data.dataset import to_float
from tinycl.model.build import build
from tinycl.model.quantized import QuantizedModel
from tinycl.model.spec import ModelSpec, TensorQuant

__all__ = ["FrozenStage", "FloatFrozenStage", "FakeQuantFrozenStage", "LatentCache", "FloatInput", "ImageInput"]


class FrozenStage(Protocol):
    spec: ModelSpec

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(N, *input_shape) inputs (uint8 pixels or float32) -> (N, *latent_shape) float32 latents."""

    @property
    def nbytes(self) -> int:
        """Bytes of its parameters as stored on the device."""


def _batched(fn, x: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate([fn(x[i: i + batch_size]) for i in range(0, len(x), batch_size)]) if len(x) else x


class FloatFrozenStage:
    """A frozen stage in fp32 (the unquantized reference)."""

    def __init__(self, spec: ModelSpec, weights: dict, batch_size: int = 256):
        self.spec, self.batch_size = spec, batch_size
        self.module = build(spec, weights).eval()
        self.nbytes = sum(a.nbytes for arrays in weights.values() for a in arrays.values())

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return _batched(lambda b: self.module(torch.as_tensor(b, dtype=torch.float32)).numpy(),
                            to_float(x), self.batch_size)


def _fake_quant(x: torch.Tensor, q: TensorQuant) -> torch.Tensor:
    scale, zero = q.scale[0], q.zero_point[0]
    codes = torch.clamp(torch.round(x / scale) + zero, q.qmin, q.qmax)
    return (codes - zero) * scale


class FakeQuantFrozenStage:
    """A QuantizedModel executed in float with every activation rounded to its int8 grid (fake quantization).

    It agrees with an integer executor up to the rounding of requantization multipliers."""

    def __init__(self, qmodel: QuantizedModel, batch_size: int = 256):
        self.qmodel, self.spec, self.batch_size = qmodel, qmodel.spec, batch_size
        self.module = build(qmodel.spec, qmodel.dequantized_weights()).eval()
        self.nbytes = qmodel.nbytes

    @property
    def output_quant(self) -> TensorQuant:
        return self.spec.layers[-1].quant.output if self.spec.layers else self.spec.input_quant

    def _run(self, x: np.ndarray) -> np.ndarray:
        x = _fake_quant(torch.as_tensor(x, dtype=torch.float32), self.spec.input_quant)
        outputs = {"input": x}
        for layer in self.spec.layers:
            ins = [outputs[n] for n in layer.inputs] if layer.inputs else [x]
            x = outputs[layer.name] = _fake_quant(self.module.run_layer(layer, ins), layer.quant.output)
        return x.numpy()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return _batched(self._run, to_float(x), self.batch_size)


class LatentCache:
    """Latents of samples by id, computed by `stage` on first request and reused after."""

    def __init__(self, stage: FrozenStage):
        self.stage = stage
        self._rows: dict[int, int] = {}
        self._store: list[np.ndarray] = []
        self._stacked: np.ndarray | None = None
        self.computed = 0  # samples run through the stage so far

    def preload(self, ids: np.ndarray, z: np.ndarray) -> None:
        """Store latents computed elsewhere (e.g. once for a whole study, shared by many learners)."""
        base = sum(len(s) for s in self._store)
        self._store.append(np.asarray(z, np.float32))
        self._stacked = None
        for k, i in enumerate(np.asarray(ids).tolist()):
            self._rows[i] = base + k

    def __call__(self, x: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
        if ids is None:
            return self.stage(x)
        ids = np.asarray(ids)
        missing = np.array([i not in self._rows for i in ids.tolist()], dtype=bool)
        if missing.any():
            new = self.stage(x[missing])
            self.computed += len(new)
            base = sum(len(s) for s in self._store)
            self._store.append(new)
            self._stacked = None
            for k, i in enumerate(ids[missing].tolist()):
                self._rows[i] = base + k
        if self._stacked is None:  # one block (e.g. preloaded) is used as it is, not copied
            self._stacked = self._store[0] if len(self._store) == 1 else np.concatenate(self._store)
        return self._stacked[[self._rows[i] for i in ids.tolist()]]


class FloatInput:
    """Feeds a frozen stage the network's float input: (N, *input_shape) uint8 pixels are scaled to [0, 1]
    (`to_float`), float data passes unchanged; an integer stage then quantizes it with the model's input
    quantization (a post-training-quantized zoo model, calibrated on the same float input)."""

    def __init__(self, stage: FrozenStage):
        self.stage = stage
        self.spec, self.nbytes = stage.spec, stage.nbytes

    @property
    def output_quant(self):
        return self.stage.output_quant

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.stage(to_float(x))


class ImageInput(FloatInput):
    """Feeds images to a frozen stage whose input is a uint8 image, of the data's size or another (e.g. a TFLite
    MobileNet).

    Takes uint8 pixels (N, C, H, W), or floats in [0, 1] (`to_float` of pixels, as a raw replay memory returns
    them), resizes each image with PIL's default `Image.resize` (as LiteRT's reference labels were made) and
    passes the uint8 codes on."""

    def __init__(self, stage: FrozenStage, size: tuple[int, int]):
        super().__init__(stage)
        self.size = tuple(size)

    def pixels(self, x: np.ndarray) -> np.ndarray:
        from PIL import Image

        x = np.asarray(x)
        if x.dtype != np.uint8:
            x = np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
        if x.shape[2:] == self.size:
            return x
        hwc = x.transpose(0, 2, 3, 1)
        mode = "L" if hwc.shape[3] == 1 else None
        resized = [np.asarray(Image.fromarray(im[..., 0] if mode else im, mode).resize(self.size[::-1]))
                   for im in hwc]
        out = np.stack(resized)
        return (out[:, None] if mode else out.transpose(0, 3, 1, 2)).copy()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.stage(self.pixels(x))
