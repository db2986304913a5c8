"""`bankbot bench wecom` end to end on a small scale, with the stand-in for Rasa: its figures add up."""

from __future__ import annotations

from bankbot.layout import ProjectLayout
from bankbot.wecom_bench import BenchConfig, run_bench


def test_the_wecom_bench_counts_every_message_once_under_a_retry_storm() -> None:
    config = BenchConfig(
        users=6,
        messages=2,
        burst=2,
        retry_storm=3,
        think_s=0.05,
        platform_s=0.01,
        fake_rasa=True,
        rasa_s=0.01,
        drain_timeout_s=60,
    )
    result = run_bench(ProjectLayout(), config)
    integrity = result["integrity"]
    warmup = 8  # the demo user's unmeasured turns
    assert integrity["distinct_messages"] == 6 * (2 + 2 + 1) + warmup == integrity["inbox_rows"]
    assert integrity["settled"] and integrity["lost_messages"] == 0
    assert integrity["duplicate_replies"] == 0 and integrity["duplicate_turns"] == 0
    # One echo per message reached the platform; the storm's copies were acknowledged and dropped.
    assert integrity["platform_replies"] == integrity["outbox_sent"] == 30 + warmup
    assert result["http_statuses"] == {"200": 6 * (2 + 2 + 4) + warmup}
    assert result["ack_ms"]["storm"]["n"] == 24 and result["reply_ms"]["conversation"]["n"] == 12
    assert result["gateway_ack"]["n"] == 48 + warmup
    assert "warmup" not in result["ack_ms"] and "warmup" not in result["reply_ms"]
    assert result["verdict"]["ok"]
