"""One table for many runs: every axis and metric as CSV and Markdown, a per-configuration summary over seeds,
and the accuracy-vs-device-bytes Pareto front as a PNG (and accuracy vs latency / energy when a device target
was costed). `tinycl sweep` writes them for a grid; `tinycl compare` for run directories made by hand.
"""

from __future__ import annotations

import csv
import io
import math
import operator
import tomllib
from pathlib import Path

import numpy as np

from tinycl.io import atomic_save, atomic_write_bytes
from tinycl.sweep.engine import read_result

__all__ = ["METRICS", "device_bytes", "rows_from_results", "pareto", "write_tables", "plot_pareto", "flatten",
           "summary_rows", "markdown_table", "write_report", "write_generated", "finished_trials", "grid_trials",
           "study_trials", "paired_by_seed", "mean_se"]

# (column, how it is read from metrics.json, format)
METRICS = (
    ("final_accuracy", lambda m: m["final_accuracy"], "{:.4f}"),
    ("average_incremental_accuracy", lambda m: m["average_incremental_accuracy"], "{:.4f}"),
    ("forgetting", lambda m: m["forgetting"], "{:.4f}"),
    ("backward_transfer", lambda m: m["backward_transfer"], "{:.4f}"),
    ("stored_bits", lambda m: m["bits"], "{}"),
    ("replay_bytes", lambda m: m["replay_bytes"], "{}"),
    ("device_bytes", lambda m: device_bytes(m["memory_bytes"]), "{}"),
    ("train_flops", lambda m: m["flops"]["train_flops"], "{}"),
    ("seconds", lambda m: m["seconds"], "{:.2f}"),
    ("batch_latency_s", lambda m: m["device"]["batch_latency_s"], "{:.4g}"),
    ("batch_energy_j", lambda m: m["device"]["batch_energy_j"], "{:.4g}"),
)


def device_bytes(report: dict) -> int:
    """Bytes the learner holds on the device (Learner.memory_report): frozen weights + replay memory + the
    training arena (the C runtime's planned one where it exists, which already holds the adaptive weights,
    gradients, momentum and activations; else those entries) + a distillation workspace."""
    train = report.get("device_arena")
    if train is None:
        train = sum(report.get(k, 0) for k in ("adaptive_weights", "gradients", "optimizer_state",
                                               "peak_activations"))
    return int(report["frozen_weights"] + report["replay_memory"] + train + report.get("distill_workspace", 0))


def flatten(d: dict, prefix: str = "") -> dict:
    """{"memory": {"bits": 8}} -> {"memory.bits": 8} (lists kept as values)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(flatten(v, f"{key}.") if isinstance(v, dict) else {key: v})
    return out


def _metric(metrics: dict, read) -> object:
    try:
        return read(metrics)
    except (KeyError, TypeError):
        return None


def rows_from_results(results: list[dict], axes: list[str]) -> list[dict]:
    """One row per run: its name, axis values, status, every metric (None where absent) and its error."""
    rows = []
    for r in results:
        m = r.get("metrics", {})
        row = {"trial": r.get("trial", ""), **{a: r.get("values", {}).get(a) for a in axes},
               "status": r.get("status", "")}
        row.update({name: _metric(m, read) for name, read, _ in METRICS})
        row["error"] = r.get("error", "")
        rows.append(row)
    return rows


def pareto(rows: list[dict], x: str = "device_bytes", y: str = "final_accuracy") -> list[bool]:
    """For each row: is it on the front (no other finished row has x <= and y >= with one strictly better)?"""
    pts = [(r[x], r[y]) if r["status"] == "ok" and r[x] is not None and r[y] is not None else None for r in rows]
    return [p is not None and not any(q is not None and q[0] <= p[0] and q[1] >= p[1] and q != p for q in pts)
            for p in pts]


def _cell(value, fmt: str = "{}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return fmt.format(value) if not isinstance(value, str) else value


def _columns(rows: list[dict]) -> list[str]:
    """Every column any row has a value in (metrics of no run are left out: e.g. latency without a target)."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return [k for k in keys if any(r.get(k) not in (None, "") for r in rows) or k in ("trial", "status")]


