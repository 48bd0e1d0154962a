"""Speed of the C training kernels on the MobileNet-V1 adaptive stage's shapes (conv5_4/dw split: 512x8x8 latent
up to the 50-way head), one sample at a time, against torch on one thread; and instructions per MAC of each
kernel counted by valgrind's callgrind (deterministic; hardware counters are not available on these machines).

    .venv/bin/python benchmarks/kernels.py --repeats 15 --callgrind --out docs/kernels_benchmark.md

Writes a markdown report (medians over the repeats, the machine, the command) to --out, and prints it.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tinycl.device.arena import LayerPlan, training_schedule
from tinycl.device.trainer import DeviceTrainer
from tinycl.model.build import build
from tinycl.model.mobilenet import mobilenet_v1
from tinycl.model.spec import ModelSpec
from tinycl.model.split import Split
from tinycl.runtime import CSRC, OPT_FLAGS, WARNING_FLAGS, conv_shape, ffi, load_library

WEIGHTED = ("conv2d", "depthwise", "pointwise", "linear")
PHASES = ("forward", "weight_grad", "input_grad")


def adaptive_stage() -> ModelSpec:
    return Split.at(mobilenet_v1(), "conv5_4/dw").adaptive_spec


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm up caches and lazy initialisation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fp(a: np.ndarray):
    """A float* view of a float32 array for the unchecked library (`lib.raw`): made once, outside the timed
    calls, so the timings measure the kernels and not the argument checks."""
    return ffi().from_buffer("float[]", a)


def kernels_of(lib, spec: ModelSpec, p: LayerPlan, rng: np.random.Generator):
    """{phase: (C call, torch call)} for one layer on one sample."""
    w_shape = spec.weight_shapes(p.layer)["weight"]
    x = rng.standard_normal(p.in_shape).astype(np.float32)
    dy = rng.standard_normal(p.out_shape).astype(np.float32)
    w = (rng.standard_normal(w_shape) * 0.05).astype(np.float32)
    b = np.zeros(w_shape[0], np.float32) if p.layer.bias else None
    y, dx, dw = np.empty_like(dy), np.empty_like(x), np.zeros_like(w)
    db = None if b is None else np.zeros_like(b)
    tx, tdy, tw = torch.from_numpy(x)[None], torch.from_numpy(dy)[None], torch.from_numpy(w)
    tb = None if b is None else torch.from_numpy(b)
    raw, null = lib.raw, ffi().NULL
    vx, vdy, vw, vy, vdx, vdw = map(fp, (x, dy, w, y, dx, dw))
    vb, vdb = (null, null) if b is None else (fp(b), fp(db))
    if p.kernel == "linear":
        n_in, n_out = x.size, w_shape[0]
        c = {"forward": lambda: raw.tcl_linear_forward(n_in, n_out, vx, vw, vb, vy),
             "weight_grad": lambda: raw.tcl_linear_weight_grad(n_in, n_out, vx, vdy, vdw, null),
             "input_grad": lambda: raw.tcl_linear_input_grad(n_in, n_out, vdy, vw, vdx)}
        tx2 = tx.reshape(1, -1)
        t = {"forward": lambda: F.linear(tx2, tw, tb), "weight_grad": lambda: tdy.T @ tx2,
             "input_grad": lambda: tdy @ tw}
        return c, t
    s = conv_shape(spec, p.layer)
    top, bottom, left, right = p.pads
    assert top == bottom and left == right, "the benchmark passes symmetric padding to torch"
    groups = x.shape[0] if p.kernel == "depthwise" else 1
    stride, padding = list(p.layer.stride), [top, left]
    fn = [getattr(raw, f"tcl_{p.kernel}_{phase}") for phase in PHASES]
    c = {"forward": lambda: fn[0](s, vx, vw, vb, vy),
         "weight_grad": lambda: fn[1](s, vx, vdy, vdw, vdb),
         "input_grad": lambda: fn[2](s, vdy, vw, vdx)}

    def backward(mask):  # what autograd calls for a convolution's backward
        return lambda: torch.ops.aten.convolution_backward(tdy, tx, tw, None if tb is None else [w_shape[0]], stride,
                                                          padding, [1, 1], False, [0, 0], groups, mask)

    t = {"forward": lambda: F.conv2d(tx, tw, tb, stride, padding, 1, groups),
         "weight_grad": backward([False, True, tb is not None]), "input_grad": backward([True, False, False])}
    return c, t


def kernel_rows(repeats: int) -> list[dict]:
    lib, spec = load_library(), adaptive_stage()
    rng = np.random.default_rng(0)
    rows = []
    for p in training_schedule(spec).layers:
        if p.kernel not in WEIGHTED:
            continue
        c, t = kernels_of(lib, spec, p, rng)
        for phase in PHASES:
            if phase == "input_grad" and not p.input_grad:
                continue  # the first trainable layer needs no input gradient
            rows.append({"layer": p.layer.name, "kernel": p.kernel, "phase": phase, "macs": spec.macs(p.layer),
                         "c": median_seconds(c[phase], repeats), "torch": median_seconds(t[phase], repeats)})
    return rows


def step_rows(repeats: int, batch: int) -> list[dict]:
    """One SGD step (momentum 0.9, weight decay 5e-4) per sample: device mode against torch."""
    spec = adaptive_stage()
    module = build(spec, generator=torch.Generator().manual_seed(0))
    twin = copy.deepcopy(module)
    dev = DeviceTrainer(twin, lr=1e-3, momentum=0.9, weight_decay=5e-4)
    opt = torch.optim.SGD(module.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(1)
    x = np.maximum(rng.standard_normal((batch, *spec.input_shape)), 0).astype(np.float32)
    y = rng.integers(0, 50, batch)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def torch_step(n):
        def run():
            opt.zero_grad()
            F.cross_entropy(module(tx[:n]), ty[:n]).backward()
            opt.step()
        return run

    reps = max(3, repeats // 3)
    return [{"what": f"device mode (C), batch {batch}", "s": median_seconds(lambda: dev.step(x, y), reps) / batch},
            {"what": f"torch, batch {batch}", "s": median_seconds(torch_step(batch), reps) / batch},
            {"what": "torch, batch 1", "s": median_seconds(torch_step(1), repeats)}], dev.plan


def callgrind_rows() -> dict[tuple[str, str], int]:
    """{(layer, phase): instructions} of each kernel call, from callgrind's inclusive counts."""
    if shutil.which("valgrind") is None:
        print("valgrind not found: skipping instruction counts", file=sys.stderr)
        return {}
    spec = adaptive_stage()
    out: dict[tuple[str, str], int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        driver = Path(tmp) / "driver"
        cc = os.environ.get("CC", "cc")
        c_files = [str(f) for f in sorted(CSRC.glob("*.c"))]
        subprocess.run([cc, *WARNING_FLAGS, *OPT_FLAGS, "-g", f"-I{CSRC}", "-o", str(driver),
                        str(Path(__file__).parent / "kernels_driver.c"), *c_files, "-lm"], check=True)
        for p in training_schedule(spec).layers:
            if p.kernel not in WEIGHTED:
                continue
            s = conv_shape(spec, p.layer)
            args = [str(getattr(s, f)) for f, _ in ffi().typeof("tcl_conv_shape").fields]
            cg = Path(tmp) / "cg.out"
            subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={cg}", str(driver), p.kernel,
                            *args], check=True, capture_output=True)
            report = subprocess.run(["callgrind_annotate", "--inclusive=yes", str(cg)], check=True,
                                    capture_output=True, text=True).stdout
            for phase in PHASES:
                m = re.search(rf"^\s*([\d,]+) \([^)]*\)\s+\S*:tcl_{p.kernel}_{phase}\b", report, re.M)
                if m:
                    out[(p.layer.name, phase)] = int(m.group(1).replace(",", ""))
    return out


