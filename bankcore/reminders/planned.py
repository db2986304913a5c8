"""A reminder as the planner proposes it, before the store keeps it (idempotent by `key`)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PlannedReminder:
    key: str  # customer:rule:item:due-date:T-offset, unique per reminder the customer should get
    customer_id: str
    rule_id: str
    kind: str
    topic: str  # the opt-out topic
    item_id: str  # what is due: "loan:seq", account, card, deposit, event or notice id
    due_date: dt.date
    send_after: dt.datetime  # UTC; the policy may still make it wait (quiet hours, caps)
    channels: tuple[str, ...]  # preference order
    payload: dict[str, Any] = field(default_factory=dict)  # what the message needs; never a full card number
