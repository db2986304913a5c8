"""Loads sandbox-bank JSON documents (validated, idempotent upsert by id) and exposes the SMS outbox."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from bankcore.errors import SandboxFormatError
from bankcore.ledger import Leg, post
from bankcore.models import (
    CARD_SETTLEMENT_ACCOUNT_ID,
    CENT,
    CLEARING_ACCOUNT_ID,
    INTERNAL_ACCOUNTS,
    OPENING_ACCOUNT_ID,
    Account,
    Branch,
    Card,
    ChannelIdentity,
    Customer,
    Deposit,
    ExchangeRate,
    InterestRate,
    Loan,
    LoanInstalment,
    Payee,
    RiskWatchlistEntry,
    SmsOutbox,
    Transfer,
)
from bankcore.risk.signals import payee_key
from bankcore.verification import digest_code

DEMO_BANK_PATH = Path(__file__).resolve().parent / "demo_bank.json"
BANK_ZONE = ZoneInfo("Asia/Shanghai")  # "today" in documents is the bank's local day
FORMAT_VERSION = 1

_RELATIVE = re.compile(r"^(today|now)((?:\s*[+-]\s*\d+\s*(?:mo|min|w|d|h))*)$")
_TERM = re.compile(r"([+-])\s*(\d+)\s*(mo|min|w|d|h)")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,31}$")
_LAST4 = re.compile(r"^\d{4}$")
_PIN = re.compile(r"^\d{6}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


# ---------------------------------------------------------------- reports and views


@dataclass
class LoadReport:
    created: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)
    journals: int = 0

    def _count(self, kind: str, created: bool) -> None:
        bucket = self.created if created else self.updated
        bucket[kind] = bucket.get(kind, 0) + 1

    def summary(self) -> str:
        parts = [f"{k} +{v}" for k, v in sorted(self.created.items())]
        parts += [f"{k} ~{v}" for k, v in sorted(self.updated.items())]
        return ", ".join([*parts, f"journals {self.journals}"])


@dataclass(frozen=True)
class SmsView:
    id: int
    customer_id: str
    phone: str | None
    purpose: str
    text: str
    created_at: dt.datetime


# ---------------------------------------------------------------- validation helpers


def _add_months(day: dt.date, months: int) -> dt.date:
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    for last_day in (31, 30, 29, 28):
        try:
            return dt.date(year, month, min(day.day, last_day))
        except ValueError:
            continue
    raise AssertionError("unreachable")


class _Reader:
    """Converts and checks fields, raising SandboxFormatError with the JSON path of the bad value."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now
        self.today = now.astimezone(BANK_ZONE).date()

    def obj(self, value: Any, path: str, allowed: set[str], required: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise SandboxFormatError(path, "expected an object")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise SandboxFormatError(f"{path}.{unknown[0]}", f"unknown field (allowed: {', '.join(sorted(allowed))})")
        for key in sorted(required):
            if key not in value or value[key] is None:
                raise SandboxFormatError(f"{path}.{key}", "is required")
        return value

    def items(self, parent: Mapping[str, Any], key: str, path: str) -> list[tuple[str, Any]]:
        value = parent.get(key, [])
        if value is None:
            return []
        if not isinstance(value, list):
            raise SandboxFormatError(f"{path}.{key}" if path else key, "expected a list")
        prefix = f"{path}.{key}" if path else key
        return [(f"{prefix}[{i}]", item) for i, item in enumerate(value)]

    @staticmethod
    def text(value: Any, path: str, max_len: int = 200, pattern: re.Pattern[str] | None = None) -> str:
        if not isinstance(value, str) or not value.strip():
            raise SandboxFormatError(path, "expected a non-empty string")
        if len(value) > max_len:
            raise SandboxFormatError(path, f"longer than {max_len} characters")
        if pattern is not None and not pattern.match(value):
            raise SandboxFormatError(path, f"does not match {pattern.pattern}")
        return value

    def ident(self, value: Any, path: str) -> str:
        return self.text(value, path, 32, _ID)

    @staticmethod
    def choice(value: Any, path: str, choices: tuple[str, ...]) -> str:
        if value not in choices:
            raise SandboxFormatError(path, f"must be one of {', '.join(choices)}")
        return str(value)

    @staticmethod
    def decimal(value: Any, path: str, scale: int, *, negative: bool = False, zero: bool = True) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise SandboxFormatError(path, 'expected a decimal number (a string such as "1234.50" is best)')
        try:
            number = Decimal(str(value).replace(",", "").strip())
        except InvalidOperation:
            raise SandboxFormatError(path, f"not a number: {value!r}") from None
        quantum = Decimal(1).scaleb(-scale)
        if not number.is_finite() or number != number.quantize(quantum):
            raise SandboxFormatError(path, f"at most {scale} decimals")
        if abs(number) >= Decimal(10) ** 13:
            raise SandboxFormatError(path, "too large")
        if number < 0 and not negative:
            raise SandboxFormatError(path, "must not be negative")
        if number == 0 and not zero:
            raise SandboxFormatError(path, "must not be zero")
        return number.quantize(quantum)

    def money(self, value: Any, path: str, **kwargs: bool) -> Decimal:
        return self.decimal(value, path, 2, **kwargs)

    def rate(self, value: Any, path: str) -> Decimal:
        return self.decimal(value, path, 4, zero=True)

    @staticmethod
    def integer(value: Any, path: str, minimum: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise SandboxFormatError(path, f"expected an integer ≥ {minimum}")
        return value

    @staticmethod
    def boolean(value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise SandboxFormatError(path, "expected true or false")
        return value

    def _relative(self, value: str, path: str, want_date: bool) -> dt.date | dt.datetime | None:
        match = _RELATIVE.match(value.strip())
        if not match:
            return None
        base, terms = match.groups()
        if want_date and base != "today":
            raise SandboxFormatError(path, "dates are relative to 'today', timestamps to 'now'")
        if not want_date and base != "now":
            raise SandboxFormatError(path, "timestamps are relative to 'now', dates to 'today'")
        result: Any = self.today if want_date else self.now
        for sign, number, unit in _TERM.findall(terms):
            n = int(number) * (1 if sign == "+" else -1)
            if unit == "mo":
                if not want_date:
                    raise SandboxFormatError(path, "months ('mo') apply to dates only")
                result = _add_months(result, n)
            elif unit in ("h", "min"):
                if want_date:
                    raise SandboxFormatError(path, "hours and minutes apply to timestamps only")
                result += dt.timedelta(hours=n) if unit == "h" else dt.timedelta(minutes=n)
            else:
                result += dt.timedelta(days=n * (7 if unit == "w" else 1))
        return result

    def date(self, value: Any, path: str) -> dt.date:
        if not isinstance(value, str):
            raise SandboxFormatError(path, "expected a date: YYYY-MM-DD or relative like 'today+12d'")
        relative = self._relative(value, path, want_date=True)
        if isinstance(relative, dt.date):
            return relative
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise SandboxFormatError(path, "expected a date: YYYY-MM-DD or relative like 'today+12d'") from None

    def timestamp(self, value: Any, path: str) -> dt.datetime:
        message = "expected an ISO-8601 timestamp with offset or relative like 'now-1d-2h'"
        if not isinstance(value, str):
            raise SandboxFormatError(path, message)
        relative = self._relative(value, path, want_date=False)
        if isinstance(relative, dt.datetime):
            return relative
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            raise SandboxFormatError(path, message) from None
        if parsed.tzinfo is None:
            raise SandboxFormatError(path, "timestamp needs a UTC offset, e.g. 2026-11-20T09:30:00+08:00")
        return parsed.astimezone(dt.UTC)


# ---------------------------------------------------------------- parsed document


@dataclass
class _Event:
    """A historic money movement (account history line or completed past transfer)."""

    at: dt.datetime
    order: int
    kind: str
    description: str
    legs: list[tuple[str, Decimal, str, str | None]]  # (account_id, amount, description, counterparty)
    transfer_id: str | None = None


@dataclass
class _Parsed:
    customers: list[dict[str, Any]] = field(default_factory=list)
    identities: list[tuple[str, str, str]] = field(default_factory=list)
    accounts: list[dict[str, Any]] = field(default_factory=list)
    history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    cards: list[dict[str, Any]] = field(default_factory=list)
    payees: list[dict[str, Any]] = field(default_factory=list)
    loans: list[dict[str, Any]] = field(default_factory=list)
    instalments: list[dict[str, Any]] = field(default_factory=list)
    deposits: list[dict[str, Any]] = field(default_factory=list)
    transfers: list[dict[str, Any]] = field(default_factory=list)
    branches: list[dict[str, Any]] = field(default_factory=list)
    interest_rates: list[dict[str, Any]] = field(default_factory=list)
    exchange_rates: list[dict[str, Any]] = field(default_factory=list)
    watchlist: list[dict[str, Any]] = field(default_factory=list)
    paths: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, id) -> JSON path


def _unique(parsed: _Parsed, kind: str, ident: str, path: str) -> None:
    key = (kind, ident)
    if key in parsed.paths:
        raise SandboxFormatError(path, f"duplicate {kind} id {ident!r} (first at {parsed.paths[key]})")
    parsed.paths[key] = path


def _parse(data: Any, now: dt.datetime) -> _Parsed:
    r = _Reader(now)
    top = r.obj(
        data,
        "$",
        {"version", "customers", "branches", "interest_rates", "exchange_rates", "description", "risk_watchlist"},
        set(),
    )
    if top.get("version", FORMAT_VERSION) != FORMAT_VERSION:
        raise SandboxFormatError("version", f"unsupported format version (this loader reads {FORMAT_VERSION})")
    parsed = _Parsed()
    for cpath, raw in r.items(top, "customers", ""):
        c = r.obj(
            raw,
            cpath,
            {
                "id",
                "name",
                "surname",
                "title",
                "phone",
                "timezone",
                "pin",
                "single_transfer_limit",
                "daily_transfer_limit",
                "identities",
                "accounts",
                "cards",
                "payees",
                "loans",
                "deposits",
                "transfers",
            },
            {"id", "name", "surname", "title"},
        )
        cid = r.ident(c["id"], f"{cpath}.id")
        _unique(parsed, "customer", cid, cpath)
        timezone = r.text(c.get("timezone", "Asia/Shanghai"), f"{cpath}.timezone", 64)
        try:
            ZoneInfo(timezone)
        except (KeyError, ValueError):
            raise SandboxFormatError(f"{cpath}.timezone", f"unknown time zone {timezone!r}") from None
        parsed.customers.append(
            {
                "id": cid,
                "name": r.text(c["name"], f"{cpath}.name", 64),
                "surname": r.text(c["surname"], f"{cpath}.surname", 16),
                "title": r.text(c["title"], f"{cpath}.title", 8),
                "phone": r.text(c["phone"], f"{cpath}.phone", 32) if c.get("phone") else None,
                "timezone": timezone,
                "_pin": r.text(c["pin"], f"{cpath}.pin", 6, _PIN) if c.get("pin") is not None else None,
                "single_transfer_limit": (
                    r.money(c["single_transfer_limit"], f"{cpath}.single_transfer_limit", zero=False)
                    if c.get("single_transfer_limit") is not None
                    else None
                ),
                "daily_transfer_limit": (
                    r.money(c["daily_transfer_limit"], f"{cpath}.daily_transfer_limit", zero=False)
                    if c.get("daily_transfer_limit") is not None
                    else None
                ),
            }
        )
        for ipath, raw_identity in r.items(c, "identities", cpath):
            i = r.obj(raw_identity, ipath, {"channel", "external_id"}, {"channel", "external_id"})
            parsed.identities.append(
                (
                    r.text(i["channel"], f"{ipath}.channel", 32),
                    r.text(i["external_id"], f"{ipath}.external_id", 128),
                    cid,
                )
            )
        for apath, raw_account in r.items(c, "accounts", cpath):
            a = r.obj(
                raw_account,
                apath,
                {
                    "id",
                    "kind",
                    "name",
                    "last4",
                    "currency",
                    "balance",
                    "credit_limit",
                    "status",
                    "opened_at",
                    "statement",
                    "history",
                },
                {"id", "kind", "name", "balance"},
            )
            aid = r.ident(a["id"], f"{apath}.id")
            if aid in INTERNAL_ACCOUNTS:
                raise SandboxFormatError(f"{apath}.id", "reserved for the bank's internal accounts")
            _unique(parsed, "account", aid, apath)
            kind = r.choice(a["kind"], f"{apath}.kind", ("debit", "credit"))
            account: dict[str, Any] = {
                "id": aid,
                "customer_id": cid,
                "kind": kind,
                "name": r.text(a["name"], f"{apath}.name", 64),
                "last4": r.text(a["last4"], f"{apath}.last4", 4, _LAST4) if a.get("last4") else None,
                "currency": r.text(a.get("currency", "CNY"), f"{apath}.currency", 3, _CURRENCY),
                "balance": r.money(a["balance"], f"{apath}.balance", negative=kind == "credit"),
                "credit_limit": None,
                "status": r.choice(a.get("status", "active"), f"{apath}.status", ("active", "frozen", "closed")),
                "opened_at": r.timestamp(a["opened_at"], f"{apath}.opened_at") if a.get("opened_at") else None,
                "statement_balance": None,
                "minimum_payment": None,
                "statement_date": None,
                "statement_due_date": None,
            }
            if kind == "credit":
                if a.get("credit_limit") is None:
                    raise SandboxFormatError(f"{apath}.credit_limit", "is required for credit accounts")
                account["credit_limit"] = r.money(a["credit_limit"], f"{apath}.credit_limit")
                if -account["balance"] > account["credit_limit"]:
                    raise SandboxFormatError(f"{apath}.balance", "owes more than the credit limit")
                if a.get("statement") is not None:
                    spath = f"{apath}.statement"
                    s = r.obj(
                        a["statement"],
                        spath,
                        {"balance", "minimum_payment", "statement_date", "due_date"},
                        {"balance", "minimum_payment", "due_date"},
                    )
                    account["statement_balance"] = r.money(s["balance"], f"{spath}.balance")
                    account["minimum_payment"] = r.money(s["minimum_payment"], f"{spath}.minimum_payment")
                    if account["minimum_payment"] > account["statement_balance"]:
                        raise SandboxFormatError(f"{spath}.minimum_payment", "exceeds the statement balance")
                    account["statement_due_date"] = r.date(s["due_date"], f"{spath}.due_date")
                    if s.get("statement_date") is not None:
                        account["statement_date"] = r.date(s["statement_date"], f"{spath}.statement_date")
            else:
                for key in ("credit_limit", "statement"):
                    if a.get(key) is not None:
                        raise SandboxFormatError(f"{apath}.{key}", "only credit accounts have it")
            parsed.accounts.append(account)
            lines = []
            for hpath, raw_line in r.items(a, "history", apath):
                h = r.obj(
                    raw_line,
                    hpath,
                    {"at", "amount", "description", "counterparty"},
                    {"at", "amount", "description"},
                )
                lines.append(
                    {
                        "at": r.timestamp(h["at"], f"{hpath}.at"),
                        "amount": r.money(h["amount"], f"{hpath}.amount", negative=True, zero=False),
                        "description": r.text(h["description"], f"{hpath}.description", 200),
                        "counterparty": r.text(h["counterparty"], f"{hpath}.counterparty", 100)
                        if h.get("counterparty")
                        else None,
                    }
                )
            parsed.history[aid] = lines
        for kpath, raw_card in r.items(c, "cards", cpath):
            k = r.obj(
                raw_card,
                kpath,
                {"id", "account_id", "last4", "kind", "status", "expiry"},
                {"id", "account_id", "last4", "kind", "expiry"},
            )
            kid = r.ident(k["id"], f"{kpath}.id")
            _unique(parsed, "card", kid, kpath)
            parsed.cards.append(
                {
                    "id": kid,
                    "customer_id": cid,
                    "account_id": r.ident(k["account_id"], f"{kpath}.account_id"),
                    "last4": r.text(k["last4"], f"{kpath}.last4", 4, _LAST4),
                    "kind": r.choice(k["kind"], f"{kpath}.kind", ("debit", "credit")),
                    "status": r.choice(
                        k.get("status", "active"),
                        f"{kpath}.status",
                        ("active", "inactive", "frozen", "lost", "replaced"),
                    ),
                    "expiry": r.date(k["expiry"], f"{kpath}.expiry"),
                    "_path": kpath,
                }
            )
        for ppath, raw_payee in r.items(c, "payees", cpath):
            p = r.obj(
                raw_payee,
                ppath,
                {
                    "id",
                    "name",
                    "bank_name",
                    "account_last4",
                    "internal_account_id",
                    "external_status",
                    "country",
                    "created_at",
                },
                {"id", "name", "bank_name"},
            )
            pid = r.ident(p["id"], f"{ppath}.id")
            _unique(parsed, "payee", pid, ppath)
            parsed.payees.append(
                {
                    "id": pid,
                    "customer_id": cid,
                    "name": r.text(p["name"], f"{ppath}.name", 64),
                    "bank_name": r.text(p["bank_name"], f"{ppath}.bank_name", 64),
                    "account_last4": r.text(p["account_last4"], f"{ppath}.account_last4", 4, _LAST4)
                    if p.get("account_last4")
                    else None,
                    "internal_account_id": r.ident(p["internal_account_id"], f"{ppath}.internal_account_id")
                    if p.get("internal_account_id")
                    else None,
                    "external_status": r.choice(
                        p.get("external_status", "ok"),
                        f"{ppath}.external_status",
                        ("ok", "closed", "invalid"),
                    ),
                    "country": r.text(p.get("country", "CN"), f"{ppath}.country", 2, _COUNTRY),
                    "created_at": r.timestamp(p["created_at"], f"{ppath}.created_at") if p.get("created_at") else None,
                    "_path": ppath,
                }
            )
        names = [p["name"] for p in parsed.payees if p["customer_id"] == cid]
        for name in names:
            if names.count(name) > 1:
                raise SandboxFormatError(f"{cpath}.payees", f"two payees named {name!r}: names must be unique")
        for lpath, raw_loan in r.items(c, "loans", cpath):
            ln = r.obj(
                raw_loan,
                lpath,
                {
                    "id",
                    "product",
                    "name",
                    "principal",
                    "outstanding",
                    "rate",
                    "repayment_account_id",
                    "start_date",
                    "end_date",
                    "status",
                    "instalments",
                },
                {"id", "product", "name", "principal", "outstanding", "rate", "start_date", "end_date"},
            )
            lid = r.ident(ln["id"], f"{lpath}.id")
            _unique(parsed, "loan", lid, lpath)
            parsed.loans.append(
                {
                    "id": lid,
                    "customer_id": cid,
                    "product": r.choice(ln["product"], f"{lpath}.product", ("mortgage", "consumer", "car", "business")),
                    "name": r.text(ln["name"], f"{lpath}.name", 64),
                    "principal": r.money(ln["principal"], f"{lpath}.principal", zero=False),
                    "outstanding": r.money(ln["outstanding"], f"{lpath}.outstanding"),
                    "rate": r.rate(ln["rate"], f"{lpath}.rate"),
                    "repayment_account_id": r.ident(ln["repayment_account_id"], f"{lpath}.repayment_account_id")
                    if ln.get("repayment_account_id")
                    else None,
                    "start_date": r.date(ln["start_date"], f"{lpath}.start_date"),
                    "end_date": r.date(ln["end_date"], f"{lpath}.end_date"),
                    "status": r.choice(ln.get("status", "active"), f"{lpath}.status", ("active", "closed")),
                    "_path": lpath,
                }
            )
            seqs: set[int] = set()
            for ipath, raw_instalment in r.items(ln, "instalments", lpath):
                it = r.obj(
                    raw_instalment,
                    ipath,
                    {"seq", "due_date", "amount", "principal", "interest", "status"},
                    {"seq", "due_date", "amount"},
                )
                seq = r.integer(it["seq"], f"{ipath}.seq", 1)
                if seq in seqs:
                    raise SandboxFormatError(f"{ipath}.seq", f"duplicate instalment number {seq}")
                seqs.add(seq)
                amount = r.money(it["amount"], f"{ipath}.amount", zero=False)
                principal_part = r.money(it.get("principal", it["amount"]), f"{ipath}.principal")
                interest_part = r.money(it.get("interest", amount - principal_part), f"{ipath}.interest")
                if principal_part + interest_part != amount:
                    raise SandboxFormatError(f"{ipath}.amount", "must equal principal + interest")
                parsed.instalments.append(
                    {
                        "loan_id": lid,
                        "seq": seq,
                        "due_date": r.date(it["due_date"], f"{ipath}.due_date"),
                        "amount": amount,
                        "principal_part": principal_part,
                        "interest_part": interest_part,
                        "status": r.choice(it.get("status", "due"), f"{ipath}.status", ("due", "paid")),
                    }
                )
        for dpath, raw_deposit in r.items(c, "deposits", cpath):
            d = r.obj(
                raw_deposit,
                dpath,
                {
                    "id",
                    "product",
                    "name",
                    "amount",
                    "currency",
                    "rate",
                    "term_months",
                    "start_date",
                    "maturity_date",
                    "auto_renew",
                    "status",
                },
                {"id", "product", "name", "amount", "rate", "term_months", "start_date", "maturity_date"},
            )
            did = r.ident(d["id"], f"{dpath}.id")
            _unique(parsed, "deposit", did, dpath)
            start, maturity = (
                r.date(d["start_date"], f"{dpath}.start_date"),
                r.date(d["maturity_date"], f"{dpath}.maturity_date"),
            )
            if maturity <= start:
                raise SandboxFormatError(f"{dpath}.maturity_date", "must be after start_date")
            parsed.deposits.append(
                {
                    "id": did,
                    "customer_id": cid,
                    "product": r.choice(d["product"], f"{dpath}.product", ("fixed", "large_cd", "notice")),
                    "name": r.text(d["name"], f"{dpath}.name", 64),
                    "amount": r.money(d["amount"], f"{dpath}.amount", zero=False),
                    "currency": r.text(d.get("currency", "CNY"), f"{dpath}.currency", 3, _CURRENCY),
                    "rate": r.rate(d["rate"], f"{dpath}.rate"),
                    "term_months": r.integer(d["term_months"], f"{dpath}.term_months", 1),
                    "start_date": start,
                    "maturity_date": maturity,
                    "auto_renew": r.boolean(d.get("auto_renew", False), f"{dpath}.auto_renew"),
                    "status": r.choice(d.get("status", "active"), f"{dpath}.status", ("active", "matured", "closed")),
                }
            )
        for tpath, raw_transfer in r.items(c, "transfers", cpath):
            t = r.obj(
                raw_transfer,
                tpath,
                {
                    "id",
                    "source_account_id",
                    "payee_id",
                    "amount",
                    "status",
                    "failure_reason",
                    "created_at",
                    "executed_at",
                    "channel",
                },
                {"id", "source_account_id", "payee_id", "amount", "status", "created_at"},
            )
            tid = r.ident(t["id"], f"{tpath}.id")
            _unique(parsed, "transfer", tid, tpath)
            status = r.choice(t["status"], f"{tpath}.status", ("completed", "failed", "cancelled"))
            if status == "failed" and not t.get("failure_reason"):
                raise SandboxFormatError(f"{tpath}.failure_reason", "is required for failed transfers")
            created = r.timestamp(t["created_at"], f"{tpath}.created_at")
            parsed.transfers.append(
                {
                    "id": tid,
                    "customer_id": cid,
                    "source_account_id": r.ident(t["source_account_id"], f"{tpath}.source_account_id"),
                    "payee_id": r.ident(t["payee_id"], f"{tpath}.payee_id"),
                    "amount": r.money(t["amount"], f"{tpath}.amount", zero=False),
                    "status": status,
                    "failure_reason": r.text(t["failure_reason"], f"{tpath}.failure_reason", 64)
                    if t.get("failure_reason")
                    else None,
                    "created_at": created,
                    "executed_at": r.timestamp(t["executed_at"], f"{tpath}.executed_at")
                    if t.get("executed_at")
                    else (created if status != "cancelled" else None),
                    "channel": r.text(t.get("channel", "app"), f"{tpath}.channel", 32),
                    "_path": tpath,
                }
            )
    for bpath, raw_branch in r.items(top, "branches", ""):
        b = r.obj(
            raw_branch,
            bpath,
            {"id", "name", "city", "district", "address", "hours", "phone", "services"},
            {"id", "name", "city", "district", "address", "hours", "phone"},
        )
        bid = r.ident(b["id"], f"{bpath}.id")
        _unique(parsed, "branch", bid, bpath)
        parsed.branches.append(
            {
                "id": bid,
                **{
                    key: r.text(b[key], f"{bpath}.{key}", 200)
                    for key in ("name", "city", "district", "address", "hours", "phone")
                },
                "services": r.text(b["services"], f"{bpath}.services", 200) if b.get("services") else "",
            }
        )
    for rpath, raw_rate in r.items(top, "interest_rates", ""):
        ir = r.obj(
            raw_rate,
            rpath,
            {"product", "product_name", "term_months", "rate", "effective_date"},
            {"product", "product_name", "rate", "effective_date"},
        )
        term = r.integer(ir["term_months"], f"{rpath}.term_months", 1) if ir.get("term_months") is not None else None
        product = r.text(ir["product"], f"{rpath}.product", 32)
        _unique(parsed, "interest_rate", f"{product}/{term}", rpath)
        parsed.interest_rates.append(
            {
                "product": product,
                "product_name": r.text(ir["product_name"], f"{rpath}.product_name", 64),
                "term_months": term,
                "rate": r.rate(ir["rate"], f"{rpath}.rate"),
                "effective_date": r.date(ir["effective_date"], f"{rpath}.effective_date"),
            }
        )
    for xpath, raw_fx in r.items(top, "exchange_rates", ""):
        x = r.obj(raw_fx, xpath, {"currency", "name", "buy", "sell", "as_of"}, {"currency", "name", "buy", "sell"})
        currency = r.text(x["currency"], f"{xpath}.currency", 3, _CURRENCY)
        _unique(parsed, "exchange_rate", currency, xpath)
        buy, sell = r.rate(x["buy"], f"{xpath}.buy"), r.rate(x["sell"], f"{xpath}.sell")
        if buy <= 0 or sell < buy:
            raise SandboxFormatError(f"{xpath}.sell", "need 0 < buy ≤ sell (CNY per 100 units)")
        parsed.exchange_rates.append(
            {
                "currency": currency,
                "name": r.text(x["name"], f"{xpath}.name", 32),
                "buy": buy,
                "sell": sell,
                "as_of": r.timestamp(x["as_of"], f"{xpath}.as_of") if x.get("as_of") else now,
            }
        )
    for wpath, raw_entry in r.items(top, "risk_watchlist", ""):
        w = r.obj(raw_entry, wpath, {"kind", "bank_name", "account_last4", "name", "key", "reason"}, {"kind"})
        kind = r.choice(w["kind"], f"{wpath}.kind", ("payee", "device", "caller"))
        if kind == "payee":
            if not (w.get("bank_name") and w.get("name")):
                raise SandboxFormatError(wpath, "a payee entry needs bank_name, name and (usually) account_last4")
            last4 = r.text(w["account_last4"], f"{wpath}.account_last4", 4, _LAST4) if w.get("account_last4") else None
            key = payee_key(
                r.text(w["bank_name"], f"{wpath}.bank_name", 64), last4, r.text(w["name"], f"{wpath}.name", 64)
            )
        else:
            key = r.text(w.get("key"), f"{wpath}.key", 200)
        parsed.watchlist.append({"kind": kind, "key": key, "reason": r.text(w.get("reason", ""), f"{wpath}.reason")})
    return parsed


# ---------------------------------------------------------------- writing


def ensure_internal_accounts(session: Session, now: dt.datetime) -> None:
    """The migration creates them; this makes a hand-built schema (create_all) work too."""
    for account_id, name in INTERNAL_ACCOUNTS.items():
        if session.get(Account, account_id) is None:
            session.add(
                Account(
                    id=account_id,
                    customer_id=None,
                    kind="internal",
                    name=name,
                    currency="CNY",
                    balance=Decimal("0.00"),
                    status="active",
                    opened_at=now,
                )
            )
    session.flush()


def _upsert(session: Session, report: LoadReport, kind: str, model: type[Any], key: Any, values: dict[str, Any]) -> Any:
    values = {k: v for k, v in values.items() if not k.startswith("_")}
    row = session.get(model, key)
    if row is None:
        row = model(**values)
        session.add(row)
        report._count(kind, True)
        return row
    changed = False
    for name, value in values.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed = True
    if changed:
        report._count(kind, False)
    return row


def _check_ref(session: Session, parsed: _Parsed, path: str, account_id: str, owner: str | None) -> None:
    """An account reference must exist in the document or the database (and belong to `owner`)."""
    for account in parsed.accounts:
        if account["id"] == account_id:
            if owner is not None and account["customer_id"] != owner:
                raise SandboxFormatError(path, f"account {account_id!r} belongs to another customer")
            return
    existing = session.get(Account, account_id)
    if existing is None or existing.kind == "internal":
        raise SandboxFormatError(path, f"unknown account {account_id!r}")
    if owner is not None and existing.customer_id != owner:
        raise SandboxFormatError(path, f"account {account_id!r} belongs to another customer")


def load_sandbox(
    session: Session, data: Mapping[str, Any], *, now: dt.datetime | None = None, pin_key: str | None = None
) -> LoadReport:
    """Validate the whole document first, then upsert it by id; balances are reached through journals.

    Customers' transaction PINs are stored as their keyed digest under `pin_key` (the settings' secret key,
    the key the gateway digests typed codes with); without a key they are not stored.

    New accounts get an opening journal (from the internal opening account) dated before their
    history, then their history lines and completed past transfers in time order, so every entry's
    balance_after is right and the final balance is the declared one. Accounts that already exist
    get a single adjustment journal when their balance differs from the document. History lines and
    past transfers that already exist are never posted again, which makes loading twice a no-op.
    """
    now = now or dt.datetime.now(dt.UTC)
    parsed = _parse(data, now)
    report = LoadReport()
    ensure_internal_accounts(session, now)

    # References are checked before anything is written.
    for doc_account in parsed.accounts:
        existing = session.get(Account, doc_account["id"])
        if existing is not None and existing.customer_id != doc_account["customer_id"]:
            raise SandboxFormatError(
                parsed.paths[("account", doc_account["id"])] + ".id",
                "already used by another customer's account",
            )
    for doc_card in parsed.cards:
        _check_ref(
            session,
            parsed,
            f"{doc_card['_path']}.account_id",
            doc_card["account_id"],
            doc_card["customer_id"],
        )
    payee_rows = {p["id"]: p for p in parsed.payees}
    for doc_payee in parsed.payees:
        if doc_payee["internal_account_id"]:
            _check_ref(
                session,
                parsed,
                f"{doc_payee['_path']}.internal_account_id",
                doc_payee["internal_account_id"],
                None,
            )
    for doc_loan in parsed.loans:
        if doc_loan["repayment_account_id"]:
            _check_ref(
                session,
                parsed,
                f"{doc_loan['_path']}.repayment_account_id",
                doc_loan["repayment_account_id"],
                doc_loan["customer_id"],
            )
    for doc_transfer in parsed.transfers:
        _check_ref(
            session,
            parsed,
            f"{doc_transfer['_path']}.source_account_id",
            doc_transfer["source_account_id"],
            doc_transfer["customer_id"],
        )
        payee_row = payee_rows.get(doc_transfer["payee_id"])
        stored_payee = session.get(Payee, doc_transfer["payee_id"]) if payee_row is None else None
        owner = payee_row["customer_id"] if payee_row else (stored_payee.customer_id if stored_payee else None)
        if owner != doc_transfer["customer_id"]:
            raise SandboxFormatError(f"{doc_transfer['_path']}.payee_id", f"unknown payee {doc_transfer['payee_id']!r}")

    for values in parsed.customers:
        _upsert(session, report, "customers", Customer, values["id"], values)
    session.flush()
    for channel, external_id, customer_id in parsed.identities:
        identity = session.scalar(
            select(ChannelIdentity).where(
                ChannelIdentity.channel == channel, ChannelIdentity.external_id == external_id
            )
        )
        if identity is None:
            session.add(
                ChannelIdentity(channel=channel, external_id=external_id, customer_id=customer_id, created_at=now)
            )
            report._count("identities", True)
        elif identity.customer_id != customer_id:
            identity.customer_id = customer_id
            report._count("identities", False)

    targets: dict[str, Decimal] = {}
    new_accounts: set[str] = set()
    for values in parsed.accounts:
        targets[values["id"]] = values["balance"]
        row_values = {k: v for k, v in values.items() if k not in ("balance", "opened_at")}
        existing = session.get(Account, values["id"])
        if existing is None:
            new_accounts.add(values["id"])
            session.add(Account(**row_values, balance=Decimal("0.00"), opened_at=values["opened_at"] or now))
            report._count("accounts", True)
        else:
            _upsert(session, report, "accounts", Account, values["id"], row_values)
    session.flush()
    for values in parsed.cards:
        _upsert(session, report, "cards", Card, values["id"], values)
    for values in parsed.payees:
        _upsert(session, report, "payees", Payee, values["id"], values)
    for values in parsed.loans:
        _upsert(session, report, "loans", Loan, values["id"], values)
    session.flush()
    for values in parsed.instalments:
        row = session.scalar(
            select(LoanInstalment).where(
                LoanInstalment.loan_id == values["loan_id"], LoanInstalment.seq == values["seq"]
            )
        )
        if row is None:
            session.add(LoanInstalment(**values))
            report._count("loan_instalments", True)
        else:
            _upsert(session, report, "loan_instalments", LoanInstalment, row.id, values)
    for values in parsed.deposits:
        _upsert(session, report, "deposits", Deposit, values["id"], values)
    for values in parsed.branches:
        _upsert(session, report, "branches", Branch, values["id"], values)
    for values in parsed.interest_rates:
        query = select(InterestRate).where(InterestRate.product == values["product"])
        query = query.where(
            InterestRate.term_months.is_(None)
            if values["term_months"] is None
            else InterestRate.term_months == values["term_months"]
        )
        rate_row = session.scalar(query)
        if rate_row is None:
            session.add(InterestRate(**values))
            report._count("interest_rates", True)
        else:
            _upsert(session, report, "interest_rates", InterestRate, rate_row.id, values)
    for values in parsed.exchange_rates:
        _upsert(session, report, "exchange_rates", ExchangeRate, values["currency"], values)
    session.flush()

    # Money: historic events first (for new accounts and new transfers), then reconciliation.
    events: list[_Event] = []
    for account_id in sorted(new_accounts):
        account = session.get(Account, account_id)
        assert account is not None
        counter = CARD_SETTLEMENT_ACCOUNT_ID if account.kind == "credit" else CLEARING_ACCOUNT_ID
        for line in parsed.history.get(account_id, []):
            events.append(
                _Event(
                    line["at"],
                    len(events),
                    "history",
                    line["description"],
                    [
                        (account_id, line["amount"], line["description"], line["counterparty"]),
                        (counter, -line["amount"], line["description"], account.name),
                    ],
                )
            )
    for values in parsed.transfers:
        if session.get(Transfer, values["id"]) is not None:
            continue  # past transfers are immutable once loaded
        payee = session.get(Payee, values["payee_id"])
        customer = session.get(Customer, values["customer_id"])
        assert payee is not None and customer is not None
        journal_event = None
        if values["status"] == "completed":
            target = payee.internal_account_id or CLEARING_ACCOUNT_ID
            tail = f"（尾号{payee.account_last4}）" if payee.account_last4 else ""
            journal_event = _Event(
                values["executed_at"] or values["created_at"],
                len(events),
                "transfer",
                f"transfer {values['id']}",
                [
                    (values["source_account_id"], -values["amount"], f"转账给{payee.name}{tail}", payee.name),
                    (target, values["amount"], f"{customer.name}转入", customer.name),
                ],
                transfer_id=values["id"],
            )
            events.append(journal_event)
        session.add(
            Transfer(
                id=values["id"],
                customer_id=values["customer_id"],
                source_account_id=values["source_account_id"],
                payee_id=values["payee_id"],
                amount=values["amount"],
                currency="CNY",
                channel=values["channel"],
                idempotency_key=f"sandbox:{values['id']}",
                status=values["status"],
                failure_reason=values["failure_reason"],
                created_at=values["created_at"],
                updated_at=values["executed_at"] or values["created_at"],
                authorized_at=values["created_at"] if values["status"] != "cancelled" else None,
                executed_at=values["executed_at"],
            )
        )
        report._count("transfers", True)
    session.flush()

    # Opening journals for new accounts: declared balance minus what the events will add.
    net: dict[str, Decimal] = {}
    first_event: dict[str, dt.datetime] = {}
    for event in events:
        for account_id, amount, _, _ in event.legs:
            net[account_id] = net.get(account_id, Decimal("0.00")) + amount
            first_event[account_id] = min(first_event.get(account_id, event.at), event.at)
    for account_id in sorted(new_accounts):
        account = session.get(Account, account_id)
        assert account is not None
        opening = (targets[account_id] - net.get(account_id, Decimal("0.00"))).quantize(CENT)
        at = account.opened_at
        if account_id in first_event:
            at = min(at, first_event[account_id] - dt.timedelta(days=1))
        account.opened_at = at
        if opening != 0:
            _post_unchecked(
                session,
                "opening",
                f"opening balance {account_id}",
                at,
                [
                    (account_id, opening, "开户余额", None),
                    (OPENING_ACCOUNT_ID, -opening, f"opening {account_id}", None),
                ],
            )
            report.journals += 1
    for event in sorted(events, key=lambda e: (e.at, e.order)):
        journal_id = _post_unchecked(session, event.kind, event.description, event.at, event.legs)
        report.journals += 1
        if event.transfer_id is not None:
            transfer = session.get(Transfer, event.transfer_id)
            assert transfer is not None
            transfer.journal_id = journal_id
    for account_id, target_balance in sorted(targets.items()):
        account = session.get(Account, account_id)
        assert account is not None
        difference = (target_balance - account.balance).quantize(CENT)
        if difference != 0:
            _post_unchecked(
                session,
                "adjustment",
                f"sandbox balance adjustment {account_id}",
                now,
                [
                    (account_id, difference, "余额调整", None),
                    (OPENING_ACCOUNT_ID, -difference, f"adjustment {account_id}", None),
                ],
            )
            report.journals += 1
    for customer_values in parsed.customers:
        if customer_values["_pin"] is not None and pin_key is not None:
            customer = session.get(Customer, customer_values["id"])
            assert customer is not None
            customer.pin_digest = digest_code(pin_key, customer_values["_pin"])
    for entry in parsed.watchlist:
        exists = session.scalar(
            select(RiskWatchlistEntry.id).where(
                RiskWatchlistEntry.kind == entry["kind"], RiskWatchlistEntry.key == entry["key"]
            )
        )
        if exists is None:
            session.add(RiskWatchlistEntry(**entry, added_at=now))
            report._count("risk_watchlist", True)
    session.flush()
    return report


def _post_unchecked(
    session: Session,
    kind: str,
    description: str,
    at: dt.datetime,
    legs: list[tuple[str, Decimal, str, str | None]],
) -> int:
    """Post historic data: documents may pass through states a live payment would refuse."""
    accounts = {a.id: a for a in session.scalars(select(Account).where(Account.id.in_({leg[0] for leg in legs})))}
    journal = post(
        session,
        kind=kind,
        description=description,
        created_at=at,
        legs=[Leg(accounts[aid], amount, text, counterparty) for aid, amount, text, counterparty in legs],
        check_funds=False,
    )
    return journal.id


def load_file(
    session: Session, path: str | Path, *, now: dt.datetime | None = None, pin_key: str | None = None
) -> LoadReport:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise SandboxFormatError(
            f"$ (line {error.lineno}, column {error.colno})", f"invalid JSON: {error.msg}"
        ) from None
    return load_sandbox(session, data, now=now, pin_key=pin_key)


def demo_document() -> dict[str, Any]:
    return dict(json.loads(DEMO_BANK_PATH.read_text(encoding="utf-8")))


def seed_demo_if_empty(
    session: Session, *, now: dt.datetime | None = None, pin_key: str | None = None
) -> LoadReport | None:
    """Load bankcore/demo_bank.json when there are no customers yet; None when the bank already has some."""
    if session.scalar(select(Customer.id).limit(1)) is not None:
        return None
    return load_sandbox(session, demo_document(), now=now, pin_key=pin_key)


def outbox(session: Session, customer_id: str, limit: int = 20) -> list[SmsView]:
    """The customer's SMS, newest first (the sandbox stands in for their phone)."""
    rows = session.scalars(
        select(SmsOutbox)
        .where(SmsOutbox.customer_id == customer_id)
        .order_by(SmsOutbox.created_at.desc(), SmsOutbox.id.desc())
        .limit(limit)
    )
    return [SmsView(s.id, s.customer_id, s.phone, s.purpose, s.text, s.created_at) for s in rows]
