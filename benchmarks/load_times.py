"""Load time of each data set, cold (decoded from the source files, cache off) and cached (second load from
the .npz cache), medians over repeats; prints a Markdown table for docs/data.md.

    .venv/bin/python benchmarks/load_times.py [--data-root ../shared/data] [--repeats 3]

CORe50's images are not available offline: its row uses a synthetic image folder in the official layout
(smooth 128x128 PNGs named after the first lines of run0's batch 0 and the 1-in-20 test list), so it measures
the loader's per-image cost, not the real files'.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tinycl.data.core50 import find_core50_lists, load_core50, read_nicv2_lists
from tinycl.data.registry import LOADERS, resolve_data_root


def _timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _synthetic_core50(root: Path, data_root: Path, rng: np.random.Generator) -> dict:
    """run0 batch 0 + the 1-in-20 test images as smooth PNGs (upsampled 16x16 noise), lists copied."""
    lists = read_nicv2_lists(find_core50_lists(data_root))
    paths = list(lists.runs[0][0][0]) + list(lists.test[0][::20])
    top = root / "core50"
    for p in paths:
        small = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
        (top / "core50_128x128" / p).parent.mkdir(parents=True, exist_ok=True)
        small.resize((128, 128), Image.BILINEAR).save(top / "core50_128x128" / p)
    return {"lists": find_core50_lists(data_root), "images": top / "core50_128x128", "run": 0, "max_batches": 1}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--repeats", type=int, default=3, help="repeats of each measurement (median reported)")
    ap.add_argument("--only", nargs="*", default=None, help="data sets to measure (default: all found)")
    args = ap.parse_args(argv)
    root = resolve_data_root(args.data_root)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        jobs = [(name, LOADERS[name], root, {}) for name in ("mnist", "cifar10", "speech_commands", "har")]
        if not args.only or "core50" in args.only:
            try:
                options = _synthetic_core50(Path(tmp), root, np.random.default_rng(0))
                jobs.append(("core50 (synthetic images, run0 batch 0 + test/20)", load_core50, Path(tmp), options))
            except Exception as err:  # lists missing: no CORe50 row
                print(f"core50 skipped: {err}", file=sys.stderr)
        for name, loader, data_root, options in jobs:
            if args.only and name.split()[0] not in args.only:
                continue
            try:
                cold, ds = _timed(lambda: loader(data_root, cache=False, **options), args.repeats)  # noqa: B023
            except Exception as err:
                print(f"{name} skipped: {err}", file=sys.stderr)
                continue
            t0 = time.perf_counter()
            loader(data_root, cache=cache, **options)  # fills the cache
            fill = time.perf_counter() - t0
            cached, _ = _timed(lambda: loader(data_root, cache=cache, **options), args.repeats)  # noqa: B023
            n = len(ds.y_train) + len(ds.y_test)
            nbytes = ds.x_train.nbytes + ds.x_test.nbytes
            rows.append((name, n, nbytes / 2**20, cold, fill, cached))
            print(f"{name}: cold {cold:.2f} s, cache fill {fill:.2f} s, cached {cached:.3f} s", file=sys.stderr)
    print(f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, Python {platform.python_version()}, "
          f"median of {args.repeats}.\n")
    print("| data set | samples | decoded MiB | cold (s) | first load, filling the cache (s) | cached (s) | "
          "cold / cached |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, n, mib, cold, fill, cached in rows:
        print(f"| {name} | {n:,} | {mib:.0f} | {cold:.2f} | {fill:.2f} | {cached:.3f} | {cold / cached:.0f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
