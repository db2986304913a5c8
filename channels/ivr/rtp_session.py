"""One call's RTP endpoint on asyncio: paced G.711 frames out, jitter-buffered audio and keypad digits in."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import random
import secrets
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from channels.ivr.g711 import G711Codec
from channels.ivr.media import FRAME_BYTES, FRAME_MS, SAMPLE_RATE
from channels.ivr.rtp import (
    EVENT_DIGITS,
    DtmfReceiver,
    JitterBuffer,
    RtpPacket,
    RtpParseError,
    parse_rtp,
    telephone_event_packets,
)

log = logging.getLogger(__name__)

FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
_FRAME_SECONDS = FRAME_MS / 1000
# A frame that leaves more than this after its deadline counts as an underrun, and the schedule restarts.
_LATE_SEND_S = 0.010
# Caller audio the call flow has not taken yet; beyond this (5 s) the oldest frames are dropped.
_MAX_PENDING_AUDIO_FRAMES = 250
# Random even ports tried before giving up on a port range.
_BIND_ATTEMPTS = 32
_SEQUENCE_MODULO = 1 << 16
_TIMESTAMP_MODULO = 1 << 32

_T = TypeVar("_T")


@dataclass
class RtpStats:
    packets_in: int = 0  # RTP packets accepted from the remote
    packets_out: int = 0
    lost: int = 0  # caller frames that never arrived in time (played as silence)
    late_in: int = 0  # caller frames that arrived after their playout time (dropped)
    duplicates: int = 0
    underruns: int = 0  # frames we sent more than 10 ms after their deadline
    max_send_lag_ms: float = 0.0
    dtmf_digits: int = 0
    reordered: int = 0  # caller frames that arrived out of order and were put back in order
    concealed_frames: int = 0  # silence handed to on_audio for lost frames or a dry jitter buffer
    invalid_in: int = 0  # datagrams that were not RTP
    rtcp_in: int = 0
    foreign_in: int = 0  # datagrams from an address other than the remote
    other_payload_in: int = 0  # RTP with a payload type we did not negotiate (comfort noise, video...)
    audio_dropped: int = 0  # caller frames dropped because on_audio fell more than 5 s behind
    send_errors: int = 0  # ICMP errors reported for what we sent (the remote's port is closed)


class _SerialCalls(Generic[_T]):
    """Awaits a callback on items one at a time and in order, on a task that exists only while items wait.

    The datagram protocol and the clock never wait for the call flow: they queue, and a slow or failing
    callback delays or loses only its own items.
    """

    def __init__(self, callback: Callable[[_T], Awaitable[None]], what: str, limit: int | None = None) -> None:
        self._callback = callback
        self._what = what
        self._items: deque[_T] = deque()
        self._limit = limit
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.dropped = 0

    def put(self, item: _T) -> None:
        if self._closed:
            return
        self._items.append(item)
        if self._limit is not None and len(self._items) > self._limit:
            self._items.popleft()
            self.dropped += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain(), name=f"rtp-{self._what}")

    async def _drain(self) -> None:
        while self._items:
            item = self._items.popleft()
            try:
                await self._callback(item)
            except Exception:
                log.exception("RTP session: the %s callback failed", self._what)

    async def close(self) -> None:
        """Drop what waits and stop the running callback, unless it is the caller itself (it then ends alone)."""
        self._closed = True
        self._items.clear()
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, session: RtpSession) -> None:
        self._session = session
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        try:
            self._session._datagram_received(data, (str(addr[0]), int(addr[1])))
        except Exception:
            # Whatever one datagram does, the socket keeps serving the call.
            log.exception("RTP session: a datagram could not be handled")

    def error_received(self, exc: Exception) -> None:
        self._session._stats.send_errors += 1
        log.debug("RTP session: socket error %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


class RtpSession:
    """The RTP media of one call over one UDP socket.

    Outbound: `play()` queues 8 kHz PCM; one clock task sends a G.711 frame every 20 ms against absolute
    deadlines (silence when nothing is queued, nothing while on hold) and, on the same tick, plays the jitter
    buffer out to `on_audio`. Inbound: datagrams from the remote are parsed on the protocol callback; audio goes
    into the jitter buffer and RFC 4733 events become digits for `on_dtmf`. Callbacks run on short-lived tasks,
    serialized per kind, so the socket and the clock never wait for the call flow.
    """

    def __init__(
        self,
        *,
        local_host: str,
        codec: G711Codec,
        remote: tuple[str, int] | None,
        dtmf_pt: int | None,
        on_audio: Callable[[bytes], Awaitable[None]],
        on_dtmf: Callable[[str], Awaitable[None]],
        media_timeout_s: float = 30.0,
        on_media_timeout: Callable[[], Awaitable[None]] | None = None,
        port_range: tuple[int, int] = (20000, 30000),
        latch_to_sender: bool = False,
        jitter_depth_frames: int = 3,
    ) -> None:
        """`remote` None latches onto the first peer that sends RTP. `latch_to_sender` also re-points a known
        remote at the source of the first RTP packet after start or `set_remote` (a caller behind NAT whose SDP
        shows a private address); without it, packets from any other address are ignored."""
        self._local_host = local_host
        self._codec = codec
        self._silence_frame = codec.silence(FRAME_SAMPLES)
        self._remote = _address(*remote) if remote is not None else None
        self._dtmf_pt = dtmf_pt
        self._media_timeout_s = media_timeout_s
        self._on_media_timeout = on_media_timeout
        self._port_range = port_range
        self._latch_to_sender = latch_to_sender
        self._latch_pending = latch_to_sender

        self._stats = RtpStats()
        self._jitter = JitterBuffer(depth_frames=jitter_depth_frames, frame_samples=FRAME_SAMPLES)
        self._dtmf_receiver = DtmfReceiver()
        self._audio_calls = _SerialCalls(on_audio, "on_audio", limit=_MAX_PENDING_AUDIO_FRAMES)
        self._dtmf_calls = _SerialCalls(on_dtmf, "on_dtmf")

        self._transport: asyncio.DatagramTransport | None = None
        self._protocol: _Protocol | None = None
        self._port: int | None = None
        self._clock_task: asyncio.Task[None] | None = None
        self._timeout_task: asyncio.Task[None] | None = None
        self._closed = False

        # Outbound stream state; RFC 3550 wants unpredictable starting values.
        self._sequence = secrets.randbelow(_SEQUENCE_MODULO)
        self._timestamp = secrets.randbelow(_TIMESTAMP_MODULO)
        self._ssrc = secrets.randbelow(_TIMESTAMP_MODULO)
        self._playback = bytearray()
        self._talking = False  # the last frame sent was queued audio, not silence
        self._on_hold = False
        self._dtmf_waiting: deque[tuple[str, asyncio.Future[None]]] = deque()
        self._dtmf_sending: deque[RtpPacket] = deque()
        self._dtmf_done: asyncio.Future[None] | None = None

        # Inbound playout state.
        self._last_received = 0.0
        self._timed_out = False
        self._audio_started = False
        self._playout_credit = 0  # samples the playout clock owes the call flow
        self._conceal_samples = self._jitter.frame_samples  # size of the last frame received, for a lost one

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> int:
        """Bind an even free port in the port range on `local_host`, start the clock; returns the port."""
        if self._closed or self._transport is not None:
            raise RuntimeError("an RTP session starts once")
        loop = asyncio.get_running_loop()
        sock = _bind_even_port(self._local_host, self._port_range)
        try:
            transport, protocol = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sock)
        except BaseException:
            sock.close()
            raise
        self._transport = transport
        self._protocol = protocol
        self._port = int(sock.getsockname()[1])
        self._last_received = loop.time()
        self._clock_task = loop.create_task(self._clock(), name=f"rtp-clock-{self._port}")
        return self._port

    @property
    def local_port(self) -> int:
        if self._port is None:
            raise RuntimeError("the RTP session has not started")
        return self._port

    @property
    def remote(self) -> tuple[str, int] | None:
        return self._remote

    @property
    def ssrc(self) -> int:
        return self._ssrc

    @property
    def stats(self) -> RtpStats:
        jitter = self._jitter.stats
        self._stats.lost = jitter.lost
        self._stats.late_in = jitter.late
        self._stats.duplicates = jitter.duplicate
        self._stats.reordered = jitter.reordered
        self._stats.audio_dropped = self._audio_calls.dropped
        return self._stats

    async def close(self) -> None:
        """Stop the clock and the callbacks, close the socket; idempotent. Safe to call from a callback."""
        if self._closed:
            return
        self._closed = True
        current = asyncio.current_task()
        tasks = [t for t in (self._clock_task, self._timeout_task) if t is not None and t is not current]
        for task in tasks:
            task.cancel()
        await self._audio_calls.close()
        await self._dtmf_calls.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._finish_dtmf()
        while self._dtmf_waiting:
            _, waiter = self._dtmf_waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
        if self._transport is not None and self._protocol is not None:
            self._transport.close()
            await self._protocol.lost

    # -- call control ----------------------------------------------------------------------------------------

    def set_remote(self, host: str, port: int) -> None:
        """Send to (and accept from) another address, as a re-INVITE says; `host` must be an IP literal."""
        self._remote = _address(host, port)
        self._latch_pending = self._latch_to_sender
        self._last_received = self._now()

    def set_codec(self, codec: G711Codec, dtmf_pt: int | None) -> None:
        if codec.payload_type != self._codec.payload_type:
            self._jitter.reset()
        self._codec = codec
        self._silence_frame = codec.silence(FRAME_SAMPLES)
        self._dtmf_pt = dtmf_pt

    def hold(self, on_hold: bool) -> None:
        """On hold nothing is sent (the playback queue waits) and silence from the remote is not a timeout."""
        if self._on_hold and not on_hold:
            self._last_received = self._now()
            self._talking = False
        self._on_hold = on_hold

    @property
    def on_hold(self) -> bool:
        return self._on_hold

    def play(self, pcm16: bytes) -> None:
        """Queue 8 kHz 16-bit little-endian PCM; the clock sends it in 20 ms frames."""
        if self._closed:
            return
        if len(pcm16) % 2:
            # A stray byte would shift every later sample by half and turn the rest of the call into noise.
            pcm16 = pcm16[:-1]
        self._playback += pcm16

    def stop_playback(self) -> None:
        """Drop whatever is still queued (barge-in)."""
        self._playback.clear()

    def playback_pending(self) -> float:
        """Seconds of queued audio not yet sent."""
        return len(self._playback) / (2 * SAMPLE_RATE)

    async def send_dtmf(self, digit: str) -> None:
        """Send one key press as RFC 4733 events (100 ms, replacing audio meanwhile); returns once sent.

        Waits while the call is on hold; returns early if the session closes.
        """
        if len(digit) != 1 or digit.upper() not in EVENT_DIGITS:
            raise ValueError(f"{digit!r} is not a keypad digit")
        if self._dtmf_pt is None:
            raise RuntimeError("the remote did not offer telephone-event")
        if self._closed or self._transport is None:
            raise RuntimeError("the RTP session is not running")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._dtmf_waiting.append((digit.upper(), waiter))
        await waiter

    # -- the clock -------------------------------------------------------------------------------------------

    async def _clock(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _FRAME_SECONDS
        while True:
            await asyncio.sleep(deadline - loop.time())
            now = loop.time()
            lag = now - deadline
            try:
                self._send_tick(lag)
                self._playout_tick()
                self._check_media_timeout(now)
            except Exception:
                log.exception("RTP session: clock tick failed")
            if lag > _LATE_SEND_S:
                # Re-anchor rather than burst the missed frames out back to back.
                deadline = now + _FRAME_SECONDS
            else:
                deadline += _FRAME_SECONDS

    def _send_tick(self, lag: float) -> None:
        timestamp = self._timestamp
        # The media clock runs on through hold and DTMF, as RFC 3550 timestamps follow sampling time.
        self._timestamp = (timestamp + FRAME_SAMPLES) % _TIMESTAMP_MODULO
        remote = self._remote
        if remote is None or self._on_hold or self._transport is None:
            return
        if not self._dtmf_sending and self._dtmf_waiting and self._dtmf_pt is not None:
            digit, self._dtmf_done = self._dtmf_waiting.popleft()
            self._dtmf_sending.extend(
                telephone_event_packets(
                    digit, payload_type=self._dtmf_pt, sequence=self._sequence, timestamp=timestamp, ssrc=self._ssrc
                )
            )
        if self._dtmf_sending:
            data = self._dtmf_sending.popleft().encode()
            if not self._dtmf_sending:
                self._finish_dtmf()
                self._talking = False
        else:
            marker = False
            if self._playback:
                frame = bytes(self._playback[:FRAME_BYTES])
                del self._playback[:FRAME_BYTES]
                if len(frame) < FRAME_BYTES:
                    frame += bytes(FRAME_BYTES - len(frame))
                payload = self._codec.encode(frame)
                # The first packet of a talkspurt carries the marker (RFC 3551 section 4.1).
                marker = not self._talking
                self._talking = True
            else:
                payload = self._silence_frame
                self._talking = False
            data = RtpPacket(self._codec.payload_type, self._sequence, timestamp, self._ssrc, payload, marker).encode()
        self._sequence = (self._sequence + 1) % _SEQUENCE_MODULO
        self._transport.sendto(data, remote)
        self._stats.packets_out += 1
        lag_ms = max(0.0, lag * 1000)
        self._stats.max_send_lag_ms = max(self._stats.max_send_lag_ms, lag_ms)
        if lag > _LATE_SEND_S:
            self._stats.underruns += 1

    def _finish_dtmf(self) -> None:
        self._dtmf_sending.clear()
        if self._dtmf_done is not None and not self._dtmf_done.done():
            self._dtmf_done.set_result(None)
        self._dtmf_done = None

    def _playout_tick(self) -> None:
        # Credit in samples lets a remote that packs 10 or 30 ms per packet play out at the right rate.
        self._playout_credit += FRAME_SAMPLES
        while self._playout_credit > 0:
            payload = self._jitter.pop()
            if payload is None:
                if self._audio_started:
                    # Keep the call flow's clock running through gaps (silence suppression, a stalled network).
                    self._audio_calls.put(bytes(2 * self._playout_credit))
                    self._stats.concealed_frames += 1
                self._playout_credit = 0
                return
            if payload:
                samples = len(payload)
                self._conceal_samples = samples
                pcm = self._codec.decode(payload)
            else:
                samples = self._conceal_samples
                pcm = bytes(2 * samples)
                self._stats.concealed_frames += 1
            self._audio_started = True
            self._playout_credit -= samples
            self._audio_calls.put(pcm)

    def _check_media_timeout(self, now: float) -> None:
        if (
            self._timed_out
            or self._on_hold
            or self._on_media_timeout is None
            or now - self._last_received <= self._media_timeout_s
        ):
            return
        self._timed_out = True
        log.info("RTP session: no media for %.1f s on port %s", self._media_timeout_s, self._port)
        self._timeout_task = asyncio.get_running_loop().create_task(
            self._call_media_timeout(self._on_media_timeout), name="rtp-media-timeout"
        )

    @staticmethod
    async def _call_media_timeout(callback: Callable[[], Awaitable[None]]) -> None:
        try:
            await callback()
        except Exception:
            log.exception("RTP session: the media timeout callback failed")

    # -- receiving -------------------------------------------------------------------------------------------

    def _datagram_received(self, data: bytes, source: tuple[str, int]) -> None:
        if self._closed:
            return
        remote = self._remote
        if remote is not None and source != remote and not self._latch_pending:
            self._stats.foreign_in += 1
            return
        try:
            packet = parse_rtp(data)
        except RtpParseError as error:
            if error.reason == "rtcp":
                self._stats.rtcp_in += 1
            else:
                self._stats.invalid_in += 1
            return
        payload_type = packet.payload_type
        is_dtmf = self._dtmf_pt is not None and payload_type == self._dtmf_pt
        is_audio = payload_type == self._codec.payload_type
        if remote is None or source != remote:
            # Only media we negotiated may point our stream somewhere (symmetric RTP, RFC 4961).
            if not (is_dtmf or is_audio):
                self._stats.foreign_in += 1
                return
            self._remote = source
        self._latch_pending = False
        self._last_received = self._now()
        self._stats.packets_in += 1
        if is_dtmf:
            digit = self._dtmf_receiver.feed(packet)
            if digit is not None:
                self._stats.dtmf_digits += 1
                self._dtmf_calls.put(digit)
        elif is_audio:
            self._jitter.push(packet)
        else:
            self._stats.other_payload_in += 1

    def _now(self) -> float:
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return self._last_received


def _address(host: str, port: int) -> tuple[str, int]:
    """An address as the socket reports sources, so that comparisons hold; ValueError for a hostname."""
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range")
    return str(ipaddress.ip_address(host)), port


def _bind_even_port(host: str, port_range: tuple[int, int]) -> socket.socket:
    """A non-blocking UDP socket on an even port (RTP's convention, RFC 3550 section 11) picked at random."""
    low, high = port_range
    candidates = range(low + low % 2, high + 1, 2)
    if not candidates:
        raise ValueError(f"no even port in {port_range}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for port in random.sample(candidates, min(len(candidates), _BIND_ATTEMPTS)):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((host, port))
        except OSError as error:
            sock.close()
            if error.errno in (errno.EADDRINUSE, errno.EACCES):
                continue
            raise
        sock.setblocking(False)
        return sock
    raise OSError(errno.EADDRINUSE, f"no free even UDP port in {port_range} on {host}")
