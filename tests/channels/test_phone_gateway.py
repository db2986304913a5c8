"""The phone line as the gateway runs it (a stand-in for Rasa): AudioSocket with the dialplan's directory, stats."""

from __future__ import annotations

import asyncio
import struct
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
from sqlalchemy.orm import Session, sessionmaker

from bankcore.database import unit_of_work
from bankcore.models import CrossChannelEvent
from bankcore.settings import Settings
from channels.ivr.line import PHONE_LINE
from channels.ivr.rtp import parse_rtp
from channels.rasa_client import BotMessage
from channels.resources import SETTINGS
from channels.scheduler.phone_deliverer import phone_deliverer
from tests.channels.support import FakeRasa
from tests.channels.test_reminder_deliverers import reminder
from tests.ivr.scripted_peer import Peer, answer_invite, request

TOKEN = "service-token-for-tests"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _phone_gateway(start_gateway: Callable[..., Any], fake_rasa: FakeRasa) -> Any:
    return await start_gateway(
        fake_rasa.url,
        BANKBOT_SIP_PORT=str(_free_port()),
        BANKBOT_AUDIOSOCKET_PORT=str(_free_port()),
        BANKBOT_EVENTS_TOKEN=TOKEN,
        BANKBOT_IVR_TRANSFER_URI="sip:agents@127.0.0.1:5099",
    )


def frame(kind: int, payload: bytes = b"") -> bytes:
    return struct.pack(">BH", kind, len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    kind, length = struct.unpack(">BH", await reader.readexactly(3))
    return kind, await reader.readexactly(length)


async def test_audiosocket_call_registered_by_the_dialplan_is_greeted_and_transferred(
    start_gateway: Callable[..., Any], fake_rasa: FakeRasa
) -> None:
    def handoff(body: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"text": "正在为您转接人工客服。", "custom": {"handoff": {"id": 77, "priority": "normal"}}}]

    fake_rasa.responder = handoff
    client = await _phone_gateway(start_gateway, fake_rasa)
    settings: Settings = client.app[SETTINGS]
    call_uuid = str(uuid.uuid4())
    auth = {"Authorization": f"Bearer {TOKEN}"}

    refused = await client.post("/ivr/audiosocket/calls", data={"uuid": call_uuid, "caller": "13000000000"})
    assert refused.status == 401
    registered = await client.post(
        "/ivr/audiosocket/calls", data={"uuid": call_uuid, "caller": "13000000000", "callee": "95588"}, headers=auth
    )
    assert registered.status == 201

    reader, writer = await asyncio.open_connection("127.0.0.1", settings.audiosocket_port)
    try:
        writer.write(frame(0x01, uuid.UUID(call_uuid).bytes))
        await writer.drain()
        greeting = b""
        while len(greeting) < 8000 * 2:  # a second of the guest welcome
            kind, payload = await asyncio.wait_for(read_frame(reader), 10)
            assert kind == 0x10 and len(payload) == 320
            greeting += payload
        # The caller keys a number (a guest's free answer) and the dialogue hands the call to a person.
        for digit in b"1#":
            writer.write(frame(0x03, bytes([digit])))
        writer.write(frame(0x10, b"\x00\x00" * 160))
        await writer.drain()
        kind = 0x10
        while kind == 0x10:
            kind, _ = await asyncio.wait_for(read_frame(reader), 30)
        assert kind == 0x00, "the call flow hangs up so that the dialplan can dial the agents"
    finally:
        writer.close()

    assert fake_rasa.texts_sent()[-1] == "1"
    assert fake_rasa.received[-1]["metadata"]["channel"] == "ivr"
    looked_up = await client.get(f"/ivr/audiosocket/calls/{call_uuid}", headers=auth)
    body = await looked_up.json()
    assert body == {
        "caller": "13000000000",
        "callee": "95588",
        "transfer": "sip:agents@127.0.0.1:5099",
        "handoff": "77",
    }


