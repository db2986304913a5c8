"""Bot reply text to what TTS should say: Arabic numbers, amounts, dates and codes as spoken Mandarin."""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal

import cn2an

__all__ = ["amount_words", "digits_words", "number_words", "speakable"]

_DIGIT_NAMES = "零一二三四五六七八九"
_CENT = Decimal("0.01")

# Measure words before which 2 is said 两 ("两个", "两次"); elsewhere a lone 2 is 二 ("第二", "二号").
_TWO_AS_LIANG = (
    "个", "次", "张", "笔", "天", "位", "周", "年", "个月", "小时", "分钟", "秒", "倍", "条", "项", "种", "份", "台",
    "本", "件", "套", "遍", "家", "人", "岁", "期", "万", "千", "百", "亿",
)  # fmt: skip

# Words after which the digits that follow are a code, read one by one ("尾号幺二三四").
_CODE_WORDS = (
    "尾号", "卡号", "账号", "手机号码", "手机号", "电话号码", "电话", "号码", "验证码", "工号", "编号", "单号",
)  # fmt: skip

# ASCII punctuation TTS pauses on, as its Chinese form; other symbols are spoken or dropped (see _symbols).
_PUNCTUATION = {",": "，", ";": "；", "!": "！", "?": "？", ":": "：", "(": "（", ")": "）"}


def digits_words(digits: str, one: str = "幺") -> str:
    """Digits read one by one, as for phone and card numbers: "0371" -> "零三七幺".

    1 is 幺 by default because 一 and 七 are easy to confuse on a phone line; years pass one="一".
    """
    return "".join(one if char == "1" else _DIGIT_NAMES[int(char)] for char in digits if char.isdecimal())


def _with_liang(words: str) -> str:
    """Say 2 as 两 at the head of a number or of its 万/亿 section before 百/千/万/亿: 两千五百, 一万两千."""
    return re.sub(r"(?:^|(?<=[万亿]))二(?=[百千万亿])", "两", words)


def number_words(value: Decimal | int | str) -> str:
    """A number in words: 12 -> 十二, 2500 -> 两千五百, 3.5 -> 三点五, -3 -> 负三."""
    number = Decimal(str(value))
    sign = "负" if number < 0 else ""
    text = format(abs(number), "f")
    whole, _, fraction = text.partition(".")
    # cn2an stops at 16 digits; such a number is no quantity anyone says, so read it digit by digit.
    words = _with_liang(cn2an.an2cn(int(whole), "low")) if len(whole) <= 16 else digits_words(whole, one="一")
    if fraction:
        words += "点" + "".join(_DIGIT_NAMES[int(char)] for char in fraction)
    return sign + words


def amount_words(value: Decimal | str) -> str:
    """An amount of yuan in words: 2500.50 -> 两千五百元五角, 2500.05 -> 两千五百元零五分, 0.5 -> 五角.

    An amount of fen only ends in 钱 ("五分钱"): "五分" alone also means five points or minutes.
    """
    amount = Decimal(str(value).replace(",", "")).quantize(_CENT, rounding=ROUND_HALF_UP)
    sign = "负" if amount < 0 else ""
    amount = abs(amount)
    yuan = int(amount)
    cents = int((amount - yuan) * 100)
    jiao, fen = divmod(cents, 10)
    words = f"{number_words(yuan)}元" if yuan or not cents else ""
    if jiao:
        words += f"{_DIGIT_NAMES[jiao]}角"
    if fen:
        words += f"{'零' if yuan and not jiao else ''}{_DIGIT_NAMES[fen]}分"
        if not yuan and not jiao:
            words += "钱"
    return sign + words


def _year_words(year: str) -> str:
    return digits_words(year, one="一")


def _date_words(year: str, month: str, day: str, day_word: str = "日") -> str:
    return f"{_year_words(year)}年{number_words(int(month))}月{number_words(int(day))}{day_word}"


def _time_words(hour: str, minute: str, second: str | None) -> str:
    words = f"{number_words(int(hour))}点"
    if int(minute) or second:
        words += f"{'零' if int(minute) < 10 else ''}{number_words(int(minute))}分"
    if second is not None and int(second):
        words += f"{'零' if int(second) < 10 else ''}{number_words(int(second))}秒"
    return words


_NUMBER = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_CODE_WORD_PATTERN = "|".join(_CODE_WORDS)
_MEASURE_PATTERN = "|".join(sorted(_TWO_AS_LIANG, key=len, reverse=True))

