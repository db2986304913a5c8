"""Fixtures the dialogue tests share."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import select, update

from bankcore.database import unit_of_work
from bankcore.models import Card
from tests.conftest import LiveStack


@pytest.fixture
def restore_card(live_stack: LiveStack) -> Iterator[Callable[[str, str], None]]:
    """Puts the named cards back as they were: the session's other tests share the demo bank."""
    saved: list[tuple[str, str, str, Any]] = []

    def remember(customer_id: str, last4: str) -> None:
        with unit_of_work(live_stack.db_session_factory) as session:
            card = session.scalars(select(Card).where(Card.customer_id == customer_id, Card.last4 == last4)).one()
            saved.append((customer_id, last4, card.status, card.status_changed_at))

    yield remember
    with unit_of_work(live_stack.db_session_factory) as session:
        for customer_id, last4, status, changed_at in saved:
            session.execute(
                update(Card)
                .where(Card.customer_id == customer_id, Card.last4 == last4)
                .values(status=status, status_changed_at=changed_at)
            )
