"""Speed of tinycl's bit-exact integer executor (the batched frozen pass) against LiteRT on the same .tflite files,
per image, on one thread and on two: MobileNet-V1 0.25/128 (the study's model; also stopped at three split
layers) and the 1.0/224 backbone (the embedding extractor).

    .venv/bin/python benchmarks/intexec_speed.py --repeats 5 --out docs/tflite_speed.md

tinycl: `IntegerFrozenStage.codes` on --images uint8 images (its default batch size), "optimized" and "reference"
kernel sets. LiteRT: one image per invoke, its built-in kernels (BUILTIN_WITHOUT_DEFAULT_DELEGATES) and its
default path (AUTO: the XNNPACK delegate), whole model (LiteRT cannot stop at a layer). Medians over --repeats,
timed round-robin (one run of every contender per repeat) so that the machine's load, which other jobs change,
weighs on all of them alike. Also the same bits on the torch path (`fast=False`, without the C runtime's kernels),
and where one thread's time goes by kind of layer. Writes a markdown report with the command, the machine and its
load to --out, and prints it.
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


def _interleaved_ms(runs: dict, n_images: int, repeats: int) -> dict:
    """{name: median ms per image} of callables `runs`, timed round-robin (one run of each per repeat), so that a
    change in the machine's load during the measurement touches every contender alike and the ratios stay fair."""
    for fn in runs.values():
        fn()  # warm up (thread pools, allocator, oneDNN's kernel choice)
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: 1000 * statistics.median(ts) / n_images for name, ts in times.items()}


def _litert_run(path: Path, x: np.ndarray, resolver: str, threads: int):
    """A callable that runs LiteRT on every image of x, one image per invoke."""
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

    return run


def _rows(path: Path, threads: int, args) -> list[str]:
    q = load_tflite(path)
    size = q.spec.input_shape[1]
    x = np.random.default_rng(0).integers(0, 256, (args.images, 3, size, size)).astype(np.uint8)
    torch.set_num_threads(threads)
    runs = {"builtin": _litert_run(path, x, "BUILTIN_WITHOUT_DEFAULT_DELEGATES", threads),
            "xnnpack": _litert_run(path, x, "AUTO", threads)}
    stages = {}
    for split in MODELS[path.name]:
        for k in ("optimized", "reference"):
            stages[split, k] = stage = IntegerFrozenStage(q, upto=split, kernels=k)
            runs[split, k] = lambda s=stage: s.codes(x)
    torch_path = IntegerFrozenStage(q, kernels="optimized", fast=False)
    runs["torch"] = lambda: torch_path.codes(x)
    t = _interleaved_ms(runs, len(x), args.repeats)
    builtin, xnnpack = t["builtin"], t["xnnpack"]
    rows = []
    for split in MODELS[path.name]:
        opt, ref = t[split, "optimized"], t[split, "reference"]
        name = split or f"whole model ({len(q.spec.layers)} layers)"
        stage = stages[split, "optimized"]
        whole = split is None
        ratios = f"{opt / xnnpack:.2f}x / {opt / builtin:.2f}x" if whole else ""
        rows.append(f"| {path.stem} | {threads} | {name} | {stage.spec.macs() / 1e6:.1f} | {stage.batch_size} | "
                    f"{opt:.2f} | {ref:.2f} | {t['torch']:.2f} | {builtin:.2f} | {xnnpack:.2f} | {ratios} |"
                    if whole else
                    f"| {path.stem} | {threads} | {name} | {stage.spec.macs() / 1e6:.1f} | {stage.batch_size} | "
                    f"{opt:.2f} | {ref:.2f} |  | {builtin:.2f} | {xnnpack:.2f} | {ratios} |")
    return rows


def _kind(layer) -> str:
    if layer.op == "conv2d":
        return "conv 1x1" if layer.kernel == (1, 1) else "conv kxk"
    return "depthwise" if layer.op == "depthwise_conv2d" else "other"


KINDS = ("conv 1x1", "conv kxk", "depthwise", "other")


def _breakdown(path: Path, args) -> list[str]:
    """Where the time of one thread goes: ms per image in each kind of layer (medians over --repeats passes of
    the --images, round-robin), on the fast path and on the torch path (`fast=False`)."""
    q = load_tflite(path)
    size = q.spec.input_shape[1]
    x = np.random.default_rng(0).integers(0, 256, (args.images, 3, size, size)).astype(np.uint8)
    torch.set_num_threads(1)
    stages = {"fast (C kernels)": IntegerFrozenStage(q), "torch path": IntegerFrozenStage(q, fast=False)}
    spent = {name: {kind: [] for kind in (*KINDS, "whole")} for name in stages}
    current: dict[str, float] = {}
    for stage in stages.values():
        for layer in stage.spec.layers:
            kernel, kind = stage.model.kernels[layer.name], _kind(layer)

            def timed(ins, kernel=kernel, kind=kind):
                start = time.perf_counter()
                out = kernel(ins)
                current[kind] = current.get(kind, 0.0) + time.perf_counter() - start
                return out

            stage.model.kernels[layer.name] = timed
        stage.codes(x)  # warm up
    for _ in range(args.repeats):
        for name, stage in stages.items():
            current.clear()
            start = time.perf_counter()
            stage.codes(x)
            spent[name]["whole"].append(time.perf_counter() - start)
            for kind in KINDS:
                spent[name][kind].append(current.get(kind, 0.0))
    ms = {name: {k: 1000 * statistics.median(v) / len(x) for k, v in kinds.items()} for name, kinds in spent.items()}
    return [f"| {path.stem} | {name} | " + " | ".join(f"{ms[name][k]:.2f}" for k in (*KINDS, "whole")) + " |"
            for name in stages]


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
    kinds = [row for name in MODELS for row in _breakdown(args.models / name, args)]
    command = "python benchmarks/intexec_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# Integer executor speed", "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python "
        f"{platform.python_version()}, torch {torch.__version__}, NumPy {np.__version__}; load average "
        f"{load_before:.1f} before and {os.getloadavg()[0]:.1f} after (the cores are shared with other jobs).  ",
        f"{args.images} random uint8 images, medians of {args.repeats} runs timed round-robin (one run of every "
        f"contender per round), milliseconds per image. tinycl runs the images in batches (column `batch`, its "
        f"default); LiteRT one image per invoke.", "",
        "| model | threads | tinycl frozen stage up to | MMACs / image | batch | tinycl optimized | tinycl reference "
        "| tinycl torch path | LiteRT built-in | LiteRT XNNPACK | tinycl / XNNPACK, / built-in |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows, "",
        "`tinycl torch path`: the same bits without the C runtime's kernels (`IntegerFrozenStage(..., fast=False)`: "
        "torch convolutions, float64 requantization), whole model, optimized kernel set.", "",
        "## Where the time goes", "",
        "One thread, whole model, optimized kernel set: milliseconds per image spent in each kind of layer, timed "
        "inside the pass (medians of --repeats passes, the two paths round-robin, measured after the table above: "
        "the load differs, compare within this table). 'conv' includes its matrix product, im2col and "
        "requantization, 'depthwise' its requantization; 'other': pooling, reshape, softmax; the rest of 'whole' "
        "is the walk between layers and the batching.", "",
        "| model | path | conv 1x1 | conv kxk | depthwise | other | whole |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        *kinds,
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
