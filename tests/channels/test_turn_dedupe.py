"""TurnDedupe: concurrent resends of one message run it once; a dead owner's message is checked, not rerun."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy.orm import Session, sessionmaker

from bankcore import turn_claims
from channels.rasa_client import BotMessage, RasaTimedOut
from channels.turn_dedupe import TurnDedupe


async def test_concurrent_resends_wait_for_the_first_and_then_only_read_back(
    session_factory: sessionmaker[Session],
) -> None:
    calls: list[bool] = []

    async def send(seen_before: bool) -> list[BotMessage]:
        calls.append(seen_before)
        await asyncio.sleep(0.5 if not seen_before else 0)
        return [BotMessage(text="ok")]

    gateways = [TurnDedupe(session_factory, owner=f"gw-{n}") for n in range(3)]
    results = await asyncio.gather(*(gateway.run("webchat:C001", "m1", send) for gateway in gateways))
    assert all(result == [BotMessage(text="ok")] for result in results)
    # One real send; the others came after it finished and were told to look in the tracker.
    assert calls.count(False) == 1 and calls.count(True) == 2


async def test_a_message_whose_owner_died_is_taken_over_after_the_lease(session_factory: sessionmaker[Session]) -> None:
    stale = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    with session_factory() as session:
        turn_claims.claim(session, "webchat:C001|m1", "dead-gateway", stale, dt.timedelta(seconds=10))
        session.commit()
    seen: list[bool] = []

    async def send(seen_before: bool) -> list[BotMessage]:
        seen.append(seen_before)
        return []

    await TurnDedupe(session_factory, owner="gw-2").run("webchat:C001", "m1", send)
    assert seen == [True]


async def test_a_timed_out_turn_keeps_its_claim_so_a_resend_waits(session_factory: sessionmaker[Session]) -> None:
    async def slow(seen_before: bool) -> list[BotMessage]:
        raise RasaTimedOut("slow")

    with pytest.raises(RasaTimedOut):
        await TurnDedupe(session_factory, owner="gw-1").run("webchat:C001", "m1", slow)
    with session_factory() as session:
        status = turn_claims.status(session, "webchat:C001|m1")
    assert status is not None and status[1] is None
    assert status[0] > dt.datetime.now(dt.UTC) + dt.timedelta(seconds=20)
