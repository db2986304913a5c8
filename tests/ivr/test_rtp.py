"""RTP packets, RFC 4733 keypad events and the jitter buffer, without sockets."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from channels.ivr.rtp import (
    EVENT_DIGITS,
    DtmfReceiver,
    JitterBuffer,
    RtpPacket,
    RtpParseError,
    TelephoneEvent,
    parse_rtp,
    parse_telephone_event,
    telephone_event_packets,
)

DTMF_PT = 101


def header(
    *,
    pt: int = 0,
    seq: int = 1,
    ts: int = 2,
    ssrc: int = 3,
    marker: bool = False,
    padding: bool = False,
    extension: bool = False,
    csrc_count: int = 0,
    version: int = 2,
) -> bytes:
    first = version << 6 | (0x20 if padding else 0) | (0x10 if extension else 0) | csrc_count
    return struct.pack("!BBHII", first, (0x80 if marker else 0) | pt, seq, ts, ssrc)


# -- packets ----------------------------------------------------------------------------------------------------


def test_a_packet_round_trips_through_the_wire_format() -> None:
    packet = RtpPacket(
        payload_type=8, sequence=65535, timestamp=2**32 - 1, ssrc=0xDEADBEEF, payload=b"abc", marker=True
    )
    data = packet.encode()
    assert data[:2] == b"\x80\x88"
    assert len(data) == 12 + 3
    assert parse_rtp(data) == packet


@given(
    pt=st.integers(0, 127),
    seq=st.integers(0, 65535),
    ts=st.integers(0, 2**32 - 1),
    ssrc=st.integers(0, 2**32 - 1),
    payload=st.binary(max_size=200),
    marker=st.booleans(),
)
def test_any_valid_packet_round_trips(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool) -> None:
    if marker and 72 <= pt <= 76:
        # These header bytes are RTCP's packet types; RTP over the same port cannot use them (RFC 5761).
        return
    packet = RtpPacket(pt, seq, ts, ssrc, payload, marker)
    assert parse_rtp(packet.encode()) == packet


@pytest.mark.parametrize("fields", [{"payload_type": 128}, {"sequence": 65536}, {"timestamp": -1}, {"ssrc": 2**32}])
def test_a_packet_refuses_fields_that_do_not_fit_the_header(fields: dict[str, int]) -> None:
    values = {"payload_type": 0, "sequence": 0, "timestamp": 0, "ssrc": 0, "payload": b""} | fields
    with pytest.raises(ValueError):
        RtpPacket(**values)  # type: ignore[arg-type]


def test_csrc_list_and_header_extension_are_skipped() -> None:
    csrcs = struct.pack("!II", 11, 22)
    extension = struct.pack("!HH", 0xBEDE, 2) + b"\x01" * 8
    data = header(csrc_count=2, extension=True, seq=7) + csrcs + extension + b"voice"
    packet = parse_rtp(data)
    assert packet.payload == b"voice"
    assert packet.sequence == 7


def test_padding_is_removed_using_its_last_byte() -> None:
    data = header(padding=True) + b"voice" + b"\x00\x00\x03"
    assert parse_rtp(data).payload == b"voice"


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "short"),
        (b"\x80\x00\x00", "short"),
        (header(version=1) + b"x", "version"),
        (header(version=0), "version"),
        (header(csrc_count=3) + b"\x00" * 8, "short"),
        (header(extension=True) + b"\x00\x01", "short extension"),
        (header(extension=True) + struct.pack("!HH", 0, 5) + b"\x00" * 4, "short"),
        (header(padding=True) + b"ab\x00", "padding"),
        (header(padding=True) + b"ab\x09", "short"),
    ],
)
def test_malformed_datagrams_raise_rtp_parse_error(data: bytes, reason: str) -> None:
    with pytest.raises(RtpParseError) as caught:
        parse_rtp(data)
    assert caught.value.reason == reason


@pytest.mark.parametrize("packet_type", [200, 201, 202, 203, 204])
def test_rtcp_on_the_rtp_port_is_reported_as_rtcp(packet_type: int) -> None:
    rtcp = struct.pack("!BBHI", 0x81, packet_type, 1, 0x1234) + b"\x00" * 24
    with pytest.raises(RtpParseError, match="rtcp"):
        parse_rtp(rtcp)


@given(st.binary(max_size=80))
def test_random_bytes_never_raise_anything_but_rtp_parse_error(data: bytes) -> None:
    try:
        packet = parse_rtp(data)
    except RtpParseError:
        return
    assert 0 <= packet.payload_type <= 127
    assert len(packet.payload) <= len(data) - 12


@given(st.binary(min_size=12, max_size=80))
def test_random_bytes_with_a_version_2_header_never_raise_anything_else(data: bytes) -> None:
    with contextlib.suppress(RtpParseError):
        parse_rtp(bytes([0x80 | data[0] & 0x3F]) + data[1:])


# -- RFC 4733 events --------------------------------------------------------------------------------------------


def test_a_telephone_event_payload_is_read_field_by_field() -> None:
    assert parse_telephone_event(bytes([11, 0x8A, 0x03, 0x20])) == TelephoneEvent(
        event=11, end=True, volume=10, duration=800
    )
    assert parse_telephone_event(bytes([5, 0x3F, 0, 160])) == TelephoneEvent(
        event=5, end=False, volume=63, duration=160
    )


@given(st.binary(max_size=8))
def test_telephone_event_payloads_shorter_than_four_bytes_are_refused(data: bytes) -> None:
    if len(data) < 4:
        with pytest.raises(RtpParseError):
            parse_telephone_event(data)
    else:
        assert parse_telephone_event(data).event == data[0]


def test_a_key_press_is_sent_as_growing_events_then_three_end_packets() -> None:
    packets = telephone_event_packets("5", payload_type=DTMF_PT, sequence=65534, timestamp=2**32 - 80, ssrc=9)
    events = [parse_telephone_event(p.payload) for p in packets]
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3
    assert {e.event for e in events} == {5}
    assert [p.marker for p in packets] == [True] + [False] * 6
    assert [p.sequence for p in packets] == [65534, 65535, 0, 1, 2, 3, 4]
    assert {p.timestamp for p in packets} == {2**32 - 80}
    assert {(p.payload_type, p.ssrc) for p in packets} == {(DTMF_PT, 9)}


def test_a_press_no_longer_than_one_packet_is_only_end_packets() -> None:
    packets = telephone_event_packets("#", payload_type=DTMF_PT, sequence=0, timestamp=0, ssrc=1, duration_ms=20)
    assert [parse_telephone_event(p.payload) for p in packets] == [TelephoneEvent(11, True, 10, 160)] * 3
    assert packets[0].marker


@pytest.mark.parametrize("digit", ["", "12", "E", "x"])
def test_only_keypad_digits_can_be_sent(digit: str) -> None:
    with pytest.raises(ValueError):
        telephone_event_packets(digit, payload_type=DTMF_PT, sequence=0, timestamp=0, ssrc=1)


def key_presses(digits: str, *, start_ts: int = 1000, ssrc: int = 7) -> list[list[RtpPacket]]:
    presses = []
    sequence = 100
    for index, digit in enumerate(digits):
        packets = telephone_event_packets(
            digit, payload_type=DTMF_PT, sequence=sequence, timestamp=(start_ts + index * 4000) % 2**32, ssrc=ssrc
        )
        sequence += len(packets)
        presses.append(packets)
    return presses


def received(receiver: DtmfReceiver, packets: list[RtpPacket]) -> str:
    return "".join(digit for packet in packets if (digit := receiver.feed(packet)) is not None)


def test_each_key_press_yields_its_digit_once_at_its_first_packet() -> None:
    receiver = DtmfReceiver()
    presses = key_presses("1234#")
    for press, digit in zip(presses, "1234#", strict=True):
        assert receiver.feed(press[0]) == digit
        assert [receiver.feed(p) for p in press[1:]] == [None] * (len(press) - 1)


def test_retransmitted_and_reordered_event_packets_do_not_repeat_digits() -> None:
    presses = key_presses("1234#")
    first, second, *rest = presses
    # The end packets of the first press arrive after the second press began.
    stream = first[:4] + second[:2] + first[4:] + second[2:] + [p for press in rest for p in press]
    stream = [p for p in stream for _ in range(2)]  # and every packet comes twice
    assert received(DtmfReceiver(), stream) == "1234#"


def test_the_same_digit_pressed_twice_is_two_digits() -> None:
    assert received(DtmfReceiver(), [p for press in key_presses("55") for p in press]) == "55"


def test_a_lost_first_packet_still_yields_the_digit() -> None:
    presses = key_presses("12")
    assert received(DtmfReceiver(), presses[0][1:] + presses[1][2:]) == "12"


def test_events_beyond_the_keypad_are_ignored() -> None:
    flash = RtpPacket(DTMF_PT, 1, 500, 7, bytes([16, 0x0A, 0, 160]), marker=True)
    assert DtmfReceiver().feed(flash) is None
    assert DtmfReceiver().feed(RtpPacket(DTMF_PT, 1, 500, 7, b"\x01")) is None


def test_a_long_press_split_into_segments_is_one_digit() -> None:
    receiver = DtmfReceiver()
    first_segment = RtpPacket(DTMF_PT, 1, 2**32 - 100, 7, TelephoneEvent(9, False, 10, 0xFFFF).encode(), marker=True)
    next_segment = RtpPacket(DTMF_PT, 2, (2**32 - 100 + 0xFFFF) % 2**32, 7, TelephoneEvent(9, True, 10, 800).encode())
    assert receiver.feed(first_segment) == "9"
    assert receiver.feed(next_segment) is None


def test_event_codes_map_to_the_keypad_in_order() -> None:
    assert EVENT_DIGITS.index("*") == 10
    assert EVENT_DIGITS.index("#") == 11
    assert EVENT_DIGITS.index("D") == 15


# -- jitter buffer ----------------------------------------------------------------------------------------------


def frame(seq: int, *, ssrc: int = 1, ts_base: int = 0) -> RtpPacket:
    return RtpPacket(
        payload_type=0,
        sequence=seq % 65536,
        timestamp=(ts_base + seq * 160) % 2**32,
        ssrc=ssrc,
        payload=f"f{seq}".encode(),
    )


def drain(buffer: JitterBuffer, pops: int) -> list[bytes | None]:
    return [buffer.pop() for _ in range(pops)]


def test_nothing_plays_until_the_buffer_holds_its_depth() -> None:
    buffer = JitterBuffer(depth_frames=3)
    buffer.push(frame(10))
    buffer.push(frame(11))
    assert buffer.pop() is None
    buffer.push(frame(12))
    assert drain(buffer, 3) == [b"f10", b"f11", b"f12"]


def test_a_short_talkspurt_plays_after_waiting_depth_pops() -> None:
    buffer = JitterBuffer(depth_frames=3)
    buffer.push(frame(10))
    assert drain(buffer, 4) == [None, None, b"f10", None]


def test_packets_reordered_within_the_depth_play_in_sequence() -> None:
    buffer = JitterBuffer(depth_frames=3)
    for seq in [1, 3, 2, 4, 6, 5]:
        buffer.push(frame(seq))
    assert drain(buffer, 7) == [b"f1", b"f2", b"f3", b"f4", b"f5", b"f6", None]
    assert buffer.stats.reordered == 2
    assert buffer.stats.lost == 0


def test_a_missing_frame_plays_as_an_empty_gap() -> None:
    buffer = JitterBuffer(depth_frames=3)
    for seq in [1, 2, 4, 5]:
        buffer.push(frame(seq))
    assert drain(buffer, 5) == [b"f1", b"f2", b"", b"f4", b"f5"]
    assert buffer.stats.lost == 1


def test_duplicates_and_late_packets_are_dropped_and_counted() -> None:
    buffer = JitterBuffer(depth_frames=2)
    for seq in [1, 2, 2, 4]:
        buffer.push(frame(seq))
    assert drain(buffer, 3) == [b"f1", b"f2", b""]
    buffer.push(frame(3))  # its turn has passed
    buffer.push(frame(1))
    assert drain(buffer, 2) == [b"f4", None]
    assert (buffer.stats.duplicate, buffer.stats.late, buffer.stats.lost) == (1, 2, 1)


def test_sequence_and_timestamp_wrap_around_seamlessly() -> None:
    buffer = JitterBuffer(depth_frames=3)
    start = 65533
    ts_base = 2**32 - 3 * 160 - start * 160  # the timestamp wraps at the same point
    for seq in [start, start + 2, start + 1, start + 3, start + 5, start + 4, start + 6]:
        buffer.push(frame(seq, ts_base=ts_base))
    played = drain(buffer, 8)
    assert played == [f"f{s}".encode() for s in range(start, start + 7)] + [None]
    assert buffer.stats.late == 0


def test_after_running_dry_the_buffer_refills_before_playing_again() -> None:
    buffer = JitterBuffer(depth_frames=2)
    for seq in [1, 2]:
        buffer.push(frame(seq))
    assert drain(buffer, 3) == [b"f1", b"f2", None]
    assert buffer.stats.underruns == 1
    buffer.push(frame(3))
    assert buffer.pop() is None
    buffer.push(frame(4))
    assert drain(buffer, 2) == [b"f3", b"f4"]
    assert buffer.stats.lost == 0


def test_frames_missing_across_an_underrun_count_as_lost() -> None:
    buffer = JitterBuffer(depth_frames=1)
    buffer.push(frame(1))
    assert drain(buffer, 2) == [b"f1", None]
    buffer.push(frame(5))
    assert buffer.pop() == b"f5"
    assert buffer.stats.lost == 3


def test_a_new_ssrc_starts_a_new_stream() -> None:
    buffer = JitterBuffer(depth_frames=1)
    buffer.push(frame(100))
    assert buffer.pop() == b"f100"
    buffer.push(frame(7, ssrc=2))  # far behind the old stream's playout point, but a new stream
    assert buffer.pop() == b"f7"
    assert buffer.stats.resets == 1
    assert buffer.stats.late == 0


def test_a_sequence_restart_is_followed_after_two_consecutive_packets() -> None:
    buffer = JitterBuffer(depth_frames=1)
    buffer.push(frame(40000))
    assert buffer.pop() == b"f40000"
    buffer.push(frame(10))  # a stray packet is dropped...
    assert buffer.pop() is None
    buffer.push(frame(11))  # ...but a second in sequence means the sender restarted
    assert buffer.pop() == b"f11"
    assert buffer.stats.resets == 1


def test_a_sender_running_ahead_is_trimmed_to_bound_latency() -> None:
    buffer = JitterBuffer(depth_frames=2, max_frames=5)
    for seq in range(10):
        buffer.push(frame(seq))
    assert len(buffer) == 5
    assert buffer.stats.overflow == 5
    assert buffer.pop() == b"f5"


@given(st.lists(st.integers(0, 40), max_size=60), st.integers(0, 65535))
def test_whatever_arrives_plays_in_strictly_increasing_order(arrivals: list[int], base: int) -> None:
    buffer = JitterBuffer(depth_frames=3)
    played: list[int] = []
    for offset in arrivals:
        buffer.push(frame(base + offset))
        payload = buffer.pop()
        if payload:
            played.append(int(payload[1:]))
    unwrapped = [(seq - base) % 65536 for seq in played]
    assert unwrapped == sorted(set(unwrapped))
