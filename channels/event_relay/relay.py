"""The relay's consumer: Rasa events from RabbitMQ into the cross-channel event store, at least once, stored once.

Delivery: the queue is durable and Rasa publishes persistent messages; the relay takes up to `prefetch`
unacknowledged messages, stores a batch in one transaction and acknowledges its messages only after the commit.
A relay killed at any point leaves its unacknowledged messages to the broker, which delivers them again (to this
relay restarted, or to another one); their deterministic event ids make the second store a duplicate, not a row.

Faults: the database down or locked -> the batch is retried with backoff, nothing is acknowledged meanwhile, and
prefetch stops the broker from sending more. The broker connection lost -> aio-pika's robust connection reconnects
(and re-declares the queue and the consumer); messages taken on the lost channel can no longer be acknowledged and
come again. SIGTERM -> the batch in hand is finished (stored and acknowledged), the consumer cancelled, and what was
prefetched but not stored goes back to the queue when the connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from bankcore.database import unit_of_work
from bankcore.event_store import StoreReport, store_events
from bankcore.events import Event
from bankcore.models import CrossChannelEvent
from channels.event_relay.mapping import (
    CHAT_MESSAGE,
    HANDOFF,
    NLU_FALLBACK,
    InvalidMessage,
    Mapped,
    decode,
    map_rasa_event,
)
from channels.event_relay.metrics import RelayMetrics
from channels.scheduler.worker import describe_database_error, is_transient_database_error

log = logging.getLogger(__name__)

# Waiting for more messages to fill a batch after the first one: short, so a quiet hour still stores each turn
# within a fraction of a second.
BATCH_LINGER_SECONDS = 0.05
_ID_PAGE = 500


@dataclass
class RelayConfig:
    amqp_url: str
    queue: str = "bankbot.rasa_events"
    exchange: str = "rasa-exchange"
    batch_size: int = 200
    # Unacknowledged messages the broker may hand us: two batches, so the next fills while one commits.
    prefetch: int | None = None
    reconnect_interval: float = 2.0
    database_backoff: float = 0.5
    database_backoff_cap: float = 30.0
    connect_backoff_cap: float = 30.0


@dataclass
class StoredBatch:
    report: StoreReport
    new_events: list[Event] = field(default_factory=list)


def store_batch(factory: sessionmaker[Session], events: Sequence[Event]) -> StoredBatch:
    """Store `events` in one transaction; which of them were new (for metrics) is read in the same one.

    The read-before-insert is only for counting: duplicates are kept out by the store's unique event_id, so two
    relays racing on one redelivered message can at worst count it twice, never store it twice."""
    with unit_of_work(factory) as session:
        ids = [event.event_id for event in events if event.event_id is not None]
        known: set[str] = set()
        for start in range(0, len(ids), _ID_PAGE):
            page = ids[start : start + _ID_PAGE]
            known.update(
                session.scalars(select(CrossChannelEvent.event_id).where(CrossChannelEvent.event_id.in_(page)))
            )
        report = store_events(session, events)
    fresh: list[Event] = []
    seen: set[str] = set()
    for event in events:
        if event.event_id is None or (event.event_id not in known and event.event_id not in seen):
            fresh.append(event)
            if event.event_id is not None:
                seen.add(event.event_id)
    return StoredBatch(report=report, new_events=fresh)


class EventRelay:
    def __init__(
        self,
        config: RelayConfig,
        session_factory: sessionmaker[Session],
        metrics: RelayMetrics | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.session_factory = session_factory
        self.metrics = metrics or RelayMetrics.create()
        self.clock = clock
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self.connection: AbstractRobustConnection | None = None
        # Counts for logs and tests (the metrics hold the same, labelled).
        self.stats: dict[str, int] = {"consumed": 0, "stored": 0, "duplicates": 0, "skipped": 0, "batches": 0}

    # -- the broker -----------------------------------------------------------------------------------------

    async def _connect(self, stop: asyncio.Event) -> AbstractRobustConnection | None:
        """Connect (robustly from then on), retrying with backoff until it works or `stop` is set."""
        attempt = 0
        while not stop.is_set():
            try:
                connection = await aio_pika.connect_robust(
                    self.config.amqp_url,
                    reconnect_interval=self.config.reconnect_interval,
                    client_properties={"connection_name": "bankbot-event-relay"},
                )
                connection.reconnect_callbacks.add(self._reconnected)
                return connection
            except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as error:
                attempt += 1
                pause = min(self.config.reconnect_interval * 2 ** min(attempt - 1, 8), self.config.connect_backoff_cap)
                log.warning("cannot reach the broker (%s); trying again in %.1f s", type(error).__name__, pause)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=pause)
        return None

    def _reconnected(self, *_: Any) -> None:
        self.metrics.reconnects.inc()
        log.info("broker connection re-established; consuming %s again", self.config.queue)

    async def _subscribe(self, connection: AbstractRobustConnection) -> tuple[aio_pika.abc.AbstractQueue, str]:
        channel = await connection.channel()
        prefetch = self.config.prefetch or 2 * self.config.batch_size
        await channel.set_qos(prefetch_count=prefetch)
        # Declared exactly as Rasa's PikaEventBroker declares them (rasa/core/brokers/pika.py): a fanout exchange
        # with aio-pika's defaults (not durable) and a durable queue bound to it. Other arguments would make the
        # broker refuse the second declaration (PRECONDITION_FAILED). Declaring here too means events are kept
        # from Rasa's first publish even when the relay starts first, and the reverse.
        exchange = await channel.declare_exchange(self.config.exchange, aio_pika.ExchangeType.FANOUT)
        queue = await channel.declare_queue(self.config.queue, durable=True)
        await queue.bind(exchange, routing_key="")
        tag = await queue.consume(self._inbox.put)
        return queue, tag

    # -- the loop -------------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set; then finish the batch in hand and leave."""
        attempt = 0
        while not stop.is_set():
            connection = await self._connect(stop)
            if connection is None:
                return
            self.connection = connection
            try:
                queue, tag = await self._subscribe(connection)
            except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as error:
                # The connection went between connecting and subscribing, or the queue is declared with other
                # arguments than Rasa's (PRECONDITION_FAILED, logged at each try until an operator fixes it).
                attempt += 1
                pause = min(self.config.reconnect_interval * 2 ** min(attempt - 1, 8), self.config.connect_backoff_cap)
                log.warning(
                    "subscribing to %s failed (%s: %s); again in %.1f s",
                    self.config.queue,
                    type(error).__name__,
                    str(error)[:200],
                    pause,
                )
                await self._close(connection)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=pause)
                continue
            log.info("event relay consuming %s", self.config.queue)
            try:
                while not stop.is_set():
                    batch = await self._next_batch(stop)
                    if batch:
                        await self._handle(batch, stop)
                with contextlib.suppress(Exception):
                    await queue.cancel(tag)
            finally:
                await self._close(connection)
        log.info("event relay stopped: %s", self.stats)

    async def _close(self, connection: AbstractRobustConnection) -> None:
        # Prefetched messages not stored go back to the queue with the connection.
        self._inbox = asyncio.Queue()
        with contextlib.suppress(Exception):
            await connection.close()
        self.connection = None

    async def _next_batch(self, stop: asyncio.Event) -> list[AbstractIncomingMessage]:
        """The next messages, up to a batch: waits for the first one (or `stop`), then takes what else arrives
        within a short linger."""
        stopping = asyncio.ensure_future(stop.wait())
        first = asyncio.ensure_future(self._inbox.get())
        try:
            await asyncio.wait({stopping, first}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not first.done():
            # Stopping. A message taken right now is not acknowledged and goes back with the connection.
            first.cancel()
            return []
        batch = [first.result()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BATCH_LINGER_SECONDS
        while len(batch) < self.config.batch_size:
            try:
                batch.append(self._inbox.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._inbox.get(), timeout=remaining))
            except TimeoutError:
                break
        return batch

    async def _handle(self, messages: list[AbstractIncomingMessage], stop: asyncio.Event) -> None:
        """Map, store (retrying while the database is down) and acknowledge one batch."""
        self.metrics.consumed.inc(len(messages))
        self.stats["consumed"] += len(messages)
        mapped: list[Mapped] = []
        invalid: list[AbstractIncomingMessage] = []
        valid: list[AbstractIncomingMessage] = []
        for message in messages:
            try:
                data = decode(message.body)
            except InvalidMessage as error:
                log.warning("dropping a broker message that is not a Rasa event: %s", error)
                invalid.append(message)
                continue
            valid.append(message)
            mapped.append(map_rasa_event(data))
        events = [event for item in mapped for event in item.events]
        if events:
            stored = await self._store_with_retry(events, stop)
            if stored is None:
                return  # stopping while the database is down: nothing acknowledged, all of it comes again
            self._observe(mapped, stored)
        for item in mapped:
            if item.skipped:
                self.metrics.skipped.labels(reason=item.skipped).inc()
                self.stats["skipped"] += 1
        self.stats["batches"] += 1
        await self._acknowledge(valid)
        for message in invalid:
            self.metrics.skipped.labels(reason="undecodable").inc()
            # Not requeued: it would come back forever. A dead-letter exchange on the queue, if ops set one, keeps it.
            with contextlib.suppress(Exception):
                await message.reject(requeue=False)

    async def _store_with_retry(self, events: list[Event], stop: asyncio.Event) -> StoredBatch | None:
        failures = 0
        while True:
            try:
                return await asyncio.to_thread(store_batch, self.session_factory, events)
            except Exception as error:
                failures += 1
                self.metrics.database_retries.inc()
                pause = min(self.config.database_backoff * 2 ** min(failures - 1, 16), self.config.database_backoff_cap)
                if is_transient_database_error(error):
                    self._discard_pooled_connections()
                    log.warning(
                        "storing %d events failed (%s); the database may be down, trying again in %.1f s",
                        len(events),
                        describe_database_error(error),
                        pause,
                    )
                else:
                    log.exception("storing %d events failed; trying again in %.1f s", len(events), pause)
                if stop.is_set():
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=pause)
                if stop.is_set():
                    return None

    def _observe(self, mapped: list[Mapped], stored: StoredBatch) -> None:
        self.metrics.duplicates.inc(stored.report.duplicates)
        self.stats["duplicates"] += stored.report.duplicates
        self.stats["stored"] += stored.report.inserted
        fresh = {event.event_id for event in stored.new_events}
        now = self.clock()
        newest = 0.0
        for item in mapped:
            for event in item.events:
                if event.event_id not in fresh:
                    continue
                self.metrics.stored.labels(type=event.type, channel=event.channel).inc()
                stamp = event.ts.timestamp()
                newest = max(newest, stamp)
                self.metrics.lag.observe(max(0.0, now - stamp))
                channel = item.gateway_channel or event.channel
                if event.type == CHAT_MESSAGE and item.confidence is not None:
                    self.metrics.nlu_confidence.labels(channel=channel).observe(item.confidence)
                elif event.type == NLU_FALLBACK:
                    self.metrics.fallbacks.labels(channel=channel, source=str(event.attrs.get("source", ""))).inc()
                elif event.type == HANDOFF:
                    self.metrics.handoffs.labels(channel=channel).inc()
        if newest:
            self.metrics.last_stored_event_ts.set(newest)

    async def _acknowledge(self, messages: list[AbstractIncomingMessage]) -> None:
        lost = 0
        for message in messages:
            try:
                await message.ack()
            except Exception:  # the channel it came on is gone: the broker delivers it again
                lost += 1
        if lost:
            self.metrics.ack_failures.inc(lost)
            log.warning("%d stored messages could not be acknowledged (connection lost); they will come again", lost)

    def _discard_pooled_connections(self) -> None:
        # As the reminder worker does: after an outage every pooled connection may be dead (not on SQLite).
        bind: Any = self.session_factory.kw.get("bind")
        if isinstance(bind, Engine) and bind.dialect.name != "sqlite":
            bind.dispose()
