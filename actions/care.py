"""Customer care: fraud reports, hand-off to a human, complaints and opt-outs."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.forms import FormValidationAction

from actions import messages
from actions.reminders import note_reminder_outcome
from actions.runtime import BankAction, Turn, channel_of, customer_id_of, session_factory, utc_now
from actions.transfer_risk import risk_summary
from bankcore import customer_care
from bankcore.database import unit_of_work

logger = logging.getLogger(__name__)

_MIN_COMPLAINT_CHARS = 8
_SUMMARY_TURNS = 6


def conversation_summary(turn: Turn) -> str:
    """What the human agent sees first: the customer's recent requests (the texts are already redacted)."""
    return tracker_summary(turn.tracker)


def tracker_summary(tracker: Tracker) -> str:
    user_turns = [e for e in tracker.events if e.get("event") == "user"][-_SUMMARY_TURNS:]
    parts = []
    for event in user_turns:
        intent = (event.get("parse_data") or {}).get("intent", {}).get("name") or "?"
        parts.append(f"{intent}: {str(event.get('text') or '')[:60]}")
    return " | ".join(parts)


class ActionReportFraud(BankAction):
    action_name = "action_report_fraud"

    def act(self, turn: Turn) -> list[EventType]:
        report = customer_care.report_fraud(
            turn.session,
            turn.customer_id,
            description=conversation_summary(turn),
            last4=turn.entity("card_last4"),
            channel=turn.channel,
            now=turn.now,
        )
        frozen = (
            messages.FRAUD_FROZEN.format(cards="、".join(report.frozen_cards))
            if report.frozen_cards
            else messages.FRAUD_NOTHING_FROZEN
        )
        reference = messages.HANDOFF_REFERENCE.format(number=report.handoff_id)
        turn.dispatcher.utter_message(response="utter_fraud_reported", reference=reference, frozen=frozen)
        return []


class ActionHumanHandoff(BankAction):
    action_name = "action_human_handoff"

    def act(self, turn: Turn) -> list[EventType]:
        handoff = customer_care.request_handoff(
            turn.session,
            turn.customer_id,
            reason="customer_request",
            priority="normal",
            channel=turn.channel,
            summary=" | ".join(part for part in (conversation_summary(turn), risk_summary(turn)) if part),
            now=turn.now,
        )
        announce_handoff(turn.dispatcher, handoff)
        return []

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[EventType]:
        if customer_id_of(tracker) is not None:
            return await super().run(dispatcher, tracker, domain)

        # A guest (an unbound platform user, a caller the bank does not know) may ask for a person too.
        def guest_handoff() -> customer_care.HandoffView:
            with unit_of_work(session_factory()) as session:
                return customer_care.request_handoff(
                    session,
                    None,
                    reason="customer_request",
                    priority="normal",
                    channel=channel_of(tracker),
                    summary=tracker_summary(tracker),
                    now=utc_now(),
                )

        try:
            handoff = await asyncio.to_thread(guest_handoff)
        except Exception:
            logger.exception("could not open a guest handoff")
            dispatcher.utter_message(response="utter_service_error")
            return []
        announce_handoff(dispatcher, handoff)
        return []


def announce_handoff(dispatcher: CollectingDispatcher, handoff: customer_care.HandoffView) -> None:
    """Tell the customer, and tell the channel (custom JSON) so a phone line can transfer the call."""
    queue = messages.HANDOFF_QUEUE_HIGH if handoff.priority == "high" else messages.HANDOFF_QUEUE_NORMAL
    reference = messages.HANDOFF_REFERENCE.format(number=handoff.id)
    dispatcher.utter_message(
        response="utter_handoff",
        queue=queue,
        reference=reference,
        json_message={"handoff": {"id": handoff.id, "priority": handoff.priority}},
    )


class ValidateComplaintForm(FormValidationAction):
    def name(self) -> str:
        return "validate_complaint_form"

    async def extract_complaint_details(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        """A complaint that already says what went wrong needs no second question."""
        if tracker.get_slot("complaint_details") or tracker.get_slot("requested_slot"):
            return {}
        text = str(tracker.latest_message.get("text") or "")
        intent = (tracker.latest_message.get("intent") or {}).get("name")
        if intent == "complain" and len(text.strip()) >= _MIN_COMPLAINT_CHARS:
            return {"complaint_details": text.strip()}
        return {}

    async def validate_complaint_details(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        text = str(value or "").strip()
        if not text:
            return {"complaint_details": None}
        return {"complaint_details": text[:1000]}


class ActionRecordComplaint(BankAction):
    action_name = "action_record_complaint"

    def act(self, turn: Turn) -> list[EventType]:
        complaint = customer_care.record_complaint(
            turn.session,
            turn.customer_id,
            text=str(turn.slot("complaint_details") or turn.text),
            channel=turn.channel,
            now=turn.now,
        )
        turn.dispatcher.utter_message(response="utter_complaint_recorded", reference=complaint.reference)
        return [SlotSet("complaint_details", None)]


def opt_out_topic(text: str) -> str:
    if any(word in text for word in ("提醒", "到期", "还款通知")):
        return "reminders"
    if any(word in text for word in ("电话", "打电话", "外呼", "来电")):
        return "calls"
    if any(word in text for word in ("营销", "推销", "广告", "推广", "理财产品", "短信")):
        return "marketing"
    return "all"


class ActionRecordOptOut(BankAction):
    action_name = "action_record_opt_out"

    def act(self, turn: Turn) -> list[EventType]:
        topic = opt_out_topic(turn.text)
        channel = turn.channel
        reminder_topic = turn.slot("reminder_topic")
        if reminder_topic and topic in ("all", "reminders", "calls"):
            # "别再打了" in a conversation a reminder opened: no more reminders of that kind, on any channel.
            topic, channel = str(reminder_topic), "all"
            note_reminder_outcome(turn, "opted_out")
        customer_care.record_opt_out(turn.session, turn.customer_id, topic=topic, channel=channel, now=turn.now)
        label = messages.OPT_OUT_TOPICS.get(topic) or messages.REMINDER_TOPICS.get(topic, "此类提醒")
        turn.dispatcher.utter_message(response="utter_opt_out_recorded", topic=label)
        return []
