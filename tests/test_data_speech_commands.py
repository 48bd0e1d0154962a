"""Speech Commands: the log-mel front end against torch, the loader on fixtures in the official layout, and the
real v0.02 test set (4,890 clips in 12 folders)."""

import numpy as np
import pytest
from conftest import require_shared_data, require_shared_model
from data_fixtures import tar_dir, wav_bytes, write_speech_commands

from tinycl.data.audio import LogMelConfig, log_mel, mel_filterbank, power_frames, read_wav
from tinycl.data.files import tar_names
from tinycl.data.speech_commands import KEYWORDS, count_speech_commands, load_speech_commands, speaker_of
from tinycl.errors import ConfigError, DataError

REAL = "speech_commands/speech_commands_test_set_v0.02.tar.gz"


def test_framing_is_micro_speech():
    cfg = LogMelConfig()
    assert (cfg.window_samples, cfg.hop_samples, cfg.n_frames, cfg.n_mels) == (480, 320, 49, 40)


def test_power_spectrum_matches_numpy_float64():
    cfg = LogMelConfig()
    x = np.random.default_rng(0).uniform(-1, 1, (3, cfg.clip_samples)).astype(np.float32)
    starts = np.arange(49) * 320
    frames = x.astype(np.float64)[:, starts[:, None] + np.arange(480)]  # (3, 49, 480)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(480) / 480)  # periodic Hann
    ref = np.abs(np.fft.rfft(frames * hann, n=512)) ** 2
    np.testing.assert_allclose(power_frames(x, cfg), ref, rtol=1e-3, atol=1e-3)


def test_mel_filterbank_by_hand():
    cfg = LogMelConfig()
    fb = mel_filterbank(cfg)
    assert fb.shape == (257, 40) and fb.min() >= 0 and np.all(fb.max(axis=0) > 0.5)
    freqs = np.arange(257) * 16000 / 512
    assert fb[freqs < 125].sum() == 0 and fb[freqs > 7500].sum() == 0  # nothing outside 125 Hz .. 7.5 kHz
    centres = freqs[fb.argmax(axis=0)]
    assert np.all(np.diff(centres) >= 0)  # bands in increasing frequency
    # a pure tone lights the band whose centre is nearest its frequency (HTK mel: 1000 Hz -> 1000 mel)
    t = np.arange(16000) / 16000
    for f in (300.0, 1000.0, 4000.0):
        feats = log_mel(np.sin(2 * np.pi * f * t)[None].astype(np.float32), cfg)[0]
        band = feats.mean(axis=0).argmax()
        assert abs(centres[band] - f) <= np.sort(np.abs(centres - f))[1]  # nearest or next-nearest centre
    silence = log_mel(np.zeros((1, 16000), np.float32), cfg)
    np.testing.assert_allclose(silence, np.log(cfg.floor), rtol=1e-6)


def test_read_wav_pads_and_checks_format():
    pcm = np.array([0, 16384, -32768, 32767], dtype=np.int16)
    x = read_wav(wav_bytes(pcm), "clip.wav")
    assert x.shape == (16000,) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:4], pcm / 32768.0)
    assert not x[4:].any()
    with pytest.raises(DataError, match=r"clip.wav: 2 channel\(s\), 16-bit, 16000 Hz; expected mono"):
        read_wav(wav_bytes(np.zeros(200, np.int16), channels=2), "clip.wav")
    with pytest.raises(DataError, match=r"clip.wav: 1 channel\(s\), 16-bit, 8000 Hz"):
        read_wav(wav_bytes(np.zeros(200, np.int16), rate=8000), "clip.wav")
    with pytest.raises(DataError, match="clip.wav: not a readable WAV file"):
        read_wav(b"RIFF....garbage", "clip.wav")


def test_speaker_of():
    assert speaker_of("0a7c2a8d_nohash_0.wav") == "0a7c2a8d"
    assert speaker_of("backward_0c540988_nohash_0.wav.wav") == "0c540988"  # the test set's _unknown_ names
    assert speaker_of("1024.wav") is None


def _speakers(n):
    return [f"{k:08x}" for k in range(n)]


def test_fixture_labels_split_and_unknown_cap(tmp_path):
    rng = np.random.default_rng(0)
    spk = _speakers(40)
    words = {"yes": spk[:30], "no": spk[5:35], "up": spk[:20], "cat": spk, "_unknown_": spk[:10]}
    write_speech_commands(tmp_path / "speech_commands", rng, words, silence=8)
    ds = load_speech_commands(tmp_path, keywords=("yes", "no", "up"), cache=False)
    assert ds.classes == ("_silence_", "_unknown_", "yes", "no", "up")
    assert ds.x_train.shape[1:] == (1, 49, 40) and ds.x_train.dtype == np.float32
    counts = np.bincount(np.concatenate([ds.y_train, ds.y_test]), minlength=5)
    # unknown = cat + _unknown_ (50 clips), capped at the largest keyword class (30)
    assert counts.tolist() == [8, 30, 30, 30, 20]
    assert not set(ds.meta["train_groups"]) & set(ds.meta["test_groups"])  # speaker-disjoint
    assert 0 < len(ds.y_test) < len(ds.y_train)
    for split in ("train", "test"):
        for f, g in zip(ds.meta[f"{split}_files"], ds.meta[f"{split}_groups"], strict=True):
            assert speaker_of(f.split("/")[-1]) in (g, None)
    # the same data from a .tar.gz (as the official archives: entries under "./")
    other = tmp_path / "other"
    (other / "speech_commands").mkdir(parents=True)
    tar_dir(tmp_path / "speech_commands", other / "speech_commands" / "sc.tar.gz", ".")
    from_tar = load_speech_commands(other, keywords=("yes", "no", "up"), cache=False)
    assert np.array_equal(from_tar.x_train, ds.x_train) and np.array_equal(from_tar.y_test, ds.y_test)
    assert count_speech_commands(other, keywords=("yes", "no", "up")) == (len(ds.y_train), len(ds.y_test))


