"""CLI: `bankbot cluster run` — the cluster profile on this machine (registered by bankbot.cli)."""

from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from bankbot.layout import ProjectLayout
from bankcore.settings import Settings

if TYPE_CHECKING:
    from bankbot.cluster import Cluster

console = Console(soft_wrap=True)


def register(commands: Any) -> None:
    cluster = commands.add_parser("cluster", help="several instances of every process on PostgreSQL, Redis, RabbitMQ")
    group = cluster.add_subparsers(dest="cluster_command", required=True)
    run = group.add_parser(
        "run",
        help="start the engines, nginx and the instances; Ctrl-C stops them all",
        description="Start PostgreSQL, Redis, RabbitMQ, nginx and N instances of every process (docs/cluster.md).",
    )
    run.add_argument("--rasa", type=int, default=2, help="Rasa servers (default 2)")
    run.add_argument("--actions", type=int, default=2, help="action servers (default 2)")
    run.add_argument("--gateways", type=int, default=2, help="channel gateways behind nginx (default 2)")
    run.add_argument("--schedulers", type=int, default=2, help="reminder scheduler workers (default 2)")
    run.add_argument("--relays", type=int, default=1, help="event relay consumers (default 1)")
    run.add_argument("--port", type=int, default=None, help="nginx's public port (default BANKBOT_GATEWAY_PORT, 8080)")
    run.add_argument("--root", type=Path, default=None, help="engines' data and logs (default var/cluster)")
    run.add_argument(
        "--no-restart", action="store_true", help="stop the cluster when an instance exits (default: start it again)"
    )
    run.set_defaults(handler=cmd_cluster_run)


def cmd_cluster_run(args: argparse.Namespace) -> int:
    # Ctrl-C must stop everything even when we were started with SIGINT ignored (a background job of a
    # non-interactive shell inherits that, and Python then leaves it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)

    from bankbot.cluster import DEFAULT_ROOT, Cluster, ClusterSize
    from bankbot.foresight_demo import ensure_demo_model
    from bankbot.training import ensure_trained

    layout = ProjectLayout()
    settings = Settings.from_env()
    try:
        size = ClusterSize(
            rasa=args.rasa, actions=args.actions, gateways=args.gateways, schedulers=args.schedulers, relays=args.relays
        )
    except ValueError as error:
        console.print(f"[red]{error}[/]")
        return 2
    model = ensure_trained(layout)
    env = dict(settings.extra)
    if "BANKBOT_FORESIGHT_MODEL_DIR" not in env:
        # No model of the bank's own: the demo one, trained on the simulator once and cached.
        env["BANKBOT_FORESIGHT_MODEL_DIR"] = str(ensure_demo_model(layout))
    cluster = Cluster(
        layout,
        model,
        root=args.root or DEFAULT_ROOT,
        size=size,
        env=env,
        public_port=args.port or settings.gateway_port,
        log=console.print,
    )
    console.print(
        f"starting PostgreSQL, Redis, RabbitMQ, nginx, {size.rasa} Rasa servers (about a minute), "
        f"{size.actions} action servers, {size.gateways} gateways, {size.schedulers} scheduler workers..."
    )
    try:
        cluster.start()
        _print_cluster(cluster)
        return _supervise(cluster, restart=not args.no_restart)
    except KeyboardInterrupt:
        console.print("stopping...")
        return 0
    finally:
        cluster.stop()


def _print_cluster(cluster: Cluster) -> None:
    nginx, postgres, redis, rabbitmq = cluster.nginx, cluster.postgres, cluster.redis, cluster.rabbitmq
    assert nginx is not None and postgres is not None and redis is not None and rabbitmq is not None
    rows: list[tuple[str, str, str, str]] = []
    for name in cluster.names():
        url = cluster.url(name) if cluster.services[name].ready_url else "-"
        rows.append((name, str(cluster.pid(name)), url, str(cluster.log_dir / f"{name}.out")))
    rows += [
        ("nginx", str(nginx.pid), cluster.public_url, str(nginx.access_log)),
        ("nginx actions", "-", cluster.action_url, str(nginx.error_log)),
        ("postgres", str(postgres.pid), f"127.0.0.1:{postgres.port}", str(postgres.log_path)),
        ("redis", str(redis.pid), f"127.0.0.1:{redis.port}", str(redis.log_path)),
        ("rabbitmq", str(rabbitmq.pid), f"127.0.0.1:{rabbitmq.port}", str(rabbitmq.log_path)),
    ]
    # Plain columns rather than a table: the paths must survive a narrow terminal or a log file.
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    console.print(f"cluster under {cluster.root}:", highlight=False)
    for row in rows:
        console.print(
            "  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3],
            highlight=False,
            markup=False,
        )
    timings = ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in cluster.timings.items())
    console.print(f"started in {timings}")
    console.print(f"[bold green]ready[/]: web chat at {cluster.public_url}/webchat/ (demo customers C001-C004)")
    console.print(f"terminal chat: .venv/bin/bankbot shell --gateway {cluster.public_url} · Ctrl-C stops everything")


def _supervise(cluster: Cluster, *, restart: bool) -> int:
    """Watch the instances: one that exits is started again (as a process supervisor would), or, with
    `restart` off, the cluster stops with its exit code."""
    while True:
        for name, code in list(cluster.exited()):
            if not restart:
                console.print(f"[red]{name} stopped (exit {code}); stopping the others[/]")
                return code or 1
            console.print(f"[yellow]{name} exited with {code}; starting it again[/]")
            try:
                cluster.restart(name)
            except (RuntimeError, TimeoutError) as error:
                console.print(f"[red]{name} did not come back: {error}; see {cluster.log_dir / f'{name}.out'}[/]")
                return 1
            console.print(f"{name} is back (pid {cluster.pid(name)})")
        time.sleep(1.0)
