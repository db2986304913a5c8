"""Chinese date phrases (昨天, 上个月, 3月5日, 最近7天...) to a half-open range of local dates."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

import cn2an

_CHINESE_NUMBER = r"[0-9０-９零〇一二两三四五六七八九十百]+"
_NAMED_DAYS = {"今天": 0, "今日": 0, "昨天": -1, "昨日": -1, "前天": -2, "大前天": -3}
_WEEKDAY_NAMES = {"一": 0, "二": 1, "三": 2, "四": 3, "五": 4, "六": 5, "日": 6, "天": 6}


@dataclass(frozen=True)
class DateRange:
    """Local dates, start inclusive, end exclusive."""

    start: date
    end: date

    def __contains__(self, day: date) -> bool:
        return self.start <= day < self.end


def _number(text: str) -> int:
    text = text.translate(str.maketrans("０１２３４５６７８９", "0123456789"))
    if text.isdecimal():
        return int(text)
    return int(cn2an.cn2an(text.replace("两", "二"), "smart"))


def _month_range(year: int, month: int) -> DateRange:
    start = date(year, month, 1)
    end = date(year + (month == 12), month % 12 + 1, 1)
    return DateRange(start, end)


def parse_date_range(phrase: str, today: date) -> DateRange | None:
    """The range a customer means, relative to their local `today`; None when the phrase names no date."""
    text = re.sub(r"\s+", "", phrase or "")
    if not text:
        return None
    for name in sorted(_NAMED_DAYS, key=len, reverse=True):
        if name in text:
            day = today + timedelta(days=_NAMED_DAYS[name])
            return DateRange(day, day + timedelta(days=1))
    match = re.search(rf"(?:最近|近|过去)({_CHINESE_NUMBER})(天|日|周|个星期|星期|个月|月)", text)
    if match:
        count = _number(match.group(1))
        unit = match.group(2)
        days = count * (7 if "周" in unit or "星期" in unit else 30 if "月" in unit else 1)
        return DateRange(today - timedelta(days=days - 1), today + timedelta(days=1))
    week_start = today - timedelta(days=today.weekday())
    if re.search(r"(本|这)(周|星期|礼拜)", text):
        return DateRange(week_start, today + timedelta(days=1))
    if re.search(r"上(个)?(周|星期|礼拜)", text):
        return DateRange(week_start - timedelta(days=7), week_start)
    if re.search(r"(本|这个?)月", text):
        return DateRange(date(today.year, today.month, 1), today + timedelta(days=1))
    if re.search(r"上个?月", text):
        previous = date(today.year, today.month, 1) - timedelta(days=1)
        return _month_range(previous.year, previous.month)
    match = re.search(rf"(?:(\d{{4}})年)?({_CHINESE_NUMBER})月(?:({_CHINESE_NUMBER})[日号])?", text)
    if match:
        month = _number(match.group(2))
        year = int(match.group(1)) if match.group(1) else today.year
        if not match.group(1) and month > today.month:
            year -= 1  # "12月" said in March means last December
        if not 1 <= month <= 12:
            return None
        if match.group(3):
            try:
                day = date(year, month, _number(match.group(3)))
            except ValueError:
                return None
            return DateRange(day, day + timedelta(days=1))
        return _month_range(year, month)
    match = re.search(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})", text)
    if match:
        try:
            day = date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
        except ValueError:
            return None
        return DateRange(day, day + timedelta(days=1))
    match = re.search(r"(上)?(?:周|星期|礼拜)([一二三四五六日天])", text)
    if match:
        day = week_start + timedelta(days=_WEEKDAY_NAMES[match.group(2)])
        if match.group(1) or day > today:
            day -= timedelta(days=7)
        return DateRange(day, day + timedelta(days=1))
    return None


# When a customer says they will pay: a day ("明天", "周五", "12月10号", "下个月初"), optionally "之前/前".
_FUTURE_DAY = (
    r"(?:大后天|后天|明天|明早|明晚|今晚|今天(?:上午|中午|下午|晚上)?|"
    r"(?:这|本|下个?)?(?:周|星期|礼拜)[一二三四五六日天]|周末|这周内?|本周内?|下个?(?:周|星期|礼拜)|"
    r"这两天|过两天|过几天|(?:下个?月|这个?月|本月)?(?:初|中旬|底)|月(?:初|中|底)|年底|"
    rf"(?:{_CHINESE_NUMBER}月)?{_CHINESE_NUMBER}[日号])"
)
_FUTURE_PHRASE = re.compile(rf"{_FUTURE_DAY}(?:之前|以前|前)?")


def future_date_phrase(text: str) -> str | None:
    """The first day a promise names, as said ("明天", "周五之前", "下个月初"); None when it names none.

    For repeating the customer's words back, not for computing a date: "过两天" stays "过两天".
    """
    match = _FUTURE_PHRASE.search(re.sub(r"\s+", "", text or ""))
    return match.group(0) if match else None
