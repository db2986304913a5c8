"""WeChat Work callbacks under load: acknowledgement time, throughput, reply latency, duplicates under retry storms.

The gateway runs as its own process (as deployed), with Rasa and the action server, or with `--fake-rasa` against
a stand-in that answers one turn at a time after a fixed service time (a saturated Rasa, without its cost
varying). The WeCom platform is played in this process by the simulator the tests use, which also counts every
`message/send`. Each simulated user is bound to a customer of their own (so conversations do not queue behind
each other's tracker lock) and goes through three phases:

1. conversation: send a message, wait for the reply, think, send the next (closed loop);
2. burst: send `--burst` messages back to back without waiting (the callback throughput; Rasa is busiest);
3. retry storm: send one message and `--retry-storm` identical copies of its callback at once, as WeCom does
   when it thinks a callback went unanswered, while the burst's backlog is still being worked off.

Then it waits until every message is answered and every reply sent, and reads from the gateway's database how
long each message took from its acknowledgement to its first reply accepted by the platform. Duplicates are
counted three ways: replies the platform received beyond what the gateway's outbox holds, Rasa turns beyond the
messages sent (from the tracker store, or the stand-in's count), and inbox rows beyond the distinct MsgIds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, web
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from bankbot.layout import ProjectLayout
from bankbot.stack import Stack, bench_env, free_port
from bankbot.turn_bench import percentile
from bankbot.wecom_load import WARMUP_USER, LoadConfig, LoadResult
from channels.platform_simulators.wecom import WeComSimulator

console = Console(soft_wrap=True)

CORP_ID = "wwbench00000000001"
AGENT_ID = 1000002
BENCH_CUSTOMER_PREFIX = "B"


def register(bench: Any) -> None:
    parser = bench.add_parser("wecom", help="WeChat Work callbacks: ack and reply latency, throughput, duplicates")
    parser.add_argument("--users", type=int, default=200, help="concurrent simulated users")
    parser.add_argument("--messages", type=int, default=2, help="closed-loop messages per user")
    parser.add_argument("--burst", type=int, default=2, help="back-to-back messages per user")
    parser.add_argument("--retry-storm", type=int, default=3, help="identical copies of one callback per user")
    parser.add_argument("--think-ms", type=float, default=1000.0, help="mean pause between closed-loop messages")
    parser.add_argument("--platform-ms", type=float, default=50.0, help="the simulated platform API's latency")
    parser.add_argument("--fake-rasa", action="store_true", help="a stand-in for Rasa instead of the real stack")
    parser.add_argument("--rasa-ms", type=float, default=130.0, help="the stand-in's service time per turn")
    parser.add_argument("--drain-timeout", type=float, default=900.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("reports/wecom/bench.json"))
    parser.set_defaults(handler=cmd_bench_wecom)


def cmd_bench_wecom(args: argparse.Namespace) -> int:
    config = BenchConfig(
        users=args.users,
        messages=args.messages,
        burst=args.burst,
        retry_storm=args.retry_storm,
        think_s=args.think_ms / 1000,
        platform_s=args.platform_ms / 1000,
        fake_rasa=args.fake_rasa,
        rasa_s=args.rasa_ms / 1000,
        drain_timeout_s=args.drain_timeout,
        seed=args.seed,
    )
    result = run_bench(ProjectLayout(), config)
    print_result(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    console.print(f"written to {args.out}")
    return 0 if result["verdict"]["ok"] else 1


@dataclass(frozen=True)
class BenchConfig:
    users: int = 200
    messages: int = 2
    burst: int = 2
    retry_storm: int = 3
    think_s: float = 1.0
    platform_s: float = 0.05
    fake_rasa: bool = False
    rasa_s: float = 0.13
    drain_timeout_s: float = 900.0
    seed: int = 1


def bench_users(count: int) -> list[tuple[str, str]]:
    """(WeCom userid, customer id) of each simulated user."""
    return [(f"bench-u{index:04d}", f"{BENCH_CUSTOMER_PREFIX}{index:04d}") for index in range(1, count + 1)]


def bench_bank_document(users: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """A sandbox document with one customer per simulated user, each with a debit account, card and history."""
    customers = []
    for index, (userid, customer_id) in enumerate(users, start=1):
        account_id = f"BA{index:05d}"
        last4 = f"{(index * 37) % 10000:04d}"
        customers.append(
            {
                "id": customer_id,
                "name": f"测试客户{index}",
                "surname": "测",
                "title": "先生",
                "phone": f"1890000{index:04d}",
                "timezone": "Asia/Shanghai",
                "pin": "246810",
                "identities": [{"channel": "wecom", "external_id": userid}],
                "accounts": [
                    {
                        "id": account_id,
                        "kind": "debit",
                        "name": "借记卡账户",
                        "last4": last4,
                        "balance": f"{1000 + index * 13}.00",
                        "opened_at": "2020-01-02T09:00:00+08:00",
                        "history": [
                            {"at": "now-9d", "amount": "8000.00", "description": "工资", "counterparty": "示范公司"},
                            {"at": "now-2d", "amount": "-35.50", "description": "餐饮", "counterparty": "便利店"},
                        ],
                    }
                ],
                "cards": [
                    {
                        "id": f"BK{index:05d}",
                        "account_id": account_id,
                        "last4": last4,
                        "kind": "debit",
                        "status": "active",
                        "expiry": "2030-01-31",
                    }
                ],
            }
        )
    return {"version": 1, "description": "wecom bench customers", "customers": customers}


class ObservedWeCom(WeComSimulator):
    """The WeCom simulator, also waking whoever waits for a user's next reply."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.replies_to: Counter[str] = Counter()
        self._seen = 0
        self._arrived = asyncio.Condition()

    async def _send(self, request: web.Request) -> web.Response:
        response = await super()._send(request)
        if len(self.sent) > self._seen:
            for record in self.sent[self._seen :]:
                for user in record["delivered_to"]:
                    self.replies_to[user] += 1
            self._seen = len(self.sent)
            async with self._arrived:
                self._arrived.notify_all()
        return response

    def _routes(self) -> list[web.RouteDef]:
        return [*super()._routes(), web.get("/bench/replies", self._bench_replies)]

    async def _bench_replies(self, request: web.Request) -> web.Response:
        """Long-poll for the load generator: the replies delivered to `user`, once there are `at_least`."""
        user = request.query["user"]
        at_least = int(request.query.get("at_least", "0"))
        timeout_s = float(request.query.get("timeout", "0"))
        if self.replies_to[user] < at_least and timeout_s > 0:
            async with self._arrived:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait_for(lambda: self.replies_to[user] >= at_least), timeout_s)
        return web.json_response({"count": self.replies_to[user]})


