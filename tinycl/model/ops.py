"""The op table: what each op of the layer records is, defined once."""

from __future__ import annotations

import math

__all__ = ["pads"]


def pads(layer, h: int, w: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zero padding of a conv or pool over an h x w input."""
    if layer.padding == "valid":
        return (0, 0, 0, 0)
    if layer.padding == "same":
        out = []
        for size, k, s in ((h, layer.kernel[0], layer.stride[0]), (w, layer.kernel[1], layer.stride[1])):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            out += [total // 2, total - total // 2]
        return tuple(out)
    return tuple(layer.padding)
