"""Transfers: the form (payee, amount, source account), read-back, step-up code, at-most-once execution."""

from __future__ import annotations

import re
from typing import Any
from zoneinfo import ZoneInfo

from rasa_sdk import Tracker
from rasa_sdk.events import ActiveLoop, EventType, FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.forms import FormValidationAction
from sqlalchemy.orm import Session

from actions import messages
from actions.runtime import BankAction, Turn, customer_id_of, entity_values, run_in_bank, utter_bank_error
from actions.transfer_risk import in_pin_stage, submit_pin
from bankcore import accounts, customers, transfers
from bankcore.errors import BankError
from bankcore.money import AmountError, format_amount, parse_amount

# A minus sign or 负 right before a number, in either width or script.
_NEGATIVE_NUMBER = re.compile(r"(?:负|[-－−])\s*(?=[0-9０-９零〇一二两三四五六七八九十百千万])")
TRANSFER_SLOTS = ("payee", "amount", "source_account")
# Errors that mean "ask for this slot again" rather than "give up on the transfer".
_SLOT_OF_ERROR = {
    "unknown_payee": "payee",
    "self_transfer": "payee",
    "invalid_amount": "amount",
    "insufficient_funds": "amount",
    "over_single_limit": "amount",
    "over_daily_limit": "amount",
}


def clear_transfer_slots() -> list[EventType]:
    return [SlotSet(name, None) for name in TRANSFER_SLOTS]


def clear_pending() -> list[EventType]:
    return [SlotSet("pending_confirmation", None), SlotSet("pending_subject", None), SlotSet("awaiting_code", False)]


def _known_payee_names(session: Session, customer_id: str) -> str:
    return "、".join(payee.name for payee in transfers.list_payees(session, customer_id)) or "（暂无）"


def _debit_accounts(session: Session, customer_id: str) -> list[accounts.AccountView]:
    return [a for a in accounts.list_accounts(session, customer_id, kind="debit") if a.status == "active"]


def _candidates(tracker: Tracker, entity: str, value: Any, *, with_pieces: bool = False) -> list[str]:
    """What the customer said for a slot being validated, best reading first.

    When the value came from the latest message's entities (a list when the model tagged pieces), the pieces
    that touch are joined again; a value set otherwise (a button, an earlier turn) is taken as it is. An
    empty value, a slot cleared by an action, yields nothing.
    """
    values = [str(v).strip() for v in (value if isinstance(value, list) else [value]) if v is not None]
    values = [v for v in values if v]
    if not values:
        return []
    raw = {str(e.get("value")) for e in tracker.latest_message.get("entities") or [] if e.get("entity") == entity}
    if raw and set(values) <= raw:
        return entity_values(tracker, entity, with_pieces=with_pieces)
    return values


