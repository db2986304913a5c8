"""The public cross-channel formats: events, customer profiles and labelled contacts (JSON Lines).

Formats (docs: ../shared/ARCHITECTURE.md, "Data that crosses boundaries"):

- event:   {"customer_id", "ts", "channel", "type", "attrs": {}}  plus an optional client "event_id"
- profile: {"customer_id", "attrs": {}}
- contact: {"customer_id", "ts", "channel", "intent"}              (intent may be absent when unlabelled)

Event types and attribute keys are open vocabularies: anything well formed is accepted. What is checked is
the shape: identifiers, ISO-8601 timestamps (UTC; a naive one is read as UTC), the channel vocabulary,
and the size of `attrs`. Each parse error names the field, so a batch or a file can say which record and
which field is wrong.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

UTC = dt.UTC

CHANNELS: tuple[str, ...] = ("app", "wecom", "miniprogram", "ivr", "branch", "core")

MAX_ID_CHARS = 64
MAX_TYPE_CHARS = 64
MAX_INTENT_CHARS = 64
MAX_ATTRS_BYTES = 4096
MAX_ATTRS_DEPTH = 3
# Timestamps outside this range are data errors (epoch zero, year 9999), not history.
EARLIEST_TS = dt.datetime(2000, 1, 1, tzinfo=UTC)
LATEST_TS = dt.datetime(2100, 1, 1, tzinfo=UTC)


class RecordError(ValueError):
    """A record that does not follow its public format; `field` names what is wrong."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.reason = message


@dataclass(frozen=True, slots=True)
class Event:
    customer_id: str
    ts: dt.datetime
    channel: str
    type: str
    attrs: Mapping[str, Any] = field(default_factory=dict)
    event_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "customer_id": self.customer_id,
            "ts": format_ts(self.ts),
            "channel": self.channel,
            "type": self.type,
            "attrs": dict(self.attrs),
        }
        if self.event_id is not None:
            out["event_id"] = self.event_id
        return out


@dataclass(frozen=True, slots=True)
class Profile:
    customer_id: str
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"customer_id": self.customer_id, "attrs": dict(self.attrs)}


@dataclass(frozen=True, slots=True)
class Contact:
    customer_id: str
    ts: dt.datetime
    channel: str
    intent: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"customer_id": self.customer_id, "ts": format_ts(self.ts), "channel": self.channel}
        if self.intent is not None:
            out["intent"] = self.intent
        return out


def format_ts(ts: dt.datetime) -> str:
    """ISO-8601 in UTC with a Z, microseconds only when present."""
    text = ts.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


def parse_ts(value: Any, field_name: str = "ts") -> dt.datetime:
    if not isinstance(value, str) or not value.strip():
        raise RecordError(field_name, "must be an ISO-8601 timestamp string")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = dt.datetime.fromisoformat(text)
        # astimezone overflows at the ends of the calendar ("0001-01-01T00:00+01:00").
        parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except ValueError:
        raise RecordError(field_name, f"not an ISO-8601 timestamp: {value[:40]!r}") from None
    except OverflowError:
        raise RecordError(field_name, f"out of range (2000..2100): {value[:40]!r}") from None
    if not EARLIEST_TS <= parsed < LATEST_TS:
        raise RecordError(field_name, f"out of range (2000..2100): {value[:40]!r}")
    return parsed


