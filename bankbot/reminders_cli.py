"""CLI: `bankbot reminders plan|list|stats|pause|resume|cancel|check-rules` (registered by bankbot.cli)."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bankcore.settings import Settings

console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


def register(commands: Any) -> None:
    reminders = commands.add_parser("reminders", help="the outbound-reminder scheduler: plan, inspect, pause")
    group = reminders.add_subparsers(dest="reminders_command", required=True)
    rules_help = "rules file (default: BANKBOT_REMINDER_RULES, bankcore/reminders/rules.yaml)"

    plan = group.add_parser("plan", help="plan the reminders the rules call for now (idempotent)")
    plan.add_argument("--rules", type=Path, help=rules_help)
    plan.add_argument("--horizon-days", type=int, default=35)
    plan.set_defaults(handler=cmd_plan)

    check = group.add_parser("check-rules", help="validate a rules file")
    check.add_argument("path", type=Path, nargs="?")
    check.set_defaults(handler=cmd_check_rules)

    listing = group.add_parser("list", help="reminders, newest send time first")
    listing.add_argument("--status")
    listing.add_argument("--customer")
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(handler=cmd_list)

    group.add_parser("stats", help="reminders per status").set_defaults(handler=cmd_stats)

    pause = group.add_parser("pause", help="stop dispatching (one rule, or all)")
    pause.add_argument("--rule", help="rule id (default: every rule)")
    pause.set_defaults(handler=cmd_pause)
    resume = group.add_parser("resume", help="dispatch again (one rule, or all)")
    resume.add_argument("--rule", help="rule id (default: every rule)")
    resume.set_defaults(handler=cmd_resume)

    cancel = group.add_parser("cancel", help="cancel reminders not yet dispatched")
    cancel.add_argument("--customer")
    cancel.add_argument("--rule")
    cancel.add_argument("--kind")
    cancel.add_argument("--item")
    cancel.add_argument("--reason", default="cancelled by ops")
    cancel.set_defaults(handler=cmd_cancel)


def _rules_path(settings: Settings, explicit: Path | None) -> Path:
    from bankcore.reminders.rules import DEFAULT_RULES_PATH

    return explicit or Path(settings.extra.get("BANKBOT_REMINDER_RULES", str(DEFAULT_RULES_PATH)))


def _factory(settings: Settings) -> Any:
    from bankcore.database import make_engine, make_session_factory, migrate

    migrate(settings.database_url)
    return make_session_factory(make_engine(settings.database_url))


def cmd_check_rules(args: argparse.Namespace) -> int:
    from bankcore.reminders.rules import RulesFileError, load_rules

    path = _rules_path(Settings.from_env(), args.path)
    try:
        rules = load_rules(path)
    except RulesFileError as error:
        errors.print(f"[red]invalid[/red]: {escape(str(error))}")
        return 1
    console.print(f"{escape(str(path))}: {len(rules.enabled_rules)} enabled rules, valid")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from bankcore.database import unit_of_work
    from bankcore.reminders.planner import plan_and_store
    from bankcore.reminders.rules import RulesFileError, load_rules

    settings = Settings.from_env()
    try:
        rules = load_rules(_rules_path(settings, args.rules))
    except RulesFileError as error:
        errors.print(f"[red]rules not loaded[/red]: {escape(str(error))}")
        return 1
    with unit_of_work(_factory(settings)) as session:
        planned, created = plan_and_store(session, rules, dt.datetime.now(dt.UTC), horizon_days=args.horizon_days)
    console.print(f"{planned} reminders due under the rules, {created} new (the rest were planned before)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from bankcore.database import unit_of_work
    from bankcore.reminders import store

    with unit_of_work(_factory(Settings.from_env())) as session:
        rows = store.list_reminders(session, status=args.status, customer_id=args.customer, limit=args.limit)
        table = Table("id", "customer", "rule", "due", "send after (UTC)", "status", "attempts", "channel", "outcome")
        for row in rows:
            table.add_row(
                str(row.id),
                row.customer_id,
                row.rule_id,
                row.due_date.isoformat(),
                row.send_after.strftime("%Y-%m-%d %H:%M"),
                row.status + (" (paused)" if row.paused else ""),
                str(row.attempts),
                row.channel or "",
                row.outcome or "",
            )
    console.print(table)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from bankcore.database import unit_of_work
    from bankcore.reminders import store

    with unit_of_work(_factory(Settings.from_env())) as session:
        counts = store.counts_by_status(session)
    table = Table("status", "reminders")
    for status, count in sorted(counts.items()):
        table.add_row(status, str(count))
    console.print(table)
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    from bankcore.database import unit_of_work
    from bankcore.reminders import store

    with unit_of_work(_factory(Settings.from_env())) as session:
        changed = store.pause(session, args.rule)
    console.print(f"paused {changed} reminders" + (f" of rule {escape(args.rule)}" if args.rule else ""))
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from bankcore.database import unit_of_work
    from bankcore.reminders import store

    with unit_of_work(_factory(Settings.from_env())) as session:
        changed = store.resume(session, args.rule)
    console.print(f"resumed {changed} reminders" + (f" of rule {escape(args.rule)}" if args.rule else ""))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from bankcore.database import unit_of_work
    from bankcore.reminders import store

    if not (args.customer or args.rule or args.kind or args.item):
        errors.print("say what to cancel: --customer, --rule, --kind and/or --item")
        return 2
    with unit_of_work(_factory(Settings.from_env())) as session:
        cancelled = store.cancel_where(
            session,
            customer_id=args.customer,
            rule_id=args.rule,
            kind=args.kind,
            item_id=args.item,
            reason=args.reason,
            now=dt.datetime.now(dt.UTC),
        )
    console.print(f"cancelled {cancelled} reminders")
    return 0
