"""Outbound senders the dispatcher hands a claimed reminder to: the protocol, a log-only sender and counting ones.

The idempotency key of a send is the reminder's key: the same on every retry and on every worker, so a
reminder re-sent after a worker crashed between sending and recording it is dropped by the platform as a
duplicate (the counting senders behave the same way, which is what the exactly-once tests check).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from bankcore.reminders.store import ClaimedReminder

log = logging.getLogger(__name__)

SendErrorKind = Literal["busy", "no_answer", "platform_error"]


@dataclass(frozen=True)
class SendResult:
    """How one send went; `retryable` says whether trying again later may succeed."""

    ok: bool
    retryable: bool = False
    detail: str = ""


class SendError(Exception):
    """A channel could not deliver: the line was busy, nobody answered, or the platform failed. All retryable."""

    def __init__(self, kind: SendErrorKind, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind: SendErrorKind = kind
        self.detail = detail

    def as_result(self) -> SendResult:
        return SendResult(ok=False, retryable=True, detail=str(self))


class ReminderSender(Protocol):
    async def send(self, reminder: ClaimedReminder, channel: str, idempotency_key: str) -> SendResult: ...


class LogSender:
    """Logs the reminder and reports it delivered: the default until the channel adapters' outbound halves land."""

    async def send(self, reminder: ClaimedReminder, channel: str, idempotency_key: str) -> SendResult:
        # Ids and kinds only: the payload may hold amounts and names, which do not belong in logs.
        log.info(
            "reminder %s (%s) for customer %s on %s, attempt %d",
            idempotency_key,
            reminder.kind,
            reminder.customer_id,
            channel,
            reminder.attempt_no,
        )
        return SendResult(ok=True, detail="logged")


@dataclass(frozen=True)
class Receipt:
    """One send as the counting sender received it: which reminder, for whom, on which channel, and when."""

    key: str
    channel: str
    customer_id: str
    sent_at: dt.datetime  # UTC, read from the sender's clock at the hand-off


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CountingSender:
    """Counts sends per idempotency key and deduplicates by it, like a real platform; for tests and benches.

    Every send received is kept as a `Receipt` (customer and wall time included, so a test or bench can check
    each against the customer's quiet hours). With `path`, it is also appended as one line
    `key<TAB>channel<TAB>pid<TAB>customer<TAB>sent_at` to a file opened with O_APPEND, so several processes
    share one record (a write this short is atomic with O_APPEND on a local file system); `read_counts(path)`
    gives the receipts per key across all of them, `read_receipts(path)` the receipts themselves.
    """

    def __init__(self, path: Path | None = None, *, clock: Callable[[], dt.datetime] = _utc_now) -> None:
        self.path = path
        self.clock = clock
        self.received: Counter[str] = Counter()
        self.channels: dict[str, str] = {}
        self.receipts: list[Receipt] = []
        self._lock = threading.Lock()
        self._fd: int | None = None
        if path is not None:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    async def send(self, reminder: ClaimedReminder, channel: str, idempotency_key: str) -> SendResult:
        receipt = Receipt(idempotency_key, channel, reminder.customer_id, self.clock())
        with self._lock:
            self.received[idempotency_key] += 1
            duplicate = self.received[idempotency_key] > 1
            self.channels.setdefault(idempotency_key, channel)
            self.receipts.append(receipt)
            if self._fd is not None:
                line = "\t".join(
                    (idempotency_key, channel, str(os.getpid()), receipt.customer_id, receipt.sent_at.isoformat())
                )
                os.write(self._fd, f"{line}\n".encode())
        # A duplicate is accepted but not delivered again, as a platform honouring idempotency keys does.
        return SendResult(ok=True, detail="duplicate" if duplicate else "delivered")

    @property
    def delivered(self) -> int:
        """Distinct reminders delivered (what the customer saw)."""
        return len(self.received)

    @property
    def duplicates(self) -> int:
        """Sends the deduplication dropped."""
        return sum(self.received.values()) - len(self.received)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @staticmethod
    def read_receipts(path: Path) -> list[Receipt]:
        """Every receipt in a shared counting file, in the order they were written."""
        receipts: list[Receipt] = []
        if not path.exists():
            return receipts
        for line in path.read_text(encoding="utf-8").splitlines():
            if line:
                key, channel, _pid, customer_id, sent_at = line.split("\t")
                receipts.append(Receipt(key, channel, customer_id, dt.datetime.fromisoformat(sent_at)))
        return receipts

    @staticmethod
    def read_counts(path: Path) -> Counter[str]:
        """Receipts per idempotency key in a shared counting file (every process's sends)."""
        counts: Counter[str] = Counter()
        if not path.exists():
            return counts
        for line in path.read_text(encoding="utf-8").splitlines():
            if line:
                counts[line.split("\t", 1)[0]] += 1
        return counts
