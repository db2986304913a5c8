"""Latency of /model/parse, of a text turn sent to Rasa directly, and of the same turn through the gateway."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bankbot.layout import ProjectLayout
from bankbot.stack import Stack, bench_env
from bankbot.training import ensure_trained
from bankcore.settings import Settings

# The sandbox's demo customers; each has a conversation on each path.
DEMO_CUSTOMERS = ("C001", "C002", "C003", "C004")

# One-shot requests that open no form, so every turn is comparable and the conversation never drifts.
BENCH_TEXTS = [
    "我的余额是多少",
    "查一下最近的交易明细",
    "美元汇率多少",
    "三年定期利率是多少",
    "我的定期什么时候到期",
    "信用卡账单多少",
    "你好",
    "谢谢",
]


def _post(url: str, body: dict[str, Any], token: str | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def percentile(samples: Sequence[float], q: float) -> float:
    """The nearest-rank quantile `q` (0..1) of `samples`; 0.0 for none."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _timed(calls: list[Any], turns: int, customers: Sequence[str]) -> list[list[float]]:
    """Run `turns` turns through each call, interleaved (alternating which goes first); ms per call.

    Turns go round-robin over the customers, so each conversation stays `turns / len(customers)` long:
    a turn's cost grows with its conversation (the tracker is loaded and sent whole), and real
    conversations are short.
    """
    samples: list[list[float]] = [[] for _ in calls]
    for i in range(turns):
        text = BENCH_TEXTS[(i // len(customers)) % len(BENCH_TEXTS)]
        customer = customers[i % len(customers)]
        order = list(range(len(calls))) if i % 2 == 0 else list(reversed(range(len(calls))))
        for index in order:
            started = time.perf_counter()
            calls[index](customer, text)
            samples[index].append((time.perf_counter() - started) * 1000)
    return samples


def bench_turns(layout: ProjectLayout, *, turns: int, console: Console) -> int:
    from bankcore.database import make_engine, make_session_factory, migrate, unit_of_work
    from bankcore.sandbox import seed_demo_if_empty

    model = ensure_trained(layout)
    with tempfile.TemporaryDirectory(prefix="bankbot-bench-") as tmp:
        var_dir = Path(tmp)
        env = bench_env(var_dir, BANKBOT_DEV_LOGIN="1", BANKBOT_WEBCHAT_RATE_LIMIT_PER_MINUTE="0")
        settings = Settings.from_env(env)
        migrate(settings.database_url)
        with unit_of_work(make_session_factory(make_engine(settings.database_url))) as session:
            seed_demo_if_empty(session, pin_key=settings.secret_key)
        stack = Stack(layout, env, model)
        console.print("starting the stack...")
        stack.start()
        try:
            gateway = f"http://127.0.0.1:{settings.gateway_port}"
            tokens = {
                customer: _post(f"{gateway}/webchat/session", {"customer_id": customer})["token"]
                for customer in DEMO_CUSTOMERS
            }
            parse_url = f"{settings.rasa_url}/model/parse?token={settings.rasa_token}"
            rest_url = f"{settings.rasa_url}/webhooks/rest/webhook"

            def parse(customer: str, text: str) -> None:
                _post(parse_url, {"text": text})

            def direct(customer: str, text: str) -> None:
                metadata = {"customer_id": customer, "channel": "bench"}
                _post(rest_url, {"sender": f"bench:{customer}", "message": text, "metadata": metadata})

            def through_gateway(customer: str, text: str) -> None:
                _post(f"{gateway}/webchat/messages", {"text": text}, tokens[customer])

            _timed([direct, through_gateway], 8, DEMO_CUSTOMERS)  # warm-up: first turns load lazily
            results = {"/model/parse": _timed([parse], turns, DEMO_CUSTOMERS)[0]}
            # Interleaved, so both conversations grow alike and drift in the machine hits both equally.
            direct_ms, gateway_ms = _timed([direct, through_gateway], turns, DEMO_CUSTOMERS)
            results["turn via Rasa REST (direct)"] = direct_ms
            results["turn via gateway (web chat)"] = gateway_ms
        finally:
            stack.stop()
    table = Table("measure", "n", "p50 ms", "p95 ms", "mean ms", title=f"turn latency ({turns} turns each)")
    summary: dict[str, dict[str, float]] = {}
    for name, samples in results.items():
        row = {
            "p50": statistics.median(samples),
            "p95": percentile(samples, 0.95),
            "mean": statistics.fmean(samples),
        }
        summary[name] = row
        table.add_row(name, str(len(samples)), f"{row['p50']:.1f}", f"{row['p95']:.1f}", f"{row['mean']:.1f}")
    console.print(table)
    overhead = summary["turn via gateway (web chat)"]["p95"] - summary["turn via Rasa REST (direct)"]["p95"]
    ratio = summary["turn via gateway (web chat)"]["p95"] / summary["turn via Rasa REST (direct)"]["p95"]
    console.print(f"gateway overhead at p95: {overhead:+.1f} ms (ratio {ratio:.3f}); budget +10 ms")
    out = layout.root / "reports"
    out.mkdir(exist_ok=True)
    (out / "bench-turns.json").write_text(
        json.dumps({"turns": turns, "results": summary, "overhead_p95_ms": overhead}, indent=2)
    )
    return 0 if overhead <= 10 else 1
