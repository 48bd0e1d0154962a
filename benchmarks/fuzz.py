"""The longer fuzzing run (tests/test_fuzz.py runs the same checks on a small budget in `make test`).

    .venv/bin/python benchmarks/fuzz.py --seconds 300

For --seconds per target, random inputs go to the config reader (dicts of real keys with random values, and
random bytes as a TOML file) and to the .tflite importer (byte edits and truncations of a small model). A finding
is any exception other than a one-line TinyclError; findings are written to benchmarks/fuzz_findings/ and
counted. Prints: target, inputs tried, accepted, refused (one line), findings.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from tinycl.config import KEYS, RunConfig, config_from_dict, read_config_file  # noqa: E402
from tinycl.errors import TinyclError  # noqa: E402

VALUES = [None, True, 0, 1, -1, 2 ** 63, -(2 ** 70), 0.5, 1e308, float("nan"), float("inf"), -0.0, "", "x",
          "3", "conv3", "input", "\n", [1, 2], [], {"a": 1}, {"f_max": 9000.0}]


def _value(rng):
    v = VALUES[rng.integers(len(VALUES))]
    return float(rng.normal() * 10.0 ** int(rng.integers(-3, 12))) if v == 0.5 else v


def config_case(rng, folder: Path):
    if rng.random() < 0.5:
        data: dict = {}
        for key in rng.choice(sorted(KEYS) + ["data.options.per_class", "bogus"], size=rng.integers(1, 4)):
            node = data
            *heads, last = str(key).split(".")
            for h in heads:
                node = node.setdefault(h, {})
            if isinstance(node, dict):
                node[last] = _value(rng)
        return lambda: config_from_dict(RunConfig, data), repr(data).encode()
    raw = rng.integers(0, 256, rng.integers(0, 200), dtype=np.uint8).tobytes()
    if rng.random() < 0.5:
        raw = b"[train]\nlr = " + raw
    path = folder / "c.toml"
    path.write_bytes(raw)
    return lambda: read_config_file(path), raw


def tflite_case(rng, folder: Path, model: bytes):
    from tinycl.model.tflite import load_tflite

    raw = bytearray(model)
    for _ in range(rng.integers(1, 8)):
        raw[rng.integers(len(raw))] = rng.integers(256)
    if rng.random() < 0.2:
        raw = raw[: rng.integers(len(raw))]
    path = folder / "m.tflite"
    path.write_bytes(bytes(raw))
    return lambda: load_tflite(path), bytes(raw)


def run(target: str, seconds: float, seed: int, out: Path) -> tuple[int, int, int, int]:
    rng = np.random.default_rng(seed)
    folder = Path(tempfile.mkdtemp())
    model = None
    if target == "tflite":
        from litert_util import random_qmodel
        from test_intexec import spec_head

        from tinycl.model.tflite_export import to_tflite
        model = to_tflite(random_qmodel(spec_head(), "int8", True, seed=2))
    tried = accepted = refused = findings = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        call, raw = config_case(rng, folder) if target == "config" else tflite_case(rng, folder, model)
        tried += 1
        try:
            call()
            accepted += 1
        except TinyclError as err:
            refused += 1
            if "\n" in str(err):
                findings += 1
                (out / f"{target}-{tried}.bin").write_bytes(raw)
        except Exception:  # noqa: BLE001 - every other exception is a finding
            findings += 1
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{target}-{tried}.bin").write_bytes(raw)
    return tried, accepted, refused, findings


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="per target")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--targets", nargs="+", default=["config", "tflite"], choices=["config", "tflite"])
    args = p.parse_args()
    out = Path(__file__).parent / "fuzz_findings"
    print("target  seconds  tried  accepted  refused  findings")
    for target in args.targets:
        tried, accepted, refused, findings = run(target, args.seconds, args.seed, out)
        print(f"{target:6s}  {args.seconds:7.0f}  {tried:5d}  {accepted:8d}  {refused:7d}  {findings:8d}")


if __name__ == "__main__":
    main()
