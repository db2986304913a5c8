"""The cluster profile end to end: every instance ready behind nginx, any Rasa server can serve any turn of a
conversation, a killed Rasa server or gateway does not end a conversation, and stopping leaves no process.

One cluster for the whole module (two Rasa servers take about a minute to load). The tests run in file order:
the later ones kill instances. docs/cluster.md describes this topology; this test keeps it true.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bankbot.cluster import Cluster, ClusterSize
from bankbot.engines.nginx import find_binary as find_nginx
from bankbot.engines.postgres_server import find_bin_dir
from bankbot.engines.rabbitmq_server import find_scripts_dir
from bankbot.engines.redis_server import find_binary as find_redis
from bankbot.layout import ProjectLayout

pytestmark = [
    pytest.mark.rasa,
    pytest.mark.pg,
    pytest.mark.redis,
    pytest.mark.cluster,
    pytest.mark.timeout(600),
]


def _missing_engines() -> list[str]:
    found = {
        "postgresql": find_bin_dir(),
        "redis-server": find_redis(),
        "rabbitmq-server": find_scripts_dir(),
        "nginx": find_nginx(),
    }
    return [name for name, path in found.items() if path is None]


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process on the machine."""
    table: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # The command name in parentheses may hold spaces: the fields after its closing parenthesis are fixed.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        table[int(entry.name)] = (ppid, cmdline)
    return table


def _descendants(roots: set[int], table: dict[int, tuple[int, str]]) -> set[int]:
    found = set(roots) & set(table)
    grew = True
    while grew:
        more = {pid for pid, (ppid, _) in table.items() if ppid in found and pid not in found}
        found |= more
        grew = bool(more)
    return found


