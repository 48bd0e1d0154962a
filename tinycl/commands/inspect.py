"""`tinycl inspect MODEL.tflite [--split LAYER]`: the layers of a quantized model, to choose the replay layer.

One row per layer: index, name, op, output shape (CHW), parameters, multiply-accumulates per sample, and the
bytes of one latent at that layer stored at 8 bits (= its number of values; at Q bits: values x Q / 8).
With --split LAYER (a name or an index) the model is cut after that layer: the frozen stage (int8 weights,
run in integers) against the adaptive stage (fp32 weights, trained on the device), and the latent between them.
--classes N shows the adaptive stage with a new N-class head in place of the file's classifier.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="layer table of a .tflite model: shapes, params, MACs, latent bytes",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, help="a quantized .tflite file")
    p.add_argument("--split", default=None, metavar="LAYER", help="last frozen layer (name or index)")
    p.add_argument("--classes", type=int, default=None, metavar="N",
                   help="with --split: replace the classifier by a new N-class head")
    p.set_defaults(handler=run)


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def _split_layer(spec, split: str) -> str:
    from tinycl.errors import ConfigError

    if split.isdigit():
        i = int(split)
        if not 0 <= i < len(spec.layers):
            raise ConfigError(f"--split index {i} is out of range; allowed: 0..{len(spec.layers) - 1} or a name")
        return spec.layers[i].name
    spec.index(split)  # raises, listing the layer names
    return split


def layer_table(qmodel) -> str:
    """The per-layer table of a QuantizedModel (see the module docstring)."""
    spec = qmodel.spec
    rows = [("#", "name", "op", "output", "params", "MACs", "latent B@8b")]
    for i, layer in enumerate(spec.layers):
        shape = spec.output_shape(layer.name)
        op = layer.op + (f"+{layer.activation}" if layer.activation != "none" else "")
        rows.append((str(i), layer.name, op, _shape(shape), f"{spec.num_params(layer):,}", f"{spec.macs(layer):,}",
                     f"{math.prod(shape):,}"))
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    left = {1, 2}
    lines = ["  ".join(c.ljust(w) if k in left else c.rjust(w) for k, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    iq = spec.input_quant
    head = (f"{spec.name}: input {_shape(spec.input_shape)} {iq.dtype}, {len(spec.layers)} layers, "
            f"{spec.num_params():,} params ({qmodel.nbytes:,} B as stored), {spec.macs():,} MACs per sample")
    return "\n".join([head, *lines])


def split_report(qmodel, layer: str, classes: int | None) -> str:
    """Frozen vs adaptive costs of cutting `qmodel` after `layer`."""
    from tinycl.model.adapt import adaptive_stage
    from tinycl.model.quantized import QuantizedModel

    spec = qmodel.spec
    n = spec.index(layer) + 1
    frozen_spec = spec.with_layers(spec.layers[:n], input_quant=spec.input_quant)
    frozen = QuantizedModel(frozen_spec, {k: v for k, v in qmodel.weights.items() if k in frozen_spec.names})
    if classes is not None:
        adaptive, _ = adaptive_stage(qmodel, layer, classes)
    else:
        adaptive = spec.with_layers(spec.layers[n:], input_shape=spec.output_shape(layer))
    latent = spec.output_shape(layer)
    values = math.prod(latent)
    a_params = adaptive.num_params()
    lines = [
        f"split after {layer!r} (layer {n - 1}): latent {_shape(latent)} = {values:,} values",
        f"  frozen   (int8, integer):  {n:3d} layers  {frozen_spec.num_params():>12,} params  "
        f"{frozen.nbytes:>12,} B  {frozen_spec.macs():>14,} MACs",
        f"  adaptive (fp32, trained):  {len(adaptive.layers):3d} layers  {a_params:>12,} params  "
        f"{4 * a_params:>12,} B  {adaptive.macs():>14,} MACs"
        + (f"  (new {classes}-class head)" if classes is not None else ""),
        f"  one latent: {values:,} B at 8 bits, {values * 4:,} B in fp32; "
        f"N latents at Q bits: N x {values:,} x Q / 8 B",
    ]
    return "\n".join(lines)


def run(args) -> int:
    from tinycl.errors import ConfigError
    from tinycl.model.tflite import load_tflite

    if args.classes is not None and args.split is None:
        raise ConfigError("--classes needs --split LAYER")
    qmodel = load_tflite(args.model)
    layer = _split_layer(qmodel.spec, args.split) if args.split is not None else None
    report = split_report(qmodel, layer, args.classes) if layer is not None else None
    print(layer_table(qmodel))
    if report is not None:
        print()
        print(report)
    return 0
