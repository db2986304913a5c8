"""Spoken Mandarin numbers in recogniser transcripts become the values and text the NLU expects."""

from __future__ import annotations

import itertools
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import cn2an
import pytest
import yaml
from hypothesis import assume, example, given
from hypothesis import strategies as st

from bankcore.money import parse_amount
from voice.spoken_numbers import ASR_CONFUSIONS, SpokenValue, find_values, fix_confusions, normalize_transcript

SPOKEN_FORMS: list[dict[str, Any]] = yaml.safe_load(
    (Path(__file__).parent.parent / "data" / "voice" / "spoken_forms.yaml").read_text(encoding="utf-8")
)
NUMERAL_CHARS = "零〇一二两三四五六七八九幺十百千万亿"


def _values(text: str) -> list[str]:
    return [f"{value.kind} {value.value}" for value in find_values(text)]


def _with_liang(words: str) -> str:
    """How people say cn2an's "二千" and "二万": 两 at the head of the number or of a 万/亿 section."""
    return re.sub(r"(?:^|(?<=[万亿]))二(?=[百千万亿])", "两", words)


def test_the_table_holds_enough_forms_and_negatives() -> None:
    assert len(SPOKEN_FORMS) >= 150
    assert sum(1 for row in SPOKEN_FORMS if not row["values"]) >= 40


@pytest.mark.parametrize("row", SPOKEN_FORMS, ids=[row["say"] for row in SPOKEN_FORMS])
def test_spoken_form_is_normalised_as_tabled(row: dict[str, Any]) -> None:
    assert normalize_transcript(row["say"]) == row["text"]
    assert _values(row["say"]) == row["values"]


@pytest.mark.parametrize("row", SPOKEN_FORMS, ids=[row["say"] for row in SPOKEN_FORMS])
def test_each_value_span_is_the_spoken_text(row: dict[str, Any]) -> None:
    for value in find_values(row["say"]):
        assert row["say"][value.start : value.end] == value.spoken
        assert value.spoken.strip() == value.spoken


@pytest.mark.parametrize(
    ("say", "expected"),
    [
        ("两千五百块", "2500"),
        ("五十块五", "50.50"),
        ("一百二十三块四毛五", "123.45"),
        ("三点五万元", "35000"),
        ("两万块钱", "20000"),
        ("八毛五", "0.85"),
        ("三块零五", "3.05"),
        ("五分钱", "0.05"),
        ("一万二", "12000"),
        ("一亿二", "120000000"),
    ],
)
def test_normalised_amount_is_understood_by_the_amount_parser(say: str, expected: str) -> None:
    assert parse_amount(normalize_transcript(say)) == Decimal(expected)


def test_spoken_value_reports_kind_value_and_span() -> None:
    text = "我 要 转 两千五百 块 给 张三"
    assert find_values(text) == [SpokenValue("amount", "2500.00", "两千五百 块", 6, 12)]


def test_digits_keep_leading_zeros() -> None:
    assert find_values("尾号 零 三 七 幺")[0].value == "0371"


def test_empty_and_blank_transcripts() -> None:
    assert find_values("") == []
    assert normalize_transcript("") == ""
    assert normalize_transcript("   ") == ""


def test_confusions_replace_only_whole_words_unless_marked_anywhere() -> None:
    assert fix_confusions("信用 看 还款") == "信用卡 还款"
    assert fix_confusions("对于额度") == "对于额度"  # 于额 is inside 对于 额度
    assert fix_confusions("我 的 转帐 记录") == "我 的 转账 记录"
    assert fix_confusions("我的转帐记录") == "我的转账记录"  # a variant spelling is wrong anywhere


def test_confusion_table_is_small_and_consistent() -> None:
    heard = [row[0] for row in ASR_CONFUSIONS]
    assert 15 <= len(ASR_CONFUSIONS) <= 40
    assert len(heard) == len(set(heard))
    for wrong, right, _ in ASR_CONFUSIONS:
        assert wrong != right
        assert not set(wrong) & set(NUMERAL_CHARS)


# --- Properties --------------------------------------------------------------------------------------------
@given(st.integers(min_value=0, max_value=99_999_999_999))
@example(10)
@example(15)
@example(105)
@example(1010)
@example(20000)
@example(100_000_000)
def test_integer_said_by_cn2an_round_trips(number: int) -> None:
    words = cn2an.an2cn(number, "low")
    assert normalize_transcript(words) == str(number)
    assert _values(words) == [f"number {number}"]


@given(st.integers(min_value=1, max_value=99_999_999_999))
@example(2)
@example(200)
@example(2000)
@example(22000)
@example(200_002_000)
def test_integer_said_with_liang_round_trips(number: int) -> None:
    words = _with_liang(cn2an.an2cn(number, "low"))
    assert normalize_transcript(words) == str(number)
    assert _values(f"转 {words} 块 给 张三") == [f"amount {number}.00"]


@given(st.decimals(min_value=Decimal("0.01"), max_value=Decimal("9999999.99"), places=2))
def test_decimal_said_by_cn2an_round_trips(number: Decimal) -> None:
    words = cn2an.an2cn(str(number), "low")
    assert Decimal(normalize_transcript(words)) == number
    [value] = find_values(words)
    assert (value.kind, Decimal(value.value)) == ("number", number)


@given(
    st.text(alphabet="0123456789", min_size=2, max_size=19),
    st.sampled_from(["幺", "一"]),
    st.sampled_from(["", " "]),
    st.sampled_from(["", "尾号", "尾号是 ", "手机号 ", "验证码 "]),
)
@example("51", "一", "", "")
@example("0012", "幺", " ", "尾号")
def test_digits_said_one_by_one_round_trip(digits: str, one: str, gap: str, lead: str) -> None:
    names = {"0": "零", "1": one, "2": "二", "3": "三", "4": "四", "5": "五", "6": "六", "7": "七", "8": "八"}
    spoken = gap.join(names.get(char, "九") for char in digits)
    assert normalize_transcript(f"{lead}{spoken}") == f"{lead.replace(' ', '')}{digits}"
    assert _values(f"{lead}{spoken}") == [f"digits {digits}"]


@given(st.text(max_size=60))
@example("百分之")
@example("点点点")
@example("一点")
@example("万万亿")
@example("二零二五年十三月四十号")
def test_never_raises_and_spans_index_the_input(text: str) -> None:
    normalize_transcript(text)
    for value in find_values(text):
        assert text[value.start : value.end] == value.spoken


# CJK characters, Latin letters and digits without any Chinese numeral, whitespace or misheard word.
_NO_NUMERALS = st.text(
    alphabet=st.one_of(
        st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF).filter(lambda char: char not in NUMERAL_CHARS),
        st.sampled_from("abcXYZ0123456789，。？"),
    ),
    max_size=40,
)


@given(_NO_NUMERALS)
def test_text_without_numerals_is_left_alone(text: str) -> None:
    assume(not any(heard in text for heard, _, _ in ASR_CONFUSIONS))
    assert normalize_transcript(text) == text
    assert find_values(text) == []


@given(st.text(alphabet=NUMERAL_CHARS + "点年月号日块元钱毛角分百之第尾号转个下 ", max_size=30))
def test_numeral_soup_never_raises_and_spans_do_not_overlap(text: str) -> None:
    normalize_transcript(text)
    values = find_values(text)
    for earlier, later in itertools.pairwise(values):
        assert earlier.end <= later.start
    for value in values:
        assert text[value.start : value.end] == value.spoken