async def test_stats_and_sip_options_on_the_gateway(start_gateway: Callable[..., Any], fake_rasa: FakeRasa) -> None:
    client = await _phone_gateway(start_gateway, fake_rasa)
    settings: Settings = client.app[SETTINGS]
    loop = asyncio.get_running_loop()
    peer = Peer()
    transport, _ = await loop.create_datagram_endpoint(lambda: peer, local_addr=("127.0.0.1", 0))
    peer.transport = transport
    peer.port = transport.get_extra_info("sockname")[1]
    try:
        peer.send(request("OPTIONS", peer, settings.sip_port), settings.sip_port)
        await peer.expect(status=200)
    finally:
        transport.close()
    stats = await (await client.get("/ivr/stats")).json()
    assert stats["sip"]["requests_in"] == 1 and stats["sip"]["active_calls"] == 0
    assert stats["process"]["tasks"] > 0
    assert client.app[PHONE_LINE].audiosocket is not None


async def test_handoff_lookup_needs_the_service_token(start_gateway: Callable[..., Any], fake_rasa: FakeRasa) -> None:
    client = await _phone_gateway(start_gateway, fake_rasa)
    assert (await client.get("/ivr/handoffs/1")).status == 401
    missing = await client.get("/ivr/handoffs/999999", headers={"Authorization": f"Bearer {TOKEN}"})
    assert missing.status == 404


async def test_a_phone_reminder_is_a_call_placed_once_that_says_the_reminder(
    start_gateway: Callable[..., Any], fake_rasa: FakeRasa, session_factory: sessionmaker[Session]
) -> None:
    loop = asyncio.get_running_loop()
    peer = Peer()
    transport, _ = await loop.create_datagram_endpoint(lambda: peer, local_addr=("127.0.0.1", 0))
    peer.transport = transport
    peer.port = transport.get_extra_info("sockname")[1]
    media: asyncio.Queue[bytes] = asyncio.Queue()

    class Media(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
            media.put_nowait(data)

    media_transport, _ = await loop.create_datagram_endpoint(Media, local_addr=("127.0.0.1", 0))
    media_addr = media_transport.get_extra_info("sockname")
    client = await start_gateway(
        fake_rasa.url,
        BANKBOT_SIP_PORT=str(_free_port()),
        BANKBOT_SIP_OUTBOUND_PROXY=f"127.0.0.1:{peer.port}",
        BANKBOT_EVENTS_TOKEN=TOKEN,
    )
    gateway_url = str(client.make_url("")).rstrip("/")
    try:
        async with aiohttp.ClientSession() as http:
            deliver = phone_deliverer(http, gateway_url, TOKEN)
            replies = [BotMessage(text="王先生您好，您的信用卡账单将于12月5日到期，应还3280元。")]

            sent = asyncio.create_task(deliver(reminder(), replies, "C001:card:A1:2026-12-05:T-3"))
            invite, _ = await answer_invite(peer, 200, media_port=media_addr[1], timeout=10)
            result = await asyncio.wait_for(sent, 20)
            assert result.ok, result.detail
            assert invite.uri is not None and invite.uri.startswith("sip:13801012345@")
            assert invite.header("X-Bankbot-Reminder") == "C001:card:A1:2026-12-05:T-3"
            spoken = 0
            while spoken < 25:  # half a second of the reminder, said when the customer answered
                packet = parse_rtp(await asyncio.wait_for(media.get(), 10))
                spoken += any(byte not in (0xFF, 0x7F) for byte in packet.payload)

            with unit_of_work(session_factory) as session:
                reached = session.query(CrossChannelEvent).filter(CrossChannelEvent.type == "reminder_outcome").all()
            assert [(e.customer_id, e.channel, e.attrs["outcome"]) for e in reached] == [("C001", "ivr", "reached")]

            again = await deliver(reminder(), replies, "C001:card:A1:2026-12-05:T-3")
            assert again.ok
            assert not [m for m in await peer.nothing(0.5) if m.method == "INVITE"], "a retried request dials no one"

            busy = asyncio.create_task(deliver(reminder(key="C001:loan:L1"), replies, "C001:loan:L1"))
            await answer_invite(peer, 486, timeout=10)
            result = await asyncio.wait_for(busy, 20)
            assert not result.ok and result.retryable and "busy" in result.detail
    finally:
        transport.close()
        media_transport.close()
