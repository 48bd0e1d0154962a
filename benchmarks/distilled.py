"""Distilled replay and model size adaption (Rüb et al. 2024) against the baselines, on four class-incremental
benchmarks, several seeds. Writes docs/results/distilled.json (every run), distilled.md's table (stdout and
--table) and one accuracy plot per benchmark.

    .venv/bin/python benchmarks/distilled.py [--benchmarks split-mnist,split-cifar10,har-ci,kws-ci] [--seeds 0,1,2]
        [--data-root ../shared/data] [--out docs/results]
    .venv/bin/python benchmarks/distilled.py --report          # tables and plots from docs/results/distilled.json
    .venv/bin/python benchmarks/distilled.py --sweep har-ci    # accuracy against distillation steps

Rows (one frozen int8 stage per seed, shared by every row; the adaptive stage starts from the same weights):
  naive                    fine-tuning on the new data only (lower bound)
  random replay            latent replay, class-balanced random samples, 8-bit, as many bytes as distilled replay's
                           (LatentReplay: Pellegrini et al.'s mini-batch mix, few replayed samples per batch)
  random replay, balanced  distilled replay's learner with 0 distillation steps: the kept samples are random real
                           ones, same count, same bytes, same class-balanced mix (isolates distillation)
  distilled                distilled replay (1% of each class's samples, distilled in latent space, 8-bit)
  distilled + growth       the same, widening the adaptive stage (Net2WiderNet) while held accuracy < target
  fixed large + distilled  the adaptive stage widened to the growth cap (max_factor) before the first experience
  joint                    every latent kept, trained on all of them (upper bound)
Training FLOPs count forward + backward of the adaptive stage for every sample pass (tinycl.flops); the
distillation's FLOPs are reported beside them, not inside.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tinycl.config import DataConfig, MemoryConfig, ModelConfig, RunConfig, TrainConfig
from tinycl.distill import DistillConfig
from tinycl.growth import GrowthConfig
from tinycl.io import atomic_write_json
from tinycl.memory import ReplayMemory
from tinycl.plots import plot_accuracy
from tinycl.runner import prepare, run_experiment

# Subsets keep a run inside the 2-core budget; "1%" is 1% of the training data each run uses.
TRAIN = TrainConfig(epochs=4, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4)
DISTILL = DistillConfig(space="latent", fraction=0.01, iterations=200, real_batch=128, embedder="model")
GROWTH = GrowthConfig(policy="on_demand", target=0.9, loss_target=0.2, plateau=0.1, factor=1.5, max_factor=2.0,
                      retrain_epochs=1)
MODEL = ModelConfig(arch="digits_cnn", split="conv3", frozen="int8", pretrain_epochs=10, pretrain_lr=0.05)
# the real pre-deployments of docs/data.md: whole-model training, other subjects / speakers, an ImageNet backbone
WHOLE = {"split": "input", "pretrain_epochs": 0}
HOLDOUT = {"pretrain_data": "holdout", "pretrain_share": 0.25}
MOBILENET = {"arch": "../shared/models/mobilenet_v1_0.25_128_quant.tflite", "split": "Conv2d_10_depthwise"}


def _base(name: str, protocol: str, n_train: int | None, n_test: int | None, train: TrainConfig = TRAIN,
          **model) -> RunConfig:
    return RunConfig(strategy="distilled_replay",
                     data=DataConfig(name=name, protocol=protocol, n_train=n_train, n_test=n_test),
                     model=dataclasses.replace(MODEL, **model), memory=MemoryConfig(bits=8, policy="class_balanced"),
                     train=train, distill=DISTILL, growth=GROWTH)


BENCHMARKS = {
    "split-mnist": _base("mnist", "split-mnist", None, None, train=dataclasses.replace(TRAIN, lr=0.02), **WHOLE),
    "split-cifar10": _base("cifar10", "split-cifar10", None, None, train=dataclasses.replace(TRAIN, lr=0.001),
                           **MOBILENET),
    "har-ci": _base("har", "har-ci", None, None, **HOLDOUT),
    "kws-ci": _base("speech_commands", "kws-ci", None, None, train=dataclasses.replace(TRAIN, batch_size=32),
                    **HOLDOUT),
}
ROWS = ("naive", "random replay", "random replay, balanced", "distilled", "distilled + growth",
        "fixed large + distilled", "joint")


BASELINES = {"naive": "naive", "joint": "joint", "random replay": "latent_replay"}  # row -> strategy


def _row_config(cfg: RunConfig, row: str) -> RunConfig:
    if row == "distilled":
        return dataclasses.replace(cfg, strategy="distilled_replay", growth=GrowthConfig())
    if row == "random replay, balanced":  # distilled replay's learner, its sets left at their random init
        return dataclasses.replace(cfg, strategy="distilled_replay", growth=GrowthConfig(),
                                   distill=dataclasses.replace(cfg.distill, iterations=0))
    if row == "distilled + growth":
        return dataclasses.replace(cfg, strategy="distilled_replay")
    if row == "fixed large + distilled":
        return dataclasses.replace(cfg, strategy="distilled_replay",
                                   growth=GrowthConfig(start_factor=cfg.growth.max_factor))
    return dataclasses.replace(cfg, strategy=BASELINES[row])


def _capacity(cfg: RunConfig, shape, budget: int, n_classes: int) -> int:
    """The most latents a class-balanced 8-bit memory holds in `budget` bytes (its own bytes counted)."""
    return ReplayMemory.capacity_for(budget, shape, cfg.memory.bits, n_classes=n_classes)


RESULT_KEYS = ("final_accuracy", "average_incremental_accuracy", "forgetting", "backward_transfer",
               "final_mean_task_accuracy", "accuracy_after_each", "replay_bytes", "seconds")


def run_row(cfg: RunConfig, setup, row: str, replay_budget: int | None) -> dict:
    """One row through the runner's loop (tinycl.runner.run_experiment): its metrics, FLOPs from the learner's
    own log. seconds: training only (partial_fit), not evaluation."""
    rcfg = _row_config(cfg, row)
    if row == "random replay":
        capacity = _capacity(rcfg, setup.split.latent_shape, replay_budget, setup.scenario.n_classes)
        rcfg = dataclasses.replace(rcfg, memory=dataclasses.replace(rcfg.memory, capacity=capacity))
    m = run_experiment(rcfg, setup=setup)
    f = m["flops"]
    out = {"row": row, **{k: m[k] for k in RESULT_KEYS if k in m},
           "inference_flops": f["fixed_model"]["inference_flops"], "params": f["fixed_model"]["params"],
           "train_flops": f["train_flops"], "distill_flops": f["distill_flops"], "growth": m["growth"],
           "synthetic": sum(m["synthetic_per_class"].values()),
           "train_flops_per_experience": [e["train_flops"] for e in f["per_experience"]]}
    if row == "random replay":
        out["capacity"] = capacity
    return out


def run_benchmark(name: str, seeds: list[int], data_root: str | None, log=print) -> list[dict]:
    runs = []
    for seed in seeds:
        cfg = dataclasses.replace(BENCHMARKS[name], seed=seed)
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=data_root))
        t0 = time.perf_counter()
        setup = prepare(cfg)
        n_train = sum(len(e) for e in setup.scenario.train)
        log(f"{name} seed {seed}: prepared in {time.perf_counter() - t0:.0f} s ({n_train} training samples)")
        budget = None
        order = ["distilled"] + [r for r in ROWS if r != "distilled"]  # distilled first: it sets the byte budget
        results = {}
        for row in order:
            r = run_row(cfg, setup, row, budget)
            if row == "distilled":
                budget = r["replay_bytes"]
            r.update(benchmark=name, seed=seed, n_train=n_train)
            results[row] = r
            log(f"  {row:<24} acc {100 * r['final_accuracy']:5.1f}%  forgetting {100 * r['forgetting']:5.1f}%  "
                f"replay {r['replay_bytes']:>8,} B  train {r['train_flops'] / 1e9:8.2f} GFLOP  {r['seconds']:.0f} s")
        runs += [results[row] for row in ROWS]
    return runs


# -- reporting -------------------------------------------------------------------------------------------------
def _ms(values) -> str:
    v = np.asarray(values, dtype=float)
    return f"{100 * v.mean():.1f} ± {100 * v.std(ddof=1) if len(v) > 1 else 0:.1f}"


def table(runs: list[dict]) -> str:
    lines = ["| benchmark | row | final acc. (%) | forgetting (%) | replay bytes | train GFLOP | "
             "distill GFLOP | inference kFLOP | params |", "|" + "---|" * 9]
    for name in dict.fromkeys(r["benchmark"] for r in runs):
        for row in ROWS:
            rs = [r for r in runs if r["benchmark"] == name and r["row"] == row]
            if not rs:
                continue
            def mean(key, rs=rs):
                return np.mean([r.get(key, 0) for r in rs])

            lines.append(
                f"| {name} | {row} | {_ms([r['final_accuracy'] for r in rs])} | {_ms([r['forgetting'] for r in rs])} "
                f"| {mean('replay_bytes'):,.0f} | {mean('train_flops') / 1e9:.2f} | {mean('distill_flops') / 1e9:.2f} "
                f"| {mean('inference_flops') / 1e3:,.0f} | {mean('params'):,.0f} |")
    return "\n".join(lines)


def claims(runs: list[dict]) -> str:
    """The paper's three figures, per benchmark: growth's training FLOPs over the fixed large model's, the accuracy
    it gives up, and the distilled set's share of the training data."""
    lines = ["| benchmark | growth / fixed large, train FLOPs | accuracy: growth - fixed large (points) | "
             "distilled - random replay (points) | distilled - random replay, balanced (points) | "
             "distilled samples / training samples |", "|" + "---|" * 6]
    for name in dict.fromkeys(r["benchmark"] for r in runs):
        def get(row, key, name=name):
            return np.array([r[key] for r in sorted((r for r in runs if r["benchmark"] == name and r["row"] == row),
                                                    key=lambda r: r["seed"])], dtype=float)
        ratio = get("distilled + growth", "train_flops") / get("fixed large + distilled", "train_flops")
        gap = 100 * (get("distilled + growth", "final_accuracy") - get("fixed large + distilled", "final_accuracy"))
        vs = 100 * (get("distilled", "final_accuracy") - get("random replay", "final_accuracy"))
        vs_bal = 100 * (get("distilled", "final_accuracy") - get("random replay, balanced", "final_accuracy"))
        share = get("distilled", "synthetic") / get("distilled", "n_train")
        lines.append(f"| {name} | {100 * ratio.mean():.0f}% (range {100 * ratio.min():.0f}-{100 * ratio.max():.0f}%) "
                     f"| {gap.mean():+.1f} ± {gap.std(ddof=1) if len(gap) > 1 else 0:.1f} "
                     f"| {vs.mean():+.1f} ± {vs.std(ddof=1) if len(vs) > 1 else 0:.1f} "
                     f"(wins {int((vs > 0).sum())}/{len(vs)}) "
                     f"| {vs_bal.mean():+.1f} ± {vs_bal.std(ddof=1) if len(vs_bal) > 1 else 0:.1f} "
                     f"(wins {int((vs_bal > 0).sum())}/{len(vs_bal)}) | {100 * share.mean():.2f}% |")
    return "\n".join(lines)