@dataclass
class StandInRasa:
    """Rasa's REST channel answered one turn at a time after `service_s`: an echo, counted per sender."""

    service_s: float
    turns: Counter[str] = field(default_factory=Counter)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/webhooks/rest/webhook", self._webhook)
        app.router.add_get("/status", self._status)
        return app

    async def _webhook(self, request: web.Request) -> web.Response:
        body = await request.json()
        sender = str(body.get("sender"))
        text = str(body.get("message") or "")
        async with self._lock:
            await asyncio.sleep(self.service_s)
        if not text.startswith("/"):
            self.turns[sender] += 1
        return web.json_response([{"recipient_id": sender, "text": f"收到：{text}"}])

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response({"model_file": "stand-in", "model_id": "stand-in", "num_active_training_jobs": 0})


async def _generate(config: LoadConfig, work_dir: Path, layout: ProjectLayout) -> LoadResult:
    """Runs the simulated users in a process of their own (see bankbot.wecom_load)."""
    config_path, result_path = work_dir / "load-config.json", work_dir / "load-result.json"
    config_path.write_text(json.dumps(asdict(config)))
    process = await asyncio.create_subprocess_exec(
        str(layout.python), "-m", "bankbot.wecom_load", str(config_path), str(result_path), cwd=layout.root
    )
    if await process.wait() != 0:
        raise RuntimeError(f"the load generator exited with {process.returncode}")
    return LoadResult.from_json(json.loads(result_path.read_text()))


