"""Money parsing and formatting: written and spoken Chinese amounts to Decimal, Decimal to "2,500.00"."""

from __future__ import annotations

import re
import unicodedata
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

import cn2an

__all__ = ["MAX_AMOUNT", "AmountError", "format_amount", "parse_amount"]

#: The largest amount the bank accepts in one operation (inclusive).
MAX_AMOUNT = Decimal("1000000000")
_CENT = Decimal("0.01")

# Currency words that may surround an amount; they carry no value. Longest first so that "块钱"
# is removed before "块". Only Chinese yuan words: a foreign currency is a separate entity.
_PREFIXES = ("人民币", "rmb", "cny", "¥", "$")
_SUFFIXES = ("元人民币", "块钱", "元整", "圆整", "人民币", "rmb", "cny", "元", "圆", "块", "整", "钱")

# A few spoken digits and units that cn2an does not know.
_CHINESE_DIGIT = "零〇一二两三四五六七八九幺壹贰叁肆伍陆柒捌玖貮贰"
_DIGIT_VALUE = {
    "零": 0, "〇": 0, "一": 1, "幺": 1, "壹": 1, "二": 2, "两": 2, "贰": 2, "貮": 2, "三": 3, "叁": 3,
    "四": 4, "肆": 4, "五": 5, "伍": 5, "六": 6, "陆": 6, "七": 7, "柒": 7, "八": 8, "捌": 8,
    "九": 9, "玖": 9,
}  # fmt: skip

