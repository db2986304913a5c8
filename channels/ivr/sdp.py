"""RFC 4566 SDP and RFC 3264 offer/answer for the one G.711 audio stream of a phone call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
# What we do when the peer does X: the mirror image of its direction (RFC 3264 6.1).
_OUR_DIRECTION = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}
# RFC 3551 static payload types that peers (SIPp among them) list without an rtpmap line.
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int]] = {
    0: ("PCMU", 8000), 3: ("GSM", 8000), 4: ("G723", 8000), 8: ("PCMA", 8000), 9: ("G722", 8000), 18: ("G729", 8000),
}  # fmt: skip
# The codecs we can offer, by their static payload type.
_OFFERABLE = {"PCMU": 0, "PCMA": 8}
DTMF_EVENTS = "0-16"  # RFC 4733 events we understand: digits, * and #, A-D, flash
PTIME_MS = 20
_HOLD_ADDRESSES = ("0.0.0.0", "::")  # RFC 2543-style hold: "send nothing here"


class SdpError(ValueError):
    """A body that is not valid SDP (the user agent answers 400)."""


class SdpNegotiationError(ValueError):
    """Valid SDP with nothing we can accept: no audio, SRTP only, no common codec (the user agent answers 488)."""


@dataclass(frozen=True)
class AudioOffer:
    """The audio stream a peer's SDP describes, with media-level values already taking precedence."""

    connection_address: str
    port: int  # 0: the stream is disabled
    payload_types: tuple[int, ...]  # in the peer's order of preference
    rtpmap: dict[int, tuple[str, int]] = field(hash=False)  # payload type -> (ENCODING, clock rate)
    fmtp: dict[int, str] = field(hash=False)
    direction: str
    ptime: int | None
    session_id: str
    session_version: int
    # Every m= line of the description and which one is this stream: RFC 3264 6 wants an answer to hold as many
    # m= lines as the offer, in order, so the ones we do not take are answered with port 0.
    media_lines: tuple[str, ...] = ()
    media_index: int = 0

    @property
    def on_hold(self) -> bool:
        return self.direction in ("sendonly", "inactive") or self.connection_address in _HOLD_ADDRESSES


@dataclass(frozen=True)
class Negotiated:
    """What both ends agreed: our codec and DTMF payload types, where to send, and our own direction."""

    codec_pt: int
    codec: str  # "PCMU" or "PCMA"
    dtmf_pt: int | None  # the peer's telephone-event/8000 payload type, if it offered one
    remote_address: str
    remote_port: int
    direction: str  # OUR direction: what we put in the answer and whether we may send RTP
    media_lines: tuple[str, ...] = ()
    media_index: int = 0


@dataclass(frozen=True)
class _MediaLine:
    media: str
    port: int
    proto: str
    formats: tuple[str, ...]


def _number(text: str, what: str, maximum: int) -> int:
    # isdigit() on ASCII only: int() would take " 7", "1_0" and other scripts' digits, or choke on huge strings.
    if not (text.isascii() and text.isdigit()) or len(text) > 20 or int(text) > maximum:
        raise SdpError(f"bad {what}: {text[:40]!r}")
    return int(text)


def _parse_lines(body: bytes) -> tuple[list[tuple[str, str]], list[list[tuple[str, str]]]]:
    """Split SDP into session-level lines and one list of lines per media section (each starting with its m=)."""
    # SDP is UTF-8 (RFC 4566 5); a stray Latin-1 session name must not make the call fail.
    text = body.decode("utf-8", "replace")
    session: list[tuple[str, str]] = []
    media: list[list[tuple[str, str]]] = []
    for raw in text.split("\n"):
        line = raw.removesuffix("\r")
        if not line.strip():
            continue  # tolerate blank lines, e.g. a trailing extra CRLF
        if len(line) < 2 or line[1] != "=" or not "a" <= line[0] <= "z":
            raise SdpError(f"not an SDP line: {line[:40]!r}")
        kind, value = line[0], line[2:]
        if not session and (kind, value.strip()) != ("v", "0"):
            raise SdpError("SDP must start with v=0")
        if kind == "m":
            media.append([(kind, value)])
        elif media:
            media[-1].append((kind, value))
        else:
            session.append((kind, value))
    if not session:
        raise SdpError("empty SDP")
    return session, media


