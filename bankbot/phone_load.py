"""Callers for the phone-line bench: a SIP trunk and RTP endpoints that dial the gateway, talk, listen and time it.

The callers share the bench process (and its two cores) with nothing but themselves, yet they share the machine
with the gateway they measure, so they are built to cost little: one UDP socket carries every caller's
signalling (as a trunk or a PBX would), and one clock task sends the next 20 ms frame of every caller at once,
from G.711 encoded in advance. A clock per caller (an `RtpSession` each, as the gateway runs) would double the
media work on the machine and bend the figure being measured.

Arrival times of the gateway's packets are the kernel's receive timestamps (SO_TIMESTAMPNS), not the time this
event loop got round to reading them: a gap between two packets is the gateway's, whatever the callers' own
loop was doing.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from channels.ivr import g711
from channels.ivr.media import FRAME_BYTES
from channels.ivr.rtp import RtpParseError, parse_rtp
from channels.ivr.sdp import SdpError, SdpNegotiationError, build_offer, parse_answer
from channels.ivr.sip_message import (
    SipMessage,
    SipParseError,
    Via,
    build_request,
    build_response,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
    parse_name_addr,
)
from voice.audio import rms

FRAME_SAMPLES = FRAME_BYTES // 2  # 160 samples: one 20 ms G.711 frame
FRAME_S = 0.020
# A packet of the gateway's arriving this long after the previous one was sent at least a frame late.
LATE_GAP_S = 0.040
# Decoded PCM above this RMS (16-bit sample units) is speech; the recogniser's own speech level is 300.
SPEECH_RMS = 300.0
# A reply is told from what the gateway was already saying by this much quiet before its first loud packet.
QUIET_BEFORE_REPLY_S = 0.2
T1 = 0.5
T2 = 4.0
_CODEC = g711.PCMU
_SILENCE = _CODEC.silence(FRAME_SAMPLES)
_RTP_HEADER = struct.Struct("!BBHII")
# Linux's SO_TIMESTAMPNS (and SCM_TIMESTAMPNS): each datagram comes with the kernel's receive time.
_SO_TIMESTAMPNS = int(getattr(socket, "SO_TIMESTAMPNS", 35))
_TIMESPEC = struct.Struct("@qq")
_ANCILLARY_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)


def encode_frames(pcm: bytes) -> list[bytes]:
    """8 kHz 16-bit PCM as PCMU payloads of 20 ms, the last one padded with silence."""
    frames = []
    for start in range(0, len(pcm), FRAME_BYTES):
        frame = pcm[start : start + FRAME_BYTES]
        frame += bytes(FRAME_BYTES - len(frame))
        frames.append(_CODEC.encode(frame))
    return frames


def last_speech_frame(pcm: bytes) -> int:
    """Index of the last 20 ms frame of `pcm` loud enough to be speech (-1 when none is)."""
    last = -1
    for index, start in enumerate(range(0, len(pcm), FRAME_BYTES)):
        if rms(pcm[start : start + FRAME_BYTES]) >= SPEECH_RMS:
            last = index
    return last


# -- media -------------------------------------------------------------------------------------------------------


@dataclass
class MediaStats:
    """What one caller sent and heard. Gaps are between consecutive packets of the gateway, by kernel time."""

    packets_sent: int = 0
    send_errors: int = 0
    packets_received: int = 0
    # Packets whose payload is not the codec's silence: the gateway was playing a prompt or a reply.
    speech_packets_received: int = 0
    lost: int = 0  # sequence numbers skipped
    late: int = 0  # gaps over LATE_GAP_S
    late_while_playing: int = 0  # of those, gaps next to a packet with speech in it
    max_gap_ms: float = 0.0

    def add(self, other: MediaStats) -> None:
        for name, value in vars(other).items():
            if name == "max_gap_ms":
                self.max_gap_ms = max(self.max_gap_ms, value)
            else:
                setattr(self, name, getattr(self, name) + value)


class CallerMedia:
    """One caller's RTP socket: frames out when the shared clock says so, the gateway's packets timed on arrival.

    Outbound audio is, in order: frames queued by `say`, else the looped recording given to `loop`, else silence.
    """

    def __init__(self, *, measure_level: bool = False, host: str = "127.0.0.1") -> None:
        self.stats = MediaStats()
        self.measure_level = measure_level  # decode what arrives (for replies' timing); costs CPU, so opt-in
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, 0))
        self._sock.setblocking(False)
        self.kernel_timestamps = True
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        except OSError:
            self.kernel_timestamps = False
        self.port: int = self._sock.getsockname()[1]
        self.remote: tuple[str, int] | None = None
        self._reading = False
        # Outbound stream
        self._sequence = 0
        self._timestamp = 0
        self._ssrc = secrets.randbits(32)
        self._script: deque[tuple[bytes, asyncio.Future[float] | None]] = deque()
        self._loop_audio: bytes = b""
        self._loop_position = 0
        self._sentence_ends: frozenset[int] = frozenset()  # byte offsets in the loop of sentences' last speech
        self.sentence_ended_at: list[float] = []  # wall times those frames were sent
        self._talking = False
        # Inbound
        self._last_arrival: float | None = None
        self._last_sequence: int | None = None
        self._last_was_speech = False
        self.last_loud_at = 0.0  # kernel time of the last packet above SPEECH_RMS (with measure_level)
        self._loud_waiters: list[tuple[float, asyncio.Future[Onset]]] = []

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self, remote: tuple[str, int]) -> None:
        self.remote = remote
        if not self._reading:
            asyncio.get_running_loop().add_reader(self._sock.fileno(), self._readable)
            self._reading = True

    def close(self) -> None:
        if self._reading:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._reading = False
        for _, waiter in self._loud_waiters:
            if not waiter.done():
                waiter.cancel()
        self._loud_waiters.clear()
        for _, marker in self._script:
            if marker is not None and not marker.done():
                marker.cancel()
        self._script.clear()
        self._sock.close()

    # -- what the caller says -------------------------------------------------------------------------------

    def loop(self, frames: bytes, start_frame: int = 0, sentence_ends: Collection[int] = ()) -> None:
        """Send this PCMU (a whole number of frames) round and round, starting at frame `start_frame`; when a
        frame in `sentence_ends` (the last with speech of a sentence) is sent, the time goes in `sentence_ended_at`."""
        if len(frames) % FRAME_SAMPLES:
            raise ValueError("the looped audio must be whole 20 ms frames")
        self._loop_audio = frames
        self._loop_position = (start_frame * FRAME_SAMPLES) % max(1, len(frames))
        self._sentence_ends = frozenset(index * FRAME_SAMPLES for index in sentence_ends)

    def say(self, frames: Sequence[bytes], mark: int) -> asyncio.Future[float]:
        """Queue PCMU frames; the future gets the wall time (time.time()) at which frame `mark` was sent."""
        marker: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        for index, frame in enumerate(frames):
            self._script.append((frame, marker if index == mark else None))
        return marker

    def send_frame(self) -> None:
        """Send the next 20 ms (called by the clock)."""
        if self.remote is None:
            return
        marker: asyncio.Future[float] | None = None
        if self._script:
            payload, marker = self._script.popleft()
        elif self._loop_audio:
            start = self._loop_position
            payload = self._loop_audio[start : start + FRAME_SAMPLES]
            self._loop_position = (start + FRAME_SAMPLES) % len(self._loop_audio)
            if start in self._sentence_ends:
                self.sentence_ended_at.append(time.time())
        else:
            payload = _SILENCE
        speech = payload != _SILENCE
        first = 0x80 if speech and not self._talking else 0  # the marker bit opens a talkspurt
        self._talking = speech
        packet = _RTP_HEADER.pack(0x80, first | _CODEC.payload_type, self._sequence, self._timestamp, self._ssrc)
        self._sequence = (self._sequence + 1) & 0xFFFF
        self._timestamp = (self._timestamp + FRAME_SAMPLES) & 0xFFFFFFFF
        try:
            self._sock.sendto(packet + payload, self.remote)
            self.stats.packets_sent += 1
        except OSError:
            self.stats.send_errors += 1
        if marker is not None and not marker.done():
            marker.set_result(time.time())

    # -- what the caller hears ------------------------------------------------------------------------------

    def first_loud_after(self, after: float) -> asyncio.Future[Onset]:
        """A future for the first packet above SPEECH_RMS that arrives after `after` (kernel times)."""
        if not self.measure_level:
            raise RuntimeError("level measurement is off for this caller")
        waiter: asyncio.Future[Onset] = asyncio.get_running_loop().create_future()
        self._loud_waiters.append((after, waiter))
        return waiter

    def _readable(self) -> None:
        while True:
            try:
                data, ancillary, _flags, _address = self._sock.recvmsg(2048, _ANCILLARY_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self._on_packet(data, _kernel_time(ancillary))

    def _on_packet(self, data: bytes, arrived: float) -> None:
        try:
            packet = parse_rtp(data)
        except RtpParseError:
            return
        stats = self.stats
        stats.packets_received += 1
        speech = packet.payload != _SILENCE[: len(packet.payload)]
        if speech:
            stats.speech_packets_received += 1
        if self._last_sequence is not None:
            skipped = (packet.sequence - self._last_sequence - 1) & 0xFFFF
            if skipped < 1000:  # a jump beyond that is a new stream (or reordering), not loss
                stats.lost += skipped
        self._last_sequence = packet.sequence
        if self._last_arrival is not None:
            gap = arrived - self._last_arrival
            stats.max_gap_ms = max(stats.max_gap_ms, gap * 1000)
            if gap > LATE_GAP_S:
                stats.late += 1
                if speech or self._last_was_speech:
                    stats.late_while_playing += 1
        self._last_arrival = arrived
        self._last_was_speech = speech
        if self.measure_level and speech and rms(_CODEC.decode(packet.payload)) >= SPEECH_RMS:
            previous, self.last_loud_at = self.last_loud_at, arrived
            if self._loud_waiters:
                pending = []
                for after, waiter in self._loud_waiters:
                    if waiter.done():
                        continue
                    if arrived > after:
                        waiter.set_result(Onset(arrived, arrived - previous))
                    else:
                        pending.append((after, waiter))
                self._loud_waiters = pending


@dataclass(frozen=True)
class Onset:
    """A loud packet's kernel arrival time, and how long nothing loud had arrived before it."""

    at: float
    quiet_before_s: float


