"""`bankbot events import`: load cross-channel events, profiles or contacts from a JSON Lines file.

The import is two streaming passes over the file. The first parses every line and stops at the first bad
one (exit code 2, `file:line: field: reason`) before anything is stored, so a file is imported whole or
not at all. The second parses again and stores chunks of CHUNK_RECORDS, one unit of work each: memory
stays flat for millions of records, and an interrupted import can simply be run again, since events with
an `event_id` are idempotent (events without one, profiles and contacts are not deduplicated).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bankcore.events import FileRecordError, json_lines, parse_contact, parse_event, parse_profile, read_jsonl

console = Console()
errors = Console(stderr=True)

CHUNK_RECORDS = 5_000
KINDS: dict[str, Callable[[Any], Any]] = {"events": parse_event, "profiles": parse_profile, "contacts": parse_contact}


def register(commands: Any, bench: Any = None) -> None:
    """Adds the `events` group (`events import`) to the top-level subcommands; no benchmarks."""
    del bench
    events = commands.add_parser("events", help="cross-channel events, profiles and contacts").add_subparsers(
        dest="events_command", required=True
    )
    importer = events.add_parser("import", help="import a JSON Lines file of events, profiles or contacts")
    importer.add_argument("file", type=Path)
    importer.add_argument(
        "--kind",
        choices=sorted(KINDS),
        help="what the file holds; default: from the first record (type: events; intent or ts: contacts; "
        "else profiles)",
    )
    importer.set_defaults(handler=cmd_events_import)


def infer_kind(path: Path) -> str:
    """events when the first record has a type; contacts when it has an intent or a ts; else profiles."""
    for number, record in json_lines(path):
        if not isinstance(record, dict):
            raise FileRecordError(path, number, "record: must be a JSON object")
        if "type" in record:
            return "events"
        if "intent" in record or "ts" in record:
            return "contacts"
        return "profiles"
    return "events"  # an empty file: nothing to import whatever the kind


def _chunks(records: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while chunk := list(islice(records, size)):
        yield chunk


def import_file(factory: Any, path: Path, kind: str, *, chunk_records: int | None = None) -> dict[str, int]:
    """Validate the whole file, then store it chunk by chunk; returns the totals. Raises FileRecordError."""
    from bankcore.database import unit_of_work
    from bankcore.event_store import StoreReport, add_contacts, store_events, upsert_profiles

    parse = KINDS[kind]
    total = sum(1 for _ in read_jsonl(path, parse))
    report = StoreReport(inserted=0, duplicates=0)
    with Progress(
        TextColumn(f"importing {kind} from {path.name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("new {task.fields[inserted]} · duplicates {task.fields[duplicates]}"),
        TimeElapsedColumn(),
        console=console,
        transient=not console.is_terminal,
    ) as progress:
        task = progress.add_task("import", total=total, inserted=0, duplicates=0)
        for chunk in _chunks(read_jsonl(path, parse), chunk_records or CHUNK_RECORDS):
            with unit_of_work(factory) as session:
                if kind == "events":
                    report = report + store_events(session, chunk)
                elif kind == "profiles":
                    report = report + StoreReport(upsert_profiles(session, chunk), 0)
                else:
                    report = report + StoreReport(add_contacts(session, chunk, source="import"), 0)
            progress.update(task, advance=len(chunk), inserted=report.inserted, duplicates=report.duplicates)
    return {"records": total, "inserted": report.inserted, "duplicates": report.duplicates}


def cmd_events_import(args: argparse.Namespace) -> int:
    from bankbot.cli import _open_bank
    from bankcore.settings import Settings

    path: Path = args.file
    if not path.is_file():
        errors.print(f"[red]no such file: {escape(str(path))}[/]")
        return 2
    try:
        kind = args.kind or infer_kind(path)
        factory = _open_bank(Settings.from_env())
        totals = import_file(factory, path, kind)
    except FileRecordError as error:
        errors.print(f"[red]{escape(str(error))}[/] (nothing imported)", highlight=False)
        return 2
    except (OSError, UnicodeDecodeError) as error:
        errors.print(f"[red]cannot read {escape(str(path))}: {escape(str(error))}[/]")
        return 2
    console.print(
        f"{kind}: {totals['records']} records, {totals['inserted']} stored, {totals['duplicates']} duplicates",
        highlight=False,
    )
    return 0
