"""A RabbitMQ node from Debian's `rabbitmq-server`, run by the project itself on loopback (no system service).

Tests start a throwaway node in a temporary directory; the cluster profile keeps one under a directory it names
(its durable queues and persistent messages survive a restart). Everything the node reads or writes lives under
that directory: config, Mnesia database, logs and the Erlang cookie (HOME). Each node gets a unique name and its
own ports (AMQP, Erlang distribution, and an epmd of its own), so two nodes, or a system RabbitMQ and its epmd on
4369, never meet. The broker's own user, password and vhost are created at first boot from the config
(`default_user`, `default_pass`, `default_vhost`), which is quicker than rabbitmqctl.

Fault helpers: `suspend`/`resume`/`stall` freeze the Erlang VM with SIGSTOP/SIGCONT (open connections stay up but
nothing answers, heartbeats included: a stalled host; `rabbitmqctl suspend_listeners` would only refuse new
connections), `kill_server` is a crash (SIGKILL), `stop_server`/`start_server`/`restart` a clean stop and a start
on the same directory and ports.

Debian's /usr/sbin/rabbitmq-server wrapper switches to the rabbitmq user and /var/lib/rabbitmq; this class runs
the script behind it (/usr/lib/rabbitmq/bin/rabbitmq-server) as the current user instead, root included.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

DEFAULT_SCRIPTS_DIR = Path("/usr/lib/rabbitmq/bin")
HOST = "127.0.0.1"
# The AMQP 0-9-1 protocol header; a ready broker answers it with a Connection.Start method frame (type 1).
_AMQP_HEADER = b"AMQP\x00\x00\x09\x01"


def find_scripts_dir() -> Path | None:
    """BANKBOT_RABBITMQ_SCRIPTS (the directory holding rabbitmq-server and rabbitmqctl), else Debian's."""
    override = os.environ.get("BANKBOT_RABBITMQ_SCRIPTS")
    path = Path(override) if override else DEFAULT_SCRIPTS_DIR
    return path if (path / "rabbitmq-server").exists() else None


