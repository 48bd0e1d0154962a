"""Named model descriptions built in code (TFLite files are imported by tinycl.model.tflite)."""

from __future__ import annotations

from tinycl.errors import ConfigError
from tinycl.model.mobilenet import mobilenet_v1
from tinycl.model.spec import Layer, ModelSpec

__all__ = ["ZOO", "get_model", "digits_cnn", "mlp"]


def digits_cnn(input_shape=(1, 8, 8), n_classes: int = 10, width: int = 16) -> ModelSpec:
    """A small CNN for 8x8 digits. Default split: after conv3 (latent 2w x 2 x 2 = 128 values).
    width: channels of conv1 (rounded to an integer); the others are 2x and 4x it."""
    w = max(1, round(width))
    return ModelSpec(tuple(input_shape), (
        Layer("conv1", "conv2d", channels=w, kernel=(3, 3), padding="same", activation="relu"),
        Layer("conv2", "conv2d", channels=2 * w, kernel=(3, 3), stride=(2, 2), padding="same", activation="relu"),
        Layer("conv3", "conv2d", channels=2 * w, kernel=(3, 3), stride=(2, 2), padding="same", activation="relu"),
        Layer("conv4", "conv2d", channels=4 * w, kernel=(3, 3), padding="same", activation="relu"),
        Layer("pool", "global_avg_pool"),
        Layer("fc1", "linear", channels=4 * w, activation="relu"),
        Layer("head", "linear", channels=n_classes),
    ), name="digits_cnn")


def mlp(input_shape=(64,), n_classes: int = 10, hidden: int = 64, depth: int = 2,
        width: float | None = None) -> ModelSpec:
    """Fully connected network for feature vectors (flattened if the input is not 1-D). width: hidden units
    (overrides `hidden`, the name every zoo model shares)."""
    hidden = hidden if width is None else max(1, round(width))
    layers = [Layer("flatten", "flatten")]
    layers += [Layer(f"fc{i + 1}", "linear", channels=hidden, activation="relu") for i in range(depth)]
    layers.append(Layer("head", "linear", channels=n_classes))
    return ModelSpec(tuple(input_shape), tuple(layers), name="mlp")


ZOO = {"digits_cnn": digits_cnn, "mlp": mlp, "mobilenet_v1": mobilenet_v1}


def get_model(name: str, input_shape, n_classes: int, **kwargs) -> ModelSpec:
    if name not in ZOO:
        raise ConfigError(f"unknown model {name!r}; allowed: {', '.join(sorted(ZOO))} (or a .tflite path)")
    return ZOO[name](input_shape=input_shape, n_classes=n_classes, **kwargs)