# Ordered: each pattern speaks its match and the later ones never see it again (see speakable).
_RULES: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    (
        re.compile(r"(?<![\d.])(\d{4})([-/.])(0?[1-9]|1[0-2])\2(0?[1-9]|[12]\d|3[01])(?![\d.])"),
        lambda m: _date_words(m.group(1), m.group(3), m.group(4)),
    ),
    (
        re.compile(r"(?<!\d)(\d{4})年(\d{1,2})月(\d{1,2})([日号])"),
        lambda m: _date_words(m.group(1), m.group(2), m.group(3), m.group(4)),
    ),
    (
        re.compile(r"(?<![\d:])([01]?\d|2[0-4]):([0-5]\d)(?::([0-5]\d))?(?![\d:])"),
        lambda m: _time_words(m.group(1), m.group(2), m.group(3)),
    ),
    (
        re.compile(rf"({_CODE_WORD_PATTERN})([是为：:]?)\s*(\d+)"),
        lambda m: f"{m.group(1)}{m.group(2).replace(':', '：')}{digits_words(m.group(3))}",
    ),
    (
        re.compile(rf"(人民币|[¥￥])\s*({_NUMBER})(?:\s*(?:元|块))?"),
        lambda m: f"{'人民币' if m.group(1) == '人民币' else ''}{amount_words(m.group(2))}",
    ),
    (
        re.compile(rf"(?<![\d.])({_NUMBER})\s*万元"),
        lambda m: f"{number_words(m.group(1).replace(',', ''))}万元",
    ),
    (
        re.compile(rf"(?<![\d.])({_NUMBER})\s*(?:元|块钱|块)"),
        lambda m: amount_words(m.group(1)),
    ),
    (
        re.compile(rf"(?<![\d.])([-−]?)({_NUMBER})\s*[%％]"),
        lambda m: f"{'负' if m.group(1) else ''}百分之{number_words(m.group(2).replace(',', ''))}",
    ),
    (re.compile(r"(?<![\d.])(\d{4})年"), lambda m: f"{_year_words(m.group(1))}年"),
    # Phone numbers and other long digit strings (5 digits or more, not money) are read digit by digit.
    # A count before a measure word ("100000次") stays a number.
    (
        re.compile(rf"(?<![\d.,])(\d{{5,}})(?![\d.,]|\s*(?:{_MEASURE_PATTERN}))"),
        lambda m: digits_words(m.group(1)),
    ),
    # An ordinal is never 两: "第2笔" is 第二笔.
    (re.compile(r"(?<=第)(\d+)"), lambda m: number_words(m.group(1))),
    (
        re.compile(rf"(?<![\d.])(\d+)\s*[-~～至到]\s*(\d+)(?=\s*(?:{_MEASURE_PATTERN}))"),
        lambda m: f"{number_words(m.group(1))}到{number_words(m.group(2))}",
    ),
    (re.compile(r"(?<![\d.])-(?=\d)"), lambda m: "负"),
    (
        re.compile(rf"(?<![\d.])({_NUMBER})(?=(?:\s*({_MEASURE_PATTERN}))?)"),
        lambda m: "两" if m.group(1) == "2" and m.group(2) else number_words(m.group(1).replace(",", "")),
    ),
    # Whatever digits are left sit in odd company (".5", "3.5.2"): say them as numbers rather than lose them.
    (re.compile(r"\d+"), lambda m: number_words(m.group(0))),
)

_CURRENCY_CODES = re.compile(r"(?<![A-Za-z])(?:RMB|CNY|rmb|cny)(?![A-Za-z])")

# Symbols a voice cannot say: # and * are named when they are keys to press ("按#号键"), others dropped.
_KEY_SYMBOLS = re.compile(r"([#＃*＊])(?=\s*[号键])")
_UNSPEAKABLE = re.compile(r"[#＃*＊_`~^|\\<>\[\]{}=+@$&]")


def _symbols(text: str) -> str:
    text = _KEY_SYMBOLS.sub(lambda m: "井" if m.group(1) in "#＃" else "星", text)
    text = _UNSPEAKABLE.sub("", text)
    text = "".join(_PUNCTUATION.get(char, char) for char in text)
    # A full stop ends a sentence only after a non-digit (digits were all spoken by now, so none is left).
    text = re.sub(r"\.(?=\s|$)", "。", text)
    text = re.sub(r"[\U0001F300-\U0001FAFF\u2600-\u27BF\uFE0F]", "", text)  # emoji
    # Spaces around Chinese punctuation or between Chinese characters are neither said nor needed for pauses.
    text = re.sub(r"\s*([，。；！？：、（）])\s*", r"\1", text)
    text = re.sub(r"(?<=[\u4e00-\u9fff])\s+(?=[\u4e00-\u9fff])", "", text)
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def speakable(text: str) -> str:
    """The bot reply as TTS should say it: "向张三转账2,500.00元" -> "向张三转账两千五百元".

    Amounts are spoken in yuan/jiao/fen, codes after 尾号/卡号/手机号 and numbers of five digits or more digit by
    digit with 幺 for 1, years digit by digit, dates, clock times and percentages in words, other numbers as
    numbers (两 before a measure word). Chinese punctuation is kept for the voice's pauses.
    """
    # Latin letters stay (Mandarin voices say letter names and words like APP), except currency codes.
    text = _CURRENCY_CODES.sub("人民币", text)
    pieces: list[tuple[str, bool]] = [(text, False)]  # (text, already spoken)
    for pattern, speak in _RULES:
        next_pieces: list[tuple[str, bool]] = []
        for piece, spoken in pieces:
            if spoken:
                next_pieces.append((piece, spoken))
                continue
            last = 0
            for match in pattern.finditer(piece):
                next_pieces.append((piece[last : match.start()], False))
                next_pieces.append((speak(match), True))
                last = match.end()
            next_pieces.append((piece[last:], False))
        pieces = next_pieces
    return _symbols("".join(piece for piece, _ in pieces))
