"""The risk decision in the dialogue: warnings acknowledged explicitly, the transaction PIN as stronger
verification, held and blocked transfers explained, and no money moved when the risk service is down."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from functools import lru_cache

from rasa_sdk import Tracker
from rasa_sdk.events import EventType, SlotSet

from actions import messages
from actions.runtime import Turn, gateway_metadata, settings
from bankcore import customer_care, customers, transfers
from bankcore.errors import NotFoundError
from bankcore.money import format_amount
from bankcore.risk import store as risk_store
from bankcore.risk.engine import Decision
from bankcore.risk.gather import SessionContext
from bankcore.risk.service import RiskService, RiskUnavailable, service_for

logger = logging.getLogger("actions")

# Typed acknowledgements of a warning (besides the button); a bare "好的" is not one.
ACK_PHRASES = ("知晓风险", "了解风险", "知悉风险", "明白风险", "知道风险", "清楚风险", "已知风险")
ACK_BUTTONS = [
    {"title": messages.RISK_ACK_BUTTON, "payload": '/affirm{"risk_ack": "acknowledged"}'},
    {"title": messages.RISK_CANCEL_BUTTON, "payload": "/deny"},
]
_INPUT_MODES = {"text", "voice", "keypad", "button"}


@lru_cache(maxsize=1)
def risk_service() -> RiskService:
    current = settings()
    return service_for(current.risk_rules_path, current.risk_model_dir)


def _session_utterances(tracker: Tracker) -> tuple[str, ...]:
    """The customer's messages since this session started (commands and code digests left out)."""
    said: list[str] = []
    for event in tracker.events:
        if event.get("event") == "session_started":
            said.clear()
        elif event.get("event") == "user":
            text = str(event.get("text") or "").strip()
            if text and not text.startswith("/"):
                said.append(text)
    return tuple(said)


def session_context(turn: Turn) -> SessionContext:
    channel = turn.channel
    mode = gateway_metadata(turn.tracker, "input_mode") or ("voice" if channel == "ivr" else "text")
    return SessionContext(
        channel=channel,
        input_mode=mode if mode in _INPUT_MODES else "text",
        device_id=gateway_metadata(turn.tracker, "device_id"),
        caller_id=gateway_metadata(turn.tracker, "caller_id"),
        utterances=_session_utterances(turn.tracker),
    )


def _clear() -> list[EventType]:
    from actions.transfers import clear_pending, clear_transfer_slots

    return [*clear_transfer_slots(), *clear_pending()]


def risk_summary(turn: Turn, since: dt.timedelta = dt.timedelta(days=7)) -> str:
    """The customer's recent risk decisions, for the human agent's handoff summary."""
    lines = []
    for decision in risk_store.recent_for_customer(turn.session, turn.customer_id, turn.now - since):
        reasons = "；".join(str(r.get("description")) for r in decision.reasons[:3])
        lines.append(
            messages.RISK_SUMMARY_LINE.format(
                when=decision.created_at.strftime("%m-%d %H:%M"),
                subject=decision.subject_id,
                action=messages.RISK_ACTION_NAMES.get(decision.action, decision.action),
                reasons=reasons or "—",
            )
        )
    return " | ".join(lines)


def _handoff(turn: Turn, reason: str, decision: Decision, transfer: transfers.TransferView) -> None:
    summary = messages.RISK_HANDOFF_SUMMARY.format(
        transfer=transfer.id,
        payee=transfer.payee_name,
        amount=format_amount(transfer.amount),
        action=messages.RISK_ACTION_NAMES.get(decision.action, decision.action),
        reasons="；".join(r.description for r in decision.reasons),
    )
    customer_care.request_handoff(
        turn.session,
        turn.customer_id,
        reason=reason,
        priority="high",
        channel=turn.channel,
        summary=summary,
        now=turn.now,
    )


def start_step_up(turn: Turn, transfer_id: str) -> list[EventType]:
    """Ask for the transaction PIN; a customer without one cannot pass, so the transfer is cancelled."""
    try:
        transfers.request_pin(turn.session, turn.settings, turn.customer_id, transfer_id, turn.now)
    except NotFoundError as error:
        if error.code != "pin_not_set":
            raise
        transfers.cancel(turn.session, turn.customer_id, transfer_id, turn.now)
        turn.dispatcher.utter_message(response="utter_pin_not_set")
        return _clear()
    turn.dispatcher.utter_message(response="utter_risk_step_up")
    return [
        SlotSet("pending_confirmation", "transfer"),
        SlotSet("pending_subject", transfer_id),
        SlotSet("awaiting_code", True),
    ]


