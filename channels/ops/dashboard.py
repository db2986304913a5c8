"""The dashboard (/ops/dashboard): fallback rate, handoff rate, intent mix and mean confidence over time.

Figures are aggregated in SQL, per day (per hour for ranges of two days or less, UTC), optionally for one channel:
- messages, fallbacks (`nlu_fallback` or confidence under 0.5, as the inbox counts them), the customers' requests
  for a person (the `human_handoff` intent), mean confidence and active conversations come from the `ops_inbox`
  copy of the tracker store's user turns (synced first; its (channel, ts) and ts indexes serve the range);
- handoffs come from the bank's `handoffs` table, where `action_human_handoff` (and the risk checks) record every
  hand-off to a person, whatever caused it: asked for, repeated fallbacks, a held transfer.
Fallback rate = fallbacks / messages; handoff rate = handoffs / active conversations of the bucket.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import Session

from bankcore.models import Handoff, OpsInboxItem
from channels.ops import inbox, svg_charts
from channels.ops.pages import TRACKER, in_bank, now, render, requires

HANDOFF_INTENT = "human_handoff"
DEFAULT_DAYS = 14
MAX_DAYS = 366
TOP_INTENTS = 8
OTHER = "其他"


@dataclass(frozen=True)
class Bucket:
    label: str
    messages: int = 0
    fallbacks: int = 0
    handoff_requests: int = 0
    conversations: int = 0
    handoffs: int = 0
    mean_confidence: float | None = None

    @property
    def fallback_rate(self) -> float | None:
        return self.fallbacks / self.messages if self.messages else None

    @property
    def handoff_rate(self) -> float | None:
        return self.handoffs / self.conversations if self.conversations else None

    @property
    def handoff_request_rate(self) -> float | None:
        return self.handoff_requests / self.messages if self.messages else None


@dataclass
class Figures:
    since: dt.date
    until: dt.date
    channel: str | None
    hourly: bool
    buckets: list[Bucket] = field(default_factory=list)
    intents: list[tuple[str, int]] = field(default_factory=list)  # the whole range, most frequent first
    intent_mix: dict[str, list[int]] = field(default_factory=dict)  # the top intents and OTHER, per bucket

    @property
    def total(self) -> Bucket:
        weighted = sum(b.mean_confidence * b.messages for b in self.buckets if b.mean_confidence is not None)
        messages = sum(b.messages for b in self.buckets)
        return Bucket(
            "total",
            messages=messages,
            fallbacks=sum(b.fallbacks for b in self.buckets),
            handoff_requests=sum(b.handoff_requests for b in self.buckets),
            conversations=sum(b.conversations for b in self.buckets),
            handoffs=sum(b.handoffs for b in self.buckets),
            mean_confidence=weighted / messages if messages else None,
        )


def _bucket(column: Any, dialect: str, hourly: bool) -> ColumnElement[str]:
    """The UTC day ('YYYY-MM-DD') or hour ('YYYY-MM-DD HH') of a timestamp column, as text."""
    if dialect == "sqlite":
        # SQLite keeps our UTC timestamps as 'YYYY-MM-DD HH:MM:SS[.ffffff]' text.
        return func.substr(column, 1, 13 if hourly else 10)
    return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD HH24" if hourly else "YYYY-MM-DD")


def _labels(since: dt.date, until: dt.date, hourly: bool) -> list[str]:
    days = [since + dt.timedelta(days=i) for i in range((until - since).days + 1)]
    if not hourly:
        return [d.isoformat() for d in days]
    return [f"{d.isoformat()} {h:02d}" for d in days for h in range(24)]


def figures(
    session: Session, *, since: dt.date, until: dt.date, channel: str | None = None, top: int = TOP_INTENTS
) -> Figures:
    """The dashboard's figures from `since` to `until` (whole UTC days, both included)."""
    hourly = (until - since).days < 2
    dialect = session.get_bind().dialect.name
    start = dt.datetime.combine(since, dt.time(), dt.UTC)
    end = dt.datetime.combine(until + dt.timedelta(days=1), dt.time(), dt.UTC)
    bucket = _bucket(OpsInboxItem.ts, dialect, hourly).label("bucket")
    where = [OpsInboxItem.ts >= start, OpsInboxItem.ts < end]
    if channel:
        where.append(OpsInboxItem.channel == channel)
    rows = session.execute(
        select(
            bucket,
            func.count(),
            func.sum(case((OpsInboxItem.is_fallback, 1), else_=0)),
            func.sum(case((OpsInboxItem.intent == HANDOFF_INTENT, 1), else_=0)),
            func.count(func.distinct(OpsInboxItem.conversation)),
            func.avg(OpsInboxItem.confidence),
        )
        .where(*where)
        .group_by(bucket)
    ).all()
    handoff_bucket = _bucket(Handoff.created_at, dialect, hourly).label("bucket")
    handoff_where = [Handoff.created_at >= start, Handoff.created_at < end]
    if channel:
        handoff_where.append(Handoff.channel == channel)
    handoffs = dict(
        session.execute(select(handoff_bucket, func.count()).where(*handoff_where).group_by(handoff_bucket)).all()
    )
    by_label = {str(r[0]): r for r in rows}
    result = Figures(since, until, channel, hourly)
    labels = _labels(since, until, hourly)
    for label in labels:
        row = by_label.get(label)
        result.buckets.append(
            Bucket(
                label,
                messages=int(row[1]) if row else 0,
                fallbacks=int(row[2] or 0) if row else 0,
                handoff_requests=int(row[3] or 0) if row else 0,
                conversations=int(row[4]) if row else 0,
                handoffs=int(handoffs.get(label, 0)),
                mean_confidence=float(row[5]) if row and row[5] is not None else None,
            )
        )
    mix = session.execute(
        select(bucket, OpsInboxItem.intent, func.count()).where(*where).group_by(bucket, OpsInboxItem.intent)
    ).all()
    totals: dict[str, int] = {}
    for _, intent, count in mix:
        totals[intent] = totals.get(intent, 0) + int(count)
    result.intents = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    shown = [name for name, _ in result.intents[:top]]
    index = {label: i for i, label in enumerate(labels)}
    result.intent_mix = {name: [0] * len(labels) for name in shown}
    if len(result.intents) > top:
        result.intent_mix[OTHER] = [0] * len(labels)
    for label, intent, count in mix:
        column = index.get(str(label))
        if column is not None:
            result.intent_mix[intent if intent in shown else OTHER][column] += int(count)
    return result


