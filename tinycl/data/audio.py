"""Audio front end: 16 kHz clips -> log-mel spectrogram frames (NumPy, with torch's FFT).

The framing follows TFLite Micro's micro_speech: 30 ms windows (480 samples) every 20 ms (320 samples), 40
mel channels between 125 Hz and 7.5 kHz, so a 1 s clip gives 1 + (16000 - 480) // 320 = 49 frames. The
values differ from micro_speech's fixed-point front end (which adds noise reduction and gain control): these
are float32 natural logs of mel-band power, the common host-side equivalent.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass

import numpy as np

from tinycl.errors import ConfigError, DataError

__all__ = ["LogMelConfig", "mel_filterbank", "power_frames", "log_mel", "read_wav"]


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
        if self.window_samples > self.n_fft:
            raise ConfigError(f"window of {self.window_samples} samples exceeds n_fft={self.n_fft}")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ConfigError(f"need 0 <= f_min < f_max <= sample_rate/2, got {self.f_min}, {self.f_max}")
        if self.n_mels < 1 or self.hop_samples < 1 or self.clip_samples < self.window_samples:
            raise ConfigError("need n_mels >= 1, hop >= 1 sample and clips at least one window long")

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


def read_wav(raw: bytes, where: str, sample_rate: int = 16000, clip_samples: int | None = 16000) -> np.ndarray:
    """A mono 16-bit PCM WAV at `sample_rate` -> (clip_samples,) float32 in [-1, 1), zero-padded or cut
    (clip_samples=None: the whole recording)."""
    try:
        with wave.open(io.BytesIO(raw)) as w:
            channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            pcm = w.readframes(n)
    except (wave.Error, EOFError) as err:
        raise DataError(f"{where}: not a readable WAV file ({err})") from err
    if (channels, width, rate) != (1, 2, sample_rate):
        raise DataError(f"{where}: {channels} channel(s), {8 * width}-bit, {rate} Hz; expected mono 16-bit "
                        f"PCM at {sample_rate} Hz")
    x = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
    if clip_samples is None:
        return x
    out = np.zeros(clip_samples, dtype=np.float32)
    out[: min(len(x), clip_samples)] = x[:clip_samples]
    return out