def _kernel_time(ancillary: list[tuple[int, int, bytes]]) -> float:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            return float(seconds + nanoseconds / 1e9)
    return time.time()


@dataclass
class ClockStats:
    ticks: int = 0
    late_ticks: int = 0  # ticks that started more than 10 ms after their deadline
    max_lag_ms: float = 0.0

    def reset(self) -> None:
        self.ticks, self.late_ticks, self.max_lag_ms = 0, 0, 0.0


class MediaClock:
    """Sends every caller's next frame each 20 ms, against absolute deadlines; frames it missed are caught up
    (a phone keeps its own time whatever our loop does), a few at most, then the schedule is re-anchored."""

    def __init__(self) -> None:
        self.media: set[CallerMedia] = set()
        self.stats = ClockStats()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="phone-bench-clock")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FRAME_S
        while True:
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            now = loop.time()
            lag = now - deadline
            self.stats.ticks += 1
            self.stats.max_lag_ms = max(self.stats.max_lag_ms, lag * 1000)
            if lag > 0.010:
                self.stats.late_ticks += 1
            owed = min(5, 1 + int(lag / FRAME_S))
            for _ in range(owed):
                for media in list(self.media):
                    media.send_frame()
            deadline = deadline + owed * FRAME_S if owed < 5 else now + FRAME_S


