"""PCM helpers shared by every voice module: WAV in/out, resampling (whole and streaming), levels, framing.

All audio here is signed 16-bit little-endian mono PCM held in `bytes`. An odd trailing byte (half a sample) is
dropped wherever PCM comes in, because it cannot be a sample and usually means a transport split a frame.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from math import gcd
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.signal import firwin, resample_poly

SAMPLE_WIDTH = 2
_INT16_MIN = -32768
_INT16_MAX = 32767
_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# The first two bytes of the KSDATAFORMAT_SUBTYPE_PCM GUID carried by WAVE_FORMAT_EXTENSIBLE headers.
_SUBFORMAT_PCM = 0x0001


def _samples(pcm: bytes) -> np.ndarray:
    """The int16 samples of `pcm`, ignoring an odd trailing byte."""
    usable = len(pcm) - len(pcm) % SAMPLE_WIDTH
    return np.frombuffer(pcm, dtype="<i2", count=usable // SAMPLE_WIDTH)


def _to_pcm(samples: np.ndarray) -> bytes:
    """Round float samples to int16 with saturation (filters overshoot near full scale)."""
    return np.clip(np.rint(samples), _INT16_MIN, _INT16_MAX).astype("<i2").tobytes()


# --- WAV -------------------------------------------------------------------------------------------------------


def parse_wav(data: bytes) -> tuple[bytes, int]:
    """Decode a RIFF/WAVE byte string into (mono 16-bit PCM, sample rate).

    Multi-channel audio is downmixed by averaging. Data-chunk sizes larger than the bytes present are clamped,
    because streaming writers (espeak-ng --stdout) cannot know the length and write a placeholder.
    Raises ValueError for anything that is not 16-bit integer PCM WAV.
    """
    if len(data) < 12 or data[0:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    position = 12
    fmt: tuple[int, int, int, int] | None = None  # (format tag, channels, rate, bits per sample)
    while position + 8 <= len(data):
        chunk_id = data[position : position + 4]
        (chunk_size,) = struct.unpack_from("<I", data, position + 4)
        body_start = position + 8
        if chunk_id == b"fmt ":
            if chunk_size < 16 or body_start + 16 > len(data):
                raise ValueError("WAV fmt chunk is truncated")
            tag, channels, rate, _byte_rate, _block_align, bits = struct.unpack_from("<HHIIHH", data, body_start)
            if tag == _WAVE_FORMAT_EXTENSIBLE and chunk_size >= 40:
                (tag,) = struct.unpack_from("<H", data, body_start + 24)
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise ValueError("WAV data chunk comes before its fmt chunk")
            tag, channels, rate, bits = fmt
            if tag != _WAVE_FORMAT_PCM:
                raise ValueError(f"unsupported WAV encoding (format tag {tag:#06x}); only integer PCM is read")
            if bits != 16:
                raise ValueError(f"unsupported WAV sample width: {bits} bits; only 16-bit PCM is read")
            if channels < 1 or rate < 1:
                raise ValueError(f"invalid WAV header: {channels} channels at {rate} Hz")
            body = data[body_start : body_start + chunk_size]
            frame_bytes = SAMPLE_WIDTH * channels
            body = body[: len(body) - len(body) % frame_bytes]
            if channels == 1:
                return body, rate
            interleaved = np.frombuffer(body, dtype="<i2").reshape(-1, channels)
            return _to_pcm(interleaved.astype(np.float64).mean(axis=1)), rate
        # RIFF chunks are padded to an even length.
        position = body_start + chunk_size + (chunk_size & 1)
    raise ValueError("WAV file has no data chunk")


def read_wav(path: str | Path) -> tuple[bytes, int]:
    """Read a 16-bit PCM WAV file as (mono PCM, sample rate); stereo is downmixed; other formats raise ValueError."""
    return parse_wav(Path(path).read_bytes())


def wav_bytes(pcm: bytes, sample_rate: int) -> bytes:
    """A complete mono 16-bit WAV file holding `pcm`."""
    body = pcm[: len(pcm) - len(pcm) % SAMPLE_WIDTH]
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(body),
        b"WAVE",
        b"fmt ",
        16,
        _WAVE_FORMAT_PCM,
        1,
        sample_rate,
        sample_rate * SAMPLE_WIDTH,
        SAMPLE_WIDTH,
        16,
        b"data",
        len(body),
    )
    return header + body


def write_wav(path: str | Path, pcm: bytes, sample_rate: int) -> None:
    Path(path).write_bytes(wav_bytes(pcm, sample_rate))


# --- Levels and timing ------------------------------------------------------------------------------------------


def rms(pcm: bytes) -> float:
    """Root mean square level in sample units (0 for silence, about 23170 for a full-scale sine); 0.0 when empty."""
    samples = _samples(pcm)
    if samples.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def clipped_fraction(pcm: bytes, threshold: int = _INT16_MAX) -> float:
    """Fraction of samples whose magnitude reaches `threshold` (default: full scale); 0.0 when empty."""
    samples = _samples(pcm)
    if samples.size == 0:
        return 0.0
    # int32 so that abs(-32768) does not wrap.
    return float(np.count_nonzero(np.abs(samples.astype(np.int32)) >= threshold) / samples.size)


def duration_seconds(pcm: bytes, sample_rate: int) -> float:
    return (len(pcm) // SAMPLE_WIDTH) / sample_rate


def silence(seconds: float, sample_rate: int) -> bytes:
    return bytes(SAMPLE_WIDTH * round(seconds * sample_rate))


def frames(
    pcm: bytes, sample_rate: int, ms: int = 20, partial: Literal["keep", "drop", "pad"] = "keep"
) -> Iterator[bytes]:
    """Successive `ms`-millisecond frames of `pcm`.

    `partial` says what happens to a shorter final frame: yielded as is, dropped (for consumers such as VADs that
    need exact frame sizes), or padded with silence to full size.
    """
    frame_bytes = SAMPLE_WIDTH * (sample_rate * ms // 1000)
    if frame_bytes <= 0:
        raise ValueError(f"a {ms} ms frame at {sample_rate} Hz holds no samples")
    usable = len(pcm) - len(pcm) % SAMPLE_WIDTH
    for start in range(0, usable, frame_bytes):
        frame = pcm[start : min(start + frame_bytes, usable)]
        if len(frame) < frame_bytes:
            if partial == "drop":
                return
            if partial == "pad":
                frame += bytes(frame_bytes - len(frame))
        yield frame


# --- Resampling -------------------------------------------------------------------------------------------------


def _ratio(from_rate: int, to_rate: int) -> tuple[int, int]:
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate} and {to_rate}")
    divisor = gcd(from_rate, to_rate)
    return to_rate // divisor, from_rate // divisor


def _lowpass(up: int, down: int) -> np.ndarray:
    """The anti-aliasing FIR filter for an up/down ratio: the same design scipy's resample_poly uses by default.

    It is built here and handed to resample_poly explicitly so that the whole-signal and streaming resamplers
    share one filter by construction rather than by coincidence of defaults.
    """
    max_rate = max(up, down)
    half_len = 10 * max_rate
    return np.asarray(firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0)), dtype=np.float64)


def resample(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Resample mono 16-bit PCM with a polyphase FIR (scipy.signal.resample_poly, ratio reduced by the gcd).

    Returns `pcm` unchanged when the rates are equal. An odd trailing byte is dropped. The output holds
    ceil(n * to_rate / from_rate) samples; the signal is treated as zero outside its ends.
    """
    usable = pcm[: len(pcm) - len(pcm) % SAMPLE_WIDTH]
    up, down = _ratio(from_rate, to_rate)
    if up == down or not usable:
        return usable
    samples = _samples(usable).astype(np.float64)
    return _to_pcm(resample_poly(samples, up, down, window=_lowpass(up, down)))


