"""Signals: everything the risk service knows about one money movement, gathered before it executes.

A `RiskInput` is built two ways and the features cannot tell them apart: live, from the shared database
and the conversation (`bankcore.risk.gather`), and offline, from a labelled set in its public JSON Lines
format (`bankcore.risk.dataset`). Keeping the signals raw (amounts, timestamps, event records, what the
customer said) lets ops change the rules' vocabularies without rebuilding data.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from dataclasses import dataclass, field
from decimal import Decimal

from bankcore.events import Event

KINDS = ("transfer", "card_repayment", "loan_repayment")
INPUT_MODES = ("text", "voice", "keypad", "button")
# How far back history and events are read: velocity and "usual amount" need 90 days, events 7.
HISTORY_DAYS = 90
EVENT_DAYS = 7


@dataclass(frozen=True, slots=True)
class PastTransfer:
    """An earlier outgoing transfer of the same customer (completed or authorised)."""

    ts: dt.datetime
    amount: Decimal
    payee_key: str


@dataclass(frozen=True, slots=True)
class EventCount:
    """Events of one type and channel before the movement: how many in the last hour, day and week, and the
    newest one's time. The live path reads these straight from SQL (GROUP BY); offline they are counted from
    raw events (bankcore.risk.features.count_events), so both give the same features."""

    type: str
    channel: str
    last_1h: int
    last_24h: int
    last_7d: int
    latest: dt.datetime


@dataclass(frozen=True)
class RiskInput:
    """One money movement and its context; `ts` is timezone-aware UTC."""

    kind: str  # transfer | card_repayment | loan_repayment
    customer_id: str
    ts: dt.datetime
    amount: Decimal
    currency: str = "CNY"
    # The payee account, as a stable key (see payee_key); None for repayments to the customer's own products.
    payee_key: str | None = None
    payee_on_fraud_list: bool = False
    cross_border: bool = False
    channel: str = "app"  # the public channel vocabulary of bankcore.events
    input_mode: str = "text"
    # The device of this session and whether the customer used it before (None: the channel has no device).
    device_id: str | None = None
    device_known: bool | None = None
    # The phone line's caller ID differs from the customer's registered numbers (False off the phone).
    caller_id_mismatch: bool = False
    failed_verifications_24h: int = 0
    # What the customer said or typed in this conversation, oldest first (secrets already removed).
    utterances: tuple[str, ...] = ()
    timezone: str = "Asia/Shanghai"
    # Earlier outgoing transfers (last HISTORY_DAYS) and cross-channel events (last EVENT_DAYS), before ts.
    history: tuple[PastTransfer, ...] = ()
    events: tuple[Event, ...] = ()
    # Pre-counted events (live path); when set, `events` is not read.
    event_counts: tuple[EventCount, ...] | None = None
    # Payee keys the customer had paid before the history window (a payee is new only if never paid).
    older_payees: frozenset[str] = field(default_factory=frozenset)

    @property
    def payee_new(self) -> bool:
        if self.payee_key is None:
            return False
        return self.payee_key not in self.older_payees and all(p.payee_key != self.payee_key for p in self.history)


def fold(text: str) -> str:
    """Width, case and spaces folded, as payee names are compared everywhere."""
    return "".join(unicodedata.normalize("NFKC", text).split()).casefold()


def payee_key(bank_name: str, account_last4: str | None, name: str) -> str:
    """The key of a payee account: bank, account tail and holder name, folded (the fraud list uses it too)."""
    return f"{fold(bank_name)}|{account_last4 or ''}|{fold(name)}"
