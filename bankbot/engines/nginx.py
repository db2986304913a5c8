"""nginx from Debian (/usr/sbin/nginx) as the cluster's load balancer, run by the project in the foreground.

One nginx serves several upstream groups, each on a loopback port of its own: the public port in front of the
channel gateways, and the action port in front of the action servers (Rasa's endpoints.yml names one action
URL). Everything nginx writes (config, pid, logs, temp files) lives under one directory.

What nginx may retry on another server (`proxy_next_upstream error timeout http_502 http_503`):
- A request that never reached a server (connection refused or reset before it was sent, connect timeout) is
  always tried on the next one: nothing ran, whatever the method.
- An idempotent request (GET, HEAD: health, metrics, the web chat page and its assets) is retried after an
  error, a timeout or a 502/503 even when it was sent.
- A POST that was sent is never retried: nginx does not pass a non-idempotent request on once it was sent,
  and `non_idempotent` is deliberately NOT set. A customer turn (or an action run: a transfer) that reached a
  gateway which then died may have run; replaying it on another server could answer it twice or move money
  twice. The client gets 502 and its own retry carries the same message id, which the gateway deduplicates.
No keepalive connections to the upstreams: on loopback a new connection costs little, and a POST sent on a
kept-alive connection the server was closing at that moment would fail after sending, i.e. unretryably.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_BINARY = Path("/usr/sbin/nginx")
HOST = "127.0.0.1"


def find_binary() -> Path | None:
    """BANKBOT_NGINX, else nginx on PATH, else Debian's /usr/sbin/nginx."""
    override = os.environ.get("BANKBOT_NGINX")
    if override:
        path = Path(override)
        return path if path.exists() else None
    found = shutil.which("nginx")
    if found:
        return Path(found)
    return DEFAULT_BINARY if DEFAULT_BINARY.exists() else None


@dataclass(frozen=True)
class Upstream:
    """One balanced group: nginx listens on `listen_port` and spreads requests over `servers` ("host:port").

    `read_timeout_s` must exceed the longest an upstream may take to answer (nginx would cut it off with 504);
    `max_fails`/`fail_timeout_s`: one failure takes a server out of rotation for that long (it is tried again
    afterwards), so a killed instance costs at most one retried connection every `fail_timeout_s`.
    """

    name: str
    listen_port: int
    servers: tuple[str, ...]
    read_timeout_s: float = 120.0
    connect_timeout_s: float = 2.0
    max_fails: int = 1
    fail_timeout_s: float = 2.0


def _seconds(value: float) -> str:
    return f"{int(value * 1000)}ms"