def summary_rows(rows: list[dict], axes: list[str], seed_axis: str = "seed") -> list[dict]:
    """Rows grouped by every axis but the seed: runs, and mean +- sd over the finished runs of each metric."""
    keys = [a for a in axes if a != seed_axis]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(repr(r[a]) for a in keys), []).append(r)
    out = []
    for members in groups.values():
        ok = [r for r in members if r["status"] == "ok"]
        row = {a: members[0][a] for a in keys}
        row.update(runs=len(members), finished=len(ok))
        for name, fmt in (("final_accuracy", "{:.4f}"), ("forgetting", "{:.4f}"), ("device_bytes", "{:,.0f}"),
                          ("seconds", "{:.1f}")):
            vals = [r[name] for r in ok if r[name] is not None]
            sd = f" +- {fmt.format(np.std(vals, ddof=1))}" if len(vals) > 1 else ""
            row[name] = fmt.format(np.mean(vals)) + sd if vals else ""
        out.append(row)
    return out


def _markdown(rows: list[dict], columns: list[str], fmts: dict) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c), fmts.get(c, "{}")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_tables(rows: list[dict], out: Path, axes: list[str], stem: str = "results") -> dict[str, Path]:
    """OUT/<stem>.csv and .md (one row per run, with the Pareto flag) and OUT/<stem>_summary.md (over seeds)."""
    out = Path(out)
    front = pareto(rows)
    rows = [{**r, "pareto": "yes" if f else ""} for r, f in zip(rows, front, strict=True)]
    columns = _columns(rows)
    fmts = {name: fmt for name, _, fmt in METRICS}
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(columns)
    writer.writerows([[_cell(r.get(c), fmts.get(c, "{}")) for c in columns] for r in rows])
    paths = {"csv": out / f"{stem}.csv", "md": out / f"{stem}.md", "summary": out / f"{stem}_summary.md"}
    atomic_write_bytes(paths["csv"], buf.getvalue().encode())
    atomic_write_bytes(paths["md"], _markdown(rows, columns, fmts).encode())
    summary = summary_rows(rows, axes)
    atomic_write_bytes(paths["summary"], _markdown(summary, list(summary[0]) if summary else [], {}).encode())
    return paths


