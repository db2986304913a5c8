"""RtpSession over loopback UDP: sessions talking to each other, and raw sockets speaking RTP at them."""

from __future__ import annotations

import asyncio
import itertools
import os
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pytest

from channels.ivr.g711 import PCMA, PCMU, G711Codec
from channels.ivr.rtp import RtpPacket, parse_rtp, parse_telephone_event, telephone_event_packets
from channels.ivr.rtp_session import RtpSession

HOST = "127.0.0.1"
DTMF_PT = 101


@dataclass
class Listener:
    """What a session hands the call flow, with the loop time each frame arrived."""

    frames: list[tuple[float, bytes]] = field(default_factory=list)
    digits: list[str] = field(default_factory=list)
    timeouts: int = 0

    async def on_audio(self, pcm: bytes) -> None:
        self.frames.append((asyncio.get_running_loop().time(), pcm))

    async def on_dtmf(self, digit: str) -> None:
        self.digits.append(digit)

    async def on_media_timeout(self) -> None:
        self.timeouts += 1

    def samples(self) -> np.ndarray:
        return np.frombuffer(b"".join(pcm for _, pcm in self.frames), dtype="<i2").astype(np.float64)


class RawPeer(asyncio.DatagramProtocol):
    """A bare UDP socket standing in for the far end: sends what a test crafts, records what arrives."""

    def __init__(self) -> None:
        self.received: list[tuple[float, bytes]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.received.append((asyncio.get_running_loop().time(), data))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, data: bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(data, (HOST, port))

    def packets(self) -> list[RtpPacket]:
        return [parse_rtp(data) for _, data in self.received]


SessionFactory = Callable[..., Awaitable[tuple[RtpSession, Listener]]]
PeerFactory = Callable[[], Awaitable[RawPeer]]


@pytest.fixture
async def make_session() -> AsyncIterator[SessionFactory]:
    sessions: list[RtpSession] = []

    async def make(
        *, remote: tuple[str, int] | None = None, codec: G711Codec = PCMU, **options: Any
    ) -> tuple[RtpSession, Listener]:
        listener = Listener()
        session = RtpSession(
            local_host=HOST,
            codec=codec,
            remote=remote,
            dtmf_pt=options.pop("dtmf_pt", DTMF_PT),
            on_audio=options.pop("on_audio", listener.on_audio),
            on_dtmf=options.pop("on_dtmf", listener.on_dtmf),
            on_media_timeout=options.pop("on_media_timeout", listener.on_media_timeout),
            **options,
        )
        sessions.append(session)
        await session.start()
        return session, listener

    yield make
    for session in sessions:
        await session.close()


@pytest.fixture
async def make_peer() -> AsyncIterator[PeerFactory]:
    peers: list[RawPeer] = []

    async def make() -> RawPeer:
        _, peer = await asyncio.get_running_loop().create_datagram_endpoint(RawPeer, local_addr=(HOST, 0))
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        assert peer.transport is not None
        peer.transport.close()


async def connected_pair(
    make_session: SessionFactory, codec: G711Codec = PCMU
) -> tuple[RtpSession, RtpSession, Listener]:
    a, _ = await make_session(codec=codec)
    b, heard_by_b = await make_session(codec=codec, remote=(HOST, a.local_port))
    a.set_remote(HOST, b.local_port)
    return a, b, heard_by_b


def sine(seconds: float, hz: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(8000 * seconds)) / 8000
    return np.round(amplitude * 32767 * np.sin(2 * np.pi * hz * t)).astype("<i2")


async def wait_until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def audio_packet(seq: int, value: int, *, ssrc: int = 42, codec: G711Codec = PCMU, marker: bool = False) -> bytes:
    pcm = np.full(160, value, dtype="<i2").tobytes()
    return RtpPacket(codec.payload_type, seq % 65536, (seq * 160) % 2**32, ssrc, codec.encode(pcm), marker).encode()


# -- audio ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", [PCMU, PCMA])
async def test_audio_played_on_one_session_arrives_decoded_in_order_and_in_real_time(
    make_session: SessionFactory, codec: G711Codec
) -> None:
    a, b, heard_by_b = await connected_pair(make_session, codec)
    tone = sine(1.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    a.play(tone.tobytes())
    assert a.playback_pending() == pytest.approx(1.0)
    await wait_until(lambda: a.playback_pending() == 0)
    sent_in = loop.time() - started
    await asyncio.sleep(0.15)  # the jitter buffer's depth and a little

    received = heard_by_b.samples()
    offset = int(np.argmax(np.correlate(received, tone.astype(np.float64), mode="valid")))
    segment = received[offset : offset + len(tone)]
    assert np.corrcoef(segment, tone)[0, 1] > 0.99
    # Paced at 20 ms per frame: a second of audio takes about a second, on both sides.
    assert 0.9 < sent_in < 1.3
    loud = [at for at, pcm in heard_by_b.frames if np.abs(np.frombuffer(pcm, dtype="<i2")).max() > 1000]
    assert 0.9 < loud[-1] - loud[0] < 1.2
    assert b.stats.lost == 0
    assert a.stats.packets_out >= 50
    assert a.stats.max_send_lag_ms < 50


async def test_packets_lost_reordered_or_duplicated_on_the_way_play_out_in_order(
    make_session: SessionFactory, make_peer: PeerFactory
) -> None:
    peer = await make_peer()
    session, heard = await make_session(remote=(HOST, peer.port))
    code_of = [0x20 + i for i in range(30)]  # a distinct µ-law level for each frame
    order = [0, 1, 2, 3, 5, 4, 6, 7, 8, 10, 11, 12, 12, *range(13, 30)]  # 5/4 swapped, 9 lost, 12 twice
    loop = asyncio.get_running_loop()
    start = loop.time()
    for index, seq in enumerate(order):
        # On an absolute schedule, as a real sender: relative sleeps would drift and drain the jitter buffer.
        await asyncio.sleep(start + 0.02 * index - loop.time())
        packet = RtpPacket(0, (65530 + seq) % 65536, seq * 160, 42, bytes([code_of[seq]]) * 160)
        peer.send(packet.encode(), session.local_port)
    await asyncio.sleep(0.12)

    frame_of = {PCMU.decode(bytes([code]) * 160): i for i, code in enumerate(code_of)}
    played: list[int | str] = ["gap" if pcm == bytes(320) else frame_of[pcm] for _, pcm in heard.frames]
    while played and played[-1] == "gap":  # the stream ended; silence keeps flowing
        played.pop()
    assert played == [0, 1, 2, 3, 4, 5, 6, 7, 8, "gap", *range(10, 30)]
    stats = session.stats
    assert (stats.lost, stats.duplicates, stats.reordered, stats.late_in) == (1, 1, 1, 0)
    assert stats.packets_in == len(order)


# -- the sender -------------------------------------------------------------------------------------------------


async def test_the_sender_paces_frames_with_rtp_headers_a_receiver_can_follow(
    make_session: SessionFactory, make_peer: PeerFactory
) -> None:
    peer = await make_peer()
    session, _ = await make_session(remote=(HOST, peer.port))
    await asyncio.sleep(0.1)
    session.play(sine(0.1).tobytes())
    await wait_until(lambda: session.playback_pending() == 0)
    await session.send_dtmf("5")
    session.play(sine(0.04).tobytes())
    await asyncio.sleep(0.1)

    packets = peer.packets()
    assert {p.ssrc for p in packets} == {session.ssrc}
    assert all((b.sequence - a.sequence) % 65536 == 1 for a, b in itertools.pairwise(packets))
    audio = [p for p in packets if p.payload_type == PCMU.payload_type]
    events = [p for p in packets if p.payload_type == DTMF_PT]
    # The media clock advances 160 per 20 ms, also while events replace audio.
    start = packets[0].timestamp
    assert all((p.timestamp - start) % 2**32 == 160 * i for i, p in enumerate(packets) if p in audio)
    assert (events[0].timestamp - start) % 2**32 == 160 * packets.index(events[0])
    assert {len(p.payload) for p in audio} == {160}
    assert audio[0].payload == b"\xff" * 160  # comfort silence before anything is played
    assert len(events) == 7
    assert {p.timestamp for p in events} == {events[0].timestamp}
    assert [parse_telephone_event(p.payload).end for p in events] == [False] * 4 + [True] * 3
    # Markers: the first frame of each talkspurt, and the first packet of the event.
    speech_starts = [
        p
        for previous, p in itertools.pairwise(packets)
        if p in audio
        and p.payload != b"\xff" * 160
        and (previous.payload == b"\xff" * 160 or previous.payload_type == DTMF_PT)
    ]
    assert [p for p in packets if p.marker] == [speech_starts[0], events[0], speech_starts[1]]
    # Real-time pacing: the packets span their duration rather than arriving in a burst.
    times = [at for at, _ in peer.received]
    intervals = np.diff(times)
    assert np.mean(intervals) == pytest.approx(0.02, abs=0.003)
    assert session.stats.underruns == 0


async def test_stop_playback_empties_the_queue_and_silence_follows(
    make_session: SessionFactory, make_peer: PeerFactory
) -> None:
    peer = await make_peer()
    session, _ = await make_session(remote=(HOST, peer.port))
    session.play(sine(5.0).tobytes())
    await asyncio.sleep(0.1)
    assert 4.8 < session.playback_pending() < 5.0
    session.stop_playback()
    assert session.playback_pending() == 0
    await asyncio.sleep(0.06)
    peer.received.clear()
    await asyncio.sleep(0.1)
    assert peer.received
    assert all(p.payload == b"\xff" * 160 for p in peer.packets())


async def test_on_hold_nothing_is_sent_and_the_queue_waits(
    make_session: SessionFactory, make_peer: PeerFactory
) -> None:
    peer = await make_peer()
    session, _ = await make_session(remote=(HOST, peer.port))
    await asyncio.sleep(0.05)
    session.hold(True)
    session.play(sine(0.2).tobytes())
    await asyncio.sleep(0.03)
    peer.received.clear()
    await asyncio.sleep(0.15)
    assert peer.received == []
    assert session.playback_pending() == pytest.approx(0.2)
    session.hold(False)
    await wait_until(lambda: len(peer.received) >= 2)
    first = peer.packets()[0]
    assert first.marker and first.payload != b"\xff" * 160


async def test_odd_length_audio_does_not_shift_later_samples(
    make_session: SessionFactory, make_peer: PeerFactory
) -> None:
    peer = await make_peer()
    session, _ = await make_session(remote=(HOST, peer.port))
    session.play(b"\x00")
    session.play(np.full(160, 1000, dtype="<i2").tobytes())
    await wait_until(lambda: session.playback_pending() == 0)
    await asyncio.sleep(0.05)
    speech = [p for p in peer.packets() if p.payload != b"\xff" * 160]
    assert speech[0].payload == PCMU.encode(np.full(160, 1000, dtype="<i2").tobytes())


# -- keypad -----------------------------------------------------------------------------------------------------


async def test_each_key_press_reaches_on_dtmf_once_despite_redundant_packets(
    make_session: SessionFactory, make_peer: PeerFactory
) -> None:
    peer = await make_peer()
    session, heard = await make_session(remote=(HOST, peer.port))
    sequence, timestamp = 1000, 50_000
    for digit in "1234#":
        packets = telephone_event_packets(digit, payload_type=DTMF_PT, sequence=sequence, timestamp=timestamp, ssrc=5)
        for packet in packets:
            for _ in range(2):  # a sender that sends everything twice
                peer.send(packet.encode(), session.local_port)
            await asyncio.sleep(0.002)
        sequence += len(packets)
        timestamp += 2000
    await wait_until(lambda: len(heard.digits) == 5)
    await asyncio.sleep(0.05)
    assert heard.digits == list("1234#")
    assert session.stats.dtmf_digits == 5


async def test_digits_sent_by_one_session_arrive_at_the_other(make_session: SessionFactory) -> None:
    a, _, heard_by_b = await connected_pair(make_session)
    for digit in "1#":
        await a.send_dtmf(digit)
    await wait_until(lambda: len(heard_by_b.digits) == 2)
    assert heard_by_b.digits == ["1", "#"]


async def test_send_dtmf_needs_a_negotiated_payload_type_and_a_keypad_digit(make_session: SessionFactory) -> None:
    without, _ = await make_session(dtmf_pt=None, remote=(HOST, 9))
    with pytest.raises(RuntimeError):
        await without.send_dtmf("1")
    session, _ = await make_session(remote=(HOST, 9))
    with pytest.raises(ValueError):
        await session.send_dtmf("E")


# -- robustness -------------------------------------------------------------------------------------------------


async def test_garbage_rtcp_foreign_and_unknown_payloads_are_ignored(
    make_session: SessionFactory, make_peer: PeerFactory
) -> None:
    peer, stranger = await make_peer(), await make_peer()
    session, heard = await make_session(remote=(HOST, peer.port))
    port = session.local_port
    peer.send(os.urandom(3), port)
    peer.send(b"\x00" * 40, port)
    peer.send(struct.pack("!BBHI", 0x81, 201, 7, 1) + b"\x00" * 24, port)  # RTCP receiver report
    peer.send(RtpPacket(13, 1, 0, 42, b"\x40").encode(), port)  # comfort noise, not negotiated
    stranger.send(audio_packet(1, 9000), port)
    for seq in range(1, 6):
        peer.send(audio_packet(seq, 3000), port)
        await asyncio.sleep(0.02)
    await wait_until(lambda: len(heard.frames) >= 5)
    stats = session.stats
    assert (stats.invalid_in, stats.rtcp_in, stats.other_payload_in, stats.foreign_in) == (2, 1, 1, 1)
    assert stats.packets_in == 6
    values = {struct.unpack_from("<h", pcm)[0] for _, pcm in heard.frames}
    assert 9000 not in values and max(values) > 2900
    assert session.remote == (HOST, peer.port)


async def test_without_a_remote_the_session_latches_onto_the_first_rtp_sender(
    make_session: SessionFactory, make_peer: PeerFactory
) -> None:
    peer, stranger = await make_peer(), await make_peer()
    session, _ = await make_session()
    await asyncio.sleep(0.05)
    assert session.stats.packets_out == 0
    peer.send(b"garbage", session.local_port)
    peer.send(audio_packet(1, 100), session.local_port)
    stranger.send(audio_packet(1, 100), session.local_port)
    await wait_until(lambda: len(peer.received) >= 2)
    assert session.remote == (HOST, peer.port)
    assert stranger.received == []


async def test_latch_to_sender_follows_a_caller_behind_nat(
    make_session: SessionFactory, make_peer: PeerFactory
) -> None:
    peer = await make_peer()
    session, _ = await make_session(remote=("127.0.0.1", 9), latch_to_sender=True)
    peer.send(audio_packet(1, 100), session.local_port)
    await wait_until(lambda: len(peer.received) >= 1)
    assert session.remote == (HOST, peer.port)


async def test_set_remote_needs_an_ip_address(make_session: SessionFactory) -> None:
    session, _ = await make_session()
    with pytest.raises(ValueError):
        session.set_remote("pbx.example.com", 4000)


async def test_failing_callbacks_do_not_stop_the_media(make_session: SessionFactory, make_peer: PeerFactory) -> None:
    peer = await make_peer()
    calls: list[str] = []

    async def broken_audio(pcm: bytes) -> None:
        calls.append("audio")
        raise RuntimeError("call flow bug")

    async def broken_dtmf(digit: str) -> None:
        calls.append(digit)
        raise RuntimeError("call flow bug")

    session, _ = await make_session(remote=(HOST, peer.port), on_audio=broken_audio, on_dtmf=broken_dtmf)
    for seq in range(5):
        peer.send(audio_packet(seq, 500), session.local_port)
        await asyncio.sleep(0.02)
    for index, digit in enumerate("78"):
        for packet in telephone_event_packets(
            digit, payload_type=DTMF_PT, sequence=10 + 7 * index, timestamp=9000 * (index + 1), ssrc=42
        ):
            peer.send(packet.encode(), session.local_port)
    await wait_until(lambda: "8" in calls and calls.count("audio") >= 5)
    assert calls.index("7") < calls.index("8")


async def test_on_audio_calls_are_serialized_even_when_the_call_flow_is_slow(
    make_session: SessionFactory, make_peer: PeerFactory
) -> None:
    peer = await make_peer()
    running = 0
    most = 0
    seen: list[int] = []

    async def slow_audio(pcm: bytes) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        seen.append(struct.unpack_from("<h", pcm)[0])
        await asyncio.sleep(0.05)
        running -= 1

    session, _ = await make_session(remote=(HOST, peer.port), on_audio=slow_audio)
    for seq in range(8):
        peer.send(audio_packet(seq, 100 * (seq + 1)), session.local_port)
        await asyncio.sleep(0.02)
    await wait_until(lambda: len(seen) >= 8)
    assert most == 1
    assert seen[:8] == sorted(seen[:8])


# -- timeouts and lifecycle -------------------------------------------------------------------------------------


async def test_media_timeout_fires_once_when_nothing_arrives(
    make_session: SessionFactory, make_peer: PeerFactory
) -> None:
    peer = await make_peer()
    _, heard = await make_session(remote=(HOST, peer.port), media_timeout_s=0.15)
    on_hold, heard_on_hold = await make_session(remote=(HOST, peer.port), media_timeout_s=0.15)
    on_hold.hold(True)
    await wait_until(lambda: heard.timeouts == 1)
    await asyncio.sleep(0.2)
    assert heard.timeouts == 1
    assert heard_on_hold.timeouts == 0


async def test_media_keeps_the_timeout_away(make_session: SessionFactory) -> None:
    a, _ = await make_session()
    b, heard_by_b = await make_session(remote=(HOST, a.local_port), media_timeout_s=0.1)
    a.set_remote(HOST, b.local_port)
    await asyncio.sleep(0.35)
    assert heard_by_b.timeouts == 0
    assert heard_by_b.frames  # a's silence frames were played out


async def test_close_leaves_no_tasks_and_can_be_repeated(make_session: SessionFactory) -> None:
    before = asyncio.all_tasks()
    a, b, heard_by_b = await connected_pair(make_session)
    a.play(sine(0.2).tobytes())
    await a.send_dtmf("3")
    await wait_until(lambda: heard_by_b.digits == ["3"])
    assert len(asyncio.all_tasks()) > len(before)
    await a.close()
    await b.close()
    await b.close()
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == before
    a.play(b"\x00\x00")  # ignored after close


async def test_a_session_can_be_closed_from_its_own_timeout_callback(make_session: SessionFactory) -> None:
    closed = asyncio.Event()
    holder: list[RtpSession] = []

    async def hang_up() -> None:
        await holder[0].close()
        closed.set()

    session, _ = await make_session(remote=(HOST, 9), media_timeout_s=0.05, on_media_timeout=hang_up)
    holder.append(session)
    before = {t for t in asyncio.all_tasks() if not t.get_name().startswith("rtp-")}
    await asyncio.wait_for(closed.wait(), 2)
    await asyncio.sleep(0.01)
    assert asyncio.all_tasks() == before


async def test_ports_are_even_inside_the_range_and_exhaustion_is_an_os_error(make_session: SessionFactory) -> None:
    first, _ = await make_session(port_range=(41001, 41004))
    second, _ = await make_session(port_range=(41001, 41004))
    assert {first.local_port, second.local_port} == {41002, 41004}
    with pytest.raises(OSError):
        await make_session(port_range=(41001, 41004))


@pytest.mark.slow
async def test_a_hundred_sessions_in_full_duplex_stay_within_one_core() -> None:
    heard = Listener()
    sessions: list[RtpSession] = []
    try:
        for _ in range(50):
            pair = [
                RtpSession(
                    local_host=HOST,
                    codec=PCMU,
                    remote=None,
                    dtmf_pt=DTMF_PT,
                    on_audio=heard.on_audio,
                    on_dtmf=heard.on_dtmf,
                )
                for _ in range(2)
            ]
            for session in pair:
                await session.start()
            pair[0].set_remote(HOST, pair[1].local_port)
            pair[1].set_remote(HOST, pair[0].local_port)
            sessions += pair
        tone = sine(10.0).tobytes()
        for session in sessions:
            session.play(tone)
        await asyncio.sleep(0.5)
        heard.frames.clear()
        cpu_before, wall_before = time.process_time(), time.monotonic()
        await asyncio.sleep(3.0)
        cpu = (time.process_time() - cpu_before) / (time.monotonic() - wall_before)
        assert cpu < 0.8, f"{cpu:.0%} of one core"
        assert len(heard.frames) > 0.95 * 100 * 50 * 3
        assert sum(s.stats.lost for s in sessions) == 0
    finally:
        for session in sessions:
            await session.close()
