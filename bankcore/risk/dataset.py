"""The public labelled-set format of transfers, read into RiskInputs by replaying each customer's history.

A labelled set is a directory with two JSON Lines files:

- `transfers.jsonl`: one money movement per line (format below), in any order;
- `events.jsonl`: cross-channel events in the public event format of `bankcore.events`
  (`{"customer_id", "ts", "channel", "type", "attrs"}`); optional (no file: no events).

One transfers.jsonl record::

    {"transfer_id": "T0001",            # unique in the file, non-empty, at most 64 characters
     "customer_id": "C001",             # as in events.jsonl
     "ts": "2025-03-01T09:30:00Z",      # ISO-8601; UTC when naive
     "channel": "app",                  # app | wecom | miniprogram | ivr | branch | core
     "amount": "1234.50",               # string or number, > 0
     "currency": "CNY",                 # optional, default CNY (three capital letters)
     "kind": "transfer",                # optional: transfer (default) | card_repayment | loan_repayment
     "payee": {"key": "icbc|1234|zhangsan",   # required for a transfer; null or absent for repayments
               "fraud_list": false,           # optional, default false
               "cross_border": false},        # optional, default false
     "session": {"input_mode": "text",        # optional object; text (default) | voice | keypad | button
                 "device_id": "D1",           # string or null (default null: the channel has no device)
                 "device_known": true,        # true | false | null (default null)
                 "caller_id_mismatch": false, # default false
                 "failed_verifications_24h": 0,   # integer >= 0, default 0
                 "utterances": ["给妈妈转两千"]}, # strings, oldest first, default []
     "timezone": "Asia/Shanghai",       # optional IANA zone of the customer, default Asia/Shanghai
     "executed": true,                  # optional, default true: the money moved (enters later history)
     "label": "scam",                   # optional: legit | scam | null (unlabelled records can be scored)
     "pattern": "coached"}              # optional free text (at most 64 characters) or null

Keys not listed are ignored, so producers may add their own; the listed ones are checked and an error names
the file, the line and the field (`transfers.jsonl:12: payee.key: must be a non-empty string`).

Reading replays each customer's records in time order (ties in file order). A record's history is the
customer's earlier executed transfers (kind transfer) of the last HISTORY_DAYS days; payees paid only before
that go to `older_payees`, so a payee is new only if the file never shows it paid before. Its events are the
customer's events of the EVENT_DAYS days up to and including its timestamp. Repayments have no payee and so
never enter history. Records that were not executed are assessed but never become history.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import math
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any
from zoneinfo import ZoneInfo

from bankcore.events import (
    CHANNELS,
    Event,
    FileRecordError,
    RecordError,
    format_ts,
    json_lines,
    parse_event,
    parse_ts,
    read_jsonl,
)
from bankcore.risk.signals import EVENT_DAYS, HISTORY_DAYS, INPUT_MODES, KINDS, PastTransfer, RiskInput

TRANSFERS_FILE = "transfers.jsonl"
EVENTS_FILE = "events.jsonl"
LABELS = ("legit", "scam")
MAX_ID_CHARS = 64
MAX_PAYEE_KEY_CHARS = 256
MAX_UTTERANCES = 200
MAX_UTTERANCE_CHARS = 2000
# Beyond any real transfer; larger values are data errors (a misplaced decimal point, a card number).
MAX_AMOUNT = Decimal("1e12")
HISTORY_SPAN = dt.timedelta(days=HISTORY_DAYS)
EVENT_SPAN = dt.timedelta(days=EVENT_DAYS)


@dataclass(frozen=True, slots=True)
class Session:
    """What the channel knew about the conversation in which the movement was requested."""

    input_mode: str = "text"
    device_id: str | None = None
    device_known: bool | None = None
    caller_id_mismatch: bool = False
    failed_verifications_24h: int = 0
    utterances: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "input_mode": self.input_mode,
            "device_id": self.device_id,
            "device_known": self.device_known,
            "caller_id_mismatch": self.caller_id_mismatch,
            "failed_verifications_24h": self.failed_verifications_24h,
            "utterances": list(self.utterances),
        }


@dataclass(frozen=True, slots=True)
class TransferRecord:
    """One line of transfers.jsonl, parsed."""

    transfer_id: str
    customer_id: str
    ts: dt.datetime
    channel: str
    amount: Decimal
    currency: str = "CNY"
    kind: str = "transfer"
    payee_key: str | None = None
    payee_on_fraud_list: bool = False
    cross_border: bool = False
    session: Session = field(default_factory=Session)
    timezone: str = "Asia/Shanghai"
    executed: bool = True
    label: str | None = None
    pattern: str | None = None

    def to_json(self) -> dict[str, Any]:
        payee = (
            None
            if self.payee_key is None
            else {"key": self.payee_key, "fraud_list": self.payee_on_fraud_list, "cross_border": self.cross_border}
        )
        return {
            "transfer_id": self.transfer_id,
            "customer_id": self.customer_id,
            "ts": format_ts(self.ts),
            "channel": self.channel,
            "amount": str(self.amount),
            "currency": self.currency,
            "kind": self.kind,
            "payee": payee,
            "session": self.session.to_json(),
            "timezone": self.timezone,
            "executed": self.executed,
            "label": self.label,
            "pattern": self.pattern,
        }


@dataclass(frozen=True)
class LabelledTransfer:
    """A movement with everything the risk service would have known, and its label when the set has one."""

    risk: RiskInput
    label: str | None
    pattern: str | None
    transfer_id: str


class LabelledSetError(ValueError):
    """A labelled set that cannot be read: a missing file or a bad record (file, line and field named)."""


def _text(value: Any, name: str, max_chars: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RecordError(name, "must be a non-empty string")
    value = value.strip()
    if len(value) > max_chars:
        raise RecordError(name, f"longer than {max_chars} characters")
    if any(ord(ch) < 32 for ch in value):
        raise RecordError(name, "contains control characters")
    return value


def _optional_text(value: Any, name: str, max_chars: int) -> str | None:
    return None if value is None else _text(value, name, max_chars)


def _bool(value: Any, name: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RecordError(name, f"must be true or false; got {str(value)[:40]!r}")
    return value


def _amount(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise RecordError("amount", "must be a decimal string or a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise RecordError("amount", "must be finite")
    try:
        amount = Decimal(value.strip() if isinstance(value, str) else str(value))
    except InvalidOperation:
        raise RecordError("amount", f"not a number: {str(value)[:40]!r}") from None
    if not amount.is_finite() or amount <= 0:
        raise RecordError("amount", f"must be a finite number > 0; got {str(value)[:40]!r}")
    if amount > MAX_AMOUNT:
        raise RecordError("amount", f"larger than {MAX_AMOUNT:f}")
    return amount


@lru_cache(maxsize=256)
def _known_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except Exception:  # ZoneInfoNotFoundError, ValueError for malformed keys
        return False
    return True


def _session(value: Any) -> Session:
    if value is None:
        return Session()
    if not isinstance(value, Mapping):
        raise RecordError("session", "must be a JSON object or null")
    mode = value.get("input_mode", "text")
    if mode is None:
        mode = "text"
    if mode not in INPUT_MODES:
        raise RecordError("session.input_mode", f"must be one of {', '.join(INPUT_MODES)}; got {str(mode)[:40]!r}")
    device_id = _optional_text(value.get("device_id"), "session.device_id", MAX_ID_CHARS)
    known = value.get("device_known")
    if known is not None and not isinstance(known, bool):
        raise RecordError("session.device_known", "must be true, false or null")
    failed = value.get("failed_verifications_24h", 0)
    if failed is None:
        failed = 0
    if isinstance(failed, bool) or not isinstance(failed, int) or failed < 0:
        raise RecordError("session.failed_verifications_24h", "must be an integer >= 0")
    utterances = value.get("utterances", [])
    if utterances is None:
        utterances = []
    if not isinstance(utterances, list):
        raise RecordError("session.utterances", "must be a list of strings")
    if len(utterances) > MAX_UTTERANCES:
        raise RecordError("session.utterances", f"more than {MAX_UTTERANCES} utterances")
    for index, text in enumerate(utterances):
        if not isinstance(text, str):
            raise RecordError(f"session.utterances[{index}]", "must be a string")
        if len(text) > MAX_UTTERANCE_CHARS:
            raise RecordError(f"session.utterances[{index}]", f"longer than {MAX_UTTERANCE_CHARS} characters")
    return Session(
        input_mode=mode,
        device_id=device_id,
        device_known=known,
        caller_id_mismatch=_bool(value.get("caller_id_mismatch"), "session.caller_id_mismatch", False),
        failed_verifications_24h=failed,
        utterances=tuple(utterances),
    )


def parse_transfer(record: Any) -> TransferRecord:
    """One transfers.jsonl record; RecordError names the field that is wrong (checked in documented order)."""
    if not isinstance(record, Mapping):
        raise RecordError("record", "must be a JSON object")
    transfer_id = _text(record.get("transfer_id"), "transfer_id", MAX_ID_CHARS)
    customer_id = _text(record.get("customer_id"), "customer_id", MAX_ID_CHARS)
    ts = parse_ts(record.get("ts"))
    channel = record.get("channel")
    if channel not in CHANNELS:
        raise RecordError("channel", f"must be one of {', '.join(CHANNELS)}; got {str(channel)[:40]!r}")
    amount = _amount(record.get("amount"))
    currency = record.get("currency", "CNY")
    if currency is None:
        currency = "CNY"
    if not (isinstance(currency, str) and len(currency) == 3 and currency.isascii() and currency.isupper()):
        raise RecordError("currency", f"must be a three-letter ISO code such as CNY; got {str(currency)[:40]!r}")
    kind = record.get("kind", "transfer")
    if kind is None:
        kind = "transfer"
    if kind not in KINDS:
        raise RecordError("kind", f"must be one of {', '.join(KINDS)}; got {str(kind)[:40]!r}")
    payee = record.get("payee")
    payee_key: str | None = None
    fraud_list = cross_border = False
    if kind == "transfer":
        if not isinstance(payee, Mapping):
            raise RecordError("payee", "a transfer needs a payee object with a key")
        payee_key = _text(payee.get("key"), "payee.key", MAX_PAYEE_KEY_CHARS)
        fraud_list = _bool(payee.get("fraud_list"), "payee.fraud_list", False)
        cross_border = _bool(payee.get("cross_border"), "payee.cross_border", False)
    elif payee is not None:
        raise RecordError("payee", f"must be null for a {kind} (the customer's own product)")
    session = _session(record.get("session"))
    timezone = record.get("timezone", "Asia/Shanghai")
    if timezone is None:
        timezone = "Asia/Shanghai"
    if not isinstance(timezone, str) or not _known_zone(timezone):
        raise RecordError("timezone", f"not a known IANA time zone: {str(timezone)[:40]!r}")
    executed = _bool(record.get("executed"), "executed", True)
    label = record.get("label")
    if label is not None and label not in LABELS:
        raise RecordError("label", f"must be legit, scam or null; got {str(label)[:40]!r}")
    return TransferRecord(
        transfer_id=transfer_id,
        customer_id=customer_id,
        ts=ts,
        channel=channel,
        amount=amount,
        currency=currency,
        kind=kind,
        payee_key=payee_key,
        payee_on_fraud_list=fraud_list,
        cross_border=cross_border,
        session=session,
        timezone=timezone,
        executed=executed,
        label=label,
        pattern=_optional_text(record.get("pattern"), "pattern", MAX_ID_CHARS),
    )


def read_transfers(path: str | Path) -> list[tuple[int, TransferRecord]]:
    """(line number, record) for every record of a transfers.jsonl; the first bad line raises FileRecordError."""
    path = Path(path)
    out: list[tuple[int, TransferRecord]] = []
    first_line: dict[str, int] = {}
    for number, raw in json_lines(path):
        try:
            record = parse_transfer(raw)
        except RecordError as error:
            raise FileRecordError(path, number, error) from None
        seen = first_line.setdefault(record.transfer_id, number)
        if seen != number:
            raise FileRecordError(path, number, RecordError("transfer_id", f"duplicate of line {seen}"))
        out.append((number, record))
    return out


def _within_some_window(event: Event, transfer_times: Mapping[str, list[dt.datetime]]) -> bool:
    """Whether some transfer of the event's customer has the event in its window (sorted times per customer)."""
    times = transfer_times.get(event.customer_id)
    if times is None:
        return False
    index = bisect.bisect_left(times, event.ts)
    return index < len(times) and times[index] - event.ts < EVENT_SPAN


