"""A SIP peer that tests script message by message, and the requests it sends."""

from __future__ import annotations

import asyncio
import re

from channels.ivr.sip_message import SipMessage, build_response, parse_message

OFFER = (
    "v=0\r\no=peer 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na={direction}\r\n"
)


class Peer(asyncio.DatagramProtocol):
    """A SIP peer the test scripts message by message."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[SipMessage] = asyncio.Queue()
        self.raw: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.raw.put_nowait(data)
        self.inbox.put_nowait(parse_message(data))

    def send(self, text: str | bytes, port: int) -> None:
        assert self.transport is not None
        data = text.encode() if isinstance(text, str) else text
        self.transport.sendto(data, ("127.0.0.1", port))

    async def expect(self, *, status: int | None = None, method: str | None = None, timeout: float = 3.0) -> SipMessage:
        """The next message matching (skipping retransmissions of others)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            message = await asyncio.wait_for(self.inbox.get(), timeout=max(0.01, deadline - loop.time()))
            if status is not None and message.status == status:
                return message
            if method is not None and message.method == method:
                return message

    async def nothing(self, seconds: float) -> list[SipMessage]:
        await asyncio.sleep(seconds)
        out = []
        while not self.inbox.empty():
            out.append(self.inbox.get_nowait())
        return out


def request(
    method: str,
    peer: Peer,
    agent_port: int,
    *,
    call_id: str = "call-1",
    cseq: int = 1,
    branch: str = "z9hG4bK-1",
    to_tag: str | None = None,
    body: str = "",
    content_type: str | None = None,
    extra: str = "",
) -> str:
    to = f"<sip:95588@127.0.0.1:{agent_port}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} sip:95588@127.0.0.1:{agent_port} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{peer.port};branch={branch};rport",
        "Max-Forwards: 70",
        'From: "Caller" <sip:13801012345@127.0.0.1>;tag=peer-tag',
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method if method != 'CANCEL' else 'CANCEL'}",
        f"Contact: <sip:13801012345@127.0.0.1:{peer.port}>",
        "Supported: ",
    ]
    if extra:
        lines.append(extra)
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body.encode())}")
    return "\r\n".join(lines) + "\r\n\r\n" + body


def ack(peer: Peer, agent_port: int, to_tag: str, *, cseq: int = 1, branch: str = "z9hG4bK-ack") -> str:
    return request("ACK", peer, agent_port, cseq=cseq, branch=branch, to_tag=to_tag)


async def answer_invite(
    peer: Peer, final: int, *, media_port: int = 40002, timeout: float = 5.0
) -> tuple[SipMessage, SipMessage]:
    """Answer the agent's INVITE as a phone would: 100, 180, then `final`; returns the INVITE and the ACK."""
    invite = await peer.expect(method="INVITE", timeout=timeout)
    via = re.search(r":(\d+);branch", invite.header("Via") or "")
    assert via is not None, invite.header("Via")
    agent_port = int(via.group(1))
    peer.send(build_response(invite, 100).encode(), agent_port)
    peer.send(build_response(invite, 180, to_tag="callee").encode(), agent_port)
    if final == 200:
        ok = build_response(
            invite,
            200,
            to_tag="callee",
            headers=[("Contact", f"<sip:callee@127.0.0.1:{peer.port}>")],
            body=OFFER.format(port=media_port, direction="sendrecv").encode(),
            content_type="application/sdp",
        )
        peer.send(ok.encode(), agent_port)
    else:
        peer.send(build_response(invite, final, to_tag="callee").encode(), agent_port)
    return invite, await peer.expect(method="ACK")