def charts(data: Figures) -> dict[str, Any]:
    short = [b.label[11:] + "时" if data.hourly else b.label[5:] for b in data.buckets]
    return {
        "fallback": svg_charts.line_chart(
            "兜底率（未理解的消息占比）",
            short,
            [svg_charts.Series("兜底率", [b.fallback_rate for b in data.buckets])],
            chart="fallback",
        ),
        "handoff": svg_charts.line_chart(
            "转人工率",
            short,
            [
                svg_charts.Series("转人工的会话占比", [b.handoff_rate for b in data.buckets]),
                svg_charts.Series("要求转人工的消息占比", [b.handoff_request_rate for b in data.buckets]),
            ],
            chart="handoff",
        ),
        "confidence": svg_charts.line_chart(
            "平均置信度",
            short,
            [svg_charts.Series("平均置信度", [b.mean_confidence for b in data.buckets])],
            fmt=svg_charts.decimal,
            top=1.0,
            chart="confidence",
        ),
        "mix": svg_charts.stacked_shares(
            "意图构成（每段时间内的占比）",
            short,
            [svg_charts.Series(name, values) for name, values in data.intent_mix.items()],
            chart="intent-mix",
        ),
        "intents": svg_charts.ranked_bars("各意图消息数", data.intents[:20], chart="intents"),
    }


def _range(request: web.Request) -> tuple[dt.date, dt.date]:
    def day(name: str) -> dt.date | None:
        try:
            return dt.date.fromisoformat(request.query.get(name, ""))
        except ValueError:
            return None

    today = now().date()
    until = day("until") or today
    since = day("since") or until - dt.timedelta(days=DEFAULT_DAYS - 1)
    if since > until:
        since, until = until, since
    return max(since, until - dt.timedelta(days=MAX_DAYS - 1)), until


@requires("viewer")
async def dashboard_page(request: web.Request) -> web.StreamResponse:
    since, until = _range(request)
    channel = request.query.get("channel") or None
    tracker = request.app[TRACKER]

    def load(session: Session) -> tuple[Figures, list[str]]:
        inbox.sync(session, tracker)
        return figures(session, since=since, until=until, channel=channel), inbox.channels(session)

    data, channels = await in_bank(request, load)
    return render(
        request,
        "dashboard.html",
        data=data,
        total=data.total,
        charts=charts(data),
        channels=channels,
        percent=svg_charts.percent,
    )


def register(app: web.Application) -> None:
    app.router.add_get("/ops/dashboard", dashboard_page)
