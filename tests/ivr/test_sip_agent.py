"""The SIP user agent against a scripted peer on loopback: each request the RFC says it must handle, on the wire."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from channels.ivr import sip_agent
from channels.ivr.media import CallControl, CallInfo
from channels.ivr.rtp import parse_rtp
from channels.ivr.sip_agent import SipAgent, SipSettings
from channels.ivr.sip_message import build_response
from tests.ivr.scripted_peer import OFFER, Peer, ack, answer_invite, request


@dataclass
class RecordingHandler:
    info: CallInfo
    control: CallControl | None = None
    digits: list[str] = field(default_factory=list)
    audio_frames: int = 0
    hangups: list[str] = field(default_factory=list)
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_answer(self, control: CallControl) -> None:
        self.control = control
        self.answered.set()

    async def on_audio(self, pcm: bytes) -> None:
        self.audio_frames += 1

    async def on_dtmf(self, digit: str) -> None:
        self.digits.append(digit)

    async def on_hangup(self, reason: str) -> None:
        self.hangups.append(reason)
        self.ended.set()


class Agent:
    def __init__(self, agent: SipAgent, handlers: list[RecordingHandler]) -> None:
        self.agent = agent
        self.handlers = handlers

    @property
    def port(self) -> int:
        return self.agent.port


async def _agent(**settings: object) -> Agent:
    handlers: list[RecordingHandler] = []

    def factory(info: CallInfo) -> RecordingHandler:
        handler = RecordingHandler(info)
        handlers.append(handler)
        return handler

    agent = SipAgent(SipSettings(host="127.0.0.1", port=0, **settings), factory)  # type: ignore[arg-type]
    await agent.start()
    return Agent(agent, handlers)


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    running = await _agent(media_timeout_seconds=5.0)
    yield running
    await running.agent.close()


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    loop = asyncio.get_running_loop()
    protocol = Peer()
    transport, _ = await loop.create_datagram_endpoint(lambda: protocol, local_addr=("127.0.0.1", 0))
    protocol.transport = transport
    protocol.port = transport.get_extra_info("sockname")[1]
    yield protocol
    transport.close()


async def establish(agent: Agent, peer: Peer, *, call_id: str = "call-1", rtp_port: int = 40000) -> str:
    offer = OFFER.format(port=rtp_port, direction="sendrecv")
    peer.send(
        request("INVITE", peer, agent.port, call_id=call_id, body=offer, content_type="application/sdp"), agent.port
    )
    ok = await peer.expect(status=200)
    to_tag = re.search(r"tag=([^;>\s]+)", ok.header("To") or "")
    assert to_tag is not None
    peer.send(ack(peer, agent.port, to_tag.group(1)), agent.port)
    return to_tag.group(1)


async def test_options_is_answered_with_what_the_agent_allows(agent: Agent, peer: Peer) -> None:
    peer.send(request("OPTIONS", peer, agent.port), agent.port)
    ok = await peer.expect(status=200)
    allowed = {method.strip() for method in ok.header_values("Allow")}
    assert {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO"} <= allowed


async def test_invite_is_answered_with_trying_ringing_and_an_sdp_answer(agent: Agent, peer: Peer) -> None:
    offer = OFFER.format(port=40000, direction="sendrecv")
    peer.send(request("INVITE", peer, agent.port, body=offer, content_type="application/sdp"), agent.port)
    await peer.expect(status=100)
    ringing = await peer.expect(status=180)
    ok = await peer.expect(status=200)
    assert "tag=" in (ringing.header("To") or "")
    assert ok.header("To") == ringing.header("To")  # one dialog: the same tag
    body = ok.body.decode()
    assert "m=audio" in body and "RTP/AVP 0 101" in body and "a=sendrecv" in body
    assert ok.header("Contact") is not None
    await asyncio.wait_for(agent.handlers[0].answered.wait(), 2)
    assert agent.handlers[0].info.caller == "13801012345"


async def test_the_200_is_retransmitted_until_the_ack(agent: Agent, peer: Peer) -> None:
    offer = OFFER.format(port=40000, direction="sendrecv")
    peer.send(request("INVITE", peer, agent.port, body=offer, content_type="application/sdp"), agent.port)
    first = await peer.expect(status=200)
    again = await peer.expect(status=200, timeout=1.5)  # T1 = 500 ms
    assert again.encode() == first.encode()
    tag = re.search(r"tag=([^;>\s]+)", first.header("To") or "")
    assert tag is not None
    peer.send(ack(peer, agent.port, tag.group(1)), agent.port)
    later = await peer.nothing(1.6)
    assert not [m for m in later if m.status == 200]


async def test_info_dtmf_is_answered_200_and_delivered_once_despite_retransmission(agent: Agent, peer: Peer) -> None:
    tag = await establish(agent, peer)
    for n, digit in enumerate("12#", start=2):
        info = request(
            "INFO",
            peer,
            agent.port,
            cseq=n,
            branch=f"z9hG4bK-info{n}",
            to_tag=tag,
            body=f"Signal={digit}\r\nDuration=160\r\n",
            content_type="application/dtmf-relay",
        )
        peer.send(info, agent.port)
        await peer.expect(status=200)
        peer.send(info, agent.port)  # a retransmission: answered again, not delivered again
        await peer.expect(status=200)
    await asyncio.sleep(0.2)
    assert agent.handlers[0].digits == ["1", "2", "#"]


async def test_a_retransmission_is_absorbed_for_64_t1_and_then_forgotten(
    agent: Agent, peer: Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sip_agent, "_TRANSACTION_MEMORY_S", 0.3)
    options = request("OPTIONS", peer, agent.port, branch="z9hG4bK-remembered")
    peer.send(options, agent.port)
    await peer.expect(status=200)
    peer.send(options, agent.port)
    await peer.expect(status=200)
    assert agent.agent.stats.retransmissions_absorbed == 1
    await asyncio.sleep(0.4)
    # A new request makes the agent forget transactions older than 64*T1: the old one is a new request now.
    peer.send(request("OPTIONS", peer, agent.port, branch="z9hG4bK-later"), agent.port)
    await peer.expect(status=200)
    peer.send(options, agent.port)
    await peer.expect(status=200)
    assert agent.agent.stats.retransmissions_absorbed == 1


async def test_info_outside_any_call_is_still_answered_200(agent: Agent, peer: Peer) -> None:
    peer.send(
        request("INFO", peer, agent.port, call_id="nope", body="Signal=5\r\n", content_type="application/dtmf-relay"),
        agent.port,
    )
    await peer.expect(status=200)


async def test_bye_ends_the_call_and_the_call_flow_hears_of_it_once(agent: Agent, peer: Peer) -> None:
    tag = await establish(agent, peer)
    await asyncio.wait_for(agent.handlers[0].answered.wait(), 2)
    bye = request("BYE", peer, agent.port, cseq=2, branch="z9hG4bK-bye", to_tag=tag)
    peer.send(bye, agent.port)
    await peer.expect(status=200)
    peer.send(bye, agent.port)
    await peer.expect(status=200)  # the retransmitted BYE gets the same answer
    await asyncio.wait_for(agent.handlers[0].ended.wait(), 2)
    await asyncio.sleep(0.1)
    assert agent.handlers[0].hangups == ["caller"]
    assert not agent.agent.calls


async def test_cancel_before_answer_gets_200_and_the_invite_487() -> None:
    ringing_agent = await _agent(ring_seconds=3.0)
    loop = asyncio.get_running_loop()
    peer = Peer()
    transport, _ = await loop.create_datagram_endpoint(lambda: peer, local_addr=("127.0.0.1", 0))
    peer.transport = transport
    peer.port = transport.get_extra_info("sockname")[1]
    try:
        port = ringing_agent.port
        offer = OFFER.format(port=40000, direction="sendrecv")
        peer.send(request("INVITE", peer, port, body=offer, content_type="application/sdp"), port)
        await peer.expect(status=180)
        peer.send(request("CANCEL", peer, port, branch="z9hG4bK-1"), port)
        cancel_ok = await peer.expect(status=200)
        assert cancel_ok.cseq[1] == "CANCEL"
        terminated = await peer.expect(status=487)
        assert terminated.cseq[1] == "INVITE"
        tag = re.search(r"tag=([^;>\s]+)", terminated.header("To") or "")
        assert tag is not None
        peer.send(ack(peer, port, tag.group(1), branch="z9hG4bK-1"), port)
        late = await peer.nothing(3.5)
        assert not [m for m in late if m.status == 200], "a cancelled call must never be answered"
        assert not ringing_agent.handlers and not ringing_agent.agent.calls
    finally:
        transport.close()
        await ringing_agent.agent.close()


async def test_an_offer_without_a_common_codec_is_refused_with_488(agent: Agent, peer: Peer) -> None:
    offer = (
        OFFER.format(port=40000, direction="sendrecv")
        .replace("RTP/AVP 0 8 101", "RTP/AVP 9")
        .replace("a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n", "a=rtpmap:9 G722/8000\r\n")
    )
    peer.send(request("INVITE", peer, agent.port, body=offer, content_type="application/sdp"), agent.port)
    refused = await peer.expect(status=488)
    tag = re.search(r"tag=([^;>\s]+)", refused.header("To") or "")
    peer.send(ack(peer, agent.port, tag.group(1) if tag else "x", branch="z9hG4bK-1"), agent.port)
    assert not agent.handlers


async def test_reinvite_to_hold_is_answered_recvonly_and_back(agent: Agent, peer: Peer) -> None:
    tag = await establish(agent, peer)
    for cseq, (direction, answer) in enumerate((("sendonly", "recvonly"), ("sendrecv", "sendrecv")), start=2):
        offer = OFFER.format(port=40000, direction=direction)
        peer.send(
            request(
                "INVITE",
                peer,
                agent.port,
                cseq=cseq,
                branch=f"z9hG4bK-re{cseq}",
                to_tag=tag,
                body=offer,
                content_type="application/sdp",
            ),
            agent.port,
        )
        ok = await peer.expect(status=200)
        assert f"a={answer}" in ok.body.decode()
        peer.send(ack(peer, agent.port, tag, cseq=cseq, branch=f"z9hG4bK-reack{cseq}"), agent.port)
    assert agent.handlers[0].hangups == []


@pytest.mark.parametrize(
    ("data", "status"),
    [
        # CSeq method does not match the request's.
        (
            "INVITE sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-m\r\n"
            "From: <sip:b@h>;tag=1\r\nTo: <sip:a@h>\r\nCall-ID: m1\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
            400,
        ),
        # An oversize message (beyond one UDP datagram's worth of SIP).
        (
            "OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-o\r\n"
            "From: <sip:b@h>;tag=1\r\nTo: <sip:a@h>\r\nCall-ID: m2\r\nCSeq: 1 OPTIONS\r\n"
            "X-Padding: " + "x" * 64_000 + "\r\nContent-Length: 0\r\n\r\n",
            413,
        ),
        # Another SIP version.
        (
            "OPTIONS sip:a@127.0.0.1 SIP/3.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-v\r\n"
            "From: <sip:b@h>;tag=1\r\nTo: <sip:a@h>\r\nCall-ID: m3\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            505,
        ),
    ],
)
async def test_malformed_requests_get_an_error_response(agent: Agent, peer: Peer, data: str, status: int) -> None:
    peer.send(data.format(port=peer.port), agent.port)
    raw = await asyncio.wait_for(peer.raw.get(), 3)
    assert raw.startswith(f"SIP/2.0 {status}".encode())


async def test_garbage_is_dropped_and_the_agent_keeps_serving(agent: Agent, peer: Peer) -> None:
    for junk in (b"\x00\xff" * 50, b"HELLO\r\n\r\n", b"INVITE\r\n", b"SIP/2.0 200 OK\r\n\r\n", b"\r\n\r\n"):
        peer.send(junk, agent.port)
    peer.send(request("OPTIONS", peer, agent.port, branch="z9hG4bK-after"), agent.port)
    ok = await peer.expect(status=200)
    assert ok.cseq[1] == "OPTIONS"


async def test_unknown_and_refused_methods(agent: Agent, peer: Peer) -> None:
    peer.send(request("FOO", peer, agent.port, branch="z9hG4bK-foo"), agent.port)
    assert (await peer.expect(status=501)).header("Allow")
    peer.send(request("REGISTER", peer, agent.port, branch="z9hG4bK-reg"), agent.port)
    await peer.expect(status=405)


async def test_media_flows_to_the_peer_after_answer(agent: Agent, peer: Peer) -> None:
    loop = asyncio.get_running_loop()
    media: asyncio.Queue[bytes] = asyncio.Queue()

    class Media(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            media.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(Media, local_addr=("127.0.0.1", 0))
    try:
        rtp_port = transport.get_extra_info("sockname")[1]
        await establish(agent, peer, rtp_port=rtp_port)
        handler = agent.handlers[0]
        await asyncio.wait_for(handler.answered.wait(), 2)
        assert handler.control is not None
        handler.control.play(b"\x10\x00" * 1600)  # 200 ms
        packet = parse_rtp(await asyncio.wait_for(media.get(), 2))
        assert packet.payload_type == 0 and len(packet.payload) == 160
    finally:
        transport.close()


async def test_transfer_by_refer_carries_the_handoff_and_ends_our_leg(agent: Agent, peer: Peer) -> None:
    tag = await establish(agent, peer)
    handler = agent.handlers[0]
    await asyncio.wait_for(handler.answered.wait(), 2)
    assert handler.control is not None
    transfer = asyncio.create_task(handler.control.transfer("sip:agents@127.0.0.1:5099", {"X-Bankbot-Handoff": "42"}))
    refer = await peer.expect(method="REFER")
    assert refer.header("X-Bankbot-Handoff") == "42"
    assert "X-Bankbot-Handoff=42" in (refer.header("Refer-To") or "")
    assert f"tag={tag}" in (refer.header("From") or "")
    peer.send(build_response(refer, 202).encode(), agent.port)
    notify = request(
        "NOTIFY",
        peer,
        agent.port,
        cseq=2,
        branch="z9hG4bK-n1",
        to_tag=tag,
        body="SIP/2.0 200 OK\r\n",
        content_type="message/sipfrag;version=2.0",
        extra="Event: refer\r\nSubscription-State: terminated;reason=noresource",
    )
    peer.send(notify, agent.port)
    await peer.expect(status=200)
    bye = await peer.expect(method="BYE")
    peer.send(build_response(bye, 200).encode(), agent.port)
    assert await asyncio.wait_for(transfer, 5) is True


async def test_a_refused_refer_keeps_the_call(agent: Agent, peer: Peer) -> None:
    await establish(agent, peer)
    handler = agent.handlers[0]
    await asyncio.wait_for(handler.answered.wait(), 2)
    assert handler.control is not None
    transfer = asyncio.create_task(handler.control.transfer("sip:agents@127.0.0.1:5099", {}))
    refer = await peer.expect(method="REFER")
    peer.send(build_response(refer, 405).encode(), agent.port)
    assert await asyncio.wait_for(transfer, 5) is False
    assert agent.agent.calls


async def test_outbound_call_answered(peer: Peer) -> None:
    outbound = await _agent(outbound_proxy=("127.0.0.1", peer.port))
    try:
        result_task = asyncio.create_task(outbound.agent.place_call("13801012345", extras={"Reminder": "r-1"}))
        acked = (await answer_invite(peer, 200))[1]
        result = await asyncio.wait_for(result_task, 5)
        assert result.outcome == "answered" and result.call is not None
        assert acked.cseq == (result.call.dialog.local_cseq, "ACK")
        assert "tag=callee" in (acked.header("To") or "")
        await asyncio.wait_for(outbound.handlers[0].answered.wait(), 2)
        assert outbound.handlers[0].info.direction == "outbound"
        assert outbound.handlers[0].info.callee == "13801012345"
        await result.call.hangup()
        bye = await peer.expect(method="BYE")
        assert bye.header("Call-ID") == result.call.info.call_id
    finally:
        await outbound.agent.close()


async def test_outbound_call_busy_is_acknowledged_and_reported(peer: Peer) -> None:
    outbound = await _agent(outbound_proxy=("127.0.0.1", peer.port))
    try:
        result_task = asyncio.create_task(outbound.agent.place_call("13801012345"))
        acked = (await answer_invite(peer, 486))[1]
        result = await asyncio.wait_for(result_task, 5)
        assert result.outcome == "busy" and result.status == 486
        assert acked.cseq[1] == "ACK"
        assert not outbound.agent.calls and not outbound.handlers
    finally:
        await outbound.agent.close()


async def test_outbound_call_not_answered_is_cancelled(peer: Peer) -> None:
    outbound = await _agent(outbound_proxy=("127.0.0.1", peer.port), ring_timeout_seconds=1.0)
    try:
        result_task = asyncio.create_task(outbound.agent.place_call("13801012345"))
        invite = await peer.expect(method="INVITE")
        agent_port = outbound.port
        peer.send(build_response(invite, 180, to_tag="callee").encode(), agent_port)
        cancel = await peer.expect(method="CANCEL", timeout=3)
        assert cancel.cseq == (invite.cseq[0], "CANCEL")
        peer.send(build_response(cancel, 200).encode(), agent_port)
        peer.send(build_response(invite, 487, to_tag="callee").encode(), agent_port)
        await peer.expect(method="ACK")
        result = await asyncio.wait_for(result_task, 5)
        assert result.outcome == "no_answer"
    finally:
        await outbound.agent.close()


async def test_close_hangs_up_every_call_and_leaves_no_task(peer: Peer) -> None:
    running = await _agent()
    before = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    await establish(running, peer)
    await asyncio.wait_for(running.handlers[0].answered.wait(), 2)
    await running.agent.close()
    bye = await peer.expect(method="BYE")
    assert bye.method == "BYE"
    assert running.handlers[0].hangups == ["server_shutdown"]
    await asyncio.sleep(0.1)
    after = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    assert after <= before
