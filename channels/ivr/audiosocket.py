"""Asterisk AudioSocket server: one TCP connection per call, framed audio and keypad digits in, paced audio out.

Wire format (Asterisk's res_audiosocket / app_audiosocket): every frame is a 1-byte type, a 2-byte big-endian
payload length and the payload. Asterisk opens the connection and sends the call's UUID first, then 20 ms frames
of 8 kHz signed 16-bit little-endian PCM, one frame per keypad digit, and a hangup or error frame (or just closes
the socket) at the end. We send audio frames back, paced in real time because Asterisk plays them as they arrive,
and a hangup frame when the bank ends the call.

Asterisk passes nothing but the UUID, so the dialplan that starts AudioSocket records the caller and the number
dialled under that UUID and `caller_lookup` fetches them. Transfers happen in the dialplan after we hang up, so
`AudioSocketCall.transfer()` always declines.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import struct
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from channels.ivr.media import FRAME_BYTES, FRAME_MS, SAMPLE_RATE, CallHandler, CallHandlerFactory, CallInfo

logger = logging.getLogger(__name__)

CallerLookup = Callable[[str], Awaitable[tuple[str, str]]]
# Records a transfer for the dialplan to carry out after the hangup; False when it cannot be taken.
TransferHook = Callable[[CallInfo, str, dict[str, str]], Awaitable[bool]]

_HEADER = struct.Struct(">BH")
_BYTES_PER_SECOND = SAMPLE_RATE * 2
_FRAME_SECONDS = FRAME_MS / 1000
# A frame sent later than this after its slot means Asterisk's playout ran dry: count it and start a new schedule.
_LATE_FRAME_S = 0.010
# How long a hangup frame may wait for a peer that does not read before the connection is cut.
_FLUSH_TIMEOUT_S = 1.0
# After our hangup frame, how long we keep reading (and dropping) what Asterisk still sends until it closes.
_LINGER_S = 1.0
# How long close() lets calls finish their on_hangup before cancelling what is left.
_SHUTDOWN_GRACE_S = 3.0
_DTMF_DIGITS = frozenset("0123456789*#ABCD")
_UUID_BYTES = 16


class FrameType(enum.IntEnum):
    """The AudioSocket frame types we speak; others (0x02, the 0x11-0x18 wide-band audio) are ignored."""

    HANGUP = 0x00
    UUID = 0x01
    DTMF = 0x03
    AUDIO = 0x10
    ERROR = 0xFF


class ProtocolError(Exception):
    """The peer broke the AudioSocket framing; the connection cannot continue."""


class EndOfStream(Exception):
    """The peer closed the connection between two frames."""


class TruncatedFrame(ProtocolError):
    """The peer closed the connection in the middle of a frame."""


def encode_frame(frame_type: int, payload: bytes = b"") -> bytes:
    """One frame on the wire: type, big-endian payload length, payload."""
    if len(payload) > 0xFFFF:
        raise ValueError("an AudioSocket payload holds at most 65535 bytes")
    return _HEADER.pack(frame_type, len(payload)) + payload


async def hang_up_and_linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send the hangup frame, half-close, and drop what the peer still sends until it closes (or _LINGER_S).

    Asterisk streams audio until it has read our hangup frame; closing a socket that still holds unread data
    makes the kernel reset the connection and throw away our unsent bytes, hangup frame included. Asterisk
    would then see a failed socket instead of a hangup and the dialplan would not go on (to a transfer, say).
    """
    await send_hangup_frame(writer)
    await _drop_until_closed(reader)


async def send_hangup_frame(writer: asyncio.StreamWriter) -> bool:
    """Write the hangup frame and half-close our side; False (connection aborted) when that failed."""
    transport = writer.transport
    if transport.is_closing():
        return False
    try:
        writer.write(encode_frame(FrameType.HANGUP))
        async with asyncio.timeout(_FLUSH_TIMEOUT_S):
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, RuntimeError, TimeoutError):
        transport.abort()
        return False
    return True


