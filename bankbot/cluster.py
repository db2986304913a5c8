"""The cluster profile on one machine: PostgreSQL, Redis, RabbitMQ and nginx, and several instances of every process.

Every instance runs the same code as `bankbot run`; only settings differ (docs/cluster.md). The engines are
Debian's binaries started by the project under one directory (default var/cluster/), whose data survives a
restart of the cluster. The processes are `bankbot.stack.Service`s, so they start, wait and stop as in `Stack`.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bankbot.engines.nginx import NginxBalancer, Upstream
from bankbot.engines.postgres_server import PostgresServer
from bankbot.engines.rabbitmq_server import RabbitMQServer
from bankbot.engines.redis_server import RedisServer
from bankbot.layout import ProjectLayout, subprocess_env
from bankbot.stack import (
    Service,
    action_service,
    event_relay_service,
    free_port,
    gateway_service,
    prepare_database,
    rasa_service,
    scheduler_service,
    start_services,
    stop_services,
    write_rasa_endpoints,
)
from bankcore.settings import PROJECT_ROOT, Settings

DEFAULT_ROOT = PROJECT_ROOT / "var" / "cluster"
DATABASE_NAME = "bankbot"
# nginx waits longer than the gateway's longest request: a turn tries up to two Rasa servers, each with a tracker
# look-up and the turn itself under the Rasa client's 15 s (60 s), after recognising up to 60 s of a voice message.
GATEWAY_READ_TIMEOUT_S = 120.0
# Rasa waits up to 5 minutes for an action (rasa.core.constants.DEFAULT_REQUEST_TIMEOUT): nginx must not cut
# an action short before Rasa would.
ACTION_READ_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class ClusterSize:
    """How many instances of each process; 1 is allowed everywhere (the bench compares one and two Rasa servers)."""

    rasa: int = 2
    actions: int = 2
    gateways: int = 2
    schedulers: int = 2
    # Event relays: competing consumers of Rasa's event queue on RabbitMQ.
    relays: int = 1

    def __post_init__(self) -> None:
        for name in ("rasa", "actions", "gateways"):
            if getattr(self, name) < 1:
                raise ValueError(f"the cluster needs at least one of {name}")
        if self.schedulers < 0 or self.relays < 0:
            raise ValueError("instance counts cannot be negative")


class Cluster:
    """The engines and the instances under `root`; `start` returns once every instance is ready.

    `env`: BANKBOT_* settings every instance gets (the cluster sets the database, Redis, RabbitMQ, Rasa and
    action URLs and the ports itself). `public_port`: where nginx serves the gateways (None: a free port).
    Instances are named `rasa-1`, `actions-2`, `gateway-1`, `scheduler-2`, `relay-1`…; their output goes to
    `<root>/logs/<name>.out` and their own log files to `<root>/logs/<name>/`.
    """

    def __init__(
        self,
        layout: ProjectLayout,
        model: Path,
        *,
        root: Path = DEFAULT_ROOT,
        size: ClusterSize | None = None,
        env: Mapping[str, str] | None = None,
        public_port: int | None = None,
        log: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.layout = layout
        self.model = model
        self.root = root.resolve()
        self.size = size or ClusterSize()
        self.extra_env = {key: value for key, value in (env or {}).items() if key.startswith("BANKBOT_")}
        self.public_port = public_port or free_port()
        self.log = log
        self.postgres: PostgresServer | None = None
        self.redis: RedisServer | None = None
        self.rabbitmq: RabbitMQServer | None = None
        self.nginx: NginxBalancer | None = None
        self.services: dict[str, Service] = {}
        self.settings: Settings | None = None
        # Seconds each phase of the last start took (engines, database, nginx, instances).
        self.timings: dict[str, float] = {}

    # -- where things are ------------------------------------------------------------------------------------

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.public_port}"

    @property
    def action_url(self) -> str:
        """The action servers behind nginx, as Rasa's endpoints.yml names them."""
        assert self.nginx is not None, "not started"
        return self.nginx.url("actions") + "/webhook"

    def names(self, kind: str | None = None) -> list[str]:
        """Instance names in start order; `kind` ("rasa", "actions", "gateway", "scheduler", "relay") filters."""
        return [name for name in self.services if kind is None or name.rsplit("-", 1)[0] == kind]

    def url(self, name: str) -> str:
        """An instance's own base URL (not through nginx); KeyError for a worker without one."""
        ready = self.services[name].ready_url
        if ready is None:
            raise KeyError(f"{name} has no URL")
        scheme, _, rest = ready.partition("://")
        return f"{scheme}://{rest.split('/', 1)[0]}"

    def pid(self, name: str) -> int | None:
        """The instance's process id while it runs."""
        service = self.services[name]
        return service.pid if service.running() else None

    def pids(self) -> dict[str, int]:
        """Every running process the cluster started: instances, nginx and the engines."""
        found = {name: pid for name in self.services if (pid := self.pid(name)) is not None}
        engines: dict[str, int | None] = {
            "nginx": self.nginx.pid if self.nginx else None,
            "postgres": self.postgres.pid if self.postgres else None,
            "redis": self.redis.pid if self.redis else None,
            "rabbitmq": self.rabbitmq.pid if self.rabbitmq else None,
        }
        found.update({name: pid for name, pid in engines.items() if pid is not None})
        return found

    def is_ready(self, name: str) -> bool:
        return self.services[name].is_ready()

    # -- faults ----------------------------------------------------------------------------------------------

    def kill(self, name: str, signum: int = signal.SIGKILL) -> None:
        """Send `signum` to the instance's process group (SIGKILL: a crash; SIGSTOP/SIGCONT: a stall)."""
        self.services[name].signal(signum)
        if signum == signal.SIGKILL:
            service = self.services[name]
            assert service.process is not None
            service.process.wait(timeout=30)

    def restart(self, name: str, timeout: float = 240.0) -> None:
        """Stop the instance (if it still runs) and start it again with the same command, port and settings;
        returns once it is ready."""
        service = self.services[name]
        service.signal(signal.SIGCONT)  # a stalled process must run to act on SIGTERM
        service.stop(grace=15.0)
        service.launch(self.layout.root, self.log_dir)
        try:
            service.wait_ready(time.monotonic() + timeout)
        except (RuntimeError, TimeoutError):
            service.stop(grace=5.0)
            raise

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self, timeout: float = 360.0) -> Cluster:
        """Start the engines, prepare the database, start nginx and every instance; return when all are ready.
        On a failure everything started so far is stopped and the error raised."""
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # PostgreSQL runs as the postgres user and must reach <root>/postgres: let others through the root
            # (search only; a temporary directory is 0700). The directories above it must allow it too.
            self.root.chmod(self.root.stat().st_mode | 0o011)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        self._start_engines()
        self.timings["engines"] = time.monotonic() - began

        phase = time.monotonic()
        assert self.postgres is not None and self.redis is not None and self.rabbitmq is not None
        database_url = self.postgres.ensure_database(DATABASE_NAME)
        base = {
            **self.extra_env,
            "BANKBOT_VAR_DIR": str(self.root),
            "BANKBOT_DATABASE_URL": database_url,
            "BANKBOT_REDIS_URL": self.redis.url,
            "BANKBOT_AMQP_URL": self.rabbitmq.url,
        }
        # Every instance must sign and check web chat tokens and call Rasa with the same secret.
        base["BANKBOT_SECRET_KEY"] = Settings.from_env(base).secret_key
        # The phone line (UDP) is not balanced by nginx: several gateways cannot share one SIP port.
        base.setdefault("BANKBOT_SIP_PORT", "0")
        base.setdefault("BANKBOT_AUDIOSOCKET_PORT", "0")
        rasa_urls = [f"http://127.0.0.1:{free_port()}" for _ in range(self.size.rasa)]
        gateway_ports = [free_port() for _ in range(self.size.gateways)]
        action_ports = [free_port() for _ in range(self.size.actions)]
        action_balancer_port = free_port()
        base.update(
            {
                "BANKBOT_RASA_URL": rasa_urls[0],
                "BANKBOT_RASA_URLS": ",".join(rasa_urls),
                "BANKBOT_ACTION_URL": f"http://127.0.0.1:{action_balancer_port}/webhook",
                "BANKBOT_GATEWAY_HOST": "127.0.0.1",
            }
        )
        settings = Settings.from_env(base)
        self.settings = settings
        seeded = prepare_database(settings)
        if seeded:
            self.log("sandbox bank seeded with the demo customers (C001-C004)")
        endpoints_file = write_rasa_endpoints(settings, self.root / "endpoints.yml")
        self.timings["database"] = time.monotonic() - phase

        phase = time.monotonic()
        self.nginx = NginxBalancer(
            self.root / "nginx",
            [
                Upstream(
                    "gateways",
                    self.public_port,
                    tuple(f"127.0.0.1:{port}" for port in gateway_ports),
                    read_timeout_s=GATEWAY_READ_TIMEOUT_S,
                ),
                Upstream(
                    "actions",
                    action_balancer_port,
                    tuple(f"127.0.0.1:{port}" for port in action_ports),
                    read_timeout_s=ACTION_READ_TIMEOUT_S,
                ),
            ],
            max_body_bytes=settings.max_body_bytes,
        ).start()
        self.timings["nginx"] = time.monotonic() - phase

        phase = time.monotonic()
        services: list[Service] = []

        def env_for(name: str, **overrides: str) -> dict[str, str]:
            # Each instance's own log files (gateway.log, actions.log…) in a folder of its own.
            return subprocess_env({**base, "BANKBOT_LOG_DIR": str(self.log_dir / name), **overrides})

        for number, url in enumerate(rasa_urls, 1):
            name = f"rasa-{number}"
            services.append(
                rasa_service(self.layout, settings, env_for(name), self.model, endpoints_file, name=name, url=url)
            )
        for number, port in enumerate(action_ports, 1):
            name = f"actions-{number}"
            services.append(action_service(self.layout, env_for(name), port, name=name))
        for number, port in enumerate(gateway_ports, 1):
            name = f"gateway-{number}"
            env = env_for(name, BANKBOT_GATEWAY_PORT=str(port))
            services.append(gateway_service(self.layout, Settings.from_env(env), env, name=name))
        for number in range(1, self.size.schedulers + 1):
            name = f"scheduler-{number}"
            services.append(scheduler_service(self.layout, env_for(name), name=name))
        for number in range(1, self.size.relays + 1):
            name = f"relay-{number}"
            services.append(event_relay_service(self.layout, env_for(name), name=name))
        self.services = {service.name: service for service in services}
        start_services(services, self.layout.root, self.log_dir, timeout)
        self.timings["instances"] = time.monotonic() - phase
        self.timings["total"] = time.monotonic() - began

    def _start_engines(self) -> None:
        state = self._engine_state()
        self.postgres = PostgresServer(root=self.root / "postgres", max_connections=400)
        self.redis = RedisServer(root=self.root / "redis")
        self.rabbitmq = RabbitMQServer(
            root=self.root / "rabbitmq", password=state["rabbitmq_password"], nodename=state["rabbitmq_nodename"]
        )
        engines: list[PostgresServer | RedisServer | RabbitMQServer] = [self.postgres, self.redis, self.rabbitmq]
        # Independent of each other; RabbitMQ's Erlang VM takes the longest.
        with ThreadPoolExecutor(max_workers=len(engines)) as pool:
            futures = [pool.submit(engine.start) for engine in engines]
            errors = [error for future in futures if (error := future.exception()) is not None]
        if errors:
            raise errors[0]

    def _engine_state(self) -> dict[str, str]:
        """What a kept RabbitMQ directory was created with (its node name and password), made on first start."""
        path = self.root / "cluster.json"
        if path.exists():
            state: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
            return state
        state = {
            "rabbitmq_nodename": f"bankbot-{secrets.token_hex(4)}@localhost",
            "rabbitmq_password": secrets.token_urlsafe(18),
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(state, handle)
        return state

    def stop(self, grace: float = 15.0) -> None:
        """Stop every instance (the last started first), then nginx and the engines. Safe to call twice."""
        began = time.monotonic()
        for service in self.services.values():
            service.signal(signal.SIGCONT)  # a stalled instance must run to act on SIGTERM
        stop_services(list(self.services.values()), grace)
        for engine in (self.nginx, self.rabbitmq, self.redis, self.postgres):
            if engine is not None:
                engine.stop()
        self.timings["stop"] = time.monotonic() - began

    def exited(self) -> Iterator[tuple[str, int]]:
        """The instances that are no longer running, with their exit codes."""
        for name, service in self.services.items():
            if service.process is not None and (code := service.process.poll()) is not None:
                yield name, code

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