def find_epmd() -> Path | None:
    found = shutil.which("epmd")
    return Path(found) if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def amqp_answers(port: int, timeout: float = 1.0, host: str = HOST) -> bool:
    """Whether an AMQP 0-9-1 broker listens on host:port and starts the handshake."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_AMQP_HEADER)
            return sock.recv(1) == b"\x01"
    except OSError:
        return False


def _port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


class RabbitMQServer:
    """One RabbitMQ node on 127.0.0.1.

    `root`: its directory; None: a fresh temporary directory, removed by `stop()`. `port`: the AMQP port (None: a
    free one). `username`, `password` (None: random) and `vhost` are created at the first boot of a root; a root
    that already holds a node keeps the ones it was created with, so give the same values again (the cluster
    profile keeps them in its own settings). `nodename` defaults to a unique `bankbot-<hex>@localhost`; a kept
    root must be started with the name it was created with (Mnesia is per node name).
    """

    def __init__(
        self,
        *,
        root: Path | None = None,
        port: int | None = None,
        username: str = "bankbot",
        password: str | None = None,
        vhost: str = "bankbot",
        nodename: str | None = None,
        scripts_dir: Path | None = None,
        ready_timeout_s: float = 60.0,
    ) -> None:
        found = scripts_dir or find_scripts_dir()
        epmd = find_epmd()
        if found is None or epmd is None:
            raise RuntimeError(
                "rabbitmq-server not found (apt-get install rabbitmq-server, or set BANKBOT_RABBITMQ_SCRIPTS)"
            )
        self.scripts_dir = found
        self.epmd_binary = epmd
        self.port = port or 0
        self._fixed_port = port is not None
        self.dist_port = 0
        self.epmd_port = 0
        self.username = username
        self.password = password or secrets.token_urlsafe(18)
        self.vhost = vhost
        self.nodename = nodename or f"bankbot-{secrets.token_hex(4)}@localhost"
        self.ready_timeout_s = ready_timeout_s
        self._given_root = root.resolve() if root is not None else None
        self.root: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._epmd: subprocess.Popen[bytes] | None = None
        self._suspended = False
        # Seconds the last start took, from launching the script to the first AMQP handshake.
        self.last_start_seconds: float | None = None

    # -- what it is ------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """`amqp://user:password@127.0.0.1:port/vhost`, the form BANKBOT_AMQP_URL takes."""
        user, password = quote(self.username, safe=""), quote(self.password, safe="")
        return f"amqp://{user}:{password}@{HOST}:{self.port}/{quote(self.vhost, safe='')}"

    @property
    def log_path(self) -> Path:
        assert self.root is not None, "not started"
        return self.root / "log" / f"{self.nodename}.log"

    @property
    def pid(self) -> int | None:
        """The Erlang VM's process id (the node itself), while it runs."""
        process = self._process
        if process is None or process.poll() is not None:
            return None
        return self._beam_pid() or process.pid

    @property
    def running(self) -> bool:
        """The node's process is alive (it may be suspended)."""
        return self._process is not None and self._process.poll() is None

    def __repr__(self) -> str:
        return f"<RabbitMQServer {self.nodename} port={self.port} running={self.running}>"

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> RabbitMQServer:
        """Create the root, start epmd and the node, and wait until it accepts AMQP; RuntimeError if it fails."""
        if self._given_root is None:
            self.root = Path(tempfile.mkdtemp(prefix="bankbot-rabbitmq-"))
        else:
            self.root = self._given_root
            self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        for sub in ("home", "log", "mnesia"):
            (self.root / sub).mkdir(exist_ok=True)
        try:
            self._start_epmd()
            # A port can be taken between choosing and binding: retry a few times (a fixed port is tried once).
            error: RuntimeError | None = None
            for _attempt in range(1 if self._fixed_port else 3):
                if not self._fixed_port:
                    self.port = _free_port()
                self.dist_port = _free_port()
                try:
                    self._launch()
                    return self
                except RuntimeError as failed:
                    error = failed
            assert error is not None
            raise error
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the node and its epmd; a temporary root is removed, a given root is kept."""
        if self.root is None:
            return
        self._terminate()
        self._stop_epmd()
        if self._given_root is None:
            shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def stop_server(self, timeout: float = 30.0) -> None:
        """Stop the node cleanly (clients see their connections closed, then refused); root and ports are kept."""
        assert self.root is not None, "not started"
        self._terminate(timeout)

    def start_server(self) -> None:
        """Start the node again on the same root, name and ports, after `stop_server` or `kill_server`."""
        assert self.root is not None, "not started"
        self._launch()

    def restart(self, *, down_for: float = 0.0) -> None:
        """Stop the node and start it again; `down_for` keeps it down that long. Durable queues and persistent
        messages survive; connections do not (clients must reconnect)."""
        self.stop_server()
        time.sleep(down_for)
        self.start_server()

    def kill_server(self) -> None:
        """Crash the node (SIGKILL to the VM): no clean shutdown, unconfirmed publishes may be lost."""
        process = self._require_process()
        if self._suspended:
            self.resume()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        self._process = None

    def suspend(self) -> None:
        """Freeze the VM (SIGSTOP): connections stay open but nothing answers, not even heartbeats."""
        process = self._require_process()
        # The wrapper script and the VM share the process group; freezing both keeps the wrapper from acting.
        os.killpg(process.pid, signal.SIGSTOP)
        self._suspended = True

    def resume(self) -> None:
        """Let a suspended node run again (SIGCONT); it then handles what queued up meanwhile."""
        process = self._require_process()
        os.killpg(process.pid, signal.SIGCONT)
        self._suspended = False

    def stall(self, seconds: float) -> None:
        """Stall the broker for `seconds` (blocking; from async code run it in a thread)."""
        self.suspend()
        try:
            time.sleep(seconds)
        finally:
            self.resume()

    # The other engines (PostgresServer, RedisServer) call the blocking stall `pause`.
    pause = stall

    @contextlib.contextmanager
    def suspended(self) -> Iterator[None]:
        """The node is frozen for the duration of the block."""
        self.suspend()
        try:
            yield
        finally:
            self.resume()

    def accepts_amqp(self, timeout: float = 1.0) -> bool:
        return bool(self.port) and amqp_answers(self.port, timeout)

    def ctl(self, *args: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `rabbitmqctl` against this node (e.g. `ctl("list_queues", "-p", vhost, "name", "messages")`)."""
        return self._tool("rabbitmqctl", *args, timeout=timeout, check=check)

    def diagnostics(self, *args: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._tool("rabbitmq-diagnostics", *args, timeout=timeout, check=check)

    def queue_depths(self) -> dict[str, tuple[int, int]]:
        """Per queue of the vhost: (messages ready, messages unacknowledged), from rabbitmqctl."""
        result = self.ctl(
            "list_queues",
            "-q",
            "--no-table-headers",
            "-p",
            self.vhost,
            "name",
            "messages_ready",
            "messages_unacknowledged",
        )
        depths: dict[str, tuple[int, int]] = {}
        for line in result.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                depths[parts[0]] = (int(parts[1]), int(parts[2]))
        return depths

    def __enter__(self) -> RabbitMQServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals -------------------------------------------------------------------------------------------

    def _write_config(self) -> None:
        assert self.root is not None
        config = "\n".join(
            [
                # Created at the first boot of an empty database only.
                f"default_user = {self.username}",
                f"default_pass = {self.password}",
                f"default_vhost = {self.vhost}",
                "default_permissions.configure = .*",
                "default_permissions.read = .*",
                "default_permissions.write = .*",
                "log.console = false",
                "log.file.level = info",
                # Small disks on CI machines: the default (50 MB) is fine; say it so a full disk is diagnosable.
                "disk_free_limit.absolute = 50MB",
                "",
            ]
        )
        path = self.root / "rabbitmq.conf"
        path.write_text(config, encoding="utf-8")
        path.chmod(0o600)
        # No plugins (the management plugin alone adds seconds to every start).
        (self.root / "enabled_plugins").write_text("[].\n", encoding="utf-8")
        # An empty env file, so /etc/rabbitmq/rabbitmq-env.conf (a system node's settings) is never read.
        (self.root / "rabbitmq-env.conf").write_text("", encoding="utf-8")

    def _env(self) -> dict[str, str]:
        assert self.root is not None
        root = self.root
        env = {key: value for key, value in os.environ.items() if not key.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            {
                # The Erlang cookie is $HOME/.erlang.cookie: one per node, shared with our rabbitmqctl calls.
                "HOME": str(root / "home"),
                "RABBITMQ_CONF_ENV_FILE": str(root / "rabbitmq-env.conf"),
                "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(root / "advanced.config"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
                "RABBITMQ_MNESIA_BASE": str(root / "mnesia"),
                "RABBITMQ_LOG_BASE": str(root / "log"),
                "RABBITMQ_PID_FILE": str(root / "rabbitmq.pid"),
                "RABBITMQ_NODENAME": self.nodename,
                "RABBITMQ_NODE_IP_ADDRESS": HOST,
                "RABBITMQ_NODE_PORT": str(self.port),
                # The default is the AMQP port + 20000, which is past 65535 for most free ports.
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                # Our own epmd: a system one on 4369 (or another node's) is never used or stopped by us.
                "ERL_EPMD_PORT": str(self.epmd_port),
                "ERL_EPMD_ADDRESS": HOST,
            }
        )
        return env

    def _start_epmd(self) -> None:
        assert self.root is not None
        if self._epmd is not None and self._epmd.poll() is None:
            return
        for _attempt in range(3):
            self.epmd_port = _free_port()
            with open(self.root / "log" / "epmd.out", "ab") as output:
                self._epmd = subprocess.Popen(
                    [str(self.epmd_binary), "-port", str(self.epmd_port), "-address", HOST],
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and self._epmd.poll() is None:
                if _port_open(self.epmd_port, 0.2):
                    return
                time.sleep(0.02)
            self._stop_epmd()
        raise RuntimeError("epmd did not start")

    def _stop_epmd(self) -> None:
        epmd, self._epmd = self._epmd, None
        if epmd is not None and epmd.poll() is None:
            epmd.terminate()
            try:
                epmd.wait(timeout=5)
            except subprocess.TimeoutExpired:
                epmd.kill()
                epmd.wait(timeout=5)

    def _launch(self) -> None:
        assert self.root is not None
        self._write_config()
        started = time.monotonic()
        # What the node prints before its log file is open (a bad config, a port in use) goes here.
        with open(self.root / "log" / "server.out", "ab") as output:
            self._process = subprocess.Popen(
                [str(self.scripts_dir / "rabbitmq-server")],
                cwd=self.root,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._suspended = False
        deadline = started + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if amqp_answers(self.port, timeout=0.5):
                self.last_start_seconds = time.monotonic() - started
                return
            time.sleep(0.05)
        reason = self._log_tail()
        self._terminate()
        raise RuntimeError(f"RabbitMQ node {self.nodename} did not start on port {self.port}: {reason}")

    def _terminate(self, timeout: float = 30.0) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            if self._suspended:
                # A stopped process does not act on SIGTERM until it runs again.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGCONT)
            # The wrapper script traps SIGTERM and stops the VM gracefully (queues synced to disk).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        # Anything the wrapper left in its group (the VM after a killed wrapper) goes with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        self._suspended = False

    def _beam_pid(self) -> int | None:
        if self.root is None:
            return None
        try:
            return int((self.root / "rabbitmq.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def _require_process(self) -> subprocess.Popen[bytes]:
        process = self._process
        if process is None or process.poll() is not None:
            raise RuntimeError("the RabbitMQ node is not running")
        return process

    def _tool(self, name: str, *args: str, timeout: float, check: bool) -> subprocess.CompletedProcess[str]:
        assert self.root is not None, "not started"
        return subprocess.run(
            [str(self.scripts_dir / name), "-n", self.nodename, *args],
            env=self._env(),
            cwd=self.root,
            check=check,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def _log_tail(self) -> str:
        if self.root is None:
            return "no output"
        paths = (self.root / "log" / "server.out", self.root / "log" / f"{self.nodename}.log")
        text = "".join(path.read_text(errors="replace") for path in paths if path.exists())
        return text[-2000:] or "no output"


@contextlib.contextmanager
def running_rabbitmq(**options: object) -> Iterator[RabbitMQServer]:
    """A throwaway node for the duration of the block."""
    server = RabbitMQServer(**options).start()  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()
