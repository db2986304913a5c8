"""RTP on the wire (RFC 3550), keypad events (RFC 4733) and a jitter buffer; pure code, no sockets."""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

RTP_VERSION = 2
_HEADER = struct.Struct("!BBHII")
_EXTENSION_HEADER = struct.Struct("!HH")
_EVENT = struct.Struct("!BBH")
_SEQUENCE_MODULO = 1 << 16
_TIMESTAMP_MODULO = 1 << 32
# Second header bytes 200-204 are RTCP's SR, RR, SDES, BYE and APP; seen as RTP they are marker + PT 72-76.
_RTCP_PACKET_TYPES = range(200, 205)

# RFC 4733 event codes 0-15 are the keypad; the index of a digit in this string is its code.
EVENT_DIGITS = "0123456789*#ABCD"
# How many times a sender repeats the final packet of an event (RFC 4733 section 2.5.1.4 recommends three).
END_PACKET_REPEATS = 3
# Volume a sender reports for a keypad event, in -dBm0 (RFC 4733 allows 0-63; 10 is a typical keypad level).
_DEFAULT_EVENT_VOLUME = 10

# RFC 3550 appendix A.1: how far a sequence number may jump ahead, or lag behind, and still be the same stream.
_MAX_DROPOUT = 3000
_MAX_MISORDER = 100


class RtpParseError(ValueError):
    """A datagram that is not an RTP packet we can use; `reason` says why ("rtcp" for RTCP on the RTP port)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RtpPacket:
    """One RTP packet; CSRCs, header extensions and padding are read past but not kept."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload type {self.payload_type} is outside 0-127")
        if not 0 <= self.sequence < _SEQUENCE_MODULO:
            raise ValueError(f"sequence number {self.sequence} is outside 16 bits")
        if not 0 <= self.timestamp < _TIMESTAMP_MODULO:
            raise ValueError(f"timestamp {self.timestamp} is outside 32 bits")
        if not 0 <= self.ssrc < _TIMESTAMP_MODULO:
            raise ValueError(f"SSRC {self.ssrc} is outside 32 bits")

    def encode(self) -> bytes:
        """The packet as sent: a 12-byte header (version 2, no padding, extension or CSRCs), then the payload."""
        second = (0x80 if self.marker else 0) | self.payload_type
        return _HEADER.pack(RTP_VERSION << 6, second, self.sequence, self.timestamp, self.ssrc) + self.payload


def parse_rtp(data: bytes) -> RtpPacket:
    """Read one RTP packet; RtpParseError for anything else (short, another version, RTCP, bad lengths)."""
    if len(data) < _HEADER.size:
        raise RtpParseError("short")
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise RtpParseError("version")
    if second in _RTCP_PACKET_TYPES:
        raise RtpParseError("rtcp")
    offset = _HEADER.size + 4 * (first & 0x0F)
    if first & 0x10:
        if len(data) < offset + _EXTENSION_HEADER.size:
            raise RtpParseError("short extension")
        _profile, words = _EXTENSION_HEADER.unpack_from(data, offset)
        offset += _EXTENSION_HEADER.size + 4 * words
    end = len(data)
    if first & 0x20:
        padding = data[-1] if data else 0
        # The count includes itself, so zero is malformed (RFC 3550 section 5.1).
        if padding == 0:
            raise RtpParseError("padding")
        end -= padding
    if end < offset:
        raise RtpParseError("short")
    return RtpPacket(
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        payload=bytes(data[offset:end]),
        marker=bool(second & 0x80),
    )


@dataclass(frozen=True)
class TelephoneEvent:
    """The first (usually only) event of an RFC 4733 payload; `duration` is in RTP timestamp units."""

    event: int
    end: bool
    volume: int
    duration: int

    def encode(self) -> bytes:
        return _EVENT.pack(self.event, (0x80 if self.end else 0) | (self.volume & 0x3F), self.duration)


