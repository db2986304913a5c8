"""G.711 codecs: the values ITU G.711 fixes, and speech-grade quality on a round trip."""

from __future__ import annotations

import numpy as np
import pytest

from channels.ivr.g711 import PCMA, PCMU, G711Codec, codec_named


def pcm(samples: list[int] | np.ndarray) -> bytes:
    return np.asarray(samples, dtype="<i2").tobytes()


def samples_of(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.int32)


def test_the_codecs_carry_their_sdp_names_and_static_payload_types() -> None:
    assert (PCMU.name, PCMU.payload_type) == ("PCMU", 0)
    assert (PCMA.name, PCMA.payload_type) == ("PCMA", 8)


def test_codec_named_is_case_insensitive_and_rejects_unknown_names() -> None:
    assert codec_named("PCMU") is PCMU
    assert codec_named("pcma") is PCMA
    with pytest.raises(KeyError):
        codec_named("opus")


def test_mu_law_zero_is_0xff_both_ways() -> None:
    assert PCMU.encode(pcm([0])) == b"\xff"
    assert samples_of(PCMU.decode(b"\xff")).tolist() == [0]


def test_a_law_zero_is_0xd5_and_decodes_to_the_smallest_step() -> None:
    assert PCMA.encode(pcm([0])) == b"\xd5"
    # A-law has no zero level: 0xD5 is the first positive step, +8 on the 16-bit scale.
    assert abs(int(samples_of(PCMA.decode(b"\xd5"))[0])) <= 8


def test_full_scale_maps_to_the_extreme_codes() -> None:
    assert PCMU.encode(pcm([32767, -32768])) == b"\x80\x00"
    assert samples_of(PCMU.decode(b"\x80\x00")).tolist() == [32124, -32124]
    assert PCMA.encode(pcm([32767, -32768])) == b"\xaa\x2a"
    assert samples_of(PCMA.decode(b"\xaa\x2a")).tolist() == [32256, -32256]


@pytest.mark.parametrize("codec, byte", [(PCMU, 0xFF), (PCMA, 0xD5)])
def test_silence_is_the_encoded_zero_level(codec: G711Codec, byte: int) -> None:
    assert codec.silence(160) == bytes([byte]) * 160
    assert codec.encode(bytes(320)) == codec.silence(160)
    assert np.abs(samples_of(codec.decode(codec.silence(160)))).max() <= 8


@pytest.mark.parametrize("codec", [PCMU, PCMA])
def test_one_byte_per_sample_each_way(codec: G711Codec) -> None:
    assert len(codec.encode(bytes(320))) == 160
    assert len(codec.decode(bytes(160))) == 320
    # A stray trailing byte is not half a sample.
    assert len(codec.encode(bytes(321))) == 160


@pytest.mark.parametrize("codec", [PCMU, PCMA])
@pytest.mark.parametrize("amplitude", [0.05, 0.5, 0.9])
def test_a_1_khz_sine_survives_a_round_trip_above_30_db(codec: G711Codec, amplitude: float) -> None:
    t = np.arange(8000) / 8000
    sine = np.round(amplitude * 32767 * np.sin(2 * np.pi * 1000 * t + 0.3)).astype(np.int16)
    decoded = samples_of(codec.decode(codec.encode(sine.astype("<i2").tobytes())))
    noise = decoded - sine.astype(np.int32)
    snr_db = 10 * np.log10(np.sum(sine.astype(np.float64) ** 2) / np.sum(noise.astype(np.float64) ** 2))
    assert snr_db > 30