def _panels(runs: list[dict], path: Path, xlabel: str, ylabel: str, draw) -> None:
    """One panel per benchmark, draw(ax, name) filling it; a shared y label and legend; written to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["benchmark"] for r in runs))
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        draw(ax, name)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot(runs: list[dict], out: Path) -> None:
    names = list(dict.fromkeys(r["benchmark"] for r in runs))
    for name in names:
        curves = {row: np.mean([r["accuracy_after_each"] for r in runs if r["benchmark"] == name and r["row"] == row],
                               axis=0) for row in ROWS}
        plot_accuracy(curves, out / f"distilled_{name}.png", title=f"{name}: accuracy on classes seen (mean of seeds)")

    def draw(ax, name):
        for row in ROWS:
            rs = [r for r in runs if r["benchmark"] == name and r["row"] == row]
            ax.scatter([r["train_flops"] / 1e9 for r in rs], [100 * r["final_accuracy"] for r in rs], s=14, label=row)

    _panels(runs, out / "distilled_flops.png", "training GFLOP (adaptive stage)", "final accuracy (%)", draw)


def plot_flops_curve(runs: list[dict], out: Path) -> None:
    """Cumulative training FLOPs after each experience (mean of seeds): growth beside the fixed models."""
    def draw(ax, name):
        for row in ("distilled", "distilled + growth", "fixed large + distilled"):
            curves = [np.cumsum(r["train_flops_per_experience"]) for r in runs
                      if r["benchmark"] == name and r["row"] == row]
            if curves:
                n = min(len(c) for c in curves)
                ax.plot(np.mean([c[:n] for c in curves], axis=0) / 1e9, marker="o", label=row)

    _panels(runs, out / "distilled_flops_curve.png", "experience", "training GFLOP so far", draw)


def iterations_sweep(name: str, seeds: list[int], data_root: str | None, iterations=(0, 50, 200, 1000),
                     log=print) -> list[dict]:
    """Distilled replay's final accuracy against the number of distillation steps (0 = random real samples)."""
    out = []
    for seed in seeds:
        cfg = dataclasses.replace(BENCHMARKS[name], seed=seed, growth=GrowthConfig())
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=data_root))
        setup = prepare(cfg)
        for it in iterations:
            c = dataclasses.replace(cfg, distill=dataclasses.replace(cfg.distill, iterations=it))
            r = run_row(c, setup, "distilled", None)
            out.append({"benchmark": name, "seed": seed, "iterations": it, "final_accuracy": r["final_accuracy"],
                        "distill_flops": r["distill_flops"], "train_flops": r["train_flops"]})
            log(f"{name} seed {seed} iterations {it:>5}: acc {100 * r['final_accuracy']:.1f}%")
    return out


