"""The few customer-facing texts the core itself must produce (SMS), in Simplified Chinese."""

from __future__ import annotations

from decimal import Decimal

BANK_SIGNATURE = "【示范银行】"

_PURPOSE_TEXT = {
    "transfer": "转账",
    "card_repayment": "信用卡还款",
    "loan_repayment": "贷款还款",
    "card_activation": "激活银行卡",
    "bind": "绑定微信服务渠道",
}


def purpose_text(purpose: str) -> str:
    return _PURPOSE_TEXT.get(purpose, "身份验证")


def money_text(amount: Decimal) -> str:
    return f"{amount:,.2f}"


def otp_sms(code: str, purpose: str, ttl_seconds: int, detail: str | None = None) -> str:
    """The one-time-code SMS. It names what the code authorises so the customer can spot a scam."""
    minutes = max(1, ttl_seconds // 60)
    what = detail or purpose_text(purpose)
    return (
        f"{BANK_SIGNATURE}验证码{code}，用于{what}，{minutes}分钟内有效。"
        "请勿将验证码告诉任何人，银行工作人员不会向您索取。"
    )


def transfer_detail(payee_name: str, account_last4: str | None, amount: Decimal) -> str:
    tail = f"（尾号{account_last4}）" if account_last4 else ""
    return f"向{payee_name}{tail}转账{money_text(amount)}元"


def card_frozen_sms(last4: str) -> str:
    return f"{BANK_SIGNATURE}您尾号{last4}的银行卡已冻结。如非本人操作，请立即致电客服。"
