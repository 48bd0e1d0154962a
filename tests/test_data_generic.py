"""The generic loaders (image folder, WAV folder, arrays) on small fixtures in their layouts, end to end from a TOML
config; the Python extension point of docs/data.md, executed; `tinycl data inspect`."""

import json
import re
import tarfile
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinycl.cli import main
from tinycl.data.audio import read_wav_any, resample
from tinycl.data.registry import LOADERS, load_dataset
from tinycl.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
RUN = ('strategy = "latent_replay"\nseed = 0\n[data]\nname = "{name}"\nroot = "{root}"\nfirst_classes = 2\n'
       '{options}[model]\narch = "mlp"\nsplit = "input"\npretrain_epochs = 1\n[memory]\ncapacity = 20\n'
       '[train]\nepochs = 1\nbatch_size = 8\n')


def write_images(folder: Path, rng, classes=("circle", "square", "tri"), n=10, size=(12, 12)) -> None:
    for c in classes:
        (folder / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / c / f"{i:03d}.png")


def write_wav(path: Path, rate: int, freq: float, seconds: float = 1.0) -> None:
    t = np.arange(int(rate * seconds)) / rate
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes((np.sin(2 * np.pi * freq * t) * 8000).astype("<i2").tobytes())


def write_wavs(folder: Path) -> None:
    """yes/no/up spoken by 6 speakers, odd speakers at 8 kHz, named <word>_<speaker>_<take>.wav (no folders)."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, word in enumerate(("yes", "no", "up")):
        for spk in range(6):
            write_wav(folder / f"{word}_s{spk}_0.wav", 8000 if spk % 2 else 16000, 300 + 500 * k)


def run_toml(tmp_path, name, root, options="") -> dict:
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(RUN.format(name=name, root=Path(root).as_posix(), options=options))
    out = tmp_path / f"out-{name}"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    return json.loads((out / "metrics.json").read_text())


def test_image_folder_in_a_tar_gz_end_to_end(tmp_path):
    write_images(tmp_path / "imgs" / "shapes", np.random.default_rng(0))
    with tarfile.open(tmp_path / "shapes.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "imgs" / "shapes", arcname="shapes")
    ds = load_dataset("image_folder", tmp_path / "shapes.tar.gz", cache=False)
    assert ds.name == "shapes" and ds.classes == ("circle", "square", "tri")
    assert ds.x_train.shape == (24, 3, 12, 12) and len(ds.y_test) == 6  # every 5th file of each class is test
    m = run_toml(tmp_path, "image_folder", tmp_path / "shapes.tar.gz", '[data.options]\ncache = false\n')
    assert m["experiences_done"] == 2


def test_image_folder_given_split_sizes_and_gray(tmp_path):
    rng = np.random.default_rng(1)
    write_images(tmp_path / "d" / "train", rng, ("a", "b"), 3)
    write_images(tmp_path / "d" / "test", rng, ("a", "b"), 2, size=(20, 16))
    with pytest.raises(DataError, match="set data.options.size"):
        load_dataset("image_folder", tmp_path / "d", cache=False)
    ds = load_dataset("image_folder", tmp_path / "d", cache=False, size=[8, 8], gray=True, set_name="ab")
    assert ds.name == "ab" and ds.meta["layout"] == "folders" and ds.x_test.shape == (4, 1, 8, 8)


def test_wav_folder_8_and_16_khz_named_by_pattern_end_to_end(tmp_path):
    write_wavs(tmp_path / "words")
    options = {"label": r"^(?P<label>[a-z]+)_", "group": r"_(?P<group>s\d+)_", "cache": False}
    ds = load_dataset("wav_folder", tmp_path / "words", **options)
    assert ds.classes == ("no", "up", "yes") and ds.meta["sample_rates"] == {8000: 9, 16000: 9}
    assert not set(ds.meta["train_groups"]) & set(ds.meta["test_groups"])  # speakers on one side only
    assert ds.sample_shape == (1, 49, 40)
    toml = ('[data.options]\nlabel = "^(?P<label>[a-z]+)_"\ngroup = "_(?P<group>s\\\\d+)_"\ntest_share = 0.4\n'
            'cache = false\n')
    m = run_toml(tmp_path, "wav_folder", tmp_path / "words", toml)
    assert m["experiences_done"] == 2


def test_resampling_keeps_a_tone():
    t8, t16 = np.arange(8000) / 8000, np.arange(16000) / 16000
    up = resample(np.sin(2 * np.pi * 440 * t8), 8000, 16000)
    assert np.abs(up - np.sin(2 * np.pi * 440 * t16)).max() < 1e-3


def test_arrays_npz_end_to_end(tmp_path):
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "sensor.npz", x=rng.normal(size=(90, 2, 1, 16)).astype(np.float32), y=np.arange(90) % 3)
    ds = load_dataset("arrays", tmp_path / "sensor.npz", classes=["walk", "sit", "run"])
    assert ds.name == "sensor" and ds.classes == ("walk", "sit", "run") and len(ds.y_test) == 18
    m = run_toml(tmp_path, "arrays", tmp_path / "sensor.npz", '[data.options]\nclasses = ["walk", "sit", "run"]\n')
    assert m["experiences_done"] == 2


@pytest.mark.parametrize("arrays,message", [
    ({"x": np.zeros((5, 3)), "y": np.zeros(4, int)}, "expected one label each"),
    ({"x": np.zeros((5, 3)), "y": np.array([0, 1, np.nan, 1, 0])}, "non-integer or non-finite"),
    ({"x": np.full((10, 3), np.nan), "y": np.arange(10) % 2}, "NaN or infinite"),
    ({"x": np.zeros((5, 3))}, "arrays x and y missing"),
    ({"x": np.zeros((10, 3)), "y": np.arange(10) % 2, "groups": np.arange(3)}, "groups has 3 entries"),
])
def test_arrays_refused(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_dataset("arrays", tmp_path / "bad.npz")


def test_wav_header_that_claims_more_than_the_file_is_refused(tmp_path):
    write_wav(tmp_path / "a.wav", 16000, 440, 0.1)
    raw = bytearray((tmp_path / "a.wav").read_bytes())
    raw[40:44] = (2 ** 32 - 8).to_bytes(4, "little")  # the data chunk claims 4 GiB
    with pytest.raises(DataError, match="announces"):
        read_wav_any(bytes(raw), "a.wav")
    with pytest.raises(DataError, match="not a readable PCM WAV"):
        read_wav_any(b"RIFF\x00\x00", "b.wav")


def test_generic_loader_errors_name_the_option(tmp_path):
    write_wavs(tmp_path / "w")
    with pytest.raises(ConfigError, match=r"data.options.features.f_max"):
        load_dataset("wav_folder", tmp_path / "w", features={"f_max": 9000.0, "sample_rate": 16000})
    with pytest.raises(ConfigError, match=r"data.options.group = '\(': not a regular expression"):
        load_dataset("wav_folder", tmp_path / "w", group="(")
    with pytest.raises(DataError, match="does not match data.options.label"):
        load_dataset("wav_folder", tmp_path / "w", label=r"^(?P<label>zz)", cache=False)
    with pytest.raises(ConfigError, match="data.root must name"):
        load_dataset("image_folder", None)


def test_extension_example_in_docs_runs(tmp_path, monkeypatch):
    """The docs/data.md example, executed as written."""
    text = (REPO / "docs" / "data.md").read_text()
    code = re.search(r"<!-- extension example -->\n```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    try:
        exec(compile(code, "docs/data.md", "exec"), {})
        assert "sines" in LOADERS
    finally:
        LOADERS.pop("sines", None)
    assert len(code.strip().splitlines()) <= 25


def test_data_inspect(tmp_path, capsys):
    write_wavs(tmp_path / "w")
    assert main(["data", "inspect", str(tmp_path / "w"), "--set", "label=^(?P<label>[a-z]+)_"]) == 0
    out = capsys.readouterr().out
    assert "loader wav_folder" in out and "sample rates {8000: 9, 16000: 9} Hz" in out and "yes" in out
    assert main(["data", "inspect", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err


def test_readme_own_data_example(tmp_path):
    """The README's own-data TOML (10 lines) runs on a folder of images."""
    text = (REPO / "README.md").read_text()
    toml = re.search(r"<!-- own data -->\n```toml\n(.*?)```", text, re.S).group(1)
    assert len(toml.strip().splitlines()) <= 10
    write_images(tmp_path / "my_images", np.random.default_rng(3), ("cat", "dog", "fox", "owl"))
    cfg = tmp_path / "mine.toml"
    cfg.write_text(toml.replace('"my_images"', f'"{(tmp_path / "my_images").as_posix()}"'))
    quick = ["--set", "model.pretrain_epochs=1", "--set", "train.epochs=1", "--set", "data.options.cache=false"]
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--no-progress", *quick]) == 0
