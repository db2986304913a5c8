"""Start and stop the Rasa server, the action server and the gateway as child processes, on loopback."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import yaml

from bankbot.layout import ProjectLayout, subprocess_env
from bankcore.settings import Settings


def bench_env(var_dir: Path, **extra: str) -> dict[str, str]:
    """Settings for a throwaway stack a benchmark starts: SQLite under `var_dir`, free loopback ports, a fresh
    secret, and no reminder worker (it would open conversations of its own while the bench measures)."""
    return {
        "BANKBOT_VAR_DIR": str(var_dir),
        "BANKBOT_DATABASE_URL": f"sqlite:///{var_dir / 'bank.db'}",
        "BANKBOT_RASA_URL": f"http://127.0.0.1:{free_port()}",
        "BANKBOT_ACTION_URL": f"http://127.0.0.1:{free_port()}/webhook",
        "BANKBOT_GATEWAY_PORT": str(free_port()),
        "BANKBOT_SECRET_KEY": secrets.token_hex(32),
        "BANKBOT_SCHEDULER": "0",
        **extra,
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rasa_endpoints(settings: Settings) -> dict[str, object]:
    """Rasa's endpoints.yml for these settings: action server, tracker store, lock store, event broker."""
    endpoints: dict[str, object] = {"action_endpoint": {"url": settings.action_url}}
    url = urlsplit(settings.database_url)
    if url.scheme.startswith("postgresql"):
        endpoints["tracker_store"] = {
            "type": "SQL",
            "dialect": "postgresql",
            "url": url.hostname or "127.0.0.1",
            "port": url.port or 5432,
            "username": url.username or "",
            "password": url.password or "",
            "db": url.path.lstrip("/"),
        }
    else:
        endpoints["tracker_store"] = {"type": "SQL", "dialect": "sqlite", "db": str(settings.var_dir / "tracker.db")}
    if settings.redis_url:
        redis = urlsplit(settings.redis_url)
        endpoints["lock_store"] = {
            "type": "redis",
            "url": redis.hostname or "127.0.0.1",
            "port": redis.port or 6379,
            "db": int(redis.path.lstrip("/") or 0),
            **({"password": redis.password} if redis.password else {}),
        }
    if settings.amqp_url:
        endpoints["event_broker"] = pika_event_broker(settings.amqp_url, settings.amqp_queue, settings.amqp_exchange)
    return endpoints


def pika_event_broker(amqp_url: str, queue: str, exchange: str) -> dict[str, object]:
    """Rasa's `pika` event broker publishing to `exchange` (fanout) bound to the durable `queue`, from an
    amqp://user:password@host:port/vhost URL (query parameters such as heartbeat=10 are kept).

    Rasa joins `url`, `username`, `password` and `port` back into one URL for aio-pika (rasa/core/brokers/pika.py,
    `_configure_url`), so the vhost rides in `url`'s path and percent-encoded credentials stay encoded.
    `raise_on_failure: false`: a publish that fails is kept in Rasa's memory and sent again once the connection
    is back, and a turn never fails because the broker is down. Rasa connects at start (20 tries, 5 s apart) and
    does not start without the broker."""
    amqp = urlsplit(amqp_url)
    port = amqp.port or 5672
    vhost = amqp.path if amqp.path not in ("", "/") else ""
    query = f"?{amqp.query}" if amqp.query else ""
    return {
        "type": "pika",
        "url": f"{amqp.scheme or 'amqp'}://{amqp.hostname or '127.0.0.1'}:{port}{vhost}{query}",
        "username": amqp.username or "guest",
        "password": amqp.password or "guest",
        "port": port,
        "queues": [queue],
        "exchange_name": exchange,
        "raise_on_failure": False,
    }


