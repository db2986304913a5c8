"""Spoken Mandarin numbers in ASR transcripts (Vosk) to the written values the NLU understands."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

import cn2an

__all__ = ["ASR_CONFUSIONS", "SpokenValue", "find_values", "fix_confusions", "normalize_transcript"]

ValueKind = Literal["amount", "number", "digits", "year", "date", "percent"]


@dataclass(frozen=True)
class SpokenValue:
    """One value found in a transcript.

    `value` is canonical: amount "2500.00"; number "12000" or "0.5"; digits "0371" (leading zeros kept);
    year "2025"; date "11-23" or "2025-11-23"; percent "3.5". `spoken` is `text[start:end]` of the input.
    """

    kind: ValueKind
    value: str
    spoken: str
    start: int
    end: int


# --- Character classes -------------------------------------------------------------------------------------
# Digit characters as a recogniser writes them. 幺 is how 1 is said in phone and card numbers; 两 is 2 before a
# unit or a measure word; 〇 appears in written years.
_DIGIT_VALUE = {
    "零": 0, "〇": 0, "一": 1, "幺": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8,
    "九": 9,
}  # fmt: skip
_D = "".join(_DIGIT_VALUE)
_UNITS = "十百千万亿"
_N = _D + _UNITS  # every character that can be part of a numeral

# A numeral run: starts with a digit or 十 (十二 = 12; a run never starts with 百/千/万, so 千万别 and 万一 stay
# words), may carry a decimal part and, after a decimal, one multiplier (三点五万 = 35000). The decimal part is
# possessive and must not be followed by 十/百/千: "三点十五" and "九点三十分" are clock times, not 3.1 or 9.3.
_RUN = re.compile(rf"[{_D}十][{_N}]*(?:点[{_D}]++(?![十百千])[万亿千]?)?")

# Measure words after which a numeral is a quantity. Longest first so that 个月 wins over 个.
_MEASURES = tuple(
    sorted(
        (
            "块钱", "块", "元", "圆", "毛", "角", "个月", "个", "张", "次", "笔", "天", "年", "月", "号", "日", "周",
            "星期", "礼拜", "期", "位", "岁", "小时", "分钟", "秒", "倍", "条", "项", "种", "份", "台", "本", "件",
            "套", "遍", "折", "成", "万", "千",
        ),
        key=len,
        reverse=True,
    )
)  # fmt: skip
# A lone 一 is so often an article or part of a word ("一个问题", "看一看") that it becomes 1 only before
# these, where it can only be a quantity.
_MEASURES_AFTER_LONE_ONE = (
    "块钱", "块", "元", "圆", "毛", "角", "个月", "年", "月", "号", "日", "天", "周", "星期", "期", "笔", "张",
    "位", "岁", "次", "小时", "分钟", "秒", "倍",
)  # fmt: skip
_CURRENCY = ("块钱", "块", "元", "圆")

# Words just before a numeral that make it a value even when it is one character ("尾号是 一 二 三 四").
_DIGIT_TRIGGERS = (
    "尾号", "卡号", "账号", "帐号", "手机号", "手机号码", "电话", "电话号码", "号码", "验证码", "密码", "后四位",
    "后六位", "身份证号", "工号",
)  # fmt: skip
_CHOICE_TRIGGERS = ("第", "选", "按", "选择")
# Words before a number that make it money even without 块/元 ("转两万给他").
_AMOUNT_TRIGGERS = (
    "转", "转账", "转帐", "存", "存入", "还", "还款", "取", "取款", "汇", "汇款", "付", "支付", "交", "缴", "充",
    "充值", "金额", "额度", "一共", "总共",
)  # fmt: skip
_LINKING_WORDS = ("是", "为", "：", ":")

# Numerals inside ordinary words. Each pattern marks the numeral characters it must protect; the lookarounds
# keep a real number intact ("一万一" = 11000 holds no 万一, "十一下午" no 一下).
_NOT_NUMBERS = tuple(
    re.compile(pattern)
    for pattern in (
        rf"(?<![{_N}])一(?=下|直|起|定|样|般|些|切|旦|致|边|会|向|律|共|再|同|并|概|番|阵|流|路|心|贯|辈子|口气|方面"
        rf"|键|卡通|网通|次性|模一样|块儿|块去|块走|块来)",
        rf"(?<![{_N}])一(?=点(?![{_D}]))",  # 一点(儿) = a little; 一点五 is 1.5
        rf"(?<=[统万唯之不专同逐])一(?![{_N}])",
        rf"(?<![{_N}])万(?=一(?![{_N}]))",
        r"(?<=第)(?:一(?=时间)|三(?=方))",
        rf"(?<![{_N}])十(?=分(?!钟))",  # 十分 = very; 十分钟 = ten minutes
        rf"(?<![{_N}])十(?=足)",
        rf"(?<![{_N}])三(?=星|思)",
        r"(?<=再)三",
        rf"(?<![{_N}])二(?=维码|手)",
        r"(?<=不)二",
        rf"(?<![{_N}])五一(?![{_N}])",  # the May Day holiday
        rf"(?<![{_N}])零(?=钱|用钱|花钱|食|售|存整取)",
        rf"(?<![{_N}])四(?=处)",
        r"七(?=八糟|上八下)",
    )
)

# Common recogniser confusions for banking words: (heard, meant, anywhere). The heard forms are homophones or
# near-homophones a Mandarin recogniser produces for the banking word. With anywhere=False the heard form is
# also a real word or a substring of common phrases ("对于额度" holds 于额), so it is replaced only when it
# covers whole recognised words; anywhere=True forms (variant spellings, non-words) are replaced wherever found.
ASR_CONFUSIONS: tuple[tuple[str, str, bool], ...] = (
    ("转帐", "转账", True),  # variant character for 账 (zhàng), same reading
    ("帐户", "账户", True),
    ("帐号", "账号", True),
    ("帐单", "账单", True),
    ("对帐", "对账", True),
    ("余鹅", "余额", True),  # yú'é, same syllables
    ("鱼额", "余额", True),
    ("于额", "余额", False),  # 对于额度 holds 于额
    ("挂式", "挂失", False),  # guàshì vs guàshī; 挂式空调 is a real word
    ("信用看", "信用卡", False),  # kàn vs kǎ: a recogniser's near miss on the final
    ("信用咔", "信用卡", True),
    ("储蓄咔", "储蓄卡", True),
    ("银行咔", "银行卡", True),
    ("换款", "还款", False),  # 还 is huán; 换 huàn differs only in tone
    ("会率", "汇率", False),  # huìlǜ; 会率先 ("will first") holds 会率
    ("利律", "利率", False),  # lìlǜ
    ("理才", "理财", False),  # lǐcái; 道理才 holds 理才
    ("定其", "定期", False),  # dìngqī
    ("活其", "活期", False),  # huóqī
    ("分其", "分期", False),  # fēnqī
    ("带款", "贷款", False),  # dàikuǎn; 带款 (carry money) is a real phrase
    ("密马", "密码", False),  # mìmǎ
    ("验正码", "验证码", True),  # yànzhèngmǎ; 验正码 is no word
    ("冻节", "冻结", False),  # dòngjié
    ("解东", "解冻", False),  # jiědòng
    ("积活", "激活", False),  # jīhuó
    ("额渡", "额度", False),  # édù
    ("开护", "开户", False),  # kāihù
    ("销护", "销户", False),  # xiāohù
    ("银航", "银行", False),  # yínháng; 航 háng
)


# --- Compact view ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Compact:
    """The transcript without whitespace, with each character's index in the input and whether it starts a word."""

    text: str
    index: list[int]
    word_start: list[bool]

    @classmethod
    def of(cls, text: str) -> _Compact:
        chars: list[str] = []
        index: list[int] = []
        word_start: list[bool] = []
        after_space = True
        for position, char in enumerate(text):
            if char.isspace():
                after_space = True
                continue
            chars.append(char)
            index.append(position)
            word_start.append(after_space)
            after_space = False
        return cls("".join(chars), index, word_start)

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The input span of compact characters [start, end)."""
        return self.index[start], self.index[end - 1] + 1

    def is_word_end(self, position: int) -> bool:
        return position >= len(self.text) or self.word_start[position]


@dataclass(frozen=True)
class _Found:
    """A value and the written form that replaces its span in the normalised transcript."""

    value: SpokenValue
    written: str


# --- Numeral values ----------------------------------------------------------------------------------------
def _digit_string(numeral: str) -> str:
    return "".join(str(_DIGIT_VALUE[char]) for char in numeral)


def _is_digit_only(numeral: str) -> bool:
    return bool(numeral) and all(char in _DIGIT_VALUE for char in numeral)


def _integer_value(numeral: str) -> int | None:
    """The value of a numeral without a decimal point, or None if it is not a well-formed number."""
    if _is_digit_only(numeral):
        return int(_digit_string(numeral))
    # cn2an does not know 幺 or 〇, and takes 两 only in some positions (not in "两亿两千").
    plain = numeral.replace("幺", "一").replace("〇", "零").replace("两", "二")
    try:
        value = cn2an.cn2an(plain, "smart")
    except (ValueError, KeyError, IndexError, TypeError):
        value = None
    if isinstance(value, int):
        return value
    # cn2an rejects two readings after 亿 that it accepts after 万: the colloquial ellipsis ("一亿二" = 1.2亿) and
    # a lower section without 零 ("二亿二千", which its own an2cn writes for 200002000).
    high_text, separator, low_text = plain.rpartition("亿")
    if not separator or not high_text or not low_text:
        return None
    high = _integer_value(high_text + "亿")
    if high is None:
        return None
    if len(low_text) == 1 and low_text in _DIGIT_VALUE:
        return high + _DIGIT_VALUE[low_text] * 10_000_000
    low = _integer_value(low_text)
    return high + low if low is not None and low < 100_000_000 else None


def _numeral_value(numeral: str) -> Decimal | None:
    """The exact value of a numeral run: integer, decimal ("零点五") or decimal times a unit ("三点五万")."""
    multiplier = 1
    if "点" in numeral and numeral[-1] in "万亿千":
        multiplier = {"万": 10_000, "亿": 100_000_000, "千": 1_000}[numeral[-1]]
        numeral = numeral[:-1]
    whole, _, fraction = numeral.partition("点")
    integer = _integer_value(whole)
    if integer is None:
        return None
    # The fraction is read digit by digit; build the Decimal from text so that no float rounding creeps in.
    value = Decimal(f"{integer}.{_digit_string(fraction)}") if fraction else Decimal(integer)
    return value * multiplier


def _plain(value: Decimal) -> str:
    """A Decimal as written digits without exponent or a trailing ".0" from a multiplier ("35000", "0.5")."""
    text = format(value, "f")
    if "." in text and value == value.to_integral_value():
        text = text.split(".")[0]
    return text


def _shortest(value: Decimal) -> str:
    """An amount without trailing zeros in its fraction: 50.50 -> "50.5", 3.05 -> "3.05"."""
    text = format(value.quantize(Decimal("0.01")), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _money(value: Decimal) -> str:
    return format(value.quantize(Decimal("0.01")), "f")


# --- Scanner -----------------------------------------------------------------------------------------------
_AMOUNT_WITH_SMALL_UNITS = re.compile(
    rf"(?:(?P<yuan>[{_D}十][{_N}]*)(?:块钱|块|元|圆))?"
    rf"(?:零(?P<fen_after_zero>[{_D}])分?"
    rf"|(?P<jiao>[{_D}])(?:毛|角)(?:(?P<fen>[{_D}])分?)?"
    rf"|(?P<fen_only>[{_D}])分"
    rf"|(?P<bare_jiao>[{_D}])(?![{_N}毛角分点]|{'|'.join(_MEASURES)}))"
    r"(?P<coin>钱)?"
)
_PERCENT = re.compile(rf"百分之(?P<number>[{_D}十][{_N}]*(?:点[{_D}]+)?)")
_CLOCK = re.compile(
    rf"(?P<part>上午|下午|晚上|早上|中午|凌晨|傍晚)?(?P<hour>[{_D}十]{{1,3}})点"
    rf"(?:(?P<minute>[{_D}十]{{1,3}})(?P<fen>分)?|(?P<half>半|钟|整))?"
)
_DATE = re.compile(
    rf"(?:(?P<year>[{_N}]{{2,7}})年)?(?P<month>[{_D}十]{{1,3}})月(?:份)?(?P<day>[{_D}十]{{1,4}})(?P<day_word>号|日)"
)


class _Scanner:
    """Finds values in one transcript; claimed and protected positions are masked so passes never overlap."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.compact = _Compact.of(text)
        self.mask = list(self.compact.text)
        self.found: list[_Found] = []

    @property
    def masked(self) -> str:
        return "".join(self.mask)

    def claim(self, start: int, end: int, kind: ValueKind, value: str, written: str) -> None:
        input_start, input_end = self.compact.span(start, end)
        spoken = self.text[input_start:input_end]
        self.found.append(_Found(SpokenValue(kind, value, spoken, input_start, input_end), written))
        self.block(start, end)

    def block(self, start: int, end: int) -> None:
        for position in range(start, end):
            self.mask[position] = "\x00"

    def before(self, position: int) -> str:
        return self.compact.text[:position]

    def after(self, position: int) -> str:
        return self.compact.text[position:]

    def run(self) -> list[SpokenValue]:
        if self._whole_utterance():
            return [found.value for found in self.found]
        self._percentages()
        self._clock_times()
        self._dates()
        self._protect_words()
        self._amounts_with_small_units()
        self._runs()
        self.found.sort(key=lambda found: found.value.start)
        return [found.value for found in self.found]

    # A whole answer that is one numeral ("一 二 三 四" to "请说出卡号后四位", or "两千五").
    def _whole_utterance(self) -> bool:
        compact = self.compact.text
        if not compact or _RUN.fullmatch(compact) is None:
            return False
        if _is_digit_only(compact) and len(compact) > 1:
            self.claim(0, len(compact), "digits", _digit_string(compact), _digit_string(compact))
            return True
        value = _numeral_value(compact)
        if value is None:
            return False
        self.claim(0, len(compact), "number", _plain(value), _plain(value))
        return True

    def _percentages(self) -> None:
        for match in _PERCENT.finditer(self.masked):
            value = _numeral_value(match.group("number"))
            if value is not None:
                self.claim(match.start(), match.end(), "percent", _plain(value), f"{_plain(value)}%")

    def _clock_times(self) -> None:
        # Only hours with a clock word around them: "三点" alone may be "3.", "一点" alone is "a little".
        for match in _CLOCK.finditer(self.masked):
            minute_text = match.group("minute")
            hour = _numeral_value(match.group("hour"))
            minute = _numeral_value(minute_text) if minute_text else None
            # A minute without 分 must hold 十 ("三点十五"), else it is a decimal ("三点五").
            minute_ok = minute_text is not None and (match.group("fen") is not None or "十" in minute_text)
            clock_word = match.group("part") is not None or match.group("half") is not None
            if hour is None or hour > 24 or not (minute_ok or clock_word):
                continue
            if minute_ok and (minute is None or minute >= 60):
                continue
            self.claim(match.start("hour"), match.end("hour"), "number", _plain(hour), _plain(hour))
            if minute_ok and minute is not None:
                self.claim(match.start("minute"), match.end("minute"), "number", _plain(minute), _plain(minute))

    def _dates(self) -> None:
        for match in _DATE.finditer(self.masked):
            month = _integer_value(match.group("month"))
            day = _integer_value(match.group("day"))
            if month is None or day is None or not (1 <= month <= 12 and 1 <= day <= 31):
                continue
            year_text = match.group("year")
            year = self._year(year_text) if year_text else None
            if year_text and year is None:
                continue
            written = f"{month}月{day}{match.group('day_word')}"
            value = f"{month:02d}-{day:02d}"
            if year is not None:
                written, value = f"{year}年{written}", f"{year}-{value}"
            self.claim(match.start(), match.end(), "date", value, written)

    @staticmethod
    def _year(numeral: str) -> str | None:
        """A year said digit by digit ("二零二五") or as a number ("两千零二十五") between 1900 and 2199."""
        if _is_digit_only(numeral):
            return _digit_string(numeral) if len(numeral) == 4 else None
        value = _integer_value(numeral)
        return str(value) if value is not None and 1900 <= value <= 2199 else None

    def _protect_words(self) -> None:
        for pattern in _NOT_NUMBERS:
            for match in pattern.finditer(self.compact.text):
                # After 尾号/验证码 every numeral is a digit: "尾号五一二三" is no holiday.
                if not self._context_words(match.start()).endswith(_DIGIT_TRIGGERS):
                    self.block(match.start(), match.end())

    def _amounts_with_small_units(self) -> None:
        for match in _AMOUNT_WITH_SMALL_UNITS.finditer(self.masked):
            if not match.group(0):
                continue
            yuan_text = match.group("yuan")
            jiao_text = match.group("jiao") or match.group("bare_jiao")
            fen_text = match.group("fen") or match.group("fen_after_zero") or match.group("fen_only")
            if yuan_text is None and not (match.group("jiao") or (match.group("fen_only") and match.group("coin"))):
                continue  # "五分" alone is a score or minutes; "五分钱" and "五毛" are money
            yuan = _numeral_value(yuan_text) if yuan_text else Decimal(0)
            if yuan is None:
                continue
            value = yuan + Decimal(_DIGIT_VALUE[jiao_text] if jiao_text else 0) / 10
            value += Decimal(_DIGIT_VALUE[fen_text] if fen_text else 0) / 100
            # Written as yuan with a decimal: "50.5元" reads like the bank's own texts and parse_amount takes it.
            self.claim(match.start(), match.end(), "amount", _money(value), f"{_shortest(value)}元")

    def _runs(self) -> None:
        for match in _RUN.finditer(self.masked):
            for start, end in self._split_at_words(match.start(), match.end()):
                self._classify(start, end)

    def _split_at_words(self, start: int, end: int) -> list[tuple[int, int]]:
        """Cut a run that spans several recognised words where the words are separate numbers.

        A run continues into the next word only if it began at a word start ("张三 三千" is 张三 and 三千), and
        a multi-word run that does not parse as one number ("两千 三千") is read word by word.
        """
        word_start = self.compact.word_start
        # After 尾号/验证码 the digits go on across words even if the first is glued to the keyword ("尾号零 三").
        glued = self._context_words(start).endswith(_DIGIT_TRIGGERS)
        pieces: list[tuple[int, int]] = []
        piece_start = start
        for position in range(start + 1, end):
            if word_start[position] and not word_start[piece_start] and not (glued and piece_start == start):
                pieces.append((piece_start, position))
                piece_start = position
        pieces.append((piece_start, end))
        result: list[tuple[int, int]] = []
        for piece_start, piece_end in pieces:
            numeral = self.compact.text[piece_start:piece_end]
            words = [position for position in range(piece_start, piece_end) if word_start[position]]
            if len(words) > 1 and not _is_digit_only(numeral) and _numeral_value(numeral) is None:
                result += list(zip(words, [*words[1:], piece_end], strict=True))
            else:
                result.append((piece_start, piece_end))
        return result

    def _context_words(self, start: int) -> str:
        """The text before a run without a linking word ("尾号是" -> "尾号")."""
        before = self.before(start)
        for word in _LINKING_WORDS:
            if before.endswith(word):
                return before[: -len(word)]
        return before

    def _classify(self, start: int, end: int) -> None:
        numeral = self.compact.text[start:end]
        after = self.after(end)
        context = self._context_words(start)
        digit_context = context.endswith(_DIGIT_TRIGGERS)
        measure = next((word for word in _MEASURES if after.startswith(word)), None)
        if len(numeral) == 1:
            lone_one_ok = numeral not in "一幺" or after.startswith(_MEASURES_AFTER_LONE_ONE)
            wanted = digit_context or context.endswith(_CHOICE_TRIGGERS) or (measure is not None and lone_one_ok)
            if numeral == "两":
                wanted = measure is not None or digit_context
            if not wanted:
                return
        if _is_digit_only(numeral) and len(numeral) > 1:
            self._digit_run(start, end, numeral, after, measure, digit_context)
            return
        value = _numeral_value(numeral)
        if value is None:
            return
        if after.startswith("年") and "点" not in numeral:
            year = self._year(numeral)
            if year is not None:
                self.claim(start, end, "year", year, year)
                return
        currency = next((word for word in _CURRENCY if after.startswith(word)), None)
        if currency is not None:
            self.claim(start, end + len(currency), "amount", _money(value), f"{_plain(value)}{currency}")
        elif context.endswith(_AMOUNT_TRIGGERS) and measure is None and value > 0:
            self.claim(start, end, "amount", _money(value), _plain(value))
        else:
            self.claim(start, end, "number", _plain(value), _plain(value))

    def _digit_run(
        self, start: int, end: int, numeral: str, after: str, measure: str | None, digit_context: bool
    ) -> None:
        digits = _digit_string(numeral)
        if after.startswith("年") and len(numeral) == 4:
            self.claim(start, end, "year", digits, digits)
            return
        # "两三个", "三四天": two neighbouring digits before a measure word are an estimate, not 23 or 34.
        if not digit_context and len(numeral) == 2 and measure is not None:
            low, high = (_DIGIT_VALUE[char] for char in numeral)
            if high == low + 1:
                return
        self.claim(start, end, "digits", digits, digits)


