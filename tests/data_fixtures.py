"""Writers of small data sets in exactly the official file formats, for loader tests (generated in tmp_path)."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
import wave
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
HAR_SIGNALS = ("body_acc_x", "body_acc_y", "body_acc_z", "body_gyro_x", "body_gyro_y", "body_gyro_z",
               "total_acc_x", "total_acc_y", "total_acc_z")


def idx_bytes(a: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic 0x0000 08 <ndim>, big-endian uint32 dims, raw values."""
    return struct.pack(">HBB", 0, 0x08, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(np.uint8).tobytes()


def write_mnist(root: Path, rng: np.random.Generator, n_train: int = 50, n_test: int = 20) -> dict[str, np.ndarray]:
    """root/mnist/*-ubyte.gz with random images and labels 0..9; returns the arrays written."""
    d = root / "mnist"
    d.mkdir(parents=True, exist_ok=True)
    arrays = {"x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "y_train": np.arange(n_train, dtype=np.uint8) % 10,
              "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "y_test": rng.permutation(np.arange(n_test, dtype=np.uint8) % 10)}
    for name, key in (("train-images-idx3-ubyte", "x_train"), ("train-labels-idx1-ubyte", "y_train"),
                      ("t10k-images-idx3-ubyte", "x_test"), ("t10k-labels-idx1-ubyte", "y_test")):
        (d / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(arrays[key])))
    return arrays


def cifar_batches(rng: np.random.Generator, per_batch: int = 20) -> dict[str, dict]:
    """The six official python batches (random pixels) as dicts with bytes keys, as cPickle wrote them."""
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        out[name] = {b"batch_label": f"{name} of 5".encode(), b"labels": labels,
                     b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                     b"filenames": [f"img_{name}_{i}.png".encode() for i in range(per_batch)]}
    out["batches.meta"] = {b"num_cases_per_batch": per_batch, b"label_names": [c.encode() for c in CIFAR_CLASSES],
                           b"num_vis": 3072}
    return out


def write_cifar_batches(folder: Path, batches: dict[str, dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, obj in batches.items():
        (folder / name).write_bytes(pickle.dumps(obj, protocol=2))


def tar_dir(src: Path, dest: Path, arcname: str) -> None:
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(src, arcname=arcname)


def write_cifar_folders(folder: Path, rng: np.random.Generator, per_class: tuple[int, int] = (3, 2)) -> dict:
    """{train,test}/<class>/NNNN.png with random pixels; returns {relative path: (label, CHW uint8 array)}."""
    written = {}
    for split, n in zip(("train", "test"), per_class, strict=True):
        for c, cls in enumerate(CIFAR_CLASSES):
            (folder / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                rel = f"{split}/{cls}/{i:04d}.png"
                Image.fromarray(img).save(folder / rel)
                written[rel] = (c, img.transpose(2, 0, 1))
    return written


def wav_bytes(samples: np.ndarray, rate: int = 16000, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, dtype="<i2").tobytes())
    return buf.getvalue()


def write_speech_commands(folder: Path, rng: np.random.Generator, words: dict[str, list[str]],
                          silence: int = 0, noise_files: int = 0) -> None:
    """folder/<word>/<speaker>_nohash_<n>.wav for each (word, speakers); `_unknown_/` files are named
    <word>_<speaker>_nohash_<n>.wav.wav as in the official test set; `silence` clips in _silence_/<k>.wav;
    `noise_files` 3 s recordings in _background_noise_/."""
    for word, speakers in words.items():
        (folder / word).mkdir(parents=True, exist_ok=True)
        for k, spk in enumerate(speakers):
            n = 16000 - 800 * (k % 3)  # some clips shorter than 1 s, as in the real data
            name = f"{spk}_nohash_{k}.wav" if word != "_unknown_" else f"bed_{spk}_nohash_{k}.wav.wav"
            (folder / word / name).write_bytes(wav_bytes(rng.integers(-3000, 3000, n)))
    if silence:
        (folder / "_silence_").mkdir(parents=True, exist_ok=True)
        for k in range(silence):
            (folder / "_silence_" / f"{k}.wav").write_bytes(wav_bytes(rng.integers(-30, 30, 16000)))
    if noise_files:
        (folder / "_background_noise_").mkdir(parents=True, exist_ok=True)
        for k in range(noise_files):
            (folder / "_background_noise_" / f"noise_{k}.wav").write_bytes(wav_bytes(rng.integers(-9000, 9000, 48000)))


def _matlab(v: float) -> str:
    mantissa, exponent = f"{v: .7e}".split("e")
    return f" {mantissa}e{exponent[0]}{int(exponent[1:]):03d}"


def write_uci_har(root: Path, rng: np.random.Generator, n: tuple[int, int] = (12, 6)) -> dict[str, np.ndarray]:
    """root/'UCI HAR Dataset'/ in the official text layout; returns the arrays written per split."""
    top = root / "UCI HAR Dataset"
    (top / "activity_labels.txt").parent.mkdir(parents=True, exist_ok=True)
    (top / "activity_labels.txt").write_text("1 WALKING\n2 WALKING_UPSTAIRS\n3 WALKING_DOWNSTAIRS\n4 SITTING\n"
                                             "5 STANDING\n6 LAYING\n")
    out = {}
    for split, count in zip(("train", "test"), n, strict=True):
        sig_dir = top / split / "Inertial Signals"
        sig_dir.mkdir(parents=True, exist_ok=True)
        signals = {s: rng.normal(0, 0.5, (count, 128)).astype(np.float32) for s in HAR_SIGNALS}
        for s, a in signals.items():
            # as in the official files: rows of 128 values like "  1.0128500e+000 -1.2337670e-001"
            (sig_dir / f"{s}_{split}.txt").write_text("\n".join("".join(_matlab(v) for v in row) for row in a) + "\n")
        y = (np.arange(count) % 6 + 1).astype(np.int64)
        subject = rng.integers(1, 31, count)
        (top / split / f"y_{split}.txt").write_text("".join(f"{v}\n" for v in y))
        (top / split / f"subject_{split}.txt").write_text("".join(f"{v}\n" for v in subject))
        out[split] = {"signals": signals, "y": y, "subject": subject}
    return out


def write_core50(root: Path, rng: np.random.Generator, lists: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """root/NICv2_391/<list file> with the given lines, and root/core50_128x128/<path> a random 128x128 PNG
    for every path named; returns {path: CHW uint8 array}."""
    images = {}
    for name, lines in lists.items():
        f = root / "NICv2_391" / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("".join(line + "\n" for line in lines))
        for line in lines:
            path = line.split()[0]
            if path not in images:
                img = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
                (root / "core50_128x128" / path).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(root / "core50_128x128" / path)
                images[path] = img.transpose(2, 0, 1)
    return images