class _Shared:
    """One copy of each repeated string (customer IDs, event types, channels...): millions of records
    otherwise hold millions of copies of a few thousand strings."""

    def __init__(self) -> None:
        self._strings: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        return self._strings.setdefault(text, text)


_NO_ATTRS: Mapping[str, Any] = MappingProxyType({})


def _events_by_customer(
    events: Iterable[Event], transfer_times: Mapping[str, list[dt.datetime]]
) -> dict[str, list[Event]]:
    """The events some transfer will see, per customer, by time (ties keep their order).

    Everything else is dropped while streaming, so a file of millions of events costs memory only for the
    events that some assessment reads.
    """
    shared = _Shared()
    per_customer: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        if _within_some_window(event, transfer_times):
            customer = shared(event.customer_id)
            kept = Event(
                customer, event.ts, shared(event.channel), shared(event.type), event.attrs or _NO_ATTRS, event.event_id
            )
            per_customer[customer].append(kept)
    for kept_events in per_customer.values():
        kept_events.sort(key=lambda e: e.ts)
    return per_customer


def _transfer_times(
    records: Iterable[tuple[int, TransferRecord]], labelled_only: bool = False
) -> dict[str, list[dt.datetime]]:
    times: dict[str, list[dt.datetime]] = defaultdict(list)
    for _, record in records:
        if record.label is not None or not labelled_only:
            times[record.customer_id].append(record.ts)
    for values in times.values():
        values.sort()
    return times