class StreamResampler:
    """Resample a stream chunk by chunk, giving the same samples as `resample` on the whole signal.

    Approach: direct polyphase evaluation of the same FIR as `resample`. Output sample k is
    sum_i h[half_len + k*down - i*up] * x[i]; it needs inputs up to (k*down + half_len) // up, so each call
    emits every output whose inputs have all arrived and keeps just the input tail that later outputs still
    need. `flush` treats the input as zero past its end, exactly as the whole-signal resampler does, emits the
    rest and resets the object for the next stream. Results match `resample` to within 1 LSB (float sums in a
    different order can round the other way). Odd byte counts are carried to the next chunk; a lone byte left
    at `flush` is dropped.
    """

    def __init__(self, from_rate: int, to_rate: int) -> None:
        self.from_rate = from_rate
        self.to_rate = to_rate
        self._up, self._down = _ratio(from_rate, to_rate)
        self._identity = self._up == self._down
        # An identity "filter" (a single unit tap) keeps the arithmetic below valid; it is never used.
        lowpass = np.ones(1) if self._identity else _lowpass(self._up, self._down) * self._up
        self._half_len = (lowpass.size - 1) // 2
        # Taps per output sample: filter indices phase, phase+up, ... inside [0, 2*half_len].
        self._taps = (2 * self._half_len) // self._up + 1
        # Zero-extend so that every (phase + m*up) index is valid; the extra coefficients are zero.
        self._filter = np.zeros(self._up * (self._taps + 1), dtype=np.float64)
        self._filter[: lowpass.size] = lowpass
        self._reset()

    def _reset(self) -> None:
        self._pending_byte = b""
        # Buffered input samples; buffer[j] is input sample number (j + self._buffer_start). Samples before the
        # stream starts are zeros, which is what lets the first outputs be computed like the rest.
        self._buffer = np.zeros(self._taps, dtype=np.float64)
        self._buffer_start = -self._taps
        self._received = 0
        self._next_output = 0

    def process(self, chunk: bytes) -> bytes:
        data = self._pending_byte + chunk
        split = len(data) - len(data) % SAMPLE_WIDTH
        self._pending_byte = data[split:]
        if self._identity:
            return data[:split]
        new = _samples(data[:split]).astype(np.float64)
        if new.size:
            self._buffer = np.concatenate((self._buffer, new))
            self._received += new.size
        # Outputs k with (k*down + half_len) // up <= received - 1, i.e. k*down < received*up - half_len.
        ready_end = max(0, -((self._half_len - self._received * self._up) // self._down))
        return self._emit(ready_end)

    def flush(self) -> bytes:
        """Emit the outputs that depend on samples past the end of the stream (taken as zero), then reset."""
        if self._identity:
            self._reset()
            return b""
        total = -((-self._received * self._up) // self._down)  # ceil(received * up / down)
        self._buffer = np.concatenate((self._buffer, np.zeros(self._taps + 1, dtype=np.float64)))
        tail = self._emit(total)
        self._reset()
        return tail

    def _emit(self, end: int) -> bytes:
        if end <= self._next_output:
            return b""
        k = np.arange(self._next_output, end, dtype=np.int64)
        positions = k * self._down + self._half_len
        newest = positions // self._up  # the latest input sample each output uses
        phases = positions % self._up
        taps = np.arange(self._taps, dtype=np.int64)
        inputs = self._buffer[(newest - self._buffer_start)[:, None] - taps[None, :]]
        coefficients = self._filter[phases[:, None] + taps[None, :] * self._up]
        out = np.einsum("ij,ij->i", inputs, coefficients)
        self._next_output = end
        # Keep only what the next output still needs: inputs from its newest index minus (taps - 1).
        keep_from = (end * self._down + self._half_len) // self._up - (self._taps - 1)
        drop = min(max(0, keep_from - self._buffer_start), self._buffer.size)
        if drop:
            self._buffer = self._buffer[drop:]
            self._buffer_start += drop
        return _to_pcm(out)


def tone(frequency: float, seconds: float, sample_rate: int, amplitude: float = 0.5) -> bytes:
    """A sine tone (for tests, prompts' beeps and level checks); `amplitude` is a fraction of full scale."""
    n = round(seconds * sample_rate)
    t = np.arange(n, dtype=np.float64) / sample_rate
    return _to_pcm(amplitude * _INT16_MAX * np.sin(2 * math.pi * frequency * t))
