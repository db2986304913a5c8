"""A Redis server from Debian's `redis-server`, run by the project itself on loopback (no system service).

Tests start a throwaway one in a temporary directory; the cluster profile keeps one under a directory it names.
Nothing is persisted unless asked (`persistent=True`: an append-only file in the root): what the gateways keep
in Redis (rate-limit windows, cached access tokens) is rebuilt on demand, and Rasa's lock store holds only
short-lived locks. The fault helpers (`pause`, `suspend`/`resume`, `stop_server`/`start_server`, `restart`)
let tests stall or stop it and bring it back on the same port.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import quote

DEFAULT_BINARY = "redis-server"
HOST = "127.0.0.1"


def find_binary(name: str = DEFAULT_BINARY) -> Path | None:
    """BANKBOT_REDIS_SERVER, else `redis-server` on PATH, else Debian's /usr/bin/redis-server."""
    override = os.environ.get("BANKBOT_REDIS_SERVER")
    if override:
        path = Path(override)
        return path if path.exists() else None
    found = shutil.which(name)
    if found:
        return Path(found)
    debian = Path("/usr/bin") / name
    return debian if debian.exists() else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One `redis-server` process on 127.0.0.1.

    `root`: the directory for the log (and, when persistent, the append-only file); None: a fresh temporary
    directory, removed by `stop()`. `port`: None picks a free one (retried if it is taken before the server
    binds it). `password`: sets `requirepass`; `url` then carries it. `extra_args`: more `--option value` pairs.
    """

    def __init__(
        self,
        binary: Path | None = None,
        *,
        root: Path | None = None,
        port: int | None = None,
        persistent: bool = False,
        password: str | None = None,
        extra_args: Sequence[str] = (),
        ready_timeout_s: float = 10.0,
    ) -> None:
        found = binary or find_binary()
        if found is None:
            raise RuntimeError("redis-server not found (apt-get install redis-server, or set BANKBOT_REDIS_SERVER)")
        self.binary = found
        self.port = port or 0
        self._fixed_port = port is not None
        self._given_root = root.resolve() if root is not None else None
        self.root: Path | None = None
        self.persistent = persistent
        self.password = password
        self.extra_args = tuple(extra_args)
        self.ready_timeout_s = ready_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._suspended = False

    # -- what it is ------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """`redis://[:password@]127.0.0.1:port/0`, the form BANKBOT_REDIS_URL takes."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{HOST}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        assert self.root is not None, "not started"
        return self.root / "redis.log"

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def running(self) -> bool:
        """The process is alive (it may be suspended)."""
        return self.pid is not None

    def __repr__(self) -> str:
        return f"<RedisServer port={self.port} running={self.running}>"

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> RedisServer:
        """Create the root, start the server and wait until it answers PING; RuntimeError if it does not."""
        if self._given_root is None:
            self.root = Path(tempfile.mkdtemp(prefix="bankbot-redis-"))
        else:
            self.root = self._given_root
            self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        # A port can be taken between choosing and binding: retry a few times (a fixed port is tried once).
        error: RuntimeError | None = None
        for _attempt in range(1 if self._fixed_port else 5):
            if not self._fixed_port:
                self.port = _free_port()
            try:
                self._launch()
                return self
            except RuntimeError as failed:
                error = failed
        self.stop()
        assert error is not None
        raise error

    def stop(self) -> None:
        """Stop the server; a temporary root is removed, a given root is kept."""
        if self.root is None:
            return
        self._terminate()
        if self._given_root is None:
            shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def stop_server(self) -> None:
        """Stop the process (clients see connections closed, then refused) and keep the root and the port."""
        assert self.root is not None, "not started"
        self._terminate()

    def start_server(self) -> None:
        """Start the process again on the same root and port, after `stop_server`."""
        assert self.root is not None, "not started"
        # The port is not ours while the server is down; another process taking it on loopback in that window is
        # unlikely, and then the start fails loudly rather than moving the clients elsewhere.
        self._launch()

    def restart(self, *, down_for: float = 0.0) -> None:
        """Stop the server and start it again on the same port; `down_for` keeps it down that long."""
        self.stop_server()
        time.sleep(down_for)
        self.start_server()

    def suspend(self) -> None:
        """Freeze the process (SIGSTOP): connections stay open but nothing answers, like a stalled host."""
        process = self._require_process()
        process.send_signal(signal.SIGSTOP)
        self._suspended = True

    def resume(self) -> None:
        """Let a suspended process run again (SIGCONT); it answers what queued up meanwhile."""
        process = self._require_process()
        process.send_signal(signal.SIGCONT)
        self._suspended = False

    def pause(self, seconds: float) -> None:
        """Stall the server for `seconds` (blocking; from async code run it in a thread)."""
        self.suspend()
        try:
            time.sleep(seconds)
        finally:
            self.resume()

    def ping(self, timeout: float = 1.0) -> bool:
        """Whether the server answers PING now (with AUTH first when it has a password)."""
        try:
            with socket.create_connection((HOST, self.port), timeout=timeout) as sock:
                if self.password:
                    sock.sendall(_command("AUTH", self.password))
                    if not _read_line(sock).startswith(b"+OK"):
                        return False
                sock.sendall(_command("PING"))
                return _read_line(sock).startswith(b"+PONG")
        except OSError:
            return False

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals -------------------------------------------------------------------------------------------

    def _arguments(self) -> list[str]:
        assert self.root is not None
        args = [
            str(self.binary),
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--dir",
            str(self.root),
            "--logfile",
            str(self.log_path),
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            # Debian's package would otherwise supervise through systemd; this process is ours alone.
            "--supervised",
            "no",
        ]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            args += ["--save", "", "--appendonly", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        return [*args, *self.extra_args]

    def _launch(self) -> None:
        assert self.root is not None
        # What the server prints before its log file is open (a bad option, a port in use) goes here.
        with open(self.root / "redis.out", "ab") as output:
            self._process = subprocess.Popen(
                self._arguments(),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._suspended = False
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if self.ping(timeout=0.5):
                return
            time.sleep(0.02)
        reason = self._log_tail()
        self._terminate()
        raise RuntimeError(f"redis-server did not start on port {self.port}: {reason}")

    def _terminate(self) -> None:
        process = self._process
        if process is None:
            return
        self._process = None
        if process.poll() is None:
            if self._suspended:
                # A stopped process does not act on SIGTERM until it runs again.
                process.send_signal(signal.SIGCONT)
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self._suspended = False

    def _require_process(self) -> subprocess.Popen[bytes]:
        process = self._process
        if process is None or process.poll() is not None:
            raise RuntimeError("redis-server is not running")
        return process

    def _log_tail(self) -> str:
        if self.root is None:
            return "no output"
        text = "".join(
            path.read_text(errors="replace") for path in (self.root / "redis.out", self.log_path) if path.exists()
        )
        return text[-2000:] or "no output"


def _command(*parts: str) -> bytes:
    """One command in RESP (binary-safe, unlike the inline form)."""
    encoded = [part.encode() for part in parts]
    return b"".join([b"*%d\r\n" % len(encoded), *(b"$%d\r\n%s\r\n" % (len(part), part) for part in encoded)])


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(256)
        if not chunk:
            break
        data += chunk
    return data


@contextlib.contextmanager
def running_redis(*, persistent: bool = False, password: str | None = None) -> Iterator[RedisServer]:
    """A throwaway server for the duration of the block."""
    server = RedisServer(persistent=persistent, password=password).start()
    try:
        yield server
    finally:
        server.stop()