@dataclass
class Service:
    """One child process: its command, environment and readiness check; started in a process group of its own
    so that a signal reaches everything it spawned."""

    name: str
    command: list[str]
    # None: a worker with no HTTP port (the reminder scheduler); it counts as ready once it is running.
    ready_url: str | None
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    # Stopped and reaped: its process group id may belong to someone else by now, so no more signals.
    reaped: bool = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def launch(self, cwd: Path, log_dir: Path) -> None:
        """Start the process, appending its output to `<log_dir>/<name>.out`."""
        log_dir.mkdir(parents=True, exist_ok=True)
        if self.log is None or self.log.closed:
            self.log = open(log_dir / f"{self.name}.out", "ab")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            self.command,
            cwd=cwd,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.reaped = False

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def is_ready(self) -> bool:
        """Running, and its ready URL (if any) answers 200."""
        if not self.running():
            return False
        if self.ready_url is None:
            return True
        try:
            with urllib.request.urlopen(self.ready_url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, deadline: float) -> None:
        """Return once ready; RuntimeError when the process exits first, TimeoutError at `deadline`."""
        while True:
            assert self.process is not None, f"{self.name} was not launched"
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see its log")
            if self.is_ready():
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.name} was not ready in time")
            time.sleep(0.5)

    def signal(self, signum: int) -> None:
        """Send `signum` to the service's process group (a no-op once all of it is gone)."""
        if self.process is None or self.reaped:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def wait_exit(self, grace: float) -> None:
        """Wait `grace` seconds for the process to exit, then SIGKILL its group; closes the log."""
        if self.process is not None:
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.process.wait()
            # Whatever the leader left behind in its group goes with it.
            self.signal(signal.SIGKILL)
            self.reaped = True
        if self.log is not None:
            self.log.close()

    def stop(self, grace: float = 15.0) -> None:
        if self.running():
            self.signal(signal.SIGTERM)
        self.wait_exit(grace)


def start_services(services: Sequence[Service], cwd: Path, log_dir: Path, timeout: float) -> None:
    """Launch all the services at once, then wait for each to be ready; on a failure stop them all and raise."""
    try:
        for service in services:
            service.launch(cwd, log_dir)
        deadline = time.monotonic() + timeout
        for service in services:
            service.wait_ready(deadline)
    except BaseException:
        stop_services(services)
        raise


def stop_services(services: Sequence[Service], grace: float = 15.0) -> None:
    """SIGTERM every service (the last started first), then wait for each, SIGKILL after `grace`."""
    for service in reversed(services):
        if service.running():
            service.signal(signal.SIGTERM)
    for service in reversed(services):
        service.wait_exit(grace)


def rasa_service(
    layout: ProjectLayout,
    settings: Settings,
    env: dict[str, str],
    model: Path,
    endpoints_file: Path,
    *,
    name: str = "rasa",
    url: str | None = None,
) -> Service:
    """A Rasa server on loopback serving `model`, with its API behind the settings' token; `url` (default the
    settings' rasa_url) says its port."""
    base = (url or settings.rasa_url).rstrip("/")
    return Service(
        name,
        [
            str(layout.rasa_python),
            "-m",
            "rasa",
            "run",
            "--enable-api",
            "--auth-token",
            settings.rasa_token,
            "--interface",
            "127.0.0.1",
            "--port",
            str(urlsplit(base).port or 5005),
            "--model",
            str(model),
            "--endpoints",
            str(endpoints_file),
            "--credentials",
            str(layout.root / "bot" / "credentials.yml"),
        ],
        f"{base}/status?token={settings.rasa_token}",
        env,
    )


def action_service(layout: ProjectLayout, env: dict[str, str], port: int, *, name: str = "actions") -> Service:
    """A rasa-sdk action server running our actions package on 127.0.0.1:`port`."""
    return Service(
        name,
        [str(layout.python), "-m", "rasa_sdk", "--actions", "actions", "--port", str(port)],
        f"http://127.0.0.1:{port}/health",
        {**env, "SANIC_HOST": "127.0.0.1"},
    )


