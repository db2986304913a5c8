"""Sends what the durable outbox holds for one channel through that platform's API, with retries and backoff.

Replies to one user leave in the order they were queued (one user at a time per sender, several users at
once). A retryable failure (platform busy or down, a dropped connection) is tried again after 1, 2, 4 … s up
to `max_attempts`; then, or at once for a failure that retrying cannot fix, the message is recorded as failed
(with the error, a metric and a log line): nothing vanishes silently. The scheduler's reminders for the
channel are queued in the same outbox and sent by the same loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from bankcore import channel_messages
from bankcore.channel_messages import ClaimedOutbox
from bankcore.database import unit_of_work
from channels.metrics import GatewayMetrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendAttempt:
    """How one send went: `retryable` failures are tried again; `partial_failure` is kept for ops (errcode 0)."""

    ok: bool
    retryable: bool = False
    error: str = ""
    platform_msg_id: str | None = None
    partial_failure: str | None = None


Send = Callable[[ClaimedOutbox], Awaitable[SendAttempt]]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class OutboxWorker:
    def __init__(
        self,
        channel: str,
        factory: sessionmaker[Session],
        send: Send,
        metrics: GatewayMetrics,
        *,
        max_attempts: int = 6,
        retry_base_s: float = 1.0,
        retry_cap_s: float = 60.0,
        lease: dt.timedelta = dt.timedelta(seconds=60),
        batch: int = 64,
        poll_s: float = 1.0,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self.channel = channel
        self.factory = factory
        self.send = send
        self.metrics = metrics
        self.max_attempts = max_attempts
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s
        self.lease = lease
        self.batch = batch
        self.poll_s = poll_s
        self.clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.failed = 0

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"outbox-{self.channel}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                busy = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The database may be away for a moment: nothing is lost (rows stay queued), try again shortly.
                logger.exception("outbox %s: round failed", self.channel)
                busy = 0
            if busy:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            self._wake.clear()

    async def run_once(self) -> int:
        """Claim and send one batch; returns how many were claimed."""
        claimed = await asyncio.to_thread(
            channel_messages.claim_outbox,
            self.factory,
            channel=self.channel,
            now=self.clock(),
            lease=self.lease,
            limit=self.batch,
        )
        if not claimed:
            return 0
        per_user: dict[str, list[ClaimedOutbox]] = defaultdict(list)
        for item in claimed:
            per_user[item.external_user].append(item)
        await asyncio.gather(*(self._send_in_order(items) for items in per_user.values()))
        return len(claimed)

    async def _send_in_order(self, items: list[ClaimedOutbox]) -> None:
        for item in items:
            await self._send_one(item)

    def _retry_delay(self, attempt_no: int) -> float:
        return min(self.retry_cap_s, self.retry_base_s * 2 ** max(0, attempt_no - 1))

    async def _send_one(self, item: ClaimedOutbox) -> None:
        try:
            attempt = await self.send(item)
        except Exception as error:  # a bug or an unexpected transport error: retry rather than lose the reply
            logger.exception("outbox %s: send raised for %s", self.channel, item.idempotency_key)
            attempt = SendAttempt(ok=False, retryable=True, error=f"{type(error).__name__}")
        now = self.clock()
        if attempt.ok:
            await asyncio.to_thread(
                self._record,
                channel_messages.mark_sent,
                item.id,
                now=now,
                platform_msg_id=attempt.platform_msg_id,
                partial_failure=attempt.partial_failure,
            )
            self.sent += 1
            self.metrics.count_outbound(self.channel, "partial" if attempt.partial_failure else "sent")
            if attempt.partial_failure:
                logger.warning(
                    "outbox %s: %s delivered with failures: %s",
                    self.channel,
                    item.idempotency_key,
                    attempt.partial_failure,
                )
            return
        if attempt.retryable and item.attempt_no < self.max_attempts:
            retry_at = now + dt.timedelta(seconds=self._retry_delay(item.attempt_no))
            await asyncio.to_thread(
                self._record, channel_messages.mark_retry, item.id, error=attempt.error, retry_at=retry_at
            )
            self.metrics.count_outbound(self.channel, "retry")
            logger.info(
                "outbox %s: %s retry %d (%s)", self.channel, item.idempotency_key, item.attempt_no, attempt.error
            )
            return
        await asyncio.to_thread(self._record, channel_messages.mark_failed, item.id, error=attempt.error)
        self.failed += 1
        self.metrics.count_outbound(self.channel, "failed")
        logger.error(
            "outbox %s: %s failed after %d attempts: %s",
            self.channel,
            item.idempotency_key,
            item.attempt_no,
            attempt.error,
        )

    def _record(self, mark: Callable[..., None], outbox_id: int, **values: object) -> None:
        with unit_of_work(self.factory) as session:
            mark(session, outbox_id, **values)
