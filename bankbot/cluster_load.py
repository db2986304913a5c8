"""Mixed customer conversations played through the gateway's web chat, and the checker that reads the ledger
and the trackers afterwards.

Each simulated customer runs conversations drawn from a mix (balance, history, transfer with its one-time
code, lost card, hand-off to a human) as a real page does: one message at a time, each with its own message
id, resent with the same id when the network or the service fails (as channels/webchat/static/app.js does),
until it is answered or the retry deadline passes (then it counts as lost). The checker then proves, from the
database and Rasa's tracker store, that no message was lost or answered twice and no transfer ran twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import re
import secrets
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import OperationalError

from bankcore import sandbox
from bankcore.database import make_session_factory, unit_of_work
from bankcore.models import Account, LedgerEntry, Transfer

# A step that sends the one-time code the customer's phone received (read from the sandbox SMS outbox).
CODE = "<code>"
SCRIPTS: dict[str, tuple[str, ...]] = {
    "balance": ("我卡里还有多少钱",),
    "history": ("查一下最近的交易记录",),
    "transfer": ("给李娜转三百块", "确认", CODE),
    "lost_card": ("我的卡丢了", "不用了"),
    "handoff": ("转人工",),
}
MIX: dict[str, int] = {"balance": 3, "history": 2, "transfer": 2, "lost_card": 1, "handoff": 1}
TRANSFER_DONE = "转账成功"
TRANSFER_AMOUNT = Decimal("300.00")
OPENING_BALANCE = Decimal("100000.00")
RETRYABLE_STATUSES = frozenset({502, 503, 504})
_CODE_IN_SMS = re.compile(r"(?<!\d)\d{6}(?!\d)")


def load_customer_ids(count: int) -> list[str]:
    return [f"LC{index:05d}" for index in range(1, count + 1)]


def load_bank_document(count: int) -> dict[str, Any]:
    """A sandbox document of `count` customers; each one's payee 李娜 is the next customer's account, so every
    transfer stays inside the bank and the total of their balances never changes."""
    ids = load_customer_ids(count)
    customers = []
    for index, customer_id in enumerate(ids, start=1):
        account_id = f"LA{index:05d}"
        next_account = f"LA{index % count + 1:05d}"
        last4 = f"{(index * 37) % 10000:04d}"
        customers.append(
            {
                "id": customer_id,
                "name": f"压测客户{index}",
                "surname": "压",
                "title": "先生",
                "phone": f"1880000{index:04d}",
                "timezone": "Asia/Shanghai",
                "pin": "246810",
                "identities": [{"channel": "wecom", "external_id": f"lc{index:05d}"}],
                "accounts": [
                    {
                        "id": account_id,
                        "kind": "debit",
                        "name": "借记卡账户",
                        "last4": last4,
                        "balance": str(OPENING_BALANCE),
                        "opened_at": "2020-01-02T09:00:00+08:00",
                        "history": [
                            {"at": "now-9d", "amount": "8000.00", "description": "工资", "counterparty": "示范公司"},
                            {"at": "now-2d", "amount": "-35.50", "description": "餐饮", "counterparty": "便利店"},
                        ],
                    }
                ],
                "cards": [
                    {
                        "id": f"LK{index:05d}",
                        "account_id": account_id,
                        "last4": last4,
                        "kind": "debit",
                        "status": "active",
                        "expiry": "2030-01-31",
                    }
                ],
                "payees": [
                    {
                        "id": f"LP{index:05d}",
                        "name": "李娜",
                        "bank_name": "示范银行",
                        "account_last4": f"{((index % count + 1) * 37) % 10000:04d}",
                        "internal_account_id": next_account,
                        "created_at": "2021-03-01T10:00:00+08:00",
                    }
                ],
            }
        )
    return {"version": 1, "description": "cluster load customers", "customers": customers}


@dataclass
class SentMessage:
    customer_id: str
    conversation: str
    step: int
    message_id: str
    attempts: int = 0
    outcome: str = "lost"  # answered | lost
    replies: list[str] = field(default_factory=list)
    first_sent: float = 0.0
    answered_at: float = 0.0
    latency_s: float = 0.0  # of the attempt that was answered
    statuses: list[int] = field(default_factory=list)  # 0: no HTTP answer (connection failed)


@dataclass
class LoadResult:
    messages: list[SentMessage] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0

    def answered(self) -> list[SentMessage]:
        return [message for message in self.messages if message.outcome == "answered"]

    def to_json(self) -> dict[str, Any]:
        return {"started": self.started, "finished": self.finished, "messages": [asdict(m) for m in self.messages]}


@dataclass(frozen=True)
class LoadConfig:
    base_url: str
    customers: Sequence[str]
    conversations_per_customer: int = 3
    think_s: float = 0.0
    retry_deadline_s: float = 120.0
    request_timeout_s: float = 30.0
    seed: int = 1
    scripts: Sequence[str] | None = None  # None: drawn from MIX
    duration_s: float | None = None  # set: conversations follow one another until then (not a fixed number)


class WebChatCustomer:
    """One simulated customer on the web chat page."""

    def __init__(self, config: LoadConfig, http: ClientSession, customer_id: str, engine: Engine, result: LoadResult):
        self.config = config
        self.http = http
        self.customer_id = customer_id
        self.engine = engine
        self.result = result
        self.token = ""

    async def login(self) -> None:
        deadline = time.monotonic() + self.config.retry_deadline_s
        while True:
            try:
                async with self.http.post(
                    f"{self.config.base_url}/webchat/session", json={"customer_id": self.customer_id}
                ) as response:
                    if response.status == 200:
                        self.token = (await response.json())["token"]
                        return
            except (ClientError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not sign {self.customer_id} in")
            await asyncio.sleep(1.0)

    async def say(self, conversation: str, step: int, text: str) -> SentMessage:
        sent = SentMessage(self.customer_id, conversation, step, secrets.token_hex(12))
        self.result.messages.append(sent)
        sent.first_sent = time.time()
        deadline = time.monotonic() + self.config.retry_deadline_s
        delay = 0.5
        body = {"text": text, "message_id": sent.message_id}
        headers = {"Authorization": f"Bearer {self.token}"}
        while True:
            sent.attempts += 1
            started = time.perf_counter()
            status = 0
            try:
                async with self.http.post(
                    f"{self.config.base_url}/webchat/messages",
                    json=body,
                    headers=headers,
                    timeout=ClientTimeout(total=self.config.request_timeout_s),
                ) as response:
                    status = response.status
                    payload = await response.json(content_type=None) if status == 200 else None
            except (ClientError, TimeoutError, ValueError):
                payload = None
            sent.statuses.append(status)
            if status == 200 and isinstance(payload, dict):
                sent.outcome = "answered"
                sent.latency_s = time.perf_counter() - started
                sent.answered_at = time.time()
                sent.replies = [str(m.get("text") or "") for m in payload.get("messages", []) if isinstance(m, dict)]
                return sent
            if status not in RETRYABLE_STATUSES and status not in (0, 429):
                sent.outcome = f"http_{status}"
                return sent
            if time.monotonic() + delay > deadline:
                return sent
            await asyncio.sleep(delay)
            delay = min(delay * 2, 4.0)

    def latest_code(self) -> str:
        """The code in the newest SMS of the customer's phone (the sandbox outbox); retried across a database
        restart."""
        for _ in range(30):
            try:
                with unit_of_work(make_session_factory(self.engine)) as session:
                    newest = sandbox.outbox(session, self.customer_id, limit=1)
                break
            except OperationalError:
                time.sleep(1.0)
        else:
            return "000000"
        match = _CODE_IN_SMS.search(newest[0].text) if newest else None
        return match.group(0) if match else "000000"

    async def run(self, rng: random.Random) -> None:
        await self.login()
        names = list(MIX)
        weights = [MIX[name] for name in names]
        until = time.monotonic() + self.config.duration_s if self.config.duration_s else None
        number = -1
        while True:
            number += 1
            if until is None and number >= self.config.conversations_per_customer:
                return
            if until is not None and time.monotonic() >= until:
                return
            if self.config.scripts:
                name = self.config.scripts[number % len(self.config.scripts)]
            else:
                name = rng.choices(names, weights)[0]
            for step, line in enumerate(SCRIPTS[name]):
                text_to_send = await asyncio.to_thread(self.latest_code) if line == CODE else line
                sent = await self.say(name, step, text_to_send)
                if sent.outcome != "answered":
                    break  # the customer gives up on this conversation (the checker counts the loss)
                if self.config.think_s:
                    await asyncio.sleep(rng.uniform(0.5, 1.5) * self.config.think_s)


async def play(config: LoadConfig, engine: Engine) -> LoadResult:
    """Every customer runs its conversations concurrently with the others."""
    result = LoadResult(started=time.time())
    rng = random.Random(config.seed)
    async with ClientSession() as http:
        customers = [WebChatCustomer(config, http, customer_id, engine, result) for customer_id in config.customers]
        seeds = [rng.random() for _ in customers]
        await asyncio.gather(*(c.run(random.Random(seed)) for c, seed in zip(customers, seeds, strict=True)))
    result.finished = time.time()
    return result


@dataclass
class CheckReport:
    sent: int
    answered: int
    lost: int
    duplicated: int  # messages the trackers hold more than once
    missing_in_tracker: int  # answered, yet no user event carries their id
    transfers_confirmed: int  # "转账成功" replies customers saw
    transfers_completed: int  # completed transfers in the ledger for the load customers
    transfers_double_executed: int
    ledger_errors: list[str]
    resends: int
    unanswered_detail: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.duplicated == 0
            and self.missing_in_tracker == 0
            and self.transfers_double_executed == 0
            and self.transfers_completed == self.transfers_confirmed
            and not self.ledger_errors
        )


def tracker_message_ids(tracker_engine: Engine, sender_prefix: str = "webchat:LC") -> Counter[str]:
    """How many user events of the load's conversations carry each message id (Rasa's SQL tracker store)."""
    counts: Counter[str] = Counter()
    with tracker_engine.connect() as connection:
        rows = connection.execute(
            text("SELECT data FROM events WHERE type_name = 'user' AND sender_id LIKE :prefix"),
            {"prefix": sender_prefix + "%"},
        )
        for (data,) in rows:
            try:
                metadata = json.loads(data).get("metadata") or {}
            except (TypeError, ValueError):
                continue
            message_id = metadata.get("message_id")
            if isinstance(message_id, str):
                counts[message_id] += 1
    return counts


def check(result: LoadResult, bank_engine: Engine, tracker_engine: Engine, customers: Sequence[str]) -> CheckReport:
    answered = result.answered()
    in_tracker = tracker_message_ids(tracker_engine)
    duplicated = sum(count - 1 for count in in_tracker.values() if count > 1)
    missing = sum(1 for message in answered if in_tracker.get(message.message_id, 0) == 0)
    confirmed = sum(1 for m in answered if m.conversation == "transfer" and any(TRANSFER_DONE in r for r in m.replies))
    ledger_errors: list[str] = []
    ids = list(customers)
    with bank_engine.connect() as connection:
        completed_rows = connection.execute(
            select(Transfer.id, Transfer.journal_id, Transfer.amount).where(
                Transfer.customer_id.in_(ids), Transfer.status == "completed"
            )
        ).all()
        journals = Counter(row.journal_id for row in completed_rows)
        double = sum(count - 1 for count in journals.values() if count > 1)
        for row in completed_rows:
            entries = (
                connection.execute(select(LedgerEntry.amount).where(LedgerEntry.journal_id == row.journal_id))
                .scalars()
                .all()
            )
            if len(entries) != 2 or sum(entries, Decimal(0)) != 0 or max(entries) != row.amount:
                ledger_errors.append(f"transfer {row.id}: journal entries {entries}")
        accounts = connection.execute(select(Account.id, Account.balance).where(Account.customer_id.in_(ids))).all()
        total = Decimal(0)
        for account in accounts:
            total += account.balance
            posted = connection.execute(
                select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(LedgerEntry.account_id == account.id)
            ).scalar_one()
            if Decimal(posted) != account.balance:
                ledger_errors.append(f"account {account.id}: balance {account.balance} but entries sum to {posted}")
        # Every transfer stays among the load customers: their total never moves.
        if accounts and total != OPENING_BALANCE * len(accounts):
            ledger_errors.append(f"load accounts total {total}, expected {OPENING_BALANCE * len(accounts)}")
    lost = [m for m in result.messages if m.outcome != "answered"]
    return CheckReport(
        sent=len(result.messages),
        answered=len(answered),
        lost=len(lost),
        duplicated=duplicated,
        missing_in_tracker=missing,
        transfers_confirmed=confirmed,
        transfers_completed=len(completed_rows),
        transfers_double_executed=double + max(0, len(completed_rows) - confirmed),
        ledger_errors=ledger_errors,
        resends=sum(m.attempts - 1 for m in result.messages),
        unanswered_detail=[asdict(m) for m in lost[:20]],
    )


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
