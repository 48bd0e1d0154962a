"""Google Speech Commands (v0.01/v0.02) under <root>/speech_commands/: `<word>/<speaker>_nohash_<n>.wav`
folders as an extracted directory or a `.tar.gz` read in place (the largest archive there if several).

Classes: `_silence_`, `_unknown_`, then the keywords (default the 10 of the 12-class task, so indices 0..3 are
micro_speech's silence, unknown, yes, no).
- keyword folders -> their class; `_silence_/` -> silence; `_unknown_/` and every other word folder -> unknown.
  The unknown class is capped at the size of the largest keyword class (evenly spaced picks over the sorted
  file names), as the official pipeline keeps unknown at about one class's share.
- without a `_silence_/` folder (the full data set), silence clips are cut from `_background_noise_/*.wav`:
  as many as the mean keyword class, 1 s each, scaled by volumes spread over [0, 0.1] like the official
  background volume; each cut is its own group for the split.
- train/test split, `split=`:
  "official": the archive's `testing_list.txt` is test, everything else (validation included) is train;
  "speaker": by speaker (the file-name part before `_nohash_`): a speaker goes to test if a salted sha1 of
  its id falls below `test_percent` (the official hash without a salt would send every speaker of the
  official test set to the same side); no speaker is on both sides, and the split never depends on a seed;
  "auto" (default): "official" when `testing_list.txt` is there, else "speaker".
Features: log-mel (see tinycl.data.audio), x float32 (N, 1, 49, 40).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tinycl.data.audio import LogMelConfig, log_mel, read_wav
from tinycl.data.cache import cached_arrays
from tinycl.data.dataset import Dataset
from tinycl.data.files import iter_tar, scan_tar
from tinycl.errors import ConfigError, DataError

__all__ = ["load_speech_commands", "find_speech_commands", "count_speech_commands", "speaker_split", "speaker_of",
           "KEYWORDS", "SPLITS", "LAYOUT"]

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SILENCE, UNKNOWN, NOISE = "_silence_", "_unknown_", "_background_noise_"
LAYOUT = ("speech_commands/<word>/<speaker>_nohash_<n>.wav folders, or the official .tar.gz "
          "(speech_commands_v0.02.tar.gz or speech_commands_test_set_v0.02.tar.gz)")
MAX_NUM_WAVS_PER_CLASS = 2 ** 27 - 1  # the official split's hash modulus (tensorflow/examples/speech_commands)
SPLIT_SALT = "tinycl-speaker-split:"
SPLITS = ("auto", "official", "speaker")
TEST_LIST = "testing_list.txt"
NOISE_VOLUME = 0.1  # the official pipeline's default background volume


def find_speech_commands(root: Path) -> tuple[str, Path]:
    """("dir", folder) if <root>/speech_commands holds word folders with .wav files, else ("tar", archive)."""
    d = Path(root) / "speech_commands"
    if d.is_dir() and any(d.glob("*/*.wav")):
        return "dir", d
    tars = sorted(list(d.glob("*.tar.gz")) + list(d.glob("*.tgz")), key=lambda p: (-p.stat().st_size, p.name)) \
        if d.is_dir() else []
    if tars:
        return "tar", tars[0]
    raise DataError(f"no Speech Commands found in {d}: expected {LAYOUT}")


def speaker_of(filename: str) -> str | None:
    """The speaker id of `[word_]<speaker>_nohash_<n>.wav` (the token before `_nohash_`), else None."""
    m = re.search(r"([^_/]+)_nohash_", filename)
    return m.group(1) if m else None


def speaker_split(group: str, test_percent: float) -> str:
    """"test" or "train" for a speaker (or group) name: the official hash-to-percentage rule applied to a salted
    name, so it is stable across runs and machines and independent of the official assignment."""
    h = int(hashlib.sha1((SPLIT_SALT + group).encode()).hexdigest(), 16)
    percentage = (h % (MAX_NUM_WAVS_PER_CLASS + 1)) * (100.0 / MAX_NUM_WAVS_PER_CLASS)
    return "test" if percentage < test_percent else "train"


def _key(name: str) -> str:
    """`<word>/<file>.wav`: a clip's name relative to the data set's top folder, as testing_list.txt writes it."""
    return "/".join(name.split("/")[-2:])


def _scan(kind: str, path: Path) -> tuple[list[str], set[str] | None]:
    """Sorted names of the .wav files one folder deep (as stored: relative to the folder, or archive paths),
    and the entries of the official `testing_list.txt` if the data has one."""
    if kind == "dir":
        names = [p.relative_to(path).as_posix() for p in path.glob("*/*.wav")]
        listed = (path / TEST_LIST).read_bytes() if (path / TEST_LIST).is_file() else None
    else:
        names, contents = scan_tar(path, lambda n: n.split("/")[-1] == TEST_LIST)
        names = [n for n in names if n.endswith(".wav") and "/" in n]
        listed = next(iter(contents.values()), None)
    tests = None if listed is None else {line.strip() for line in listed.decode().splitlines() if line.strip()}
    return sorted(names, key=_key), tests


def _evenly(items: list, n: int) -> list:
    if len(items) <= n:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


class Clip(NamedTuple):
    name: str  # path in the source; for a silence cut: "<noise file>#<cut index>"
    label: int
    group: str  # speaker, or the clip itself when it has none
    split: str  # "train" or "test"
    start: int = 0  # first sample of a cut from a background-noise file
    volume: float = 1.0


def _plan(names: list[str], official_tests: set[str] | None, keywords: tuple[str, ...], split: str,
          test_percent: float, clip_samples: int) -> list[Clip]:
    """Every clip of the data set with its label, group and split, from the file names alone."""
    folders = {n.split("/")[-2] for n in names}
    if missing := [k for k in keywords if k not in folders]:
        raise ConfigError(f"keywords {missing} have no folder in the data; available: "
                          f"{', '.join(sorted(folders - {SILENCE, UNKNOWN, NOISE}))}")
    if split == "auto":
        split = "official" if official_tests is not None else "speaker"
    if split == "official" and official_tests is None:
        raise DataError(f"split='official' needs the data set's {TEST_LIST}, not found; use split='speaker'")
    by_label: dict[int, list[str]] = {}
    noise = []
    for n in names:
        folder = n.split("/")[-2]
        if folder == NOISE:
            noise.append(n)
            continue
        label = 0 if folder == SILENCE else keywords.index(folder) + 2 if folder in keywords else 1
        by_label.setdefault(label, []).append(n)
    sizes = [len(by_label.get(k + 2, [])) for k in range(len(keywords))]
    by_label[1] = _evenly(by_label.get(1, []), max(sizes))
    plan = []
    for label, clips in sorted(by_label.items()):
        for n in clips:
            group = speaker_of(n.split("/")[-1]) or _key(n)  # silence clips have no speaker: each is its own group
            side = ("test" if _key(n) in official_tests else "train") if split == "official" \
                else speaker_split(group, test_percent)
            plan.append(Clip(n, label, group, side))
    if 0 not in by_label and noise:
        for k in range(round(float(np.mean(sizes)))):
            name = f"{noise[k % len(noise)]}#{k // len(noise)}"
            # volumes spread over [0, NOISE_VOLUME) by the golden ratio: deterministic, no rng needed
            plan.append(Clip(name, 0, _key(name), speaker_split(_key(name), test_percent),
                             k // len(noise) * clip_samples, NOISE_VOLUME * ((k * 0.6180339887) % 1.0)))
    return plan


def _decode(kind: str, path: Path, plan: list[Clip], cfg: LogMelConfig) -> dict[str, np.ndarray]:
    files = {c.name.split("#")[0] for c in plan}
    if kind == "dir":
        raw = {n: (path / n).read_bytes() for n in sorted(files)}
    else:
        raw = dict(iter_tar(path, files.__contains__))
    waves = np.empty((len(plan), cfg.clip_samples), dtype=np.float32)
    noise: dict[str, np.ndarray] = {}
    for i, c in enumerate(plan):
        file = c.name.split("#")[0]
        if file == c.name:
            waves[i] = read_wav(raw[file], f"{path}:{file}", cfg.sample_rate, cfg.clip_samples)
            continue
        if file not in noise:  # background noise recordings run for a minute or more
            noise[file] = read_wav(raw[file], f"{path}:{file}", cfg.sample_rate, None)
        x = noise[file]
        if len(x) < cfg.clip_samples:
            raise DataError(f"{path}:{file}: {len(x)} samples, expected background noise of at least "
                            f"{cfg.clip_samples}")
        start = c.start % (len(x) - cfg.clip_samples + 1)
        waves[i] = x[start: start + cfg.clip_samples] * c.volume
    feats = log_mel(waves, cfg)[:, None]  # (N, 1, frames, mels)
    out = {}
    for side in ("train", "test"):
        idx = np.array([i for i, c in enumerate(plan) if c.split == side], dtype=np.int64)
        out[f"x_{side}"] = feats[idx]
        out[f"y_{side}"] = np.array([plan[i].label for i in idx], dtype=np.int64)
        out[f"{side}_groups"] = np.array([plan[i].group for i in idx], dtype=str)
        out[f"{side}_files"] = np.array([_key(plan[i].name) for i in idx], dtype=str)
    return out


def _check(keywords, split: str, test_percent: float) -> tuple[str, ...]:
    keywords = tuple(keywords)
    if not keywords or len(set(keywords)) != len(keywords) or {SILENCE, UNKNOWN, NOISE} & set(keywords):
        raise ConfigError(f"keywords must be distinct word folder names, got {keywords}")
    if split not in SPLITS:
        raise ConfigError(f"split {split!r} not allowed; allowed: {', '.join(SPLITS)}")
    if not 0 < test_percent < 100:
        raise ConfigError(f"test_percent must be in (0, 100), got {test_percent}")
    return keywords


def count_speech_commands(root: Path, *, keywords=KEYWORDS, split: str = "auto",
                          test_percent: float = 20.0) -> tuple[int, int]:
    """(n_train, n_test) from the file names alone (no audio decoded)."""
    keywords = _check(keywords, split, test_percent)
    kind, path = find_speech_commands(root)
    plan = _plan(*_scan(kind, path), keywords, split, test_percent, LogMelConfig().clip_samples)
    n_test = sum(c.split == "test" for c in plan)
    return len(plan) - n_test, n_test


def load_speech_commands(root: Path, *, keywords: tuple[str, ...] = KEYWORDS, split: str = "auto",
                         test_percent: float = 20.0, features: LogMelConfig | dict | None = None,
                         cache: bool | str | Path = True) -> Dataset:
    """Keyword spotting: x float32 (N, 1, 49, 40) log-mel, y int64 over ("_silence_", "_unknown_", *keywords).

    split: "auto", "official" or "speaker"; test_percent: the test share of speakers for "speaker" (module doc).
    features: front-end settings (a LogMelConfig or a dict of its fields); default 40 mels, 30 ms / 20 ms.
    meta: "train_groups"/"test_groups" (speaker per clip), "train_files"/"test_files" (`<word>/<file>.wav`).
    cache: True (default dir), False (off) or a cache directory (see tinycl.data.cache)."""
    keywords = _check(keywords, split, test_percent)
    if not isinstance(features, LogMelConfig):
        try:
            features = LogMelConfig(**(features or {}))
        except TypeError as err:
            raise ConfigError(f"features: {err}; allowed: {', '.join(LogMelConfig.__dataclass_fields__)}") from err
    kind, path = find_speech_commands(Path(root))
    # an archive keys the cache by itself, so a cached load skips listing its members
    sources = sorted(path.glob("*/*.wav")) + sorted(path.glob(TEST_LIST)) if kind == "dir" else [path]
    options = {"keywords": keywords, "split": split, "test_percent": test_percent, "features": asdict(features)}

    def build():
        names, official_tests = _scan(kind, path)
        return _decode(kind, path, _plan(names, official_tests, keywords, split, test_percent,
                                         features.clip_samples), features)

    a = cached_arrays("speech_commands", sources, options, build, cache)
    meta = {"source": str(path), "raw_bits": 32, "sample_rate": features.sample_rate,
            **{k: a[k] for k in ("train_groups", "test_groups", "train_files", "test_files")}}
    return Dataset("speech_commands", a["x_train"], a["y_train"], a["x_test"], a["y_test"],
                   (SILENCE, UNKNOWN, *keywords), meta)
