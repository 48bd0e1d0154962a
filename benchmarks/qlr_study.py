"""The quantized-latent-replay study (Ravaglia et al. 2021's question) on real data: replay layer x N latents x
Q bits x quantizer (granularity, range) against final accuracy and device bytes, beside naive and joint.

    .venv/bin/python benchmarks/qlr_study.py                 # everything: lr search, grid, report (resumable)
    .venv/bin/python benchmarks/qlr_study.py --quick         # smoke run: tiny subset, 1 seed, a few rows
    .venv/bin/python benchmarks/qlr_study.py --report-only   # tables + plot from the results file

Frozen stage: the int8 MobileNet-V1 0.25/128 file through tinycl's integer executor (bit-exact with LiteRT).
Every image goes through it ONCE: the codes of all replay layers come from one pass (`IntegerModel.run(...,
keep_all=True)`), are saved in `--work`, and are preloaded into one LatentCache per layer that every learner
shares. Each finished run appends one JSON line to `--results` (written atomically); a rerun skips the runs
already there. The grid is fractional (see GRID below): the full factorial does not fit 2 cores in an hour.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from tinycl.config import RunConfig, load_config
from tinycl.data.dataset import Dataset
from tinycl.data.registry import load_dataset
from tinycl.errors import TinyclError
from tinycl.frozen import ImageInput, LatentCache
from tinycl.io import atomic_output, atomic_write_bytes
from tinycl.model.tflite import load_tflite
from tinycl.quant.intexec import IntegerFrozenStage
from tinycl.runner import Setup, prepare, run_experiment

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "benchmarks/configs/cifar10_mobilenet_qlr.toml"
DEFAULT_LAYER = "Conv2d_10_depthwise"  # conv5_4/dw's place in MobileNet-V1 (index 19 of 28 conv layers)
LAYERS = (DEFAULT_LAYER, "Conv2d_11_pointwise", "Conv2d_13_pointwise", "AvgPool_1a")
BITS = (32, 8, 7, 6, 4, 2)
NS = (375, 750, 1500, 3000)
LRS = (3e-4, 1e-3, 3e-3, 1e-2)  # searched once per protocol, fp32 latent replay at DEFAULT_LAYER, N = 1500
SEEDS = (0, 1, 2)
LR_SEED = 100  # held out: lr search only, validated on training images outside the subset
DATA_SEED = 0  # the CIFAR subset is the same for every run (latents computed once)
PROTOCOLS_STUDIED = {  # name -> data-config overrides of the TOML file
    "ci": {"protocol": "split-cifar10"},
    "nic": {"protocol": "nic", "first_classes": 2, "first_size": 1000, "batch_size": 500},
}


# -- the grid ---------------------------------------------------------------------------------------------------
def _row(part, strategy="latent_replay", layer=DEFAULT_LAYER, n=1500, bits=32, gran="tensor", rng="max") -> dict:
    return {"part": part, "strategy": strategy, "layer": layer, "n": n, "bits": bits, "granularity": gran,
            "range": rng}


def grid(protocol: str, tier: str, quick: bool = False) -> list[dict]:
    """Rows of the fractional design for `protocol` ("ci" or "nic") in `tier` ("core": run first for every
    seed; "extra": after all core rows); each row = one run per seed.

    check: ci fp32 and 8 bits with 4 epochs (the papers' count).
    ci: the full Q x granularity sweep at the default layer and N = 1500, a layer sweep at Q in {32, 8, 4},
    naive and joint (core); range methods at 4 and 2 bits and an N sweep at Q in {32, 8} (extra).
    nic (19 experiences, about twice the training steps of ci per run): naive and the Q sweep per tensor, 2 bits
    per channel with the mse range (core only; joint, which retrains on everything seen at every experience,
    does not fit the budget: ci's joint is the upper bound on the same images)."""
    if quick:
        return [_row("bits", bits=b) for b in (32, 8, 2)] + [_row("baseline", "naive"), _row("baseline", "joint")] \
            if tier == "core" else []
    if tier == "check":  # the papers' 4 epochs, for the fp32/8-bit gap at full training (last: the budget)
        return [dict(_row("epochs", bits=b), epochs=4) for b in (32, 8)] if protocol == "ci" else []
    if protocol == "ci" and tier == "core":
        return ([_row("baseline", "naive"), _row("baseline", "joint"), _row("bits", bits=32)]
                + [_row("bits", bits=b, gran=g) for b in BITS[1:] for g in ("tensor", "channel")]
                + [_row("layer", layer=ly, bits=b) for ly in LAYERS[1:] for b in (32, 8, 4)])
    if protocol == "ci":
        return ([_row("range", bits=b, gran=g, rng=r) for b in (4, 2)
                 for g, r in (("tensor", "percentile"), ("tensor", "mse"), ("channel", "mse"))]
                + [_row("n", n=n, bits=b) for n in NS if n != 1500 for b in (32, 8)])
    if tier == "core":
        return ([_row("baseline", "naive")] + [_row("bits", bits=b) for b in (32, 8, 7, 4, 2)]
                + [_row("range", bits=2, gran="channel", rng="mse")])
    return []


def run_key(protocol: str, seed: int, r: dict, lr: float, cfg: RunConfig) -> str:
    """Identifies a finished run in the results file (with everything that changes its result)."""
    d = cfg.data
    return (f"{protocol}|{r['strategy']}|{r['layer']}|N{r['n']}|Q{r['bits']}|{r['granularity']}|{r['range']}"
            f"|lr{lr:g}|e{cfg.train.epochs}|d{d.n_train}-{d.n_test}|s{seed}")


# -- data and latents -------------------------------------------------------------------------------------------
def subset_indices(y: np.ndarray, per_class: int, skip: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of `per_class` images of each class, after the first `skip` of a random order per class."""
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[skip: skip + per_class]
                                   for c in np.unique(y)]))


def load_data(cfg: RunConfig, per_class_train: int, per_class_test: int, per_class_val: int):
    """(study data set, lr-search data set): the same training subset; the lr search tests on `per_class_val`
    training images per class that the study never uses."""
    full = load_dataset(cfg.data.name, cfg.data.root)
    rng = np.random.default_rng(DATA_SEED)
    tr = subset_indices(full.y_train, per_class_train, 0, np.random.default_rng(DATA_SEED))
    va = subset_indices(full.y_train, per_class_val, per_class_train, np.random.default_rng(DATA_SEED))
    te = subset_indices(full.y_test, per_class_test, 0, rng)
    ds = Dataset(full.name, full.x_train[tr], full.y_train[tr], full.x_test[te], full.y_test[te], full.classes)
    val = Dataset(full.name, full.x_train[tr], full.y_train[tr], full.x_train[va], full.y_train[va], full.classes)
    return ds, val


def latent_codes(qmodel, layers: tuple[str, ...], x: np.ndarray, path: Path, batch: int = 64) -> tuple[dict, dict]:
    """({layer: integer codes (N, *shape)} of every image in x (uint8 CHW, any size), one integer pass per image;
    {"seconds", "n_images"} of that pass). Cached in `path` (.npz, and .json for the timing) so a rerun does not
    repeat it."""
    info_path = path.with_suffix(".json")
    if path.exists():
        with np.load(path) as f:
            if all(ly in f for ly in layers) and len(f[layers[0]]) == len(x):
                info = json.loads(info_path.read_text()) if info_path.exists() else {}
                return {ly: f[ly] for ly in layers}, info
    deepest = max(layers, key=qmodel.spec.index)
    stage = IntegerFrozenStage(qmodel, upto=deepest)
    resize = ImageInput(stage, tuple(qmodel.spec.input_shape[1:]))
    out = {ly: [] for ly in layers}
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        codes = stage.model.run(stage.quantize(resize.pixels(x[i: i + batch])), keep_all=True)
        for ly in layers:
            out[ly].append(codes[ly])
        if (i // batch) % 20 == 0:
            print(f"  latents {i + len(codes[layers[0]])}/{len(x)} ({time.perf_counter() - t0:.0f} s)", flush=True)
    out = {ly: np.concatenate(v) for ly, v in out.items()}
    info = {"seconds": time.perf_counter() - t0, "n_images": len(x), "layers": list(layers),
            "threads": torch.get_num_threads()}
    with atomic_output(path, suffix=".npz") as tmp:  # ends in .npz: savez adds no suffix of its own
        np.savez(tmp, **out)
    atomic_write_bytes(info_path, json.dumps(info).encode())
    return out, info


def dequantized(qmodel, layer: str, codes: np.ndarray) -> np.ndarray:
    """float32 latents scale * (code - zero_point), as the frozen stage's DEQUANTIZE gives them."""
    q = qmodel.spec.layers[qmodel.spec.index(layer)].quant.output
    return ((codes.astype(np.int32) - int(q.zero_point[0])) * np.float32(q.scale[0])).astype(np.float32)


class Study:
    """The shared pieces: data, scenarios per (protocol, seed), one preloaded LatentCache per layer."""

    def __init__(self, cfg: RunConfig, args):
        self.cfg, self.args = cfg, args
        self.qmodel = load_tflite(cfg.model.arch)
        self.ds, self.val = load_data(cfg, args.train_per_class, args.test_per_class, args.val_per_class)
        # the subset sizes in every saved config (the subset itself: DATA_SEED, the same for all runs)
        self.cfg = replace(cfg, data=replace(cfg.data, n_train=len(self.ds.y_train), n_test=len(self.ds.y_test)))
        x_all = np.concatenate([self.ds.x_train, self.ds.x_test, self.val.x_test])
        tag = f"{args.train_per_class}-{args.test_per_class}-{args.val_per_class}-d{DATA_SEED}"
        t0 = time.perf_counter()
        codes, self.latent_info = latent_codes(self.qmodel, LAYERS, x_all, Path(args.work) / f"latents-{tag}.npz")
        self.latent_seconds = time.perf_counter() - t0  # this invocation: the pass, or loading its cache
        self.n_images = len(x_all)
        n_tr, n_te = len(self.ds.y_train), len(self.ds.y_test)
        # ids as the scenarios give them: train 0..n_tr-1, then the test set (study: test, lr search: val)
        self.caches, self.val_caches = {}, {}
        for ly in LAYERS:
            z = dequantized(self.qmodel, ly, codes[ly])
            stage = ImageInput(IntegerFrozenStage(self.qmodel, upto=ly), tuple(self.qmodel.spec.input_shape[1:]))
            self.caches[ly], self.val_caches[ly] = LatentCache(stage), LatentCache(stage)
            ids = np.arange(n_tr + n_te)
            self.caches[ly].preload(ids, z[: n_tr + n_te])
            self.val_caches[ly].preload(np.arange(n_tr), z[:n_tr])
            self.val_caches[ly].preload(n_tr + np.arange(len(self.val.y_test)), z[n_tr + n_te:])

    def config(self, protocol: str, seed: int, r: dict, lr: float) -> RunConfig:
        c = self.cfg
        data = dict(PROTOCOLS_STUDIED[protocol])
        if protocol == "nic" and self.args.quick:  # NIC sizes scaled to the smoke subset
            data.update(first_size=100, batch_size=50)
        return replace(c, strategy=r["strategy"], seed=seed, data=replace(c.data, **data),
                       model=replace(c.model, split=r["layer"]),
                       memory=replace(c.memory, capacity=r["n"], bits=r["bits"], granularity=r["granularity"],
                                      range=r["range"]),
                       train=replace(c.train, lr=lr, epochs=r.get("epochs", c.train.epochs)))

    def setup(self, cfg: RunConfig, validation: bool = False) -> Setup:
        """The runner's Setup of `cfg` on the study's data (or the lr search's), its frozen stage and latent cache
        replaced by the preloaded ones of cfg's layer (the same integer stage; every latent already computed)."""
        whole = replace(cfg, data=replace(cfg.data, n_train=None, n_test=None))  # self.ds is the subset already
        cache = (self.val_caches if validation else self.caches)[cfg.model.split]
        return replace(prepare(whole, dataset=self.val if validation else self.ds), frozen=cache.stage, cache=cache)


# -- results ----------------------------------------------------------------------------------------------------
def read_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_result(path: Path, record: dict) -> None:
    """Rewrite the whole file with one more line (atomic: a crash leaves the old file or the new one)."""
    old = path.read_bytes() if path.exists() else b""
    atomic_write_bytes(path, old + (json.dumps(record) + "\n").encode())


def invocations_path(results: Path) -> Path:
    """One line per driver invocation (wall time, the frozen pass, peak RSS) beside the results file."""
    return results.with_name(results.stem + "_invocations.jsonl")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def execute(study: Study, results: Path, protocol: str, seed: int, r: dict, lr: float, kind: str,
            done: set[str]) -> dict | None:
    cfg = study.config(protocol, seed, r, lr)
    key = run_key(protocol, seed, r, lr, cfg) + ("|val" if kind == "lr_search" else "")
    if key in done:
        return None
    t0 = time.perf_counter()
    m = run_experiment(cfg, None, setup=study.setup(cfg, validation=kind == "lr_search"), strategy=r["strategy"],
                       bits=r["bits"])
    record = {"key": key, "kind": kind, "protocol": protocol, "seed": seed, "lr": lr, **r,
              "final_accuracy": m["final_accuracy"], "average_incremental_accuracy":
                  m.get("average_incremental_accuracy"), "forgetting": m.get("forgetting"),
              "experiences": len(m["accuracy_after_each"]), "replay_bytes": m["replay_bytes"],
              "memory_bytes": m["memory_bytes"], "learner_bytes": learner_bytes(m["memory_bytes"]),
              "train_seconds": m["seconds"], "wall_seconds": time.perf_counter() - t0,
              "peak_rss_mib": peak_rss_mib()}
    append_result(results, record)
    done.add(key)
    print(f"  {key}: acc {record['final_accuracy']:.4f}, replay {record['replay_bytes']:,} B, "
          f"{record['wall_seconds']:.0f} s, peak RSS {record['peak_rss_mib']:.0f} MiB", flush=True)
    return record


def learner_bytes(report: dict) -> int:
    """Device bytes of the whole learner: memory_report() summed, without `device_arena` (the C runtime's
    per-sample training arena, an alternative plan that already holds weights, gradients and momentum)."""
    return int(sum(v for k, v in report.items() if k != "device_arena"))


def chosen_lr(results: list[dict], protocol: str) -> float | None:
    """The lr search's winner for `protocol` once all candidates are in, else None."""
    rows = [r for r in results if r["kind"] == "lr_search" and r["protocol"] == protocol]
    if {r["lr"] for r in rows} != set(LRS):
        return None
    return max(rows, key=lambda r: (r["final_accuracy"], -r["lr"]))["lr"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(CONFIG))
    p.add_argument("--results", default=str(ROOT / "docs/results/qlr_study_runs.jsonl"))
    p.add_argument("--work", default=str(ROOT / "runs/qlr_study"), help="latent codes cache (.npz)")
    p.add_argument("--protocols", default="ci,nic")
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    p.add_argument("--train-per-class", type=int, default=1000)
    p.add_argument("--test-per-class", type=int, default=200)
    p.add_argument("--val-per-class", type=int, default=200)
    p.add_argument("--epochs", type=int, default=2, help="epochs per experience (the papers: 4; the budget: 2)")
    p.add_argument("--tiers", default="core,extra,check", help="parts of the grid, in this order (see grid())")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    p.add_argument("--quick", action="store_true", help="smoke run: 50/20/20 images per class, seed 0, 5 rows")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--doc", default=str(ROOT / "docs/results/qlr_study.md"))
    args = p.parse_args(argv)
    if args.quick:
        args.train_per_class, args.test_per_class, args.val_per_class, args.seeds = 50, 20, 20, "0"
        if args.results == p.get_default("results"):
            args.results = str(Path(args.work) / "quick_runs.jsonl")
    results = Path(args.results)
    if args.report_only:
        from qlr_report import write_report

        source = results.resolve().relative_to(ROOT) if results.resolve().is_relative_to(ROOT) else results
        write_report(read_results(results), Path(args.doc), read_results(invocations_path(results)),
                     default_layer=DEFAULT_LAYER, source=str(source))
        return 0
    torch.set_num_threads(args.threads)
    try:
        cfg = load_config(args.config, [f"train.epochs={args.epochs}"])
        t_start = time.perf_counter()
        study = Study(cfg, args)
        print(f"latents of {study.n_images} images at {len(LAYERS)} layers: {study.latent_seconds:.0f} s "
              f"(peak RSS {peak_rss_mib():.0f} MiB)", flush=True)
        done = {r["key"] for r in read_results(results)}
        seeds = [int(s) for s in args.seeds.split(",")]
        protocols = args.protocols.split(",")
        lrs = {}
        for protocol in protocols:
            base = {"part": "lr", "strategy": "latent_replay", "layer": DEFAULT_LAYER, "n": 1500, "bits": 32,
                    "granularity": "tensor", "range": "max"}
            for lr in LRS:
                execute(study, results, protocol, LR_SEED, base, lr, "lr_search", done)
            lrs[protocol] = chosen_lr(read_results(results), protocol)
            print(f"{protocol}: lr {lrs[protocol]:g} (held-out seed {LR_SEED}, validation images)", flush=True)
        for tier in args.tiers.split(","):  # seed-major per tier: a stopped study has whole seeds of the core rows
            for seed in seeds:
                for protocol in protocols:
                    rows = grid(protocol, tier, args.quick)
                    for i, r in enumerate(rows):
                        print(f"[{tier} {protocol} seed {seed} row {i + 1}/{len(rows)}]", flush=True)
                        execute(study, results, protocol, seed, r, lrs[protocol], "study", done)
        total = time.perf_counter() - t_start
        print(f"this invocation: {total:.0f} s wall, peak RSS {peak_rss_mib():.0f} MiB", flush=True)
        append_result(invocations_path(results),
                      {"argv": sys.argv[1:], "wall_seconds": total, "latent_seconds": study.latent_seconds,
                       "latent_pass": study.latent_info,
                       "n_images": study.n_images, "peak_rss_mib": peak_rss_mib(), "finished": time.time()})
    except TinyclError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


__all__ = ["grid", "main", "Study"]

if __name__ == "__main__":
    sys.exit(main())