def test_feature_values_match_front_end(tmp_path):
    rng = np.random.default_rng(1)
    write_speech_commands(tmp_path / "speech_commands", rng, {"yes": ["aaaa0001"], "no": ["aaaa0002"]})
    ds = load_speech_commands(tmp_path, keywords=("yes", "no"), test_percent=1, cache=False)
    raw = (tmp_path / "speech_commands" / "yes" / "aaaa0001_nohash_0.wav").read_bytes()
    ref = log_mel(read_wav(raw, "x")[None])[0]
    k = list(ds.meta["train_files"]).index("yes/aaaa0001_nohash_0.wav")
    np.testing.assert_array_equal(ds.x_train[k, 0], ref)


def test_official_split_and_background_noise_silence(tmp_path):
    rng = np.random.default_rng(2)
    spk = _speakers(12)
    folder = tmp_path / "speech_commands"
    write_speech_commands(folder, rng, {"yes": spk, "no": spk, "dog": spk}, noise_files=2)
    (folder / "testing_list.txt").write_text("yes/00000003_nohash_3.wav\nno/00000004_nohash_4.wav\n")
    ds = load_speech_commands(tmp_path, keywords=("yes", "no"), cache=False)
    spoken = sorted(f for f, y in zip(ds.meta["test_files"], ds.y_test, strict=True) if y != 0)
    assert spoken == ["no/00000004_nohash_4.wav", "yes/00000003_nohash_3.wav"]
    # no _silence_ folder: 12 silence clips (the mean keyword count) cut from the background noise
    y = np.concatenate([ds.y_train, ds.y_test])
    assert np.sum(y == 0) == 12 and np.sum(y == 1) == 12
    silence = np.concatenate([ds.x_train[ds.y_train == 0], ds.x_test[ds.y_test == 0]])
    assert np.isfinite(silence).all() and len({s.tobytes() for s in silence}) == 12  # all different cuts
    speaker = load_speech_commands(tmp_path, keywords=("yes", "no"), split="speaker", cache=False)
    assert not set(speaker.meta["train_groups"]) & set(speaker.meta["test_groups"])
    with pytest.raises(ConfigError, match="split 'x' not allowed; allowed: auto, official, speaker"):
        load_speech_commands(tmp_path, split="x")
    with pytest.raises(ConfigError, match=r"keywords \['left'\] have no folder in the data; available: dog, no"):
        load_speech_commands(tmp_path, keywords=("yes", "left"))


def test_missing_and_truncated(tmp_path):
    with pytest.raises(DataError, match=r"no Speech Commands found in .*speech_commands: expected"):
        load_speech_commands(tmp_path)
    write_speech_commands(tmp_path / "src", np.random.default_rng(3), {"yes": _speakers(30), "no": _speakers(30)})
    (tmp_path / "speech_commands").mkdir()
    archive = tmp_path / "speech_commands" / "speech_commands_v0.02.tar.gz"
    tar_dir(tmp_path / "src", archive, ".")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size * 2 // 3])
    with pytest.raises(DataError, match=r"speech_commands_v0.02.tar.gz: truncated or corrupt archive"):
        load_speech_commands(tmp_path, keywords=("yes", "no"))


def test_real_test_set():
    root = require_shared_data(REAL)
    folders = {n.split("/")[0] for n in tar_names(root / REAL) if n.endswith(".wav")}
    assert folders == {*KEYWORDS, "_silence_", "_unknown_"}
    ds = load_speech_commands(root)
    assert len(ds.y_train) + len(ds.y_test) == 4890
    assert count_speech_commands(root) == (len(ds.y_train), len(ds.y_test))
    counts = np.bincount(np.concatenate([ds.y_train, ds.y_test]))
    assert counts.tolist() == [408, 408, 419, 405, 425, 406, 412, 396, 396, 402, 411, 402]  # files per folder
    assert not set(ds.meta["train_groups"]) & set(ds.meta["test_groups"])  # no speaker on both sides
    assert 0.1 < len(ds.y_test) / 4890 < 0.3 and np.all(np.bincount(ds.y_test, minlength=12) > 30)
    assert ds.x_train.shape[1:] == (1, 49, 40) and np.isfinite(ds.x_train).all()


def test_reference_clip_reads():
    wav = require_shared_model("yes_1000ms.wav")
    x = read_wav(wav.read_bytes(), str(wav))
    assert x.shape == (16000,) and 0.01 < np.abs(x).max() <= 1.0