class ValidateTransferForm(FormValidationAction):
    """Per-slot validation against the sandbox bank; values are returned, never mutated in place."""

    def name(self) -> str:
        return "validate_transfer_form"

    async def _in_bank(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any], work: Any, slot: str
    ) -> dict[str, Any]:
        customer_id = customer_id_of(tracker)
        if customer_id is None:
            dispatcher.utter_message(response="utter_not_signed_in")
            return {slot: None}

        def on_error(dispatcher: CollectingDispatcher, error: BankError) -> list[EventType]:
            utter_bank_error(dispatcher, error)
            return [SlotSet(slot, None)]

        events = await run_in_bank(
            self.name(), customer_id, tracker, dispatcher, domain, lambda turn: work(turn), on_error
        )
        return {event["name"]: event["value"] for event in events if event.get("event") == "slot"}

    async def extract_source_account(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        """With a single active debit account there is nothing to ask."""
        if tracker.get_slot("source_account") or tracker.active_loop.get("name") != "transfer_form":
            return {}

        def work(turn: Turn) -> list[EventType]:
            debit = _debit_accounts(turn.session, turn.customer_id)
            return [SlotSet("source_account", debit[0].id)] if len(debit) == 1 else []

        return await self._in_bank(dispatcher, tracker, domain, work, "source_account")

    async def validate_payee(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        candidates = _candidates(tracker, "payee", value, with_pieces=True)
        if not candidates:
            return {"payee": None}

        def work(turn: Turn) -> list[EventType]:
            found = (transfers.find_payee(turn.session, turn.customer_id, name) for name in candidates)
            payee = next((p for p in found if p is not None), None)
            if payee is None:
                turn.dispatcher.utter_message(
                    response="utter_error_unknown_payee",
                    known_payees=_known_payee_names(turn.session, turn.customer_id),
                )
                return [SlotSet("payee", None)]
            return [SlotSet("payee", payee.name)]

        return await self._in_bank(dispatcher, tracker, domain, work, "payee")

    async def validate_amount(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        candidates = _candidates(tracker, "amount", value)
        if not candidates:
            return {"amount": None}
        try:
            if len(candidates) != 1:
                raise AmountError("not_a_number", " / ".join(candidates))
            if _NEGATIVE_NUMBER.search(str(tracker.latest_message.get("text") or "")):
                # The model tags "五百" in "负五百"; the sign in front makes it no amount to send.
                raise AmountError("negative", candidates[0])
            amount = parse_amount(candidates[0])
        except AmountError:
            dispatcher.utter_message(response="utter_error_invalid_amount")
            return {"amount": None}
        return {"amount": str(amount)}

    async def validate_source_account(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        choice = str(value or "").strip()

        def work(turn: Turn) -> list[EventType]:
            debit = _debit_accounts(turn.session, turn.customer_id)
            matches = [a for a in debit if choice in {a.id, a.last4}]
            if not matches and choice == "debit" and len(debit) >= 1:
                matches = debit[:1] if len(debit) == 1 else []
            if len(matches) == 1:
                return [SlotSet("source_account", matches[0].id)]
            return [SlotSet("source_account", None)]

        return await self._in_bank(dispatcher, tracker, domain, work, "source_account")


class ActionAskSourceAccount(BankAction):
    action_name = "action_ask_source_account"

    def act(self, turn: Turn) -> list[EventType]:
        debit = _debit_accounts(turn.session, turn.customer_id)
        buttons = [
            {
                "title": messages.SOURCE_ACCOUNT_BUTTON.format(
                    name=a.name, last4=a.last4, balance=format_amount(a.balance)
                ),
                "payload": f'/inform{{"card_last4": "{a.last4}"}}',
            }
            for a in debit
        ]
        turn.dispatcher.utter_message(response="utter_ask_source_account", buttons=buttons)
        return []


class ActionTransferReadback(BankAction):
    """Prepare the transfer (all checks) and read it back for confirmation."""

    action_name = "action_transfer_readback"

    def act(self, turn: Turn) -> list[EventType]:
        transfer = transfers.prepare(
            turn.session,
            turn.settings,
            turn.customer_id,
            payee_name=str(turn.slot("payee")),
            amount=parse_amount(str(turn.slot("amount"))),
            source_account_id=str(turn.slot("source_account")),
            channel=turn.channel,
            now=turn.now,
        )
        turn.dispatcher.utter_message(
            response="utter_transfer_readback",
            source_name=transfer.source_account_name,
            source_last4=transfer.source_account_last4,
            payee=transfer.payee_name,
            payee_bank=transfer.payee_bank,
            payee_last4=transfer.payee_account_last4,
            amount=format_amount(transfer.amount),
        )
        return [
            SlotSet("pending_confirmation", "transfer"),
            SlotSet("pending_subject", transfer.id),
            SlotSet("awaiting_code", False),
        ]

    def on_bank_error(self, dispatcher: CollectingDispatcher, error: BankError) -> list[EventType]:
        if error.code == "unknown_payee":
            # The payee was checked when the form took it, so it was deleted since: start over.
            dispatcher.utter_message(response="utter_error_transfer_not_found")
            return [*clear_transfer_slots(), *clear_pending()]
        utter_bank_error(dispatcher, error)
        slot = _SLOT_OF_ERROR.get(error.code)
        if slot is None:
            return [*clear_transfer_slots(), *clear_pending()]
        # Ask again for the one thing that was wrong. The form comes back already active, so it does not
        # re-validate this message's value (which would fail the same way); it just asks for the slot.
        return [SlotSet(slot, None), ActiveLoop("transfer_form"), FollowupAction("transfer_form")]


def request_transfer_code(turn: Turn, transfer_id: str) -> list[EventType]:
    """After the read-back is confirmed: send the one-time code (step-up verification)."""
    challenge = transfers.request_verification(turn.session, turn.settings, turn.customer_id, transfer_id, turn.now)
    turn.dispatcher.utter_message(
        response="utter_code_sent",
        phone_last4=challenge.phone_tail or "",
        minutes=str(max(1, turn.settings.otp_ttl_seconds // 60)),
    )
    return [SlotSet("awaiting_code", True)]


def cancel_transfer(turn: Turn, transfer_id: str) -> None:
    transfers.cancel(turn.session, turn.customer_id, transfer_id, turn.now)
    turn.dispatcher.utter_message(response="utter_transfer_cancelled")


class ActionSubmitCode(BankAction):
    """The gateway replaced the typed code by its digest: check it, then execute the transfer at most once."""

    action_name = "action_submit_code"

    def act(self, turn: Turn) -> list[EventType]:
        transfer_id = turn.slot("pending_subject")
        metadata = turn.tracker.latest_message.get("metadata") or {}
        digest = metadata.get("otp_digest")
        if turn.slot("pending_confirmation") != "transfer" or not transfer_id or not isinstance(digest, str):
            turn.dispatcher.utter_message(response="utter_code_not_expected")
            return []
        if in_pin_stage(turn, str(transfer_id)):
            # The stronger verification comes first: this digest is the transaction PIN's.
            return submit_pin(turn, str(transfer_id), digest)
        result = transfers.authorize(turn.session, turn.settings, turn.customer_id, str(transfer_id), digest, turn.now)
        if result.outcome == "wrong":
            turn.dispatcher.utter_message(response="utter_code_wrong", attempts_left=str(result.attempts_left))
            return []
        if result.outcome == "expired":
            challenge = transfers.request_verification(
                turn.session, turn.settings, turn.customer_id, str(transfer_id), turn.now
            )
            turn.dispatcher.utter_message(response="utter_code_expired_resent", phone_last4=challenge.phone_tail or "")
            return []
        if result.outcome == "locked":
            transfers.cancel(turn.session, turn.customer_id, str(transfer_id), turn.now)
            turn.dispatcher.utter_message(response="utter_code_locked")
            return [*clear_transfer_slots(), *clear_pending()]
        if result.outcome != "verified":
            turn.dispatcher.utter_message(response="utter_code_not_expected")
            return []
        transfer = transfers.execute(turn.session, turn.settings, turn.customer_id, str(transfer_id), turn.now)
        if transfer.status == "completed":
            source = accounts.get_account(turn.session, turn.customer_id, transfer.source_account_id)
            turn.dispatcher.utter_message(
                response="utter_transfer_done",
                payee=transfer.payee_name,
                amount=format_amount(transfer.amount),
                source_name=source.name,
                source_last4=source.last4,
                balance=format_amount(source.balance),
                reference=transfer.id,
            )
        else:
            reason, _advice = messages.FAILURE_REASONS.get(
                transfer.failure_reason or "", messages.FAILURE_REASON_UNKNOWN
            )
            turn.dispatcher.utter_message(response="utter_transfer_failed", reason=reason)
        return [*clear_transfer_slots(), *clear_pending()]


class ActionFailedTransferInquiry(BankAction):
    action_name = "action_failed_transfer_inquiry"

    def act(self, turn: Turn) -> list[EventType]:
        failed = transfers.failed_transfers(turn.session, turn.customer_id)
        if not failed:
            turn.dispatcher.utter_message(text=messages.FAILED_TRANSFER_NONE)
            return []
        customer = customers.get_customer(turn.session, turn.customer_id)
        zone = ZoneInfo(customer.timezone)
        lines = [messages.FAILED_TRANSFER_HEADER.format(count=len(failed))]
        for transfer in failed[:5]:
            reason, advice = messages.FAILURE_REASONS.get(
                transfer.failure_reason or "", messages.FAILURE_REASON_UNKNOWN
            )
            lines.append(
                messages.FAILED_TRANSFER_LINE.format(
                    when=transfer.created_at.astimezone(zone).strftime("%m月%d日 %H:%M"),
                    payee=transfer.payee_name,
                    amount=format_amount(transfer.amount),
                    reason=reason,
                    advice=advice,
                )
            )
        turn.dispatcher.utter_message(text="\n".join(lines))
        return []