def _risk_input(
    record: TransferRecord,
    history: tuple[PastTransfer, ...],
    events: tuple[Event, ...],
    older: frozenset[str],
    shared: _Shared,
) -> RiskInput:
    session = record.session
    return RiskInput(
        kind=shared(record.kind),
        customer_id=shared(record.customer_id),
        ts=record.ts,
        amount=record.amount,
        currency=shared(record.currency),
        payee_key=record.payee_key,
        payee_on_fraud_list=record.payee_on_fraud_list,
        cross_border=record.cross_border,
        channel=shared(record.channel),
        input_mode=shared(session.input_mode),
        device_id=session.device_id,
        device_known=session.device_known,
        caller_id_mismatch=session.caller_id_mismatch,
        failed_verifications_24h=session.failed_verifications_24h,
        utterances=session.utterances,
        timezone=shared(record.timezone),
        history=history,
        events=events,
        older_payees=older,
    )


def replay(
    records: Iterable[tuple[int, TransferRecord]],
    events_by_customer: Mapping[str, list[Event]],
    *,
    labelled_only: bool = False,
) -> list[LabelledTransfer]:
    """RiskInputs for records (line number, record), each with its customer's history and events before it.

    The result is in file order (by line number). With `labelled_only`, unlabelled records are history for
    the others but are not returned.
    """
    shared = _Shared()
    by_customer: dict[str, list[tuple[dt.datetime, int, TransferRecord]]] = defaultdict(list)
    for number, record in records:
        by_customer[record.customer_id].append((record.ts, number, record))
    out: list[tuple[int, LabelledTransfer]] = []
    for customer_id, rows in by_customer.items():
        rows.sort(key=lambda row: (row[0], row[1]))
        events = events_by_customer.get(customer_id, [])
        event_times = [event.ts for event in events]
        window: deque[PastTransfer] = deque()
        older: set[str] = set()
        older_frozen: frozenset[str] = frozenset()
        for ts, number, record in rows:
            horizon = ts - HISTORY_SPAN
            moved = False
            while window and window[0].ts <= horizon:
                older.add(window.popleft().payee_key)
                moved = True
            if moved:
                older_frozen = frozenset(older)
            if record.label is not None or not labelled_only:
                low = bisect.bisect_right(event_times, ts - EVENT_SPAN)
                high = bisect.bisect_right(event_times, ts)
                risk = _risk_input(record, tuple(window), tuple(events[low:high]), older_frozen, shared)
                out.append((number, LabelledTransfer(risk, record.label, record.pattern, record.transfer_id)))
            if record.executed and record.payee_key is not None:
                window.append(PastTransfer(ts=ts, amount=record.amount, payee_key=record.payee_key))
    out.sort(key=lambda item: item[0])
    return [item for _, item in out]


