"""A PostgreSQL server from Debian's binaries, run by the project itself on loopback (no system service).

Tests and benches start a throwaway one in a temporary directory; the cluster profile keeps one under
var/cluster/postgres (its data survives a restart of the cluster). initdb refuses to run as root, so as root
every PostgreSQL tool runs as the `postgres` user, who then owns the directory.
"""

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
    """One PostgreSQL cluster (data directory + postmaster) on 127.0.0.1.

    `root`: the directory that holds `data/`, the socket and `server.log`; None: a fresh temporary directory,
    removed by `stop()`. A given root is kept, and a data directory already there is reused (no initdb).
    `port`: None picks a free one. The server runs without fsync: it is for laptops, tests and benches, whose
    data a power cut may take; production runs PostgreSQL with its defaults (docs/cluster.md).
    """

    def __init__(
        self,
        bin_dir: Path | None = None,
        *,
        root: Path | None = None,
        port: int | None = None,
        max_connections: int = 100,
    ) -> None:
        found = bin_dir or find_bin_dir()
        if found is None:
            raise RuntimeError("PostgreSQL binaries not found (apt-get install postgresql, or set BANKBOT_PG_BIN)")
        self.bin_dir = found
        self.port = port or 0
        self._fixed_port = port is not None
        self._given_root = root.resolve() if root is not None else None
        self.root: Path | None = None
        self.max_connections = max_connections
        self._run_as: list[str] = []
        self._uid: int | None = None
        self._gid: int | None = None

    @property
    def data_dir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        assert self.root is not None
        return self.root / "server.log"

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while it runs (first line of postmaster.pid)."""
        if self.root is None:
            return None
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def _cmd(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._run_as, str(self.bin_dir / tool), *args],
            check=check,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def _own(self, path: Path) -> None:
        if self._uid is not None and self._gid is not None:
            os.chown(path, self._uid, self._gid)

    def start(self) -> PostgresServer:
        if self._given_root is None:
            self.root = Path(tempfile.mkdtemp(prefix="bankbot-pg-"))
        else:
            self.root = self._given_root
            self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            self._uid, self._gid = user.pw_uid, user.pw_gid
            self._run_as = ["runuser", "-u", "postgres", "--"]
        self._own(self.root)
        os.chmod(self.root, 0o700)
        socket_dir = self.root / "sock"
        socket_dir.mkdir(exist_ok=True)
        self._own(socket_dir)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        elif (self.data_dir / "postmaster.pid").exists():
            # Left by a server that was killed with its host process (a crashed `bankbot cluster`): stop it if it
            # still runs, so this start owns the data directory.
            self._cmd("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop", check=False)
        # A port can be taken between choosing and binding: retry a few times (a fixed port is tried once).
        for _attempt in range(1 if self._fixed_port else 5):
            if not self._fixed_port:
                self.port = _free_port()
            if self._pg_ctl_start().returncode == 0:
                return self
        log = self._server_log()
        self.stop()
        raise RuntimeError(f"PostgreSQL did not start: {log[-2000:]}")

    def _initdb(self) -> None:
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
            hint = (
                " (as root, every directory above it must be searchable by the postgres user)" if self._run_as else ""
            )
            raise RuntimeError(f"initdb failed: {error.stderr.strip()}{hint}") from error

    def _pg_ctl_start(self) -> subprocess.CompletedProcess[str]:
        assert self.root is not None
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root / 'sock'} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            f"-c max_connections={self.max_connections}"
        )
        return self._cmd(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_path),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
            check=False,
        )

    def _server_log(self) -> str:
        if self.root is None:
            return ""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop_server(self, *, mode: str = "fast") -> None:
        """Stop the postmaster and keep the data directory (and the port, for `start_server`).

        `mode` is pg_ctl's: "fast" ends sessions cleanly, "immediate" is a crash with recovery on the next start.
        """
        assert self.root is not None, "not started"
        self._cmd("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop")

    def start_server(self) -> None:
        """Start the postmaster again on the same data directory and port, after `stop_server`."""
        assert self.root is not None, "not started"
        # The port is not ours while the server is down; another process taking it in that window is unlikely
        # on loopback, and then the start fails loudly rather than moving the clients elsewhere.
        result = self._pg_ctl_start()
        if result.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not restart: {self._server_log()[-2000:]}")

    def restart(self, *, mode: str = "fast", down_for: float = 0.0) -> None:
        """Stop the server (clients see their connections closed) and start it again on the same data and port.

        `down_for` keeps it down that long, so clients also meet refused connections.
        """
        self.stop_server(mode=mode)
        time.sleep(down_for)
        self.start_server()

    def stop(self) -> None:
        """Stop the server; a temporary directory is removed, a given root is kept."""
        if self.root is None:
            return
        if (self.data_dir / "postmaster.pid").exists():
            # A kept data directory is shut down cleanly; a throwaway one needs no checkpoint.
            mode = "fast" if self._given_root is not None else "immediate"
            self._cmd("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop", check=False)
        if self._given_root is None:
            shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str) -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE need that)."""
        import psycopg

        with psycopg.connect(self.url(driver="postgresql"), autocommit=True) as connection:
            connection.execute(sql)

    def database_exists(self, name: str) -> bool:
        import psycopg

        with psycopg.connect(self.url(driver="postgresql"), autocommit=True) as connection:
            row = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        return row is not None

    def create_database(self, name: str, template: str | None = None) -> str:
        # FILE_COPY: copying a small template is faster than WAL-logging it block by block (PG ≥ 15).
        clause = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
        self.execute(f'CREATE DATABASE "{name}"{clause}')
        return self.url(name)

    def ensure_database(self, name: str) -> str:
        """The database's URL, creating it first when it does not exist yet."""
        if not self.database_exists(name):
            self.create_database(name)
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


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port}")
