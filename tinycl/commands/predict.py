"""`tinycl predict LEARNER INPUTS [--csv FILE]`: labels from a saved learner, without its data or any training.

LEARNER: a run folder written by `tinycl run --out` (or its learner/ folder). INPUTS: a .npy array of samples
(N, *sample_shape) or one sample, a .npz holding such an array as `x` (or as its only array), or a folder of
images (.png, .jpg, .bmp; each converted to the learner's channels and resized to its input size). Samples are
what the run's data set holds (e.g. uint8 pixels CHW, or the loader's audio features); the saved learner applies
its own normalisation. Prints one line per sample (index or file name, label, class name), or writes them to
--csv. Nothing is unpickled: arrays are read with allow_pickle=False, the learner from JSON and safetensors.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

__all__ = ["add_parser", "run", "read_inputs"]

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp")


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="labels for inputs from a saved learner (tinycl run's OUT/learner)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("learner", type=Path, help="a run folder (tinycl run --out) or its learner/ folder")
    p.add_argument("inputs", type=Path, help=".npy / .npz array of samples, or a folder of images")
    p.add_argument("--csv", type=Path, default=None, help="write name,label,class rows here instead of printing")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.set_defaults(handler=run)


def _images(folder: Path, shape: tuple[int, ...]) -> tuple[list[str], np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    from tinycl.errors import DataError

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXT)
    if not files:
        raise DataError(f"{folder}: no image files ({', '.join(IMAGE_EXT)}) in this folder")
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise DataError(f"{folder}: the learner takes samples of shape {shape}, not images; give a .npy or .npz")
    out = []
    for f in files:
        try:
            with Image.open(f) as im:
                im = im.convert("L" if shape[0] == 1 else "RGB").resize((shape[2], shape[1]))
                a = np.asarray(im, np.uint8)
        except (OSError, UnidentifiedImageError, ValueError):
            raise DataError(f"{f}: not a readable image") from None
        out.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    return [f.name for f in files], np.stack(out)


def read_inputs(path: Path, shape: tuple[int, ...]) -> tuple[list[str], np.ndarray]:
    """(names, samples (N, *shape)) from INPUTS; one-line DataError naming the file and what is allowed."""
    from tinycl.errors import DataError

    if path.is_dir():
        return _images(path, shape)
    if path.suffix not in (".npy", ".npz") or not path.is_file():
        raise DataError(f"{path}: inputs must be a .npy or .npz file or a folder of images")
    try:
        data = np.load(path, allow_pickle=False)
        if path.suffix == ".npz":
            keys = list(data.keys())
            if "x" not in keys and len(keys) != 1:
                raise DataError(f"{path}: holds {', '.join(keys) or 'no arrays'}; expected an array named x")
            data = data["x" if "x" in keys else keys[0]]
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{path}: not a readable NumPy array ({str(err).splitlines()[0]}); object arrays are "
                        f"refused") from None
    x = np.asarray(data)
    if tuple(x.shape) == shape:
        x = x[None]
    if tuple(x.shape[1:]) != shape or x.dtype.kind not in "uif":
        raise DataError(f"{path}: array of shape {x.shape} and dtype {x.dtype}; the learner takes numbers of "
                        f"shape (N, {', '.join(map(str, shape))})")
    return [str(i) for i in range(len(x))], x


def run(args) -> int:
    import torch

    from tinycl.runner import load_predictor

    torch.set_num_threads(max(1, args.threads))
    learner, saved = load_predictor(args.learner)
    names, x = read_inputs(args.inputs, tuple(saved.data["sample_shape"]))
    labels = learner.predict(x)
    classes = saved.data["classes"]
    rows = [(n, int(k), classes[k] if k < len(classes) else "") for n, k in zip(names, labels, strict=True)]
    if args.csv is not None:
        from tinycl.io import atomic_output

        with atomic_output(args.csv) as tmp, open(tmp, "w", newline="") as f:
            csv.writer(f).writerows([("input", "label", "class"), *rows])
        print(f"wrote {len(rows)} labels to {args.csv}")
    else:
        csv.writer(sys.stdout, delimiter="\t", lineterminator="\n").writerows(rows)
    return 0
