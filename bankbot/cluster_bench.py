"""`bankbot bench cluster`: the cluster under load (turns per second at p95 ≤ 500 ms with one and with two Rasa
servers) and under faults (processes killed, engines restarted, stopped and stalled while customers chat),
with the checker's counts. Figures go to docs/benchmarks.md (make bench-cluster).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from bankbot import cluster_load
from bankbot.cluster import Cluster, ClusterSize
from bankbot.layout import ProjectLayout
from bankbot.training import ensure_trained
from bankcore.database import make_engine, make_session_factory, unit_of_work
from bankcore.sandbox import load_sandbox

console = Console()
P95_BUDGET_S = 0.5


def percentile(samples: Sequence[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def load_customers(cluster: Cluster, count: int) -> tuple[Engine, list[str]]:
    """Adds `count` load customers to the cluster's bank; returns the bank engine and their ids."""
    assert cluster.settings is not None
    engine = make_engine(cluster.settings.database_url)
    with unit_of_work(make_session_factory(engine)) as session:
        load_sandbox(session, cluster_load.load_bank_document(count), pin_key=cluster.settings.secret_key)
    return engine, cluster_load.load_customer_ids(count)


def tracker_engine(cluster: Cluster) -> Engine:
    """Rasa's tracker store: the same PostgreSQL database as the bank in the cluster profile."""
    assert cluster.settings is not None
    return make_engine(cluster.settings.database_url)


# -- throughput ------------------------------------------------------------------------------------------


@dataclass
class Step:
    customers: int
    seconds: float
    turns: int
    turns_per_s: float
    p50_ms: float
    p95_ms: float
    resends: int
    unanswered: int


def run_step(cluster: Cluster, engine: Engine, customers: Sequence[str], seconds: float, seed: int) -> Step:
    config = cluster_load.LoadConfig(
        base_url=cluster.public_url, customers=customers, duration_s=seconds, retry_deadline_s=60.0, seed=seed
    )
    result = asyncio.run(cluster_load.play(config, engine))
    window = max(result.finished - result.started, 1e-9)
    answered = result.answered()
    first_try = [m.latency_s for m in answered if m.attempts == 1]
    return Step(
        customers=len(customers),
        seconds=round(window, 1),
        turns=len(answered),
        turns_per_s=round(len(answered) / window, 2),
        p50_ms=round(statistics.median(first_try) * 1000, 1) if first_try else float("nan"),
        p95_ms=round(percentile(first_try, 0.95) * 1000, 1),
        resends=sum(m.attempts - 1 for m in result.messages),
        unanswered=sum(1 for m in result.messages if m.outcome != "answered"),
    )


def throughput(
    layout: ProjectLayout, model: Path, rasa_counts: Sequence[int], levels: Sequence[int], seconds: float
) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for rasa in rasa_counts:
        with tempfile.TemporaryDirectory(prefix="bankbot-cluster-bench-") as tmp:
            cluster = Cluster(
                layout, model, root=Path(tmp), size=ClusterSize(rasa=rasa), env=_bench_env(), log=console.print
            )
            with cluster.start():
                engine, ids = load_customers(cluster, sum(levels) + 4)
                run_step(cluster, engine, ids[:4], 15.0, seed=0)  # warm-up: first turns load lazily
                offset = 4
                steps: list[Step] = []
                for level in levels:
                    step = run_step(cluster, engine, ids[offset : offset + level], seconds, seed=level)
                    offset += level
                    steps.append(step)
                    console.print(f"rasa={rasa} {asdict(step)}")
                within = [s for s in steps if s.p95_ms <= P95_BUDGET_S * 1000 and s.unanswered == 0]
                best = max(within, key=lambda s: s.turns_per_s) if within else None
                report[f"rasa_{rasa}"] = {
                    "steps": [asdict(s) for s in steps],
                    "best_turns_per_s_within_p95": best.turns_per_s if best else 0.0,
                    "best_step": asdict(best) if best else None,
                }
    one, two = report.get("rasa_1"), report.get("rasa_2")
    if one and two and one["best_turns_per_s_within_p95"]:
        report["ratio_two_to_one"] = round(two["best_turns_per_s_within_p95"] / one["best_turns_per_s_within_p95"], 2)
    return report


