"""Greeting, balances and transaction history for the signed-in customer."""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import cn2an
from rasa_sdk.events import EventType

from actions import messages
from actions.runtime import BankAction, Turn
from bankcore import accounts, customers, history
from bankcore.dates import parse_date_range
from bankcore.money import format_amount

_HISTORY_DEFAULT_COUNT = 5
_HISTORY_MAX_COUNT = 20


class ActionGreet(BankAction):
    action_name = "action_greet"

    def act(self, turn: Turn) -> list[EventType]:
        customer = customers.get_customer(turn.session, turn.customer_id)
        turn.dispatcher.utter_message(response="utter_greet_named", surname=customer.surname, title=customer.title)
        return []


class ActionCheckBalance(BankAction):
    action_name = "action_check_balance"

    def act(self, turn: Turn) -> list[EventType]:
        kind = turn.entity("account_type")
        kind = kind if kind in {"debit", "credit"} else None
        found = accounts.list_accounts(turn.session, turn.customer_id, kind=kind)
        if not found:
            turn.dispatcher.utter_message(text=messages.NO_ACCOUNTS)
            return []
        customer = customers.get_customer(turn.session, turn.customer_id)
        lines = [messages.BALANCE_HEADER.format(surname=customer.surname, title=customer.title)]
        for account in found:
            if account.kind == "credit":
                lines.append(
                    messages.BALANCE_CREDIT_LINE.format(
                        name=account.name,
                        last4=account.last4,
                        available=format_amount(account.available),
                        outstanding=format_amount(max(-account.balance, Decimal("0"))),
                    )
                )
            else:
                lines.append(
                    messages.BALANCE_DEBIT_LINE.format(
                        name=account.name, last4=account.last4, balance=format_amount(account.balance)
                    )
                )
        turn.dispatcher.utter_message(text="\n".join(lines))
        return []


def _requested_count(text: str) -> int:
    """ "最近十笔" / "最近10条" → 10; otherwise the default."""
    match = re.search(r"([0-9０-９]+|[一二两三四五六七八九十]+)\s*(笔|条|次)", text)
    if not match:
        return _HISTORY_DEFAULT_COUNT
    token = match.group(1).translate(str.maketrans("０１２３４５６７８９", "0123456789"))
    try:
        count = int(token) if token.isdecimal() else int(cn2an.cn2an(token.replace("两", "二"), "smart"))
    except ValueError:
        return _HISTORY_DEFAULT_COUNT
    return max(1, min(count, _HISTORY_MAX_COUNT))


class ActionTransactionHistory(BankAction):
    action_name = "action_transaction_history"

    def act(self, turn: Turn) -> list[EventType]:
        customer = customers.get_customer(turn.session, turn.customer_id)
        zone = ZoneInfo(customer.timezone)
        today = turn.now.astimezone(zone).date()
        phrase = turn.entity("date") or turn.text
        date_range = parse_date_range(phrase, today)
        kind = turn.entity("account_type")
        account_id = None
        if kind in {"debit", "credit"}:
            matching = accounts.list_accounts(turn.session, turn.customer_id, kind=kind)
            account_id = matching[0].id if matching else None
        limit = _requested_count(turn.text)
        if date_range is None:
            scope = messages.HISTORY_SCOPE_RECENT
            entries = history.recent_entries(turn.session, turn.customer_id, account_id=account_id, limit=limit)
        else:
            scope = phrase if turn.entity("date") else f"{date_range.start:%m月%d日}起"
            since = _local_midnight(date_range.start, zone)
            until = _local_midnight(date_range.end, zone)
            entries = history.recent_entries(
                turn.session,
                turn.customer_id,
                account_id=account_id,
                limit=_HISTORY_MAX_COUNT,
                since=since,
                until=until,
            )
        if not entries:
            turn.dispatcher.utter_message(text=messages.HISTORY_EMPTY.format(scope=scope))
            return []
        lines = [messages.HISTORY_HEADER.format(scope=scope, count=len(entries))]
        for entry in entries:
            sign = "+" if entry.amount > 0 else "-"
            lines.append(
                messages.HISTORY_LINE.format(
                    when=entry.created_at.astimezone(zone).strftime("%m-%d %H:%M"),
                    description=entry.description,
                    signed_amount=f"{sign}{format_amount(abs(entry.amount))}",
                    balance_after=format_amount(entry.balance_after),
                )
            )
        turn.dispatcher.utter_message(text="\n".join(lines))
        return []


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone)
