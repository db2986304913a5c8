"""`POST /events`: other systems push cross-channel events, customer profiles and labelled contacts.

A service call, not a customer one: it authenticates with `Authorization: Bearer <BANKBOT_EVENTS_TOKEN>`
and its error messages are for engineers (English). A batch is all or nothing: every record is parsed
first, and one bad record means a 422 listing what is wrong (list, index, field) with nothing stored.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session, sessionmaker

from bankcore.database import unit_of_work
from bankcore.event_store import StoreReport, add_contacts, store_events, upsert_profiles
from bankcore.events import Contact, Event, Profile, RecordError, parse_contact, parse_event, parse_profile
from bankcore.settings import Settings
from channels.http_errors import json_error
from channels.resources import SESSION_FACTORY, SETTINGS

logger = logging.getLogger(__name__)

ROUTE = "/events"
LISTS: dict[str, Callable[[Any], Any]] = {"events": parse_event, "profiles": parse_profile, "contacts": parse_contact}
MAX_LISTED_ERRORS = 100
# The app-wide body limit is sized for chat messages; a full batch needs more. Records are budgeted at 2 KiB
# on average (attrs may reach 4 KiB, most are far smaller), so the default 1000-record batch fits in 2 MiB.
BYTES_PER_RECORD = 2048


def body_limit(settings: Settings) -> int:
    return max(settings.max_body_bytes, settings.events_max_batch * BYTES_PER_RECORD)


@dataclass
class Batch:
    events: list[Event] = field(default_factory=list)
    profiles: list[Profile] = field(default_factory=list)
    contacts: list[Contact] = field(default_factory=list)


def parse_batch(body: dict[str, Any]) -> tuple[Batch, list[dict[str, Any]]]:
    """Every record parsed; the errors (at most MAX_LISTED_ERRORS) say list, index, field and reason."""
    batch = Batch()
    errors: list[dict[str, Any]] = []
    for name, parse in LISTS.items():
        target: list[Any] = getattr(batch, name)
        for index, record in enumerate(body.get(name) or []):
            try:
                target.append(parse(record))
            except RecordError as error:
                if len(errors) < MAX_LISTED_ERRORS:
                    errors.append({"list": name, "index": index, "field": error.field, "reason": error.reason})
                else:
                    return batch, errors
    return batch, errors


@dataclass
class IngestResult:
    events: StoreReport
    profiles: int
    contacts: int

    def to_json(self) -> dict[str, Any]:
        return {
            "events": {"inserted": self.events.inserted, "duplicates": self.events.duplicates},
            "profiles": self.profiles,
            "contacts": self.contacts,
        }


def store_batch(factory: sessionmaker[Session], batch: Batch) -> IngestResult:
    """One unit of work for the whole batch: all of it is stored, or none."""
    with unit_of_work(factory) as session:
        return IngestResult(
            events=store_events(session, batch.events),
            profiles=upsert_profiles(session, batch.profiles),
            contacts=add_contacts(session, batch.contacts, source="import"),
        )


def _authorised(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented:
        return False
    return hmac.compare_digest(presented.strip().encode(), token.encode())


async def post_events(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    if not settings.events_token:
        return json_error(503, "events_disabled", "event ingestion is off: BANKBOT_EVENTS_TOKEN is not set")
    if not _authorised(request, settings.events_token):
        return json_error(401, "unauthorized", "missing or wrong service token", headers={"WWW-Authenticate": "Bearer"})

    limit = body_limit(settings)
    too_large = json_error(413, "body_too_large", f"request body larger than {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        return too_large
    try:
        raw = await request.clone(client_max_size=limit).read()
    except web.HTTPRequestEntityTooLarge:
        return too_large
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return json_error(400, "invalid_json", "the body is not JSON")
    if not isinstance(body, dict):
        return json_error(400, "invalid_body", "the body must be a JSON object with events, profiles or contacts")
    unknown = sorted(set(body) - set(LISTS))
    if unknown:
        return json_error(400, "invalid_body", f"unknown keys: {', '.join(unknown)[:200]}")
    for name in LISTS:
        value = body.get(name)
        if value is not None and not isinstance(value, list):
            return json_error(400, "invalid_body", f"{name} must be a list")
        if value is not None and len(value) > settings.events_max_batch:
            return json_error(
                413, "batch_too_large", f"{name} holds {len(value)} records; at most {settings.events_max_batch}"
            )

    # Parsing a thousand records and the database work both run off the event loop.
    batch, errors = await asyncio.to_thread(parse_batch, body)
    if errors:
        return json_error(422, "invalid_records", "some records do not follow their format", errors=errors)
    result = await asyncio.to_thread(store_batch, request.app[SESSION_FACTORY], batch)
    logger.info(
        "events ingested",
        extra={
            "inserted": result.events.inserted,
            "duplicates": result.events.duplicates,
            "profiles": result.profiles,
            "contacts": result.contacts,
        },
    )
    return web.json_response(result.to_json(), headers={"Cache-Control": "no-store"})


def register(app: web.Application) -> None:
    app.router.add_post(ROUTE, post_events)
