"""Running a grid's trials as Ray tasks, on this machine or a cluster, sharing the expensive work.

Trials are grouped by what their frozen stage's latents depend on (`latent_key`: data, model and split, plus the
seed where it changes the samples or the frozen weights). One Ray task per group loads the data once, runs
`tinycl.runner.prepare` for each distinct set-up in it and computes the latent of every sample any of them uses,
once; the set-ups and the latents go to Ray's object store, and every trial task of the group starts from them
(its `LatentCache` preloaded), so no trial runs the frozen stage on a sample another already ran. A trial is one
`tinycl.runner.run_experiment` writing into `OUT/trials/<slug>/` atomically after every experience; at its end
`result.json` records its metrics or its one-line error. A rerun skips the trials that have a result, and
`resume=True` continues the unfinished ones from their checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinycl.config import RunConfig, config_to_dict
from tinycl.errors import ConfigError, TinyclError
from tinycl.io import atomic_write_json
from tinycl.sweep.grid import Grid, Trial

__all__ = ["latent_key", "setup_key", "run_sweep", "trial_dir", "read_result", "GROUP_BATCH"]

GROUP_BATCH = 512  # samples per frozen-stage call while a group's latents are computed (bounds memory)


def _is_zoo(cfg: RunConfig) -> bool:
    return not cfg.model.arch.endswith(".tflite")


def setup_key(cfg: RunConfig) -> str:
    """What `runner.prepare` reads: the data, the model, the seed and (pre-deployment training) the batch size."""
    d = config_to_dict(cfg)
    return json.dumps({"data": d["data"], "model": d["model"], "seed": cfg.seed,
                       "batch_size": cfg.train.batch_size}, sort_keys=True)


def latent_key(cfg: RunConfig) -> str:
    """What the latent of a sample id depends on: data and model (with the split); also the seed where a subset
    is drawn (ids then index different samples) or a zoo model is trained before deployment (its frozen
    weights depend on the seed and the batch size)."""
    d = config_to_dict(cfg)
    key = {"data": d["data"], "model": d["model"]}
    if _is_zoo(cfg) or cfg.data.n_train or cfg.data.n_test:
        key["seed"] = cfg.seed
    if _is_zoo(cfg):
        key["batch_size"] = cfg.train.batch_size
    return json.dumps(key, sort_keys=True)


def trial_dir(out: Path, trial: Trial) -> Path:
    return Path(out) / "trials" / trial.slug


def read_result(path: Path) -> dict | None:
    """A trial's result.json, or None if it has none (or an unreadable one: then it runs again)."""
    try:
        return json.loads((Path(path) / "result.json").read_text())
    except (OSError, ValueError):
        return None


# -- the tasks (plain functions; made remote when a sweep starts) ---------------------------------------------
def prepare_group(cfgs: list[RunConfig], threads: int, record: str):
    """Set-ups of `cfgs` (one latent group: same data and model), then the ids and latents of every sample they
    use, computed once; writes what it did (samples, set-ups, seconds) to the JSON file `record`.
    Returns [*setups, ids, latents]."""
    import torch

    from tinycl.data.registry import load_dataset
    from tinycl.runner import prepare

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    first = cfgs[0].data
    dataset = load_dataset(first.name, first.root, **first.options)
    setups = [prepare(cfg, dataset=dataset) for cfg in cfgs]
    exps = [e for s in setups for e in (*s.scenario.train, *s.scenario.test) if len(e)]
    ids = np.concatenate([e.ids for e in exps])
    ids, first_at = np.unique(ids, return_index=True)
    x = np.concatenate([e.x for e in exps])[first_at]
    stage = setups[0].frozen
    latents = np.concatenate([stage(x[i: i + GROUP_BATCH]) for i in range(0, len(x), GROUP_BATCH)])
    atomic_write_json(Path(record), {"latent_key": latent_key(cfgs[0]), "samples": len(ids),
                                     "setups": len(setups), "seconds": time.perf_counter() - t0})
    return [*setups, ids, latents]