# --- Public API --------------------------------------------------------------------------------------------
def find_values(text: str) -> list[SpokenValue]:
    """The numeric values spoken in a transcript, in order; spans index `text` itself."""
    return _Scanner(text).run() if text else []


def _found(text: str) -> list[_Found]:
    scanner = _Scanner(text)
    scanner.run()
    return scanner.found


def _confusion_edits(text: str, taken: list[tuple[int, int]]) -> list[tuple[int, int, str]]:
    compact = _Compact.of(text)
    used = [False] * len(compact.text)
    edits: list[tuple[int, int, str]] = []
    for heard, meant, anywhere in ASR_CONFUSIONS:
        for match in re.finditer(re.escape(heard), compact.text):
            start, end = match.start(), match.end()
            whole_words = compact.word_start[start] and compact.is_word_end(end)
            if not (anywhere or whole_words) or any(used[start:end]):
                continue
            input_start, input_end = compact.span(start, end)
            if any(input_start < b and a < input_end for a, b in taken):
                continue
            for position in range(start, end):
                used[position] = True
            edits.append((input_start, input_end, meant))
    return edits


def fix_confusions(text: str) -> str:
    """Replace the banking words a recogniser commonly mishears (ASR_CONFUSIONS); spacing is kept."""
    return _apply(text, _confusion_edits(text, []))