def render_config(
    root: Path, upstreams: Sequence[Upstream], *, max_body_bytes: int, worker_user: str | None = None
) -> str:
    """nginx.conf for these upstream groups; every path under `root`."""
    lines = [
        "# Written by bankbot.engines.nginx; rewritten on every start and reload.",
        "daemon off;",
        "worker_processes 1;",
        f"pid {root / 'nginx.pid'};",
        f"error_log {root / 'error.log'} warn;",
    ]
    if worker_user:
        lines.append(f"user {worker_user};")
    lines += [
        "events { worker_connections 4096; }",
        "http {",
        # Which upstream served each request, and how long it took: the fault bench reads it.
        "    log_format balanced '$remote_addr [$time_iso8601] \"$request\" $status $body_bytes_sent '",
        "                        'upstream=$upstream_addr upstream_status=$upstream_status '",
        "                        'request_time=$request_time upstream_time=$upstream_response_time';",
        f"    access_log {root / 'access.log'} balanced;",
        f"    client_body_temp_path {root / 'temp' / 'client_body'};",
        f"    proxy_temp_path {root / 'temp' / 'proxy'};",
        f"    fastcgi_temp_path {root / 'temp' / 'fastcgi'};",
        f"    uwsgi_temp_path {root / 'temp' / 'uwsgi'};",
        f"    scgi_temp_path {root / 'temp' / 'scgi'};",
        # The gateway refuses bodies over Settings.max_body_bytes itself; nginx refuses them first (413).
        f"    client_max_body_size {max_body_bytes};",
        "    server_tokens off;",
        # WebSocket upgrades (the mini-program's voice stream) pass through; other requests close upstream.
        "    map $http_upgrade $connection_upgrade { default upgrade; '' close; }",
    ]
    for upstream in upstreams:
        lines.append(f"    upstream {upstream.name} {{")
        for server in upstream.servers:
            lines.append(
                f"        server {server} max_fails={upstream.max_fails} "
                # fail_timeout takes whole seconds (no "ms").
                f"fail_timeout={max(1, round(upstream.fail_timeout_s))}s;"
            )
        lines.append("    }")
    for upstream in upstreams:
        lines += [
            "    server {",
            f"        listen {HOST}:{upstream.listen_port};",
            "        location / {",
            f"            proxy_pass http://{upstream.name};",
            "            proxy_http_version 1.1;",
            "            proxy_set_header Host $http_host;",
            "            proxy_set_header Upgrade $http_upgrade;",
            "            proxy_set_header Connection $connection_upgrade;",
            "            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
            "            proxy_set_header X-Forwarded-Proto $scheme;",
            "            proxy_set_header X-Real-IP $remote_addr;",
            # See the module docstring: a sent POST is never passed on (no `non_idempotent`).
            "            proxy_next_upstream error timeout http_502 http_503;",
            f"            proxy_next_upstream_tries {max(2, len(upstream.servers))};",
            f"            proxy_connect_timeout {_seconds(upstream.connect_timeout_s)};",
            f"            proxy_send_timeout {_seconds(upstream.read_timeout_s)};",
            f"            proxy_read_timeout {_seconds(upstream.read_timeout_s)};",
            # Replies are small JSON; streaming them through keeps the latency the gateway measured.
            "            proxy_buffering off;",
            "        }",
            "    }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


class NginxBalancer:
    """nginx in the foreground as a child process, configured from `upstreams`, everything under `root`."""

    def __init__(
        self,
        root: Path,
        upstreams: Sequence[Upstream],
        *,
        max_body_bytes: int,
        binary: Path | None = None,
        ready_timeout_s: float = 10.0,
    ) -> None:
        found = binary or find_binary()
        if found is None:
            raise RuntimeError("nginx not found (apt-get install nginx, or set BANKBOT_NGINX)")
        self.binary = found
        self.root = root.resolve()
        self.upstreams = tuple(upstreams)
        self.max_body_bytes = max_body_bytes
        self.ready_timeout_s = ready_timeout_s
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.root / "nginx.conf"

    @property
    def error_log(self) -> Path:
        return self.root / "error.log"

    @property
    def access_log(self) -> Path:
        return self.root / "access.log"

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def url(self, upstream: str) -> str:
        """http://127.0.0.1:<port> where nginx serves the named upstream group."""
        for group in self.upstreams:
            if group.name == upstream:
                return f"http://{HOST}:{group.listen_port}"
        raise KeyError(upstream)

    def __repr__(self) -> str:
        return f"<NginxBalancer {', '.join(g.name for g in self.upstreams)} running={self.running}>"

    def write_config(self) -> Path:
        """Write nginx.conf (and the temp directories) and check it with `nginx -t`."""
        temp = self.root / "temp"
        temp.mkdir(parents=True, exist_ok=True)
        worker_user = None
        if os.geteuid() == 0:
            # As root nginx runs its worker as `nobody`, which must be able to write request bodies to disk.
            worker_user = "nobody nogroup"
            nobody = pwd.getpwnam("nobody")
            for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
                (temp / name).mkdir(exist_ok=True)
                os.chown(temp / name, nobody.pw_uid, nobody.pw_gid)
        text = render_config(self.root, self.upstreams, max_body_bytes=self.max_body_bytes, worker_user=worker_user)
        self.config_path.write_text(text, encoding="utf-8")
        check = subprocess.run(
            [*self._base_command(), "-t", "-q"], capture_output=True, text=True, timeout=30, check=False
        )
        if check.returncode != 0:
            raise RuntimeError(f"nginx rejected its configuration: {check.stderr.strip()}")
        return self.config_path

    def _base_command(self) -> list[str]:
        # -e: the error log before the configuration is read (Debian's default is /var/log/nginx, not ours).
        return [str(self.binary), "-p", str(self.root), "-c", str(self.config_path), "-e", str(self.error_log)]

    def start(self) -> NginxBalancer:
        """Start nginx and return once every upstream group's port accepts connections."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.write_config()
        with open(self.root / "nginx.out", "ab") as output:
            self._process = subprocess.Popen(
                self._base_command(),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.ready_timeout_s
        waiting = [group.listen_port for group in self.upstreams]
        while waiting:
            if self._process.poll() is not None or time.monotonic() > deadline:
                tail = self.error_log.read_text(errors="replace")[-2000:] if self.error_log.exists() else ""
                self.stop()
                raise RuntimeError(f"nginx did not start: {tail or 'no output'}")
            waiting = [port for port in waiting if not _listening(port)]
            time.sleep(0.02)
        return self

    def reload(self, upstreams: Sequence[Upstream] | None = None) -> None:
        """Rewrite the configuration (new upstream servers, say) and have nginx load it without dropping
        connections (SIGHUP: new workers take over, old ones finish their requests)."""
        process = self._process
        if process is None or process.poll() is not None:
            raise RuntimeError("nginx is not running")
        if upstreams is not None:
            self.upstreams = tuple(upstreams)
        self.write_config()
        process.send_signal(signal.SIGHUP)

    def stop(self, grace: float = 10.0) -> None:
        """SIGQUIT (graceful: requests in progress finish), SIGKILL after `grace` seconds."""
        process = self._process
        if process is None:
            return
        self._process = None
        if process.poll() is None:
            process.send_signal(signal.SIGQUIT)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)

    def __enter__(self) -> NginxBalancer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((HOST, port)) == 0
