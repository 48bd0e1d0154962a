"""Does a latent-replay learner tell old classes from new ones by the form of their latents? Evaluates a finished
run's saved learner on each experience's test data twice: on the latents as the frozen stage gives them, and on the
same latents passed through the learner's own Q-bit memory quantizer (the form its replayed latents had in training).

    .venv/bin/python benchmarks/qlr_form_probe.py RUN_DIR [RUN_DIR ...]

RUN_DIR: a `tinycl run --out` directory or a sweep trial (runs/<sweep>/trials/<trial>) of a latent_replay learner with
memory.bits < 32. A learner trained with memory.new_latents = "exact" that scores old classes far better on the
quantized form (and the newest class worse) has learned the form, not the classes (docs/results/qlr_study.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from tinycl.runner import prepare
from tinycl.saved import SavedLearner
from tinycl.strategies import make_learner


def probe(run_dir: Path) -> list[tuple[float, float]]:
    """Per experience: (accuracy on exact latents, accuracy on latents in the memory's form)."""
    saved = SavedLearner.load(run_dir)
    setup = prepare(saved.cfg, saved=saved)
    learner = make_learner(saved.cfg, setup)
    saved.restore(learner)
    mem = learner.memory
    if mem.bits == 32 or mem.scale_ is None:
        raise SystemExit(f"{run_dir}: no Q-bit memory to probe (memory.bits {mem.bits})")
    rows = []
    for test in setup.scenario.test:
        z = learner.encoder(test.x, test.ids)
        exact = float((learner.predict_latents(z) == test.y).mean())
        stored = float((learner.predict_latents(mem.decode(mem.encode(z)).astype(np.float32)) == test.y).mean())
        rows.append((exact, stored))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for run in args.runs:
        cfg = SavedLearner.load(run).cfg
        print(f"{run}: {cfg.memory.bits}-bit memory, new_latents {cfg.memory.new_latents}")
        print("| experience | exact latents % | latents in the memory's form % |\n|---|---|---|")
        for i, (exact, stored) in enumerate(probe(run)):
            print(f"| {i} | {100 * exact:.1f} | {100 * stored:.1f} |")


if __name__ == "__main__":
    main()
