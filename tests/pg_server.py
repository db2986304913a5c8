"""The throwaway PostgreSQL of the tests: product code in bankbot.engines.postgres_server, re-exported here."""

from __future__ import annotations

from bankbot.engines.postgres_server import (
    DEFAULT_BIN_ROOT,
    PostgresServer,
    find_bin_dir,
    running_postgres,
    wait_for_port,
)

__all__ = ["DEFAULT_BIN_ROOT", "PostgresServer", "find_bin_dir", "running_postgres", "wait_for_port"]
