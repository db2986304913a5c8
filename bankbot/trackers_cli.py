"""CLI: `bankbot trackers retain` (registered by bankbot.cli): the tracker retention job, by hand or from cron."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

from rich.console import Console

from bankcore.settings import Settings

console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


def register(commands: Any) -> None:
    trackers = commands.add_parser("trackers", help="Rasa's conversation store: retention")
    group = trackers.add_subparsers(dest="trackers_command", required=True)
    retain = group.add_parser(
        "retain",
        help="archive, then delete, conversations whose newest event is older than the retention period",
    )
    retain.add_argument(
        "--older-than-days",
        type=float,
        default=None,
        help="the retention period (default: BANKBOT_TRACKER_RETENTION_DAYS, 180)",
    )
    retain.add_argument(
        "--archive-dir",
        type=Path,
        default=None,
        help="write the conversations there first, as gzip JSON Lines (default: BANKBOT_TRACKER_ARCHIVE_DIR; "
        "unset: delete without an archive)",
    )
    retain.add_argument("--no-archive", action="store_true", help="delete without an archive even if one is set")
    retain.add_argument("--dry-run", action="store_true", help="count what would go; change nothing")
    retain.add_argument("--batch-size", type=int, default=500, help="conversations per transaction (500)")
    retain.add_argument(
        "--tracker-url", default=None, help="the tracker store's database URL (default: the one Rasa is given)"
    )
    retain.add_argument("--json", action="store_true", help="print the report as JSON")
    retain.set_defaults(handler=cmd_retain)


def cmd_retain(args: argparse.Namespace) -> int:
    from bankcore.tracker_retention import exclusive_run, retain, tracker_engine

    settings = Settings.from_env()
    days = args.older_than_days if args.older_than_days is not None else settings.tracker_retention_days
    if days <= 0:
        errors.print("the retention period must be positive (BANKBOT_TRACKER_RETENTION_DAYS=0 keeps trackers forever)")
        return 2
    archive_dir = None if args.no_archive else (args.archive_dir or settings.tracker_archive_dir)
    engine = tracker_engine(args.tracker_url or settings.tracker_store_url)
    try:
        with exclusive_run(engine) as acquired:
            if not acquired:
                errors.print("another retention run holds the lock; nothing done")
                return 3
            report = retain(
                engine,
                older_than=dt.timedelta(days=days),
                archive_dir=archive_dir.resolve() if archive_dir is not None else None,
                dry_run=args.dry_run,
                batch_size=args.batch_size,
            )
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(report.summary(), ensure_ascii=False))
        return 0
    if report.skipped_reason:
        console.print(f"nothing to do: {report.skipped_reason}")
        return 0
    verb = "would delete" if report.dry_run else "deleted"
    deleted = report.conversations if report.dry_run else report.deleted_conversations
    events = report.events if report.dry_run else report.deleted_events
    console.print(
        f"conversations quiet since before {report.cutoff:%Y-%m-%d %H:%M} UTC: {verb} {deleted:,} "
        f"({events:,} events); kept {report.kept_conversations:,} that came back to life during the run"
    )
    if report.archive is not None:
        console.print(f"archive: {report.archive}")
    elif not report.dry_run and deleted:
        console.print("no archive was written (no --archive-dir, BANKBOT_TRACKER_ARCHIVE_DIR unset)")
    return 0
