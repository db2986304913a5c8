"""Start and stop the Rasa server, the action server and the gateway as child processes, on loopback."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
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
    """Rasa's endpoints.yml for these settings: action server, tracker store, lock store."""
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
    return endpoints


@dataclass
class Service:
    name: str
    command: list[str]
    # None: a worker with no HTTP port (the reminder scheduler); it counts as ready once it is running.
    ready_url: str | None
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None


@dataclass
class Stack:
    """The three processes of a laptop deployment; `start` returns once all answer their health checks."""

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
        endpoints_file = settings.var_dir / "endpoints.yml"
        endpoints_file.write_text(yaml.safe_dump(rasa_endpoints(settings), allow_unicode=True), encoding="utf-8")
        rasa_port = urlsplit(settings.rasa_url).port or 5005
        action_port = urlsplit(settings.action_url).port or 5055
        env = subprocess_env(self.env)
        services = [
            Service(
                "rasa",
                [
                    str(self.layout.rasa_python),
                    "-m",
                    "rasa",
                    "run",
                    "--enable-api",
                    "--auth-token",
                    settings.rasa_token,
                    "--interface",
                    "127.0.0.1",
                    "--port",
                    str(rasa_port),
                    "--model",
                    str(self.model),
                    "--endpoints",
                    str(endpoints_file),
                    "--credentials",
                    str(self.layout.root / "bot" / "credentials.yml"),
                ],
                f"{settings.rasa_url}/status?token={settings.rasa_token}",
                env,
            ),
            Service(
                "actions",
                [str(self.layout.python), "-m", "rasa_sdk", "--actions", "actions", "--port", str(action_port)],
                f"http://127.0.0.1:{action_port}/health",
                {**env, "SANIC_HOST": "127.0.0.1"},
            ),
            Service(
                "gateway",
                [str(self.layout.python), "-m", "channels"],
                f"http://{settings.gateway_host}:{settings.gateway_port}/healthz",
                env,
            ),
        ]
        # The outbound-reminder worker: plans at start, then dispatches through Rasa conversations.
        if settings.scheduler_enabled:
            services.append(Service("scheduler", [str(self.layout.python), "-m", "channels.scheduler"], None, env))
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
        log_dir = self.settings.log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        for service in self.services:
            service.log = open(log_dir / f"{service.name}.out", "ab")  # noqa: SIM115 (closed in stop)
            service.process = subprocess.Popen(
                service.command,
                cwd=self.layout.root,
                env=service.env,
                stdout=service.log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        for service in self.services:
            self._wait_ready(service, deadline)

    def _wait_ready(self, service: Service, deadline: float) -> None:
        if service.ready_url is None:
            assert service.process is not None
            if service.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"{service.name} exited with {service.process.returncode}; see its log")
            return
        while time.monotonic() < deadline:
            assert service.process is not None
            if service.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"{service.name} exited with {service.process.returncode}; see its log")
            try:
                with urllib.request.urlopen(service.ready_url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"{service.name} was not ready in time")

    def stop(self, grace: float = 15.0) -> None:
        for service in reversed(self.services):
            if service.process and service.process.poll() is None:
                os.killpg(service.process.pid, signal.SIGTERM)
        for service in reversed(self.services):
            if service.process:
                try:
                    service.process.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    os.killpg(service.process.pid, signal.SIGKILL)
                    service.process.wait()
            if service.log:
                service.log.close()
        self.services = []

    def wait(self) -> int:
        """Block until a service exits (or Ctrl-C); return its exit code."""
        while True:
            for service in self.services:
                if service.process and (code := service.process.poll()) is not None:
                    return code
            time.sleep(0.5)