# "1.5万", "3千", "2.5k", "2w": an ASCII number times one unit. Decided: k/K = thousand and w/W = 万,
# because customers type them in chat ("转2w", "2.5k").
_UNIT_VALUE = {
    "k": 1000, "千": 1000, "仟": 1000, "w": 10000, "万": 10000, "萬": 10000, "百": 100, "佰": 100,
    "百万": 1000000, "千万": 10000000, "亿": 100000000,
}  # fmt: skip
_NUMBER_TIMES_UNIT = re.compile(r"^(\d+(?:\.\d+)?)(k|千|仟|w|万|萬|百万|千万|百|佰|亿)$")
_PLAIN_NUMBER = re.compile(r"^\d+(?:\.\d+)?$|^\.\d+$")
_GROUPED_NUMBER = re.compile(r"^\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
# "五十块五", "一百二十三块四毛五", "三块零五分", "五毛", "八毛五": yuan / jiao (毛 or 角) / fen.
_YUAN_JIAO_FEN = re.compile(
    rf"^(?:(?P<yuan>.+?)[块元圆])?"
    rf"(?:(?P<zero>零)?(?P<jiao>[{_CHINESE_DIGIT}\d])(?:毛|角)?)?"
    rf"(?:(?P<fen>[{_CHINESE_DIGIT}\d])分?)?$"
)
_NEGATIVE_MARKS = ("-", "负", "−", "－", "減", "减")


class AmountError(ValueError):
    """An amount that cannot be used; `reason` says why in a machine code."""

    REASONS = ("not_a_number", "negative", "zero", "too_many_decimals", "too_large")

    def __init__(self, reason: str, text: str) -> None:
        if reason not in self.REASONS:
            raise ValueError(f"unknown amount error reason {reason!r}")
        super().__init__(f"{reason}: {text!r}")
        self.reason = reason
        self.text = text


def _normalise(text: str) -> str:
    """Fold full-width forms (NFKC), drop spaces and lower-case Latin letters."""
    folded = unicodedata.normalize("NFKC", text)
    folded = folded.replace("￥", "¥").replace("，", ",").replace("．", ".").replace("。", ".")
    return re.sub(r"\s+", "", folded).lower()


def _strip_currency_words(text: str) -> str:
    changed = True
    while changed and text:
        changed = False
        for prefix in _PREFIXES:
            if text.startswith(prefix):
                text = text[len(prefix) :]
                changed = True
        for suffix in _SUFFIXES:
            if text.endswith(suffix) and len(text) > len(suffix):
                text = text[: -len(suffix)]
                changed = True
    return text


def _chinese_number(text: str) -> Decimal:
    """Convert a Chinese (or mixed) numeral with cn2an; the result is exact for integers."""
    try:
        value = cn2an.cn2an(text, "smart")
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise AmountError("not_a_number", text) from exc
    # cn2an returns int for integers and float for decimals; str() of a float keeps its short form.
    return Decimal(str(value))


def _digit(text: str) -> int:
    return int(text) if text.isdecimal() else _DIGIT_VALUE[text]


def _number(text: str) -> Decimal:
    """The value of a number without any currency words."""
    if _GROUPED_NUMBER.match(text):
        text = text.replace(",", "")
    if _PLAIN_NUMBER.match(text):
        return Decimal(text)
    unit_match = _NUMBER_TIMES_UNIT.match(text)
    if unit_match:
        return Decimal(unit_match.group(1)) * _UNIT_VALUE[unit_match.group(2)]
    if not text or not re.search(rf"[\d{_CHINESE_DIGIT}十拾百佰千仟万萬亿廿卅点.]", text):
        raise AmountError("not_a_number", text)
    decimal_times_unit = re.match(r"^(.+点.+?)(百万|千万|万|萬|千|仟|亿)$", text)
    if decimal_times_unit:  # "一点五万": cn2an rejects a decimal before a unit
        return _chinese_number(decimal_times_unit.group(1)) * _UNIT_VALUE[decimal_times_unit.group(2)]
    money = _YUAN_JIAO_FEN.match(text)
    if money and re.search("[块元圆毛角分]", text) and (money.group("jiao") or money.group("fen")):
        yuan_text = money.group("yuan")
        yuan = _number(yuan_text) if yuan_text else Decimal(0)
        jiao = Decimal(_digit(money.group("jiao"))) if money.group("jiao") else Decimal(0)
        fen = Decimal(_digit(money.group("fen"))) if money.group("fen") else Decimal(0)
        if money.group("zero") and money.group("jiao") and not money.group("fen"):
            # "三块零五" means 3.05: the digit after 零 is fen.
            jiao, fen = Decimal(0), jiao
        return yuan + jiao / 10 + fen / 100
    return _chinese_number(text)


def parse_amount(text: str) -> Decimal:
    """Parse an amount as customers write or say it; the result is quantised to 0.01.

    Accepts ASCII and full-width digits, thousands separators ("2,000.00"), currency words and
    symbols ("¥800", "500元", "三百块", "两千块钱"), Chinese numerals including colloquial ellipsis
    ("两千五" = 2500, "一万二" = 12000), a number times a unit ("1.5万", "3千", "2.5k", "2w"), and
    yuan/jiao/fen ("五十块五" = 50.50, "一百二十三块四毛五" = 123.45).
    Raises AmountError(reason) for non-numbers, negative or zero amounts, more than two decimals, or
    more than MAX_AMOUNT.
    """
    if not isinstance(text, str):
        raise AmountError("not_a_number", repr(text))
    normalised = _normalise(text)
    negative = normalised.startswith(_NEGATIVE_MARKS)
    if negative:
        normalised = normalised.lstrip("".join(_NEGATIVE_MARKS))
    core = _strip_currency_words(normalised)
    if core.startswith(_NEGATIVE_MARKS):  # "¥-500"
        negative = True
        core = core.lstrip("".join(_NEGATIVE_MARKS))
    try:
        value = _number(core)
    except InvalidOperation as exc:
        raise AmountError("not_a_number", text) from exc
    except AmountError as exc:
        raise AmountError("not_a_number", text) from exc
    if negative or value < 0:
        raise AmountError("negative", text) if value != 0 else AmountError("zero", text)
    if value == 0:
        raise AmountError("zero", text)
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2 and value != value.quantize(_CENT):
        raise AmountError("too_many_decimals", text)
    if value > MAX_AMOUNT:
        raise AmountError("too_large", text)
    return value.quantize(_CENT, rounding=ROUND_HALF_UP)


def format_amount(amount: Decimal) -> str:
    """Format an amount with thousands separators and two decimals: Decimal("2500") -> "2,500.00"."""
    return f"{Decimal(amount).quantize(_CENT, rounding=ROUND_HALF_UP):,.2f}"
