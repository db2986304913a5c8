"""CLI: events_cli (registered by bankbot.cli)."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any, bench: Any = None) -> None:
    """Adds this module's subcommands to `commands` (and benchmarks to `bench`)."""
    del commands, bench


def _unused(args: argparse.Namespace) -> int:
    return 0
