"""Stores acknowledged platform messages in the durable inbox, many per transaction (group commit).

A callback may be acknowledged only once its message is committed, so under load the commit is what an
acknowledgement waits for. One writer thread per channel takes every message that arrived while the previous
transaction ran and stores them all in the next one: one commit for the lot, no added delay when idle, and the
gateway's shared thread pool (busy with the turns' database work) is not in the acknowledgement's path.

A retry of a stored message is only counted as a duplicate. A new message first passes `admit`, run on the
writer thread (so per-user rate state needs no lock), which may store something else in its place (a
rate-limited marker).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from bankcore import channel_messages
from bankcore.database import unit_of_work
from bankcore.sealing import Sealer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InboxEntry:
    platform_msg_id: str
    external_user: str
    kind: str
    body: dict[str, Any]

    def replaced(self, *, kind: str, body: dict[str, Any]) -> InboxEntry:
        return replace(self, kind=kind, body=body)


Admit = Callable[[InboxEntry], InboxEntry]


def admit_all(entry: InboxEntry) -> InboxEntry:
    return entry


class InboxWriter:
    def __init__(
        self,
        factory: sessionmaker[Session],
        sealer: Sealer,
        *,
        channel: str,
        clock: Callable[[], dt.datetime],
        admit: Admit = admit_all,
        max_batch: int = 256,
    ) -> None:
        self.factory = factory
        self.sealer = sealer
        self.channel = channel
        self.clock = clock
        self.admit = admit
        self.max_batch = max_batch
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"{channel}-inbox-writer")
        self._pending: list[tuple[InboxEntry, asyncio.Future[channel_messages.Received]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batches = 0
        self.written = 0

    async def receive(self, entry: InboxEntry) -> channel_messages.Received:
        """Store `entry` (or count it as a duplicate); returns once it is committed."""
        future: asyncio.Future[channel_messages.Received] = asyncio.get_running_loop().create_future()
        self._pending.append((entry, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name=f"{self.channel}-inbox-flush")
        # Shielded: a client that hangs up must not cancel the write of the others in its batch.
        return await asyncio.shield(future)

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            entries = [entry for entry, _ in batch]
            try:
                results = await loop.run_in_executor(self._executor, self._write, entries)
            except Exception as error:  # every waiter answers 5xx; the platform retries, nothing is lost
                logger.exception("%s inbox: writing %d messages failed", self.channel, len(entries))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            self.batches += 1
            self.written += len(entries)
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    def _write(self, entries: list[InboxEntry]) -> list[channel_messages.Received]:
        now = self.clock()
        with unit_of_work(self.factory) as session:
            return [self._write_one(session, entry, now) for entry in entries]

    def _write_one(self, session: Session, entry: InboxEntry, now: dt.datetime) -> channel_messages.Received:
        if not channel_messages.already_received(session, channel=self.channel, platform_msg_id=entry.platform_msg_id):
            entry = self.admit(entry)
        return channel_messages.receive(
            session,
            self.sealer,
            channel=self.channel,
            platform_msg_id=entry.platform_msg_id,
            external_user=entry.external_user,
            kind=entry.kind,
            body=entry.body,
            now=now,
        )

    def close(self) -> None:
        self._executor.shutdown(wait=True)
