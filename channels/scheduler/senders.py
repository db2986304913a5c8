"""Outbound senders the dispatcher hands a claimed reminder to: the protocol, a log-only sender and counting ones.

The idempotency key of a send is the reminder's key: the same on every retry and on every worker, so a
reminder re-sent after a worker crashed between sending and recording it is dropped by the platform as a
duplicate (the counting senders behave the same way, which is what the exactly-once tests check).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
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


class CountingSender:
    """Counts sends per idempotency key and deduplicates by it, like a real platform; for tests and benches.

    With `path`, every send received is also appended as one line `key<TAB>channel<TAB>pid` to a file opened
    with O_APPEND, so several processes share one record (a write this short is atomic with O_APPEND on a
    local file system); `read_counts(path)` gives the receipts per key across all of them.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.received: Counter[str] = Counter()
        self.channels: dict[str, str] = {}
        self._lock = threading.Lock()
        self._fd: int | None = None
        if path is not None:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    async def send(self, reminder: ClaimedReminder, channel: str, idempotency_key: str) -> SendResult:
        with self._lock:
            self.received[idempotency_key] += 1
            duplicate = self.received[idempotency_key] > 1
            self.channels.setdefault(idempotency_key, channel)
            if self._fd is not None:
                os.write(self._fd, f"{idempotency_key}\t{channel}\t{os.getpid()}\n".encode())
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
    def read_counts(path: Path) -> Counter[str]:
        """Receipts per idempotency key in a shared counting file (every process's sends)."""
        counts: Counter[str] = Counter()
        if not path.exists():
            return counts
        for line in path.read_text(encoding="utf-8").splitlines():
            if line:
                counts[line.split("\t", 1)[0]] += 1
        return counts
