"""Audio front end: 16 kHz clips -> log-mel spectrogram frames (NumPy, with torch's FFT).

The framing follows TFLite Micro's micro_speech: 30 ms windows (480 samples) every 20 ms (320 samples), 40
mel channels between 125 Hz and 7.5 kHz, so a 1 s clip gives 1 + (16000 - 480) // 320 = 49 frames. The
values differ from micro_speech's fixed-point front end (which adds noise reduction and gain control): these
are float32 natural logs of mel-band power, the common host-side equivalent.
"""

from __future__ import annotations

import io
import struct
import wave
from dataclasses import dataclass

import numpy as np

from tinycl.data.options import Key
from tinycl.errors import ConfigError, DataError

__all__ = ["LogMelConfig", "FEATURE_KEYS", "mel_filterbank", "power_frames", "log_mel", "read_wav",
           "read_wav_any", "resample", "fit_clip"]


# every field of LogMelConfig, described once: `tinycl config` lists them as data.options.features.<field>
FEATURE_KEYS = {
    "sample_rate": Key("Hz; clips at another rate are resampled to it", 1000, 192000),
    "clip_samples": Key("clips are zero-padded or cut to this many samples (16000 at 16 kHz: 1 s)", 1, 10 ** 7),
    "window_ms": Key("analysis window (ms); window_ms x sample_rate / 1000 samples must fit in n_fft", 0, 1000,
                     open_lo=True),
    "hop_ms": Key("step between windows (ms), at least one sample", 0, 1000, open_lo=True),
    "n_fft": Key("FFT length; the window is zero-padded to it", 16, 65536),
    "n_mels": Key("mel bands", 1, 512),
    "f_min": Key("lowest band edge (Hz); need 0 <= f_min < f_max", 0, 96000),
    "f_max": Key("highest band edge (Hz); need f_max <= sample_rate / 2", 0, 96000, open_lo=True),
    "floor": Key("added to mel power before the log, so silence gives log(floor), not -inf", 0, 1, open_lo=True),
}


@dataclass(frozen=True)
class LogMelConfig:
    sample_rate: int = 16000  # Hz
    clip_samples: int = 16000  # clips are zero-padded or cut to this length (1 s)
    window_ms: float = 30.0
    hop_ms: float = 20.0
    n_fft: int = 512  # >= the window length; the window is zero-padded to it
    n_mels: int = 40
    f_min: float = 125.0  # Hz
    f_max: float = 7500.0  # Hz
    floor: float = 1e-6  # added to mel power before the log, so silence gives log(floor), not -inf

    def __post_init__(self):
        for name, key in FEATURE_KEYS.items():
            key.check(getattr(self, name), f"features.{name}")
        if self.window_samples > self.n_fft:
            raise ConfigError(f"features.window_ms = {self.window_ms}: a window of {self.window_samples} samples "
                              f"exceeds features.n_fft = {self.n_fft}; allowed: window <= n_fft")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ConfigError(f"features.f_min = {self.f_min}, features.f_max = {self.f_max}: need 0 <= f_min < "
                              f"f_max <= features.sample_rate / 2 = {self.sample_rate / 2:g}")
        if self.hop_samples < 1 or self.clip_samples < self.window_samples:
            raise ConfigError(f"features.hop_ms = {self.hop_ms}, features.clip_samples = {self.clip_samples}: need "
                              f"a hop of at least 1 sample and clips at least one window ({self.window_samples}) long")

    @classmethod
    def from_options(cls, features: LogMelConfig | dict | None, where: str = "features") -> LogMelConfig:
        """A LogMelConfig from a dict of its fields (None: the defaults); errors name `where`.<field>."""
        if isinstance(features, LogMelConfig):
            return features
        if features is not None and not isinstance(features, dict):
            raise ConfigError(f"{where} must be a table of front-end settings, got {features!r}")
        features = dict(features or {})
        if unknown := sorted(set(features) - set(FEATURE_KEYS)):
            raise ConfigError(f"{where}.{unknown[0]} is not a front-end setting; allowed: {', '.join(FEATURE_KEYS)}")
        for name, value in features.items():
            want = cls.__dataclass_fields__[name].type
            ok = isinstance(value, int) if want == "int" else isinstance(value, int | float)
            if not ok or isinstance(value, bool):
                raise ConfigError(f"{where}.{name} must be of type {want}, got {value!r}")
        try:
            return cls(**features)
        except ConfigError as err:
            text = str(err)
            raise ConfigError(text.replace("features.", f"{where}.") if where != "features" else text) from None

    @property
    def window_samples(self) -> int:
        return round(self.sample_rate * self.window_ms / 1000)

    @property
    def hop_samples(self) -> int:
        return round(self.sample_rate * self.hop_ms / 1000)

    @property
    def n_frames(self) -> int:
        return 1 + (self.clip_samples - self.window_samples) // self.hop_samples


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)  # HTK mel scale


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(cfg: LogMelConfig) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) float32 triangular filters, peak 1 at each band's centre (HTK mel scale)."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(cfg.f_min), _hz_to_mel(cfg.f_max), cfg.n_mels + 2))
    freqs = np.arange(cfg.n_fft // 2 + 1) * cfg.sample_rate / cfg.n_fft
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lo) / (mid - lo)
    down = (hi - freqs[None]) / (hi - mid)
    return np.maximum(0.0, np.minimum(up, down)).T.astype(np.float32)