def parse_telephone_event(payload: bytes) -> TelephoneEvent:
    """Read an RFC 4733 payload; RtpParseError if it is shorter than one event."""
    if len(payload) < _EVENT.size:
        raise RtpParseError("short event")
    event, flags, duration = _EVENT.unpack_from(payload)
    return TelephoneEvent(event=event, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration)


def telephone_event_packets(
    digit: str,
    *,
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    duration_ms: int = 100,
    packet_ms: int = 20,
    clock_rate: int = 8000,
) -> list[RtpPacket]:
    """What a sender emits for one key press: one packet per `packet_ms` with a growing duration (marker on the
    first), then the final duration three times with the end bit; all share the event's start `timestamp`."""
    event = EVENT_DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if event < 0:
        raise ValueError(f"{digit!r} is not a keypad digit")
    if duration_ms <= 0 or packet_ms <= 0:
        raise ValueError("durations must be positive")
    step = clock_rate * packet_ms // 1000
    total = clock_rate * duration_ms // 1000
    if total > 0xFFFF:
        # Longer events need RFC 4733 segments, which a key press never does.
        raise ValueError(f"{duration_ms} ms is too long for one event segment")
    durations = range(step, total, step) if step else range(0)
    events = [TelephoneEvent(event, False, _DEFAULT_EVENT_VOLUME, d) for d in durations]
    events += [TelephoneEvent(event, True, _DEFAULT_EVENT_VOLUME, total)] * END_PACKET_REPEATS
    return [
        RtpPacket(
            payload_type=payload_type,
            sequence=(sequence + index) % _SEQUENCE_MODULO,
            timestamp=timestamp % _TIMESTAMP_MODULO,
            ssrc=ssrc,
            payload=telephone_event.encode(),
            marker=index == 0,
        )
        for index, telephone_event in enumerate(events)
    ]


@dataclass
class _EventInProgress:
    ssrc: int
    timestamp: int
    event: int
    ended: bool


class DtmfReceiver:
    """RFC 4733 receiver: one digit per key press, whatever the repeats, retransmissions or reordering.

    An event is identified by its RTP timestamp (and SSRC): the first packet with a timestamp not seen recently
    yields the digit; later packets with it (growing durations, the repeated end packets, late arrivals) do not.
    A long press split into segments (RFC 4733 section 2.5.1.3) continues the same digit.
    """

    def __init__(self, *, memory: int = 16) -> None:
        self._recent: deque[tuple[int, int]] = deque(maxlen=memory)
        self._current: _EventInProgress | None = None

    def feed(self, packet: RtpPacket) -> str | None:
        try:
            telephone_event = parse_telephone_event(packet.payload)
        except RtpParseError:
            return None
        if telephone_event.event >= len(EVENT_DIGITS):
            return None
        current = self._current
        if current is not None and (current.ssrc, current.timestamp) == (packet.ssrc, packet.timestamp):
            current.ended = current.ended or telephone_event.end
            return None
        key = (packet.ssrc, packet.timestamp)
        if key in self._recent:
            return None
        # A segment of a long press starts 0xFFFF units after the previous one, without marker, same event.
        continues = (
            current is not None
            and not current.ended
            and not packet.marker
            and current.ssrc == packet.ssrc
            and current.event == telephone_event.event
            and (packet.timestamp - current.timestamp) % _TIMESTAMP_MODULO == 0xFFFF
        )
        self._recent.append(key)
        self._current = _EventInProgress(packet.ssrc, packet.timestamp, telephone_event.event, telephone_event.end)
        return None if continues else EVENT_DIGITS[telephone_event.event]


@dataclass
class JitterStats:
    received: int = 0
    played: int = 0
    lost: int = 0  # frames that never arrived in time; each was played as a gap (b"")
    late: int = 0  # packets that arrived after their playout point, dropped
    duplicate: int = 0
    reordered: int = 0  # packets that arrived after a later one, put back in order
    overflow: int = 0  # frames dropped because the sender ran too far ahead of playout
    underruns: int = 0  # times the buffer ran dry and waited to fill again
    resets: int = 0  # new streams (another SSRC, or a sequence restart)