def run_trial(cfg: RunConfig, name: str, values: dict, setup, ids, latents, out: str, resume: bool,
              target: str | None) -> dict:
    """One trial in a worker: run_experiment from the shared set-up and latents; writes and returns result.json."""
    import torch

    from tinycl.runner import run_experiment

    torch.set_num_threads(1)  # one trial per core: tiny tensors gain nothing from a second thread
    start = time.time()
    setup.cache.preload(ids, latents)
    try:
        metrics = run_experiment(cfg, Path(out), resume=resume, setup=setup)
        if target:
            metrics["device"] = _device_cost(cfg, setup, target)
        result = {"status": "ok", "metrics": metrics}
    except TinyclError as err:
        result = {"status": "failed", "error": str(err)}
    except Exception as err:  # noqa: BLE001 - a trial's crash is its result; the sweep goes on
        result = {"status": "failed", "error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
    result.update(trial=name, values=values, start=start, end=time.time(), pid=os.getpid())
    atomic_write_json(Path(out) / "result.json", result)
    return result


def _device_cost(cfg: RunConfig, setup, target: str) -> dict:
    """Latency and energy of one training mini-batch on `target` (tinycl.cost), for the learner of cfg."""
    from tinycl.cost.model import estimate
    from tinycl.cost.targets import get_target
    from tinycl.cost.workload import workload_of
    from tinycl.strategies import make_learner

    report = estimate(workload_of(cfg, setup, make_learner(cfg, setup)), get_target(target))
    return {"target": target, "fits": report.fits, "batch_latency_s": report.batch.seconds,
            "batch_energy_j": report.batch.joules}


# -- the driver -------------------------------------------------------------------------------------------------
@dataclass
class _Group:
    cfgs: list[RunConfig]
    trials: list[tuple[Trial, int]]  # (trial, index of its set-up in cfgs)


def _groups(trials: list[Trial]) -> list[_Group]:
    groups: dict[str, _Group] = {}
    for t in trials:
        g = groups.setdefault(latent_key(t.config), _Group([], []))
        keys = [setup_key(c) for c in g.cfgs]
        k = setup_key(t.config)
        if k not in keys:
            g.cfgs.append(t.config)
            keys.append(k)
        g.trials.append((t, keys.index(k)))
    return list(groups.values())


def _check_out(out: Path, grid: Grid) -> None:
    """OUT holds this grid's sweep or nothing: a sweep of another base config is refused, not mixed in."""
    marker = out / "sweep.json"
    mine = json.loads(json.dumps({"base": grid.base, "axes": list(grid.axes)}))  # as it reads back
    if marker.exists():
        theirs = json.loads(marker.read_text())
        if theirs.get("base") != mine["base"]:
            raise ConfigError(f"{out} holds a sweep of another base config; use a new --out")
    atomic_write_json(marker, mine)


def _ray(address: str | None, workers: int | None):
    try:
        import ray
    except ImportError:
        raise ConfigError("tinycl sweep needs Ray: pip install 'tinycl[sweep]' (or pip install ray)") from None
    if not ray.is_initialized():
        kwargs = {"address": address} if address else {"num_cpus": workers or os.cpu_count() or 1}
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **kwargs)
    return ray


def _failure(err) -> str:
    """The one-line message of a task's error (Ray wraps it; the cause is the original exception)."""
    cause = getattr(err, "cause", None) or err
    text = str(cause).strip().splitlines()
    return text[0] if isinstance(cause, TinyclError) and text else f"{type(cause).__name__}: {text[0] if text else ''}"


def run_sweep(grid: Grid, out: Path, *, address: str | None = None, workers: int | None = None,
              resume: bool = False, target: str | None = None, progress=None) -> list[dict]:
    """Run every trial of `grid` that has no result yet in `out`; returns every trial's result, in grid order.

    address: a Ray cluster ("auto", or "ray://host:10001"); None starts a local Ray with `workers` CPUs (default:
    all). resume: continue unfinished trials from their checkpoints (else they start over). target: also cost
    each learner on this device (tinycl.cost). progress: called with (done, running, failed, total)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_out(out, grid)
    results: dict[str, dict] = {}
    todo = []
    for t in grid.trials:
        if t.error is not None:
            results[t.slug] = {"status": "failed", "error": t.error, "trial": t.name, "values": t.values}
            atomic_write_json(trial_dir(out, t) / "result.json", results[t.slug])
        elif (r := read_result(trial_dir(out, t))) is not None and r.get("status") == "ok":
            results[t.slug] = r
        else:
            todo.append(t)
    total, failed = len(grid.trials), sum(r["status"] != "ok" for r in results.values())
    if todo:
        _run(todo, out, results, address, workers, resume, target, progress, total)
    elif progress:
        progress(len(results), 0, failed, total)
    return [results[t.slug] for t in grid.trials]


def _run(todo, out, results, address, workers, resume, target, progress, total) -> None:
    ray = _ray(address, workers)
    n_cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    prep = ray.remote(num_cpus=1)(prepare_group)
    trial_task = ray.remote(num_cpus=1, max_retries=0)(run_trial)
    pending = {}
    groups = _groups(todo)
    threads = max(1, n_cpus // len(groups))  # a lone group's frozen pass gets every core, not one
    for group in groups:
        record = out / "groups" / f"{hashlib.sha256(latent_key(group.cfgs[0]).encode()).hexdigest()[:12]}.json"
        refs = prep.options(num_returns=len(group.cfgs) + 2, num_cpus=threads).remote(group.cfgs, threads,
                                                                                      str(record))
        setups, ids, latents = refs[: len(group.cfgs)], refs[-2], refs[-1]
        for t, k in group.trials:
            d = trial_dir(out, t)
            ref = trial_task.remote(t.config, t.name, t.values, setups[k], ids, latents, str(d), resume, target)
            pending[ref] = t
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        t = pending.pop(done[0])
        try:
            results[t.slug] = ray.get(done[0])
        except Exception as err:  # noqa: BLE001 - the group's set-up failed (e.g. data missing): record, go on
            results[t.slug] = {"status": "failed", "error": _failure(err), "trial": t.name, "values": t.values}
            atomic_write_json(trial_dir(out, t) / "result.json", results[t.slug])
        if progress:
            failed = sum(r["status"] != "ok" for r in results.values())
            progress(len(results), min(len(pending), n_cpus), failed, total)