def _rss_bytes(pids: set[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    missing = _missing_engines()
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (tools/ensure-apt.sh installs them)")
    from bankbot.foresight_demo import ensure_demo_model
    from bankbot.training import ensure_trained

    layout = ProjectLayout()
    model = ensure_trained(layout, log=False)
    env = {
        "BANKBOT_DEV_LOGIN": "1",
        "BANKBOT_SECRET_KEY": secrets.token_hex(32),
        "BANKBOT_WEBCHAT_RATE_LIMIT_PER_MINUTE": "0",
        "BANKBOT_FORESIGHT_MODEL_DIR": str(ensure_demo_model(layout, log=False)),
    }
    # Not under pytest's own temporary directory: it is private to root, and PostgreSQL runs as its own user.
    root = Path(tempfile.mkdtemp(prefix="bankbot-cluster-"))
    root.chmod(0o755)
    # Children this process had before (another module's stack): not the cluster's to stop.
    _children_before.update(_descendants({os.getpid()}, _proc_table()))
    started = time.monotonic()
    running = Cluster(layout, model, root=root, size=ClusterSize(), env=env).start()
    seconds = time.monotonic() - started
    rss = _rss_bytes(_descendants(set(running.pids().values()), _proc_table()))
    timings = ", ".join(f"{phase} {value:.1f} s" for phase, value in running.timings.items())
    print(
        f"\ncluster started in {seconds:.1f} s ({timings}); {len(running.pids())} processes, RSS {rss / 2**30:.2f} GiB"
    )
    try:
        yield running
    finally:
        running.stop()
        shutil.rmtree(root, ignore_errors=True)


class WebChat:
    """A customer on the web chat API (as the H5 page uses it), through a chosen base URL."""

    def __init__(self, base_url: str, customer_id: str) -> None:
        self.base_url = base_url
        self.customer_id = customer_id
        status, body = self.post("/webchat/session", {"customer_id": customer_id})
        assert status == 200, (status, body)
        self.token = str(body["token"])

    def post(self, path: str, body: dict[str, Any], token: str | None = None) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(
            self.base_url + path, data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def say(self, text: str) -> str:
        # A message id, as the page sends one: a turn retried after a failover is answered once.
        status, body = self.post("/webchat/messages", {"text": text, "message_id": uuid.uuid4().hex}, self.token)
        assert status == 200, (status, body)
        return "\n".join(str(m.get("text") or "") for m in body["messages"])


def restart_conversation(cluster: Cluster, rasa: str, sender_id: str) -> None:
    """Rasa's restart event, so a test starts from a fresh conversation whatever ran before."""
    assert cluster.settings is not None
    url = f"{cluster.url(rasa)}/conversations/{sender_id}/tracker/events?token={cluster.settings.rasa_token}"
    request = urllib.request.Request(
        url, data=json.dumps({"event": "restart"}).encode(), headers={"Content-Type": "application/json"}
    )
    urllib.request.urlopen(request, timeout=30).close()


def rasa_turn(cluster: Cluster, rasa: str, sender_id: str, customer_id: str, text: str) -> str:
    """One turn straight to one Rasa server's REST channel, with the metadata the gateway would add."""
    assert cluster.settings is not None
    body = {"sender": sender_id, "message": text, "metadata": {"customer_id": customer_id, "channel": "webchat"}}
    request = urllib.request.Request(
        f"{cluster.url(rasa)}/webhooks/rest/webhook?token={cluster.settings.rasa_token}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return "\n".join(str(m.get("text") or "") for m in json.loads(response.read()))


def get_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def serving_rasa(cluster: Cluster, sender_id: str) -> str:
    """The Rasa instance the gateways prefer for this conversation (rendezvous hashing over BANKBOT_RASA_URLS)."""
    from channels.rasa_client import RasaClient

    assert cluster.settings is not None
    # No request is made: no HTTP session is needed to rank the servers.
    client = RasaClient(None, list(cluster.settings.rasa_urls), "")  # type: ignore[arg-type]
    preferred = str(client.servers_for(sender_id)[0]).rstrip("/")
    return next(name for name in cluster.names("rasa") if cluster.url(name) == preferred)


_children_before: set[int] = set()


def test_every_instance_is_ready_behind_nginx(cluster: Cluster) -> None:
    size = cluster.size
    assert len(cluster.names("rasa")) == size.rasa == 2
    assert len(cluster.names("actions")) == size.actions == 2
    assert len(cluster.names("gateway")) == size.gateways == 2
    assert len(cluster.names("scheduler")) == size.schedulers == 2
    assert len(cluster.names("relay")) == size.relays == 1
    for name in cluster.names():
        assert cluster.is_ready(name), name
        assert (cluster.log_dir / f"{name}.out").exists()
    pids = cluster.pids()
    assert {"nginx", "postgres", "redis", "rabbitmq"} <= set(pids)
    assert len(set(pids.values())) == len(pids)
    # The public port and the action port are nginx; both balance over live instances.
    assert get_status(cluster.public_url + "/readyz") == 200
    assert cluster.nginx is not None
    assert get_status(cluster.nginx.url("actions") + "/health") == 200
    # Rasa uses the shared engines: SQL tracker store on PostgreSQL, Redis lock store, pika event broker.
    endpoints = (cluster.root / "endpoints.yml").read_text(encoding="utf-8")
    assert "dialect: postgresql" in endpoints and "type: redis" in endpoints and "type: pika" in endpoints
    assert cluster.action_url in endpoints


def test_a_web_chat_conversation_through_the_public_port(cluster: Cluster) -> None:
    restart_conversation(cluster, "rasa-1", "webchat:C001")
    customer = WebChat(cluster.public_url, "C001")
    assert "王先生" in customer.say("你好")
    reply = customer.say("查一下最近的交易明细")
    assert "交易明细" in reply and "余额" in reply
    # Both gateways answered some of the requests nginx spread (its access log names the upstream).
    assert cluster.nginx is not None
    upstreams = {
        part.split("=", 1)[1]
        for line in cluster.nginx.access_log.read_text().splitlines()
        for part in line.split()
        if part.startswith("upstream=")
    }
    gateways = {cluster.url(name).removeprefix("http://") for name in cluster.names("gateway")}
    assert gateways <= upstreams, (gateways, upstreams)
    # Rasa published the conversation's events to RabbitMQ; the relay consumes the queue to empty.
    assert cluster.rabbitmq is not None and cluster.settings is not None
    deadline = time.monotonic() + 60
    while (depth := cluster.rabbitmq.queue_depths().get(cluster.settings.amqp_queue)) != (0, 0):
        assert time.monotonic() < deadline, f"queue {cluster.settings.amqp_queue}: {depth} (ready, unacked)"
        time.sleep(1)


def test_consecutive_turns_on_different_rasa_servers_continue_one_conversation(cluster: Cluster) -> None:
    sender = f"cluster-test:{uuid.uuid4().hex[:8]}"
    # The branch form asks for the city on one server; the other server, reading the same tracker under the
    # same lock, fills the form with the answer.
    assert "城市" in rasa_turn(cluster, "rasa-1", sender, "C003", "附近的网点在哪")
    assert "浦东" in rasa_turn(cluster, "rasa-2", sender, "C003", "上海浦东")
    assert "朝阳" in rasa_turn(cluster, "rasa-1", sender, "C003", "北京朝阳区有没有网点")


def test_a_killed_rasa_server_does_not_end_the_conversation(cluster: Cluster) -> None:
    sender = "webchat:C003"
    restart_conversation(cluster, "rasa-1", sender)
    customer = WebChat(cluster.public_url, "C003")
    assert "描述" in customer.say("我要投诉")
    serving = serving_rasa(cluster, sender)
    cluster.kill(serving, signal.SIGKILL)
    assert cluster.pid(serving) is None
    # The gateway finds it gone and sends the turn to the other server, which continues the complaint form.
    assert "已记录" in customer.say("你们网点排队两个小时都没人管，太差了")
    assert "王先生" in WebChat(cluster.public_url, "C001").say("你好")


def test_a_killed_gateway_does_not_end_the_conversation(cluster: Cluster) -> None:
    restart_conversation(cluster, next(n for n in cluster.names("rasa") if cluster.pid(n)), "webchat:C002")
    customer = WebChat(cluster.public_url, "C002")
    assert "城市" in customer.say("附近的网点在哪")
    cluster.kill("gateway-1", signal.SIGKILL)
    assert cluster.pid("gateway-1") is None
    # nginx finds gateway-1 refusing connections and passes each request to gateway-2 (nothing was sent).
    assert "浦东" in customer.say("上海浦东")
    for _ in range(3):
        assert "朝阳" in customer.say("北京朝阳区有没有网点")
    # Round robin sent one of those to gateway-1: refused, passed on (nginx logs both upstreams of that request).
    assert cluster.nginx is not None
    first, second = (cluster.url(name).removeprefix("http://") for name in ("gateway-1", "gateway-2"))
    assert f"upstream={first}, {second} " in cluster.nginx.access_log.read_text()
    cluster.restart("gateway-1")
    assert cluster.is_ready("gateway-1")
    # The restarted gateway serves the same conversation directly.
    direct = WebChat(cluster.url("gateway-1"), "C002")
    assert "浦东" in direct.say("上海浦东有没有网点")


def test_stopping_the_cluster_leaves_no_process(cluster: Cluster) -> None:
    table = _proc_table()
    started = _descendants(set(cluster.pids().values()), table)
    # The cluster's children that no instance or engine names (epmd, a wrapper script).
    ours = _descendants({os.getpid()}, table) - _children_before
    assert len(started) >= 14
    cluster.stop()
    deadline = time.monotonic() + 10
    while True:
        table = _proc_table()
        left = {pid for pid in started | ours if pid in table}
        # Anything still running from the cluster's directory (PostgreSQL detaches from us; so might others).
        left |= {pid for pid, (_, cmdline) in table.items() if str(cluster.root) in cmdline}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not left, {pid: table[pid][1][:200] for pid in left if pid in table}
    assert cluster.pids() == {}
