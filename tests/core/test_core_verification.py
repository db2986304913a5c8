"""One-time codes: digest-only storage, normalisation, outcomes, attempts, expiry, superseding."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from bankcore import sandbox, verification
from bankcore.database import unit_of_work
from bankcore.errors import NotFoundError
from bankcore.models import VerificationChallenge
from bankcore.settings import Settings

SECRET = "k" * 32


def test_full_width_digits_and_spaces_give_the_same_digest():
    assert verification.normalise_code("１２３ ４５６") == "123456"
    assert verification.digest_code(SECRET, "１２３ ４５６") == verification.digest_code(SECRET, "123456")
    assert verification.digest_code(SECRET, "123456") != verification.digest_code("other", "123456")
    assert len(verification.digest_code(SECRET, "123456")) == 64


@given(st.text(alphabet="0123456789", min_size=6, max_size=6))
def test_every_six_digit_code_looks_like_a_code_in_either_width(code: str):
    wide = code.translate({ord("0") + i: ord("０") + i for i in range(10)})
    assert verification.looks_like_code(code) and verification.looks_like_code(wide)
    assert verification.digest_code(SECRET, wide) == verification.digest_code(SECRET, code)


@pytest.mark.parametrize("text", ["12345", "1234567", "12a456", "", "转账500", "١٢٣٤٥٦"])
def test_other_text_does_not_look_like_a_code(text: str):
    assert not verification.looks_like_code(text)


def _issue(factory, settings, now, subject="T1", customer="C001"):
    with unit_of_work(factory) as session:
        return verification.issue(session, settings, customer, "transfer", subject, now, detail="向李四转账100.00元")


def _check(factory, settings, code, now, subject="T1", customer="C001"):
    digest = verification.digest_code(settings.secret_key, code) if code is not None else None
    with unit_of_work(factory) as session:
        return verification.check(session, settings, customer, subject, digest, now)


def test_only_the_digest_is_stored_and_the_sms_carries_the_code(bank, settings, sms_code, now):
    challenge = _issue(bank, settings, now)
    code = sms_code("C001")
    assert challenge.phone_tail == "2345" and challenge.attempts_left == settings.otp_max_attempts
    with unit_of_work(bank) as session:
        row = session.get(VerificationChallenge, challenge.id)
        assert row is not None
        assert row.code_digest == verification.digest_code(settings.secret_key, code)
        assert code not in " ".join(str(v) for v in vars(row).values())
        sms = sandbox.outbox(session, "C001")[0]
    assert "向李四转账100.00元" in sms.text and sms.phone == "13801012345"
    assert challenge.expires_at == now + dt.timedelta(seconds=settings.otp_ttl_seconds)


def test_right_code_verifies_once_then_counts_as_reused(bank, settings, sms_code, now):
    _issue(bank, settings, now)
    code = sms_code("C001")
    assert _check(bank, settings, "  " + code, now).outcome == "verified"
    assert _check(bank, settings, code, now).outcome == "reused"


def test_wrong_codes_count_down_then_lock(bank, settings, sms_code, now):
    _issue(bank, settings, now)
    code = sms_code("C001")
    wrong = "000000" if code != "000000" else "999999"
    first, second = _check(bank, settings, wrong, now), _check(bank, settings, wrong, now)
    assert (first.outcome, first.attempts_left) == ("wrong", 2)
    assert (second.outcome, second.attempts_left) == ("wrong", 1)
    assert _check(bank, settings, wrong, now).outcome == "locked"
    # Once locked, even the right code is refused.
    assert _check(bank, settings, code, now).outcome == "locked"


def test_max_attempts_come_from_settings(bank, tmp_path, sms_code, now):
    settings = Settings.from_env(
        {"BANKBOT_VAR_DIR": str(tmp_path), "BANKBOT_SECRET_KEY": SECRET, "BANKBOT_OTP_MAX_ATTEMPTS": "5"}
    )
    _issue(bank, settings, now)
    code = sms_code("C001")
    wrong = "000000" if code != "000000" else "999999"
    outcomes = [_check(bank, settings, wrong, now).outcome for _ in range(5)]
    assert outcomes == ["wrong"] * 4 + ["locked"]


def test_missing_digest_counts_as_wrong(bank, settings, now):
    _issue(bank, settings, now)
    assert _check(bank, settings, None, now).outcome == "wrong"


def test_expired_code(bank, settings, sms_code, now):
    _issue(bank, settings, now)
    code = sms_code("C001")
    late = now + dt.timedelta(seconds=settings.otp_ttl_seconds)
    assert _check(bank, settings, code, late).outcome == "expired"
    assert _check(bank, settings, code, now).outcome == "expired"  # stays expired


def test_no_challenge(bank, settings, now):
    assert _check(bank, settings, "123456", now).outcome == "no_challenge"
    assert _check(bank, settings, "123456", now, subject="other").attempts_left == 0


def test_a_new_challenge_supersedes_the_old_one(bank, settings, sms_code, now):
    first = _issue(bank, settings, now)
    old_code = sms_code("C001")
    second = _issue(bank, settings, now + dt.timedelta(seconds=30))
    new_code = sms_code("C001")
    with unit_of_work(bank) as session:
        statuses = {c.id: c.status for c in session.scalars(select(VerificationChallenge))}
    assert statuses == {first.id: "expired", second.id: "pending"}
    if old_code != new_code:
        assert _check(bank, settings, old_code, now + dt.timedelta(seconds=31)).outcome == "wrong"
    assert _check(bank, settings, new_code, now + dt.timedelta(seconds=32)).outcome == "verified"


def test_pending_challenge_is_the_newest_unexpired_one(bank, settings, sms_code, now):
    with unit_of_work(bank) as session:
        assert verification.pending_challenge(session, "C001", now) is None
    _issue(bank, settings, now, subject="T1")
    newest = _issue(bank, settings, now + dt.timedelta(seconds=10), subject="T2")
    with unit_of_work(bank) as session:
        pending = verification.pending_challenge(session, "C001", now + dt.timedelta(seconds=11))
        assert pending is not None and pending.id == newest.id and pending.subject_id == "T2"
        assert verification.pending_challenge(session, "C002", now) is None
        assert verification.pending_challenge(session, "C001", now + dt.timedelta(hours=1)) is None
    _check(bank, settings, sms_code("C001"), now + dt.timedelta(seconds=12), subject="T2")
    with unit_of_work(bank) as session:
        still = verification.pending_challenge(session, "C001", now + dt.timedelta(seconds=13))
        assert still is not None and still.subject_id == "T1"


def test_codes_are_six_random_digits(bank, settings, sms_code, now):
    codes = set()
    for i in range(8):
        _issue(bank, settings, now, subject=f"S{i}")
        code = sms_code("C001")
        assert len(code) == 6 and code.isdigit()
        codes.add(code)
    assert len(codes) > 1


def test_unknown_customer(bank, settings, now):
    with pytest.raises(NotFoundError), unit_of_work(bank) as session:
        verification.issue(session, settings, "C999", "transfer", "T1", now)


def test_a_code_sent_lately_is_recognised_after_use_but_not_before_the_window(bank, settings, sms_code, now):
    _issue(bank, settings, now)
    code = sms_code("C001")
    assert _check(bank, settings, code, now + dt.timedelta(seconds=5)).outcome == "verified"
    digest = verification.digest_code(settings.secret_key, code)
    other = verification.digest_code(settings.secret_key, "000000" if code != "000000" else "111111")
    with unit_of_work(bank) as session:
        assert verification.was_issued_recently(session, "C001", digest, now - dt.timedelta(hours=1))
        assert not verification.was_issued_recently(session, "C001", other, now - dt.timedelta(hours=1))
        assert not verification.was_issued_recently(session, "C002", digest, now - dt.timedelta(hours=1))
        assert not verification.was_issued_recently(session, "C001", digest, now + dt.timedelta(seconds=1))
