"""MobileNet-V1 (Howard et al. 2017) as layer records, named like the Caffe model the latent-replay papers use.

Layers: conv1, then 13 depthwise-separable blocks `convX_Y/dw` (3x3 depthwise) + `convX_Y/sep` (1x1 pointwise),
ending with conv6/dw, conv6/sep, then pool6 (global average) and fc7 (the head). Batch norm is folded into each
convolution's bias, and the activation is ReLU, as in the Caffe net (BN + ReLU after every convolution).
Padding is Caffe's symmetric pad 1 for 3x3 kernels, which gives the same shapes as TF "same" on even inputs.

At width 1.0 and 128x128 input, `conv5_4/dw` is layer index 19 and outputs 512x8x8; the final map is 1024x4x4.
"""

from __future__ import annotations

from tinycl.errors import ConfigError
from tinycl.model.spec import Layer, ModelSpec

__all__ = ["mobilenet_v1", "BLOCKS"]

# (block name, pointwise output channels at width 1.0, depthwise stride)
BLOCKS = (
    ("conv2_1", 64, 1), ("conv2_2", 128, 2),
    ("conv3_1", 128, 1), ("conv3_2", 256, 2),
    ("conv4_1", 256, 1), ("conv4_2", 512, 2),
    ("conv5_1", 512, 1), ("conv5_2", 512, 1), ("conv5_3", 512, 1), ("conv5_4", 512, 1), ("conv5_5", 512, 1),
    ("conv5_6", 1024, 2),
    ("conv6", 1024, 1),
)
_PAD1 = (1, 1, 1, 1)


def _channels(c: int, width: float) -> int:
    return max(8, int(c * width))  # the reference implementation's depth multiplier with min_depth 8


def mobilenet_v1(input_shape=(3, 128, 128), n_classes: int = 50, width: float = 1.0,
                 head_bias: bool = False) -> ModelSpec:
    """MobileNet-V1 for CHW `input_shape` (any resolution the five stride-2 stages divide, e.g. 128..224).

    width: the depth multiplier (0.25, 0.5, 0.75, 1.0). The head `fc7` has `n_classes` outputs and, as in
    the latent-replay papers' 50-way CORe50 head, no bias unless `head_bias`."""
    if len(input_shape) != 3 or input_shape[1] < 32 or input_shape[2] < 32:
        raise ConfigError(f"mobilenet_v1 needs a CHW input of at least 32x32, got {tuple(input_shape)}")
    if not 0 < width <= 4:
        raise ConfigError(f"mobilenet_v1 width must be in (0, 4], got {width}")
    layers = [Layer("conv1", "conv2d", channels=_channels(32, width), kernel=(3, 3), stride=(2, 2),
                    padding=_PAD1, activation="relu")]
    for name, channels, stride in BLOCKS:
        layers.append(Layer(f"{name}/dw", "depthwise_conv2d", kernel=(3, 3), stride=(stride, stride),
                            padding=_PAD1, activation="relu"))
        layers.append(Layer(f"{name}/sep", "conv2d", channels=_channels(channels, width), activation="relu"))
    layers.append(Layer("pool6", "global_avg_pool"))
    layers.append(Layer("fc7", "linear", channels=n_classes, bias=head_bias))
    suffix = f"{width:g}_{input_shape[1]}"
    return ModelSpec(tuple(input_shape), tuple(layers), name=f"mobilenet_v1_{suffix}")
