"""A SIP user agent over UDP (RFC 3261): answers and places calls, carries keypad INFO, transfers by REFER.

Calls reach the bank from a trunk or a PBX without registration: the agent listens on a UDP port, answers every
INVITE it can negotiate audio for (PCMU or PCMA, with RFC 4733 telephone-event), and hands each answered call to
a `CallHandler`. Reliability over UDP follows RFC 3261 section 17: requests are retransmitted with timers
T1/T2, a 2xx to INVITE is retransmitted until its ACK, and a retransmitted request is answered with the response
already sent (never acted on twice: an INFO digit is delivered once however often it arrives).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from channels.ivr import g711
from channels.ivr.media import CallHandlerFactory, CallInfo
from channels.ivr.rtp_session import RtpSession, RtpStats
from channels.ivr.sdp import (
    Negotiated,
    SdpError,
    SdpNegotiationError,
    build_answer,
    build_offer,
    negotiate,
    parse_answer,
    parse_offer,
)
from channels.ivr.sip_call import Dialog, SipCall, caller_number
from channels.ivr.sip_message import (
    SipMessage,
    SipParseError,
    SipUri,
    Via,
    build_request,
    build_response,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
    parse_name_addr,
    parse_uri,
)

logger = logging.getLogger(__name__)

T1 = 0.5  # RFC 3261 round-trip estimate
T2 = 4.0  # cap of the retransmission interval of non-INVITE requests and 2xx responses
TIMER_B = 64 * T1  # a transaction gives up after this long
# Bigger SIP messages are refused with 413: a legitimate call's INVITE is a few kilobytes.
MAX_SIP_BYTES = 16_384
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, NOTIFY"
# Methods we know and refuse (405, with Allow) rather than "not implemented" (501).
_KNOWN_REFUSED = frozenset({"REGISTER", "SUBSCRIBE", "PUBLISH", "MESSAGE", "REFER", "UPDATE", "PRACK"})
_REMEMBERED_TRANSACTIONS = 4096  # a ceiling for floods; normally time forgets them first
# A server transaction is kept to absorb retransmissions for 64*T1 after it began (RFC 3261 17.2.2 Timer J for
# non-INVITE over UDP; RFC 6026 Timer L for an accepted INVITE), then forgotten, so memory follows the call rate.
_TRANSACTION_MEMORY_S = 64 * T1
_DTMF_RELAY = re.compile(r"^\s*signal\s*=\s*(\S)", re.IGNORECASE | re.MULTILINE)
_SIPFRAG_STATUS = re.compile(r"^SIP/2\.0\s+(\d{3})")
# Minimal header sniffing for messages the parser refused, so the sender still gets a 400 (not silence).
_SNIFF = {
    name: re.compile(rf"^(?:{pattern})\s*:\s*(.*?)\s*$", re.IGNORECASE | re.MULTILINE)
    for name, pattern in {
        "Via": "via|v",
        "From": "from|f",
        "To": "to|t",
        "Call-ID": "call-id|i",
        "CSeq": "cseq",
    }.items()
}


@dataclass(frozen=True)
class SipSettings:
    host: str = "127.0.0.1"
    port: int = 5060
    # The address put in Contact and SDP (the host's address as callers reach it); default: `host`.
    public_host: str | None = None
    user: str = "ivr"
    rtp_port_range: tuple[int, int] = (20000, 30000)
    max_calls: int = 200
    # Seconds the call rings before it is answered (the greeting is prepared meanwhile); CANCEL works until then.
    ring_seconds: float = 0.0
    # No RTP for this long (outside hold) ends the call: the caller's phone is gone without a BYE.
    media_timeout_seconds: float = 30.0
    # Outbound calls go to this proxy/trunk (host, port); None: outbound calls are refused.
    outbound_proxy: tuple[str, int] | None = None
    # The number shown as the caller of outbound calls.
    outbound_caller: str = "95588"
    # How long an outbound call may ring before it is cancelled.
    ring_timeout_seconds: float = 30.0

    @property
    def contact_host(self) -> str:
        return self.public_host or self.host


@dataclass(frozen=True)
class OutboundResult:
    """How an outbound call went: answered (with its call), busy, no_answer, declined, failed."""

    outcome: str
    status: int
    call: SipCall | None = None


@dataclass
class _ServerTransaction:
    request: SipMessage
    addr: tuple[str, int]
    response: bytes | None = None
    final: bool = False
    acked: asyncio.Event | None = None
    created: float = field(default_factory=time.monotonic)


@dataclass
class _ClientTransaction:
    request: bytes
    addr: tuple[str, int]
    method: str
    responses: asyncio.Queue[SipMessage]


@dataclass
class AgentStats:
    requests_in: int = 0
    responses_in: int = 0
    malformed: int = 0
    retransmissions_absorbed: int = 0
    calls_answered: int = 0
    calls_refused: int = 0
    calls_ended: int = 0
    # Media of the calls that ended, summed: frames sent late (underruns), caller frames lost or late.
    rtp_packets_in: int = 0
    rtp_packets_out: int = 0
    rtp_underruns: int = 0
    rtp_lost: int = 0
    rtp_late_in: int = 0
    rtp_max_send_lag_ms: float = 0.0
    # INVITE received to 200 OK sent, seconds, of the most recent calls.
    setup_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))

    def add_media(self, stats: RtpStats) -> None:
        self.calls_ended += 1
        self.rtp_packets_in += stats.packets_in
        self.rtp_packets_out += stats.packets_out
        self.rtp_underruns += stats.underruns
        self.rtp_lost += stats.lost
        self.rtp_late_in += stats.late_in
        self.rtp_max_send_lag_ms = max(self.rtp_max_send_lag_ms, stats.max_send_lag_ms)

    def as_dict(self) -> dict[str, Any]:
        out = {name: value for name, value in vars(self).items() if name != "setup_seconds"}
        setups = sorted(self.setup_seconds)
        out["setup_ms_p50"] = round(setups[len(setups) // 2] * 1000, 2) if setups else None
        out["setup_ms_p95"] = round(setups[min(len(setups) - 1, int(len(setups) * 0.95))] * 1000, 2) if setups else None
        return out


class SipAgent(asyncio.DatagramProtocol):
    def __init__(
        self,
        settings: SipSettings,
        handler_factory: CallHandlerFactory,
        *,
        on_setup_time: Callable[[float], None] | None = None,
    ) -> None:
        self.settings = settings
        self.handler_factory = handler_factory
        self.on_setup_time = on_setup_time
        self.transport: asyncio.DatagramTransport | None = None
        self.calls: dict[str, SipCall] = {}
        self.stats = AgentStats()
        self._server_tx: OrderedDict[tuple[str, str], _ServerTransaction] = OrderedDict()
        self._client_tx: dict[tuple[str, str], _ClientTransaction] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    # -- lifecycle ------------------------------------------------------------------------------------------

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=(self.settings.host, self.settings.port)
        )
        self.transport = transport
        port: int = transport.get_extra_info("sockname")[1]
        self.port = port
        logger.info("SIP agent listening", extra={"port": port})
        return port

    async def close(self) -> None:
        """Hang up every call (BYE) and stop listening; leaves no task behind."""
        self._closing = True
        for call in list(self.calls.values()):
            if call.state in ("answered", "confirmed"):
                await self.send_bye(call)
            await call.end("server_shutdown")
        for call in list(self.calls.values()):
            await call.wait_closed()
        if self._tasks:
            # Outstanding BYEs get a moment to be answered; then everything stops.
            await asyncio.wait(list(self._tasks), timeout=1.0)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.transport is not None:
            self.transport.close()

    def forget(self, call: SipCall) -> None:
        if self.calls.pop(call.info.call_id, None) is not None:
            self.stats.add_media(call.rtp.stats)

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("SIP task failed", exc_info=task.exception())

    # -- the wire -------------------------------------------------------------------------------------------

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if not data.strip():
            return  # keep-alive (CRLF)
        try:
            message = parse_message(data, max_bytes=MAX_SIP_BYTES)
        except SipParseError as error:
            self.stats.malformed += 1
            self._answer_unparsable(data, addr, error)
            return
        try:
            if message.is_request:
                self.stats.requests_in += 1
                self._on_request(message, addr)
            else:
                self.stats.responses_in += 1
                self._on_response(message)
        except SipParseError as error:
            self.stats.malformed += 1
            self._answer_unparsable(data, addr, error)
        except Exception:
            logger.exception("SIP message handling failed")

    def error_received(self, exc: Exception) -> None:
        logger.debug("SIP socket error: %s", exc)

    def _answer_unparsable(self, data: bytes, addr: tuple[str, int], error: SipParseError) -> None:
        """A request we could not parse still gets an error response when its routing headers can be found."""
        text = data[:8192].decode("utf-8", errors="replace")
        first = text.split("\n", 1)[0]
        if first.startswith("SIP/") or first.upper().startswith("ACK "):
            return  # never answer a response or an ACK
        found = {name: pattern.search(text) for name, pattern in _SNIFF.items()}
        if any(match is None for match in found.values()):
            logger.info("dropped an unparsable SIP datagram", extra={"bytes": len(data), "reason": str(error)})
            return
        status = getattr(error, "status", 400)
        reason = {413: "Request Entity Too Large", 505: "Version Not Supported"}.get(status, "Bad Request")
        lines = [f"SIP/2.0 {status} {reason}"]
        lines += [f"{name}: {match.group(1)}" for name, match in found.items() if match is not None]
        lines += ["Content-Length: 0", "", ""]
        self._send("\r\n".join(lines).encode("utf-8", errors="replace"), addr)

    def _respond(
        self,
        request: SipMessage,
        addr: tuple[str, int],
        status: int,
        *,
        to_tag: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> bytes:
        response = build_response(
            request, status, to_tag=to_tag, headers=headers or [], body=body, content_type=content_type
        )
        data = response.encode()
        self._send(data, addr)
        transaction = self._server_tx.get(_server_key(request))
        if transaction is not None:
            transaction.response = data
            transaction.final = status >= 200
        return data

    # -- requests -------------------------------------------------------------------------------------------

    def _forget_old_transactions(self) -> None:
        """Drop server transactions older than 64*T1, oldest first (and the oldest beyond the ceiling). One not
        answered finally yet is still in progress: it is kept, and looked at again later."""
        now = time.monotonic()
        while self._server_tx:
            key, oldest = next(iter(self._server_tx.items()))
            over_ceiling = len(self._server_tx) >= _REMEMBERED_TRANSACTIONS
            if now - oldest.created <= _TRANSACTION_MEMORY_S and not over_ceiling:
                return
            if not oldest.final and not over_ceiling:
                oldest.created = now
                self._server_tx.move_to_end(key)
                continue
            self._server_tx.popitem(last=False)

    def _on_request(self, request: SipMessage, addr: tuple[str, int]) -> None:
        method = request.method or ""
        if method == "ACK":
            self._on_ack(request)
            return
        if method == "CANCEL":
            self._on_cancel(request, addr)
            return
        key = _server_key(request)
        known = self._server_tx.get(key)
        if known is not None:
            # A retransmission: say again what we said, act on nothing.
            self.stats.retransmissions_absorbed += 1
            if known.response is not None:
                self._send(known.response, addr)
            return
        self._forget_old_transactions()
        self._server_tx[key] = _ServerTransaction(request, addr)
        unsupported = [
            option.strip()
            for value in request.header_values("Require")
            for option in value.split(",")
            if option.strip()
        ]
        if unsupported and method not in ("BYE",):
            self._respond(request, addr, 420, headers=[("Unsupported", ", ".join(unsupported))])
            return
        if method == "INVITE":
            self._on_invite(request, addr)
        elif method == "BYE":
            self._on_bye(request, addr)
        elif method == "INFO":
            self._on_info(request, addr)
        elif method == "OPTIONS":
            self._respond(
                request,
                addr,
                200,
                headers=[("Allow", ALLOW), ("Accept", "application/sdp"), ("Supported", "")],
            )
        elif method == "NOTIFY":
            self._on_notify(request, addr)
        elif method in _KNOWN_REFUSED:
            self._respond(request, addr, 405, headers=[("Allow", ALLOW)])
        else:
            self._respond(request, addr, 501, headers=[("Allow", ALLOW)])

    def _on_invite(self, request: SipMessage, addr: tuple[str, int]) -> None:
        to = parse_name_addr(request.header("To") or "")
        call = self.calls.get(request.call_id)
        if to.tag is not None:
            if call is None or call.dialog.local_tag != to.tag:
                self._respond(request, addr, 481)
                return
            self._on_reinvite(call, request, addr)
            return
        if call is not None:
            # Same Call-ID, new branch, no To tag: a second INVITE for a call being set up (merged request).
            self._respond(request, addr, 482 if call.state == "early" else 491)
            return
        if self._closing:
            self._respond(request, addr, 503, headers=[("Retry-After", "30")])
            return
        if len(self.calls) >= self.settings.max_calls:
            self.stats.calls_refused += 1
            self._respond(request, addr, 486)
            return
        content_type = (request.header("Content-Type") or "").split(";")[0].strip().lower()
        if request.body and content_type != "application/sdp":
            self._respond(request, addr, 415, headers=[("Accept", "application/sdp")])
            return
        negotiated: Negotiated | None = None
        if request.body:
            try:
                negotiated = negotiate(parse_offer(request.body))
            except SdpNegotiationError:
                self._respond(request, addr, 488, headers=[("Warning", '304 - "no common audio codec"')])
                return
            except SdpError:
                self._respond(request, addr, 400)
                return
        self._respond(request, addr, 100)
        from_header = request.header("From") or ""
        contact = request.header("Contact")
        try:
            remote_target = parse_name_addr(contact).uri if contact else parse_name_addr(from_header).uri
        except SipParseError:
            remote_target = parse_uri(f"sip:{addr[0]}:{addr[1]}")
        local_tag = new_tag()
        dialog = Dialog(
            call_id=request.call_id,
            local_tag=local_tag,
            local_uri=str(to.uri),
            remote_uri=str(parse_name_addr(from_header).uri),
            remote_tag=parse_name_addr(from_header).tag,
            remote_target=remote_target,
            route_set=request.header_values("Record-Route"),
            remote_cseq=request.cseq[0],
        )
        info = CallInfo(
            call_id=request.call_id,
            caller=caller_number(from_header),
            callee=to.uri.user or "",
            transport="sip",
            extras={"peer": f"{addr[0]}:{addr[1]}"},
        )
        call = SipCall(self, info, dialog, self._new_rtp, peer=addr)
        call.invite = request
        call.invite_key = _server_key(request)
        self.calls[call.info.call_id] = call
        self._respond(request, addr, 180, to_tag=local_tag)
        call.answer_task = asyncio.create_task(self._answer(call, request, addr, negotiated))

    def _new_rtp(self, call: SipCall) -> RtpSession:
        async def on_timeout() -> None:
            if not call.ended:
                logger.info("media timeout: ending the call", extra={"call_id": call.info.call_id})
                await self.send_bye(call)
                await call.end("media_timeout")

        return RtpSession(
            local_host=self.settings.host,
            codec=g711.PCMU,
            remote=None,
            dtmf_pt=None,
            on_audio=call.on_audio,
            on_dtmf=call.on_dtmf,
            media_timeout_s=self.settings.media_timeout_seconds,
            on_media_timeout=on_timeout,
            port_range=self.settings.rtp_port_range,
            # Symmetric RTP: follow where the caller's media really comes from (a phone behind NAT, or one that
            # announces another of its addresses in SDP than the one it sends from).
            latch_to_sender=True,
        )

    async def _answer(
        self, call: SipCall, request: SipMessage, addr: tuple[str, int], negotiated: Negotiated | None
    ) -> None:
        started = call.started_at
        try:
            if self.settings.ring_seconds > 0:
                await asyncio.sleep(self.settings.ring_seconds)
            port = await call.rtp.start()
            host = self.settings.contact_host
            session_id, version = call.sdp_session_id, call.next_sdp_version()
            if negotiated is not None:
                self._apply_negotiation(call, negotiated)
                body = build_answer(host, port, negotiated, session_id=session_id, session_version=version)
            else:
                # No offer in the INVITE: ours goes in the 200 and the answer comes in the ACK.
                body = build_offer(host, port, session_id=session_id, session_version=version)
            call.state = "answered"
            call.answered_at = time.monotonic()
            data = self._respond(
                request,
                addr,
                200,
                to_tag=call.dialog.local_tag,
                headers=[("Contact", self._contact()), ("Allow", ALLOW), ("Supported", "")],
                body=body,
                content_type="application/sdp",
            )
            self.stats.calls_answered += 1
            self.stats.setup_seconds.append(call.answered_at - started)
            if self.on_setup_time is not None:
                self.on_setup_time(call.answered_at - started)
            call.attach(self.handler_factory(call.info))
            await self._retransmit_until_acked(call, data, addr)
        except asyncio.CancelledError:
            raise
        except OSError:
            logger.exception("could not open the call's media")
            self._respond(request, addr, 503)
            await call.end(None)

    def _apply_negotiation(self, call: SipCall, negotiated: Negotiated) -> None:
        call.rtp.set_codec(g711.codec_named(negotiated.codec), negotiated.dtmf_pt)
        if negotiated.remote_port and negotiated.remote_address not in ("0.0.0.0", ""):
            call.rtp.set_remote(negotiated.remote_address, negotiated.remote_port)
        call.rtp.hold(negotiated.direction in ("recvonly", "inactive"))

    async def _retransmit_until_acked(self, call: SipCall, data: bytes, addr: tuple[str, int]) -> None:
        """RFC 3261 13.3.1.4: the 2xx is resent (T1, doubling to T2) until the ACK; no ACK in 64*T1 ends it."""
        interval = T1
        deadline = time.monotonic() + TIMER_B
        while not call.acked.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                logger.info("no ACK for the 200: ending the call", extra={"call_id": call.info.call_id})
                await self.send_bye(call)
                await call.end("no_ack")
                return
            try:
                await asyncio.wait_for(call.acked.wait(), timeout=min(interval, remaining))
            except TimeoutError:
                if call.ended:
                    return
                self._send(data, addr)
                interval = min(interval * 2, T2)

    def _contact(self) -> str:
        return f"<sip:{self.settings.user}@{self.settings.contact_host}:{self.port}>"

    def _on_reinvite(self, call: SipCall, request: SipMessage, addr: tuple[str, int]) -> None:
        if request.cseq[0] <= call.dialog.remote_cseq:
            self._respond(request, addr, 500, headers=[("Retry-After", "1")])
            return
        call.dialog.remote_cseq = request.cseq[0]
        if not request.body:
            body = build_offer(
                self.settings.contact_host,
                call.rtp.local_port,
                session_id=call.sdp_session_id,
                session_version=call.next_sdp_version(),
            )
        else:
            try:
                negotiated = negotiate(parse_offer(request.body))
            except SdpNegotiationError:
                self._respond(request, addr, 488)
                return
            except SdpError:
                self._respond(request, addr, 400)
                return
            self._apply_negotiation(call, negotiated)
            body = build_answer(
                self.settings.contact_host,
                call.rtp.local_port,
                negotiated,
                session_id=call.sdp_session_id,
                session_version=call.next_sdp_version(),
            )
        call.acked.clear()
        data = self._respond(
            request,
            addr,
            200,
            to_tag=call.dialog.local_tag,
            headers=[("Contact", self._contact()), ("Allow", ALLOW)],
            body=body,
            content_type="application/sdp",
        )
        self._spawn(self._retransmit_until_acked(call, data, addr), f"reinvite-{call.info.call_id}")

    def _on_ack(self, request: SipMessage) -> None:
        call = self.calls.get(request.call_id)
        key = (_branch(request), "INVITE")
        transaction = self._server_tx.get(key)
        if transaction is not None and transaction.acked is not None:
            transaction.acked.set()  # the ACK of an error response
        if call is None:
            return
        if call.state == "answered":
            call.state = "confirmed"
        call.acked.set()
        if request.body and (request.header("Content-Type") or "").lower().startswith("application/sdp"):
            try:
                self._apply_negotiation(call, parse_answer(request.body))
            except (SdpError, SdpNegotiationError):
                logger.info("unusable SDP answer in ACK: ending the call", extra={"call_id": call.info.call_id})
                self._spawn(call.hangup(), f"bye-{call.info.call_id}")

    def _on_cancel(self, request: SipMessage, addr: tuple[str, int]) -> None:
        key = (_branch(request), "INVITE")
        transaction = self._server_tx.get(key)
        if transaction is None:
            self._send(build_response(request, 481).encode(), addr)
            return
        self._send(build_response(request, 200).encode(), addr)
        call = self.calls.get(request.call_id)
        if transaction.final or call is None or call.state != "early":
            return  # too late: the call was answered (RFC 3261 9.2, the CANCEL has no effect)
        if call.answer_task is not None:
            call.answer_task.cancel()
        data = self._respond(transaction.request, transaction.addr, 487, to_tag=call.dialog.local_tag)
        transaction.acked = asyncio.Event()
        self._spawn(self._retransmit_error(transaction, data), f"487-{request.call_id}")
        self._spawn(call.end("cancel"), f"cancel-{request.call_id}")

    async def _retransmit_error(self, transaction: _ServerTransaction, data: bytes) -> None:
        """RFC 3261 17.2.1: a final error response to INVITE is resent (Timer G) until its ACK (Timer H)."""
        assert transaction.acked is not None
        interval = T1
        deadline = time.monotonic() + TIMER_B
        while not transaction.acked.is_set() and time.monotonic() < deadline:
            try:
                await asyncio.wait_for(transaction.acked.wait(), timeout=interval)
            except TimeoutError:
                self._send(data, transaction.addr)
                interval = min(interval * 2, T2)

    def _on_bye(self, request: SipMessage, addr: tuple[str, int]) -> None:
        call = self.calls.get(request.call_id)
        if call is None:
            self._respond(request, addr, 481)
            return
        self._respond(request, addr, 200)
        self._spawn(call.end("caller"), f"bye-{request.call_id}")

    def _on_info(self, request: SipMessage, addr: tuple[str, int]) -> None:
        # Always 200: a peer whose INFO is refused or ignored retransmits for 32 s and then drops the call.
        self._respond(request, addr, 200)
        call = self.calls.get(request.call_id)
        if call is None:
            return
        digit = _info_digit(request)
        if digit is not None:
            self._spawn(call.on_dtmf(digit, "info"), f"info-{request.call_id}")

    def _on_notify(self, request: SipMessage, addr: tuple[str, int]) -> None:
        call = self.calls.get(request.call_id)
        if call is None:
            self._respond(request, addr, 481)
            return
        self._respond(request, addr, 200)
        match = _SIPFRAG_STATUS.match(request.body.decode("utf-8", errors="replace"))
        if match and call.transfer_result is not None and not call.transfer_result.done():
            status = int(match.group(1))
            if status >= 200:
                call.transfer_result.set_result(status)

    # -- requests we send -----------------------------------------------------------------------------------

    def _via(self) -> Via:
        return Via("UDP", self.settings.contact_host, self.port, {"branch": new_branch(), "rport": None})

    def _in_dialog(self, call: SipCall, method: str, headers: list[tuple[str, str]] | None = None) -> SipMessage:
        dialog = call.dialog
        message = build_request(
            method,
            str(dialog.remote_target),
            via=self._via(),
            from_=dialog.local_party,
            to=dialog.remote_party,
            call_id=dialog.call_id,
            cseq=dialog.next_cseq(),
            contact=self._contact(),
            headers=[("Route", route) for route in dialog.route_set] + (headers or []),
        )
        return message

    def _destination(self, call: SipCall) -> tuple[str, int]:
        """Where in-dialog requests go: the first loose route, else the remote target, else the peer."""
        if call.dialog.route_set:
            try:
                route = parse_name_addr(call.dialog.route_set[0]).uri
                return route.host, route.port or 5060
            except SipParseError:
                pass
        target = call.dialog.remote_target
        if target.host:
            return target.host, target.port or 5060
        return call.peer

    async def send_bye(self, call: SipCall) -> None:
        """End the dialog from our side; the BYE is retransmitted in the background until answered."""
        if call.ended or call.state == "early":
            return
        bye = self._in_dialog(call, "BYE")
        self._spawn(self._bye_transaction(call, bye), f"bye-out-{call.info.call_id}")

    async def _bye_transaction(self, call: SipCall, bye: SipMessage) -> None:
        try:
            await self._request(bye, self._destination(call), wait_final=True, timeout=TIMER_B)
        except TimeoutError:
            logger.info("BYE not answered", extra={"call_id": call.info.call_id})

    async def refer(self, call: SipCall, target: str, headers: dict[str, str]) -> bool:
        """Blind transfer (RFC 3515): REFER the caller to `target`, carrying `headers` into their new INVITE.

        True once the transfer is accepted (202) and the caller's new call was answered or is ringing; then
        our leg is hung up. False when the peer refuses REFER or the target fails: the call stays with us.
        """
        if call.state not in ("answered", "confirmed"):
            return False
        refer_to = target
        if headers:
            encoded = "&".join(f"{quote(name, safe='-')}={quote(value, safe='')}" for name, value in headers.items())
            refer_to = f"{target}?{encoded}"
        extra = [("Refer-To", f"<{refer_to}>"), ("Referred-By", f"<{call.dialog.local_uri}>")]
        extra += [(name, value) for name, value in headers.items()]
        call.transfer_result = asyncio.get_running_loop().create_future()
        try:
            response = await self._request(
                self._in_dialog(call, "REFER", extra), self._destination(call), wait_final=True, timeout=TIMER_B / 4
            )
        except TimeoutError:
            return False
        if response.status is None or response.status >= 300:
            logger.info("REFER refused", extra={"call_id": call.info.call_id, "status": response.status})
            return False
        try:
            status = await asyncio.wait_for(asyncio.shield(call.transfer_result), timeout=TIMER_B)
        except TimeoutError:
            status = 200  # accepted and no final NOTIFY: the transferee has the call; our leg ends anyway
        if status >= 300:
            return False
        await call.hangup()
        return True

    async def _request(
        self, message: SipMessage, addr: tuple[str, int], *, wait_final: bool, timeout: float
    ) -> SipMessage:
        """Send a request, retransmitting per RFC 3261 17.1; the final response (or the first, when not waiting)."""
        branch = (_branch(message), message.method or "")
        transaction = _ClientTransaction(message.encode(), addr, message.method or "", asyncio.Queue())
        self._client_tx[branch] = transaction
        is_invite = message.method == "INVITE"
        interval = T1
        deadline = time.monotonic() + timeout
        provisional = False
        try:
            self._send(transaction.request, addr)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(message.method)
                try:
                    response = await asyncio.wait_for(transaction.responses.get(), timeout=min(interval, remaining))
                except TimeoutError:
                    if not (is_invite and provisional):
                        self._send(transaction.request, addr)
                    # Timer E doubles to T2, and stays at T2 once the request is known to be in progress.
                    interval = T2 if provisional else min(interval * 2, T2)
                    continue
                status = response.status or 0
                if status >= 200 or not wait_final:
                    return response
                provisional = True
        finally:
            self._client_tx.pop(branch, None)

    def _on_response(self, response: SipMessage) -> None:
        # A CANCEL shares its INVITE's branch: the CSeq method tells their responses apart.
        branch = (_branch(response), response.cseq[1])
        transaction = self._client_tx.get(branch)
        if transaction is not None:
            transaction.responses.put_nowait(response)
            return
        # A retransmitted 2xx to an INVITE we already acknowledged: acknowledge again (RFC 3261 13.2.2.4).
        call = self.calls.get(response.call_id)
        if call is not None and response.cseq[1] == "INVITE" and (response.status or 0) // 100 == 2:
            self._send_ack(call, response.cseq[0])

    # -- outbound calls -------------------------------------------------------------------------------------

    async def place_call(self, number: str, *, extras: dict[str, str] | None = None) -> OutboundResult:
        """Call `number` through the configured proxy; an answered call is handed to a new call handler."""
        proxy = self.settings.outbound_proxy
        if proxy is None:
            raise RuntimeError("no outbound SIP proxy is configured")
        if self._closing:
            return OutboundResult("failed", 503)
        host = self.settings.contact_host
        call_id = new_call_id(host)
        local_uri = f"sip:{self.settings.outbound_caller}@{host}"
        remote_uri = f"sip:{number}@{proxy[0]}:{proxy[1]}"
        dialog = Dialog(
            call_id=call_id,
            local_tag=new_tag(),
            local_uri=local_uri,
            remote_uri=remote_uri,
            remote_tag=None,
            remote_target=parse_uri(remote_uri),
        )
        info = CallInfo(
            call_id=call_id,
            caller=self.settings.outbound_caller,
            callee=number,
            transport="sip",
            direction="outbound",
            extras=dict(extras or {}),
        )
        call = SipCall(self, info, dialog, self._new_rtp, peer=proxy)
        self.calls[call_id] = call
        try:
            port = await call.rtp.start()
        except OSError:
            await call.end(None)
            return OutboundResult("failed", 503)
        offer = build_offer(host, port, session_id=call.sdp_session_id, session_version=call.next_sdp_version())
        invite = build_request(
            "INVITE",
            remote_uri,
            via=self._via(),
            from_=dialog.local_party,
            to=dialog.remote_party,
            call_id=call_id,
            cseq=dialog.local_cseq,
            contact=self._contact(),
            headers=[("Allow", ALLOW), *[(f"X-Bankbot-{k}", v) for k, v in (extras or {}).items()]],
            body=offer,
            content_type="application/sdp",
        )
        try:
            response = await self._invite(call, invite, proxy)
        except BaseException:
            await call.end(None)
            raise
        status = response.status or 0
        if status // 100 != 2:
            await call.end(None)
            return OutboundResult(_outcome_of(status), status)
        to = parse_name_addr(response.header("Contact") or response.header("To") or "")
        dialog.remote_tag = parse_name_addr(response.header("To") or "").tag
        dialog.remote_target = to.uri
        dialog.route_set = list(reversed(response.header_values("Record-Route")))
        self._send_ack(call, dialog.local_cseq)
        try:
            self._apply_negotiation(call, parse_answer(response.body))
        except (SdpError, SdpNegotiationError):
            await call.hangup()
            return OutboundResult("failed", 488)
        call.state = "confirmed"
        call.answered_at = time.monotonic()
        call.acked.set()
        call.attach(self.handler_factory(call.info))
        return OutboundResult("answered", status, call)

    async def _invite(self, call: SipCall, invite: SipMessage, proxy: tuple[str, int]) -> SipMessage:
        """Send the INVITE; cancel it when it rings too long; returns the final response (ACKed if an error)."""
        branch = (_branch(invite), "INVITE")
        transaction = _ClientTransaction(invite.encode(), proxy, "INVITE", asyncio.Queue())
        self._client_tx[branch] = transaction
        ring_deadline = time.monotonic() + self.settings.ring_timeout_seconds
        interval = T1
        provisional = False
        cancelled = False
        try:
            self._send(transaction.request, proxy)
            while True:
                if not cancelled and time.monotonic() >= ring_deadline:
                    if not provisional:
                        return build_response(invite, 408)
                    cancelled = True
                    self._send(_cancel_for(invite).encode(), proxy)
                    ring_deadline = time.monotonic() + TIMER_B
                elif cancelled and time.monotonic() >= ring_deadline:
                    return build_response(invite, 408)
                wait = max(0.01, min(interval, ring_deadline - time.monotonic()))
                try:
                    response = await asyncio.wait_for(transaction.responses.get(), timeout=wait)
                except TimeoutError:
                    if not provisional:
                        self._send(transaction.request, proxy)
                        interval *= 2
                    continue
                status = response.status or 0
                if status < 200:
                    provisional = True
                    continue
                if status >= 300:
                    self._send(_ack_for_error(invite, response).encode(), proxy)
                    if cancelled and status == 487:
                        return build_response(invite, 408)
                return response
        finally:
            self._client_tx.pop(branch, None)

    def _send_ack(self, call: SipCall, cseq: int) -> None:
        dialog = call.dialog
        ack = build_request(
            "ACK",
            str(dialog.remote_target),
            via=self._via(),
            from_=dialog.local_party,
            to=dialog.remote_party,
            call_id=dialog.call_id,
            cseq=cseq,
            headers=[("Route", route) for route in dialog.route_set],
        )
        self._send(ack.encode(), self._destination(call))


def _branch(message: SipMessage) -> str:
    via = message.header("Via") or ""
    match = re.search(r";\s*branch=([^;,\s]+)", via)
    if match:
        return match.group(1)
    # RFC 2543 peers have no branch: the transaction is the Call-ID with the CSeq number.
    return f"{message.call_id}|{message.cseq[0]}"


def _server_key(request: SipMessage) -> tuple[str, str]:
    return _branch(request), request.method or ""


def _info_digit(request: SipMessage) -> str | None:
    """The key of an INFO: `application/dtmf-relay` ("Signal=5") or `application/dtmf` ("5")."""
    content_type = (request.header("Content-Type") or "").split(";")[0].strip().lower()
    body = request.body.decode("utf-8", errors="replace")
    if content_type == "application/dtmf-relay":
        match = _DTMF_RELAY.search(body)
        return match.group(1).upper() if match else None
    if content_type == "application/dtmf":
        value = body.strip()
        if value in ("10", "11"):
            return "*" if value == "10" else "#"
        return value.upper() if len(value) == 1 else None
    return None


def _cancel_for(invite: SipMessage) -> SipMessage:
    """RFC 3261 9.1: same Request-URI, Call-ID, From, To, CSeq number and top Via as the INVITE."""
    return build_request(
        "CANCEL",
        invite.uri or "",
        via=invite.header("Via") or "",
        from_=invite.header("From") or "",
        to=invite.header("To") or "",
        call_id=invite.call_id,
        cseq=invite.cseq[0],
    )


def _ack_for_error(invite: SipMessage, response: SipMessage) -> SipMessage:
    """RFC 3261 17.1.1.3: the ACK of a non-2xx final response belongs to the INVITE's transaction."""
    return build_request(
        "ACK",
        invite.uri or "",
        via=invite.header("Via") or "",
        from_=invite.header("From") or "",
        to=response.header("To") or "",
        call_id=invite.call_id,
        cseq=invite.cseq[0],
    )


def _outcome_of(status: int) -> str:
    if status in (486, 600):
        return "busy"
    if status in (408, 480, 487):
        return "no_answer"
    if status in (603, 403):
        return "declined"
    return "failed"


__all__ = ["OutboundResult", "SipAgent", "SipSettings", "SipUri"]