def _apply(text: str, edits: list[tuple[int, int, str]]) -> str:
    pieces: list[str] = []
    last = 0
    for start, end, replacement in sorted(edits):
        pieces.append(text[last:start])
        pieces.append(replacement)
        last = end
    pieces.append(text[last:])
    return "".join(pieces)


_SPACES_BETWEEN = re.compile(r"\s+")


def _join_words(text: str) -> str:
    """Drop the recogniser's word spaces, except one between two Latin or digit tokens ("ATM 2" stays apart)."""

    def keep_or_drop(match: re.Match[str]) -> str:
        left = text[match.start() - 1] if match.start() > 0 else ""
        right = text[match.end()] if match.end() < len(text) else ""
        return " " if left.isascii() and left.isalnum() and right.isascii() and right.isalnum() else ""

    return _SPACES_BETWEEN.sub(keep_or_drop, text).strip()


def normalize_transcript(text: str) -> str:
    """Turn a recogniser transcript into NLU text: "我 要 转 两千五百 块 给 张三" -> "我要转2500块给张三".

    Numerals become Arabic digits where the context shows they are numbers, units are kept, misheard banking
    words are corrected (ASR_CONFUSIONS) and word spaces between Chinese characters are removed.
    """
    found = _found(text)
    edits = [(item.value.start, item.value.end, item.written) for item in found]
    edits += _confusion_edits(text, [(start, end) for start, end, _ in edits])
    return _join_words(_apply(text, edits))
