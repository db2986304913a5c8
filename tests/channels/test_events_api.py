"""POST /events over real HTTP on loopback, and the contact events the gateway records from chat turns."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bankcore.database import unit_of_work
from bankcore.models import ContactRecord, CrossChannelEvent, CustomerProfile
from channels.resources import TURNS
from tests.channels.support import FakeRasa, login

Client = TestClient[web.Request, web.Application]
TOKEN = "events-service-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def events_gateway(start_gateway: Callable[..., Any], fake_rasa: FakeRasa) -> Client:
    client: Client = await start_gateway(fake_rasa.url, BANKBOT_EVENTS_TOKEN=TOKEN, BANKBOT_EVENTS_MAX_BATCH="1000")
    return client


def an_event(n: int = 0, **changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "customer_id": f"C{n % 7:03d}",
        "ts": (datetime(2026, 11, 20, 2, tzinfo=UTC) - timedelta(minutes=n)).isoformat(),
        "channel": "app",
        "type": "page_view",
        "attrs": {"page": "credit_card_bill"},
    }
    record.update(changes)
    return record


def counts(factory: sessionmaker[Session]) -> tuple[int, int, int]:
    with unit_of_work(factory) as session:
        return (
            int(session.scalar(select(func.count()).select_from(CrossChannelEvent)) or 0),
            int(session.scalar(select(func.count()).select_from(CustomerProfile)) or 0),
            int(session.scalar(select(func.count()).select_from(ContactRecord)) or 0),
        )


async def post(client: Client, body: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    response = await client.post("/events", json=body, headers=AUTH if headers is None else headers)
    return response.status, await response.json()


# --- authentication ------------------------------------------------------------------------------------------


async def test_missing_or_wrong_service_token_is_401_and_stores_nothing(
    events_gateway: Client, session_factory: sessionmaker[Session]
) -> None:
    body = {"events": [an_event()]}
    for headers in [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TOKEN},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer "},
    ]:
        status, reply = await post(events_gateway, body, headers)
        assert status == 401, headers
        assert reply["error"]["code"] == "unauthorized"
    assert counts(session_factory) == (0, 0, 0)


async def test_without_a_configured_token_the_endpoint_refuses_everything(
    start_gateway: Callable[..., Any], fake_rasa: FakeRasa, session_factory: sessionmaker[Session]
) -> None:
    client: Client = await start_gateway(fake_rasa.url, BANKBOT_EVENTS_TOKEN="")
    for headers in [{}, {"Authorization": "Bearer "}, AUTH]:
        status, reply = await post(client, {"events": [an_event()]}, headers)
        assert status == 503
        assert reply["error"]["code"] == "events_disabled"
    assert counts(session_factory) == (0, 0, 0)


# --- storing -------------------------------------------------------------------------------------------------


async def test_a_valid_batch_is_stored_and_repeated_event_ids_are_duplicates(
    events_gateway: Client, session_factory: sessionmaker[Session]
) -> None:
    body = {
        "events": [an_event(1, event_id="evt-1"), an_event(2, event_id="evt-2"), an_event(3)],
        "profiles": [{"customer_id": "C001", "attrs": {"age_band": "30-39"}}],
        "contacts": [
            {"customer_id": "C001", "ts": "2026-11-20T03:00:00Z", "channel": "ivr", "intent": "check_balance"},
            {"customer_id": "C002", "ts": "2026-11-20T03:00:00Z", "channel": "wecom"},
        ],
    }
    status, reply = await post(events_gateway, body)
    assert status == 200, reply
    assert reply == {"events": {"inserted": 3, "duplicates": 0}, "profiles": 1, "contacts": 2}
    status, reply = await post(events_gateway, {"events": [an_event(1, event_id="evt-1"), an_event(4)]})
    assert status == 200
    assert reply == {"events": {"inserted": 1, "duplicates": 1}, "profiles": 0, "contacts": 0}
    assert counts(session_factory) == (4, 1, 2)


async def test_a_full_batch_larger_than_the_chat_body_limit_is_accepted(
    events_gateway: Client, session_factory: sessionmaker[Session]
) -> None:
    body = {"events": [an_event(n, event_id=f"big-{n}") for n in range(1000)]}
    assert len(json.dumps(body)) > 64 * 1024
    status, reply = await post(events_gateway, body)
    assert status == 200, reply
    assert reply["events"] == {"inserted": 1000, "duplicates": 0}
    assert counts(session_factory)[0] == 1000


async def test_one_invalid_record_is_422_naming_list_index_and_field_and_nothing_is_stored(
    events_gateway: Client, session_factory: sessionmaker[Session]
) -> None:
    body = {
        "events": [an_event(0), an_event(1), an_event(2), an_event(3, ts="not a time"), an_event(4, channel="fax")],
        "profiles": [{"customer_id": "C001", "attrs": {"a": {"b": {"c": {"d": 1}}}}}],
        "contacts": [{"customer_id": "C001", "ts": "2026-11-20T03:00:00Z", "channel": "ivr"}],
    }
    status, reply = await post(events_gateway, body)
    assert status == 422
    assert reply["error"]["code"] == "invalid_records"
    assert [(e["list"], e["index"], e["field"]) for e in reply["errors"]] == [
        ("events", 3, "ts"),
        ("events", 4, "channel"),
        ("profiles", 0, "attrs"),
    ]
    assert all(e["reason"] for e in reply["errors"])
    assert counts(session_factory) == (0, 0, 0)


async def test_at_most_a_hundred_errors_are_listed(events_gateway: Client) -> None:
    status, reply = await post(events_gateway, {"events": [an_event(n, channel="fax") for n in range(300)]})
    assert status == 422
    assert len(reply["errors"]) == 100


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"[1, 2]", "invalid_body"),
        (b'{"events": {"a": 1}}', "invalid_body"),
        (b'{"event": []}', "invalid_body"),
        (b'{"events": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", "invalid_json"),
    ],
)
async def test_malformed_bodies_are_refused(
    events_gateway: Client, session_factory: sessionmaker[Session], raw: bytes, code: str
) -> None:
    response = await events_gateway.post("/events", data=raw, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status in {400, 413}
    assert (await response.json())["error"]["code"] == code
    assert counts(session_factory) == (0, 0, 0)


async def test_an_oversize_body_is_413(start_gateway: Callable[..., Any], fake_rasa: FakeRasa) -> None:
    client: Client = await start_gateway(fake_rasa.url, BANKBOT_EVENTS_TOKEN=TOKEN, BANKBOT_EVENTS_MAX_BATCH="10")
    padding = "x" * 4000
    body = {"events": [an_event(n, attrs={"note": padding}) for n in range(10)]}
    assert len(json.dumps(body)) > 2048 * 10
    status, reply = await post(client, {**body, "profiles": [{"customer_id": "C1", "attrs": {"p": "y" * 30_000}}]})
    assert status == 413
    assert reply["error"]["code"] == "body_too_large"
    # Streamed without a Content-Length: the limit holds while reading too.

    async def chunks() -> Any:
        yield b'{"events": ['
        for _ in range(100):
            yield json.dumps(an_event(attrs={"note": padding})).encode() + b","
        yield b"{}]}"

    response = await client.post("/events", data=chunks(), headers={**AUTH, "Content-Type": "application/json"})
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "body_too_large"


async def test_more_records_than_the_batch_limit_is_413(start_gateway: Callable[..., Any], fake_rasa: FakeRasa) -> None:
    client: Client = await start_gateway(fake_rasa.url, BANKBOT_EVENTS_TOKEN=TOKEN, BANKBOT_EVENTS_MAX_BATCH="5")
    status, reply = await post(client, {"events": [an_event(n) for n in range(6)]})
    assert status == 413
    assert reply["error"]["code"] == "batch_too_large"


async def test_concurrent_posts_with_overlapping_event_ids_lose_nothing_and_store_nothing_twice(
    events_gateway: Client, session_factory: sessionmaker[Session]
) -> None:
    posts, per_post, distinct = 20, 50, 300
    bodies = [
        {"events": [an_event(i, event_id=f"ov-{(p * 37 + i) % distinct}") for i in range(per_post)]}
        for p in range(posts)
    ]
    expected = {e["event_id"] for body in bodies for e in body["events"]}
    results = await asyncio.gather(*(post(events_gateway, body) for body in bodies))
    assert [status for status, _ in results] == [200] * posts
    assert sum(reply["events"]["inserted"] for _, reply in results) == len(expected)
    assert sum(reply["events"]["duplicates"] for _, reply in results) == posts * per_post - len(expected)
    assert counts(session_factory)[0] == len(expected)


# --- contact events from chat turns --------------------------------------------------------------------------


async def settle(client: Client) -> None:
    await asyncio.gather(*client.app[TURNS].background)


def contact_events(factory: sessionmaker[Session]) -> list[tuple[str, str, str, dict[str, Any]]]:
    with unit_of_work(factory) as session:
        rows = session.scalars(
            select(CrossChannelEvent).where(CrossChannelEvent.type == "contact").order_by(CrossChannelEvent.id)
        )
        return [(row.customer_id, row.channel, row.type, row.attrs) for row in rows]


async def test_the_first_turn_and_the_first_after_30_idle_minutes_record_a_contact(
    events_gateway: Client, session_factory: sessionmaker[Session]
) -> None:
    clock = [datetime(2026, 11, 20, 2, tzinfo=UTC)]
    turns = events_gateway.app[TURNS]
    turns.clock = lambda: clock[0]
    headers = await login(events_gateway)
    for minutes in [0, 5, 20, 45]:  # 45 is 25 minutes after the turn at 20: the same contact
        clock[0] = datetime(2026, 11, 20, 2, tzinfo=UTC) + timedelta(minutes=minutes)
        response = await events_gateway.post("/webchat/messages", json={"text": "你好"}, headers=headers)
        assert response.status == 200
        await settle(events_gateway)
    assert contact_events(session_factory) == [("C001", "app", "contact", {"gateway_channel": "webchat"})]

    clock[0] += timedelta(minutes=31)
    response = await events_gateway.post("/webchat/messages", json={"text": "查余额"}, headers=headers)
    assert response.status == 200
    await settle(events_gateway)
    assert len(contact_events(session_factory)) == 2


async def test_another_gateway_process_sees_the_contact_in_the_database(
    start_gateway: Callable[..., Any], fake_rasa: FakeRasa, session_factory: sessionmaker[Session]
) -> None:
    first: Client = await start_gateway(fake_rasa.url)
    second: Client = await start_gateway(fake_rasa.url)
    headers = await login(first)
    for client in (first, second):
        response = await client.post("/webchat/messages", json={"text": "你好"}, headers=headers)
        assert response.status == 200
        await settle(client)
    assert len(contact_events(session_factory)) == 1


async def test_a_failing_contact_write_never_breaks_the_turn(
    events_gateway: Client, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> Session:
        raise RuntimeError("database down")

    headers = await login(events_gateway)
    events_gateway.app[TURNS].session_factory = broken
    with caplog.at_level(logging.WARNING, logger="channels.turns"):
        response = await events_gateway.post("/webchat/messages", json={"text": "你好"}, headers=headers)
        await settle(events_gateway)
    assert response.status == 200
    assert (await response.json())["messages"][0]["text"] == "收到：你好"
    assert "could not store the contact event" in caplog.text
