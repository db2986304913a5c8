"""Schema and storage: migrations match the models, money is exact Decimal, timestamps are aware UTC."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select

from bankcore.database import current_revision, migrate, unit_of_work
from bankcore.models import INTERNAL_ACCOUNTS, Account, Base, Customer, SmsOutbox


def test_migrations_match_the_models(engine):
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_migrate_is_idempotent_and_at_head(database_url):
    migrate(database_url)
    from alembic.script import ScriptDirectory

    from bankcore.database import alembic_config

    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    assert head is not None and head >= "0002"
    assert current_revision(database_url) == head


def test_internal_accounts_exist_after_migration(session_factory):
    with unit_of_work(session_factory) as session:
        rows = session.scalars(select(Account).where(Account.kind == "internal")).all()
    assert {a.id for a in rows} == set(INTERNAL_ACCOUNTS)
    assert all(a.customer_id is None and a.balance == Decimal("0.00") for a in rows)


def test_money_round_trips_exactly_and_timestamps_come_back_aware(session_factory):
    moment = dt.datetime(2026, 11, 20, 23, 59, 59, 123456, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    with unit_of_work(session_factory) as session:
        session.add(
            Customer(
                id="Z1",
                name="测试",
                surname="测",
                title="先生",
                timezone="Asia/Shanghai",
                single_transfer_limit=Decimal("12345678901234.56"),
                created_at=moment,
            )
        )
        session.add(SmsOutbox(customer_id="Z1", phone=None, purpose="test", text="短信", created_at=moment))
    with unit_of_work(session_factory) as session:
        customer = session.get(Customer, "Z1")
        assert customer is not None
        assert customer.single_transfer_limit == Decimal("12345678901234.56")
        assert customer.created_at == moment and customer.created_at.utcoffset() == dt.timedelta(0)
        found = session.scalars(select(SmsOutbox).where(SmsOutbox.created_at >= moment)).all()
        assert len(found) == 1


def test_naive_timestamps_and_floats_are_refused(session_factory):
    with pytest.raises(Exception, match="timezone-aware"), unit_of_work(session_factory) as session:
        session.add(
            Customer(
                id="Z2",
                name="测试",
                surname="测",
                title="先生",
                timezone="Asia/Shanghai",
                created_at=dt.datetime(2026, 1, 1),
            )
        )
    with pytest.raises(Exception, match="Decimal"), unit_of_work(session_factory) as session:
        session.add(
            Customer(
                id="Z3", name="测试", surname="测", title="先生", timezone="Asia/Shanghai", single_transfer_limit=0.1
            )
        )