def assess_confirmed_transfer(turn: Turn, transfer_id: str) -> list[EventType]:
    """The read-back was confirmed: decide, then send the code, ask for the PIN, warn, hold or block."""
    from actions.transfers import request_transfer_code

    try:
        outcome = transfers.assess_risk(
            turn.session, risk_service(), turn.customer_id, transfer_id, session_context(turn), turn.now
        )
    except RiskUnavailable as error:
        logger.error("risk service unavailable, transfer %s not executed: %s", transfer_id, error)
        turn.session.rollback()
        transfers.cancel_unassessed(turn.session, turn.customer_id, transfer_id, "risk_unavailable", turn.now)
        turn.dispatcher.utter_message(response="utter_risk_unavailable")
        return _clear()
    decision, transfer = outcome.decision, outcome.transfer
    if decision.action == "block":
        freeze_note = ""
        if outcome.frozen_account_id:
            freeze_note = messages.RISK_FREEZE_NOTE.format(
                name=transfer.source_account_name, last4=transfer.source_account_last4 or ""
            )
        _handoff(turn, "risk_block", decision, transfer)
        turn.dispatcher.utter_message(response="utter_risk_blocked", freeze_note=freeze_note)
        return _clear()
    if decision.action == "hold":
        _handoff(turn, "risk_hold", decision, transfer)
        customer = customers.get_customer(turn.session, turn.customer_id)
        turn.dispatcher.utter_message(
            response="utter_risk_hold",
            warning=decision.warning_text or "",
            amount=format_amount(transfer.amount),
            hours=str(turn.settings.risk_callback_hours),
            phone_last4=(customer.phone or "")[-4:],
        )
        return _clear()
    if decision.action == "warn":
        turn.dispatcher.utter_message(
            response="utter_risk_warning", warning=decision.warning_text or "", buttons=ACK_BUTTONS
        )
        return [
            SlotSet("pending_confirmation", "risk_warning"),
            SlotSet("pending_subject", transfer_id),
            SlotSet("awaiting_code", False),
        ]
    if decision.action == "step_up":
        return start_step_up(turn, transfer_id)
    return request_transfer_code(turn, transfer_id)


def is_acknowledgement(tracker: Tracker) -> bool:
    message = tracker.latest_message or {}
    for entity in message.get("entities") or []:
        if entity.get("entity") == "risk_ack" and entity.get("value") == "acknowledged":
            return True
    text = str(message.get("text") or "")
    return any(phrase in text for phrase in ACK_PHRASES)


def acknowledge_warning(turn: Turn, transfer_id: str) -> list[EventType]:
    """An explicit acknowledgement lets the transfer go on to the PIN; anything else asks again."""
    if not is_acknowledgement(turn.tracker):
        turn.dispatcher.utter_message(response="utter_risk_ack_needed", buttons=ACK_BUTTONS)
        return [SlotSet("pending_confirmation", "risk_warning"), SlotSet("pending_subject", transfer_id)]
    transfers.acknowledge_warning(turn.session, turn.customer_id, transfer_id, turn.now)
    return start_step_up(turn, transfer_id)


def in_pin_stage(turn: Turn, transfer_id: str) -> bool:
    return risk_store.clearance_problem(turn.session, transfer_id) == risk_store.STEP_UP_MISSING


def submit_pin(turn: Turn, transfer_id: str, digest: str) -> list[EventType]:
    """A typed PIN (its digest) for the stronger verification; verified → the SMS code is sent next."""
    from actions.transfers import request_transfer_code

    result = transfers.verify_pin(turn.session, turn.settings, turn.customer_id, transfer_id, digest, turn.now)
    if result.outcome == "verified":
        turn.dispatcher.utter_message(response="utter_pin_verified")
        return request_transfer_code(turn, transfer_id)
    if result.outcome == "wrong":
        turn.dispatcher.utter_message(response="utter_pin_wrong", attempts_left=str(result.attempts_left))
        return []
    if result.outcome == "locked":
        turn.dispatcher.utter_message(response="utter_pin_locked")
        return _clear()
    # Expired, superseded or never issued: ask for the PIN again under a fresh challenge.
    transfers.request_pin(turn.session, turn.settings, turn.customer_id, transfer_id, turn.now)
    turn.dispatcher.utter_message(response="utter_pin_expired")
    return []


def repayment_allowed(turn: Turn, kind: str, subject_id: str, amount: Decimal) -> bool:
    """Repayments move money between the customer's own products: hold and block stop them (a warn too,
    as there is no acknowledgement step); step_up is recorded only, the money never leaves the customer."""
    try:
        decision, _stored = risk_service().assess(
            turn.session,
            kind=kind,
            customer_id=turn.customer_id,
            subject_id=subject_id,
            amount=amount,
            currency="CNY",
            payee=None,
            context=session_context(turn),
            now=turn.now,
        )
    except RiskUnavailable as error:
        logger.error("risk service unavailable, %s %s not executed: %s", kind, subject_id, error)
        turn.dispatcher.utter_message(response="utter_risk_unavailable")
        return False
    if decision.action in ("allow", "step_up"):
        return True
    reason = "；".join(r.description for r in decision.reasons[:2])
    turn.dispatcher.utter_message(response="utter_repayment_held", reason=f"（{reason}）" if reason else "")
    return False
