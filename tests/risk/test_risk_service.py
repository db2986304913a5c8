"""The risk service on a real database: live signals, stored decisions, transfers that obey them, fail closed."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from bankcore import sandbox, transfers, verification
from bankcore.database import make_engine, make_session_factory, migrate, unit_of_work
from bankcore.errors import InvalidStateError
from bankcore.event_store import store_events
from bankcore.events import Event
from bankcore.models import Account, RiskDecision, Transfer
from bankcore.risk import store
from bankcore.risk.config import DEFAULT_RULES_PATH
from bankcore.risk.gather import SessionContext
from bankcore.risk.service import RiskService, RiskUnavailable
from bankcore.settings import Settings

NOW = dt.datetime(2026, 11, 20, 2, 0, tzinfo=dt.UTC)
PINS = {"C001": "246810", "C002": "135790", "C003": "864209"}
Factory = sessionmaker[Session]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Settings]:
    folder = tmp_path_factory.mktemp("risk-db")
    settings = Settings.from_env({"BANKBOT_VAR_DIR": str(folder), "BANKBOT_SECRET_KEY": "risk-test-secret"})
    path = folder / "template.db"
    migrate(f"sqlite:///{path}")
    engine = make_engine(f"sqlite:///{path}")
    with unit_of_work(make_session_factory(engine)) as session:
        sandbox.load_sandbox(session, sandbox.demo_document(), now=NOW, pin_key=settings.secret_key)
    engine.dispose()
    return path, settings


@pytest.fixture
def bank(template: tuple[Path, Settings], tmp_path: Path) -> Iterator[Factory]:
    copy = tmp_path / "bank.db"
    shutil.copyfile(template[0], copy)
    engine = make_engine(f"sqlite:///{copy}")
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def settings(template: tuple[Path, Settings]) -> Settings:
    return template[1]


@pytest.fixture
def service() -> RiskService:
    return RiskService(DEFAULT_RULES_PATH, None)


def _prepare(bank: Factory, settings: Settings, customer: str, payee: str, amount: str) -> str:
    with unit_of_work(bank) as session:
        return transfers.prepare(
            session, settings, customer, payee_name=payee, amount=amount, channel="webchat", now=NOW
        ).id


def _assess(bank: Factory, service: RiskService, customer: str, transfer_id: str, **context: object):  # type: ignore[no-untyped-def]
    ctx = SessionContext(**{"channel": "webchat", **context})  # type: ignore[arg-type]
    with unit_of_work(bank) as session:
        return transfers.assess_risk(session, service, customer, transfer_id, ctx, NOW)


def _status(bank: Factory, customer: str, transfer_id: str) -> tuple[str, str | None]:
    with unit_of_work(bank) as session:
        view = transfers.get_transfer(session, customer, transfer_id)
        return view.status, view.failure_reason


def _otp_and_execute(bank: Factory, settings: Settings, customer: str, transfer_id: str) -> str:
    with unit_of_work(bank) as session:
        transfers.request_verification(session, settings, customer, transfer_id, NOW)
        code = sandbox.outbox(session, customer, limit=1)[0].text
    digits = "".join(ch for ch in code.split("验证码")[1][:6])
    with unit_of_work(bank) as session:
        digest = verification.digest_code(settings.secret_key, digits)
        assert transfers.authorize(session, settings, customer, transfer_id, digest, NOW).outcome == "verified"
    with unit_of_work(bank) as session:
        return transfers.execute(session, settings, customer, transfer_id, NOW).status


def _pin(settings: Settings, pin: str) -> str:
    return verification.digest_code(settings.secret_key, pin)


def test_a_small_transfer_to_a_known_payee_is_allowed_and_executes(bank, settings, service) -> None:  # type: ignore[no-untyped-def]
    transfer_id = _prepare(bank, settings, "C001", "李四", "300")
    outcome = _assess(bank, service, "C001", transfer_id)
    assert outcome.decision.action == "allow"
    assert _otp_and_execute(bank, settings, "C001", transfer_id) == "completed"


def test_live_signals_read_history_watchlist_and_country(bank, settings, service) -> None:  # type: ignore[no-untyped-def]
    known = _assess(bank, service, "C001", _prepare(bank, settings, "C001", "李四", "300"))
    with unit_of_work(bank) as session:
        stored = store.latest(session, known.transfer.id)
        row = session.get(RiskDecision, known.decision_id)
        assert stored is not None and row is not None
        assert row.inputs["payee_new"] is False and row.inputs["history_count"] >= 2
    new = _assess(bank, service, "C001", _prepare(bank, settings, "C001", "王芳", "300"))
    with unit_of_work(bank) as session:
        row = session.get(RiskDecision, new.decision_id)
        assert row is not None and row.inputs["payee_new"] is True
    listed = _assess(bank, service, "C003", _prepare(bank, settings, "C003", "赵强", "200"))
    assert listed.decision.action == "block"
    assert listed.decision.reasons[0].rule == "fraud_list_payee"
    abroad = _assess(bank, service, "C002", _prepare(bank, settings, "C002", "陈静怡", "200"))
    assert abroad.decision.action == "step_up" and abroad.decision.reasons[0].rule == "cross_border"


def test_a_block_cancels_and_no_code_can_be_sent(bank, settings, service) -> None:  # type: ignore[no-untyped-def]
    transfer_id = _prepare(bank, settings, "C003", "赵强", "200")
    assert _assess(bank, service, "C003", transfer_id).decision.action == "block"
    assert _status(bank, "C003", transfer_id) == ("cancelled", "risk_blocked")
    with pytest.raises(InvalidStateError), unit_of_work(bank) as session:
        transfers.request_verification(session, settings, "C003", transfer_id, NOW)


def test_coaching_words_hold_the_transfer_for_a_call_back(bank, settings, service) -> None:  # type: ignore[no-untyped-def]
    transfer_id = _prepare(bank, settings, "C001", "王芳", "3000")
    said = ("警察说我的卡涉嫌洗钱，要把钱转到安全账户", "我的验证码是123456")
    outcome = _assess(bank, service, "C001", transfer_id, utterances=said)
    assert outcome.decision.action == "hold" and "安全账户" in (outcome.decision.warning_text or "")
    assert _status(bank, "C001", transfer_id) == ("held", "risk_hold")
    with unit_of_work(bank) as session:
        row = session.get(RiskDecision, outcome.decision_id)
        assert row is not None
        # The audit keeps the phrases found, never what the customer typed.
        assert set(row.inputs["fraud_phrases_found"]) == {"安全账户", "涉嫌洗钱"}
        assert "123456" not in str(row.inputs) and "123456" not in str(row.features)
    with pytest.raises(InvalidStateError), unit_of_work(bank) as session:
        transfers.request_verification(session, settings, "C001", transfer_id, NOW)


def test_a_warning_needs_acknowledgement_and_the_pin_before_any_code(bank, settings, service) -> None:  # type: ignore[no-untyped-def]
    transfer_id = _prepare(bank, settings, "C001", "李四", "500")
    outcome = _assess(bank, service, "C001", transfer_id, utterances=("对方让我刷单返利",))
    assert outcome.decision.action == "warn"
    with unit_of_work(bank) as session:
        assert store.clearance_problem(session, transfer_id) == store.UNACKNOWLEDGED
    with pytest.raises(InvalidStateError), unit_of_work(bank) as session:
        transfers.request_verification(session, settings, "C001", transfer_id, NOW)
    with unit_of_work(bank) as session:
        transfers.acknowledge_warning(session, "C001", transfer_id, NOW)
        assert store.clearance_problem(session, transfer_id) == store.STEP_UP_MISSING
        transfers.request_pin(session, settings, "C001", transfer_id, NOW)
    with unit_of_work(bank) as session:
        result = transfers.verify_pin(session, settings, "C001", transfer_id, _pin(settings, "000000"), NOW)
        assert (result.outcome, result.attempts_left) == ("wrong", 2)
    with unit_of_work(bank) as session:
        result = transfers.verify_pin(session, settings, "C001", transfer_id, _pin(settings, PINS["C001"]), NOW)
        assert result.outcome == "verified"
        assert store.clearance_problem(session, transfer_id) is None
    assert _otp_and_execute(bank, settings, "C001", transfer_id) == "completed"


def test_three_wrong_pins_cancel_and_count_as_failed_verifications(bank, settings, service) -> None:  # type: ignore[no-untyped-def]
    transfer_id = _prepare(bank, settings, "C002", "陈静怡", "200")
    assert _assess(bank, service, "C002", transfer_id).decision.action == "step_up"
    with unit_of_work(bank) as session:
        transfers.request_pin(session, settings, "C002", transfer_id, NOW)
    outcomes = []
    for _ in range(3):
        with unit_of_work(bank) as session:
            outcomes.append(transfers.verify_pin(session, settings, "C002", transfer_id, _pin(settings, "111111"), NOW))
    assert [r.outcome for r in outcomes] == ["wrong", "wrong", "locked"]
    assert _status(bank, "C002", transfer_id) == ("cancelled", "pin_locked")
    # The next transfer, even to a known domestic payee, now needs the stronger check.
    again = _assess(bank, service, "C002", _prepare(bank, settings, "C002", "赵敏", "100"))
    assert again.decision.action == "step_up"
    assert "failed_verifications" in {r.rule for r in again.decision.reasons}


def test_takeover_signals_from_cross_channel_events(bank, settings, service) -> None:  # type: ignore[no-untyped-def]
    with unit_of_work(bank) as session:
        store_events(
            session,
            [
                Event("C001", NOW - dt.timedelta(hours=3), "app", "password_reset", {}),
                Event("C001", NOW - dt.timedelta(hours=2), "app", "new_device", {"device_id": "dev-x"}),
            ],
        )
    outcome = _assess(bank, service, "C001", _prepare(bank, settings, "C001", "王芳", "2000"), device_id="dev-x")
    assert outcome.decision.action == "hold"
    assert "takeover_new_payee" in {r.rule for r in outcome.decision.reasons}


def test_a_block_rule_with_freeze_freezes_the_source_account(bank, settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    document = yaml.safe_load(DEFAULT_RULES_PATH.read_text(encoding="utf-8"))
    document["rules"].append(
        {
            "id": "huge_new_payee",
            "description": "首次收款人巨额转账",
            "when": [
                {"feature": "payee_new", "op": ">=", "value": 1},
                {"feature": "amount", "op": ">=", "value": 40000},
            ],
            "action": "block",
            "freeze": True,
        }
    )
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    transfer_id = _prepare(bank, settings, "C001", "王芳", "45000")
    outcome = _assess(bank, RiskService(rules, None), "C001", transfer_id)
    assert (outcome.decision.action, outcome.frozen_account_id) == ("block", "A1001")
    with unit_of_work(bank) as session:
        account = session.get(Account, "A1001")
        assert account is not None and account.status == "frozen"


def test_no_rules_means_no_decision_and_no_money_moves(bank, settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    broken = RiskService(tmp_path / "missing.yaml", None)
    transfer_id = _prepare(bank, settings, "C001", "李四", "300")
    with pytest.raises(RiskUnavailable), unit_of_work(bank) as session:
        transfers.assess_risk(session, broken, "C001", transfer_id, SessionContext("webchat"), NOW)
    with pytest.raises(InvalidStateError) as caught, unit_of_work(bank) as session:
        transfers.request_verification(session, settings, "C001", transfer_id, NOW)
    assert caught.value.details["reason"] == store.UNCHECKED


def test_execution_re_checks_clearance(bank, settings, service) -> None:  # type: ignore[no-untyped-def]
    transfer_id = _prepare(bank, settings, "C001", "李四", "300")
    _assess(bank, service, "C001", transfer_id)
    with unit_of_work(bank) as session:
        transfers.request_verification(session, settings, "C001", transfer_id, NOW)
        code = sandbox.outbox(session, "C001", limit=1)[0].text.split("验证码")[1][:6]
    with unit_of_work(bank) as session:
        digest = verification.digest_code(settings.secret_key, code)
        assert transfers.authorize(session, settings, "C001", transfer_id, digest, NOW).outcome == "verified"
        # Someone removes the decision between authorisation and execution: execution refuses.
        session.execute(delete(RiskDecision).where(RiskDecision.subject_id == transfer_id))
    with unit_of_work(bank) as session:
        result = transfers.execute(session, settings, "C001", transfer_id, NOW)
        assert (result.status, result.failure_reason) == ("failed", "risk_not_cleared")
        assert session.get(Account, "A1001").balance == Decimal("52380.50")  # type: ignore[union-attr]


def test_a_bad_rules_edit_keeps_the_last_good_rules(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "rules.yaml"
    shutil.copyfile(DEFAULT_RULES_PATH, path)
    service = RiskService(path, None)
    good = service.rules().version
    path.write_text("version: 1\nhard_rules:\n  fraud_list_payee: {action: allow}\n", encoding="utf-8")
    os.utime(path, (1, 1))
    assert service.rules().version == good
    assert service.last_error is not None and "fraud_list_payee" in service.last_error
    document = yaml.safe_load(DEFAULT_RULES_PATH.read_text(encoding="utf-8"))
    document["fraud_phrases"].append("新话术")
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    assert service.rules().version != good and service.last_error is None
    assert "新话术" in service.rules().fraud_phrases


def test_held_transfers_do_not_count_against_the_daily_limit(bank, settings, service) -> None:  # type: ignore[no-untyped-def]
    transfer_id = _prepare(bank, settings, "C001", "王芳", "3000")
    _assess(bank, service, "C001", transfer_id, utterances=("公检法让我转账",))
    with unit_of_work(bank) as session:
        statuses = session.scalars(select(Transfer.status).where(Transfer.id == transfer_id)).all()
        assert statuses == ["held"]
        customer = session.get(sandbox.Customer, "C001")
        assert transfers.daily_total(session, customer, NOW) == Decimal("0.00")  # type: ignore[arg-type]


def test_the_service_uses_an_installed_model_and_records_its_version(bank, settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from bankcore.risk.config import load_rules
    from bankcore.risk.dataset import read_labelled_set
    from bankcore.risk.model import train_model
    from bankcore.risk.simulate import simulate

    config = load_rules(DEFAULT_RULES_PATH)
    simulate(tmp_path / "set", customers=400, seed=3, scam_scale=3.0)
    model = train_model(read_labelled_set(tmp_path / "set", labelled_only=True), config, seed=0)
    model.save(tmp_path / "model")
    service = RiskService(DEFAULT_RULES_PATH, tmp_path / "model")
    outcome = _assess(bank, service, "C001", _prepare(bank, settings, "C001", "李四", "300"))
    assert outcome.decision.score is not None and outcome.decision.model_version == model.version
    with unit_of_work(bank) as session:
        row = session.get(RiskDecision, outcome.decision_id)
        assert row is not None and row.model_version == model.version and row.score == outcome.decision.score
    # A model trained for other features (another rules file's signals) is not used: rules only.
    document = yaml.safe_load(DEFAULT_RULES_PATH.read_text(encoding="utf-8"))
    document["event_signals"]["brand_new_signal"] = ["x_event"]
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    mismatched = RiskService(other, tmp_path / "model")
    again = _assess(bank, mismatched, "C001", _prepare(bank, settings, "C001", "李四", "300"))
    assert again.decision.score is None and again.decision.model_version is None