# -- faults ----------------------------------------------------------------------------------------------


@dataclass
class FaultLog:
    events: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def note(self, what: str, **extra: Any) -> None:
        entry = {"t": round(time.time() - self.started, 1), "fault": what, **extra}
        self.events.append(entry)
        console.print(f"[bold]fault[/bold] {entry}")


def fault_schedule(cluster: Cluster, log: FaultLog, gap_s: float, restart: bool) -> list[Callable[[], None]]:
    """The faults of the issue, one after another with `gap_s` of plain load between them."""

    def kill(name: str) -> Callable[[], None]:
        def act() -> None:
            cluster.kill(name, signal.SIGKILL)
            log.note(f"SIGKILL {name}")
            if restart:
                cluster.restart(name)
                log.note(f"{name} back")

        return act

    def restart_postgres() -> None:
        assert cluster.postgres is not None
        log.note("PostgreSQL restart")
        cluster.postgres.restart(mode="fast")
        log.note("PostgreSQL back")

    def stop_redis() -> None:
        assert cluster.redis is not None
        log.note("Redis stopped for 10 s")
        cluster.redis.restart(down_for=10.0)
        log.note("Redis back")

    def stall_rabbitmq() -> None:
        assert cluster.rabbitmq is not None
        log.note("RabbitMQ stalled for 10 s")
        cluster.rabbitmq.stall(10.0)
        log.note("RabbitMQ resumed")

    faults: list[Callable[[], None]] = [
        kill(cluster.names("rasa")[0]),
        kill(cluster.names("actions")[0]),
        kill(cluster.names("gateway")[0]),
        restart_postgres,
        stop_redis,
    ]
    if cluster.rabbitmq is not None:
        faults.append(stall_rabbitmq)
    return faults


def run_faults(
    cluster: Cluster,
    engine: Engine,
    customers: Sequence[str],
    *,
    gap_s: float,
    tail_s: float,
    restart: bool,
    think_s: float = 1.0,
) -> dict[str, Any]:
    """Customers chat while the faults happen; then each customer asks once more; then the checker."""
    log = FaultLog()
    done = threading.Event()

    def inject() -> None:
        try:
            time.sleep(gap_s)
            for fault in fault_schedule(cluster, log, gap_s, restart):
                fault()
                time.sleep(gap_s)
        except Exception as error:  # reported, and the run then fails its check
            log.note("fault injection failed", error=repr(error))
        finally:
            done.set()

    injector = threading.Thread(target=inject, name="faults", daemon=True)
    config = cluster_load.LoadConfig(
        base_url=cluster.public_url, customers=customers, think_s=think_s, retry_deadline_s=180.0, seed=7
    )

    async def load_until_faults_end() -> cluster_load.LoadResult:
        result = cluster_load.LoadResult(started=time.time())
        injector.start()
        rounds = 0
        while not done.is_set() or rounds == 0:
            rounds += 1
            part = await cluster_load.play(
                cluster_load.LoadConfig(**{**asdict(config), "conversations_per_customer": 1, "seed": rounds}),
                engine,
            )
            result.messages.extend(part.messages)
        await asyncio.sleep(0)
        tail = await cluster_load.play(
            cluster_load.LoadConfig(**{**asdict(config), "duration_s": tail_s, "seed": 99}), engine
        )
        result.messages.extend(tail.messages)
        # Every conversation can continue: one more question each.
        after = await cluster_load.play(
            cluster_load.LoadConfig(**{**asdict(config), "conversations_per_customer": 1, "scripts": ("balance",)}),
            engine,
        )
        result.messages.extend(after.messages)
        result.finished = time.time()
        return result

    result = asyncio.run(load_until_faults_end())
    injector.join(timeout=5)
    continued = [m for m in result.messages[-len(customers) :]]
    report = cluster_load.check(result, engine, tracker_engine(cluster), customers)
    return {
        "faults": log.events,
        "check": asdict(report),
        "ok": report.ok,
        "continued_after": sum(1 for m in continued if m.outcome == "answered"),
        "customers": len(customers),
        "seconds": round(result.finished - result.started, 1),
    }


