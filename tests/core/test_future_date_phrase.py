"""The day a promise to pay names is found in the customer's words and repeated as said."""

from __future__ import annotations

import pytest

from bankcore.dates import future_date_phrase


@pytest.mark.parametrize(
    ("text", "day"),
    [
        ("我明天就还", "明天"),
        ("过两天发工资了就还", "过两天"),
        ("周五之前还上", "周五之前"),
        ("下周一之前一定还上", "下周一之前"),
        ("我下个月初还", "下个月初"),
        ("我12月10号前还上", "12月10号前"),
        ("工资十号到 到了我就还", "十号"),
        ("我今天下午就把钱还上", "今天下午"),
        ("本周内还清", "本周内"),
        ("月底前会把钱还上的", "月底前"),
        ("好的我会按时还的", None),
        ("我会在还款日前存好", None),
        ("", None),
    ],
)
def test_the_day_a_promise_names_is_found_as_said(text: str, day: str | None) -> None:
    assert future_date_phrase(text) == day
