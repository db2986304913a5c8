"""The project's own redis-server launcher (bankbot.engines.redis_server): start, fault helpers, stop."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from bankbot.engines.redis_server import RedisServer, find_binary

pytestmark = pytest.mark.redis


@pytest.fixture(autouse=True)
def _needs_redis_server() -> None:
    if find_binary() is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")


def client(server: RedisServer, timeout: float = 1.0) -> redis.Redis:
    return redis.Redis.from_url(server.url, socket_timeout=timeout, socket_connect_timeout=timeout)


def test_a_throwaway_server_answers_keeps_nothing_and_leaves_nothing() -> None:
    with RedisServer() as server:
        root = server.root
        assert root is not None and root.is_dir()
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        connection = client(server)
        connection.set("bankbot:probe", "1")
        assert connection.config_get("save") == {"save": ""}
        assert connection.config_get("appendonly") == {"appendonly": "no"}
        assert connection.config_get("bind")["bind"] == "127.0.0.1"
        connection.close()
    assert not root.exists()
    assert not server.running


def test_restart_keeps_the_port_and_a_persistent_server_keeps_its_data(tmp_path: Path) -> None:
    server = RedisServer(root=tmp_path / "redis", persistent=True).start()
    try:
        port = server.port
        connection = client(server)
        connection.set("bankbot:kept", "yes")
        connection.close()
        server.restart(down_for=0.1)
        assert server.port == port
        connection = client(server)
        assert connection.get("bankbot:kept") == b"yes"
        connection.close()
    finally:
        server.stop()
    assert (tmp_path / "redis").is_dir(), "a given root is kept"


def test_stop_server_refuses_connections_until_start_server() -> None:
    with RedisServer() as server:
        server.stop_server()
        assert not server.ping(timeout=0.2)
        with pytest.raises(redis.ConnectionError):
            client(server, timeout=0.2).ping()
        server.start_server()
        assert client(server).ping()


def test_pause_stalls_the_server_for_that_long_then_it_answers_again() -> None:
    with RedisServer() as server:
        pausing = threading.Thread(target=server.pause, args=(0.6,))
        pausing.start()
        time.sleep(0.1)
        with pytest.raises(redis.TimeoutError):
            client(server, timeout=0.2).ping()
        pausing.join()
        assert client(server).ping()


def test_a_password_is_required_and_carried_in_the_url() -> None:
    with RedisServer(password="s3cret/with:odd@chars") as server:
        assert client(server).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=server.port, password="wrong", retry=Retry(NoBackoff(), 0)).ping()


def test_a_suspended_server_is_stopped_cleanly() -> None:
    server = RedisServer().start()
    server.suspend()
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 5
    assert not server.running