# -- signalling --------------------------------------------------------------------------------------------------


class SipTrunk(asyncio.DatagramProtocol):
    """One UDP socket carrying every caller's SIP, as a PBX's trunk does; answers what the gateway asks of it."""

    def __init__(self, gateway: tuple[str, int], *, host: str = "127.0.0.1") -> None:
        self.gateway = gateway
        self.host = host
        self.port = 0
        self.transport: asyncio.DatagramTransport | None = None
        self._responses: dict[tuple[str, int, str], asyncio.Queue[SipMessage]] = {}
        # Call-ID -> what to do when the gateway hangs up (BYE) or sends anything else in the dialog.
        self.dialogs: dict[str, Caller] = {}
        self.malformed = 0
        self.unexpected: dict[str, int] = {}

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(self.host, 0))
        self.transport = transport
        self.port = transport.get_extra_info("sockname")[1]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def send(self, message: SipMessage, address: tuple[str, int] | None = None) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(message.encode(), address or self.gateway)

    def via(self) -> Via:
        return Via("UDP", self.host, self.port, {"branch": new_branch(), "rport": None})

    def datagram_received(self, data: bytes, address: tuple[str, int]) -> None:
        if not data.strip():
            return
        try:
            message = parse_message(data)
            key = (message.call_id, message.cseq[0], message.cseq[1])
        except SipParseError:
            self.malformed += 1
            return
        if not message.is_request:
            queue = self._responses.get(key)
            if queue is not None:
                queue.put_nowait(message)
            elif key[2] == "INVITE" and (message.status or 0) // 100 == 2 and message.call_id in self.dialogs:
                self.dialogs[message.call_id].ack()  # our ACK was lost: the 200 came again
            return
        caller = self.dialogs.get(message.call_id)
        method = message.method or ""
        if method == "ACK":
            return
        if caller is None:
            self.send(build_response(message, 481), address)
            return
        if method == "BYE":
            self.send(build_response(message, 200), address)
            caller.hung_up_by_gateway()
        elif method in ("OPTIONS", "INFO", "NOTIFY"):
            self.send(build_response(message, 200), address)
        else:
            # A REFER (transfer) or a re-INVITE: the bench's callers do neither, and say so.
            self.unexpected[method] = self.unexpected.get(method, 0) + 1
            self.send(build_response(message, 405, headers=[("Allow", "INVITE, ACK, BYE, OPTIONS")]), address)

    async def transact(self, request: SipMessage, *, timeout_s: float = 32.0) -> SipMessage:
        """Send a request and return its final response, retransmitting (RFC 3261 17.1) until a response comes."""
        key = (request.call_id, request.cseq[0], request.method or "")
        queue: asyncio.Queue[SipMessage] = asyncio.Queue()
        self._responses[key] = queue
        deadline = time.monotonic() + timeout_s
        interval = T1
        provisional = False
        try:
            self.send(request)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no final response to {request.method}")
                try:
                    response = await asyncio.wait_for(queue.get(), timeout=min(interval, remaining))
                except TimeoutError:
                    if not provisional:
                        self.send(request)
                        interval = min(interval * 2, T2)
                    continue
                if (response.status or 0) >= 200:
                    return response
                provisional = True
                interval = T2
        finally:
            self._responses.pop(key, None)


