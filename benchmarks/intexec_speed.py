"""Speed of tinycl's bit-exact integer executor (the batched frozen pass) against LiteRT on the same .tflite files,
per image, on one thread and on two: MobileNet-V1 0.25/128 (the study's model; also stopped at three split
layers) and the 1.0/224 backbone (the embedding extractor).

    .venv/bin/python benchmarks/intexec_speed.py --repeats 5 --out docs/tflite_speed.md

tinycl: `IntegerFrozenStage.codes` on --images uint8 images (its default batch size), "optimized" and "reference"
kernel sets. LiteRT: one image per invoke, its built-in kernels (BUILTIN_WITHOUT_DEFAULT_DELEGATES) and its
default path (AUTO: the XNNPACK delegate), whole model (LiteRT cannot stop at a layer). Medians over --repeats.
Writes a markdown report with the command, the machine and its load to --out, and prints it.
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

MODELS = {"mobilenet_v1_0.25_128_quant.tflite": ("Conv2d_5_pointwise", "Conv2d_11_pointwise", "Conv2d_13_pointwise",
                                                 None),
          "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite": (None,)}


def _median_ms(fn, n_images: int, repeats: int) -> float:
    fn()  # warm up (thread pools, allocator, oneDNN's kernel choice)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times) / n_images


def _litert_ms(path: Path, x: np.ndarray, resolver: str, threads: int, repeats: int) -> float:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        it = Interpreter(model_path=str(path), num_threads=threads,
                         experimental_op_resolver_type=getattr(OpResolverType, resolver))
    it.allocate_tensors()
    index = it.get_input_details()[0]["index"]
    nhwc = x.transpose(0, 2, 3, 1)

    def run():
        for img in nhwc:
            it.set_tensor(index, img[None])
            it.invoke()

    return _median_ms(run, len(x), repeats)


def _rows(path: Path, threads: int, args) -> list[str]:
    q = load_tflite(path)
    size = q.spec.input_shape[1]
    x = np.random.default_rng(0).integers(0, 256, (args.images, 3, size, size)).astype(np.uint8)
    torch.set_num_threads(threads)
    builtin = _litert_ms(path, x, "BUILTIN_WITHOUT_DEFAULT_DELEGATES", threads, args.repeats)
    xnnpack = _litert_ms(path, x, "AUTO", threads, args.repeats)
    rows = []
    for split in MODELS[path.name]:
        stage = {k: IntegerFrozenStage(q, upto=split, kernels=k) for k in ("optimized", "reference")}
        t = {k: _median_ms(lambda s=s: s.codes(x), len(x), args.repeats) for k, s in stage.items()}
        name = split or f"whole model ({len(q.spec.layers)} layers)"
        macs = stage["optimized"].spec.macs()
        ratios = (f"{t['optimized'] / xnnpack:.2f}x / {t['optimized'] / builtin:.2f}x" if split is None else "")
        rows.append(f"| {path.stem} | {threads} | {name} | {macs / 1e6:.1f} | {stage['optimized'].batch_size} | "
                    f"{t['optimized']:.2f} | {t['reference']:.2f} | {builtin:.2f} | {xnnpack:.2f} | {ratios} |")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "models")
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    load_before = os.getloadavg()[0]
    rows = [row for threads in map(int, args.threads.split(",")) for name in MODELS
            for row in _rows(args.models / name, threads, args)]
    command = "python benchmarks/intexec_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# Integer executor speed", "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python "
        f"{platform.python_version()}, torch {torch.__version__}, NumPy {np.__version__}; load average "
        f"{load_before:.1f} before and {os.getloadavg()[0]:.1f} after (the cores are shared with other jobs).  ",
        f"{args.images} random uint8 images, medians of {args.repeats} runs, milliseconds per image. tinycl runs "
        f"the images in batches (column `batch`, its default); LiteRT one image per invoke.", "",
        "| model | threads | tinycl frozen stage up to | MMACs / image | batch | tinycl optimized | tinycl reference "
        "| LiteRT built-in | LiteRT XNNPACK | tinycl / XNNPACK, / built-in |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
