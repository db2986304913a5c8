"""PCM helpers: WAV round trips, resampling (whole and streaming), levels and framing."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voice.audio import (
    StreamResampler,
    clipped_fraction,
    duration_seconds,
    frames,
    parse_wav,
    read_wav,
    resample,
    rms,
    silence,
    tone,
    wav_bytes,
    write_wav,
)

RATE_PAIRS = [(8000, 16000), (16000, 8000), (22050, 16000), (22050, 8000), (44100, 16000), (16000, 16000)]


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.int64)


def noise(count: int, seed: int = 0, scale: float = 4000.0) -> bytes:
    rng = np.random.default_rng(seed)
    return np.clip(rng.standard_normal(count) * scale, -32768, 32767).astype("<i2").tobytes()


def dominant_frequency(pcm: bytes, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples(pcm)))
    return float(np.fft.rfftfreq(len(pcm) // 2, 1 / rate)[int(np.argmax(spectrum))])


# --- Resampling ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("from_rate", "to_rate"), RATE_PAIRS)
def test_resample_output_length_is_ceil_of_the_rate_ratio(from_rate: int, to_rate: int) -> None:
    for count in (1, 2, 159, 160, 12345):
        out = resample(noise(count), from_rate, to_rate)
        assert len(out) // 2 == -(-count * to_rate // from_rate)


def test_resample_identity_returns_the_input_unchanged() -> None:
    pcm = noise(1000)
    assert resample(pcm, 16000, 16000) == pcm


def test_resample_drops_an_odd_trailing_byte() -> None:
    pcm = noise(1000)
    assert resample(pcm + b"\x7f", 8000, 16000) == resample(pcm, 8000, 16000)
    assert resample(pcm + b"\x7f", 16000, 16000) == pcm


def test_resample_keeps_a_tone_at_its_frequency_and_level() -> None:
    pcm = tone(440, 1.0, 8000)
    up = resample(pcm, 8000, 16000)
    assert dominant_frequency(up, 16000) == pytest.approx(440, abs=2)
    assert rms(up) == pytest.approx(rms(pcm), rel=0.02)


@pytest.mark.parametrize(("low", "high"), [(8000, 16000), (16000, 48000), (8000, 22050)])
def test_resample_up_then_down_round_trips_band_limited_audio(low: int, high: int) -> None:
    pcm = tone(300, 0.5, low)
    back = resample(resample(pcm, low, high), high, low)
    assert len(back) == len(pcm)
    # Ignore the filter's edge transients; the middle must come back nearly exactly.
    middle = slice(200, len(pcm) // 2 - 200)
    error = samples(back)[middle] - samples(pcm)[middle]
    assert np.sqrt(np.mean(error**2)) < 0.01 * rms(pcm)


def test_downsampling_removes_content_above_the_new_nyquist() -> None:
    # 6 kHz cannot exist at 8 kHz; it must be filtered out, not folded back to 2 kHz.
    out = resample(tone(6000, 0.5, 16000), 16000, 8000)
    assert rms(out) < 0.01 * rms(tone(6000, 0.5, 16000))


def test_resample_rejects_non_positive_rates() -> None:
    with pytest.raises(ValueError):
        resample(noise(10), 0, 8000)


def run_stream(resampler: StreamResampler, pcm: bytes, cuts: list[int]) -> bytes:
    out = bytearray()
    previous = 0
    for cut in [*sorted(cuts), len(pcm)]:
        out += resampler.process(pcm[previous:cut])
        previous = cut
    out += resampler.flush()
    return bytes(out)


@settings(max_examples=60, deadline=None)
@given(
    rates=st.sampled_from(RATE_PAIRS),
    count=st.integers(min_value=0, max_value=4000),
    cut_fractions=st.lists(st.floats(min_value=0, max_value=1), max_size=12),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_stream_resampler_matches_whole_signal_resampling_for_any_chunking(
    rates: tuple[int, int], count: int, cut_fractions: list[float], seed: int
) -> None:
    from_rate, to_rate = rates
    pcm = noise(count, seed)
    # Byte offsets, so chunks may split a sample in half.
    cuts = [int(fraction * len(pcm)) for fraction in cut_fractions]
    streamed = run_stream(StreamResampler(from_rate, to_rate), pcm, cuts)
    whole = resample(pcm, from_rate, to_rate)
    assert len(streamed) == len(whole)
    if whole:
        assert np.max(np.abs(samples(streamed) - samples(whole))) <= 1


def test_stream_resampler_emits_audio_before_the_stream_ends() -> None:
    resampler = StreamResampler(8000, 16000)
    emitted = b"".join(resampler.process(frame) for frame in frames(noise(8000), 8000, ms=20))
    # All but the filter's look-ahead (10 input samples here) comes out while streaming.
    assert len(emitted) // 2 >= 2 * (8000 - 20)


def test_stream_resampler_is_reusable_after_flush() -> None:
    resampler = StreamResampler(16000, 8000)
    pcm = noise(3000, seed=5)
    first = run_stream(resampler, pcm, [1001, 2002])
    second = run_stream(resampler, pcm, [7])
    assert first == second


def test_stream_resampler_drops_a_lone_byte_at_flush() -> None:
    resampler = StreamResampler(8000, 16000)
    pcm = noise(500)
    assert run_stream(resampler, pcm + b"\x01", [333]) == resample(pcm, 8000, 16000)


# --- Levels, timing, framing -----------------------------------------------------------------------------------


def test_rms_of_silence_is_zero_and_of_a_sine_is_amplitude_over_root_two() -> None:
    assert rms(silence(0.1, 8000)) == 0.0
    assert rms(b"") == 0.0
    assert rms(tone(1000, 1.0, 8000, amplitude=0.5)) == pytest.approx(0.5 * 32767 / np.sqrt(2), rel=0.001)


def test_clipped_fraction_counts_full_scale_samples_of_both_signs() -> None:
    pcm = struct.pack("<4h", 32767, -32768, 0, 100)
    assert clipped_fraction(pcm) == 0.5
    assert clipped_fraction(pcm, threshold=100) == 0.75
    assert clipped_fraction(b"") == 0.0
    assert clipped_fraction(tone(440, 0.1, 8000, amplitude=0.5)) == 0.0


def test_duration_and_silence_agree() -> None:
    assert duration_seconds(silence(1.5, 16000), 16000) == 1.5
    assert len(silence(0.02, 8000)) == 320


@pytest.mark.parametrize(
    ("partial", "expected_lengths"), [("keep", [320, 320, 160]), ("drop", [320, 320]), ("pad", [320, 320, 320])]
)
def test_frames_split_into_fixed_sizes_and_handle_the_remainder(partial: str, expected_lengths: list[int]) -> None:
    pcm = silence(0.05, 8000)  # 2.5 frames of 20 ms
    assert [len(frame) for frame in frames(pcm, 8000, 20, partial=partial)] == expected_lengths  # type: ignore[arg-type]


# --- WAV -------------------------------------------------------------------------------------------------------


def test_wav_write_then_read_round_trips(tmp_path: Path) -> None:
    pcm = noise(1234)
    path = tmp_path / "a.wav"
    write_wav(path, pcm, 16000)
    assert read_wav(path) == (pcm, 16000)
    with wave.open(str(path)) as reader:  # the standard library agrees with our header
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (1, 2, 16000)
        assert reader.readframes(reader.getnframes()) == pcm


def test_read_wav_downmixes_stereo(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    left = np.full(100, 1000, dtype="<i2")
    right = np.full(100, 3000, dtype="<i2")
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(np.column_stack((left, right)).astype("<i2").tobytes())
    pcm, rate = read_wav(path)
    assert rate == 8000
    assert set(samples(pcm).tolist()) == {2000}


def test_read_wav_rejects_other_sample_widths(tmp_path: Path) -> None:
    path = tmp_path / "8bit.wav"
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(1)
        writer.setframerate(8000)
        writer.writeframes(bytes(100))
    with pytest.raises(ValueError, match="16-bit"):
        read_wav(path)


def test_parse_wav_rejects_float_and_non_wav_data() -> None:
    float_header = bytearray(wav_bytes(noise(10), 8000))
    struct.pack_into("<H", float_header, 20, 3)  # WAVE_FORMAT_IEEE_FLOAT
    with pytest.raises(ValueError, match="integer PCM"):
        parse_wav(bytes(float_header))
    with pytest.raises(ValueError, match="RIFF"):
        parse_wav(b"ID3\x03 not a wav")


def test_parse_wav_accepts_a_streaming_header_with_placeholder_sizes() -> None:
    # espeak-ng --stdout cannot know the length and writes 0x7FFFF000-ish sizes.
    pcm = noise(101)
    data = bytearray(wav_bytes(pcm, 22050))
    struct.pack_into("<I", data, 4, 0x7FFFF024)
    struct.pack_into("<I", data, 40, 0x7FFFF000)
    assert parse_wav(bytes(data)) == (pcm, 22050)


def test_wav_bytes_drops_an_odd_trailing_byte() -> None:
    assert parse_wav(wav_bytes(b"\x01\x02\x03", 8000)) == (b"\x01\x02", 8000)