async def _drop_until_closed(reader: asyncio.StreamReader) -> None:
    try:
        async with asyncio.timeout(_LINGER_S):
            while await reader.read(65536):
                pass
    except (OSError, TimeoutError):
        pass


async def read_frame(reader: asyncio.StreamReader, max_payload: int) -> tuple[int, bytes]:
    """Read one frame; EndOfStream at a clean end, TruncatedFrame mid-frame, ProtocolError when too long."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as error:
        if error.partial:
            raise TruncatedFrame("connection closed inside a frame header") from None
        raise EndOfStream from None
    frame_type, length = _HEADER.unpack(header)
    if length > max_payload:
        raise ProtocolError(f"payload of {length} bytes exceeds the limit of {max_payload}")
    if length == 0:
        return frame_type, b""
    try:
        payload = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise TruncatedFrame("connection closed inside a frame payload") from None
    return frame_type, payload


@dataclass
class AudioSocketStats:
    """Counters over the server's lifetime (never reset)."""

    calls: int = 0  # connections that sent a valid UUID and got a handler
    protocol_errors: int = 0  # no/late/malformed UUID, oversize or odd-length payloads, truncated frames
    audio_frames_in: int = 0
    audio_frames_out: int = 0
    underruns: int = 0  # outgoing frames sent more than 10 ms late
    ignored_frames: int = 0  # unknown types, repeated UUIDs, DTMF frames that are not a keypad digit
    rejected_calls: int = 0  # connections refused because max_calls were up or the server was closing
    handler_errors: int = 0  # exceptions raised by the handler factory or a handler