def _bench_env() -> dict[str, str]:
    return {"BANKBOT_DEV_LOGIN": "1", "BANKBOT_WEBCHAT_RATE_LIMIT_PER_MINUTE": "0"}


def register(bench: Any) -> None:
    parser = bench.add_parser("cluster", help="the cluster: turns/s at p95 ≤ 500 ms with 1 and 2 Rasa servers; faults")
    parser.add_argument("--part", choices=("throughput", "faults", "all"), default="all")
    parser.add_argument("--rasa", default="1,2", help="Rasa server counts to compare (throughput)")
    parser.add_argument("--levels", default="2,4,8,16,24", help="concurrent customers per step (throughput)")
    parser.add_argument("--step-seconds", type=float, default=40.0)
    parser.add_argument("--customers", type=int, default=40, help="customers chatting during the fault run")
    parser.add_argument("--gap-seconds", type=float, default=10.0, help="plain load between faults")
    parser.add_argument("--out", type=Path, default=Path("reports/cluster/bench.json"))
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    layout = ProjectLayout()
    model = ensure_trained(layout)
    report: dict[str, Any] = {}
    if args.part in ("throughput", "all"):
        report["throughput"] = throughput(
            layout,
            model,
            [int(n) for n in args.rasa.split(",")],
            [int(n) for n in args.levels.split(",")],
            args.step_seconds,
        )
    if args.part in ("faults", "all"):
        with tempfile.TemporaryDirectory(prefix="bankbot-cluster-faults-") as tmp:
            cluster = Cluster(layout, model, root=Path(tmp), env=_bench_env(), log=console.print)
            with cluster.start():
                engine, ids = load_customers(cluster, args.customers)
                report["faults"] = run_faults(cluster, engine, ids, gap_s=args.gap_seconds, tail_s=20.0, restart=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
    _print(report)
    return 0 if report.get("faults", {}).get("ok", True) else 1


def _print(report: dict[str, Any]) -> None:
    for key, part in report.get("throughput", {}).items():
        if not isinstance(part, dict):
            continue
        table = Table("customers", "turns/s", "p50 ms", "p95 ms", "resends", "unanswered", title=f"throughput {key}")
        for step in part["steps"]:
            table.add_row(
                str(step["customers"]),
                f"{step['turns_per_s']:.2f}",
                f"{step['p50_ms']:.0f}",
                f"{step['p95_ms']:.0f}",
                str(step["resends"]),
                str(step["unanswered"]),
            )
        console.print(table)
        console.print(f"{key}: best turns/s with p95 ≤ 500 ms: {part['best_turns_per_s_within_p95']}")
    if "ratio_two_to_one" in report.get("throughput", {}):
        console.print(f"two Rasa servers / one: {report['throughput']['ratio_two_to_one']}")
    faults = report.get("faults")
    if faults:
        check = faults["check"]
        table = Table(
            "sent", "answered", "lost", "duplicated", "transfers double-executed", "resends", title="fault run"
        )
        table.add_row(
            str(check["sent"]),
            str(check["answered"]),
            str(check["lost"]),
            str(check["duplicated"]),
            str(check["transfers_double_executed"]),
            str(check["resends"]),
        )
        console.print(table)
        console.print(f"continued afterwards: {faults['continued_after']}/{faults['customers']}; ok={faults['ok']}")
