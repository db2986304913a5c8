"""Several Rasa servers on one tracker store: each conversation prefers one, a message moves on when its
server is down, and a message that may have run already is read back from the tracker instead of run twice."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from channels.rasa_client import BotMessage, RasaClient, RasaUnavailable, replies_after_message
from tests.channels.support import RASA_TOKEN, FakeRasa, login

META = {"customer_id": "C001", "channel": "webchat"}


@pytest.fixture
async def two_rasas() -> AsyncIterator[tuple[FakeRasa, FakeRasa, list[TestServer]]]:
    shared: dict[str, list[dict[str, Any]]] = {}
    fakes = (FakeRasa(trackers=shared), FakeRasa(trackers=shared))
    servers = []
    for fake in fakes:
        server = TestServer(fake.app(), host="127.0.0.1")
        await server.start_server()
        fake.url = str(server.make_url("")).rstrip("/")
        servers.append(server)
    yield fakes[0], fakes[1], servers
    for server in servers:
        await server.close()


def _preferring(client: RasaClient, url: str) -> str:
    """A conversation id whose preferred server is `url`."""
    for number in range(1000):
        sender = f"webchat:C{number:03d}"
        if str(client.servers_for(sender)[0]) == url:
            return sender
    raise AssertionError("no conversation prefers that server")


async def test_conversations_spread_over_the_servers_and_stay_on_theirs(two_rasas: Any) -> None:
    first, second, _servers = two_rasas
    async with aiohttp.ClientSession() as http:
        client = RasaClient(http, [first.url, second.url], RASA_TOKEN)
        for number in range(40):
            for _ in range(2):
                await client.send_message(f"webchat:C{number:03d}", "你好", META)
    assert 10 <= len(first.received) <= 70 and len(first.received) + len(second.received) == 80
    # Each conversation's two turns went to one server.
    for fake in (first, second):
        senders = [body["sender"] for body in fake.received]
        assert all(senders.count(sender) == 2 for sender in senders)


async def test_a_message_moves_to_the_next_server_when_its_server_is_down(two_rasas: Any) -> None:
    first, second, servers = two_rasas
    async with aiohttp.ClientSession() as http:
        client = RasaClient(http, [first.url, second.url], RASA_TOKEN)
        sender = _preferring(client, first.url)
        await servers[0].close()  # connection refused: certainly not sent there
        replies = await client.send_message(sender, "查余额", META)  # no message id needed
        assert replies == [BotMessage(text="收到：查余额")]
        assert [body["sender"] for body in second.received] == [sender]
        # The dead server is tried last for a while.
        assert str(client.servers_for(sender)[0]) == second.url


@pytest.mark.parametrize("failure", ["dropped", "http_500"])
async def test_a_message_that_ran_before_its_server_failed_is_read_back_not_run_again(
    two_rasas: Any, failure: str
) -> None:
    first, second, _servers = two_rasas
    if failure == "dropped":
        first.drop_after_turn = True
    else:
        first.fail_after_turn_with = 500
    async with aiohttp.ClientSession() as http:
        client = RasaClient(http, [first.url, second.url], RASA_TOKEN)
        sender = _preferring(client, first.url)
        replies = await client.send_message(sender, "查余额", {**META, "message_id": "m-1"})
        assert replies == [BotMessage(text="收到：查余额")]
        assert second.received == []  # looked up, not sent
        assert [event["event"] for event in first.trackers[sender]] == ["user", "bot"]
        # Without an id nobody can tell whether it ran: the caller is told, nothing is resent.
        with pytest.raises(RasaUnavailable):
            await RasaClient(http, [first.url, second.url], RASA_TOKEN).send_message(sender, "查余额", META)
        assert second.received == []


async def test_an_empty_answer_for_a_turn_the_tracker_lacks_goes_to_the_next_server(two_rasas: Any) -> None:
    first, second, _servers = two_rasas
    first.record_turns = False
    first.responder = lambda body: []
    async with aiohttp.ClientSession() as http:
        client = RasaClient(http, [first.url, second.url], RASA_TOKEN)
        sender = _preferring(client, first.url)
        replies = await client.send_message(sender, "挂失", {**META, "message_id": "m-2"})
    assert replies == [BotMessage(text="收到：挂失")]
    assert len(second.received) == 1


async def test_a_resent_message_with_the_same_id_is_answered_once_through_the_gateway(
    start_gateway: Callable[..., Any], two_rasas: Any
) -> None:
    first, second, _servers = two_rasas
    gateway: TestClient[web.Request, web.Application] = await start_gateway(
        first.url, BANKBOT_RASA_URLS=f"{first.url},{second.url}"
    )
    headers = await login(gateway)
    answers = []
    for _ in range(3):
        response = await gateway.post(
            "/webchat/messages", json={"text": "我要转账", "message_id": "page-msg-1"}, headers=headers
        )
        assert response.status == 200
        answers.append((await response.json())["messages"])
    assert answers[0] == answers[1] == answers[2] and answers[0][0]["text"] == "收到：我要转账"
    assert len(first.received) + len(second.received) == 1
    # A new id is a new message.
    response = await gateway.post(
        "/webchat/messages", json={"text": "我要转账", "message_id": "page-msg-2"}, headers=headers
    )
    assert response.status == 200
    assert len(first.received) + len(second.received) == 2
    bad = await gateway.post("/webchat/messages", json={"text": "x", "message_id": "含中文"}, headers=headers)
    assert bad.status == 400


def test_replies_after_message_reads_the_bot_events_up_to_the_next_user_event() -> None:
    events = [
        {"event": "user", "text": "a", "metadata": {"message_id": "m1"}},
        {"event": "action", "name": "utter_x"},
        {"event": "bot", "text": "one", "data": {"buttons": [{"title": "是", "payload": "/affirm"}]}},
        {"event": "bot", "text": "two", "data": None},
        {"event": "user", "text": "b", "metadata": {"message_id": "m2"}},
        {"event": "bot", "text": "three"},
    ]
    assert [reply.text for reply in replies_after_message(events, "m1") or []] == ["one", "two"]
    assert (replies_after_message(events, "m1") or [])[0].buttons[0].payload == "/affirm"
    assert [reply.text for reply in replies_after_message(events, "m2") or []] == ["three"]
    assert replies_after_message(events, "m3") is None
    assert replies_after_message([{"event": "user", "metadata": {"message_id": "m4"}}], "m4") == []