@dataclass
class CallResult:
    """One call as the caller saw it."""

    setup_ms: float | None = None  # INVITE sent to its 200 received
    failure: str | None = None  # why the call did not go as planned; None when it did
    hung_up_by_gateway: bool = False
    media: MediaStats = field(default_factory=MediaStats)


class Caller:
    """One call to the gateway: dial, talk (through `media`), hang up."""

    def __init__(
        self, trunk: SipTrunk, clock: MediaClock, number: str, *, callee: str = "95588", measure_level: bool = False
    ) -> None:
        self.trunk = trunk
        self.clock = clock
        self.number = number
        self.media = CallerMedia(measure_level=measure_level, host=trunk.host)
        self.result = CallResult(media=self.media.stats)
        self.call_id = new_call_id(trunk.host)
        self.local_tag = new_tag()
        self.cseq = 1
        host, port = trunk.gateway
        self.remote_uri = f"sip:{callee}@{host}:{port}"
        self.remote_target = self.remote_uri
        self.remote_tag: str | None = None
        self.ended = asyncio.Event()  # the gateway hung up
        self.on_gateway_hangup: Callable[[], None] | None = None

    @property
    def _from(self) -> str:
        return f"<sip:{self.number}@{self.trunk.host}>;tag={self.local_tag}"

    @property
    def _to(self) -> str:
        return f"<{self.remote_uri}>" + (f";tag={self.remote_tag}" if self.remote_tag else "")

    def _contact(self) -> str:
        return f"<sip:{self.number}@{self.trunk.host}:{self.trunk.port}>"

    async def dial(self, timeout_s: float = 32.0) -> bool:
        """INVITE with a PCMU offer, wait for the 200, ACK it, start the media; False (and a failure) if not."""
        offer = build_offer(self.trunk.host, self.media.port, session_id=str(self.media.port), session_version=1,
                            codecs=("PCMU",))  # fmt: skip
        invite = build_request(
            "INVITE",
            self.remote_uri,
            via=self.trunk.via(),
            from_=self._from,
            to=self._to,
            call_id=self.call_id,
            cseq=self.cseq,
            contact=self._contact(),
            body=offer,
            content_type="application/sdp",
        )
        self.trunk.dialogs[self.call_id] = self
        started = time.monotonic()
        try:
            response = await self.trunk.transact(invite, timeout_s=timeout_s)
        except TimeoutError:
            self.result.failure = "no answer to INVITE"
            self.trunk.dialogs.pop(self.call_id, None)
            return False
        if (response.status or 0) // 100 != 2:
            self.result.failure = f"INVITE answered {response.status}"
            self.trunk.dialogs.pop(self.call_id, None)
            return False
        self.result.setup_ms = (time.monotonic() - started) * 1000
        self.remote_tag = parse_name_addr(response.header("To") or "").tag
        contact = response.header("Contact")
        if contact:
            self.remote_target = str(parse_name_addr(contact).uri)
        self.ack()
        try:
            answer = parse_answer(response.body, ("PCMU",))
        except (SdpError, SdpNegotiationError) as error:
            self.result.failure = f"unusable SDP answer: {error}"
            await self.hang_up()
            return False
        self.media.start((answer.remote_address, answer.remote_port))
        self.clock.media.add(self.media)
        return True

    def ack(self) -> None:
        ack = build_request(
            "ACK", self.remote_target, via=self.trunk.via(), from_=self._from, to=self._to,
            call_id=self.call_id, cseq=1,
        )  # fmt: skip
        self.trunk.send(ack)

    def hung_up_by_gateway(self) -> None:
        self.result.hung_up_by_gateway = True
        self.clock.media.discard(self.media)
        self.ended.set()
        if self.on_gateway_hangup is not None:
            self.on_gateway_hangup()

    async def hang_up(self) -> None:
        """BYE (unless the gateway hung up first), wait for its 200, close the media."""
        self.clock.media.discard(self.media)
        try:
            if not self.ended.is_set():
                self.cseq += 1
                bye = build_request(
                    "BYE", self.remote_target, via=self.trunk.via(), from_=self._from, to=self._to,
                    call_id=self.call_id, cseq=self.cseq,
                )  # fmt: skip
                try:
                    response = await self.trunk.transact(bye)
                    if (response.status or 0) // 100 != 2 and self.result.failure is None:
                        self.result.failure = f"BYE answered {response.status}"
                except TimeoutError:
                    if self.result.failure is None:
                        self.result.failure = "no answer to BYE"
            elif self.result.failure is None:
                self.result.failure = "the gateway hung up"
        finally:
            self.trunk.dialogs.pop(self.call_id, None)
            self.media.close()