def _text(record: Mapping[str, Any], key: str, max_chars: int) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise RecordError(key, "must be a non-empty string")
    value = value.strip()
    if len(value) > max_chars:
        raise RecordError(key, f"longer than {max_chars} characters")
    if any(ord(ch) < 32 for ch in value):
        raise RecordError(key, "contains control characters")
    if not _encodable(value):
        raise RecordError(key, "not valid Unicode (lone surrogate)")
    return value


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _preview(value: Any) -> str:
    """A short, always-printable rendering of a bad value for an error message."""
    try:
        text = str(value)
    except ValueError:  # an int beyond Python's str() digit limit
        return f"<{type(value).__name__}>"
    return text[:40]


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether objects and lists nest more than `limit` levels. Breadth-first rather than recursive, so a
    pathologically deep value cannot exhaust the stack (json.dumps would)."""
    level: list[Any] = [value]
    depth = 0
    while True:
        containers = [item for item in level if isinstance(item, Mapping | list)]
        if not containers:
            return False
        depth += 1
        if depth > limit:
            return True
        level = [child for item in containers for child in (item.values() if isinstance(item, Mapping) else item)]


def _attrs(record: Mapping[str, Any]) -> dict[str, Any]:
    value = record.get("attrs", {})
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RecordError("attrs", "must be a JSON object")
    if not all(isinstance(key, str) and key for key in value):
        raise RecordError("attrs", "keys must be non-empty strings")
    if _deeper_than(value, MAX_ATTRS_DEPTH):
        raise RecordError("attrs", f"nested deeper than {MAX_ATTRS_DEPTH} levels")
    try:
        encoded = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise RecordError("attrs", f"not JSON-serialisable: {str(exc)[:80]}") from None
    if not _encodable(encoded):
        raise RecordError("attrs", "not valid Unicode (lone surrogate)")
    if len(encoded.encode()) > MAX_ATTRS_BYTES:
        raise RecordError("attrs", f"larger than {MAX_ATTRS_BYTES} bytes")
    return dict(value)


def _channel(record: Mapping[str, Any]) -> str:
    value = record.get("channel")
    if value not in CHANNELS:
        raise RecordError("channel", f"must be one of {', '.join(CHANNELS)}; got {_preview(value)!r}")
    return str(value)


def _object(record: Any) -> Mapping[str, Any]:
    if not isinstance(record, Mapping):
        raise RecordError("record", "must be a JSON object")
    return record


def parse_event(record: Any) -> Event:
    record = _object(record)
    event_id = record.get("event_id")
    if event_id is not None:
        event_id = _text(record, "event_id", MAX_ID_CHARS)
    return Event(
        customer_id=_text(record, "customer_id", MAX_ID_CHARS),
        ts=parse_ts(record.get("ts")),
        channel=_channel(record),
        type=_text(record, "type", MAX_TYPE_CHARS),
        attrs=_attrs(record),
        event_id=event_id,
    )


def parse_profile(record: Any) -> Profile:
    record = _object(record)
    return Profile(customer_id=_text(record, "customer_id", MAX_ID_CHARS), attrs=_attrs(record))


def parse_contact(record: Any, *, require_intent: bool = False) -> Contact:
    record = _object(record)
    intent = record.get("intent")
    if intent is not None or require_intent:
        intent = _text(record, "intent", MAX_INTENT_CHARS)
    return Contact(
        customer_id=_text(record, "customer_id", MAX_ID_CHARS),
        ts=parse_ts(record.get("ts")),
        channel=_channel(record),
        intent=intent,
    )


T = TypeVar("T")


class FileRecordError(ValueError):
    """A bad line in a JSON Lines file: which file, which line, which field."""

    def __init__(self, path: Path, line: int, error: RecordError | str) -> None:
        super().__init__(f"{path}:{line}: {error}")
        self.path = path
        self.line = line


def json_lines(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, decoded JSON) for each non-blank line of a JSON Lines file; a line that is not JSON raises."""
    path = Path(path)
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise FileRecordError(path, number, f"not JSON: {exc.msg}") from None


def read_jsonl(path: str | Path, parse: Any) -> Iterator[Any]:
    """Parsed records of a JSON Lines file, in order; blank lines skipped; the first bad line raises."""
    for number, record in json_lines(path):
        try:
            yield parse(record)
        except RecordError as exc:
            raise FileRecordError(Path(path), number, exc) from None


def write_jsonl(path: str | Path, records: Iterator[Any] | list[Any]) -> int:
    """Writes records (with `to_json` or plain dicts) as JSON Lines; returns how many."""
    count = 0
    with Path(path).open("w", encoding="utf-8") as handle:
        for record in records:
            data = record.to_json() if hasattr(record, "to_json") else record
            handle.write(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n")
            count += 1
    return count


# The gateway's channel names, mapped to the public vocabulary: the H5 web chat is the bank's own digital
# channel, as the app is; the phone line is the IVR.
_GATEWAY_TO_PUBLIC = {"webchat": "app", "web": "app", "phone": "ivr", "sip": "ivr"}


def public_channel(gateway_channel: str) -> str:
    """The public channel (one of CHANNELS) of a gateway channel name; unknown names map to 'app'."""
    if gateway_channel in CHANNELS:
        return gateway_channel
    return _GATEWAY_TO_PUBLIC.get(gateway_channel, "app")
