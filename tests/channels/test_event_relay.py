"""The event relay: Rasa's events (as its pika broker publishes them) into the cross-channel event store, once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bankbot.engines.rabbitmq_server import RabbitMQServer
from bankbot.layout import ProjectLayout, subprocess_env
from bankbot.stack import free_port, pika_event_broker
from bankcore.database import unit_of_work
from bankcore.models import CrossChannelEvent
from channels.event_relay.mapping import (
    InvalidMessage,
    customer_of_sender,
    decode,
    event_id,
    map_rasa_event,
)
from channels.event_relay.metrics import RelayMetrics
from channels.event_relay.relay import EventRelay, RelayConfig

LAYOUT = ProjectLayout()
PUBLISHER = Path(__file__).with_name("rasa_pika_publisher.py")
T0 = 1767225600.25  # 2026-01-01T00:00:00.25Z


# -- message bodies exactly as Rasa 3.6 publishes them ----------------------------------------------------------


def user_body(
    text: str = "我要查余额",
    intent: str = "check_balance",
    confidence: float = 0.97,
    *,
    sender_id: str = "webchat:C001",
    metadata: dict[str, Any] | None = None,
    timestamp: float = T0,
    message_id: str = "m-1",
    ranking: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """`{"sender_id"} | UserUttered.as_dict()` (rasa/shared/core/events.py), key for key."""
    meta = {"customer_id": "C001", "channel": "webchat", "locale": "zh-CN"} if metadata is None else metadata
    intent_data = {"name": intent, "confidence": confidence}
    return {
        "sender_id": sender_id,
        "event": "user",
        "timestamp": timestamp,
        "metadata": meta,
        "text": text,
        "parse_data": {
            "intent": intent_data,
            "entities": [],
            "text": text,
            "message_id": message_id,
            "metadata": meta,
            "intent_ranking": ranking or [intent_data],
        },
        "input_channel": "rest",
        "message_id": message_id,
    }


def action_body(name: str, *, sender_id: str = "webchat:C001", timestamp: float = T0 + 0.1) -> dict[str, Any]:
    """`{"sender_id"} | ActionExecuted.as_dict()`; Rasa stamps only model and assistant ids into its metadata."""
    return {
        "sender_id": sender_id,
        "event": "action",
        "timestamp": timestamp,
        "metadata": {"model_id": "m", "assistant_id": "a"},
        "name": name,
        "policy": "RulePolicy",
        "confidence": 1.0,
        "action_text": None,
        "hide_rule_turn": False,
    }


def user_spec(n: int, *, customer: str = "C001", channel: str = "webchat", **extra: Any) -> dict[str, Any]:
    """A user message for the publisher script (Rasa builds the event itself)."""
    spec = {
        "sender_id": f"{channel}:{customer}",
        "event": "user",
        "timestamp": T0 + n * 0.001,
        "text": f"第{n}条消息",
        "intent": "check_balance",
        "confidence": 0.9,
        "message_id": f"m-{n}",
        "metadata": {"customer_id": customer, "channel": channel, "locale": "zh-CN"},
    }
    spec.update(extra)
    return spec


# -- mapping (pure) ----------------------------------------------------------------------------------------------


def test_a_customer_message_becomes_a_chat_message_without_its_text() -> None:
    mapped = map_rasa_event(user_body("我的卡号6222021234567890123", "check_balance", 0.93))
    (event,) = mapped.events
    assert event.type == "chat_message"
    assert event.customer_id == "C001"
    assert event.channel == "app"  # the web chat is the bank's own digital channel
    assert event.ts.timestamp() == pytest.approx(T0)
    assert dict(event.attrs) == {
        "intent": "check_balance",
        "confidence": 0.93,
        "gateway_channel": "webchat",
        "input": "text",
    }
    assert "6222" not in json.dumps(event.to_json(), ensure_ascii=False)
    assert mapped.confidence == pytest.approx(0.93)


@pytest.mark.parametrize(
    ("gateway_channel", "public"),
    [("webchat", "app"), ("wecom", "wecom"), ("miniprogram", "miniprogram"), ("ivr", "ivr"), ("phone", "ivr")],
)
def test_gateway_channels_map_to_the_public_vocabulary(gateway_channel: str, public: str) -> None:
    body = user_body(sender_id=f"{gateway_channel}:C002", metadata={"customer_id": "C002", "channel": gateway_channel})
    (event,) = map_rasa_event(body).events
    assert (event.channel, event.attrs["gateway_channel"]) == (public, gateway_channel)


def test_a_button_payload_is_stored_but_not_counted_as_an_nlu_confidence() -> None:
    mapped = map_rasa_event(user_body("/affirm", "affirm", 1.0))
    (event,) = mapped.events
    assert event.attrs["input"] == "payload"
    assert mapped.confidence is None


def test_the_nlu_fallback_intent_is_a_chat_message_and_a_fallback_with_the_best_real_guess() -> None:
    ranking = [{"name": "nlu_fallback", "confidence": 0.7}, {"name": "report_fraud", "confidence": 0.31}]
    mapped = map_rasa_event(user_body("那个东西怎么弄", "nlu_fallback", 0.7, ranking=ranking))
    assert [event.type for event in mapped.events] == ["chat_message", "nlu_fallback"]
    fallback = mapped.events[1]
    assert dict(fallback.attrs) == {
        "source": "nlu",
        "confidence": 0.7,
        "gateway_channel": "webchat",
        "top_intent": "report_fraud",
    }
    assert mapped.events[0].event_id != fallback.event_id


def test_handoff_and_default_fallback_actions_take_the_customer_from_the_conversation_id() -> None:
    (handoff,) = map_rasa_event(action_body("action_human_handoff", sender_id="wecom:C004")).events
    assert (handoff.type, handoff.customer_id, handoff.channel) == ("handoff", "C004", "wecom")
    (fallback,) = map_rasa_event(action_body("action_default_fallback", sender_id="ivr:C003")).events
    assert (fallback.type, fallback.channel, fallback.attrs["source"]) == ("nlu_fallback", "ivr", "core")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (user_body(metadata={"channel": "wecom", "guest": True}, sender_id="wecom:guest-1a2b"), "no_customer"),
        (user_body(metadata={}), "no_customer"),
        (action_body("action_human_handoff", sender_id="wecom:guest-1a2b"), "no_customer"),
        (action_body("action_human_handoff", sender_id="default"), "no_customer"),
        (user_body("/contact_opened", "contact_opened"), "system_message"),
        (user_body("/EXTERNAL_reminder", "EXTERNAL_reminder"), "system_message"),
        (action_body("action_listen"), "not_relayed"),
        ({"sender_id": "webchat:C001", "event": "bot", "timestamp": T0, "text": "您的余额是…"}, "not_relayed"),
        ({"sender_id": "webchat:C001", "event": "slot", "timestamp": T0, "name": "amount", "value": 5}, "not_relayed"),
        (user_body(sender_id="webchat:" + "C" * 80, metadata={"customer_id": "C" * 80}), "invalid"),
        (user_body(timestamp=0.0), "invalid"),
    ],
)
def test_what_is_not_stored_and_why(body: dict[str, Any], reason: str) -> None:
    mapped = map_rasa_event(body)
    assert mapped.events == ()
    assert mapped.skipped == reason


def test_event_ids_are_stable_and_tell_events_apart() -> None:
    first = map_rasa_event(user_body()).events[0].event_id
    assert first == map_rasa_event(json.loads(json.dumps(user_body()))).events[0].event_id
    assert first != map_rasa_event(user_body(timestamp=T0 + 0.000001)).events[0].event_id
    assert first != map_rasa_event(user_body(message_id="m-2")).events[0].event_id
    assert first != map_rasa_event(user_body(sender_id="wecom:C001")).events[0].event_id
    assert first is not None and len(first) <= 64
    assert event_id("a", 1.0, "user", "x", "chat_message") == event_id("a", 1, "user", "x", "chat_message")


def test_conversation_ids_name_the_channel_and_the_customer() -> None:
    assert customer_of_sender("webchat:C001") == ("webchat", "C001")
    assert customer_of_sender("ivr:C:9") == ("ivr", "C:9")
    assert customer_of_sender("wecom:guest-00ff") is None
    assert customer_of_sender("C001") is None


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xfe", b"[1, 2]", b'{"event": "user", "timestamp": 1}', b'{"sender_id": "a", "event": "user"}', b"nope"],
)
def test_undecodable_messages_are_refused(raw: bytes) -> None:
    with pytest.raises(InvalidMessage):
        decode(raw)


def test_the_bodies_here_are_the_ones_rasa_publishes() -> None:
    """The shapes above, checked against Rasa 3.6's own events (the publisher script in print-only mode)."""
    if not LAYOUT.rasa_python.exists():
        pytest.skip("no .venv-rasa")
    specs = [
        user_spec(1, text="我要查余额", confidence=0.97, message_id="m-1", timestamp=T0),
        {"sender_id": "webchat:C001", "event": "action", "name": "action_human_handoff", "timestamp": T0 + 0.1},
    ]
    result = subprocess.run(
        [str(LAYOUT.rasa_python), str(PUBLISHER)],
        input=json.dumps({"print_only": True, "events": specs}),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    rasa_user, rasa_action = (json.loads(line) for line in result.stdout.splitlines())
    ours_user = user_body(timestamp=T0, confidence=0.97)
    assert rasa_user.keys() == ours_user.keys()
    assert rasa_user["parse_data"].keys() == ours_user["parse_data"].keys()
    assert rasa_action.keys() == action_body("action_human_handoff").keys()
    assert map_rasa_event(rasa_user).events == map_rasa_event(ours_user).events
    assert map_rasa_event(rasa_action).events == map_rasa_event(action_body("action_human_handoff")).events


# -- Rasa's endpoints and the stack ---------------------------------------------------------------------------------

AMQP_URL = "amqp://bank%40bot:p%40ss%2Fw%3Ard@10.0.0.5:5673/bankbot?heartbeat=30"


def test_rasa_gets_a_pika_event_broker_only_when_a_broker_is_configured(tmp_path: Path) -> None:
    from bankbot.stack import rasa_endpoints
    from bankcore.settings import Settings

    base = {"BANKBOT_VAR_DIR": str(tmp_path), "BANKBOT_SECRET_KEY": "k"}
    assert "event_broker" not in rasa_endpoints(Settings.from_env(base))
    settings = Settings.from_env({**base, "BANKBOT_AMQP_URL": AMQP_URL})
    assert "p%40ss" not in repr(settings)
    assert rasa_endpoints(settings)["event_broker"] == {
        "type": "pika",
        "url": "amqp://10.0.0.5:5673/bankbot?heartbeat=30",
        "username": "bank%40bot",
        "password": "p%40ss%2Fw%3Ard",
        "port": 5673,
        "queues": ["bankbot.rasa_events"],
        "exchange_name": "rasa-exchange",
        "raise_on_failure": False,
    }


def test_rasa_rebuilds_the_broker_url_with_credentials_vhost_and_options_intact() -> None:
    """Rasa joins the section back into one URL (PikaEventBroker._configure_url) that aio-pika then parses."""
    if not LAYOUT.rasa_python.exists():
        pytest.skip("no .venv-rasa")
    section = pika_event_broker(AMQP_URL, "q", "x")
    code = (
        "import asyncio, json, sys, yarl\n"
        "from rasa.core.brokers.pika import PikaEventBroker\n"
        "section = json.loads(sys.argv[1]); section.pop('type'); url = section.pop('url')\n"
        "broker = PikaEventBroker(url, event_loop=asyncio.new_event_loop(), **section)\n"
        "parsed = yarl.URL(broker._configure_url())\n"
        "print(json.dumps([parsed.user, parsed.password, parsed.host, parsed.port, parsed.path, dict(parsed.query)]))\n"
    )
    result = subprocess.run(
        [str(LAYOUT.rasa_python), "-c", code, json.dumps(section)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == ["bank@bot", "p@ss/w:rd", "10.0.0.5", 5673, "/bankbot", {"heartbeat": "30"}]


def test_the_stack_runs_the_relay_when_a_broker_is_configured(tmp_path: Path) -> None:
    from bankbot.stack import Stack

    env = {"BANKBOT_VAR_DIR": str(tmp_path), "BANKBOT_SECRET_KEY": "k", "BANKBOT_SCHEDULER": "0"}
    names = [service.name for service in Stack(LAYOUT, env, tmp_path / "model.tar.gz")._plan()]
    assert "event-relay" not in names
    with_broker = Stack(LAYOUT, {**env, "BANKBOT_AMQP_URL": AMQP_URL}, tmp_path / "model.tar.gz")._plan()
    relay = next(service for service in with_broker if service.name == "event-relay")
    assert relay.command[-2:] == ["-m", "channels.event_relay"]
    assert "event_broker" in (tmp_path / "endpoints.yml").read_text()


# -- with a real RabbitMQ ----------------------------------------------------------------------------------------


def rows(factory: sessionmaker[Session], type_: str | None = None) -> list[CrossChannelEvent]:
    with unit_of_work(factory) as session:
        query = (
            select(CrossChannelEvent)
            .where(CrossChannelEvent.event_id.like("rasa-%"))
            .order_by(CrossChannelEvent.ts, CrossChannelEvent.type)
        )
        if type_ is not None:
            query = query.where(CrossChannelEvent.type == type_)
        return list(session.scalars(query))


def counts(factory: sessionmaker[Session]) -> tuple[int, int]:
    """(rows, distinct event ids) of relayed events."""
    with unit_of_work(factory) as session:
        total, distinct = session.execute(
            select(func.count(), func.count(func.distinct(CrossChannelEvent.event_id))).where(
                CrossChannelEvent.event_id.like("rasa-%")
            )
        ).one()
    return int(total), int(distinct)


async def eventually(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


class Broker:
    """One test's exchange and queue on the session's node, and Rasa's own publisher for them."""

    def __init__(self, server: RabbitMQServer) -> None:
        self.server = server
        suffix = secrets.token_hex(4)
        self.queue = f"test.relay.{suffix}"
        self.exchange = f"test-exchange-{suffix}"

    def url(self, **query: str) -> str:
        params = "&".join(f"{key}={value}" for key, value in query.items())
        return self.server.url + (f"?{params}" if params else "")

    def config(self, **overrides: Any) -> RelayConfig:
        options: dict[str, Any] = {"amqp_url": self.url(), "queue": self.queue, "exchange": self.exchange}
        options.update(overrides)
        return RelayConfig(**options)

    async def publish(self, specs: list[dict[str, Any]], timeout: float = 120.0) -> None:
        """Publish through Rasa's PikaEventBroker, configured by our endpoints section (a subprocess on .venv-rasa)."""
        request = {"broker": pika_event_broker(self.server.url, self.queue, self.exchange), "events": specs}
        process = await asyncio.create_subprocess_exec(
            str(LAYOUT.rasa_python),
            str(PUBLISHER),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=subprocess_env(),
        )
        output, _ = await asyncio.wait_for(process.communicate(json.dumps(request).encode()), timeout)
        assert process.returncode == 0, output.decode(errors="replace")[-3000:]

    def depth(self) -> tuple[int, int]:
        """(ready, unacknowledged) messages in the queue."""
        return self.server.queue_depths().get(self.queue, (0, 0))


@pytest.fixture
def broker(rabbitmq: RabbitMQServer) -> Iterator[Broker]:
    if not LAYOUT.rasa_python.exists():
        pytest.skip("no .venv-rasa (Rasa's own publisher is used)")
    yield Broker(rabbitmq)
    assert rabbitmq.running, "a test left the session's RabbitMQ node stopped"


RelayStarter = Callable[..., Awaitable[tuple[EventRelay, asyncio.Event]]]


@pytest.fixture
async def start_relay(session_factory: sessionmaker[Session]) -> AsyncIterator[RelayStarter]:
    """Relays in this process (asyncio tasks); all stopped at the end."""
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def start(
        config: RelayConfig, factory: sessionmaker[Session] | None = None
    ) -> tuple[EventRelay, asyncio.Event]:
        relay = EventRelay(config, factory or session_factory, RelayMetrics.create())
        stop = asyncio.Event()
        task = asyncio.create_task(relay.run(stop))
        running.append((stop, task))
        await eventually(lambda: relay.connection is not None or task.done(), 30, "the relay to connect")
        return relay, stop

    yield start
    for stop, _task in running:
        stop.set()
    for _stop, task in running:
        await asyncio.wait_for(task, 30)


def conversation() -> list[dict[str, Any]]:
    """One web chat conversation as Rasa's tracker publishes it, with a guest and the gateway's system messages."""
    fallback_ranking = [{"name": "nlu_fallback", "confidence": 0.7}, {"name": "complain", "confidence": 0.4}]
    return [
        user_spec(0, text="/contact_opened", intent="contact_opened", confidence=1.0),
        {"sender_id": "webchat:C001", "event": "action", "name": "action_listen", "timestamp": T0 + 0.0005},
        user_spec(1, text="我要查余额，卡号6222021234567890123"),
        {"sender_id": "webchat:C001", "event": "bot", "text": "您的余额是1,000.00元", "timestamp": T0 + 0.0015},
        {"sender_id": "webchat:C001", "event": "slot", "name": "amount", "value": 500, "timestamp": T0 + 0.0016},
        user_spec(2, text="那个东西怎么弄", intent="nlu_fallback", confidence=0.7, ranking=fallback_ranking),
        {"sender_id": "webchat:C001", "event": "action", "name": "action_default_fallback", "timestamp": T0 + 0.0025},
        user_spec(3, text="/human_handoff", intent="human_handoff", confidence=1.0),
        {"sender_id": "webchat:C001", "event": "action", "name": "action_human_handoff", "timestamp": T0 + 0.0035},
        user_spec(4, customer="guest-77aa", channel="wecom", metadata={"channel": "wecom", "guest": True}),
        user_spec(5, customer="C004", channel="wecom"),
    ]


@pytest.mark.rabbitmq
async def test_rasa_events_are_stored_once_with_no_text_and_redelivery_adds_nothing(
    broker: Broker, start_relay: RelayStarter, session_factory: sessionmaker[Session]
) -> None:
    relay, _stop = await start_relay(broker.config())
    await broker.publish(conversation())
    await eventually(lambda: counts(session_factory)[0] == 7, what="the conversation's events")
    await eventually(lambda: relay.stats["consumed"] == 11, what="all 11 Rasa events consumed")

    stored = rows(session_factory)
    assert [(row.customer_id, row.channel, row.type) for row in stored] == [
        ("C001", "app", "chat_message"),
        ("C001", "app", "chat_message"),
        ("C001", "app", "nlu_fallback"),
        ("C001", "app", "nlu_fallback"),
        ("C001", "app", "chat_message"),
        ("C001", "app", "handoff"),
        ("C004", "wecom", "chat_message"),
    ]
    assert stored[0].attrs == {
        "intent": "check_balance",
        "confidence": 0.9,
        "gateway_channel": "webchat",
        "input": "text",
    }
    assert {row.attrs["source"] for row in stored if row.type == "nlu_fallback"} == {"nlu", "core"}
    everything = json.dumps([row.attrs for row in stored], ensure_ascii=False)
    assert "6222" not in everything and "余额" not in everything and "怎么弄" not in everything
    assert broker.depth() == (0, 0)

    # Rasa publishing the same events again (a tracker re-streamed, a publish retried) stores nothing new.
    await broker.publish([{**spec, "times": 2} for spec in conversation()])
    await eventually(lambda: relay.stats["consumed"] == 33, what="the repeated events consumed")
    assert counts(session_factory) == (7, 7)
    assert relay.stats["duplicates"] == 14
    assert broker.depth() == (0, 0)

    metrics = relay.metrics
    assert metrics.handoffs.labels(channel="webchat")._value.get() == 1
    assert metrics.fallbacks.labels(channel="webchat", source="nlu")._value.get() == 1
    assert metrics.fallbacks.labels(channel="webchat", source="core")._value.get() == 1
    assert metrics.duplicates._value.get() == 14


@pytest.mark.rabbitmq
async def test_nothing_is_acknowledged_while_the_database_is_down(
    broker: Broker, start_relay: RelayStarter, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    from channels.event_relay import relay as relay_module

    outage = {"failing": True, "calls": 0}
    real_store = relay_module.store_batch

    def store_or_fail(factory: sessionmaker[Session], events: Any) -> Any:
        outage["calls"] += 1
        if outage["failing"]:
            raise OperationalError("INSERT", {}, Exception("connection refused"))
        return real_store(factory, events)

    monkeypatch.setattr(relay_module, "store_batch", store_or_fail)
    relay, _stop = await start_relay(broker.config(database_backoff=0.05, database_backoff_cap=0.2))
    await broker.publish([user_spec(n) for n in range(20)])
    await eventually(lambda: outage["calls"] >= 3, what="retries during the outage")
    assert counts(session_factory) == (0, 0)
    assert broker.depth() == (0, 20), "all 20 held unacknowledged by the relay"
    outage["failing"] = False
    await eventually(lambda: counts(session_factory) == (20, 20), what="the batch stored after the outage")
    await eventually(lambda: broker.depth() == (0, 0), what="the batch acknowledged")
    assert relay.metrics.database_retries._value.get() >= 3


def relay_process(broker: Broker, database_url: str, var_dir: Path, **env: str) -> subprocess.Popen[bytes]:
    settings = {
        "BANKBOT_VAR_DIR": str(var_dir),
        "BANKBOT_DATABASE_URL": database_url,
        "BANKBOT_SECRET_KEY": "relay-test-secret",
        "BANKBOT_AMQP_URL": broker.url(),
        "BANKBOT_AMQP_QUEUE": broker.queue,
        "BANKBOT_AMQP_EXCHANGE": broker.exchange,
        **env,
    }
    var_dir.mkdir(parents=True, exist_ok=True)
    log = open(var_dir / "relay.out", "ab")  # noqa: SIM115 (the child holds it)
    try:
        return subprocess.Popen(
            [str(LAYOUT.python), "-m", "channels.event_relay"],
            cwd=LAYOUT.root,
            env=subprocess_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    finally:
        log.close()


@contextlib.contextmanager
def reaped(process: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


@pytest.mark.rabbitmq
async def test_a_relay_killed_mid_stream_and_restarted_loses_nothing_and_stores_nothing_twice(
    broker: Broker, database_url: str, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    total = 3000
    metrics_port = free_port()
    first = relay_process(
        broker,
        database_url,
        tmp_path / "var",
        BANKBOT_RELAY_BATCH_SIZE="50",
        BANKBOT_RELAY_METRICS_PORT=str(metrics_port),
    )
    with reaped(first):
        await broker.publish([user_spec(n, customer=f"C{n % 7:03d}") for n in range(total)])
        await eventually(lambda: counts(session_factory)[0] >= 300, 60, "the first relay to store some")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            exposition = response.read().decode()
        assert "bankbot_relay_events_stored_total" in exposition
        assert 'bankbot_nlu_confidence_bucket{channel="webchat"' in exposition
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    stored_at_kill = counts(session_factory)[0]
    assert stored_at_kill < total, "the relay finished before it was killed; publish more"

    second = relay_process(broker, database_url, tmp_path / "var")
    with reaped(second):
        await eventually(lambda: counts(session_factory)[0] >= total, 120, "every event after the restart")
        await eventually(lambda: broker.depth() == (0, 0), 30, "the queue drained")
        assert counts(session_factory) == (total, total)
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0


@pytest.mark.rabbitmq
async def test_sigterm_finishes_the_batch_in_hand_and_leaves_the_rest_queued(
    broker: Broker, database_url: str, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    total = 2000
    with reaped(relay_process(broker, database_url, tmp_path / "var", BANKBOT_RELAY_BATCH_SIZE="20")) as relay:
        await broker.publish([user_spec(n) for n in range(total)])
        await eventually(lambda: counts(session_factory)[0] >= 100, 60, "some events stored")
        relay.send_signal(signal.SIGTERM)
        assert relay.wait(timeout=30) == 0
    stored, distinct = counts(session_factory)
    assert stored == distinct
    ready, unacknowledged = broker.depth()
    assert unacknowledged == 0
    # Everything is either stored or back in the queue; a batch stored whose ack did not leave in time would be both.
    assert stored + ready >= total
    with reaped(relay_process(broker, database_url, tmp_path / "var")):
        await eventually(lambda: counts(session_factory) == (total, total), 60, "the rest after a restart")


@pytest.mark.rabbitmq
async def test_the_relay_carries_on_after_the_broker_stalls(
    broker: Broker, start_relay: RelayStarter, session_factory: sessionmaker[Session]
) -> None:
    # A 1-second heartbeat: aiormq gives a connection up after (heartbeat + 1) * 3 = 6 s without a frame, so a
    # stall of 10 s makes the relay reconnect (aio-pika's robust connection) rather than merely wait.
    relay, _stop = await start_relay(broker.config(amqp_url=broker.url(heartbeat="1"), reconnect_interval=0.5))
    await broker.publish([user_spec(n) for n in range(200)])
    await eventually(lambda: counts(session_factory)[0] == 200, what="the first 200")

    # A short stall while events are in flight: the relay just waits.
    publishing = asyncio.create_task(broker.publish([user_spec(n) for n in range(200, 700)]))
    await asyncio.sleep(0.3)
    await asyncio.to_thread(broker.server.stall, 3.0)
    await publishing
    await eventually(lambda: counts(session_factory)[0] == 700, 60, "all 700 after a short stall")

    # A stall longer than the heartbeat: the connection is dropped and the relay reconnects.
    await asyncio.to_thread(broker.server.stall, 10.0)
    await broker.publish([user_spec(n) for n in range(700, 1000)])
    await eventually(lambda: counts(session_factory)[0] == 1000, 90, "all 1000 after a long stall")
    assert counts(session_factory) == (1000, 1000)
    assert broker.depth() == (0, 0)
    assert relay.metrics.reconnects._value.get() >= 1


@pytest.mark.rabbitmq
async def test_the_relay_reconnects_after_a_broker_restart_and_keeps_what_was_queued(
    broker: Broker, start_relay: RelayStarter, session_factory: sessionmaker[Session]
) -> None:
    relay, stop = await start_relay(broker.config(reconnect_interval=0.5))
    await broker.publish([user_spec(n) for n in range(100)])
    await eventually(lambda: counts(session_factory)[0] == 100, what="the first 100")
    stop.set()
    await eventually(lambda: relay.connection is None, what="the relay to stop")
    # Published while no relay consumes: durable queue, persistent messages, kept across a broker restart.
    await broker.publish([user_spec(n) for n in range(100, 300)])
    await asyncio.to_thread(broker.server.restart)
    assert broker.depth() == (200, 0)
    relay, _stop = await start_relay(broker.config(reconnect_interval=0.5))
    await eventually(lambda: counts(session_factory) == (300, 300), 60, "the queued 200 after the restart")

    # And a restart under a running relay: the connection comes back and consuming goes on.
    await asyncio.to_thread(broker.server.restart)
    await broker.publish([user_spec(n) for n in range(300, 400)])
    await eventually(lambda: counts(session_factory) == (400, 400), 60, "events published after the second restart")
    assert relay.metrics.reconnects._value.get() >= 1


def test_the_relay_refuses_to_start_without_a_broker_url(tmp_path: Path) -> None:
    env = subprocess_env({"BANKBOT_VAR_DIR": str(tmp_path), "BANKBOT_SECRET_KEY": "x"})
    env.pop("BANKBOT_AMQP_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "channels.event_relay"], env=env, cwd=LAYOUT.root, capture_output=True, timeout=60
    )
    assert result.returncode == 2
    assert b"BANKBOT_AMQP_URL" in result.stderr


@pytest.mark.rasa
@pytest.mark.rabbitmq
def test_a_web_chat_turn_through_a_real_rasa_becomes_a_chat_message_event(
    rabbitmq: RabbitMQServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The whole path: gateway -> Rasa (pika event broker from our endpoints.yml) -> RabbitMQ -> relay -> store."""
    from tests.conftest import ChatClient, running_stack

    suffix = secrets.token_hex(4)
    env = {
        "BANKBOT_AMQP_URL": rabbitmq.url,
        "BANKBOT_AMQP_QUEUE": f"test.stack.{suffix}",
        "BANKBOT_AMQP_EXCHANGE": f"test-stack-{suffix}",
    }
    with running_stack(tmp_path_factory, env) as stack:
        chat = ChatClient(stack, "C002")
        chat.open()
        reply = chat.say("我想查一下余额")
        assert reply
        chat.say("转人工")

        def relayed() -> list[CrossChannelEvent]:
            with unit_of_work(stack.db_session_factory) as session:
                return list(
                    session.scalars(
                        select(CrossChannelEvent)
                        .where(CrossChannelEvent.customer_id == "C002", CrossChannelEvent.event_id.like("rasa-%"))
                        .order_by(CrossChannelEvent.ts)
                    )
                )

        deadline = time.monotonic() + 30
        while len([row for row in relayed() if row.type == "chat_message"]) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        events = relayed()
        messages = [row for row in events if row.type == "chat_message"]
        assert len(messages) == 2, [(row.type, row.attrs) for row in events]
        assert {row.channel for row in messages} == {"app"}
        assert all(row.attrs["gateway_channel"] == "webchat" and row.attrs["input"] == "text" for row in messages)
        assert 0.0 < messages[0].attrs["confidence"] <= 1.0
        assert "余额" not in json.dumps([row.attrs for row in events], ensure_ascii=False)
        # "转人工" is the hand-off intent; the hand-off action follows it in the same turn.
        assert messages[1].attrs["intent"] == "human_handoff"
        deadline = time.monotonic() + 10
        while not any(row.type == "handoff" for row in relayed()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert any(row.type == "handoff" for row in relayed())