def sweep_table(rows: list[dict]) -> str:
    lines = ["| benchmark | distillation steps | final acc. (%) | distill GFLOP | train GFLOP |", "|" + "---|" * 5]
    for name in dict.fromkeys(r["benchmark"] for r in rows):
        for it in dict.fromkeys(r["iterations"] for r in rows if r["benchmark"] == name):
            rs = [r for r in rows if r["benchmark"] == name and r["iterations"] == it]
            lines.append(f"| {name} | {it} | {_ms([r['final_accuracy'] for r in rs])} "
                         f"| {np.mean([r['distill_flops'] for r in rs]) / 1e9:.1f} "
                         f"| {np.mean([r['train_flops'] for r in rs]) / 1e9:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--benchmarks", default=",".join(BENCHMARKS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", type=Path, default=Path("docs/results"))
    p.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    p.add_argument("--report", action="store_true", help="only rewrite the plots and tables from the saved runs")
    p.add_argument("--sweep", default=None, metavar="BENCHMARK",
                   help="instead: distilled replay's accuracy against distillation steps on one benchmark")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.sweep:
        rows = iterations_sweep(args.sweep, seeds, args.data_root, log=lambda s: print(s, flush=True))
        atomic_write_json(args.out / f"distilled_sweep_{args.sweep}.json",
                          {"command": "python " + " ".join(sys.argv), "rows": rows})
        print(sweep_table(rows))
        return 0
    path = args.out / "distilled.json"
    runs = json.loads(path.read_text())["runs"] if path.exists() else []
    for name in [] if args.report else args.benchmarks.split(","):
        if name not in BENCHMARKS:
            print(f"unknown benchmark {name!r}; allowed: {', '.join(BENCHMARKS)}", file=sys.stderr)
            return 2
        new = run_benchmark(name, seeds, args.data_root, log=lambda s: print(s, flush=True))
        runs = [r for r in runs if not (r["benchmark"] == name and r["seed"] in seeds)] + new
        atomic_write_json(path, {"machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s)",
                                 "command": "python " + " ".join(sys.argv), "runs": runs})
    plot(runs, args.out)
    plot_flops_curve(runs, args.out)
    print(table(runs))
    print()
    print(claims(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
