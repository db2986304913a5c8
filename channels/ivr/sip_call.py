"""One SIP call (a dialog and its RTP session) as the call flow drives it: audio, keypad, transfer, hangup."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from channels.ivr.media import CallHandler, CallInfo
from channels.ivr.rtp_session import RtpSession
from channels.ivr.sip_message import NameAddr, SipMessage, SipUri, parse_name_addr

if TYPE_CHECKING:
    from channels.ivr.sip_agent import SipAgent

logger = logging.getLogger(__name__)

# A key press signalled both ways (RFC 4733 in the media and SIP INFO) arrives twice within this window.
_DTMF_TWIN_WINDOW_S = 0.4
DTMF_DIGITS = frozenset("0123456789*#ABCD")


@dataclass
class Dialog:
    """RFC 3261 dialog state, as seen from our side."""

    call_id: str
    local_tag: str
    local_uri: str  # our address in From/To (the To of an inbound INVITE)
    remote_uri: str  # theirs (the From of an inbound INVITE)
    remote_tag: str | None
    remote_target: SipUri  # where in-dialog requests go (their Contact)
    route_set: list[str] = field(default_factory=list)
    local_cseq: int = 1
    remote_cseq: int = 0

    def next_cseq(self) -> int:
        self.local_cseq += 1
        return self.local_cseq

    @property
    def local_party(self) -> str:
        return f"<{self.local_uri}>;tag={self.local_tag}"

    @property
    def remote_party(self) -> str:
        return f"<{self.remote_uri}>" + (f";tag={self.remote_tag}" if self.remote_tag else "")


class SipCall:
    """A call the agent answered or placed; the `CallControl` the call flow sees."""

    def __init__(
        self,
        agent: SipAgent,
        info: CallInfo,
        dialog: Dialog,
        make_rtp: Callable[[SipCall], RtpSession],
        *,
        peer: tuple[str, int],
    ) -> None:
        self.agent = agent
        self.info = info
        self.dialog = dialog
        self.rtp = make_rtp(self)
        self.peer = peer  # where the signalling came from (responses and, failing a Contact, requests go here)
        self.handler: CallHandler | None = None
        self.state = "early"  # early -> answered -> confirmed -> ended
        self.ended = False
        self.started_at = time.monotonic()
        self.answered_at: float | None = None
        self.acked = asyncio.Event()
        # Our SDP's o= line: the version goes up with every new offer or answer in the dialog (RFC 3264 §8).
        self.sdp_session_id = str(int(time.time() * 1000))
        self.sdp_version = 0
        self.invite: SipMessage | None = None  # the INVITE that created the call (inbound)
        self.invite_key: tuple[str, str] | None = None
        self.answer_task: asyncio.Task[None] | None = None
        self.transfer_result: asyncio.Future[int] | None = None
        self._dtmf_last: tuple[str, str, float] | None = None
        self._handler_queue: asyncio.Queue[Callable[[], Awaitable[None]] | None] = asyncio.Queue()
        self._handler_task: asyncio.Task[None] | None = None

    def next_sdp_version(self) -> int:
        self.sdp_version += 1
        return self.sdp_version

    # -- CallControl ----------------------------------------------------------------------------------------

    def play(self, pcm: bytes) -> None:
        if not self.ended:
            self.rtp.play(pcm)

    def stop_playback(self) -> None:
        self.rtp.stop_playback()

    def playback_pending(self) -> float:
        return self.rtp.playback_pending()

    async def transfer(self, target: str, headers: dict[str, str]) -> bool:
        if self.ended:
            return False
        return await self.agent.refer(self, target, headers)

    async def hangup(self) -> None:
        if self.ended:
            return
        await self.agent.send_bye(self)
        await self.end(None)

    # -- events from the agent and the media -------------------------------------------------------------------

    def attach(self, handler: CallHandler) -> None:
        """Start delivering events to the call flow, one at a time and in order."""
        self.handler = handler
        self._handler_task = asyncio.create_task(self._deliver_events(), name=f"sip-call-{self.info.call_id}")
        self._enqueue(lambda: handler.on_answer(self))

    async def on_audio(self, pcm: bytes) -> None:
        handler = self.handler
        if handler is not None and not self.ended:
            # Audio goes straight through (the RTP session already serialises it): queueing 50 frames a second
            # behind a slow dialogue turn would only add latency.
            try:
                await handler.on_audio(pcm)
            except Exception:
                logger.exception("call flow failed on audio", extra={"call_id": self.info.call_id})

    async def on_dtmf(self, digit: str, source: str = "rfc4733") -> None:
        if self.ended or digit not in DTMF_DIGITS:
            return
        now = time.monotonic()
        last = self._dtmf_last
        self._dtmf_last = (digit, source, now)
        if last is not None and last[0] == digit and last[1] != source and now - last[2] < _DTMF_TWIN_WINDOW_S:
            return  # the same key press, signalled both in the media and by INFO
        handler = self.handler
        if handler is not None:
            self._enqueue(lambda: handler.on_dtmf(digit))

    async def end(self, reason: str | None) -> None:
        """Tear the call down; `reason` is told to the call flow (None: the call flow ended it itself)."""
        if self.ended:
            return
        self.ended = True
        self.state = "ended"
        self.acked.set()
        if self.answer_task is not None and not self.answer_task.done():
            self.answer_task.cancel()
        if self.transfer_result is not None and not self.transfer_result.done():
            self.transfer_result.set_result(487)
        await self.rtp.close()
        handler = self.handler
        if handler is not None:
            if reason is not None:
                self._enqueue(lambda: handler.on_hangup(reason))
            self._handler_queue.put_nowait(None)
        self.agent.forget(self)

    def _enqueue(self, event: Callable[[], Awaitable[None]]) -> None:
        self._handler_queue.put_nowait(event)

    async def _deliver_events(self) -> None:
        while True:
            event = await self._handler_queue.get()
            if event is None:
                return
            try:
                await event()
            except Exception:
                logger.exception("call flow failed", extra={"call_id": self.info.call_id})

    async def wait_closed(self) -> None:
        if self._handler_task is not None:
            await asyncio.shield(self._handler_task)


def caller_number(from_header: str) -> str:
    """The user part of a From header (the caller's number), "" when withheld or unparsable."""
    try:
        address: NameAddr = parse_name_addr(from_header)
    except ValueError:
        return ""
    user = address.uri.user or ""
    if user.lower() in {"anonymous", "unknown", "restricted"}:
        return ""
    return user
