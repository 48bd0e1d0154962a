"""Speed of tinycl's bit-exact integer executor on MobileNet-V1 0.25/128 (the study's frozen stage), against
LiteRT running the same .tflite file one image at a time.

    .venv/bin/python benchmarks/intexec_speed.py --repeats 5 --out docs/tflite_speed.md

Per split layer (the frozen stage runs up to and including it): milliseconds per image, median over --repeats
runs of --images uint8 images in batches of --batch, for tinycl's "optimized" and "reference" kernel sets; and
LiteRT with its built-in optimized kernels and with its default XNNPACK delegate on the whole model (LiteRT
cannot stop at a layer). Writes a markdown report with the command and the machine to --out, and prints it.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from tinycl.model.tflite import load_tflite
from tinycl.quant.intexec import IntegerFrozenStage

MODEL = "mobilenet_v1_0.25_128_quant.tflite"
SPLITS = ("Conv2d_5_pointwise", "Conv2d_11_pointwise", "Conv2d_13_pointwise", "Predictions")


def _median_ms(fn, n_images: int, repeats: int) -> float:
    fn()  # warm up (thread pools, allocator)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times) / n_images


def _litert_ms(path: Path, x: np.ndarray, resolver: str, repeats: int) -> float:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        it = Interpreter(model_path=str(path), num_threads=torch.get_num_threads(),
                         experimental_op_resolver_type=getattr(OpResolverType, resolver))
    it.allocate_tensors()
    index = it.get_input_details()[0]["index"]
    nhwc = x.transpose(0, 2, 3, 1)

    def run():
        for img in nhwc:
            it.set_tensor(index, img[None])
            it.invoke()

    return _median_ms(run, len(x), repeats)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "models")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    path = args.models / MODEL
    q = load_tflite(path)
    x = np.random.default_rng(0).integers(0, 256, (args.images, 3, 128, 128)).astype(np.uint8)
    rows = []
    for split in SPLITS:
        layer = q.spec.index(split)
        macs = q.spec.with_layers(q.spec.layers[: layer + 1]).macs()
        times = {}
        for kernels in ("optimized", "reference"):
            stage = IntegerFrozenStage(q, upto=split, batch_size=args.batch, kernels=kernels)
            times[kernels] = _median_ms(lambda s=stage: s.codes(x), len(x), args.repeats)
        rows.append((f"{split} ({layer})", macs, times["optimized"], times["reference"]))
    builtin, xnnpack = (_litert_ms(path, x, r, args.repeats) for r in ("BUILTIN_WITHOUT_DEFAULT_DELEGATES", "AUTO"))

    command = "python benchmarks/intexec_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# Integer executor speed (MobileNet-V1 0.25/128)", "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores ({torch.get_num_threads()} torch threads), "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}, torch {torch.__version__}, "
        f"NumPy {np.__version__}; load average at the end {os.getloadavg()[0]:.1f} (the cores are shared).  ",
        f"{args.images} uint8 images, batches of {args.batch}, median of {args.repeats} runs.", "",
        "| frozen stage up to (index) | MACs / image | tinycl optimized ms/image | tinycl reference ms/image |",
        "| --- | ---: | ---: | ---: |",
        *(f"| {name} | {macs:,} | {a:.2f} | {b:.2f} |" for name, macs, a, b in rows),
        "",
        f"LiteRT on the whole model, one image per invoke, same threads: built-in kernels {builtin:.2f} ms/image, "
        f"default (XNNPACK delegate) {xnnpack:.2f} ms/image.",
        f"Ratios, tinycl optimized on the whole model: {rows[-1][2] / builtin:.1f}x LiteRT built-in, "
        f"{rows[-1][2] / xnnpack:.0f}x LiteRT XNNPACK.",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