async def _gateway_ack_histogram(gateway_url: str) -> dict[str, float]:
    """The gateway's own acknowledgement-time histogram for WeCom (from /metrics): count and upper bounds."""
    async with ClientSession() as http, http.get(f"{gateway_url}/metrics") as response:
        text = await response.text()
    buckets: list[tuple[float, float]] = []
    for family in text_string_to_metric_families(text):
        if family.name != "bankbot_gateway_callback_ack_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket") and sample.labels.get("channel") == "wecom":
                buckets.append((float(sample.labels["le"]), float(sample.value)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0.0

    def bound(q: float) -> float:
        for upper, count in buckets:
            if total and count >= q * total:
                return upper * 1000
        return float("inf")

    return {"n": total, "p50_at_most_ms": bound(0.5), "p95_at_most_ms": bound(0.95), "p99_at_most_ms": bound(0.99)}


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return runner, f"http://127.0.0.1:{port}"


def _drained(factory: Any, expected: int) -> tuple[bool, dict[str, int]]:
    from sqlalchemy import func, select

    from bankcore.database import unit_of_work
    from bankcore.models import ChannelInboxMessage, ChannelOutboxMessage

    with unit_of_work(factory) as session:
        inbox = dict(
            session.execute(select(ChannelInboxMessage.status, func.count()).group_by(ChannelInboxMessage.status)).all()
        )
        outbox = dict(
            session.execute(
                select(ChannelOutboxMessage.status, func.count()).group_by(ChannelOutboxMessage.status)
            ).all()
        )
    settled = (
        sum(inbox.values()) >= expected and set(inbox) <= {"answered", "failed"} and set(outbox) <= {"sent", "failed"}
    )
    counts = {f"inbox_{k}": int(v) for k, v in inbox.items()} | {f"outbox_{k}": int(v) for k, v in outbox.items()}
    return settled, counts


def _reply_latencies(factory: Any, phases: dict[str, list[str]]) -> dict[str, list[float]]:
    """Per phase: ms from each message's acknowledgement to the platform accepting its first reply."""
    from sqlalchemy import func, select

    from bankcore.database import unit_of_work
    from bankcore.models import ChannelInboxMessage, ChannelOutboxMessage

    phase_of = {f"msg:{msg_id}": phase for phase, ids in phases.items() for msg_id in ids}
    result: dict[str, list[float]] = {phase: [] for phase in phases}
    with unit_of_work(factory) as session:
        rows = session.execute(
            select(
                ChannelInboxMessage.platform_msg_id,
                ChannelInboxMessage.received_at,
                func.min(ChannelOutboxMessage.sent_at),
            )
            .join(ChannelOutboxMessage, ChannelOutboxMessage.inbox_id == ChannelInboxMessage.id)
            .where(ChannelOutboxMessage.status == "sent")
            .group_by(ChannelInboxMessage.id)
        ).all()
    for msg_key, received_at, first_sent in rows:
        phase = phase_of.get(msg_key)
        if phase is None or first_sent is None:
            continue
        received = received_at if received_at.tzinfo else received_at.replace(tzinfo=first_sent.tzinfo)
        result[phase].append((first_sent - received).total_seconds() * 1000)
    return result


def _inbox_rows_per_msg_id(factory: Any) -> Counter[str]:
    from sqlalchemy import select

    from bankcore.database import unit_of_work
    from bankcore.models import ChannelInboxMessage

    with unit_of_work(factory) as session:
        return Counter(session.scalars(select(ChannelInboxMessage.platform_msg_id)).all())


def _outbox_sent(factory: Any) -> int:
    from sqlalchemy import func, select

    from bankcore.database import unit_of_work
    from bankcore.models import ChannelOutboxMessage

    with unit_of_work(factory) as session:
        return int(session.scalar(select(func.count()).where(ChannelOutboxMessage.status == "sent")) or 0)


def tracker_turns(tracker_db: Path, prefix: str) -> Counter[str]:
    """User turns (not /intent triggers) per conversation in Rasa's SQL tracker store, for senders with `prefix`."""
    turns: Counter[str] = Counter()
    with sqlite3.connect(f"file:{tracker_db}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            "SELECT sender_id, data FROM events WHERE type_name = 'user' AND sender_id LIKE ?", (prefix + "%",)
        ).fetchall()
    for sender, data in rows:
        text = str(json.loads(data).get("text") or "")
        if not text.startswith("/"):
            turns[sender] += 1
    return turns


def summarise(samples: Sequence[float]) -> dict[str, float]:
    if not samples:
        return {"n": 0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    return {
        "n": len(samples),
        "p50": percentile(samples, 0.5),
        "p95": percentile(samples, 0.95),
        "p99": percentile(samples, 0.99),
        "max": max(samples),
    }


def _wecom_env(api_base: str, token: str, aes_key: str, secret: str) -> dict[str, str]:
    return {
        "BANKBOT_WECOM_CORP_ID": CORP_ID,
        "BANKBOT_WECOM_TOKEN": token,
        "BANKBOT_WECOM_ENCODING_AES_KEY": aes_key,
        "BANKBOT_WECOM_SECRET": secret,
        "BANKBOT_WECOM_AGENT_ID": str(AGENT_ID),
        "BANKBOT_WECOM_API_BASE": api_base,
        # Simulated users send faster than people do; the per-user limit would count that as abuse.
        "BANKBOT_WECOM_RATE_LIMIT_PER_MINUTE": "0",
    }


def run_bench(layout: ProjectLayout, config: BenchConfig) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bankbot-wecom-bench-") as tmp:
        return asyncio.run(_run(layout, config, Path(tmp)))


async def _run(layout: ProjectLayout, config: BenchConfig, var_dir: Path) -> dict[str, Any]:
    from bankcore.database import make_engine, make_session_factory, migrate, unit_of_work
    from bankcore.sandbox import load_sandbox, seed_demo_if_empty
    from bankcore.settings import Settings

    token = secrets.token_hex(8)
    aes_key = base64.b64encode(os.urandom(32)).decode().rstrip("=")
    secret = secrets.token_urlsafe(24)
    simulator = ObservedWeCom(CORP_ID, secret, agent_id=AGENT_ID)
    simulator.latency_s = config.platform_s
    runners: list[web.AppRunner] = []
    sim_runner, sim_url = await _serve(simulator.app())
    runners.append(sim_runner)
    stand_in: StandInRasa | None = None
    extra = _wecom_env(sim_url, token, aes_key, secret)
    if config.fake_rasa:
        stand_in = StandInRasa(config.rasa_s)
        rasa_runner, rasa_url = await _serve(stand_in.app())
        runners.append(rasa_runner)
        extra["BANKBOT_RASA_URL"] = rasa_url
    env = bench_env(var_dir, **extra)
    settings = Settings.from_env(env)
    users = bench_users(config.users)
    migrate(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    with unit_of_work(factory) as session:
        seed_demo_if_empty(session, pin_key=settings.secret_key)
        load_sandbox(session, bench_bank_document(users), pin_key=settings.secret_key)
    if config.fake_rasa:
        stack = Stack(layout, env, model=Path("unused"), only=frozenset({"gateway"}))
    else:
        from bankbot.training import ensure_trained

        stack = Stack(layout, env, ensure_trained(layout))
    console.print(
        "starting " + ("the gateway (Rasa played by a stand-in)" if config.fake_rasa else "the stack") + "..."
    )
    await asyncio.to_thread(stack.start)
    gateway_url = f"http://{settings.gateway_host}:{settings.gateway_port}"
    load_config = LoadConfig(
        gateway_url=gateway_url,
        simulator_url=sim_url,
        token=token,
        encoding_aes_key=aes_key,
        corp_id=CORP_ID,
        agent_id=str(AGENT_ID),
        users=[userid for userid, _ in users],
        messages=config.messages,
        burst=config.burst,
        retry_storm=config.retry_storm,
        think_s=config.think_s,
        reply_timeout_s=config.drain_timeout_s,
        seed=config.seed,
    )
    try:
        console.print(
            f"{config.users} users: conversation ({config.messages} messages each), burst ({config.burst} each), "
            f"retry storm ({config.retry_storm} copies each)..."
        )
        sent = await _generate(load_config, var_dir, layout)
        expected = sum(len(ids) for ids in sent.msg_ids.values())
        drain_started = time.perf_counter()
        deadline = drain_started + config.drain_timeout_s
        settled, counts = await asyncio.to_thread(_drained, factory, expected)
        while not settled and time.perf_counter() < deadline:
            await asyncio.sleep(0.5)
            settled, counts = await asyncio.to_thread(_drained, factory, expected)
        await asyncio.sleep(max(0.5, 4 * config.platform_s))  # replies in flight to the simulator land
        drain_s = time.perf_counter() - drain_started
        latencies = await asyncio.to_thread(_reply_latencies, factory, sent.msg_ids)
        rows_per_id = await asyncio.to_thread(_inbox_rows_per_msg_id, factory)
        outbox_sent = await asyncio.to_thread(_outbox_sent, factory)
        gateway_ack = await _gateway_ack_histogram(gateway_url)
    finally:
        await asyncio.to_thread(stack.stop)
        for runner in runners:
            await runner.cleanup()
    turns = stand_in.turns if stand_in is not None else tracker_turns(settings.var_dir / "tracker.db", "wecom:")
    customer_of = dict(users) | {WARMUP_USER: "C001"}
    turn_surplus = sum(
        max(0, turns.get(f"wecom:{customer_of[user]}", 0) - sent) for user, sent in sent.per_user.items()
    )
    turn_shortfall = sum(
        max(0, sent - turns.get(f"wecom:{customer_of[user]}", 0)) for user, sent in sent.per_user.items()
    )
    return _result(
        gateway_ack,
        config,
        sent,
        latencies,
        counts,
        settled,
        drain_s,
        simulator,
        outbox_sent,
        rows_per_id,
        turn_surplus,
        turn_shortfall,
        expected,
    )


def _result(
    gateway_ack: dict[str, float],
    config: BenchConfig,
    sent: LoadResult,
    latencies: dict[str, list[float]],
    counts: dict[str, int],
    settled: bool,
    drain_s: float,
    simulator: ObservedWeCom,
    outbox_sent: int,
    rows_per_id: Counter[str],
    turn_surplus: int,
    turn_shortfall: int,
    expected: int,
) -> dict[str, Any]:
    measured = [phase for phase in sent.ack_ms if phase != "warmup"]
    all_ack = [ms for phase in measured for ms in sent.ack_ms[phase]]
    # The bar is set at 200 concurrent users, each with one callback in flight: the conversation and the burst.
    # The storm multiplies that by its copies and is there for the duplicates.
    user_ack = sent.ack_ms["conversation"] + sent.ack_ms["burst"]
    measured_messages = expected - len(sent.msg_ids["warmup"])
    callbacks_posted = sum(len(samples) for samples in sent.ack_ms.values())
    burst_callbacks = len(sent.ack_ms["burst"]) + len(sent.ack_ms["storm"])
    burst_s = sent.phase_s.get("burst", 0.0) + sent.phase_s.get("storm", 0.0)
    platform_replies = len(simulator.sent)
    duplicate_replies = max(0, platform_replies - outbox_sent)
    inbox_surplus = sum(count - 1 for count in rows_per_id.values() if count > 1)
    distinct = len(rows_per_id)
    result: dict[str, Any] = {
        "config": {
            "users": config.users,
            "messages": config.messages,
            "burst": config.burst,
            "retry_storm": config.retry_storm,
            "think_ms": config.think_s * 1000,
            "platform_ms": config.platform_s * 1000,
            "rasa": "stand-in" if config.fake_rasa else "rasa 3.6 + action server",
            "rasa_ms": config.rasa_s * 1000 if config.fake_rasa else None,
            "cpus": os.cpu_count(),
        },
        "ack_ms": {phase: summarise(sent.ack_ms[phase]) for phase in measured}
        | {"users (conversation + burst)": summarise(user_ack), "all": summarise(all_ack)},
        "gateway_ack": gateway_ack,
        "reply_ms": {phase: summarise(samples) for phase, samples in latencies.items() if phase != "warmup"},
        "throughput": {
            "callbacks_posted": callbacks_posted,
            "burst_callbacks_per_s": burst_callbacks / burst_s if burst_s else 0.0,
            "messages_answered_per_s": measured_messages / (sum(sent.phase_s.values()) + drain_s),
            "drain_s": drain_s,
        },
        "http_statuses": {str(k): v for k, v in sorted(sent.statuses.items())},
        "integrity": {
            "distinct_messages": expected,
            "inbox_rows": distinct,
            "lost_messages": max(0, expected - distinct) + turn_shortfall,
            "duplicate_replies": duplicate_replies + inbox_surplus,
            "duplicate_turns": turn_surplus,
            "platform_replies": platform_replies,
            "outbox_sent": outbox_sent,
            "settled": settled,
            "unanswered_waits": sent.unanswered_waits,
            **counts,
        },
    }
    integrity = result["integrity"]
    ack_p95 = result["ack_ms"]["users (conversation + burst)"]["p95"]
    ok = (
        settled
        and integrity["lost_messages"] == 0
        and integrity["duplicate_replies"] == 0
        and integrity["duplicate_turns"] == 0
        and set(result["http_statuses"]) == {"200"}
        and ack_p95 < 1000
    )
    result["verdict"] = {"ok": ok, "ack_p95_budget_ms": 1000}
    return result


def print_result(result: dict[str, Any]) -> None:
    config = result["config"]
    table = Table(
        "measure",
        "n",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        title=f"WeCom callbacks: {config['users']} users, Rasa = {config['rasa']}",
    )
    for name, block in (("ack", result["ack_ms"]), ("first reply after ack", result["reply_ms"])):
        for phase, row in block.items():
            table.add_row(
                f"{name} ({phase})",
                str(row["n"]),
                f"{row['p50']:.1f}",
                f"{row['p95']:.1f}",
                f"{row['p99']:.1f}",
                f"{row['max']:.1f}",
            )
    console.print(table)
    gateway = result["gateway_ack"]
    console.print(
        f"the gateway's own ack histogram ({gateway['n']:.0f} callbacks): p50 <= {gateway['p50_at_most_ms']:g} ms, "
        f"p95 <= {gateway['p95_at_most_ms']:g} ms, p99 <= {gateway['p99_at_most_ms']:g} ms"
    )
    throughput = result["throughput"]
    console.print(
        f"callbacks acknowledged in the burst: {throughput['burst_callbacks_per_s']:.0f}/s; "
        f"messages answered: {throughput['messages_answered_per_s']:.1f}/s (drain {throughput['drain_s']:.1f} s)"
    )
    integrity = result["integrity"]
    console.print(
        f"distinct messages {integrity['distinct_messages']}, lost {integrity['lost_messages']}, "
        f"duplicate replies {integrity['duplicate_replies']}, duplicate turns {integrity['duplicate_turns']}, "
        f"HTTP {result['http_statuses']}"
    )
    console.print("verdict: " + ("ok" if result["verdict"]["ok"] else "FAILED"))
