"""The customer-facing texts of reminders (Chinese), one template per kind, filled from a reminder's payload."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

TITLES: dict[str, str] = {
    "loan_instalment_due": "贷款还款提醒",
    "card_statement_due": "信用卡还款提醒",
    "card_expiring": "卡片到期提醒",
    "deposit_maturing": "定期存款到期提醒",
    "auto_debit_failed": "自动扣款失败提醒",
    "service_notice": "服务通知",
}

TEMPLATES: dict[str, str] = {
    "loan_instalment_due": (
        "【贷款还款提醒】{salutation}您好，您的{loan_name}第{instalment_seq}期应还{amount}元，"
        "还款日为{due_day}。请确保还款账户余额充足，如已还款请忽略。"
    ),
    "card_statement_due": (
        "【信用卡还款提醒】{salutation}您好，您尾号{last4}的{card_name}本期账单应还{amount}元，"
        "最低还款{minimum_payment}元，到期还款日为{due_day}。如已还款请忽略。"
    ),
    "card_expiring": "【卡片到期提醒】{salutation}您好，您尾号{last4}的{card_label}将于{due_day}到期，请及时办理换卡。",
    "deposit_maturing": (
        "【定期存款到期提醒】{salutation}您好，您的{deposit_name}{amount}元将于{due_day}到期。{renewal}"
    ),
    "auto_debit_failed": (
        "【自动扣款失败提醒】{salutation}您好，您的{item_name}自动扣款{amount}元未能成功，"
        "请尽快存入足额资金或手动还款，以免产生逾期。"
    ),
    "service_notice": "【服务通知】{salutation}您好，{text}",
}

CARD_LABELS = {"credit": "信用卡", "debit": "借记卡"}
RENEWAL = {
    True: "到期后将按原期限自动续存。",
    False: "到期后本息将转入您的活期账户，如需续存可随时告诉我们。",
}
DEFAULT_SALUTATION = "尊敬的客户"
DEFAULT_ITEM_NAME = "账单"


def chinese_day(iso_date: str) -> str:
    """ "2026-12-05" → "12月5日" (the year is obvious for anything due within weeks)."""
    day = dt.date.fromisoformat(iso_date)
    return f"{day.month}月{day.day}日"


def render(kind: str, payload: Mapping[str, Any]) -> str:
    """The reminder text for `kind`; KeyError if the payload lacks a field the template needs."""
    values: dict[str, Any] = {"salutation": DEFAULT_SALUTATION, "item_name": DEFAULT_ITEM_NAME, **payload}
    if "due_date" in payload:
        values["due_day"] = chinese_day(str(payload["due_date"]))
    values["card_label"] = CARD_LABELS.get(str(payload.get("card_kind")), "银行卡")
    values["renewal"] = RENEWAL[bool(payload.get("auto_renew"))]
    return TEMPLATES[kind].format_map(values)