def power_frames(waves: np.ndarray, cfg: LogMelConfig) -> np.ndarray:
    """waves (N, clip_samples) float32 in [-1, 1] -> power spectra (N, n_frames, n_fft // 2 + 1) float32,
    periodic Hann window, frames starting at 0, hop, 2 hop, ... (no centre padding). torch's float32 FFT: about
    10x faster here than NumPy's float64 one."""
    import torch  # here, not at the top: listing data sets should not pay for importing torch

    x = torch.from_numpy(np.ascontiguousarray(waves, dtype=np.float32))
    frames = x.unfold(-1, cfg.window_samples, cfg.hop_samples)[:, : cfg.n_frames]  # (N, frames, win) view
    spec = torch.fft.rfft(frames * torch.hann_window(cfg.window_samples, periodic=True), n=cfg.n_fft)
    return (spec.real ** 2 + spec.imag ** 2).numpy()


def log_mel(waves: np.ndarray, cfg: LogMelConfig = LogMelConfig(), chunk: int = 512) -> np.ndarray:
    """waves (N, clip_samples) float32 in [-1, 1] -> log-mel features (N, n_frames, n_mels) float32.
    Processed `chunk` clips at a time to bound the temporary spectra's memory."""
    fb = mel_filterbank(cfg)
    out = np.empty((len(waves), cfg.n_frames, cfg.n_mels), dtype=np.float32)
    for i in range(0, len(waves), chunk):
        out[i: i + chunk] = np.log(power_frames(waves[i: i + chunk], cfg) @ fb + cfg.floor)
    return out


MAX_WAV_SECONDS = 3600  # a longer recording is not a clip: refused before its samples are read


def read_wav_any(raw: bytes, where: str) -> tuple[np.ndarray, int]:
    """A PCM WAV (8-bit unsigned, 16/24/32-bit signed; any channels, any rate) -> (mono float32 samples in
    [-1, 1), sample rate). The header must agree with the bytes the file holds (a data chunk that announces more
    than the file has, or a zero rate, is a DataError naming the file)."""
    try:
        with wave.open(io.BytesIO(raw)) as w:
            channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            if rate < 1 or channels < 1 or width not in (1, 2, 3, 4):
                raise DataError(f"{where}: WAV header says {channels} channel(s), {8 * width}-bit, {rate} Hz; "
                                f"expected PCM with 8, 16, 24 or 32 bits, at least 1 channel and 1 Hz")
            if n > MAX_WAV_SECONDS * rate:
                raise DataError(f"{where}: WAV header announces {n:,} frames ({n * channels * width:,} bytes) but "
                                f"the file is {len(raw):,} bytes; allowed: at most {MAX_WAV_SECONDS} s")
            pcm = w.readframes(n)
    except (wave.Error, EOFError, struct.error, ValueError) as err:
        raise DataError(f"{where}: not a readable PCM WAV file ({err})") from err
    if len(pcm) != n * channels * width:
        raise DataError(f"{where}: WAV header announces {n:,} frames ({n * channels * width:,} bytes) but the file "
                        f"holds {len(pcm):,} bytes of samples; the file is truncated or its header is corrupt")
    if width == 1:
        x = (np.frombuffer(pcm, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 3:
        b = np.frombuffer(pcm, np.uint8).reshape(-1, 3).astype(np.int32)
        x = (((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8) >> 8).astype(np.float32) / 2.0 ** 23
    else:
        x = np.frombuffer(pcm, f"<i{width}").astype(np.float32) / float(2 ** (8 * width - 1))
    return x.reshape(-1, channels).mean(axis=1, dtype=np.float32), rate


def resample(x: np.ndarray, rate: int, to: int) -> np.ndarray:
    """Band-limited resampling of a (T,) signal from `rate` to `to` Hz by the FFT (the spectrum is cut or
    zero-padded; content above the lower Nyquist frequency is dropped): round(T * to / rate) samples."""
    if rate == to or len(x) == 0:
        return np.asarray(x, dtype=np.float32)
    n_out = max(1, round(len(x) * to / rate))
    spec = np.fft.rfft(np.asarray(x, dtype=np.float64))
    keep = min(len(spec), n_out // 2 + 1)
    out = np.fft.irfft(spec[:keep], n_out) * (n_out / len(x))
    return out.astype(np.float32)


def fit_clip(x: np.ndarray, clip_samples: int | None) -> np.ndarray:
    """x zero-padded or cut to clip_samples (None: unchanged)."""
    if clip_samples is None:
        return x
    out = np.zeros(clip_samples, dtype=np.float32)
    out[: min(len(x), clip_samples)] = x[:clip_samples]
    return out


def read_wav(raw: bytes, where: str, sample_rate: int = 16000, clip_samples: int | None = 16000) -> np.ndarray:
    """A mono 16-bit PCM WAV at `sample_rate` -> (clip_samples,) float32 in [-1, 1), zero-padded or cut
    (clip_samples=None: the whole recording). The format is checked, not converted (Speech Commands' files)."""
    try:
        with wave.open(io.BytesIO(raw)) as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
    except (wave.Error, EOFError, struct.error, ValueError) as err:
        raise DataError(f"{where}: not a readable WAV file ({err})") from err
    if (channels, width, rate) != (1, 2, sample_rate):
        raise DataError(f"{where}: {channels} channel(s), {8 * width}-bit, {rate} Hz; expected mono 16-bit "
                        f"PCM at {sample_rate} Hz")
    return fit_clip(read_wav_any(raw, where)[0], clip_samples)