def machine() -> str:
    model = "unknown CPU"
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cc = subprocess.run([os.environ.get("CC", "cc"), "--version"], capture_output=True, text=True).stdout.splitlines()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (f"{model}, {os.cpu_count()} cores, {platform.machine()}, {platform.system()} (load average {load}: the "
            f"machine is shared); {cc[0] if cc else 'cc'} with {' '.join(OPT_FLAGS)}; torch {torch.__version__} on "
            f"1 thread")


def report(rows, steps, plan, counts, command: str) -> str:
    lines = ["# C kernel benchmark: MobileNet-V1 1.0/128 adaptive stage (split at conv5_4/dw)", "",
             f"Command: `{command}`", "", f"Machine: {machine()}.", "",
             "Per kernel call on one sample (CHW), median time; GMAC/s = forward MACs of the layer / time (the weight "
             "and input gradients have the same MAC count). C / torch time > 1 means torch is faster. Instr/MAC: "
             "instructions executed per MAC (callgrind, whole kernel call).", "",
             "| layer | kernel | phase | MMAC | C ms | torch ms | C GMAC/s | torch GMAC/s | C / torch time "
             "| instr/MAC |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        ir = counts.get((r["layer"], r["phase"]))
        per_mac = "" if ir is None else f"{ir / r['macs']:.2f}"
        lines.append(f"| {r['layer']} | {r['kernel']} | {r['phase']} | {r['macs'] / 1e6:.2f} | {r['c'] * 1e3:.3f} | "
                     f"{r['torch'] * 1e3:.3f} | {r['macs'] / r['c'] / 1e9:.2f} | {r['macs'] / r['torch'] / 1e9:.2f} | "
                     f"{r['c'] / r['torch']:.1f} | {per_mac} |")
    total_c = sum(r["c"] for r in rows)
    total_t = sum(r["torch"] for r in rows)
    lines += ["", f"All weighted kernels of one sample: C {total_c * 1e3:.1f} ms, torch {total_t * 1e3:.1f} ms "
              f"(ratio {total_c / total_t:.1f}).", "", "One SGD training step (softmax cross-entropy, momentum 0.9, "
              "weight decay 5e-4), time per sample:", "", "| run | ms per sample |", "| --- | ---: |"]
    lines += [f"| {s['what']} | {s['s'] * 1e3:.2f} |" for s in steps]
    lines += ["", f"Device-mode arena of this step: {plan.report()}.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per kernel (the median is reported)")
    parser.add_argument("--batch", type=int, default=8, help="mini-batch of the training-step comparison")
    parser.add_argument("--callgrind", action="store_true", help="also count instructions per MAC with callgrind")
    parser.add_argument("--out", type=Path, help="write the markdown report here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = kernel_rows(args.repeats)
    steps, plan = step_rows(args.repeats, args.batch)
    counts = callgrind_rows() if args.callgrind else {}
    command = "python benchmarks/kernels.py " + " ".join(sys.argv[1:])
    text = report(rows, steps, plan, counts, command)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
