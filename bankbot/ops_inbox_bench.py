"""The ops console's inbox at scale: 100,000 customer messages in the tracker store, pages rendered over HTTP.

A tracker store is filled the way Rasa fills it (its `events` table and sender index; each customer message is a
`user` event followed by the bot's action, its `bot` reply and `action_listen`), with Chinese texts taken from
the project's NLU examples (some carrying card numbers and one-time codes, which the inbox must mask), spread
over four channels, thirty days and a realistic mix of intents and confidences. The gateway runs as its own
process (`python -m channels`, as deployed); an ops member signs in over HTTP and the bench times:

1. the first inbox page, which copies all messages into the indexed `ops_inbox` table (the one-time sync);
2. inbox pages under several filters, first and deep pages (each repeated; p50/p95/max of the full response);
3. the first page after 1,000 more messages arrived (the incremental sync in the request);
4. the dashboard over 14 and 30 days, all channels and one, and the testers' list of conversations.

The bar: every inbox page's p95 under 1 s. Figures go to stdout and `--out` (JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import re
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from aiohttp import ClientSession, CookieJar
from rich.console import Console
from rich.table import Table

from bankbot.layout import ProjectLayout, subprocess_env
from bankbot.stack import bench_env
from bankbot.turn_bench import percentile
from bankcore import ops_accounts
from bankcore.database import make_engine, make_session_factory, migrate, unit_of_work
from bankcore.settings import Settings
from channels.ops.nlu_files import NluData

console = Console(soft_wrap=True)

PASSWORD = "bench password 1234"
BAR_SECONDS = 1.0
CHANNELS = (("webchat", 0.45), ("wecom", 0.25), ("miniprogram", 0.2), ("ivr", 0.1))
_PREFIXES = ("", "", "", "你好，", "请问", "麻烦问下，", "喂，", "我想问一下", "帮我", "那个")
_SUFFIXES = ("", "", "", "。", "？", "，谢谢", "，急", "啊", "呢", "，麻烦快点")
_SECRETS = ("我的验证码是{code}", "卡号{card}", "验证码{code}，", "密码是{code}")
_FALLBACK_TEXTS = (
    "那个东西怎么弄",
    "你们这个太难用了",
    "我昨天说的那个事呢",
    "嗯嗯",
    "啥意思",
    "不是这个",
    "我找你们经理",
    "这个月怎么又扣了",
    "刚才那个不对",
    "就那个",
)
# Rasa 3.6's SQLTrackerStore table (rasa/core/tracker_store.py, SQLEvent), with its index on sender_id.
_TRACKER = sa.MetaData()
EVENTS = sa.Table(
    "events",
    _TRACKER,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("sender_id", sa.String(255), nullable=False, index=True),
    sa.Column("type_name", sa.String(255), nullable=False),
    sa.Column("timestamp", sa.Float),
    sa.Column("intent_name", sa.String(255)),
    sa.Column("action_name", sa.String(255)),
    sa.Column("data", sa.Text),
)


@dataclass(frozen=True)
class Timing:
    name: str
    path: str
    requests: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    bytes: int
    inbox: bool


def _examples(root: Path) -> list[tuple[str, str]]:
    data = NluData(root / "nlu_data")
    found = [(e.intent, e.plain) for e in data.examples() if e.plain]
    if not found:
        raise SystemExit("no NLU examples found under nlu_data/")
    return found


def _message(rng: random.Random, examples: Sequence[tuple[str, str]]) -> tuple[str, str, float]:
    """A customer message: its text, the intent Rasa gave it, and the confidence."""
    if rng.random() < 0.08:
        return rng.choice(_FALLBACK_TEXTS), "nlu_fallback", rng.uniform(0.1, 0.45)
    intent, text = rng.choice(examples)
    text = rng.choice(_PREFIXES) + text + rng.choice(_SUFFIXES)
    if rng.random() < 0.03:
        secret = rng.choice(_SECRETS).format(
            code=f"{rng.randrange(10**6):06d}", card="6222" + "".join(rng.choice("0123456789") for _ in range(15))
        )
        text = secret + text
    # Most answers are confident; a tail is not (the inbox's review queue).
    confidence = min(0.999, max(0.3, rng.betavariate(8, 1.4)))
    return text, intent, confidence


def fill_tracker(url: str, messages: int, *, seed: int, start_id: int = 1, days: int = 30) -> int:
    """Append `messages` customer turns (4 events each) to Rasa's SQL tracker store at `url`; the next id."""
    rng = random.Random(seed)
    examples = _examples(ProjectLayout().root)
    names = [name for name, _ in CHANNELS]
    weights = [weight for _, weight in CHANNELS]
    conversations = max(1, messages // 8)
    end = time.time()
    rows: list[tuple[Any, ...]] = []
    event_id = start_id
    engine = make_engine(url)
    _TRACKER.create_all(engine)
    columns = [column.name for column in EVENTS.columns]
    with engine.begin() as db:
        times = sorted(end - rng.uniform(0, days * 86400) for _ in range(messages))
        for stamp in times:
            channel = rng.choices(names, weights)[0]
            sender = f"{channel}:B{rng.randrange(conversations):06d}"
            text, intent, confidence = _message(rng, examples)
            user = {
                "event": "user",
                "timestamp": stamp,
                "text": text,
                "parse_data": {
                    "intent": {"name": intent, "confidence": confidence},
                    "entities": [],
                    "text": text,
                },
                "input_channel": "rest",
                "metadata": {"channel": channel, "customer_id": sender.split(":")[1]},
            }
            action = "action_default_fallback" if intent == "nlu_fallback" else f"utter_{intent}"
            rows += [
                (event_id, sender, "user", stamp, intent, None, json.dumps(user, ensure_ascii=False)),
                (event_id + 1, sender, "action", stamp + 0.05, None, action, json.dumps({"event": "action"})),
                (event_id + 2, sender, "bot", stamp + 0.06, None, None, json.dumps({"event": "bot", "text": "好的"})),
                (event_id + 3, sender, "action", stamp + 0.07, None, "action_listen", json.dumps({"event": "action"})),
            ]
            event_id += 4
            if len(rows) >= 20000:
                db.execute(EVENTS.insert(), [dict(zip(columns, row, strict=True)) for row in rows])
                rows.clear()
        if rows:
            db.execute(EVENTS.insert(), [dict(zip(columns, row, strict=True)) for row in rows])
    engine.dispose()
    return event_id


def _start_gateway(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    layout = ProjectLayout()
    handle = open(log, "wb")  # noqa: SIM115 (the child's log, closed with the child)
    process = subprocess.Popen(
        [str(layout.python), "-m", "channels"],
        cwd=layout.root,
        env=subprocess_env(env),
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    handle.close()
    return process


async def _wait_ready(http: ClientSession, base: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the gateway exited with {process.returncode}")
        try:
            # /readyz would say 503 (no Rasa here): the sign-in page answering is what matters.
            async with http.get(f"{base}/ops/login") as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit("the gateway did not start")


async def _get(http: ClientSession, url: str) -> tuple[float, int, str]:
    started = time.perf_counter()
    async with http.get(url, allow_redirects=False) as response:
        body = await response.text()
        if response.status != 200:
            raise SystemExit(f"GET {url}: HTTP {response.status}: {body[:300]}")
    return time.perf_counter() - started, len(body.encode()), body


async def _time(
    http: ClientSession, base: str, name: str, path: str, repeats: int, *, inbox: bool = True
) -> tuple[Timing, str]:
    samples, size, body = [], 0, ""
    for _ in range(repeats):
        seconds, size, body = await _get(http, base + path)
        samples.append(seconds * 1000)
    timing = Timing(
        name,
        path,
        repeats,
        round(percentile(samples, 0.5), 1),
        round(percentile(samples, 0.95), 1),
        round(max(samples), 1),
        size,
        inbox,
    )
    return timing, body


def _total(body: str) -> int:
    match = re.search(r"待审消息（(\d+) 条）", body)
    if match is None:
        raise SystemExit("the inbox page did not say how many messages match")
    return int(match.group(1))


async def _measure(base: str, repeats: int, tracker: str, next_id: int, seed: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    # unsafe=True: keep cookies of an IP address host (the gateway on 127.0.0.1).
    async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:
        login = await http.post(
            f"{base}/ops/login", data={"username": "bench", "password": PASSWORD}, allow_redirects=False
        )
        if login.status != 303:
            raise SystemExit(f"sign-in failed: HTTP {login.status}")
        seconds, _, body = await _get(http, f"{base}/ops/inbox")
        result["first_page_with_sync_s"] = round(seconds, 2)
        total = _total(body)
        result["new_messages"] = total
        today = dt.datetime.now(dt.UTC).date()
        week = f"since={today - dt.timedelta(days=6)}&until={today}"
        deep = max(0, total - 50)
        _, _, wecom_body = await _get(http, f"{base}/ops/inbox?channel=wecom")
        wecom_deep = max(0, _total(wecom_body) - 50)
        cases = [
            ("first page (all channels, fallbacks first)", "/ops/inbox"),
            ("page 2", "/ops/inbox?status=new&offset=50"),
            ("middle page", f"/ops/inbox?status=new&offset={deep // 2 // 50 * 50}"),
            ("last page", f"/ops/inbox?status=new&offset={deep}"),
            ("one channel (wecom)", "/ops/inbox?channel=wecom"),
            ("one channel, last page", f"/ops/inbox?channel=wecom&offset={wecom_deep}"),
            ("last 7 days", f"/ops/inbox?{week}&status=new"),
            ("one channel, last 7 days, page 10", f"/ops/inbox?channel=webchat&{week}&offset=450"),
            ("reviewed (empty status)", "/ops/inbox?status=confirmed"),
        ]
        timings = []
        for name, path in cases:
            timing, _ = await _time(http, base, name, path, repeats)
            timings.append(timing)
        # More messages arrive: the next page copies them first.
        fill_tracker(tracker, 1000, seed=seed + 1, start_id=next_id, days=1)
        seconds, _, body = await _get(http, f"{base}/ops/inbox")
        result["first_page_after_1000_new_s"] = round(seconds, 3)
        result["new_messages_after"] = _total(body)
        for name, path in (
            ("dashboard, 14 days", "/ops/dashboard"),
            ("dashboard, 30 days", f"/ops/dashboard?since={today - dt.timedelta(days=29)}&until={today}"),
            ("dashboard, 30 days, one channel", f"/ops/dashboard?channel=wecom&since={today - dt.timedelta(days=29)}"),
            ("dashboard, 1 day (hourly)", f"/ops/dashboard?since={today}&until={today}"),
            ("conversations to save as stories", "/ops/stories/conversations"),
            ("conversations, one channel, page 100", "/ops/stories/conversations?channel=webchat&offset=4950"),
        ):
            timing, _ = await _time(http, base, name, path, max(3, repeats // 2), inbox=False)
            timings.append(timing)
        result["timings"] = [asdict(t) for t in timings]
    return result


def run_bench(
    messages: int, repeats: int, seed: int, out: Path | None, keep: Path | None, *, database_url: str | None = None
) -> dict[str, Any]:
    """The bench on SQLite under a work folder, or on `database_url` (PostgreSQL: bank and tracker store there)."""
    work = keep or Path(tempfile.mkdtemp(prefix="bankbot-ops-inbox-"))
    var_dir = work / "var"
    var_dir.mkdir(parents=True, exist_ok=True)
    env = bench_env(var_dir, **({"BANKBOT_DATABASE_URL": database_url} if database_url else {}))
    migrate(env["BANKBOT_DATABASE_URL"])
    engine = make_engine(env["BANKBOT_DATABASE_URL"])
    with unit_of_work(make_session_factory(engine)) as session:
        ops_accounts.add_user(session, "bench", PASSWORD, "ops", dt.datetime.now(dt.UTC))
    engine.dispose()
    tracker = Settings.from_env(env).tracker_store_url
    started = time.monotonic()
    next_id = fill_tracker(tracker, messages, seed=seed)
    fill_seconds = time.monotonic() - started
    console.print(f"tracker store: {messages:,} customer messages ({next_id - 1:,} events) in {fill_seconds:.1f} s")
    process = _start_gateway(env, work / "gateway.log")
    base = f"http://127.0.0.1:{env['BANKBOT_GATEWAY_PORT']}"

    async def main() -> dict[str, Any]:
        async with ClientSession() as http:
            await _wait_ready(http, base, process)
        return await _measure(base, repeats, tracker, next_id, seed)

    try:
        result = asyncio.run(main())
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
    result.update(
        messages=messages,
        tracker_events=next_id - 1,
        repeats=repeats,
        seed=seed,
        machine=f"{os.cpu_count()} CPUs",
        database="PostgreSQL (bank and tracker store)" if database_url else "SQLite (bank and tracker store)",
        bar_ms=BAR_SECONDS * 1000,
    )
    inbox_p95 = max(t["p95_ms"] for t in result["timings"] if t["inbox"])
    result["inbox_worst_p95_ms"] = inbox_p95
    result["passed"] = inbox_p95 < BAR_SECONDS * 1000
    _print(result)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
        console.print(f"written to {out}")
    return result


def _print(result: dict[str, Any]) -> None:
    console.print(
        f"first inbox page, syncing {result['messages']:,} messages into ops_inbox: "
        f"{result['first_page_with_sync_s']} s"
        f" · after 1,000 more: {result['first_page_after_1000_new_s'] * 1000:.0f} ms"
    )
    table = Table(
        "page", "requests", "p50 ms", "p95 ms", "max ms", "KiB", title=f"ops console at {result['messages']:,} messages"
    )
    for t in result["timings"]:
        table.add_row(
            t["name"],
            str(t["requests"]),
            f"{t['p50_ms']:.1f}",
            f"{t['p95_ms']:.1f}",
            f"{t['max_ms']:.1f}",
            f"{t['bytes'] / 1024:.0f}",
        )
    console.print(table)
    verdict = "[green]PASS[/]" if result["passed"] else "[red]FAIL[/]"
    console.print(f"{verdict}: worst inbox p95 {result['inbox_worst_p95_ms']:.1f} ms (bar {result['bar_ms']:.0f} ms)")


def register(bench: Any) -> None:
    parser = bench.add_parser("ops-inbox", help="the ops inbox at 100,000 messages: page render p50/p95 over HTTP")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=20, help="requests per page")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("reports/ops/inbox-bench.json"))
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and leave it (default: temp)")
    parser.add_argument(
        "--postgres", action="store_true", help="on a throwaway PostgreSQL (Debian's package) instead of SQLite"
    )
    parser.set_defaults(handler=cmd_bench_ops_inbox)


def cmd_bench_ops_inbox(args: argparse.Namespace) -> int:
    if not args.postgres:
        result = run_bench(args.messages, args.repeats, args.seed, args.out, args.keep)
        return 0 if result["passed"] else 1
    from bankbot.engines.postgres_server import PostgresServer

    # A throwaway server from Debian's binaries (as the tests and the reminders bench use).
    server = PostgresServer().start()
    try:
        url = server.create_database("ops_inbox_bench")
        result = run_bench(args.messages, args.repeats, args.seed, args.out, args.keep, database_url=url)
    finally:
        server.stop()
    return 0 if result["passed"] else 1