def read_labelled_set(directory: str | Path, *, labelled_only: bool = False) -> list[LabelledTransfer]:
    """Every record of a labelled set as a LabelledTransfer, in transfers.jsonl order.

    With `labelled_only` (training, evaluation), unlabelled records serve as history only, which saves the
    memory of their assessments. Raises LabelledSetError when transfers.jsonl is missing, FileRecordError
    for the first bad line of either file (every line is validated, used or not).
    """
    directory = Path(directory)
    transfers_path = directory / TRANSFERS_FILE
    if not transfers_path.is_file():
        raise LabelledSetError(f"{directory}: no {TRANSFERS_FILE} (a labelled set is a directory with it)")
    records = read_transfers(transfers_path)
    events_path = directory / EVENTS_FILE
    events = read_jsonl(events_path, parse_event) if events_path.is_file() else iter(())
    windows = _transfer_times(records, labelled_only)
    return replay(records, _events_by_customer(events, windows), labelled_only=labelled_only)


def labelled_transfers(
    transfers: Iterable[TransferRecord], events: Iterable[Event], *, labelled_only: bool = False
) -> list[LabelledTransfer]:
    """The same as reading a set written with these records, without the files (simulations, tests)."""
    records = list(enumerate(transfers, start=1))
    windows = _transfer_times(records, labelled_only)
    return replay(records, _events_by_customer(events, windows), labelled_only=labelled_only)


