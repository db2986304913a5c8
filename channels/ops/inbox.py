"""The NLU review inbox: customer messages from Rasa's tracker store, least understood first.

`sync` copies new user turns from the tracker store's `events` table (incrementally, by event id) into the indexed
`ops_inbox` table, masking one-time codes, PINs and card numbers again; `page` reads one page of it, filtered by
channel, date and status, fallbacks first and then by rising confidence, through the review index.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, false, func, insert, select, text, true
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from bankcore.models import OpsInboxItem
from bankcore.redaction import redact

logger = logging.getLogger(__name__)

FALLBACK_INTENT = "nlu_fallback"
# Below this confidence a prediction counts with the fallbacks (Rasa's FallbackClassifier threshold is near it).
LOW_CONFIDENCE = 0.5
_BATCH = 5000
PAGE_SIZE = 50


@dataclass(frozen=True)
class InboxFilter:
    channel: str | None = None
    since: dt.date | None = None
    until: dt.date | None = None
    status: str = "new"


def sync(session: Session, tracker: Engine, *, limit: int = 200_000) -> int:
    """Copy user turns newer than the last copied one; returns how many were added."""
    last = session.scalar(select(func.max(OpsInboxItem.event_id))) or 0
    added = 0
    while added < limit:
        try:
            with tracker.connect() as connection:
                rows = connection.execute(
                    text(
                        "SELECT id, sender_id, timestamp, intent_name, data FROM events "
                        "WHERE type_name = 'user' AND id > :last ORDER BY id LIMIT :batch"
                    ),
                    {"last": last, "batch": _BATCH},
                ).all()
        except (OperationalError, ProgrammingError):
            logger.info("no tracker store yet (Rasa has not stored a conversation)")
            return added
        if not rows:
            return added
        items = [item for item in (_item(row) for row in rows) if item is not None]
        if items:
            # One multi-row INSERT per batch, not ORM objects: 100,000 messages copy in a few seconds, not 15.
            session.execute(insert(OpsInboxItem), items)
        added += len(items)
        last = rows[-1][0]
    return added


def _item(row: Any) -> dict[str, Any] | None:
    event_id, sender_id, timestamp, intent_name, data = row
    try:
        event = json.loads(data or "{}")
    except ValueError:
        return None
    raw = str(event.get("text") or "")
    # Button payloads and gateway commands (/affirm, /submit_otp, /contact_opened) were never NLU guesses.
    if not raw or raw.startswith("/"):
        return None
    parse = event.get("parse_data") or {}
    intent = (parse.get("intent") or {}).get("name") or intent_name or ""
    confidence = float((parse.get("intent") or {}).get("confidence") or 0.0)
    metadata = event.get("metadata") or {}
    channel = str(metadata.get("channel") or str(sender_id).split(":", 1)[0])[:32]
    masked = redact(raw)
    entities = [
        {"entity": e.get("entity"), "value": redact(str(e.get("value"))), "start": e.get("start"), "end": e.get("end")}
        for e in parse.get("entities") or []
        if isinstance(e, dict)
    ]
    return {
        "event_id": event_id,
        "conversation": str(sender_id)[:255],
        "channel": channel,
        "ts": dt.datetime.fromtimestamp(float(timestamp or 0), dt.UTC),
        "text": masked,
        "intent": intent[:64],
        "confidence": confidence,
        "entities": entities if masked == raw else [],  # spans of a masked text would point at the wrong characters
        "is_fallback": intent == FALLBACK_INTENT or confidence < LOW_CONFIDENCE,
        "status": "new",
        "reviewed_by": None,
        "reviewed_at": None,
    }


def page(
    session: Session, where: InboxFilter, *, offset: int = 0, size: int = PAGE_SIZE
) -> tuple[list[OpsInboxItem], int]:
    """One page of the inbox and the number of items the filter matches."""
    query = select(OpsInboxItem).where(OpsInboxItem.status == where.status)
    if where.channel:
        query = query.where(OpsInboxItem.channel == where.channel)
    if where.since:
        query = query.where(OpsInboxItem.ts >= dt.datetime.combine(where.since, dt.time(), dt.UTC))
    if where.until:
        query = query.where(
            OpsInboxItem.ts < dt.datetime.combine(where.until + dt.timedelta(days=1), dt.time(), dt.UTC)
        )
    total = session.scalar(query.with_only_columns(func.count())) or 0
    # Fallbacks first, then the rest, each by rising confidence: two walks of an ascending index
    # ((status[, channel], is_fallback, confidence)) instead of one sort of every matching row, which a mixed
    # `is_fallback DESC, confidence` order needs. Only ids are paged; the page's rows are read last.
    fallbacks = session.scalar(query.with_only_columns(func.count()).where(OpsInboxItem.is_fallback == true())) or 0
    ids: list[int] = []
    for part, skip in ((True, offset), (False, max(0, offset - fallbacks))):
        if len(ids) >= size or (part and offset >= fallbacks):
            continue
        ids += session.scalars(
            query.with_only_columns(OpsInboxItem.id)
            .where(OpsInboxItem.is_fallback == (true() if part else false()))
            .order_by(OpsInboxItem.confidence, OpsInboxItem.id)
            .offset(skip)
            .limit(size - len(ids))
        ).all()
    rows = session.scalars(select(OpsInboxItem).where(OpsInboxItem.id.in_(ids))).all() if ids else []
    position = {item_id: index for index, item_id in enumerate(ids)}
    return sorted(rows, key=lambda item: position[item.id]), total


def channels(session: Session) -> list[str]:
    return list(session.scalars(select(OpsInboxItem.channel).distinct().order_by(OpsInboxItem.channel)))


def review(session: Session, item_id: int, status: str, by: str, now: dt.datetime) -> OpsInboxItem | None:
    item = session.get(OpsInboxItem, item_id)
    if item is None:
        return None
    item.status, item.reviewed_by, item.reviewed_at = status, by, now
    session.flush()
    return item
