"""Trials per minute of `tinycl sweep` against the same trials run one after another with `tinycl run`, and Ray's
overhead per trial, side by side in one run on this machine.

    .venv/bin/python benchmarks/sweep_speed.py --out docs/sweep_speed.md

The grid is benchmarks/grids/digits_speed.toml (16 trials: 4 replay bit widths x 4 seeds of the digits learner).
`tinycl run` repeats data loading, pre-deployment training and the frozen pass in every run; the sweep does them
once per seed and runs two trials at a time. Overhead per trial = (workers x (sweep wall - Ray start-up) - the
time workers spent in set-up and trial tasks) / trials: the time a worker slot was not running tinycl's work
(scheduling, object transfer, and idle slots at the end), an upper bound on what Ray costs a trial.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRID = REPO / "benchmarks" / "grids" / "digits_speed.toml"


def sequential(grid, out: Path) -> float:
    """Seconds to run every trial of `grid` with `tinycl run`, one process after another."""
    t0 = time.perf_counter()
    base = REPO / "benchmarks" / "configs" / "digits_qlr.toml"
    for trial in grid.trials:
        sets = [f"--set={k}={v}" for k, v in trial.values.items()]
        subprocess.run([sys.executable, "-m", "tinycl.cli", "run", str(base), *sets, "--out", str(out / trial.slug),
                        "--no-progress", "--threads", "1"], check=True, capture_output=True)
    return time.perf_counter() - t0


def swept(grid, out: Path, workers: int) -> dict:
    import ray

    from tinycl.sweep import run_sweep

    t0 = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
    init = time.perf_counter() - t0
    results = run_sweep(grid, out, workers=workers)
    wall = time.perf_counter() - t0
    ray.shutdown()
    busy = sum(r["end"] - r["start"] for r in results)
    busy += sum(json.loads(p.read_text())["seconds"] for p in (out / "groups").glob("*.json"))
    return {"wall": wall, "init": init, "busy": busy, "failed": sum(r["status"] != "ok" for r in results),
            "overhead": (workers * (wall - init) - busy) / len(results)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown report here too")
    args = parser.parse_args()
    from tinycl.sweep import load_grid

    grid = load_grid(GRID)
    n = len(grid.trials)
    with tempfile.TemporaryDirectory() as tmp:
        seq = sequential(grid, Path(tmp) / "seq")
        sw = swept(grid, Path(tmp) / "sweep", args.workers)
    load = os.getloadavg()
    lines = [
        "# `tinycl sweep` against `tinycl run` one after another",
        "",
        f"Command: `.venv/bin/python benchmarks/sweep_speed.py --workers {args.workers}`; grid "
        f"`benchmarks/grids/digits_speed.toml` ({n} trials); machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; load average after the run {load[0]:.1f}.",
        "",
        "| | wall (s) | trials per minute |",
        "|---|---|---|",
        f"| `tinycl run`, one after another | {seq:.1f} | {60 * n / seq:.1f} |",
        f"| `tinycl sweep --workers {args.workers}` | {sw['wall']:.1f} | {60 * n / sw['wall']:.1f} |",
        "",
        f"Speed-up: **{seq / sw['wall']:.2f}x** the trials per minute. Ray start-up {sw['init']:.1f} s; overhead per "
        f"trial (worker time not spent in tinycl's set-up or trial tasks, per trial) **{sw['overhead']:.2f} s**; "
        f"{sw['failed']} failed trials.",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
