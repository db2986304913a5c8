"""`bankbot run` (what `make run` calls): seeds the bank, starts all three services, answers, and Ctrl-C stops all."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bankbot.layout import ProjectLayout, subprocess_env
from bankbot.stack import free_port
from bankbot.training import ensure_trained

pytestmark = pytest.mark.rasa

STARTUP_SECONDS = 300


def _post(url: str, body: dict[str, Any], token: str | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_run_serves_a_turn_and_ctrl_c_stops_every_service(tmp_path: Path) -> None:
    ensure_trained(ProjectLayout(), log=False)
    ports = {"rasa": free_port(), "actions": free_port(), "gateway": free_port()}
    env = subprocess_env(
        {
            "BANKBOT_VAR_DIR": str(tmp_path),
            "BANKBOT_DATABASE_URL": f"sqlite:///{tmp_path / 'bank.db'}",
            "BANKBOT_RASA_URL": f"http://127.0.0.1:{ports['rasa']}",
            "BANKBOT_ACTION_URL": f"http://127.0.0.1:{ports['actions']}/webhook",
            "BANKBOT_GATEWAY_HOST": "127.0.0.1",
            "BANKBOT_GATEWAY_PORT": str(ports["gateway"]),
            "BANKBOT_SECRET_KEY": secrets.token_hex(32),
            "BANKBOT_DEV_LOGIN": "1",
        }
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "bankbot", "run"],
        cwd=ProjectLayout().root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            output.append(line)
            if "ready" in line:
                break
        assert any("ready" in line for line in output), "".join(output)
        assert any("seeded" in line for line in output), "".join(output)
        # Keep reading what the services print: a full pipe would block them, and Ctrl-C could not finish.
        drain = threading.Thread(target=lambda: output.extend(process.stdout or ()), daemon=True)
        drain.start()

        gateway = f"http://127.0.0.1:{ports['gateway']}"
        token = _post(f"{gateway}/webchat/session", {"customer_id": "C001"})["token"]
        reply = _post(f"{gateway}/webchat/messages", {"text": "我的余额是多少"}, token)
        assert "52,380.50" in " ".join(m["text"] for m in reply["messages"])

        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("bankbot run did not stop within 60 s of Ctrl-C; its output:\n" + "".join(output[-60:]))
        assert code == 0, "".join(output[-60:])
        assert not any(_listening(port) for port in ports.values()), ports
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
