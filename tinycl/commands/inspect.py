"""`tinycl inspect MODEL.tflite [--split LAYER]`: the layers of a quantized model, to choose the replay layer.

One row per layer: index, name, op, output shape (CHW), parameters, multiply-accumulates per sample, and the
bytes of one latent at that layer stored at 8 bits (= its number of values; at Q bits: values x Q / 8), and
whether a split after it is valid ("yes": its output is the only tensor crossing the cut; in a residual block a
skip connection crosses it too).
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
    p.add_argument("--split", default=None, metavar="LAYER", type=lambda s: int(s) if s.isdigit() else s,
                   help="last frozen layer (name or index)")
    p.add_argument("--classes", type=int, default=None, metavar="N",
                   help="with --split: replace the classifier by a new N-class head")
    p.set_defaults(handler=run)


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def layer_table(qmodel) -> str:
    """The per-layer table of a QuantizedModel (see the module docstring)."""
    from tinycl.model.split import valid_points

    spec = qmodel.spec
    valid = set(valid_points(spec))
    rows = [("#", "name", "op", "output", "params", "MACs", "latent B@8b", "split")]
    for i, layer in enumerate(spec.layers):
        shape = spec.output_shape(layer.name)
        op = layer.op + (f"+{layer.activation}" if layer.activation != "none" else "")
        rows.append((str(i), layer.name, op, _shape(shape), f"{spec.num_params(layer):,}", f"{spec.macs(layer):,}",
                     f"{math.prod(shape):,}", "yes" if i in valid else "no"))
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    left = {1, 2}
    lines = ["  ".join(c.ljust(w) if k in left else c.rjust(w) for k, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    iq = spec.input_quant
    head = (f"{spec.name}: input {_shape(spec.input_shape)} {iq.dtype}, {len(spec.layers)} layers, "
            f"{spec.num_params():,} params ({qmodel.nbytes:,} B as stored), {spec.macs():,} MACs per sample")
    return "\n".join([head, *lines])


def split_report(qmodel, layer: str | int, classes: int | None) -> str:
    """Frozen vs adaptive costs of cutting `qmodel` after `layer` (a name or an index)."""
    from tinycl.model.adapt import adaptive_stage
    from tinycl.model.split import Split

    split = Split.at(qmodel.spec, layer)
    frozen, frozen_spec, n, layer = split.frozen_model(qmodel), split.frozen_spec, split.index, split.layer
    adaptive = adaptive_stage(qmodel, layer, classes)[0] if classes is not None else split.adaptive_spec
    latent = split.latent_shape
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
    report = split_report(qmodel, args.split, args.classes) if args.split is not None else None
    print(layer_table(qmodel))
    if report is not None:
        print()
        print(report)
    return 0
