"""Named model descriptions built in code (TFLite files are imported by tinycl.model.tflite)."""

from __future__ import annotations

from tinycl.errors import ConfigError
from tinycl.model.mobilenet import mobilenet_v1
from tinycl.model.spec import Layer, ModelSpec

__all__ = ["ZOO", "get_model", "digits_cnn", "har_cnn", "mlp"]


def _four_conv_cnn(name: str, input_shape, n_classes: int, width: int, kernel: tuple[int, int],
                   stride: tuple[int, int]) -> ModelSpec:
    """conv1 (w) - conv2 (2w, strided) - conv3 (2w, strided) - conv4 (4w) - global average pool - fc1 (4w) - head:
    the layer names every split, growth and config of the small zoo models refer to."""
    w = max(1, round(width))
    conv = dict(op="conv2d", kernel=kernel, padding="same", activation="relu")
    return ModelSpec(tuple(input_shape), (
        Layer("conv1", channels=w, **conv),
        Layer("conv2", channels=2 * w, stride=stride, **conv),
        Layer("conv3", channels=2 * w, stride=stride, **conv),
        Layer("conv4", channels=4 * w, **conv),
        Layer("pool", "global_avg_pool"),
        Layer("fc1", "linear", channels=4 * w, activation="relu"),
        Layer("head", "linear", channels=n_classes),
    ), name=name)


def digits_cnn(input_shape=(1, 8, 8), n_classes: int = 10, width: int = 16) -> ModelSpec:
    """A small CNN for 8x8 digits: 3x3 kernels, conv2 and conv3 stride 2. Default split: after conv3 (latent
    2w x 2 x 2 = 128 values). width: channels of conv1 (rounded to an integer); the others are 2x and 4x it."""
    return _four_conv_cnn("digits_cnn", input_shape, n_classes, width, kernel=(3, 3), stride=(2, 2))


def har_cnn(input_shape=(6, 1, 128), n_classes: int = 6, width: int = 16) -> ModelSpec:
    """digits_cnn's layers for 1 x T signal windows (channels = sensor axes): 1x9 temporal kernels, conv2 and conv3
    stride 2 in time, so each output of conv4 sees 65 input samples (1.3 s of UCI HAR's 50 Hz) where digits_cnn's 3x3
    kernels on a 1-row map see 17. width as digits_cnn's."""
    return _four_conv_cnn("har_cnn", input_shape, n_classes, width, kernel=(1, 9), stride=(1, 2))


def mlp(input_shape=(64,), n_classes: int = 10, hidden: int = 64, depth: int = 2,
        width: float | None = None) -> ModelSpec:
    """Fully connected network for feature vectors (flattened if the input is not 1-D). width: hidden units
    (overrides `hidden`, the name every zoo model shares)."""
    hidden = hidden if width is None else max(1, round(width))
    layers = [Layer("flatten", "flatten")]
    layers += [Layer(f"fc{i + 1}", "linear", channels=hidden, activation="relu") for i in range(depth)]
    layers.append(Layer("head", "linear", channels=n_classes))
    return ModelSpec(tuple(input_shape), tuple(layers), name="mlp")


ZOO = {"digits_cnn": digits_cnn, "har_cnn": har_cnn, "mlp": mlp, "mobilenet_v1": mobilenet_v1}


def get_model(name: str, input_shape, n_classes: int, **kwargs) -> ModelSpec:
    if name not in ZOO:
        raise ConfigError(f"unknown model {name!r}; allowed: {', '.join(sorted(ZOO))} (or a .tflite path)")
    return ZOO[name](input_shape=input_shape, n_classes=n_classes, **kwargs)
