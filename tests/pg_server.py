"""Starts a throwaway PostgreSQL (Debian's package) on a free loopback port for tests, and stops it."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

DEFAULT_BIN_ROOT = Path("/usr/lib/postgresql")


def find_bin_dir() -> Path | None:
    """BANKBOT_PG_BIN, else Debian's newest /usr/lib/postgresql/<major>/bin (15 on bookworm)."""
    override = os.environ.get("BANKBOT_PG_BIN")
    if override:
        path = Path(override)
        return path if (path / "initdb").exists() else None
    if not DEFAULT_BIN_ROOT.is_dir():
        return None
    majors = sorted(
        (p for p in DEFAULT_BIN_ROOT.iterdir() if (p / "bin" / "initdb").exists() and p.name.isdigit()),
        key=lambda p: int(p.name),
    )
    return majors[-1] / "bin" if majors else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One cluster in a temp dir. initdb refuses root, so as root everything runs as the postgres user."""

    def __init__(self, bin_dir: Path | None = None) -> None:
        found = bin_dir or find_bin_dir()
        if found is None:
            raise RuntimeError("PostgreSQL binaries not found (apt-get install postgresql, or set BANKBOT_PG_BIN)")
        self.bin_dir = found
        self.port = 0
        self.root: Path | None = None
        self._run_as: list[str] = []
        self._uid: int | None = None
        self._gid: int | None = None

    @property
    def data_dir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    def _cmd(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._run_as, str(self.bin_dir / tool), *args],
            check=check,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def start(self) -> PostgresServer:
        self.root = Path(tempfile.mkdtemp(prefix="bankbot-pg-"))
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            self._uid, self._gid = user.pw_uid, user.pw_gid
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._run_as = ["runuser", "-u", "postgres", "--"]
        os.chmod(self.root, 0o700)
        socket_dir = self.root / "sock"
        socket_dir.mkdir()
        if self._uid is not None and self._gid is not None:
            os.chown(socket_dir, self._uid, self._gid)
        try:
            self._cmd(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            )
        except subprocess.CalledProcessError as error:
            raise RuntimeError(f"initdb failed: {error.stderr}") from error
        # A port can be taken between choosing and binding: retry a few times.
        for _attempt in range(5):
            self.port = _free_port()
            if self._pg_ctl_start().returncode == 0:
                return self
        log = self._server_log()
        self.stop()
        raise RuntimeError(f"PostgreSQL did not start: {log[-2000:]}")

    def _pg_ctl_start(self) -> subprocess.CompletedProcess[str]:
        assert self.root is not None
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root / 'sock'} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        return self._cmd(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
            check=False,
        )

    def _server_log(self) -> str:
        assert self.root is not None
        path = self.root / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def restart(self, *, mode: str = "fast", down_for: float = 0.0) -> None:
        """Stop the server (clients see their connections closed) and start it again on the same data and port.

        `mode` is pg_ctl's: "fast" ends sessions cleanly, "immediate" is a crash with recovery on start.
        `down_for` keeps it down that long, so clients also meet refused connections.
        """
        assert self.root is not None, "not started"
        self._cmd("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop")
        time.sleep(down_for)
        # The port is not ours while the server is down; another process taking it in that window is unlikely
        # on loopback, and then the start fails loudly rather than moving the clients elsewhere.
        result = self._pg_ctl_start()
        if result.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not restart: {self._server_log()[-2000:]}")

    def stop(self) -> None:
        if self.root is None:
            return
        if (self.data_dir / "postmaster.pid").exists():
            self._cmd("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str) -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE need that)."""
        import psycopg

        with psycopg.connect(self.url(driver="postgresql"), autocommit=True) as connection:
            connection.execute(sql)  # type: ignore[arg-type]

    def create_database(self, name: str, template: str | None = None) -> str:
        # FILE_COPY: copying a small template is faster than WAL-logging it block by block (PG ≥ 15).
        clause = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
        self.execute(f'CREATE DATABASE "{name}"{clause}')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")