def gateway_service(
    layout: ProjectLayout, settings: Settings, env: dict[str, str], *, name: str = "gateway"
) -> Service:
    """The channel gateway on the settings' host and port; ready once `/readyz` passes (its database, Rasa
    and, when configured, Redis answer), not merely `/healthz` (the process is alive)."""
    return Service(
        name,
        [str(layout.python), "-m", "channels"],
        f"http://{settings.gateway_host}:{settings.gateway_port}/readyz",
        env,
    )


def scheduler_service(layout: ProjectLayout, env: dict[str, str], *, name: str = "scheduler") -> Service:
    """The outbound-reminder worker: plans at start, then dispatches through Rasa conversations."""
    return Service(name, [str(layout.python), "-m", "channels.scheduler"], None, env)


def event_relay_service(layout: ProjectLayout, env: dict[str, str], *, name: str = "event-relay") -> Service:
    """The relay from Rasa's event broker (RabbitMQ) into the cross-channel event store; a worker, no HTTP port
    of its own (its metrics port, when set, is not a readiness check: the relay waits for the broker)."""
    return Service(name, [str(layout.python), "-m", "channels.event_relay"], None, env)


def write_rasa_endpoints(settings: Settings, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(rasa_endpoints(settings), allow_unicode=True), encoding="utf-8")
    return path


def prepare_database(settings: Settings) -> bool:
    """Migrate the shared database, seed the sandbox bank when it is empty and record today's core facts: once,
    before any process starts (`bankbot run`, `bankbot cluster run`), so that several instances never race to
    create the schema or the demo customers. True when it seeded."""
    from bankcore.core_facts import record_core_facts
    from bankcore.database import make_engine, make_session_factory, migrate, unit_of_work
    from bankcore.sandbox import seed_demo_if_empty

    migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        factory = make_session_factory(engine)
        with unit_of_work(factory) as session:
            seeded = seed_demo_if_empty(session, pin_key=settings.secret_key)
        with unit_of_work(factory) as session:
            # Failed transfers, dues and expiring cards become cross-channel events the foresight model reads.
            record_core_facts(session, dt.datetime.now(dt.UTC))
    finally:
        engine.dispose()
    return seeded is not None


@dataclass
class Stack:
    """The processes of a laptop deployment; `start` returns once all answer their health checks."""

    layout: ProjectLayout
    env: dict[str, str]
    model: Path
    services: list[Service] = field(default_factory=list)
    # Start only these services (by name); None: all of them. A bench that plays Rasa itself runs the gateway alone.
    only: frozenset[str] | None = None

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    def _plan(self) -> list[Service]:
        settings = self.settings
        settings.var_dir.mkdir(parents=True, exist_ok=True)
        endpoints_file = write_rasa_endpoints(settings, settings.var_dir / "endpoints.yml")
        action_port = urlsplit(settings.action_url).port or 5055
        env = subprocess_env(self.env)
        services = [
            rasa_service(self.layout, settings, env, self.model, endpoints_file),
            action_service(self.layout, env, action_port),
            gateway_service(self.layout, settings, env),
        ]
        if settings.scheduler_enabled:
            services.append(scheduler_service(self.layout, env))
        if settings.amqp_url:
            services.append(event_relay_service(self.layout, env))
        if settings.vosk_model_path is not None:
            # Speech recognition for telephony integrations (vosk-server's WebSocket protocol), only when a
            # model is configured: without one the assistant serves text channels alone.
            services.append(
                Service(
                    "asr",
                    [str(self.layout.python), "-m", "bankbot", "voice", "serve-asr"],
                    f"http://{settings.asr_host}:{settings.asr_port}/healthz",
                    env,
                )
            )
        return services

    def start(self, timeout: float = 240.0) -> None:
        self.services = [service for service in self._plan() if self.only is None or service.name in self.only]
        start_services(self.services, self.layout.root, self.settings.log_dir, timeout)

    def stop(self, grace: float = 15.0) -> None:
        stop_services(self.services, grace)
        self.services = []

    def wait(self) -> int:
        """Block until a service exits (or Ctrl-C); return its exit code."""
        while True:
            for service in self.services:
                if service.process and (code := service.process.poll()) is not None:
                    return code
            time.sleep(0.5)
