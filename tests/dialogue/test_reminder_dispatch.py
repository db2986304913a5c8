"""The scheduler's dispatcher with the conversation sender against the live stack: the reminder reaches the
customer's conversation, is recorded delivered once, and the customer's reply continues it."""

from __future__ import annotations

import asyncio
import datetime as dt

import aiohttp
import pytest

from bankcore.database import unit_of_work
from bankcore.reminders import store
from bankcore.reminders.planned import PlannedReminder
from channels.rasa_client import RasaClient
from channels.scheduler.conversation_sender import ConversationSender
from channels.scheduler.worker import Dispatcher

pytestmark = pytest.mark.rasa


def test_a_dispatched_reminder_opens_the_conversation_and_the_reply_continues_it(live_stack, chat) -> None:  # type: ignore[no-untyped-def]
    customer = chat("C004")  # the page is open (a fresh conversation) before the reminder arrives
    now = dt.datetime.now(dt.UTC)
    key = f"C004:loan_instalment:L4001:dispatch-test:{now.timestamp()}"
    with unit_of_work(live_stack.db_session_factory) as session:
        created = store.add_planned(
            session,
            [
                PlannedReminder(
                    key=key,
                    customer_id="C004",
                    rule_id="loan_instalment",
                    kind="loan_instalment_due",
                    topic="loan",
                    item_id="L4001",
                    due_date=(now + dt.timedelta(days=3)).date(),
                    send_after=now - dt.timedelta(seconds=1),
                    channels=("webchat",),
                    payload={"amount": "3200.00", "due_date": (now + dt.timedelta(days=3)).date().isoformat()},
                )
            ],
            now,
        )
    assert created == 1

    async def dispatch() -> int:
        async with aiohttp.ClientSession() as http:
            sender = ConversationSender(RasaClient(http, live_stack.rasa_url, live_stack.rasa_token))
            dispatcher = Dispatcher(live_stack.db_session_factory, sender, worker_id="test-worker")
            done = 0
            for _ in range(3):  # other tests' reminders may share the table; ours is due now
                done += await dispatcher.run_once()
            return done

    assert asyncio.run(dispatch()) >= 1
    with unit_of_work(live_stack.db_session_factory) as session:
        statuses = store.statuses_of(session, [key])
    assert statuses == {key: "delivered"}
    # The reply continues the conversation the reminder opened.
    assert "贷款" in customer.say("/loan_repayment")


def test_reminder_stats_are_served_read_only_by_the_gateway(live_stack) -> None:  # type: ignore[no-untyped-def]
    import json
    import urllib.error
    import urllib.request

    with urllib.request.urlopen(f"{live_stack.gateway_url}/reminders/stats", timeout=10) as response:
        body = json.loads(response.read())
    assert set(body) == {"by_status", "total"} and body["total"] == sum(body["by_status"].values())
    request = urllib.request.Request(f"{live_stack.gateway_url}/reminders/stats", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 405
