"""The labelled-set format: parsing, errors that name file, line and field, and the replay of history."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bankcore.events import Event, FileRecordError, RecordError
from bankcore.risk.config import DEFAULT_RULES_PATH, load_rules
from bankcore.risk.dataset import (
    LabelledSetError,
    Session,
    TransferRecord,
    labelled_transfers,
    parse_transfer,
    read_labelled_set,
    write_labelled_set,
)
from bankcore.risk.features import compute_for

T0 = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)


def record(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "transfer_id": "T1",
        "customer_id": "C1",
        "ts": "2025-06-01T12:00:00Z",
        "channel": "app",
        "amount": "1234.50",
        "payee": {"key": "icbc|1234|zhangsan"},
    }
    base.update(overrides)
    return base


def write_set(directory: Path, transfers: list[Any], events: list[Any] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in transfers]
    (directory / "transfers.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if events is not None:
        lines = [e if isinstance(e, str) else json.dumps(e) for e in events]
        (directory / "events.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


def test_a_minimal_record_gets_the_documented_defaults() -> None:
    parsed = parse_transfer(record(ts="2025-06-01T20:00:00+08:00", amount=99.5))
    assert parsed.ts == T0
    assert parsed.amount == Decimal("99.5")
    assert (parsed.currency, parsed.kind, parsed.timezone) == ("CNY", "transfer", "Asia/Shanghai")
    assert parsed.session == Session()
    assert parsed.executed is True
    assert (parsed.label, parsed.pattern) == (None, None)
    assert (parsed.payee_on_fraud_list, parsed.cross_border) == (False, False)


def test_a_naive_timestamp_is_utc_and_a_repayment_has_no_payee() -> None:
    parsed = parse_transfer(record(ts="2025-06-01T12:00:00", kind="card_repayment", payee=None))
    assert parsed.ts == T0
    assert parsed.payee_key is None


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"amount": "0"}, "amount"),
        ({"amount": "-5"}, "amount"),
        ({"amount": "1,000"}, "amount"),
        ({"amount": True}, "amount"),
        ({"amount": "NaN"}, "amount"),
        ({"amount": None}, "amount"),
        ({"transfer_id": ""}, "transfer_id"),
        ({"customer_id": 7}, "customer_id"),
        ({"ts": "yesterday"}, "ts"),
        ({"channel": "web"}, "channel"),
        ({"currency": "rmb"}, "currency"),
        ({"kind": "payment"}, "kind"),
        ({"payee": None}, "payee"),
        ({"payee": {"key": " "}}, "payee.key"),
        ({"payee": {"key": "k", "fraud_list": "no"}}, "payee.fraud_list"),
        ({"kind": "loan_repayment"}, "payee"),
        ({"session": []}, "session"),
        ({"session": {"input_mode": "shout"}}, "session.input_mode"),
        ({"session": {"device_known": "yes"}}, "session.device_known"),
        ({"session": {"failed_verifications_24h": -1}}, "session.failed_verifications_24h"),
        ({"session": {"failed_verifications_24h": 1.5}}, "session.failed_verifications_24h"),
        ({"session": {"utterances": ["ok", 3]}}, "session.utterances[1]"),
        ({"session": {"caller_id_mismatch": 1}}, "session.caller_id_mismatch"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"executed": "yes"}, "executed"),
        ({"label": "fraud"}, "label"),
        ({"pattern": ""}, "pattern"),
    ],
)
def test_a_bad_field_is_named(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(RecordError) as caught:
        parse_transfer(record(**overrides))
    assert caught.value.field == field


def test_a_bad_line_names_the_file_the_line_and_the_field(tmp_path: Path) -> None:
    directory = write_set(tmp_path / "set", [record(), "", record(transfer_id="T2", amount="-1")])
    with pytest.raises(FileRecordError) as caught:
        read_labelled_set(directory)
    assert caught.value.line == 3
    assert caught.value.path == directory / "transfers.jsonl"
    assert str(caught.value).startswith(f"{directory / 'transfers.jsonl'}:3: amount:")


def test_a_duplicate_transfer_id_and_a_line_that_is_not_json_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FileRecordError, match=r":2: transfer_id: duplicate of line 1"):
        read_labelled_set(write_set(tmp_path / "dup", [record(), record()]))
    with pytest.raises(FileRecordError, match=r":2: not JSON"):
        read_labelled_set(write_set(tmp_path / "json", [record(), "{oops"]))


def test_a_bad_event_names_events_jsonl(tmp_path: Path) -> None:
    good = {"customer_id": "C1", "ts": "2025-06-01T11:00:00Z", "channel": "app", "type": "login"}
    directory = write_set(tmp_path / "set", [record()], [good, {**good, "channel": "fax"}])
    with pytest.raises(FileRecordError) as caught:
        read_labelled_set(directory)
    assert caught.value.path == directory / "events.jsonl"
    assert caught.value.line == 2
    assert "channel" in str(caught.value)


def test_a_directory_without_transfers_is_refused_and_events_are_optional(tmp_path: Path) -> None:
    with pytest.raises(LabelledSetError, match=r"transfers\.jsonl"):
        read_labelled_set(tmp_path)
    examples = read_labelled_set(write_set(tmp_path / "set", [record()]))
    assert len(examples) == 1
    assert examples[0].risk.events == ()


def _transfer(number: int, days: float, payee: str | None, customer: str = "C1", **extra: Any) -> dict[str, Any]:
    ts = T0 + dt.timedelta(days=days)
    out = record(
        transfer_id=f"T{number}",
        customer_id=customer,
        ts=ts.isoformat(),
        payee={"key": payee} if payee else None,
        **extra,
    )
    if payee is None:
        out["kind"] = "card_repayment"
    return out


def test_history_is_replayed_in_time_order_per_customer(tmp_path: Path) -> None:
    rows = [
        _transfer(4, 100, "x"),  # file order is not time order
        _transfer(1, 0, "x", amount="500"),
        _transfer(2, 50, "y", amount="700"),
        _transfer(3, 60, "z", customer="C2"),
        _transfer(5, 101, "w", executed=False),
        _transfer(6, 102, "w"),
        _transfer(7, 103, None),
        _transfer(8, 104, "v"),
    ]
    examples = {e.transfer_id: e for e in read_labelled_set(write_set(tmp_path / "set", rows))}
    assert [e.transfer_id for e in read_labelled_set(tmp_path / "set")][:2] == ["T4", "T1"]  # file order kept
    first, second, paid_again = examples["T1"].risk, examples["T2"].risk, examples["T4"].risk
    assert first.history == () and first.payee_new
    assert [(p.payee_key, p.amount) for p in second.history] == [("x", Decimal("500"))]
    assert second.payee_new
    # Day 100: x was paid on day 0, outside the 90-day history, so it is an older payee, not a new one.
    assert [p.payee_key for p in paid_again.history] == ["y"]
    assert paid_again.older_payees == frozenset({"x"})
    assert not paid_again.payee_new
    # Not executed: the payee is still new the next day. Another customer's transfer is never history.
    assert examples["T6"].risk.payee_new
    assert all(p.payee_key != "z" for e in examples.values() for p in e.risk.history if e.risk.customer_id == "C1")
    # A repayment has no payee and never becomes history.
    assert [p.payee_key for p in examples["T8"].risk.history] == ["y", "x", "w"]


def test_the_history_and_event_windows_have_exact_bounds(tmp_path: Path) -> None:
    ts = T0 + dt.timedelta(days=200)
    rows = [
        _transfer(1, 110, "old"),  # exactly 90 days before the last: outside the history
        _transfer(2, 110.001, "kept"),
        _transfer(3, 200, "old"),
        _transfer(4, 200, "kept"),  # same instant as T3: later in the file, so T3 is its history
    ]

    def event(at: dt.datetime, kind: str, customer: str = "C1") -> dict[str, Any]:
        return {"customer_id": customer, "ts": at.isoformat(), "channel": "app", "type": kind}

    events = [
        event(ts - dt.timedelta(days=7), "seven_days_before"),
        event(ts - dt.timedelta(days=7) + dt.timedelta(seconds=1), "just_inside"),
        event(ts, "same_instant"),
        event(ts + dt.timedelta(seconds=1), "after"),
        event(ts - dt.timedelta(hours=1), "someone_else", customer="C2"),
    ]
    examples = {e.transfer_id: e for e in read_labelled_set(write_set(tmp_path / "set", rows, events))}
    last = examples["T3"].risk
    assert [p.payee_key for p in last.history] == ["kept"]
    assert last.older_payees == frozenset({"old"})
    assert not last.payee_new
    assert [e.type for e in last.events] == ["just_inside", "same_instant"]
    assert [p.payee_key for p in examples["T4"].risk.history] == ["kept", "old"]


def test_features_of_a_replayed_set_see_the_history_and_events(tmp_path: Path) -> None:
    rows = [_transfer(1, 0, "a"), _transfer(2, 0.01, "b"), _transfer(3, 0.02, "c", amount="9000")]
    events = [
        {
            "customer_id": "C1",
            "ts": (T0 - dt.timedelta(hours=2)).isoformat(),
            "channel": "core",
            "type": "suspicious_call",
        }
    ]
    examples = read_labelled_set(write_set(tmp_path / "set", rows, events))
    features = compute_for(examples[2].risk, load_rules(DEFAULT_RULES_PATH))
    assert features["new_payees_24h"] == 3
    assert features["transfers_1h"] == 2
    assert features["ev_flagged_call_24h"] == 1
    assert features["history_count"] == 2


def test_the_writer_and_the_reader_agree(tmp_path: Path) -> None:
    transfers = [
        TransferRecord(
            "T1",
            "C1",
            T0,
            "ivr",
            Decimal("88.80"),
            payee_key="k|1|a",
            session=Session("voice", None, None, True, 2, ("给妈妈转钱", "确认")),
            label="legit",
        ),
        TransferRecord(
            "T2",
            "C1",
            T0 + dt.timedelta(hours=1),
            "app",
            Decimal("5000"),
            payee_key="k|2|b",
            payee_on_fraud_list=True,
            session=Session("button", "D1", False),
            label="scam",
            pattern="coached",
            timezone="Europe/London",
        ),
    ]
    events = [Event("C1", T0 + dt.timedelta(minutes=30), "core", "suspicious_call", {"duration_s": 90})]
    assert write_labelled_set(tmp_path / "set", transfers, events) == {"transfers": 2, "events": 1}
    from_files = read_labelled_set(tmp_path / "set")
    in_memory = labelled_transfers(transfers, events)
    assert [e.risk for e in from_files] == [e.risk for e in in_memory]
    second = from_files[1]
    assert (second.label, second.pattern, second.transfer_id) == ("scam", "coached", "T2")
    assert second.risk.events == tuple(events)
    assert second.risk.payee_on_fraud_list and second.risk.device_known is False
    assert from_files[0].risk.utterances == ("给妈妈转钱", "确认")


_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x9FFF), min_size=1, max_size=20).filter(
    lambda s: s.strip() == s and s.strip()
)


@settings(max_examples=60, deadline=None)
@given(
    transfer_id=_text,
    amount=st.decimals(min_value=Decimal("0.01"), max_value=Decimal("1e9"), places=2),
    kind=st.sampled_from(("transfer", "card_repayment", "loan_repayment")),
    mode=st.sampled_from(("text", "voice", "keypad", "button")),
    known=st.sampled_from((True, False, None)),
    utterances=st.lists(st.text(max_size=30), max_size=3),
    failed=st.integers(min_value=0, max_value=50),
    label=st.sampled_from(("legit", "scam", None)),
    seconds=st.integers(min_value=0, max_value=10**9),
)
def test_a_record_survives_its_own_json(
    transfer_id: str,
    amount: Decimal,
    kind: str,
    mode: str,
    known: bool | None,
    utterances: list[str],
    failed: int,
    label: str | None,
    seconds: int,
) -> None:
    original = TransferRecord(
        transfer_id=transfer_id,
        customer_id="C9",
        ts=dt.datetime(2001, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=seconds),
        channel="wecom",
        amount=amount,
        kind=kind,
        payee_key="bank|0001|name" if kind == "transfer" else None,
        session=Session(mode, "D" if known is not None else None, known, False, failed, tuple(utterances)),
        label=label,
    )
    assert parse_transfer(json.loads(json.dumps(original.to_json()))) == original
