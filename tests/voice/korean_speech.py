"""Test audio: Korean speech synthesised with espeak-ng (+ sox), silence and noise, as 16-bit mono PCM."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np

from voice.audio import read_wav

# The answers and banking words the tests speak; the sentences give free decoding something longer to chew on.
WORDS = ("네", "아니요", "하나", "둘", "셋", "잔액", "이체")
SENTENCES = ("안녕하세요", "잔액 조회 부탁합니다", "상담원 연결해 주세요")


def tools_available() -> bool:
    return shutil.which("espeak-ng") is not None and shutil.which("sox") is not None


class KoreanSpeech:
    """Synthesises Korean text once per (text, rate, voice settings) and caches the WAVs under `cache_dir`."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir
        cache_dir.mkdir(parents=True, exist_ok=True)

    def wav(self, text: str, sample_rate: int = 16000, *, speed: int = 175, pitch: int = 50) -> Path:
        """A mono 16-bit WAV of `text` at `sample_rate` (espeak-ng's 22050 Hz output converted by sox)."""
        key = hashlib.sha1(f"{text}|{sample_rate}|{speed}|{pitch}".encode()).hexdigest()[:16]
        target = self.cache_dir / f"{key}.wav"
        if target.exists():
            return target
        raw = self.cache_dir / f"{key}.raw.wav"
        subprocess.run(
            ["espeak-ng", "-v", "ko", "-s", str(speed), "-p", str(pitch), "-w", str(raw), text],
            check=True,
            capture_output=True,
        )
        converted = self.cache_dir / f"{key}.tmp.wav"
        subprocess.run(
            ["sox", str(raw), "-r", str(sample_rate), "-c", "1", "-b", "16", "-e", "signed-integer", str(converted)],
            check=True,
            capture_output=True,
        )
        raw.unlink()
        # Renamed into place last, so a half-written file is never taken from the cache.
        converted.replace(target)
        return target

    def pcm(self, text: str, sample_rate: int = 16000, *, speed: int = 175, pitch: int = 50) -> bytes:
        pcm, rate = read_wav(self.wav(text, sample_rate, speed=speed, pitch=pitch))
        assert rate == sample_rate
        return pcm

    def padded(
        self, text: str, sample_rate: int = 16000, *, before: float = 0.5, after: float = 1.0, **voice: int
    ) -> bytes:
        """Speech with silence around it, as a caller's turn sounds on the line."""
        return silence(before, sample_rate) + self.pcm(text, sample_rate, **voice) + silence(after, sample_rate)


def silence(seconds: float, sample_rate: int) -> bytes:
    return bytes(2 * round(seconds * sample_rate))


def white_noise(seconds: float, sample_rate: int, *, amplitude: float = 3000.0, seed: int = 0) -> bytes:
    """Gaussian white noise with standard deviation `amplitude` (int16 units), clipped to the int16 range."""
    samples = np.random.default_rng(seed).standard_normal(round(seconds * sample_rate)) * amplitude
    return np.clip(np.rint(samples), -32768, 32767).astype("<i2").tobytes()


def chunks(pcm: bytes, size: int) -> list[bytes]:
    """Split PCM into `size`-byte pieces, as a transport would deliver it (sizes need not be even)."""
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]