def _parse_media_line(value: str) -> _MediaLine:
    parts = value.split()
    if len(parts) < 4:
        raise SdpError(f"bad m= line: {value[:60]!r}")
    port = _number(parts[1].split("/")[0], "media port", 65535)  # "port/count" is legal; we use the first port
    return _MediaLine(parts[0].lower(), port, parts[2], tuple(parts[3:]))


def _first(lines: list[tuple[str, str]], kind: str) -> str | None:
    return next((value for other, value in lines if other == kind), None)


def _attributes(lines: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """a=name:value and a=flag lines as (name, value), flags with value ""."""
    result = []
    for kind, value in lines:
        if kind == "a":
            name, _, rest = value.partition(":")
            result.append((name.strip().lower(), rest.strip()))
    return result


def _connection_address(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"bad c= line: {value[:60]!r}")
    return parts[2].split("/")[0]  # drop a multicast TTL or address count


def _origin(session: list[tuple[str, str]]) -> tuple[str, int]:
    value = _first(session, "o")
    parts = value.split() if value is not None else []
    if len(parts) != 6:
        raise SdpError(f"missing or bad o= line: {(value or '')[:60]!r}")
    return parts[1], _number(parts[2], "session version", 2**64 - 1)


def _choose_audio(media: list[list[tuple[str, str]]]) -> tuple[int, _MediaLine]:
    lines = [_parse_media_line(section[0][1]) for section in media]
    audio = [(index, line) for index, line in enumerate(lines) if line.media == "audio"]
    if not audio:
        raise SdpNegotiationError("no audio stream offered")
    plain = [(index, line) for index, line in audio if line.proto.upper() == "RTP/AVP"]
    if not plain:
        raise SdpNegotiationError(f"only {audio[0][1].proto} audio offered; we speak plain RTP/AVP")
    # A stream offered with port 0 is switched off; prefer one that is live, but still answer a switched-off one.
    return next(((index, line) for index, line in plain if line.port != 0), plain[0])


def parse_offer(body: bytes) -> AudioOffer:
    """The first RTP/AVP audio stream of an SDP body; raises SdpError or SdpNegotiationError."""
    session, media = _parse_lines(body)
    session_id, session_version = _origin(session)
    index, media_line = _choose_audio(media)
    section = media[index][1:]
    connection = _first(section, "c") or _first(session, "c")
    if connection is None:
        raise SdpError("no c= line for the audio stream")
    payload_types = tuple(_number(fmt, "payload type", 127) for fmt in media_line.formats)

    rtpmap: dict[int, tuple[str, int]] = {}
    fmtp: dict[int, str] = {}
    ptime: int | None = None
    # Media-level attributes come last, so a media-level direction overrides the session-level one.
    directions = [name for name, _ in _attributes(session) + _attributes(section) if name in DIRECTIONS]
    for name, value in _attributes(section):
        if name == "ptime" and value.isascii() and value.isdigit() and len(value) < 6:
            ptime = int(value)  # a ptime we cannot read is only a hint, so it is ignored rather than refused
        elif name in ("rtpmap", "fmtp"):
            pt_text, _, rest = value.partition(" ")
            pt = _number(pt_text, f"{name} payload type", 127)
            if name == "fmtp":
                fmtp[pt] = rest.strip()
                continue
            encoding, _, rate = rest.strip().partition("/")
            if not encoding or not rate:
                raise SdpError(f"bad rtpmap: {value[:60]!r}")
            rtpmap[pt] = (encoding.upper(), _number(rate.split("/")[0], "clock rate", 10_000_000))
    for pt in payload_types:
        if pt not in rtpmap and pt in STATIC_PAYLOAD_TYPES:
            rtpmap[pt] = STATIC_PAYLOAD_TYPES[pt]
    return AudioOffer(
        connection_address=_connection_address(connection),
        port=media_line.port,
        payload_types=payload_types,
        rtpmap={pt: codec for pt, codec in rtpmap.items() if pt in payload_types},
        fmtp={pt: value for pt, value in fmtp.items() if pt in payload_types},
        direction=directions[-1] if directions else "sendrecv",
        ptime=ptime,
        session_id=session_id,
        session_version=session_version,
        media_lines=tuple(section[0][1] for section in media),
        media_index=index,
    )


def _codec(offer: AudioOffer, pt: int) -> str | None:
    """The encoding name of a payload type if it is one of ours at 8 kHz (G.711 is only ever 8 kHz)."""
    name, rate = offer.rtpmap.get(pt, ("", 0))
    return name if rate == 8000 else None


def negotiate(offer: AudioOffer, supported: Sequence[str] = ("PCMU", "PCMA")) -> Negotiated:
    """RFC 3264 6.1: take the first codec in the offer's order that we support, plus telephone-event if offered."""
    wanted = {name.upper() for name in supported}
    codec_pt = next((pt for pt in offer.payload_types if _codec(offer, pt) in wanted), None)
    if codec_pt is None:
        offered = ", ".join(f"{pt} {offer.rtpmap.get(pt, ('?', 0))[0]}" for pt in offer.payload_types)
        raise SdpNegotiationError(f"no common codec: offered {offered}, we support {', '.join(supported)}")
    dtmf_pt = next((pt for pt in offer.payload_types if offer.rtpmap.get(pt) == ("TELEPHONE-EVENT", 8000)), None)
    direction = _OUR_DIRECTION[offer.direction]
    if offer.connection_address in _HOLD_ADDRESSES:
        # Old-style hold: the peer gave no address to send to, so whatever its direction we must not send.
        direction = {"sendrecv": "recvonly", "sendonly": "inactive"}.get(direction, direction)
    return Negotiated(
        codec_pt=codec_pt,
        codec=offer.rtpmap[codec_pt][0],
        dtmf_pt=dtmf_pt,
        remote_address=offer.connection_address,
        remote_port=offer.port,
        direction=direction,
        media_lines=offer.media_lines,
        media_index=offer.media_index,
    )


def _session_lines(address: str, session_id: str, session_version: int) -> list[str]:
    family = "IP6" if ":" in address else "IP4"
    return ["v=0", f"o=- {session_id} {session_version} IN {family} {address}", "s=-", f"c=IN {family} {address}",
            "t=0 0"]  # fmt: skip


def _audio_lines(port: int, codecs: Sequence[tuple[int, str]], dtmf_pt: int | None, direction: str) -> list[str]:
    payload_types = [str(pt) for pt, _ in codecs] + ([str(dtmf_pt)] if dtmf_pt is not None else [])
    lines = [f"m=audio {port} RTP/AVP {' '.join(payload_types)}"]
    lines += [f"a=rtpmap:{pt} {name}/8000" for pt, name in codecs]
    if dtmf_pt is not None:
        lines += [f"a=rtpmap:{dtmf_pt} telephone-event/8000", f"a=fmtp:{dtmf_pt} {DTMF_EVENTS}"]
    return [*lines, f"a=ptime:{PTIME_MS}", f"a={direction}"]


def _encode(lines: list[str]) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def build_answer(
    local_address: str, local_port: int, negotiated: Negotiated, *, session_id: str, session_version: int
) -> bytes:
    """Our answer: the agreed codec and DTMF type at our address, every other offered stream refused (port 0)."""
    # RFC 3264 6: a stream the offer switched off (port 0) stays off in the answer.
    port = local_port if negotiated.remote_port else 0
    ours = _audio_lines(port, [(negotiated.codec_pt, negotiated.codec)], negotiated.dtmf_pt, negotiated.direction)
    lines = _session_lines(local_address, session_id, session_version)
    if not negotiated.media_lines:
        return _encode(lines + ours)
    for index, media_line in enumerate(negotiated.media_lines):
        if index == negotiated.media_index:
            lines += ours
        else:
            parts = media_line.split()
            lines.append(f"m={parts[0]} 0 {' '.join(parts[2:])}")
    return _encode(lines)


def build_offer(
    local_address: str, local_port: int, *, session_id: str, session_version: int,
    codecs: Sequence[str] = ("PCMU", "PCMA"), dtmf_pt: int = 101,
) -> bytes:  # fmt: skip
    """An offer for an outbound call: G.711 in our order of preference, and telephone-event."""
    unknown = [name for name in codecs if name.upper() not in _OFFERABLE]
    if unknown or not codecs:
        raise ValueError(f"cannot offer codecs {list(codecs)}; only {sorted(_OFFERABLE)}")
    offered = [(_OFFERABLE[name.upper()], name.upper()) for name in codecs]
    lines = _session_lines(local_address, session_id, session_version)
    return _encode(lines + _audio_lines(local_port, offered, dtmf_pt, "sendrecv"))


def parse_answer(body: bytes, offered: Sequence[str] = ("PCMU", "PCMA")) -> Negotiated:
    """What the peer's answer to our offer settled; a refused audio stream raises SdpNegotiationError."""
    answer = parse_offer(body)
    if answer.port == 0:
        raise SdpNegotiationError("the answer refused the audio stream (port 0)")
    return negotiate(answer, offered)