class AudioSocketCall:
    """The transport's half of one AudioSocket call (a `CallControl`), and the loop that drives its handler."""

    def __init__(
        self,
        info: CallInfo,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        stats: AudioSocketStats,
        *,
        max_payload: int,
        idle_timeout_s: float,
    ) -> None:
        self.info = info
        self.on_transfer: TransferHook | None = None
        self._reader = reader
        self._writer = writer
        self._stats = stats
        self._max_payload = max_payload
        self._idle_timeout_s = idle_timeout_s
        self._handler: CallHandler | None = None
        self._queue = bytearray()
        self._wake_sender = asyncio.Event()
        self._sender_task: asyncio.Task[None] | None = None
        # The idle timeout of the read in progress; _finish() from another task expires it to stop the read.
        self._read_timeout: asyncio.Timeout | None = None
        self._sent_hangup = False
        # How the call ended; the first reason recorded wins.
        self._end_reason: str | None = None
        self._notify_handler = False
        self._handler_notified = False
        self._frames_in = 0
        self._frames_out = 0
        self._digits_in = 0

    # --- CallControl ---------------------------------------------------------------------------------------

    def play(self, pcm: bytes) -> None:
        if self._end_reason is not None:
            return
        if len(pcm) % 2:
            logger.warning("call %s: odd-length PCM passed to play(); last byte dropped", self.info.call_id)
            pcm = pcm[:-1]
        if pcm:
            self._queue += pcm
            self._wake_sender.set()

    def stop_playback(self) -> None:
        self._queue.clear()

    def playback_pending(self) -> float:
        return len(self._queue) / _BYTES_PER_SECOND

    async def transfer(self, target: str, headers: dict[str, str]) -> bool:
        # AudioSocket has no signalling for it: the decision is left where the dialplan reads it after our
        # hangup (`on_transfer`), and the dialplan dials the agents.
        if self.on_transfer is None:
            logger.info("call %s: transfer requested, but nothing takes AudioSocket transfers", self.info.call_id)
            return False
        if not await self.on_transfer(self.info, target, headers):
            return False
        await self.hangup()
        return True

    async def hangup(self) -> None:
        # Ended by the call flow itself, so its on_hangup (far-side endings only) is not called.
        await self._finish("local", notify_handler=False, send_hangup=True)

    # --- the call's life -----------------------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self._end_reason is not None

    async def run(self, handler: CallHandler) -> None:
        """Answer, feed the handler every frame in order until the call ends, then tell it once how it ended."""
        self._handler = handler
        self._sender_task = asyncio.create_task(self._send_loop(), name=f"audiosocket-send-{self.info.call_id}")
        try:
            if await self._invoke(handler.on_answer, self):
                await self._receive_loop()
        finally:
            await self._stop_sender()
        if self._sent_hangup:
            await _drop_until_closed(self._reader)
        if self._notify_handler and not self._handler_notified:
            self._handler_notified = True
            await self._invoke(handler.on_hangup, self._end_reason or "caller", ending=True)
        logger.info(
            "call %s ended (%s): %d audio frames in, %d out, %d keypad digits",
            self.info.call_id,
            self._end_reason,
            self._frames_in,
            self._frames_out,
            self._digits_in,
        )

    async def end_for_shutdown(self) -> None:
        await self._finish("server_shutdown", notify_handler=True, send_hangup=True)

    async def _receive_loop(self) -> None:
        while self._end_reason is None:
            try:
                async with asyncio.timeout(self._idle_timeout_s) as self._read_timeout:
                    try:
                        frame_type, payload = await read_frame(self._reader, self._max_payload)
                    finally:
                        self._read_timeout = None
            except TimeoutError:
                if self._end_reason is None:  # not stopped by _finish(): the line went quiet
                    logger.info("call %s: no frame for %.1f s", self.info.call_id, self._idle_timeout_s)
                    await self._finish("timeout", notify_handler=True, send_hangup=True)
            except TruncatedFrame:
                self._stats.protocol_errors += 1
                logger.warning("call %s: connection closed inside a frame", self.info.call_id)
                await self._finish("caller", notify_handler=True, send_hangup=False)
            except ProtocolError as error:
                self._stats.protocol_errors += 1
                logger.warning("call %s: protocol error: %s", self.info.call_id, error)
                await self._finish("protocol_error", notify_handler=True, send_hangup=True)
            except (EndOfStream, OSError):
                await self._finish("caller", notify_handler=True, send_hangup=False)
            else:
                if self._end_reason is None:
                    await self._dispatch(frame_type, payload)

    async def _dispatch(self, frame_type: int, payload: bytes) -> None:
        handler = self._handler
        assert handler is not None
        if frame_type == FrameType.AUDIO:
            if len(payload) % 2:
                self._stats.protocol_errors += 1
                logger.warning("call %s: odd-length audio payload (%d bytes)", self.info.call_id, len(payload))
                await self._finish("protocol_error", notify_handler=True, send_hangup=True)
                return
            self._stats.audio_frames_in += 1
            self._frames_in += 1
            if payload:
                await self._invoke(handler.on_audio, payload)
        elif frame_type == FrameType.DTMF:
            digit = payload.decode("ascii", errors="replace")
            if len(payload) != 1 or digit not in _DTMF_DIGITS:
                # Never log the payload itself: keypad input can be a PIN.
                self._stats.ignored_frames += 1
                logger.warning("call %s: ignored a DTMF frame that is not one keypad digit", self.info.call_id)
                return
            self._digits_in += 1
            await self._invoke(handler.on_dtmf, digit)
        elif frame_type == FrameType.HANGUP:
            await self._finish("caller", notify_handler=True, send_hangup=False)
        elif frame_type == FrameType.ERROR:
            code = f"0x{payload[0]:02x}" if payload else "none"
            logger.warning("call %s: Asterisk reported an error (code %s)", self.info.call_id, code)
            await self._finish("error", notify_handler=True, send_hangup=False)
        else:
            self._stats.ignored_frames += 1
            logger.debug("call %s: ignored frame type 0x%02x", self.info.call_id, frame_type)

    async def _invoke(self, method: Callable[..., Awaitable[None]], *args: Any, ending: bool = False) -> bool:
        """Await one handler method; an exception is logged and ends the call. False when it raised."""
        try:
            await method(*args)
        except Exception:
            self._stats.handler_errors += 1
            logger.exception("call %s: the call handler's %s failed", self.info.call_id, method.__name__)
            if not ending:
                await self._finish("handler_error", notify_handler=True, send_hangup=True)
            return False
        return True

    async def _finish(self, reason: str, *, notify_handler: bool, send_hangup: bool) -> None:
        """Record how the call ended (the first reason wins); when we end it, send the hangup frame."""
        if self._end_reason is not None:
            return
        self._end_reason = reason
        self._notify_handler = notify_handler
        self._queue.clear()
        self._wake_sender.set()  # the sender sees the end and returns
        if self._read_timeout is not None:
            # Called from another task while the receive loop waits for a frame: stop that wait now.
            self._read_timeout.reschedule(asyncio.get_running_loop().time())
        if send_hangup:
            self._sent_hangup = await send_hangup_frame(self._writer)

    async def _send_loop(self) -> None:
        """Send queued audio as 20 ms frames on an absolute schedule; nothing at all while the queue is empty."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while self._end_reason is None:
            if not self._queue:
                self._wake_sender.clear()
                await self._wake_sender.wait()
                now = loop.time()
                # After a pause the schedule restarts now, but never earlier than the slot of the next frame.
                if deadline is None or deadline < now:
                    deadline = now
                continue
            now = loop.time()
            if deadline is None:
                deadline = now
            elif now < deadline:
                await asyncio.sleep(deadline - now)
                continue  # the queue may have been cleared or the call ended meanwhile
            elif now - deadline > _LATE_FRAME_S:
                self._stats.underruns += 1
                deadline = now
            frame = bytes(self._queue[:FRAME_BYTES])
            del self._queue[:FRAME_BYTES]
            if len(frame) < FRAME_BYTES:
                frame += bytes(FRAME_BYTES - len(frame))  # pad the tail of a prompt with silence
            if self._end_reason is not None or self._writer.transport.is_closing():
                return
            try:
                self._writer.write(encode_frame(FrameType.AUDIO, frame))
                self._stats.audio_frames_out += 1
                self._frames_out += 1
                deadline += _FRAME_SECONDS
                await self._writer.drain()
            except OSError:
                # The peer is gone; the receive loop learns it from the reader and ends the call.
                self._writer.transport.abort()
                return

    async def _stop_sender(self) -> None:
        task = self._sender_task
        if task is None:
            return
        self._sender_task = None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class AudioSocketServer:
    """Accepts Asterisk's AudioSocket connections and runs one `CallHandler` per call."""

    def __init__(
        self,
        handler_factory: CallHandlerFactory,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_payload: int = 8192,
        first_frame_timeout_s: float = 5.0,
        idle_timeout_s: float = 30.0,
        max_calls: int = 200,
        caller_lookup: CallerLookup | None = None,
        caller_lookup_timeout_s: float = 2.0,
        on_transfer: TransferHook | None = None,
    ) -> None:
        self._handler_factory = handler_factory
        self._on_transfer = on_transfer
        self._host = host
        self._port = port
        self._max_payload = max_payload
        self._first_frame_timeout_s = first_frame_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._max_calls = max_calls
        self._caller_lookup = caller_lookup
        self._caller_lookup_timeout_s = caller_lookup_timeout_s
        self._server: asyncio.Server | None = None
        self._closing = False
        # Every connection's task, and the call it carries once the UUID has been read.
        self._connections: dict[asyncio.Task[Any], AudioSocketCall | None] = {}
        self.stats = AudioSocketStats()

    @property
    def active_calls(self) -> int:
        return sum(1 for call in self._connections.values() if call is not None and not call.ended)

    async def start(self) -> int:
        """Listen; returns the bound port (useful with port=0)."""
        if self._server is not None:
            raise RuntimeError("AudioSocketServer already started")
        self._closing = False
        self._server = await asyncio.start_server(self._on_connection, self._host, self._port)
        port: int = self._server.sockets[0].getsockname()[1]
        logger.info("AudioSocket server listening on %s:%d", self._host, port)
        return port

    async def close(self) -> None:
        """Stop listening, hang up every call (the handlers hear "server_shutdown") and wait for them to end."""
        self._closing = True
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        # A connection accepted just before the listener closed may start its task a few loop turns later.
        for _ in range(3):
            await asyncio.sleep(0)
        # Calls are hung up, connections still setting up are cancelled; repeated in case one registered late.
        for _ in range(3):
            if not self._connections:
                break
            tasks = list(self._connections)
            endings = []
            for task, call in self._connections.items():
                if call is None:
                    task.cancel()  # no handler yet: nobody to tell
                else:
                    endings.append(call.end_for_shutdown())
            await asyncio.gather(*endings, return_exceptions=True)
            _, still_running = await asyncio.wait(tasks, timeout=_SHUTDOWN_GRACE_S)
            for task in still_running:
                logger.warning("AudioSocket connection did not end within %.1f s; cancelled", _SHUTDOWN_GRACE_S)
                task.cancel()
            if still_running:
                await asyncio.wait(still_running, timeout=_SHUTDOWN_GRACE_S)
            await asyncio.sleep(0)
        if self._connections:
            logger.error("AudioSocket server closed with %d connections that would not end", len(self._connections))
        logger.info("AudioSocket server closed")

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = None
        try:
            if self._closing or len(self._connections) > self._max_calls:
                self.stats.rejected_calls += 1
                logger.warning("AudioSocket connection refused: %d calls up or closing", len(self._connections) - 1)
                await hang_up_and_linger(reader, writer)
                return
            call_uuid = await self._read_uuid(reader)
            if call_uuid is None:
                self.stats.protocol_errors += 1
                await hang_up_and_linger(reader, writer)
                return
            caller, callee = await self._look_up_caller(call_uuid)
            info = CallInfo(
                call_id=call_uuid,
                caller=caller,
                callee=callee,
                transport="audiosocket",
                extras={"uuid": call_uuid},
            )
            try:
                handler = self._handler_factory(info)
            except Exception:
                self.stats.handler_errors += 1
                logger.exception("call %s: the call handler factory failed", call_uuid)
                await hang_up_and_linger(reader, writer)
                return
            call = AudioSocketCall(
                info,
                reader,
                writer,
                self.stats,
                max_payload=self._max_payload,
                idle_timeout_s=self._idle_timeout_s,
            )
            call.on_transfer = self._on_transfer
            self._connections[task] = call
            self.stats.calls += 1
            logger.info("call %s answered over AudioSocket", call_uuid)
            await call.run(handler)
        except Exception:
            # Last resort: whatever went wrong stays in this connection.
            logger.exception("AudioSocket connection failed")
        finally:
            await self._close_writer(writer)
            del self._connections[task]

    async def _read_uuid(self, reader: asyncio.StreamReader) -> str | None:
        """The call's UUID from the first frame, or None (logged) when the peer did not send one in time."""
        try:
            async with asyncio.timeout(self._first_frame_timeout_s):
                frame_type, payload = await read_frame(reader, self._max_payload)
        except TimeoutError:
            logger.warning("AudioSocket connection sent no UUID within %.1f s", self._first_frame_timeout_s)
            return None
        except (ProtocolError, EndOfStream, OSError) as error:
            logger.warning("AudioSocket connection ended before its UUID: %s", type(error).__name__)
            return None
        if frame_type != FrameType.UUID or len(payload) != _UUID_BYTES:
            logger.warning(
                "AudioSocket connection's first frame is type 0x%02x with %d bytes, not a UUID",
                frame_type,
                len(payload),
            )
            return None
        return str(uuid.UUID(bytes=payload))

    async def _look_up_caller(self, call_uuid: str) -> tuple[str, str]:
        if self._caller_lookup is None:
            return "", ""
        try:
            async with asyncio.timeout(self._caller_lookup_timeout_s):
                return await self._caller_lookup(call_uuid)
        except Exception:
            # The call still goes ahead, as a withheld number.
            logger.exception("call %s: caller lookup failed", call_uuid)
            return "", ""

    @staticmethod
    async def _close_writer(writer: asyncio.StreamWriter) -> None:
        writer.close()
        try:
            async with asyncio.timeout(_FLUSH_TIMEOUT_S):
                await writer.wait_closed()
        except (OSError, TimeoutError):
            writer.transport.abort()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(_FLUSH_TIMEOUT_S):
                    await writer.wait_closed()
