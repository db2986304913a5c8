"""The phone line inside the gateway process: the SIP agent and the AudioSocket server, started with the app.

Both transports share one `IvrRuntime` (turn pipeline, recogniser, voice). The agent-desktop side of a transfer
reads the handoff a call carried (`X-Bankbot-Handoff`) from `GET /ivr/handoffs/{id}` with the service token.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from bankcore import customer_care
from bankcore.database import unit_of_work
from bankcore.settings import Settings
from channels.http_errors import json_error
from channels.ivr.audiosocket import AudioSocketServer
from channels.ivr.call_flow import IvrRuntime
from channels.ivr.sip_agent import SipAgent, SipSettings
from channels.resources import SESSION_FACTORY, SETTINGS, TURNS
from voice.asr import AsrEngine, AsrModel
from voice.tts import CachedSynthesizer, EspeakPinyinSynthesizer

logger = logging.getLogger(__name__)


@dataclass
class PhoneLine:
    runtime: IvrRuntime
    sip: SipAgent | None = None
    audiosocket: AudioSocketServer | None = None

    async def close(self) -> None:
        if self.sip is not None:
            await self.sip.close()
        if self.audiosocket is not None:
            await self.audiosocket.close()
        if self.runtime.asr is not None:
            await self.runtime.asr.aclose()


PHONE_LINE = web.AppKey("phone_line", PhoneLine)


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
        asr = AsrEngine(model, workers=settings.asr_workers, max_streams=settings.asr_max_streams)
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
                runtime.handler_for, host=settings.audiosocket_host, port=settings.audiosocket_port
            )
            await line.audiosocket.start()
    except BaseException:
        await line.close()
        raise
    app[PHONE_LINE] = line
    yield
    await line.close()


async def get_handoff(request: web.Request) -> web.Response:
    """What the agent taking a transferred call reads first: the reason and the conversation summary."""
    settings = request.app[SETTINGS]
    presented = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not settings.events_token or not hmac.compare_digest(presented.encode(), settings.events_token.encode()):
        return json_error(401, "unauthorized", "missing or wrong service token", headers={"WWW-Authenticate": "Bearer"})
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


def register(app: web.Application) -> None:
    """The handoff lookup always; the transports only where a port is configured."""
    app.router.add_get("/ivr/handoffs/{handoff_id}", get_handoff)
    settings = app[SETTINGS]
    if settings.sip_port or settings.audiosocket_port:
        app.cleanup_ctx.append(_phone_line)
