"""Redaction of secrets (one-time codes, PINs, card and PRC ID numbers) from text and log records."""

from __future__ import annotations

import logging
import re
from typing import Any

# ASCII and full-width digits only: Python's \d also matches Arabic-Indic and other scripts' digits,
# which no customer types as a card number and which would make the masks surprising.
_DIGIT = "[0-9\uff10-\uff19]"
# Separators customers put inside long numbers: space, ideographic space, ASCII and full-width hyphen.
_SEP = "[ \u3000\\-\uff0d]"
_FULL_WIDTH_DIGITS = str.maketrans("０１２３４５６７８９", "0123456789")

CODE_MASK = "******"

# 13 or more digits, a single separator allowed between any two. Longer than 19 is no card, but such a run
# is an account-like number all the same, and over-masking is the safe side.
_CARD = re.compile(rf"(?<![0-9\uff10-\uff19]){_DIGIT}(?:{_SEP}?{_DIGIT}){{12,}}(?!{_SEP}?{_DIGIT})")
# PRC resident ID: 17 digits and a check character (digit or X), written without separators.
_PRC_ID = re.compile(rf"(?<![0-9\uff10-\uff19]){_DIGIT}{{17}}[0-9\uff10-\uff19Xx\uff38\uff58](?![0-9\uff10-\uff19])")

_CODE_WORDS = "短信验证码|验证码|动态码|动态密码|校验码|短信码"
_PIN_WORDS = "取款密码|支付密码|交易密码|查询密码|登录密码|银行卡密码|卡密码|密码"
# What may sit between the keyword and the digits: "验证码是：123456", "密码 123456", "验证码为１２３４５６".
_GAP = "[\\s:：=,，是为]{0,4}"
# A code or PIN is 4 to 8 digits, possibly spaced out ("1 2 3 4 5 6"); a longer run is left to _CARD.
_SHORT_SECRET = rf"{_DIGIT}(?:{_SEP}?{_DIGIT}){{3,7}}(?!{_SEP}?{_DIGIT})"
_SECRET_AFTER_WORD = re.compile(rf"((?:{_CODE_WORDS}|{_PIN_WORDS}){_GAP}){_SHORT_SECRET}")
# The reverse order, "123456是验证码" / "123456 就是密码".
_SECRET_BEFORE_WORD = re.compile(
    rf"(?<![0-9\uff10-\uff19]){_SHORT_SECRET}(?=[\s:：,，]{{0,2}}(?:就是|是|为)?(?:我的)?(?:{_CODE_WORDS}|{_PIN_WORDS}))"
)

_PRC_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_PRC_ID_CHECK = "10X98765432"


def _digits_only(text: str) -> str:
    return "".join(ch for ch in text.translate(_FULL_WIDTH_DIGITS) if ch.isascii() and ch.isdigit())


def is_prc_id(candidate: str) -> bool:
    """True when `candidate` is 17 digits and the ISO 7064 MOD 11-2 check character of a PRC ID."""
    folded = candidate.translate(_FULL_WIDTH_DIGITS).replace("\uff38", "X").replace("\uff58", "X").upper()
    if len(folded) != 18 or not folded[:17].isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(folded[:17], _PRC_ID_WEIGHTS, strict=True))
    return _PRC_ID_CHECK[total % 11] == folded[17]


def mask_card(pan: str) -> str:
    """`6222 0212 3456 7890` -> `**** 7890`; fewer than four digits gives `****`."""
    digits = _digits_only(pan)
    return f"**** {digits[-4:]}" if len(digits) >= 4 else "****"


def _mask_prc_id(match: re.Match[str]) -> str:
    value = match.group(0)
    # An 18-digit run that is not a valid ID is more likely a card number: mask it like one.
    if value[-1] in "Xx\uff38\uff58" or is_prc_id(value):
        return "*" * 14 + value[-4:].translate(_FULL_WIDTH_DIGITS).upper().replace("\uff38", "X")
    return mask_card(value)


def _mask_after_word(match: re.Match[str]) -> str:
    return match.group(1) + CODE_MASK


def redact(text: str) -> str:
    """Mask one-time codes and PINs in context, full card numbers (last four kept) and PRC ID numbers."""
    if not text:
        return text
    # IDs first: an ID ending in X would otherwise lose only its digits to the card pattern.
    text = _PRC_ID.sub(_mask_prc_id, text)
    text = _CARD.sub(lambda m: mask_card(m.group(0)), text)
    text = _SECRET_AFTER_WORD.sub(_mask_after_word, text)
    return _SECRET_BEFORE_WORD.sub(CODE_MASK, text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, int | float | bool) or value is None:
        # Numbers are redacted through the formatted message; keeping the type keeps %d/%.2f working.
        return value
    return redact(str(value))


class RedactingFilter(logging.Filter):
    """Rewrites each record so that its message, arguments and traceback carry no secrets."""

    _exception_formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            # A broken format string must not lose the record: redact the parts one by one instead.
            record.msg = redact(str(record.msg))
            if isinstance(record.args, tuple):
                record.args = tuple(_redact_value(arg) for arg in record.args)
            elif isinstance(record.args, dict):
                record.args = {key: _redact_value(arg) for key, arg in record.args.items()}
        else:
            # Formatting once here means a secret split across msg and args cannot slip through.
            record.msg = redact(message)
            record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._exception_formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
