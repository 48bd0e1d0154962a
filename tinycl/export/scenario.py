"""The stream an exported learner is run on, and the lines it must print.

`write_scenario(dl, path)` writes scenario.bin (format: templates/main.c) from the configured scenario: the test
sets, then the training experiences, each sample as the frozen stage's int8 input codes and a label byte.
`reference_lines(dl)` runs the same stream through the host learner in device mode and returns the lines main.c
prints: correct counts per test set, and CRC-32s of the predictions, the adaptive weights, the replay memory and
the saved state; a firmware that prints the same lines computed the same bits.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from tinycl.device.int8 import code_offset
from tinycl.export.codegen import state_fields
from tinycl.export.learner import DeviceLearner, input_codes
from tinycl.io import atomic_output

__all__ = ["write_scenario", "reference_lines", "format_line", "seen_accuracies"]


def _records(dl: DeviceLearner, x: np.ndarray, y: np.ndarray) -> bytes:
    codes = input_codes(dl.setup.frozen, x).reshape(len(y), -1).astype(np.int16)
    codes = (codes - code_offset(dl.stage.spec.input_quant)).astype(np.int8)  # uint8 models run shifted (int8.c)
    rows = np.concatenate([codes.view(np.uint8), np.asarray(y, np.uint8)[:, None]], axis=1)
    return struct.pack("<I", len(y)) + rows.tobytes()


def write_scenario(dl: DeviceLearner, path: Path, experiences: int | None = None) -> Path:
    """scenario.bin of the configured stream (its first `experiences` experiences, default all)."""
    sc = dl.setup.scenario
    train = sc.train[:experiences]
    size = int(np.prod(dl.stage.spec.input_shape))
    with atomic_output(Path(path), suffix=".bin") as tmp:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<5I", 0x534C4354, 1, size, len(train), len(sc.test)))
            for t in sc.test:
                f.write(_records(dl, t.x, t.y))
            for e in train:
                f.write(_records(dl, e.x, e.y))
    return Path(path)


def format_line(i: int, correct: list[int], total: list[int], crcs: tuple[int, int, int, int]) -> str:
    """The line main.c prints after experience i."""
    seen_c, seen_t = sum(correct[: i + 1]), sum(total[: i + 1])
    tests = " ".join(f"{c}/{t}" for c, t in zip(correct, total, strict=True))
    p, w, m, s = crcs
    return (f"experience {i}: seen {seen_c}/{seen_t} tests {tests} predictions {p:08x} weights {w:08x} "
            f"memory {m:08x} state {s:08x}")


def seen_accuracies(lines: list[str]) -> list[float]:
    """Accuracy on the classes seen after each experience, read back from main.c's lines (format_line's)."""
    out = []
    for line in lines:
        correct, total = line.split(" seen ", 1)[1].split(maxsplit=1)[0].split("/")
        out.append(int(correct) / int(total))
    return out


def reference_lines(dl: DeviceLearner, experiences: int | None = None) -> list[str]:
    """main.c's lines for the host learner in device mode on the same stream (the learner is trained in place)."""
    sc, learner = dl.setup.scenario, dl.learner
    lines = []
    for i, exp in enumerate(sc.train[:experiences]):
        learner.partial_fit(exp)
        preds, correct = [], []
        for t in sc.test:
            p = learner.predict(t.x, t.ids)
            preds.append(p.astype(np.uint8))
            correct.append(int((p == t.y).sum()))
        fields = state_fields(dl)
        crcs = (zlib.crc32(np.concatenate(preds).tobytes()), zlib.crc32(fields["weights"]),
                zlib.crc32(fields["memory"]), zlib.crc32(b"".join(fields.values())))
        lines.append(format_line(i, correct, [len(t.y) for t in sc.test], crcs))
    return lines
