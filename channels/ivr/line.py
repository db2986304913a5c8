"""The phone line inside the gateway process: the SIP agent and the AudioSocket server, started with the app.

Both transports share one `IvrRuntime` (turn pipeline, recogniser, voice). The agent-desktop side of a transfer
reads the handoff a call carried (`X-Bankbot-Handoff`) from `GET /ivr/handoffs/{id}` with the service token.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bankcore import customer_care, phone_login
from bankcore.database import unit_of_work
from bankcore.settings import Settings
from channels.http_errors import json_error
from channels.ivr.audiosocket import AudioSocketServer
from channels.ivr.call_flow import CHANNEL, OUTBOUND_KEY, IvrRuntime, OutboundCall
from channels.ivr.media import CallInfo
from channels.ivr.sip_agent import SipAgent, SipSettings
from channels.rasa_client import BotMessage
from channels.resources import METRICS, SESSION_FACTORY, SETTINGS, TURNS
from voice.asr import AsrEngine, AsrModel
from voice.tts import CachedSynthesizer, EspeakPinyinSynthesizer

logger = logging.getLogger(__name__)


class AudioSocketDirectory:
    """What Asterisk's dialplan tells us about an AudioSocket call (it passes only a UUID), and what we tell it.

    Before `AudioSocket(uuid, host:port)` the dialplan posts the caller's number and the number dialled under
    the UUID; after the call comes back to the dialplan it reads whether we transferred it (and where, with the
    handoff id) and dials the agents. Entries live an hour at most.
    """

    def __init__(self, *, ttl_s: float = 3600.0, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def _prune(self) -> None:
        now = time.monotonic()
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if len(self._entries) <= self.max_entries and now - oldest["at"] < self.ttl_s:
                break
            self._entries.popitem(last=False)

    def register(self, call_uuid: str, caller: str, callee: str) -> None:
        self._entries[call_uuid] = {"at": time.monotonic(), "caller": caller, "callee": callee, "transfer": None}
        self._entries.move_to_end(call_uuid)
        self._prune()

    def get(self, call_uuid: str) -> dict[str, Any] | None:
        self._prune()
        return self._entries.get(call_uuid)

    async def caller_of(self, call_uuid: str) -> tuple[str, str]:
        entry = self.get(call_uuid)
        return (entry["caller"], entry["callee"]) if entry else ("", "")

    async def record_transfer(self, info: CallInfo, target: str, headers: dict[str, str]) -> bool:
        entry = self.get(info.call_id)
        if entry is None:
            self.register(info.call_id, info.caller, info.callee)
            entry = self._entries[info.call_id]
        entry["transfer"] = {"target": target, "headers": dict(headers)}
        return True


@dataclass
class PhoneLine:
    runtime: IvrRuntime
    sip: SipAgent | None = None
    audiosocket: AudioSocketServer | None = None
    directory: AudioSocketDirectory = field(default_factory=AudioSocketDirectory)
    # Outbound calls by idempotency key: a retried request never dials the customer twice.
    placed: OrderedDict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=OrderedDict)

    async def call_customer(
        self, customer_id: str, number: str, key: str, opening: list[BotMessage], *, topic: str = ""
    ) -> dict[str, Any]:
        """Place (once per key) a call that says `opening` when answered; the outcome as the scheduler reads it."""
        known = self.placed.get(key)
        if known is not None:
            return await asyncio.shield(known)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.placed[key] = future
        while len(self.placed) > _REMEMBERED_OUTBOUND:
            self.placed.popitem(last=False)
        assert self.sip is not None
        self.runtime.outbound[key] = OutboundCall(customer_id=customer_id, key=key, opening=tuple(opening), topic=topic)
        try:
            result = await self.sip.place_call(number, extras={OUTBOUND_KEY: key})
            outcome = {"outcome": result.outcome, "status": result.status}
        except Exception as error:
            logger.exception("outbound call failed")
            outcome = {"outcome": "failed", "status": 500, "detail": type(error).__name__}
        finally:
            self.runtime.outbound.pop(key, None)
        if outcome["outcome"] != "answered":
            # Not reached: a later retry (with the same key) may dial again.
            self.placed.pop(key, None)
        future.set_result(outcome)
        return outcome

    async def close(self) -> None:
        if self.sip is not None:
            await self.sip.close()
        if self.audiosocket is not None:
            await self.audiosocket.close()
        if self.runtime.asr is not None:
            await self.runtime.asr.aclose()


PHONE_LINE = web.AppKey("phone_line", PhoneLine)
_REMEMBERED_OUTBOUND = 10_000


def sip_settings(settings: Settings) -> SipSettings:
    proxy = None
    if settings.sip_outbound_proxy:
        host, _, port = settings.sip_outbound_proxy.rpartition(":")
        proxy = (host or settings.sip_outbound_proxy, int(port) if host else 5060)
    return SipSettings(
        host=settings.sip_host,
        port=settings.sip_port,
        public_host=settings.sip_public_host or None,
        rtp_port_range=settings.sip_rtp_ports,
        max_calls=settings.sip_max_calls,
        ring_seconds=settings.sip_ring_seconds,
        outbound_proxy=proxy,
        outbound_caller=settings.sip_outbound_caller,
    )


async def _phone_line(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    asr = None
    if settings.vosk_model_path is not None:
        model = await asyncio.to_thread(AsrModel, settings.vosk_model_path)
        metrics = app[METRICS]

        def observe(audio_seconds: float, processing_seconds: float) -> None:
            metrics.observe_recognition(CHANNEL, audio_seconds, processing_seconds)

        asr = AsrEngine(model, workers=settings.asr_workers, max_streams=settings.asr_max_streams, on_utterance=observe)
    else:
        logger.warning("no speech model configured: the phone line takes keypad input only")
    runtime = IvrRuntime(
        ctx=app[TURNS],
        synthesizer=CachedSynthesizer(EspeakPinyinSynthesizer(settings.tts_voice)),
        asr=asr,
        transfer_target=settings.ivr_transfer_uri,
    )
    line = PhoneLine(runtime)
    try:
        if settings.sip_port:
            line.sip = SipAgent(sip_settings(settings), runtime.handler_for)
            await line.sip.start()
        if settings.audiosocket_port:
            line.audiosocket = AudioSocketServer(
                runtime.handler_for,
                host=settings.audiosocket_host,
                port=settings.audiosocket_port,
                caller_lookup=line.directory.caller_of,
                on_transfer=line.directory.record_transfer,
            )
            await line.audiosocket.start()
    except BaseException:
        await line.close()
        raise
    app[PHONE_LINE] = line
    yield
    await line.close()


def _authorised(request: web.Request) -> bool:
    """The service token (BANKBOT_EVENTS_TOKEN) as a bearer token; unset, nothing is authorised."""
    token = request.app[SETTINGS].events_token
    presented = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    return bool(token) and hmac.compare_digest(presented.encode(), token.encode())


def _unauthorised() -> web.Response:
    return json_error(401, "unauthorized", "missing or wrong service token", headers={"WWW-Authenticate": "Bearer"})


async def post_audiosocket_call(request: web.Request) -> web.Response:
    """The dialplan registers a call before AudioSocket(): uuid, caller, callee (form-encoded, as CURL() posts)."""
    if not _authorised(request):
        return _unauthorised()
    line = request.app.get(PHONE_LINE)
    if line is None or line.audiosocket is None:
        return json_error(503, "not_configured", "the AudioSocket server is not running")
    if request.content_type == "application/json":
        try:
            data = await request.json()
        except ValueError:
            return json_error(400, "bad_request", "the body is not JSON")
        fields = data if isinstance(data, dict) else {}
    else:
        fields = dict(await request.post())
    call_uuid = str(fields.get("uuid", "")).strip().lower()
    try:
        call_uuid = str(uuid.UUID(call_uuid))
    except ValueError:
        return json_error(400, "bad_request", "uuid must be a UUID")
    caller, callee = str(fields.get("caller", ""))[:32], str(fields.get("callee", ""))[:32]
    line.directory.register(call_uuid, caller, callee)
    return web.json_response({"uuid": call_uuid}, status=201)


async def get_audiosocket_call(request: web.Request) -> web.Response:
    """After AudioSocket() returns, the dialplan reads whether the call is to be transferred, and where."""
    if not _authorised(request):
        return _unauthorised()
    line = request.app.get(PHONE_LINE)
    entry = line.directory.get(request.match_info["call_uuid"].lower()) if line is not None else None
    if entry is None:
        return json_error(404, "not_found", "no such call")
    transfer = entry["transfer"]
    return web.json_response(
        {
            "caller": entry["caller"],
            "callee": entry["callee"],
            "transfer": transfer["target"] if transfer else "",
            "handoff": (transfer or {}).get("headers", {}).get("X-Bankbot-Handoff", ""),
        }
    )


async def post_outbound_call(request: web.Request) -> web.Response:
    """The reminder scheduler asks for a call: {customer_id, key, topic, messages (Rasa's replies to say)}.

    Answers when the call was answered or could not be (busy, no answer, declined, failed): the scheduler
    retries those with backoff; the key makes a retried request after an answered call a no-op.
    """
    if not _authorised(request):
        return _unauthorised()
    line = request.app.get(PHONE_LINE)
    if line is None or line.sip is None or line.sip.settings.outbound_proxy is None:
        return json_error(503, "not_configured", "no SIP trunk is configured for outbound calls")
    try:
        body = await request.json()
        customer_id, key, topic = str(body["customer_id"]), str(body["key"]), str(body.get("topic", ""))
        opening = [BotMessage.from_rasa(item) for item in body.get("messages", []) if isinstance(item, dict)]
    except (ValueError, KeyError, TypeError, AttributeError):
        return json_error(400, "bad_request", "expected JSON with customer_id, key and messages")

    def number_of() -> str | None:
        with unit_of_work(request.app[SESSION_FACTORY]) as session:
            return phone_login.number_for(session, customer_id)

    number = await asyncio.to_thread(number_of)
    if number is None:
        return json_error(404, "no_number", "the customer has no phone number")
    return web.json_response(await line.call_customer(customer_id, number, key, opening, topic=topic))


async def get_handoff(request: web.Request) -> web.Response:
    """What the agent taking a transferred call reads first: the reason and the conversation summary."""
    if not _authorised(request):
        return _unauthorised()
    try:
        handoff_id = int(request.match_info["handoff_id"])
    except ValueError:
        return json_error(400, "bad_request", "the handoff id is a number")

    def load() -> customer_care.HandoffView | None:
        with unit_of_work(request.app[SESSION_FACTORY]) as session:
            return customer_care.get_handoff(session, handoff_id)

    handoff = await asyncio.to_thread(load)
    if handoff is None:
        return json_error(404, "not_found", "no such handoff")
    return web.json_response(
        {
            "id": handoff.id,
            "customer_id": handoff.customer_id,
            "reason": handoff.reason,
            "priority": handoff.priority,
            "channel": handoff.channel,
            "summary": handoff.summary,
            "status": handoff.status,
            "created_at": handoff.created_at.isoformat(),
        }
    )


def _process_figures() -> dict[str, Any]:
    """What a leak shows in: asyncio tasks, open file descriptors (sockets), resident memory."""
    figures: dict[str, Any] = {"tasks": len(asyncio.all_tasks())}
    try:
        figures["open_fds"] = len(os.listdir("/proc/self/fd"))
        with open("/proc/self/statm", encoding="ascii") as statm:
            figures["rss_bytes"] = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        pass  # not Linux: the counts that need /proc are left out
    return figures


async def get_stats(request: web.Request) -> web.Response:
    """Calls, media quality (late frames sent, frames lost) and the process's tasks, sockets and memory."""
    line = request.app.get(PHONE_LINE)
    body: dict[str, Any] = {"process": _process_figures()}
    if line is not None:
        body["calls"] = {**vars(line.runtime.stats), "outcomes": dict(line.runtime.stats.outcomes)}
        if line.sip is not None:
            body["sip"] = {**line.sip.stats.as_dict(), "active_calls": len(line.sip.calls)}
        if line.audiosocket is not None:
            body["audiosocket"] = {**vars(line.audiosocket.stats), "active_calls": line.audiosocket.active_calls}
    return web.json_response(body)


def register(app: web.Application) -> None:
    """The handoff lookup and the line's figures always; the transports only where a port is configured."""
    app.router.add_get("/ivr/handoffs/{handoff_id}", get_handoff)
    app.router.add_get("/ivr/stats", get_stats)
    app.router.add_post("/ivr/audiosocket/calls", post_audiosocket_call)
    app.router.add_post("/ivr/outbound-calls", post_outbound_call)
    app.router.add_get("/ivr/audiosocket/calls/{call_uuid}", get_audiosocket_call)
    settings = app[SETTINGS]
    if settings.sip_port or settings.audiosocket_port:
        app.cleanup_ctx.append(_phone_line)