class JitterBuffer:
    """Fixed-depth playout buffer keyed by RTP sequence number.

    `pop()` is called once per frame time by the playout clock. It gives nothing (None) until `depth_frames`
    frames are buffered (or have waited that many pops), then one payload per call in sequence order, b"" for
    a frame that is missing while later ones are here (the caller conceals it), and None again when it runs
    dry, after which it fills up to depth again (the start of a new talkspurt). Sequence numbers are extended
    past 65535 so wrap-around is seamless; timestamps are not used for ordering, so their wrap does not matter.
    """

    def __init__(self, *, depth_frames: int = 3, frame_samples: int = 160, max_frames: int | None = None) -> None:
        if depth_frames < 1:
            raise ValueError("depth_frames must be at least 1")
        self.depth_frames = depth_frames
        # The nominal frame size: what a gap (b"") stands for until the caller has seen a real frame.
        self.frame_samples = frame_samples
        # Beyond this the sender is ahead of our clock (drift or a burst); the oldest frames go to bound latency.
        self.max_frames = max_frames if max_frames is not None else depth_frames + 25
        self.stats = JitterStats()
        self._frames: dict[int, bytes] = {}
        self._ssrc: int | None = None
        self._highest: int | None = None  # extended sequence number of the highest packet seen
        self._next: int | None = None  # extended sequence number of the next frame to play
        self._primed = False
        self._waiting_pops = 0
        self._probation: int | None = None  # sequence number that would confirm a restarted stream

    def __len__(self) -> int:
        return len(self._frames)

    def reset(self) -> None:
        """Forget the stream (new SSRC, codec change); the statistics are kept."""
        self._frames.clear()
        self._ssrc = None
        self._highest = None
        self._next = None
        self._primed = False
        self._waiting_pops = 0
        self._probation = None

    def push(self, packet: RtpPacket) -> None:
        self.stats.received += 1
        if self._ssrc is not None and packet.ssrc != self._ssrc:
            self.reset()
            self.stats.resets += 1
        self._ssrc = packet.ssrc
        if self._highest is None:
            self._highest = packet.sequence
        delta = (packet.sequence - self._highest + _SEQUENCE_MODULO // 2) % _SEQUENCE_MODULO - _SEQUENCE_MODULO // 2
        if delta >= _MAX_DROPOUT or delta < -_MAX_MISORDER:
            # A jump this large is either a stray packet or a restarted sender: two in a row confirm a restart.
            if packet.sequence != self._probation:
                self._probation = (packet.sequence + 1) % _SEQUENCE_MODULO
                self.stats.late += 1
                return
            self.reset()
            self.stats.resets += 1
            self._ssrc = packet.ssrc
            self._highest = packet.sequence
            delta = 0
        self._probation = None
        extended = self._highest + delta
        if self._next is not None and extended < self._next:
            self.stats.late += 1
            return
        if extended in self._frames:
            self.stats.duplicate += 1
            return
        if extended < self._highest:
            self.stats.reordered += 1
        else:
            self._highest = extended
        self._frames[extended] = packet.payload
        while len(self._frames) > self.max_frames:
            oldest = min(self._frames)
            del self._frames[oldest]
            self.stats.overflow += 1
            if self._next is not None:
                self.stats.lost += max(0, oldest - self._next)
                self._next = max(self._next, oldest + 1)

    def pop(self) -> bytes | None:
        if not self._primed:
            if not self._frames:
                return None
            self._waiting_pops += 1
            if len(self._frames) < self.depth_frames and self._waiting_pops < self.depth_frames:
                return None
            first = min(self._frames)
            if self._next is not None:
                # Frames between the last one played and this talkspurt never came.
                self.stats.lost += max(0, first - self._next)
            self._next = first
            self._primed = True
            self._waiting_pops = 0
        assert self._next is not None
        payload = self._frames.pop(self._next, None)
        if payload is not None:
            self._next += 1
            self.stats.played += 1
            return payload
        if self._frames:
            self._next += 1
            self.stats.lost += 1
            return b""
        self._primed = False
        self.stats.underruns += 1
        return None