def plot_pareto(rows: list[dict], path: Path, x: str = "device_bytes", y: str = "final_accuracy",
                title: str = "") -> Path | None:
    """Accuracy against `x` for every finished run (log x), the Pareto front as a step line; None if no run
    has both values."""
    pts = [(r[x], r[y], r["trial"]) for r in rows if r["status"] == "ok" and r[x] is not None and r[y] is not None]
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = sorted((p for p, f in zip(rows, pareto(rows, x, y), strict=True) if f), key=lambda r: r[x])
    fig, ax = plt.subplots(figsize=(7.0, 4.4))
    ax.scatter([p[0] for p in pts], [100 * p[1] for p in pts], s=18, alpha=0.6, label="runs")
    if front:
        ax.step([r[x] for r in front], [100 * r[y] for r in front], where="post", color="C3", label="Pareto front")
        for r in front:
            ax.annotate(r["trial"], (r[x], 100 * r[y]), fontsize=6, xytext=(3, -8), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel(y.replace("_", " ") + " (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    atomic_save(Path(path), lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    return Path(path)


def markdown_table(results: list[dict], axes: list[str]) -> str:
    """The per-run table of `results` (run results as `tinycl sweep` records them) as Markdown."""
    rows = rows_from_results(results, axes)
    rows = [{**r, "pareto": "yes" if f else ""} for r, f in zip(rows, pareto(rows), strict=True)]
    return _markdown(rows, _columns(rows), {name: fmt for name, _, fmt in METRICS})


def write_report(results: list[dict], axes: list[str], out: Path, title: str = "") -> list[Path]:
    """The tables (write_tables) and plots of `results` into OUT: pareto.png (accuracy vs device bytes) and,
    where a device target was costed, pareto_latency.png and pareto_energy.png (per training mini-batch)."""
    rows = rows_from_results(results, axes)
    paths = list(write_tables(rows, Path(out), axes).values())
    for x, name in (("device_bytes", "pareto.png"), ("batch_latency_s", "pareto_latency.png"),
                    ("batch_energy_j", "pareto_energy.png")):
        if (p := plot_pareto(rows, Path(out) / name, x=x, title=title)) is not None:
            paths.append(p)
    return paths


def write_generated(page: Path | None, begin: str, end: str, text: str) -> None:
    """Replace what lies between the markers `begin` and `end` of a docs page with `text` (a study's report step;
    the prose around the markers is kept), atomically; with no page, print the text."""
    if page is None:
        print(text)
        return
    old = Path(page).read_text()
    start, stop = old.index(begin) + len(begin), old.index(end)
    atomic_write_bytes(Path(page), (old[:start] + "\n\n" + text + "\n" + old[stop:]).encode())


def finished_trials(dirs) -> list[dict]:
    """Every finished trial (result.json with status "ok" beside its config.toml) under DIR/trials/ of each sweep
    output in `dirs`, in name order: {"dir", "cfg" (the flattened config), "seed", "metrics", "result"}. A
    trial still running or failed is left out; a study's report step reads its sweeps with this."""
    trials = []
    for trial in sorted(t for d in dirs for t in (Path(d) / "trials").glob("*/")):
        result = read_result(trial)
        if result is None or result.get("status") != "ok" or not (trial / "config.toml").exists():
            continue
        cfg = flatten(tomllib.loads((trial / "config.toml").read_text()))
        trials.append({"dir": trial, "cfg": cfg, "seed": cfg.get("seed", 0), "metrics": result["metrics"],
                       "result": result})
    return trials


def grid_trials(trials: list[dict], grid: str | Path) -> list[dict]:
    """The trials (finished_trials' records) that the grid file still holds, by trial name: a trial an earlier
    version of the grid left in the sweep's directory (another lr, a replaced set-up) is not among them."""
    from tinycl.sweep.grid import load_grid

    slugs = {t.slug for t in load_grid(grid).trials}
    return [t for t in trials if Path(t["dir"]).name in slugs]


def study_trials(dirs, grids: str | Path) -> list[dict]:
    """finished_trials of each sweep directory; one named after a grid file in `grids` (runs/qlr_layers:
    GRIDS/qlr_layers.toml) gives only the trials that grid still holds (grid_trials)."""
    trials = []
    for d in dirs:
        grid = Path(grids) / f"{Path(d).name}.toml"
        found = finished_trials([d])
        trials += grid_trials(found, grid) if grid.exists() else found
    return sorted(trials, key=lambda t: t["dir"])  # in name order across the directories, as finished_trials


def paired_by_seed(a: list[dict], b: list[dict], read, op=operator.sub) -> np.ndarray:
    """op(read(x), read(y)) for each seed that has a trial x in `a` and y in `b`, in seed order: the paired
    differences (or, with op=operator.truediv, ratios) a study reports against its reference row."""
    by_seed = {r["seed"]: read(r) for r in b}
    return np.array([op(read(r), by_seed[r["seed"]]) for r in sorted(a, key=lambda r: r["seed"])
                     if r["seed"] in by_seed], dtype=float)


def mean_se(d: np.ndarray) -> tuple[float, float]:
    """Mean of paired differences and its standard error (nan with fewer than two pairs)."""
    d = np.asarray(d, dtype=float)
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")
    return float(d.mean()), se
