"""The inbox writer's group commit: concurrent callbacks share transactions, retries are duplicates, nothing is lost."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bankcore.database import unit_of_work
from bankcore.models import ChannelInboxMessage
from bankcore.sealing import Sealer
from channels.inbox_writer import Admit, InboxEntry, InboxWriter, admit_all
from tests.channels.support import SECRET_KEY


def _entry(msg_id: str, user: str = "u1") -> InboxEntry:
    return InboxEntry(platform_msg_id=msg_id, external_user=user, kind="text", body={"content": msg_id})


def _writer(factory: sessionmaker[Session], *, admit: Admit = admit_all, max_batch: int = 256) -> InboxWriter:
    clock = lambda: dt.datetime.now(dt.UTC)  # noqa: E731
    return InboxWriter(factory, Sealer(SECRET_KEY), channel="wecom", clock=clock, admit=admit, max_batch=max_batch)


async def test_concurrent_messages_are_written_in_shared_transactions_and_retries_counted_once(
    session_factory: sessionmaker[Session],
) -> None:
    writer = _writer(session_factory)
    try:
        entries = [_entry(f"m{i}") for i in range(60)] + [_entry("m7"), _entry("m7"), _entry("m42")]
        results = await asyncio.gather(*(writer.receive(entry) for entry in entries))
    finally:
        writer.close()
    assert [r.duplicate for r in results] == [False] * 60 + [True, True, True]
    assert results[60].inbox_id == results[61].inbox_id == results[7].inbox_id
    assert writer.written == 63 and writer.batches < 63  # grouped: fewer commits than messages
    with unit_of_work(session_factory) as session:
        rows = session.scalars(select(ChannelInboxMessage)).all()
    assert len(rows) == 60
    assert {row.platform_msg_id: row.duplicates for row in rows if row.duplicates} == {"m7": 2, "m42": 1}


async def test_admission_sees_new_messages_only_and_may_replace_them(session_factory: sessionmaker[Session]) -> None:
    admitted: list[str] = []

    def admit(entry: InboxEntry) -> InboxEntry:
        admitted.append(entry.platform_msg_id)
        if len(admitted) > 2:
            return entry.replaced(kind="rate_limited", body={"msg_type": "rate_limited"})
        return entry

    writer = _writer(session_factory, admit=admit)
    try:
        for msg_id in ["a", "a", "b", "a", "c", "b"]:
            await writer.receive(_entry(msg_id))
    finally:
        writer.close()
    assert admitted == ["a", "b", "c"]
    with unit_of_work(session_factory) as session:
        kinds = dict(session.execute(select(ChannelInboxMessage.platform_msg_id, ChannelInboxMessage.kind)).all())
    assert kinds == {"a": "text", "b": "text", "c": "rate_limited"}


async def test_a_failed_write_fails_every_waiter_of_its_batch_and_the_writer_goes_on(
    session_factory: sessionmaker[Session],
) -> None:
    calls = 0

    def admit(entry: InboxEntry) -> InboxEntry:
        nonlocal calls
        calls += 1
        if entry.platform_msg_id == "poison":
            raise RuntimeError("database gone")
        return entry

    writer = _writer(session_factory, admit=admit)
    try:
        outcomes = await asyncio.gather(
            writer.receive(_entry("x1")), writer.receive(_entry("poison")), return_exceptions=True
        )
        assert all(isinstance(outcome, RuntimeError) for outcome in outcomes)  # one transaction: all or nothing
        again = await writer.receive(_entry("x1"))
    finally:
        writer.close()
    assert again.duplicate is False  # the failed batch wrote nothing, so the platform's retry is new
    with unit_of_work(session_factory) as session:
        assert session.scalars(select(ChannelInboxMessage.platform_msg_id)).all() == ["x1"]


@pytest.mark.parametrize("max_batch", [1, 4])
async def test_batches_never_exceed_their_limit(session_factory: sessionmaker[Session], max_batch: int) -> None:
    writer = _writer(session_factory, max_batch=max_batch)
    try:
        await asyncio.gather(*(writer.receive(_entry(f"n{i}")) for i in range(12)))
    finally:
        writer.close()
    assert writer.written == 12 and writer.batches >= 12 / max_batch
