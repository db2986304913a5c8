"""Tests for bankcore.money: written and spoken Chinese amounts, errors and formatting."""

from __future__ import annotations

import re
from decimal import Decimal

import cn2an
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bankcore.money import MAX_AMOUNT, AmountError, format_amount, parse_amount

ACCEPTED = [
    ("500", "500.00"),
    ("500元", "500.00"),
    ("五百块", "500.00"),
    ("两千五", "2500.00"),
    ("两千五百元", "2500.00"),
    ("1.5万", "15000.00"),
    ("一点五万", "15000.00"),
    ("三百块", "300.00"),
    ("一万二", "12000.00"),
    ("3千", "3000.00"),
    ("3万5", "35000.00"),
    ("¥1,200.50", "1200.50"),
    ("￥800", "800.00"),
    ("2,000.00", "2000.00"),
    ("１２００", "1200.00"),
    ("１，２００．５０", "1200.50"),
    ("五十块五", "50.50"),
    ("两块五", "2.50"),
    ("一百二十三块四毛五", "123.45"),
    ("三块零五", "3.05"),
    ("三块零五分", "3.05"),
    ("五毛", "0.50"),
    ("八毛五", "0.85"),
    ("十块八毛", "10.80"),
    ("八百八十八", "888.00"),
    ("两万", "20000.00"),
    ("一千零五十", "1050.00"),
    ("一万零五百", "10500.00"),
    ("两千块钱", "2000.00"),
    ("一千二百元整", "1200.00"),
    ("壹仟贰佰元整", "1200.00"),
    ("人民币五百元", "500.00"),
    ("RMB 500", "500.00"),
    ("2.5k", "2500.00"),
    ("2w", "20000.00"),
    ("三点五元", "3.50"),
    ("0.5", "0.50"),
    (" 500 ", "500.00"),
    ("十亿", "1000000000.00"),
]


@pytest.mark.parametrize(("text", "expected"), ACCEPTED)
def test_parse_amount_accepts_written_and_spoken_forms(text: str, expected: str) -> None:
    assert parse_amount(text) == Decimal(expected)
    assert parse_amount(text).as_tuple().exponent == -2


REJECTED = [
    ("负五百", "negative"),
    ("-500", "negative"),
    ("－５００", "negative"),
    ("¥-5", "negative"),
    ("0", "zero"),
    ("零", "zero"),
    ("0.00", "zero"),
    ("零块", "zero"),
    ("1.234", "too_many_decimals"),
    ("一点二三四", "too_many_decimals"),
    ("1000000001", "too_large"),
    ("十亿零一", "too_large"),
    ("一万亿", "too_large"),
    ("abc", "not_a_number"),
    ("", "not_a_number"),
    ("   ", "not_a_number"),
    ("块", "not_a_number"),
    ("1e5", "not_a_number"),
    ("五百美元", "not_a_number"),
    ("<script>", "not_a_number"),
    ("1; DROP TABLE accounts", "not_a_number"),
]


@pytest.mark.parametrize(("text", "reason"), REJECTED)
def test_parse_amount_rejects_unusable_amounts_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(AmountError) as caught:
        parse_amount(text)
    assert caught.value.reason == reason
    assert isinstance(caught.value, ValueError)


def test_format_amount_uses_thousands_separators_and_two_decimals() -> None:
    assert format_amount(Decimal("2500")) == "2,500.00"
    assert format_amount(Decimal("0.5")) == "0.50"
    assert format_amount(Decimal("1234567.891")) == "1,234,567.89"


integers = st.integers(min_value=1, max_value=99_999_999)


@given(integers, st.sampled_from(["low", "up"]), st.sampled_from(["", "元", "块", "块钱"]))
def test_every_chinese_rendered_integer_parses_back(number: int, mode: str, suffix: str) -> None:
    assert parse_amount(cn2an.an2cn(number, mode) + suffix) == Decimal(number)


@given(integers)
def test_spoken_liang_for_two_parses_back(number: int) -> None:
    # Speakers say 两 rather than 二 before a unit at the start: 两千五, 两万.
    spoken = re.sub(r"^二(?=[百千万亿])", "两", cn2an.an2cn(number, "low"))
    assert parse_amount(spoken) == Decimal(number)


@given(st.decimals(min_value=Decimal("0.01"), max_value=MAX_AMOUNT, places=2))
def test_ascii_and_full_width_digits_parse_back(amount: Decimal) -> None:
    ascii_text = f"{amount:.2f}"
    full_width = ascii_text.translate(str.maketrans("0123456789.", "０１２３４５６７８９．"))
    assert parse_amount(ascii_text) == amount
    assert parse_amount(full_width) == amount
    assert parse_amount("¥" + ascii_text + "元") == amount


@given(st.decimals(min_value=Decimal("0.01"), max_value=MAX_AMOUNT, places=2))
def test_format_amount_round_trips(amount: Decimal) -> None:
    assert parse_amount(format_amount(amount)) == amount
