"""The `bankbot` command: train, run, shell, NLU checks, the sandbox bank and benchmarks."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session, sessionmaker

from bankbot.layout import ProjectLayout, subprocess_env
from bankcore.settings import Settings

console = Console()


def _open_bank(settings: Settings) -> sessionmaker[Session]:
    from bankcore.database import make_engine, make_session_factory, migrate

    migrate(settings.database_url)
    return make_session_factory(make_engine(settings.database_url))


def cmd_train(args: argparse.Namespace) -> int:
    from bankbot.training import ensure_trained

    path = ensure_trained(ProjectLayout(), force=args.force)
    console.print(f"model: {path}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import signal

    # Ctrl-C must stop everything even when we were started with SIGINT ignored (a background job of a
    # non-interactive shell inherits that, and Python then leaves it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)

    from bankbot.foresight_demo import ensure_demo_model
    from bankbot.stack import Stack, prepare_database
    from bankbot.training import ensure_trained

    layout = ProjectLayout()
    settings = Settings.from_env()
    model = ensure_trained(layout)
    # Migrate, seed the sandbox bank when empty, record today's core facts: once, before any process starts.
    if prepare_database(settings):
        console.print("sandbox bank seeded with the demo customers (C001-C004)")
    env = {k: v for k, v in settings.extra.items()}
    env.setdefault("BANKBOT_SECRET_KEY", settings.secret_key)
    # The phone line answers SIP calls on loopback unless told otherwise (BANKBOT_SIP_PORT=0 turns it off).
    env.setdefault("BANKBOT_SIP_PORT", "5060")
    if "BANKBOT_FORESIGHT_MODEL_DIR" not in env:
        # No model of the bank's own: the demo one, trained on the simulator once and cached.
        env["BANKBOT_FORESIGHT_MODEL_DIR"] = str(ensure_demo_model(layout))
    stack = Stack(layout, env, model)
    console.print("starting Rasa (about a minute), the action server and the gateway...")
    stack.start()
    base = f"http://{settings.gateway_host}:{settings.gateway_port}"
    console.print(f"[bold green]ready[/]: web chat at {base}/webchat/ (demo customers C001-C004)")
    if settings.vosk_model_path is not None:
        console.print(f"speech recognition (vosk-server protocol): ws://{settings.asr_host}:{settings.asr_port}")
    sip_port = int(env["BANKBOT_SIP_PORT"])
    if sip_port:
        console.print(f"phone line (SIP over UDP, no registration): sip:95588@{settings.sip_host}:{sip_port}")
    console.print("terminal chat: .venv/bin/bankbot shell --customer C001 · Ctrl-C stops everything")
    try:
        code = stack.wait()
        console.print(f"[red]a service stopped (exit {code}); stopping the others[/]")
        return code or 1
    except KeyboardInterrupt:
        console.print("stopping...")
        return 0
    finally:
        stack.stop()


def cmd_shell(args: argparse.Namespace) -> int:
    from bankbot.shell import run_shell

    settings = Settings.from_env()
    gateway = args.gateway or f"http://{settings.gateway_host}:{settings.gateway_port}"
    return run_shell(gateway, args.customer, console)


def cmd_nlu_check(args: argparse.Namespace) -> int:
    from bankbot.nlu_lint import lint_nlu, run_rasa_validate

    layout = ProjectLayout()
    issues = lint_nlu(layout.nlu_data, layout.domain, config_path=layout.config, project_root=layout.root)
    for issue in issues:
        colour = "red" if issue.level == "error" else "yellow"
        console.print(f"[{colour}]{issue.level}[/] {issue.code}: {issue.message} ({issue.file})")
    errors = sum(1 for issue in issues if issue.level == "error")
    console.print(f"project lint: {errors} errors, {len(issues) - errors} warnings")
    validate = run_rasa_validate(layout.root, layout.rasa_python)
    return 1 if errors or validate else 0


def cmd_nlu_bench(args: argparse.Namespace) -> int:
    from bankbot.nlu_bench import bench_nlu

    layout = ProjectLayout()
    bench_nlu(layout.root, layout.rasa_python, Path(args.out))
    return 0


def cmd_turns_bench(args: argparse.Namespace) -> int:
    from bankbot.turn_bench import bench_turns

    return bench_turns(ProjectLayout(), turns=args.turns, console=console)


def cmd_risk_latency_bench(args: argparse.Namespace) -> int:
    from bankbot.risk_latency import bench_risk_latency

    settings = Settings.from_env()
    model = Path(args.model) if args.model else None
    bench_risk_latency(
        decisions=args.decisions,
        rules_path=Path(args.rules) if args.rules else settings.risk_rules_path,
        model_dir=model,
        database_url=args.database_url,
        transfers_per_customer=args.transfers,
        events_per_customer=args.events,
        console=console,
    )
    return 0


def cmd_first_utterance_bench(args: argparse.Namespace) -> int:
    from bankbot.first_utterance import bench_first_utterance

    bench_first_utterance(Path(args.cases), Path(args.out))
    return 0


def cmd_sandbox_load(args: argparse.Namespace) -> int:
    from bankcore.database import unit_of_work
    from bankcore.errors import SandboxFormatError
    from bankcore.sandbox import load_sandbox

    settings = Settings.from_env()
    factory = _open_bank(settings)
    try:
        document = json.loads(Path(args.file).read_text(encoding="utf-8"))
        with unit_of_work(factory) as session:
            report = load_sandbox(session, document, pin_key=settings.secret_key)
    except (OSError, json.JSONDecodeError) as error:
        console.print(f"[red]cannot read {args.file}: {error}[/]")
        return 2
    except SandboxFormatError as error:
        console.print(f"[red]bad sandbox document: {error}[/]")
        return 2
    console.print(f"loaded: {report}")
    return 0


def cmd_sandbox_outbox(args: argparse.Namespace) -> int:
    from bankcore.database import unit_of_work
    from bankcore.sandbox import outbox

    factory = _open_bank(Settings.from_env())
    with unit_of_work(factory) as session:
        messages = outbox(session, args.customer_id)
    table = Table("sent at (UTC)", "phone", "text", title=f"SMS outbox of {args.customer_id}")
    for message in messages:
        table.add_row(f"{message.created_at:%Y-%m-%d %H:%M:%S}", message.phone, message.text)
    console.print(table)
    return 0


def cmd_test_stories(args: argparse.Namespace) -> int:
    from bankbot.training import ensure_trained

    layout = ProjectLayout()
    model = ensure_trained(layout)
    command = [
        str(layout.rasa_python),
        "-m",
        "rasa",
        "test",
        "core",
        "--stories",
        str(layout.test_stories),
        "--model",
        str(model),
        "--out",
        str(layout.root / "results"),
        "--fail-on-prediction-errors",
    ]
    return subprocess.run(command, cwd=layout.root, env=subprocess_env()).returncode


def cmd_db_migrate(args: argparse.Namespace) -> int:
    _open_bank(Settings.from_env())
    console.print("database schema is up to date")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bankbot", description="Mandarin remote-banking assistant")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train the Rasa model if bot/ or nlu_data/ changed")
    train.add_argument("--force", action="store_true", help="train even if a model for these inputs exists")
    train.set_defaults(handler=cmd_train)

    commands.add_parser("run", help="start Rasa, actions and gateway on this machine").set_defaults(handler=cmd_run)

    shell = commands.add_parser("shell", help="chat in the terminal as a demo customer (needs `make run`)")
    shell.add_argument("--customer", default="C001")
    shell.add_argument("--gateway", default=None, help="gateway base URL (default from settings)")
    shell.set_defaults(handler=cmd_shell)

    nlu = commands.add_parser("nlu", help="NLU data tools").add_subparsers(dest="nlu_command", required=True)
    nlu.add_parser("check", help="rasa data validate plus the project's lint").set_defaults(handler=cmd_nlu_check)

    sandbox = commands.add_parser("sandbox", help="the sandbox core bank").add_subparsers(
        dest="sandbox_command", required=True
    )
    load = sandbox.add_parser("load", help="load customers, accounts, cards... from a JSON file")
    load.add_argument("file")
    load.set_defaults(handler=cmd_sandbox_load)
    box = sandbox.add_parser("outbox", help="the SMS a customer was sent (one-time codes)")
    box.add_argument("customer_id")
    box.set_defaults(handler=cmd_sandbox_outbox)

    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_command", required=True)
    nlu_bench = bench.add_parser("nlu", help="held-out NLU accuracy over 3 seeds, reports/ written")
    nlu_bench.add_argument("--out", default="reports/nlu")
    nlu_bench.set_defaults(handler=cmd_nlu_bench)
    turns = bench.add_parser("turns", help="/model/parse and gateway turn latency, p50/p95")
    turns.add_argument("--turns", type=int, default=500)
    turns.set_defaults(handler=cmd_turns_bench)

    from bankbot import (
        asr_robustness,
        cluster_bench,
        cluster_cli,
        events_cli,
        foresight_data_cli,
        foresight_model_cli,
        model_swap_bench,
        models_cli,
        ops_inbox_bench,
        phone_bench,
        reminders_bench,
        reminders_cli,
        risk_cli,
        trackers_cli,
        voice_bench,
        voice_cli,
        wecom_bench,
    )

    events_cli.register(commands)
    cluster_cli.register(commands)
    risk_cli.register(commands)
    reminders_cli.register(commands)
    trackers_cli.register(commands)
    voice_cli.register(commands)
    models_cli.register(commands)
    voice_bench.register(bench)
    asr_robustness.register(bench)
    reminders_bench.register(bench)
    wecom_bench.register(bench)
    phone_bench.register(bench)
    ops_inbox_bench.register(bench)
    model_swap_bench.register(bench)
    cluster_bench.register(bench)
    foresight = commands.add_parser("foresight", help="predict why customers contact the bank").add_subparsers(
        dest="foresight_command", required=True
    )
    foresight_data_cli.register(foresight, bench)
    foresight_model_cli.register(foresight, bench)

    risk_latency = bench.add_parser("risk-latency", help="one risk decision end to end (reads, rules, score, audit)")
    risk_latency.add_argument("--decisions", type=int, default=2000)
    risk_latency.add_argument("--rules", default=None, help="rules file (default: BANKBOT_RISK_RULES)")
    risk_latency.add_argument("--model", default=None, help="a trained risk model directory")
    risk_latency.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    risk_latency.add_argument("--transfers", type=int, default=300, help="past transfers per customer")
    risk_latency.add_argument("--events", type=int, default=400, help="events per customer in the last week")
    risk_latency.set_defaults(handler=cmd_risk_latency_bench)
    first = bench.add_parser("first-utterance", help="ambiguous first utterances with and without the foresight prior")
    first.add_argument("--cases", default="tests/data/first_utterances.yml")
    first.add_argument("--out", default="reports/foresight")
    first.set_defaults(handler=cmd_first_utterance_bench)

    test = commands.add_parser("test", help="tester tools").add_subparsers(dest="test_command", required=True)
    test.add_parser("stories", help="rasa test core on bot/tests").set_defaults(handler=cmd_test_stories)

    ops = commands.add_parser("ops", help="the ops console").add_subparsers(dest="ops_command", required=True)
    add_user = ops.add_parser("add-user", help="create a console account (the password is asked for)")
    add_user.add_argument("username")
    add_user.add_argument("--role", choices=("viewer", "tester", "ops"), default="viewer")
    add_user.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add_user.set_defaults(handler=cmd_ops_add_user)

    db = commands.add_parser("db", help="database").add_subparsers(dest="db_command", required=True)
    db.add_parser("migrate", help="apply the schema migrations").set_defaults(handler=cmd_db_migrate)
    return parser


def cmd_ops_add_user(args: argparse.Namespace) -> int:
    import getpass
    from datetime import UTC, datetime

    from bankcore import ops_accounts
    from bankcore.database import make_engine, make_session_factory, migrate, unit_of_work

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            console.print("[red]the passwords differ[/]")
            return 1
    settings = Settings.from_env()
    migrate(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    try:
        with unit_of_work(factory) as session:
            member = ops_accounts.add_user(session, args.username, password, args.role, datetime.now(UTC))
    except ops_accounts.StaffAccountError as error:
        console.print(f"[red]{error}[/]")
        return 1
    console.print(f"created {member.username} ({member.role})")
    return 0


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # `kill` (SIGTERM) ends a command as Ctrl-C would: finally blocks run, so a bench or `bankbot run` stops the
    # Rasa, action and gateway processes it started instead of leaving them behind.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if argv is None and threading.current_thread() is threading.main_thread():  # run as a program, not called
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
