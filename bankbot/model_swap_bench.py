"""Model swap bench: customers chat through the gateway without pause while the Rasa model is swapped back and
forth with `PUT /model`; no turn may fail. Reports turns sent, answered and failed, and latency during the
swaps and outside them (`make bench-ops-swap`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.table import Table

from bankbot.layout import ProjectLayout
from bankbot.stack import Stack, bench_env
from bankbot.training import ensure_trained
from bankbot.turn_bench import BENCH_TEXTS, DEMO_CUSTOMERS, percentile
from bankcore.settings import Settings

# A customer whose turn takes longer than this has given up: the turn counts as failed.
TURN_TIMEOUT_SECONDS = 30.0


@dataclass
class Turn:
    started: float
    ended: float
    ok: bool
    detail: str = ""


@dataclass
class Swap:
    model: str
    started: float
    ended: float = 0.0
    ok: bool = False
    detail: str = ""


@dataclass
class SwapBenchResult:
    turns: list[Turn] = field(default_factory=list)
    swaps: list[Swap] = field(default_factory=list)

    def during_swap(self, turn: Turn) -> bool:
        return any(turn.started < s.ended and turn.ended > s.started for s in self.swaps)


async def _customer(
    http: aiohttp.ClientSession, gateway: str, customer: str, stop: asyncio.Event, result: SwapBenchResult
) -> None:
    async with http.post(f"{gateway}/webchat/session", json={"customer_id": customer}) as response:
        token = (await response.json())["token"]
    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=TURN_TIMEOUT_SECONDS)
    index = DEMO_CUSTOMERS.index(customer) if customer in DEMO_CUSTOMERS else 0
    while not stop.is_set():
        text = BENCH_TEXTS[index % len(BENCH_TEXTS)]
        index += 1
        started = time.monotonic()
        ok, detail = False, ""
        try:
            async with http.post(
                f"{gateway}/webchat/messages", json={"text": text}, headers=headers, timeout=timeout
            ) as response:
                body = await response.json(content_type=None)
                ok = response.status == 200 and bool(body.get("messages"))
                detail = "" if ok else f"HTTP {response.status} {str(body)[:120]}"
        except (TimeoutError, aiohttp.ClientError) as error:
            detail = f"{type(error).__name__}: {error}"
        result.turns.append(Turn(started, time.monotonic(), ok, detail))


async def _swapper(
    http: aiohttp.ClientSession,
    settings: Settings,
    models: list[Path],
    swaps: int,
    pause: float,
    result: SwapBenchResult,
) -> None:
    url = f"{settings.rasa_url}/model"
    params = {"token": settings.rasa_token}
    timeout = aiohttp.ClientTimeout(total=600)
    await asyncio.sleep(pause)  # turns outside any swap first
    for i in range(swaps):
        model = models[(i + 1) % len(models)]
        swap = Swap(model.name, time.monotonic())
        try:
            async with http.put(url, params=params, json={"model_file": str(model)}, timeout=timeout) as response:
                swap.ok = response.status == 204
                swap.detail = "" if swap.ok else f"HTTP {response.status} {(await response.text())[:200]}"
            async with http.get(f"{settings.rasa_url}/status", params=params) as response:
                status = await response.json()
            if swap.ok and status.get("model_file") != model.name:
                swap.ok, swap.detail = False, f"/status names {status.get('model_file')}"
        except (TimeoutError, aiohttp.ClientError) as error:
            swap.detail = f"{type(error).__name__}: {error}"
        swap.ended = time.monotonic()
        result.swaps.append(swap)
        await asyncio.sleep(pause)


async def _drive(settings: Settings, models: list[Path], swaps: int, pause: float, customers: int) -> SwapBenchResult:
    result = SwapBenchResult()
    gateway = f"http://127.0.0.1:{settings.gateway_port}"
    stop = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=customers + 4)
    async with aiohttp.ClientSession(connector=connector) as http:
        who = [DEMO_CUSTOMERS[i % len(DEMO_CUSTOMERS)] for i in range(customers)]
        chatting = [asyncio.create_task(_customer(http, gateway, c, stop, result)) for c in who]
        try:
            await _swapper(http, settings, models, swaps, pause, result)
        finally:
            stop.set()
            await asyncio.gather(*chatting)
    return result


def _latency(turns: list[Turn]) -> dict[str, float]:
    ms = [(t.ended - t.started) * 1000 for t in turns if t.ok]
    if not ms:
        return {"n": 0, "p50": 0.0, "p95": 0.0, "max": 0.0}
    return {"n": len(ms), "p50": statistics.median(ms), "p95": percentile(ms, 0.95), "max": max(ms)}


def summarise(result: SwapBenchResult) -> dict[str, Any]:
    during = [t for t in result.turns if result.during_swap(t)]
    outside = [t for t in result.turns if not result.during_swap(t)]
    failed = [t for t in result.turns if not t.ok]
    return {
        "turns_sent": len(result.turns),
        "turns_answered": sum(t.ok for t in result.turns),
        "turns_failed": len(failed),
        "failures": [t.detail for t in failed][:20],
        "during_swaps": _latency(during),
        "outside_swaps": _latency(outside),
        "swaps": [
            {"model": s.model, "ok": s.ok, "seconds": round(s.ended - s.started, 2), "detail": s.detail}
            for s in result.swaps
        ],
    }


def bench_swap(
    layout: ProjectLayout, *, other: Path | None, swaps: int, pause: float, customers: int, out: Path, console: Console
) -> int:
    from bankcore.database import make_engine, make_session_factory, migrate, unit_of_work
    from bankcore.sandbox import seed_demo_if_empty

    serving = ensure_trained(layout)
    if other is None:
        cached = sorted(
            (p for p in (layout.cache / "models").glob("bankbot-*.tar.gz") if p.name != serving.name),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        other = cached[0] if cached else serving
    models = [serving.resolve(), other.resolve()]
    console.print(f"swapping between {models[0].name} and {models[1].name}, {swaps} times")
    with tempfile.TemporaryDirectory(prefix="bankbot-swap-bench-") as tmp:
        env = bench_env(Path(tmp), BANKBOT_DEV_LOGIN="1", BANKBOT_WEBCHAT_RATE_LIMIT_PER_MINUTE="0")
        settings = Settings.from_env(env)
        migrate(settings.database_url)
        with unit_of_work(make_session_factory(make_engine(settings.database_url))) as session:
            seed_demo_if_empty(session, pin_key=settings.secret_key)
        stack = Stack(layout, env, models[0])
        console.print("starting the stack...")
        stack.start()
        try:
            started = time.monotonic()
            result = asyncio.run(_drive(settings, models, swaps, pause, customers))
            elapsed = time.monotonic() - started
        finally:
            stack.stop()
    summary = summarise(result) | {
        "customers": customers,
        "seconds": round(elapsed, 1),
        "models": [m.name for m in models],
    }
    table = Table("turns", "n answered", "p50 ms", "p95 ms", "max ms", title="turns through the gateway")
    for name in ("outside_swaps", "during_swaps"):
        row = summary[name]
        table.add_row(
            name.replace("_", " "), str(row["n"]), f"{row['p50']:.0f}", f"{row['p95']:.0f}", f"{row['max']:.0f}"
        )
    console.print(table)
    console.print(
        f"turns sent {summary['turns_sent']}, answered {summary['turns_answered']}, failed {summary['turns_failed']}; "
        f"swaps {sum(s['ok'] for s in summary['swaps'])}/{len(summary['swaps'])} ok, load "
        + ", ".join(f"{s['seconds']:.1f} s" for s in summary["swaps"])
    )
    for failure in summary["failures"]:
        console.print(f"  failed turn: {failure}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    swaps_ok = all(s["ok"] for s in summary["swaps"])
    return 0 if summary["turns_failed"] == 0 and swaps_ok else 1


def cmd_swap_bench(args: argparse.Namespace) -> int:
    return bench_swap(
        ProjectLayout(),
        other=Path(args.other) if args.other else None,
        swaps=args.swaps,
        pause=args.pause,
        customers=args.customers,
        out=Path(args.out),
        console=Console(),
    )


def register(bench: Any) -> None:
    swap = bench.add_parser("ops-swap", help="chat through the gateway while PUT /model swaps models; 0 failed turns")
    swap.add_argument("--other", default=None, help="the model to swap with (default: the newest other cached one)")
    swap.add_argument("--swaps", type=int, default=6)
    swap.add_argument("--pause", type=float, default=10.0, help="seconds between swaps (and before the first)")
    swap.add_argument("--customers", type=int, default=4, help="customers chatting at once, back to back")
    swap.add_argument("--out", default="reports/ops/swap-bench.json")
    swap.set_defaults(handler=cmd_swap_bench)