class LabelledSetWriter:
    """Writes a labelled set chunk by chunk (customer by customer), so memory stays flat for any size.

    Both files stay open while the set is written, which `bankcore.events.write_jsonl` (one file, one call)
    cannot do; the lines are encoded the same way.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.counts = {"transfers": 0, "events": 0}
        self._transfers: IO[str] | None = None
        self._events: IO[str] | None = None

    def __enter__(self) -> LabelledSetWriter:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._transfers = (self.directory / TRANSFERS_FILE).open("w", encoding="utf-8")
        self._events = (self.directory / EVENTS_FILE).open("w", encoding="utf-8")
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in (self._transfers, self._events):
            if handle is not None:
                handle.close()
        self._transfers = self._events = None

    def write(self, transfers: Iterable[TransferRecord], events: Iterable[Event]) -> None:
        if self._transfers is None or self._events is None:
            raise RuntimeError("LabelledSetWriter is used as a context manager")
        for record in transfers:
            self._transfers.write(_line(record.to_json()))
            self.counts["transfers"] += 1
        for event in events:
            self._events.write(_line(event.to_json()))
            self.counts["events"] += 1


def _line(data: Mapping[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n"


def write_labelled_set(
    directory: str | Path, transfers: Iterable[TransferRecord], events: Iterable[Event]
) -> dict[str, int]:
    """Writes a labelled set (the directory is created) in the order given; returns the counts."""
    with LabelledSetWriter(directory) as writer:
        writer.write(transfers, events)
    return dict(writer.counts)
