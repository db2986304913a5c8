"""The load balancer: nginx spreads requests over two servers, skips a dead one, and never replays a sent POST."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bankbot.engines.nginx import NginxBalancer, Upstream, find_binary
from bankbot.stack import free_port

pytestmark = pytest.mark.skipif(find_binary() is None, reason="nginx not installed (apt-get install nginx)")


@dataclass
class Backend:
    """A loopback HTTP server that answers with its name and the headers it got; `/drop` reads the request and
    closes the connection without an answer (a server that died mid-request)."""

    name: str
    received: list[tuple[str, str]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def address(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> Backend:
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                backend.received.append((self.command, self.path))
                if self.path == "/drop":
                    self.close_connection = True
                    return
                body = json.dumps({"server": backend.name, "headers": dict(self.headers.items())}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = _answer  # http.server's naming
            do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def backends() -> Iterator[tuple[Backend, Backend]]:
    pair = (Backend("a").start(), Backend("b").start())
    yield pair
    for backend in pair:
        backend.stop()


@pytest.fixture
def balancer(tmp_path: Path, backends: tuple[Backend, Backend]) -> Iterator[NginxBalancer]:
    upstream = Upstream("gateways", free_port(), tuple(b.address for b in backends), read_timeout_s=10)
    nginx = NginxBalancer(tmp_path / "nginx", [upstream], max_body_bytes=1024).start()
    yield nginx
    nginx.stop()


def request(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {}


def test_requests_are_spread_over_both_servers(balancer: NginxBalancer) -> None:
    served = {str(request(balancer.url("gateways") + "/x")[1]["server"]) for _ in range(6)}
    assert served == {"a", "b"}


def test_a_dead_server_is_skipped_even_for_posts(balancer: NginxBalancer, backends: tuple[Backend, Backend]) -> None:
    backends[0].stop()  # connection refused: the request never reached it, so it goes to the other
    for _ in range(6):
        status, body = request(balancer.url("gateways") + "/webchat/messages", "POST", b"{}")
        assert (status, body["server"]) == (200, "b")


def test_a_post_that_reached_a_server_is_never_replayed(
    balancer: NginxBalancer, backends: tuple[Backend, Backend]
) -> None:
    statuses = [request(balancer.url("gateways") + "/drop", "POST", b"{}")[0] for _ in range(2)]
    # Each POST went to one server, which dropped it: 502, and the other server never saw it.
    assert statuses == [502, 502]
    assert sorted(len(b.received) for b in backends) == [1, 1]


def test_a_get_that_failed_is_retried_on_the_other_server(
    balancer: NginxBalancer, backends: tuple[Backend, Backend]
) -> None:
    status, _ = request(balancer.url("gateways") + "/drop")
    # Both dropped it (the retry too), but both were tried: an idempotent request moves on.
    assert status == 502
    assert [len(b.received) for b in backends] == [1, 1]


def test_the_client_address_is_forwarded(balancer: NginxBalancer) -> None:
    _, body = request(balancer.url("gateways") + "/x")
    headers = body["headers"]
    assert isinstance(headers, dict)
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert headers["X-Real-IP"] == "127.0.0.1"


def test_a_body_over_the_gateway_limit_is_refused_at_the_balancer(
    balancer: NginxBalancer, backends: tuple[Backend, Backend]
) -> None:
    status, _ = request(balancer.url("gateways") + "/webchat/messages", "POST", b"x" * 2048)
    assert status == 413
    assert [b.received for b in backends] == [[], []]


def test_reload_takes_a_new_server_list(balancer: NginxBalancer, backends: tuple[Backend, Backend]) -> None:
    only_b = Upstream("gateways", balancer.upstreams[0].listen_port, (backends[1].address,), read_timeout_s=10)
    balancer.reload([only_b])
    # Old workers finish; new ones use the new list. Give nginx a moment to swap workers.
    import time

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        served = {str(request(balancer.url("gateways") + "/x")[1]["server"]) for _ in range(4)}
        if served == {"b"}:
            break
        time.sleep(0.1)
    assert served == {"b"}


def test_stop_leaves_no_nginx_process(tmp_path: Path, backends: tuple[Backend, Backend]) -> None:
    upstream = Upstream("gateways", free_port(), (backends[0].address,))
    nginx = NginxBalancer(tmp_path / "nginx", [upstream], max_body_bytes=1024).start()
    pid = nginx.pid
    assert pid is not None
    nginx.stop()
    assert not Path(f"/proc/{pid}").exists()
    assert nginx.pid is None
