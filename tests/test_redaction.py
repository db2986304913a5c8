"""Redaction of one-time codes, PINs, card and PRC ID numbers, in text and in log records."""

from __future__ import annotations

import json
import logging
import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from bankcore.logging_setup import configure_logging
from bankcore.redaction import RedactingFilter, is_prc_id, mask_card, redact
from bankcore.settings import Settings

FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("验证码是123456", "验证码是******"),
        ("我的验证码：６５４３２１", "我的验证码：******"),
        ("动态码 8 8 1 2 3 4", "动态码 ******"),
        ("校验码为0042", "校验码为******"),
        ("123456是验证码", "******是验证码"),
        ("密码123456", "密码******"),
        ("取款密码是 9876", "取款密码是 ******"),
        ("支付密码：１２３４５６", "支付密码：******"),
        ("我的卡号是6222021234567890123", "我的卡号是**** 0123"),
        ("卡号 6222 0212 3456 7890", "卡号 **** 7890"),
        ("卡号6222-0212-3456-7890", "卡号**** 7890"),
        ("卡号６２２２０２１２３４５６７８９０", "卡号**** 7890"),
        ("身份证11010519491231002X", "身份证**************002X"),
        ("身份证110105199003070009", "身份证**************0009"),
    ],
)
def test_redact_masks_secrets_in_context(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "我的余额是多少",
        "给李四转两千五",
        "给李四转2500元",
        "转账 １２３４ 元",
        "尾号1234的卡挂失",
        "手机号13800138000",
        "2024-01-01到2024-02-02的交易",
        "/affirm",
        '/inform{"account_type":"debit"}',
        "我想重置密码",
        "验证码没收到",
        "<script>alert(1)</script>",
        "'; DROP TABLE customers; --",
        "",
    ],
)
def test_redact_leaves_ordinary_banking_text_alone(text: str) -> None:
    assert redact(text) == text


def test_redact_is_idempotent_on_a_mixed_sentence() -> None:
    text = "卡号6222021234567890123，密码123456，验证码654321，身份证11010519491231002X"
    once = redact(text)
    assert redact(once) == once
    for secret in ("6222021234567890123", "123456", "654321", "11010519491231002X"):
        assert secret not in once


def test_mask_card_keeps_only_the_last_four() -> None:
    assert mask_card("6222 0212 3456 7890") == "**** 7890"
    assert mask_card("６２２２０２１２３４５６７８９０") == "**** 7890"
    assert mask_card("12") == "****"


def test_is_prc_id_checks_the_check_character() -> None:
    assert is_prc_id("11010519491231002X")
    assert not is_prc_id("110105194912310022")


_separators = st.sampled_from(["", " ", "-", "\u3000", "\uff0d"])


@st.composite
def written_card_numbers(draw: st.DrawFn) -> tuple[str, str]:
    """A 13-19 digit PAN as a customer might type it: grouped by separators, maybe full-width."""
    digits = draw(st.text(alphabet="0123456789", min_size=13, max_size=19))
    written = digits[0]
    for digit in digits[1:]:
        written += draw(_separators) + digit
    if draw(st.booleans()):
        written = written.translate(FULL_WIDTH)
    return digits, written


@given(
    card=written_card_numbers(),
    before=st.sampled_from(["", "卡号", "我的卡是 ", "转到"]),
    after=st.sampled_from(["", "。", " 谢谢", "的余额"]),
)
def test_any_written_card_number_keeps_only_its_last_four(card: tuple[str, str], before: str, after: str) -> None:
    digits, written = card
    # An 18-digit run that happens to satisfy the ID checksum is masked as an ID (tested above).
    assume(not (len(digits) == 18 and is_prc_id(digits)))
    redacted = redact(before + written + after)
    assert redacted == f"{before}**** {digits[-4:]}{after}"


@given(
    code=st.text(alphabet="0123456789", min_size=4, max_size=8),
    word=st.sampled_from(["验证码", "动态码", "校验码", "密码", "取款密码", "支付密码"]),
    gap=st.sampled_from(["", "是", "：", " ", "为"]),
    full_width=st.booleans(),
)
def test_codes_and_pins_after_their_keyword_never_survive(code: str, word: str, gap: str, full_width: bool) -> None:
    written = code.translate(FULL_WIDTH) if full_width else code
    redacted = redact(f"{word}{gap}{written}")
    assert redacted == f"{word}{gap}******"


@given(st.text(max_size=200))
def test_redact_never_raises_and_is_idempotent(text: str) -> None:
    once = redact(text)
    assert redact(once) == once


def _record(msg: str, args: tuple[object, ...] | None = None) -> logging.LogRecord:
    return logging.LogRecord("test", logging.INFO, __file__, 1, msg, args, None)


def test_filter_redacts_message_and_arguments() -> None:
    record = _record("customer %s typed %s", ("C001", "验证码123456 卡号6222021234567890"))
    assert RedactingFilter().filter(record)
    assert record.getMessage() == "customer C001 typed 验证码****** 卡号**** 7890"


def test_filter_survives_a_broken_format_string() -> None:
    record = _record("bad %d format 6222021234567890", ("not a number 6222021234567899",))
    assert RedactingFilter().filter(record)
    assert "6222021234567890" not in str(record.msg)
    assert record.args == ("not a number **** 7899",)


def test_filter_redacts_tracebacks() -> None:
    try:
        raise ValueError("card 6222021234567890 rejected")
    except ValueError:
        import sys

        record = logging.LogRecord("test", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    RedactingFilter().filter(record)
    assert record.exc_text is not None
    assert "6222021234567890" not in record.exc_text
    assert "**** 7890" in record.exc_text


def test_configure_logging_writes_redacted_json_lines_and_is_idempotent(tmp_path, capsys) -> None:
    settings = Settings.from_env({"BANKBOT_VAR_DIR": str(tmp_path), "BANKBOT_SECRET_KEY": "k" * 64})
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        configure_logging(settings, "gateway")
        configure_logging(settings, "gateway")
        ours = [h for h in root.handlers if h not in before]
        assert len(ours) == 2
        logging.getLogger("channels.test").info("user said %s", "密码 123456", extra={"card": "6222021234567890"})
        for handler in ours:
            handler.flush()
        lines = (tmp_path / "log" / "gateway.log").read_text(encoding="utf-8").splitlines()
        entry = json.loads(lines[-1])
        assert entry["message"] == "user said 密码 ******"
        assert entry["service"] == "gateway"
        assert entry["card"] == "**** 7890"
        assert re.match(r"\d{4}-\d\d-\d\dT", entry["ts"])
        assert "123456" not in capsys.readouterr().err
    finally:
        for handler in list(root.handlers):
            if handler not in before:
                root.removeHandler(handler)
                handler.close()
