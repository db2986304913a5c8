"""G.711 µ-law (PCMU) and A-law (PCMA): the two codecs every SIP peer speaks, over 8 kHz 16-bit PCM."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

# The standard library's audioop is deprecated in 3.11-3.12 and gone in 3.13, where the PyPI package
# audioop-lts installs a module of the same name; one import serves both.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

# Every G.711 codec works on 16-bit samples.
_SAMPLE_WIDTH = 2


class G711Codec(Protocol):
    """One G.711 law: its SDP encoding name, its static RTP payload type, and the conversions."""

    @property
    def name(self) -> str: ...

    @property
    def payload_type(self) -> int: ...

    def encode(self, pcm16le: bytes) -> bytes:
        """Signed 16-bit little-endian mono PCM to one byte per sample."""
        ...

    def decode(self, payload: bytes) -> bytes:
        """One byte per sample back to signed 16-bit little-endian mono PCM."""
        ...

    def silence(self, samples: int) -> bytes:
        """`samples` samples of encoded silence."""
        ...


@dataclass(frozen=True)
class _Law:
    name: str
    payload_type: int
    silence_byte: int
    _encode: Callable[[bytes, int], bytes]
    _decode: Callable[[bytes, int], bytes]

    def encode(self, pcm16le: bytes) -> bytes:
        if len(pcm16le) % _SAMPLE_WIDTH:
            # A trailing half sample would make audioop raise; it carries no sound, so it is dropped.
            pcm16le = pcm16le[:-1]
        return self._encode(pcm16le, _SAMPLE_WIDTH)

    def decode(self, payload: bytes) -> bytes:
        return self._decode(payload, _SAMPLE_WIDTH)

    def silence(self, samples: int) -> bytes:
        return bytes((self.silence_byte,)) * samples


PCMU: G711Codec = _Law("PCMU", 0, 0xFF, audioop.lin2ulaw, audioop.ulaw2lin)
PCMA: G711Codec = _Law("PCMA", 8, 0xD5, audioop.lin2alaw, audioop.alaw2lin)

_BY_NAME: dict[str, G711Codec] = {codec.name: codec for codec in (PCMU, PCMA)}


def codec_named(name: str) -> G711Codec:
    """The codec for an SDP encoding name (case-insensitive, as SDP's rtpmap names are); KeyError if unknown."""
    return _BY_NAME[name.upper()]
