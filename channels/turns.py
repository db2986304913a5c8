"""The inbound pipeline every adapter shares: validate, normalise, divert one-time codes, redact, ask Rasa."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from bankcore import event_store, verification
from bankcore.redaction import redact
from bankcore.settings import Settings
from channels import messages
from channels.metrics import GatewayMetrics
from channels.rasa_client import BotMessage, RasaClient, RasaUnavailable, sender_id_for
from channels.turn_dedupe import TurnDedupe

logger = logging.getLogger(__name__)

# The intent the action server treats as "the customer typed their one-time code". Only the gateway may
# send it, because only the gateway can attach a digest of a code it has actually seen.
SUBMIT_OTP_INTENT = "/submit_otp"
LOCALE = "zh-CN"

# Full-width digits and Latin letters fold to ASCII so amounts, codes and card numbers parse. Full-width
# punctuation (，。？) is left alone: it is ordinary Chinese text and the NLU data is written with it.
_FOLDABLE = re.compile("[\uff10-\uff19\uff21-\uff3a\uff41-\uff5a]")
_FULL_WIDTH_POINT_BETWEEN_DIGITS = re.compile(r"(?<=[0-9])\uff0e(?=[0-9])")

# "123456", "12 34 56", "验证码是123456", "我的验证码：123456。" (after folding).
_CODE_ONLY = re.compile(
    r"^(?:我的)?(?:短信)?(?:验证码|动态码|动态密码|校验码)?\s*(?:是|为)?\s*[:：]?\s*"
    r"(?P<code>[0-9](?:[ \-]?[0-9]){3,7})\s*[。.!！]?$"
)
# A standalone run that could be a code; only such texts cost a database look-up.
_MAY_HOLD_CODE = re.compile(r"(?<![0-9])[0-9](?:[ \-]?[0-9]){3,7}(?![0-9])")
# Codes are six digits (bankcore.verification.issue); while one is outstanding, a bare six-digit run
# inside a longer sentence is most likely that code and must not reach Rasa in clear.
_SIX_DIGITS = re.compile(r"(?<![0-9])[0-9]{6}(?![0-9])")
# Rasa reads "/intent" as an intent; "/submit_otp" from a customer would forge a verified-code turn.
_FORGED_OTP_COMMAND = re.compile(r"^\s*/\s*submit_otp(?![a-z0-9_])", re.IGNORECASE)


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class TurnContext:
    """What a turn needs, built once per application and shared by every adapter."""

    settings: Settings
    rasa: RasaClient
    session_factory: Callable[[], Session]
    metrics: GatewayMetrics
    clock: Callable[[], datetime] = field(default=_utc_now)
    # When this process last saw a turn per (channel, customer), and the contact-event writes in flight.
    last_turns: dict[tuple[str, str], datetime] = field(default_factory=dict)
    background: set[asyncio.Task[None]] = field(default_factory=set)
    # Messages with a client message id are answered once across retries and gateways.
    dedupe: TurnDedupe = field(init=False)

    def __post_init__(self) -> None:
        self.dedupe = TurnDedupe(self.session_factory)

    def note_turn(self, customer_id: str, channel: str) -> None:
        """Record a `contact` event when this turn starts a contact: never raises, never waits.

        A turn starts a contact when the customer was idle on this channel for CONTACT_IDLE. Turns that
        follow shortly on this process cost nothing; otherwise a worker thread asks the database (the
        newest `contact` event, so several gateway processes agree) and stores the event, after or
        alongside the reply. Limitation: a conversation that moves between processes mid-way and lasts
        longer than CONTACT_IDLE may count twice.
        """
        try:
            now = self.clock()
            key = (channel, customer_id)
            previous = self.last_turns.get(key)
            self.last_turns[key] = now
            if len(self.last_turns) > MAX_REMEMBERED_TURNS:
                self.last_turns = {k: t for k, t in self.last_turns.items() if now - t < CONTACT_IDLE}
            if previous is not None and now - previous < CONTACT_IDLE:
                return
            task = asyncio.create_task(
                asyncio.to_thread(_start_contact, self.session_factory, customer_id, channel, now)
            )
            self.background.add(task)
            task.add_done_callback(self.background.discard)
        except Exception:
            logger.warning("could not note the turn", exc_info=True, extra={"customer_id": customer_id})

    async def code_status(self, customer_id: str, code_digest: str | None) -> CodeStatus:
        now = self.clock()
        # The core is synchronous SQLAlchemy; a worker thread keeps the event loop free meanwhile.
        return await asyncio.to_thread(_code_status, self.session_factory, customer_id, code_digest, now)


@dataclass(frozen=True)
class CodeStatus:
    pending: bool  # a challenge is waiting for a code right now
    issued_recently: bool  # the typed code is one this customer was sent lately (expired, used, superseded)


# A turn after this much silence on a channel starts a new contact (a `contact` event for foresight).
CONTACT_IDLE = timedelta(minutes=30)
MAX_REMEMBERED_TURNS = 100_000


def _start_contact(session_factory: Callable[[], Session], customer_id: str, channel: str, now: datetime) -> None:
    try:
        with session_factory() as session:
            event_store.start_contact_if_idle(
                session, customer_id=customer_id, gateway_channel=channel, now=now, idle=CONTACT_IDLE
            )
            session.commit()
    except Exception:
        # Foresight data is best effort: a turn never fails because its contact event could not be stored.
        logger.warning("could not store the contact event", exc_info=True, extra={"customer_id": customer_id})


# How far back a typed code is still recognised as one we sent. Beyond a day it is just six digits.
RECENT_CODE_WINDOW = timedelta(hours=24)


def _code_status(
    session_factory: Callable[[], Session], customer_id: str, code_digest: str | None, now: datetime
) -> CodeStatus:
    with session_factory() as session:
        pending = verification.pending_challenge(session, customer_id, now) is not None
        issued_recently = False
        if code_digest is not None and not pending:
            # An expired or reused code must not reach Rasa in clear either; matching its digest against
            # the codes actually sent tells it apart from an amount such as 100000.
            issued_recently = verification.was_issued_recently(
                session, customer_id, code_digest, now - RECENT_CODE_WINDOW
            )
        return CodeStatus(pending=pending, issued_recently=issued_recently)


def fold_full_width(text: str) -> str:
    """Fold full-width digits and Latin letters (and a full-width point between digits) to ASCII."""
    text = _FOLDABLE.sub(lambda match: unicodedata.normalize("NFKC", match.group(0)), text)
    return _FULL_WIDTH_POINT_BETWEEN_DIGITS.sub(".", text)


def extract_code(text: str) -> str | None:
    """The digits of a one-time code when the whole (folded) text is just that code, else None."""
    match = _CODE_ONLY.match(text.strip())
    if match is None:
        return None
    return re.sub(r"[^0-9]", "", match.group("code"))


def is_forged_otp_command(text: str) -> bool:
    return _FORGED_OTP_COMMAND.match(text) is not None


async def handle_text_turn(
    ctx: TurnContext,
    *,
    customer_id: str,
    channel: str,
    text: str,
    extra_metadata: Mapping[str, Any] | None = None,
    message_id: str | None = None,
) -> list[BotMessage]:
    """Run one authenticated customer's text turn; raises RasaUnavailable for the adapter to render.

    `message_id` (the client's id for this message, the same on every resend) makes the turn run once however
    often it is resent (channels/turn_dedupe.py); it travels to Rasa in the metadata.
    """
    started = time.perf_counter()
    ctx.note_turn(customer_id, channel)
    if not text or not text.strip():
        ctx.metrics.count_turn(channel, "empty")
        return [BotMessage(text=messages.EMPTY_MESSAGE)]
    limit = ctx.settings.max_message_chars
    if len(text) > limit:
        ctx.metrics.count_turn(channel, "too_long")
        return [BotMessage(text=messages.MESSAGE_TOO_LONG.format(length=len(text), limit=limit))]

    text = fold_full_width(text).strip()
    if is_forged_otp_command(text):
        ctx.metrics.count_turn(channel, "forged_command")
        logger.warning("refused a typed %s", SUBMIT_OTP_INTENT, extra={"customer_id": customer_id})
        return [BotMessage(text=messages.FORBIDDEN_COMMAND)]

    # Adapter extras first: the authenticated identity must win over anything else of the same name, and
    # only this function may attach a code digest.
    extras = {key: value for key, value in (extra_metadata or {}).items() if key != "otp_digest"}
    metadata: dict[str, Any] = {"locale": LOCALE, **extras}
    metadata.update(customer_id=customer_id, channel=channel)
    metadata.pop("message_id", None)
    if message_id is not None:
        metadata["message_id"] = message_id
    outgoing = redact(text)
    outcome = "ok"
    # Button payloads ("/inform{...}") are never a typed code, so they skip the database look-up.
    is_command = text.startswith("/")
    if not is_command and _MAY_HOLD_CODE.search(text):
        code = extract_code(text)
        # The clear code lives only in this frame; Rasa and the trackers see the intent and a digest.
        digest = verification.digest_code(ctx.settings.secret_key, code) if code is not None else None
        status = await ctx.code_status(customer_id, digest)
        if digest is not None and (status.pending or status.issued_recently):
            # A stale code goes the same way, so the action can say "expired" or "already used".
            metadata["otp_digest"] = digest
            outgoing = SUBMIT_OTP_INTENT
            outcome = "otp" if status.pending else "otp_stale"
        elif status.pending:
            outgoing = _SIX_DIGITS.sub("******", outgoing)

    sender_id = sender_id_for(channel, customer_id)
    try:
        if message_id is None:
            replies = await ctx.rasa.send_message(sender_id, outgoing, metadata)
        else:

            async def send(seen_before: bool) -> list[BotMessage]:
                return await ctx.rasa.send_message(sender_id, outgoing, metadata, seen_before=seen_before)

            replies = await ctx.dedupe.run(sender_id, message_id, send)
    except RasaUnavailable as error:
        ctx.metrics.count_turn(channel, "rasa_unavailable")
        # A failed turn's time counts too: timeouts are what a latency bar must see.
        ctx.metrics.observe_turn(channel, time.perf_counter() - started)
        logger.warning("Rasa unavailable: %s", error, extra={"customer_id": customer_id, "channel": channel})
        raise
    ctx.metrics.count_turn(channel, outcome)
    ctx.metrics.observe_turn(channel, time.perf_counter() - started)
    logger.info(
        "turn handled",
        extra={
            "customer_id": customer_id,
            "channel": channel,
            "outcome": outcome,
            "replies": len(replies),
            "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )
    return replies
