"""Bot replies become text a Mandarin TTS voice says naturally, and what it says parses back to the same values."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from voice.speakable import amount_words, digits_words, number_words, speakable
from voice.spoken_numbers import find_values, normalize_transcript

REPLIES = [
    # Amounts in yuan, jiao and fen.
    ("2,500.00 元", "两千五百元"),
    ("2500.50元", "两千五百元五角"),
    ("¥800", "八百元"),
    ("￥ 1,000", "一千元"),
    ("2500.05元", "两千五百元零五分"),
    ("0.5元", "五角"),
    ("0.05元", "五分钱"),
    ("¥0.55", "五角五分"),
    ("12,345.67元", "一万两千三百四十五元六角七分"),
    ("100000.01元", "十万元零一分"),
    ("22000元", "两万两千元"),
    ("200块", "两百元"),
    ("1.5万元", "一点五万元"),
    ("共计RMB 500元", "共计人民币五百元"),
    ("向张三转账2,500.00元。", "向张三转账两千五百元。"),
    # Codes, phone numbers and long digit strings: one by one with 幺.
    ("尾号1234", "尾号幺二三四"),
    ("尾号 0371", "尾号零三七幺"),
    ("您尾号1234的储蓄卡", "您尾号幺二三四的储蓄卡"),
    ("手机号13800138000", "手机号幺三八零零幺三八零零零"),
    ("请致电95588", "请致电九五五八八"),
    ("验证码为 853201，请在5分钟内输入", "验证码为八五三二零幺，请在五分钟内输入"),
    ("卡号: 6222020200112233445", "卡号：六二二二零二零二零零幺幺二二三三四四五"),
    ("共100000次", "共十万次"),
    # Years, dates and times.
    ("2026年", "二零二六年"),
    ("2026-11-23", "二零二六年十一月二十三日"),
    ("2026/1/5", "二零二六年一月五日"),
    ("2026年11月23日到账", "二零二六年十一月二十三日到账"),
    ("今天是11月23日", "今天是十一月二十三日"),
    ("09:30", "九点三十分"),
    ("09:05", "九点零五分"),
    ("10:00", "十点"),
    ("10:05:09", "十点零五分零九秒"),
    # Percentages and plain numbers.
    ("3.5%", "百分之三点五"),
    ("年利率1.75%", "年利率百分之一点七五"),
    ("利率为-0.5%", "利率为负百分之零点五"),
    ("12", "十二"),
    ("2", "二"),
    ("200", "两百"),
    ("2个", "两个"),
    ("2次", "两次"),
    ("您有2张卡。", "您有两张卡。"),
    ("12个月", "十二个月"),
    ("第2笔", "第二笔"),
    ("第1期", "第一期"),
    ("请在3-5个工作日内", "请在三到五个工作日内"),
    ("3.14", "三点一四"),
    # Symbols, Latin letters and punctuation.
    ("请按#号键", "请按井号键"),
    ("**重要**：请勿泄露", "重要：请勿泄露"),
    ("Hello, APP", "Hello，APP"),
    ("您好！请问有什么可以帮您？", "您好！请问有什么可以帮您？"),
    ("好的 😊", "好的"),
]


@pytest.mark.parametrize(("reply", "expected"), REPLIES, ids=[reply for reply, _ in REPLIES])
def test_reply_is_spoken_as_tabled(reply: str, expected: str) -> None:
    assert speakable(reply) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2500.50", "两千五百元五角"),
        (Decimal("2500.05"), "两千五百元零五分"),
        ("0.5", "五角"),
        ("0.01", "一分钱"),
        ("0.10", "一角"),
        ("10", "十元"),
        ("0", "零元"),
        ("1010.10", "一千零一十元一角"),
        ("9999999.99", "九百九十九万九千九百九十九元九角九分"),
        ("2,000", "两千元"),
        ("-3", "负三元"),
    ],
)
def test_amount_words(value: Decimal | str, expected: str) -> None:
    assert amount_words(value) == expected


def test_digits_words_use_yao_except_for_years() -> None:
    assert digits_words("0371") == "零三七幺"
    assert digits_words("2011", one="一") == "二零一一"
    assert digits_words("") == ""


def test_number_words_say_two_as_liang_only_at_the_head_of_a_section() -> None:
    assert number_words(2) == "二"
    assert number_words(22000) == "两万两千"
    assert number_words(1200) == "一千二百"
    assert number_words(120000) == "十二万"
    assert number_words("3.50") == "三点五零"


# --- Properties: what TTS says parses back to the value ---------------------------------------------------
_AMOUNTS = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("9999999.99"), places=2)
_AMOUNT_TEXTS = st.sampled_from(["{:,.2f}元", "¥{}", "{}元", "向张三转账{:,.2f}元。", "金额：人民币{}元"])


@given(_AMOUNTS, _AMOUNT_TEXTS)
@example(Decimal("0.05"), "{}元")
@example(Decimal("100000.01"), "¥{}")
@example(Decimal("2000000.20"), "{:,.2f}元")
def test_spoken_amount_parses_back(amount: Decimal, template: str) -> None:
    spoken = speakable(template.format(amount))
    assert [(value.kind, value.value) for value in find_values(spoken)] == [("amount", f"{amount:.2f}")]


@given(st.integers(min_value=0, max_value=999_999_999))
def test_spoken_number_parses_back(number: int) -> None:
    assert normalize_transcript(speakable(f"共{number}笔")) == f"共{number}笔"


@given(st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True))
def test_spoken_phone_number_parses_back(phone: str) -> None:
    assert normalize_transcript(speakable(f"您的手机号{phone}已绑定")) == f"您的手机号{phone}已绑定"


@given(st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2199, 12, 31)))
def test_spoken_date_parses_back(day: dt.date) -> None:
    assert [(value.kind, value.value) for value in find_values(speakable(f"{day}"))] == [("date", f"{day}")]


@given(st.decimals(min_value=Decimal("0"), max_value=Decimal("100"), places=2))
def test_spoken_percentage_parses_back(rate: Decimal) -> None:
    [value] = find_values(speakable(f"年利率{rate}%"))
    assert (value.kind, Decimal(value.value)) == ("percent", rate)


@given(st.text(max_size=60))
def test_speakable_never_raises_and_leaves_no_ascii_digits(text: str) -> None:
    assert not any(char in "0123456789" for char in speakable(text))


@given(st.text(alphabet="0123456789.,:-/%¥元块年月日号尾个第#* ", max_size=30))
def test_number_soup_never_raises_and_leaves_no_ascii_digits(text: str) -> None:
    assert not any(char in "0123456789" for char in speakable(text))


def test_numbers_too_long_for_words_are_read_digit_by_digit() -> None:
    assert speakable("共12345678901234567次") == "共一二三四五六七八九零一二三四五六七次"
