"""The process machinery `bankbot run` and the cluster share: a service and everything it spawned stop together."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from bankbot.stack import Service, free_port, start_services, stop_services


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _children_file(tmp_path: Path) -> Path:
    return tmp_path / "child.pid"


def spawning_service(tmp_path: Path, name: str = "worker") -> Service:
    """A shell that starts a background child (writing its pid) and waits: like a server with workers."""
    script = f"sleep 300 & echo $! > {_children_file(tmp_path)}; wait"
    return Service(name, ["bash", "-c", script], None, {"PATH": "/usr/bin:/bin"})


def _child_pid(tmp_path: Path) -> int:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        text = _children_file(tmp_path).read_text().strip() if _children_file(tmp_path).exists() else ""
        if text:
            return int(text)
        time.sleep(0.02)
    raise AssertionError("the child did not start")


def test_stop_ends_the_service_and_what_it_spawned(tmp_path: Path) -> None:
    service = spawning_service(tmp_path)
    start_services([service], tmp_path, tmp_path / "logs", timeout=10)
    assert service.pid is not None and service.is_ready()
    child = _child_pid(tmp_path)
    stop_services([service], grace=5)
    assert not _alive(service.pid) and not _alive(child)
    assert (tmp_path / "logs" / "worker.out").exists()
    # Signalling a stopped service is a no-op (its process group id may be someone else's by now).
    service.signal(signal.SIGKILL)


def test_a_killed_service_is_launched_again_with_the_same_command(tmp_path: Path) -> None:
    service = spawning_service(tmp_path)
    start_services([service], tmp_path, tmp_path / "logs", timeout=10)
    first = service.pid
    assert first is not None
    service.signal(signal.SIGKILL)
    assert service.process is not None
    service.process.wait(timeout=5)
    assert not service.running()
    service.stop(grace=1)
    service.launch(tmp_path, tmp_path / "logs")
    service.wait_ready(time.monotonic() + 5)
    assert service.running() and service.pid != first
    service.stop(grace=5)


def test_a_service_that_never_gets_ready_stops_all(tmp_path: Path) -> None:
    port = free_port()
    never = Service("never", [sys.executable, "-c", "import time; time.sleep(60)"], f"http://127.0.0.1:{port}/", {})
    worker = spawning_service(tmp_path)
    with pytest.raises(TimeoutError):
        start_services([worker, never], tmp_path, tmp_path / "logs", timeout=1.5)
    assert not worker.running() and not never.running()
