"""Secrets typed by customers are masked by the gateway before Rasa, logs or metrics see them."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.rasa

# Used again by tests/test_zz_secrets_scan.py, which scans everything after the whole suite.
TYPED_CARD_NUMBER = "6222 0212 3456 7890 128"
TYPED_PIN = "135790"
TYPED_ID_NUMBER = "11010519491231002X"


def test_card_number_pin_and_id_number_are_masked_before_rasa(live_stack, chat):  # type: ignore[no-untyped-def]
    customer = chat("C003")
    customer.say(f"我的卡号是{TYPED_CARD_NUMBER}，取款密码是{TYPED_PIN}，查下余额")
    customer.say(f"身份证号{TYPED_ID_NUMBER}，帮我挂失")
    customer.say("不用了")
