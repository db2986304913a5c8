"""After the whole suite: no one-time code, PIN, card or ID number in clear in the tracker store or the logs."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import select

from bankcore.database import unit_of_work
from bankcore.models import SmsOutbox
from tests.dialogue.test_secrets_redacted import TYPED_CARD_NUMBER, TYPED_ID_NUMBER, TYPED_PIN
from tests.dialogue.test_transfer_risk import TYPED_PINS

# Keyed on the phone keypad by the voice dialogue tests (tests/voice/test_voice_dialogue.py).
KEYED_PINS = ("864209",)

pytestmark = [pytest.mark.rasa, pytest.mark.after_all]


def _issued_codes(stack) -> set[str]:  # type: ignore[no-untyped-def]
    with unit_of_work(stack.db_session_factory) as session:
        texts = session.scalars(select(SmsOutbox.text)).all()
    return {code for text in texts for code in re.findall(r"(?<!\d)\d{6}(?!\d)", text)}


def _tracker_text(stack) -> str:  # type: ignore[no-untyped-def]
    with sqlite3.connect(stack.settings.var_dir / "tracker.db") as db:
        return "\n".join(str(row[0]) for row in db.execute("select data from events"))


def _logs_text(log_dir: Path) -> str:
    return "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in sorted(log_dir.glob("*")) if p.is_file())


def _found(secret: str, haystack: str) -> bool:
    return re.search(rf"(?<![0-9A-Za-z]){re.escape(secret)}(?![0-9A-Za-z])", haystack) is not None


def test_no_secret_in_clear_in_tracker_store_or_logs(live_stack) -> None:  # type: ignore[no-untyped-def]
    codes = _issued_codes(live_stack)
    assert codes, "the suite should have sent one-time codes; the scan would prove nothing"
    tracker = _tracker_text(live_stack)
    logs = _logs_text(live_stack.log_dir)
    assert "/submit_otp" in tracker, "codes reached Rasa only as their digest"
    card_digits = TYPED_CARD_NUMBER.replace(" ", "")
    secrets = {*codes, TYPED_PIN, *TYPED_PINS, *KEYED_PINS, TYPED_CARD_NUMBER, card_digits, TYPED_ID_NUMBER}
    for name, haystack in (("tracker store", tracker), ("logs", logs)):
        leaked = sorted(s for s in secrets if _found(s, haystack))
        assert not leaked, f"secrets in clear in the {name}: {leaked}"


def test_metrics_carry_no_secret(live_stack) -> None:  # type: ignore[no-untyped-def]
    import urllib.request

    with urllib.request.urlopen(f"{live_stack.gateway_url}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert (
        all(pin not in metrics for pin in (TYPED_PIN, *TYPED_PINS, *KEYED_PINS))
        and TYPED_CARD_NUMBER.replace(" ", "") not in metrics
    )


def test_channel_inbox_and_outbox_hold_no_secret_in_clear(live_stack) -> None:  # type: ignore[no-untyped-def]
    """Platform messages wait sealed (encrypted) in the inbox until answered, and replies never carry a code."""
    from bankcore.models import ChannelInboxMessage, ChannelOutboxMessage

    codes = _issued_codes(live_stack)
    with unit_of_work(live_stack.db_session_factory) as session:
        inbox = session.execute(select(ChannelInboxMessage.sealed_body, ChannelInboxMessage.last_error)).all()
        outbox = session.execute(select(ChannelOutboxMessage.body, ChannelOutboxMessage.last_error)).all()
    stored = "\n".join(str(value) for row in [*inbox, *outbox] for value in row if value is not None)
    leaked = sorted(code for code in codes if _found(code, stored))
    assert not leaked, f"codes in clear in the channel inbox/outbox: {leaked}"
