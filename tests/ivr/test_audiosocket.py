"""The AudioSocket server, spoken to over loopback by scripted clients that play Asterisk's part."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.ivr.audiosocket import (
    AudioSocketServer,
    EndOfStream,
    FrameType,
    TruncatedFrame,
    encode_frame,
    read_frame,
)
from channels.ivr.media import FRAME_BYTES, CallControl, CallInfo

HANGUP, UUID, DTMF, AUDIO, ERROR = 0x00, 0x01, 0x03, 0x10, 0xFF
READ_TIMEOUT_S = 3.0


def pcm_frame(seed: int) -> bytes:
    """320 bytes of recognisable 'audio'."""
    return bytes((seed + index) % 256 for index in range(FRAME_BYTES))


def socket_count() -> int | None:
    """Open sockets of this process, or None where /proc is missing."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return None
    count = 0
    for name in names:
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                count += 1
        except OSError:
            continue
    return count


class Asterisk:
    """A scripted AudioSocket client: Asterisk's side of one call."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.call_uuid = uuid.uuid4()

    def send(self, frame_type: int, payload: bytes = b"") -> None:
        self.writer.write(struct.pack(">BH", frame_type, len(payload)) + payload)

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    def send_uuid(self) -> None:
        self.send(UUID, self.call_uuid.bytes)

    async def read_frame(self, timeout: float = READ_TIMEOUT_S) -> tuple[int, bytes] | None:
        """The next frame from the server, or None at the end of the stream."""
        async with asyncio.timeout(timeout):
            try:
                header = await self.reader.readexactly(3)
            except (asyncio.IncompleteReadError, ConnectionResetError):
                return None
            frame_type, length = struct.unpack(">BH", header)
            payload = await self.reader.readexactly(length) if length else b""
        return frame_type, payload

    async def read_until_end(self, timeout: float = READ_TIMEOUT_S) -> list[tuple[int, bytes]]:
        """Every frame up to the end of the stream (which must come within `timeout`); then, as Asterisk does,
        close our side too."""
        frames: list[tuple[int, bytes]] = []
        async with asyncio.timeout(timeout):
            while (frame := await self.read_frame(timeout)) is not None:
                frames.append(frame)
        await self.close()
        return frames

    async def hang_up_when_told(self) -> None:
        """What Asterisk does at the end: drop whatever still comes until the server closes, then close."""
        if not self.writer.is_closing():
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(READ_TIMEOUT_S):
                    while await self.reader.read(65536):
                        pass
        await self.close()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@dataclass
class RecordingHandler:
    """Records what the transport tells the call flow; can be told to fail or to play on answer."""

    info: CallInfo
    fail_in: str | None = None
    play_on_answer: bytes = b""
    events: list[tuple[Any, ...]] = field(default_factory=list)
    control: CallControl | None = None
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    hung_up: asyncio.Event = field(default_factory=asyncio.Event)

    def _maybe_fail(self, method: str) -> None:
        if self.fail_in == method:
            raise RuntimeError(f"handler failure in {method}")

    async def on_answer(self, control: CallControl) -> None:
        self.control = control
        self.events.append(("answer",))
        self.answered.set()
        self._maybe_fail("on_answer")
        if self.play_on_answer:
            control.play(self.play_on_answer)

    async def on_audio(self, pcm: bytes) -> None:
        self.events.append(("audio", pcm))
        self._maybe_fail("on_audio")

    async def on_dtmf(self, digit: str) -> None:
        self.events.append(("dtmf", digit))
        self._maybe_fail("on_dtmf")

    async def on_hangup(self, reason: str) -> None:
        self.events.append(("hangup", reason))
        self.hung_up.set()
        self._maybe_fail("on_hangup")

    @property
    def hangups(self) -> list[str]:
        return [event[1] for event in self.events if event[0] == "hangup"]


@dataclass
class Calls:
    """The handler factory: one RecordingHandler per call, kept for the test to inspect."""

    fail_in: str | None = None
    play_on_answer: bytes = b""
    factory_fails: bool = False
    handlers: list[RecordingHandler] = field(default_factory=list)

    def __call__(self, info: CallInfo) -> RecordingHandler:
        if self.factory_fails:
            raise RuntimeError("factory failure")
        handler = RecordingHandler(info, fail_in=self.fail_in, play_on_answer=self.play_on_answer)
        self.handlers.append(handler)
        return handler

    async def answered(self, count: int, timeout: float = READ_TIMEOUT_S) -> list[RecordingHandler]:
        async with asyncio.timeout(timeout):
            while len(self.handlers) < count:
                await asyncio.sleep(0.005)
            for handler in self.handlers[:count]:
                await handler.answered.wait()
        return self.handlers[:count]


@dataclass
class Line:
    """A running server, its handlers, and a way to dial in."""

    server: AudioSocketServer
    port: int
    calls: Calls
    clients: list[Asterisk]

    async def dial(self) -> Asterisk:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        client = Asterisk(reader, writer)
        self.clients.append(client)
        return client

    async def answered_call(self) -> tuple[Asterisk, RecordingHandler]:
        client = await self.dial()
        client.send_uuid()
        count = len(self.calls.handlers) + 1
        handlers = await self.calls.answered(count)
        return client, handlers[-1]


StartLine = Callable[..., Awaitable[Line]]


@pytest.fixture
async def start_line() -> AsyncIterator[StartLine]:
    """Starts servers on demand; afterwards closes everything and checks no task or socket was left behind."""
    tasks_before = asyncio.all_tasks()
    sockets_before = socket_count()
    lines: list[Line] = []

    async def start(calls: Calls | None = None, **options: Any) -> Line:
        calls = calls or Calls()
        server = AudioSocketServer(calls, **options)
        port = await server.start()
        line = Line(server, port, calls, [])
        lines.append(line)
        return line

    yield start

    for line in lines:
        await asyncio.gather(line.server.close(), *(client.hang_up_when_told() for client in line.clients))
        assert line.server.active_calls == 0
    await asyncio.sleep(0)
    leaked = {task for task in asyncio.all_tasks() - tasks_before if task is not asyncio.current_task()}
    assert not leaked, f"leaked tasks: {leaked}"
    if sockets_before is not None:
        assert socket_count() == sockets_before, "a socket was left open"


# --- the wire format ---------------------------------------------------------------------------------------


frames_strategy = st.lists(
    st.tuples(st.integers(0, 255), st.binary(max_size=700)),
    max_size=8,
)


async def parse_all(data: bytes, chunk_sizes: list[int], max_payload: int) -> list[tuple[int, bytes]]:
    reader = asyncio.StreamReader()
    position = 0
    for size in chunk_sizes:
        reader.feed_data(data[position : position + size])
        position += size
    reader.feed_data(data[position:])
    reader.feed_eof()
    parsed = []
    while True:
        try:
            parsed.append(await read_frame(reader, max_payload))
        except EndOfStream:
            return parsed


@settings(max_examples=60, deadline=None)
@given(frames=frames_strategy, chunk_sizes=st.lists(st.integers(1, 400), max_size=10))
def test_frames_read_back_whatever_the_chunking(frames: list[tuple[int, bytes]], chunk_sizes: list[int]) -> None:
    data = b"".join(encode_frame(frame_type, payload) for frame_type, payload in frames)
    assert asyncio.run(parse_all(data, chunk_sizes, max_payload=8192)) == frames


@settings(max_examples=60, deadline=None)
@given(frames=frames_strategy.filter(bool), data=st.data())
def test_a_stream_cut_inside_a_frame_is_truncated(frames: list[tuple[int, bytes]], data: st.DataObject) -> None:
    encoded = b"".join(encode_frame(frame_type, payload) for frame_type, payload in frames)
    boundaries = set()
    position = 0
    for frame_type, payload in frames:
        position += len(encode_frame(frame_type, payload))
        boundaries.add(position)
    cut = data.draw(st.integers(1, len(encoded) - 1).filter(lambda cut: cut not in boundaries))
    with pytest.raises(TruncatedFrame):
        asyncio.run(parse_all(encoded[:cut], [], max_payload=8192))


def test_hangup_frame_is_three_zero_bytes() -> None:
    assert encode_frame(FrameType.HANGUP) == b"\x00\x00\x00"
    assert encode_frame(FrameType.AUDIO, b"\x01\x02") == b"\x10\x00\x02\x01\x02"


# --- a call from start to end ------------------------------------------------------------------------------


async def test_audio_then_digits_then_hangup_reach_the_handler_in_order(start_line: StartLine) -> None:
    line = await start_line()
    client = await line.dial()
    client.send_uuid()
    client.send(AUDIO, pcm_frame(1))
    client.send(AUDIO, pcm_frame(2))
    for digit in "12#":
        client.send(DTMF, digit.encode())
    client.send(HANGUP)

    assert await client.read_until_end() == []
    (handler,) = line.calls.handlers
    await asyncio.wait_for(handler.hung_up.wait(), READ_TIMEOUT_S)
    assert handler.events == [
        ("answer",),
        ("audio", pcm_frame(1)),
        ("audio", pcm_frame(2)),
        ("dtmf", "1"),
        ("dtmf", "2"),
        ("dtmf", "#"),
        ("hangup", "caller"),
    ]
    assert handler.info == CallInfo(
        call_id=str(client.call_uuid),
        caller="",
        callee="",
        transport="audiosocket",
        extras={"uuid": str(client.call_uuid)},
    )
    assert line.server.stats.calls == 1
    assert line.server.stats.audio_frames_in == 2
    assert line.server.stats.protocol_errors == 0


async def test_caller_lookup_maps_the_uuid_to_the_numbers(start_line: StartLine) -> None:
    looked_up: list[str] = []

    async def lookup(call_uuid: str) -> tuple[str, str]:
        looked_up.append(call_uuid)
        return "13800138000", "95588"

    line = await start_line(caller_lookup=lookup)
    client, handler = await line.answered_call()
    assert looked_up == [str(client.call_uuid)]
    assert (handler.info.caller, handler.info.callee) == ("13800138000", "95588")


async def test_a_failing_caller_lookup_leaves_the_number_withheld(start_line: StartLine) -> None:
    async def lookup(call_uuid: str) -> tuple[str, str]:
        raise LookupError("no such call")

    line = await start_line(caller_lookup=lookup)
    _, handler = await line.answered_call()
    assert (handler.info.caller, handler.info.callee) == ("", "")


async def test_played_audio_is_paced_in_320_byte_frames_and_hangup_sends_the_hangup_frame(
    start_line: StartLine,
) -> None:
    line = await start_line()
    client, handler = await line.answered_call()
    control = handler.control
    assert control is not None
    prompt = b"".join(pcm_frame(index) for index in range(100))  # 2 s

    started = time.monotonic()
    control.play(prompt)
    assert 1.9 <= control.playback_pending() <= 2.0
    received: list[bytes] = []
    arrival: list[float] = []
    while len(received) < 100:
        frame = await client.read_frame()
        assert frame is not None
        assert frame[0] == AUDIO
        assert len(frame[1]) == FRAME_BYTES
        received.append(frame[1])
        arrival.append(time.monotonic() - started)
    assert b"".join(received) == prompt
    assert arrival[-1] >= 1.8, "audio was burst instead of paced"
    assert arrival[49] >= 0.9
    assert arrival[-1] < 3.0
    assert control.playback_pending() == 0

    await control.hangup()
    assert await client.read_until_end() == [(HANGUP, b"")]
    assert line.server.stats.audio_frames_out == 100
    await asyncio.sleep(0.05)
    assert handler.hangups == [], "on_hangup is for the far side's endings"


async def test_a_late_frame_counts_an_underrun_and_the_schedule_starts_again(start_line: StartLine) -> None:
    line = await start_line()
    client, handler = await line.answered_call()
    assert handler.control is not None
    handler.control.play(bytes(FRAME_BYTES) * 25)  # 0.5 s
    first = await client.read_frame()
    started = time.monotonic()
    assert first is not None
    for _ in range(4):
        assert await client.read_frame() is not None
    time.sleep(0.06)  # the event loop stalls: the next frame goes out 40 ms or more late
    for _ in range(20):
        assert await client.read_frame() is not None
    # Re-anchored, the last 20 frames keep their 20 ms spacing instead of catching up in a burst.
    assert time.monotonic() - started >= 0.51
    assert line.server.stats.underruns >= 1


async def test_stop_playback_drops_the_queue_and_a_short_prompt_is_padded_with_silence(
    start_line: StartLine,
) -> None:
    line = await start_line()
    client, handler = await line.answered_call()
    control = handler.control
    assert control is not None
    control.play(bytes(FRAME_BYTES) * 50)  # 1 s
    for _ in range(3):
        frame = await client.read_frame()
        assert frame is not None and frame[0] == AUDIO

    control.stop_playback()
    assert control.playback_pending() == 0
    with pytest.raises(TimeoutError):
        await client.read_frame(timeout=0.15)

    control.play(b"\x01\x00" * 100)
    frame = await client.read_frame()
    assert frame == (AUDIO, b"\x01\x00" * 100 + bytes(FRAME_BYTES - 200))


async def test_the_hangup_frame_reaches_a_peer_that_keeps_streaming_audio(start_line: StartLine) -> None:
    """Asterisk sends audio until it has read our hangup frame. Closing a socket with its audio unread would
    reset the connection (and, across a real network, destroy the hangup frame still in our send queue), so
    the server half-closes and drops what still comes until Asterisk closes."""
    line = await start_line()
    client, handler = await line.answered_call()
    assert handler.control is not None
    streaming = True

    async def stream_audio() -> None:
        while streaming:
            client.send(AUDIO, bytes(FRAME_BYTES) * 4)
            await asyncio.sleep(0.002)

    streamer = asyncio.create_task(stream_audio())
    try:
        await asyncio.sleep(0.05)
        await handler.control.hangup()
        assert await client.read_frame() == (HANGUP, b"")
        await asyncio.sleep(0.05)  # Asterisk takes a moment to act on it; its audio keeps coming
    finally:
        streaming = False
        await streamer
    client.writer.write_eof()
    assert await client.reader.read() == b"", "the server must end with a clean close, not a reset"
    await client.close()


async def test_transfer_is_declined(start_line: StartLine) -> None:
    line = await start_line()
    _, handler = await line.answered_call()
    assert handler.control is not None
    assert await handler.control.transfer("sip:agents@bank.example", {"summary": "abc"}) is False


# --- the far side misbehaving ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tail",
    [b"\x10\x01\x40" + bytes(100), b"\x10\x01"],
    ids=["inside-payload", "inside-header"],
)
async def test_a_truncated_frame_ends_the_call_as_a_caller_hangup(start_line: StartLine, tail: bytes) -> None:
    line = await start_line()
    client, handler = await line.answered_call()
    client.send_raw(tail)
    client.writer.write_eof()

    assert await client.read_until_end() == []
    await asyncio.wait_for(handler.hung_up.wait(), READ_TIMEOUT_S)
    assert handler.hangups == ["caller"]
    assert line.server.stats.protocol_errors == 1


async def test_unknown_frame_types_are_ignored_and_the_call_goes_on(start_line: StartLine) -> None:
    line = await start_line()
    client, handler = await line.answered_call()
    client.send(0x02, b"\x01\x35\x00\x00\x00\x00")  # a DTMF variant Asterisk never sent
    client.send(0x11, bytes(640))  # wide-band audio we did not ask for
    client.send(0x42)
    client.send_uuid()  # a second UUID means nothing
    client.send(AUDIO, pcm_frame(7))
    client.send(HANGUP)

    assert await client.read_until_end() == []
    await asyncio.wait_for(handler.hung_up.wait(), READ_TIMEOUT_S)
    assert handler.events == [("answer",), ("audio", pcm_frame(7)), ("hangup", "caller")]
    assert line.server.stats.ignored_frames == 4
    assert line.server.stats.protocol_errors == 0


async def test_invalid_keypad_frames_are_ignored_and_digits_are_never_logged(
    start_line: StartLine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="channels.ivr.audiosocket")
    line = await start_line()
    client, handler = await line.answered_call()
    client.send(DTMF, b"x")
    client.send(DTMF)
    client.send(DTMF, b"12")
    client.send(DTMF, b"7")
    client.send(DTMF, b"D")
    client.send(AUDIO, pcm_frame(3))
    client.send(HANGUP)

    assert await client.read_until_end() == []
    await asyncio.wait_for(handler.hung_up.wait(), READ_TIMEOUT_S)
    assert handler.events == [
        ("answer",),
        ("dtmf", "7"),
        ("dtmf", "D"),
        ("audio", pcm_frame(3)),
        ("hangup", "caller"),
    ]
    assert line.server.stats.ignored_frames == 3
    for record in caplog.records:
        args = record.args if isinstance(record.args, tuple) else ()
        assert not any(arg in ("x", "12", "7", "D", b"x", b"12", b"7", b"D") for arg in args), record.msg
        assert not any(isinstance(arg, bytes | bytearray) for arg in args), record.msg


async def test_an_error_frame_ends_the_call(start_line: StartLine) -> None:
    line = await start_line()
    client, handler = await line.answered_call()
    client.send(ERROR, b"\x02")

    assert await client.read_until_end() == []
    await asyncio.wait_for(handler.hung_up.wait(), READ_TIMEOUT_S)
    assert handler.hangups == ["error"]


async def test_an_abrupt_disconnect_mid_playback_is_a_caller_hangup(start_line: StartLine) -> None:
    line = await start_line(Calls(play_on_answer=bytes(FRAME_BYTES) * 100))
    client, handler = await line.answered_call()
    for _ in range(5):
        frame = await client.read_frame()
        assert frame is not None and frame[0] == AUDIO
    client.writer.transport.abort()

    await asyncio.wait_for(handler.hung_up.wait(), READ_TIMEOUT_S)
    await asyncio.sleep(0.1)
    assert handler.hangups == ["caller"]
    assert line.server.active_calls == 0

    # The server carries on with the next call.
    next_client, next_handler = await line.answered_call()
    next_client.send(HANGUP)
    await asyncio.wait_for(next_handler.hung_up.wait(), READ_TIMEOUT_S)
    assert next_handler.hangups == ["caller"]


@pytest.mark.parametrize(
    "first_frame",
    [
        encode_frame(AUDIO, bytes(FRAME_BYTES)),
        encode_frame(DTMF, b"1"),
        encode_frame(UUID, bytes(15)),
        encode_frame(HANGUP),
        b"",
    ],
    ids=["audio", "dtmf", "short-uuid", "hangup", "nothing-then-eof"],
)
async def test_a_connection_that_does_not_start_with_a_uuid_is_refused(
    start_line: StartLine, first_frame: bytes
) -> None:
    line = await start_line()
    client = await line.dial()
    client.send_raw(first_frame)
    client.writer.write_eof()

    frames = await client.read_until_end()
    assert frames in ([(HANGUP, b"")], [])  # after our EOF the hangup frame may find the socket shut
    assert line.calls.handlers == []
    assert line.server.stats.protocol_errors == 1
    assert line.server.stats.calls == 0


async def test_no_uuid_within_the_first_frame_timeout_closes_the_connection(start_line: StartLine) -> None:
    line = await start_line(first_frame_timeout_s=0.2)
    client = await line.dial()
    started = time.monotonic()
    assert await client.read_until_end() == [(HANGUP, b"")]
    assert 0.15 <= time.monotonic() - started < 2.0
    assert line.calls.handlers == []
    assert line.server.stats.protocol_errors == 1


async def test_an_oversize_length_is_a_protocol_error(start_line: StartLine) -> None:
    line = await start_line(max_payload=1024)
    client, handler = await line.answered_call()
    client.send_raw(struct.pack(">BH", AUDIO, 1025))

    assert await client.read_until_end() == [(HANGUP, b"")]
    await asyncio.wait_for(handler.hung_up.wait(), READ_TIMEOUT_S)
    assert handler.hangups == ["protocol_error"]
    assert line.server.stats.protocol_errors == 1


async def test_odd_length_audio_is_a_protocol_error(start_line: StartLine) -> None:
    line = await start_line()
    client, handler = await line.answered_call()
    client.send(AUDIO, bytes(321))

    assert await client.read_until_end() == [(HANGUP, b"")]
    await asyncio.wait_for(handler.hung_up.wait(), READ_TIMEOUT_S)
    assert handler.events == [("answer",), ("hangup", "protocol_error")]


async def test_a_silent_call_times_out(start_line: StartLine) -> None:
    line = await start_line(idle_timeout_s=0.3)
    client, handler = await line.answered_call()
    client.send(AUDIO, pcm_frame(1))

    assert await client.read_until_end() == [(HANGUP, b"")]
    await asyncio.wait_for(handler.hung_up.wait(), READ_TIMEOUT_S)
    assert handler.events == [("answer",), ("audio", pcm_frame(1)), ("hangup", "timeout")]


# --- the handler misbehaving -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fail_in", "trigger"),
    [
        ("on_answer", b""),
        ("on_audio", encode_frame(AUDIO, bytes(FRAME_BYTES))),
        ("on_dtmf", encode_frame(DTMF, b"5")),
    ],
)
async def test_a_failing_handler_ends_its_call_with_a_hangup_and_the_server_carries_on(
    start_line: StartLine, fail_in: str, trigger: bytes
) -> None:
    calls = Calls(fail_in=fail_in)
    line = await start_line(calls)
    client, handler = await line.answered_call()
    client.send_raw(trigger)

    assert await client.read_until_end() == [(HANGUP, b"")]
    await asyncio.wait_for(handler.hung_up.wait(), READ_TIMEOUT_S)
    assert handler.hangups == ["handler_error"]
    assert line.server.stats.handler_errors == 1

    calls.fail_in = None
    next_client, next_handler = await line.answered_call()
    next_client.send(DTMF, b"9")
    next_client.send(HANGUP)
    await asyncio.wait_for(next_handler.hung_up.wait(), READ_TIMEOUT_S)
    assert next_handler.events == [("answer",), ("dtmf", "9"), ("hangup", "caller")]


async def test_a_failing_on_hangup_is_contained(start_line: StartLine) -> None:
    line = await start_line(Calls(fail_in="on_hangup"))
    client, handler = await line.answered_call()
    client.send(HANGUP)
    assert await client.read_until_end() == []
    await asyncio.wait_for(handler.hung_up.wait(), READ_TIMEOUT_S)
    await asyncio.sleep(0.05)
    assert handler.hangups == ["caller"]
    assert line.server.stats.handler_errors == 1


async def test_a_failing_handler_factory_hangs_up(start_line: StartLine) -> None:
    line = await start_line(Calls(factory_fails=True))
    client = await line.dial()
    client.send_uuid()
    assert await client.read_until_end() == [(HANGUP, b"")]
    assert line.server.stats.handler_errors == 1
    assert line.server.stats.calls == 0


# --- capacity and shutdown ---------------------------------------------------------------------------------


async def test_close_hangs_up_every_call(start_line: StartLine) -> None:
    line = await start_line(Calls(play_on_answer=bytes(FRAME_BYTES) * 200))
    answered = [await line.answered_call() for _ in range(3)]
    waiting_for_uuid = await line.dial()
    assert line.server.active_calls == 3

    started = time.monotonic()
    closing = asyncio.create_task(line.server.close())
    heard = await asyncio.gather(*(client.read_until_end() for client, _ in answered))
    heard_before_uuid = await waiting_for_uuid.read_until_end()
    await closing
    assert time.monotonic() - started < 1.0

    assert line.server.active_calls == 0
    for frames, (_, handler) in zip(heard, answered, strict=True):
        assert frames[-1] == (HANGUP, b"")
        assert all(frame_type == AUDIO for frame_type, _ in frames[:-1])
        assert handler.hangups == ["server_shutdown"]
    assert heard_before_uuid == []
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", line.port)


async def test_calls_beyond_max_calls_are_refused(start_line: StartLine) -> None:
    line = await start_line(max_calls=2)
    first, first_handler = await line.answered_call()
    await line.answered_call()
    third = await line.dial()

    assert await third.read_until_end() == [(HANGUP, b"")]
    assert line.server.stats.rejected_calls == 1
    assert line.server.active_calls == 2

    first.send(HANGUP)
    await asyncio.wait_for(first_handler.hung_up.wait(), READ_TIMEOUT_S)
    await first.read_until_end()
    await line.answered_call()  # a line is free again
    assert line.server.active_calls == 2


async def test_fifty_concurrent_calls(start_line: StartLine) -> None:
    prompt = b"".join(pcm_frame(index) for index in range(10))  # 200 ms each
    line = await start_line(Calls(play_on_answer=prompt))

    async def one_call(number: int) -> None:
        client = await line.dial()
        client.send_uuid()
        for index in range(10):
            client.send(AUDIO, pcm_frame(number + index))
        client.send(DTMF, str(number % 10).encode())
        heard: list[bytes] = []
        for _ in range(10):
            frame = await client.read_frame()
            assert frame is not None and frame[0] == AUDIO
            heard.append(frame[1])
        assert b"".join(heard) == prompt
        client.send(HANGUP)
        assert await client.read_until_end() == []

    await asyncio.gather(*(one_call(number) for number in range(50)))

    assert len(line.calls.handlers) == 50
    for handler in line.calls.handlers:
        await asyncio.wait_for(handler.hung_up.wait(), READ_TIMEOUT_S)
        kinds = [event[0] for event in handler.events]
        assert kinds == ["answer"] + ["audio"] * 10 + ["dtmf", "hangup"]
        assert handler.hangups == ["caller"]
    stats = line.server.stats
    assert (stats.calls, stats.audio_frames_in, stats.audio_frames_out) == (50, 500, 500)
    assert stats.protocol_errors == 0
