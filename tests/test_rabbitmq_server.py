"""The project's own RabbitMQ launcher (bankbot.engines.rabbitmq_server): start, fault helpers, restart, stop."""

from __future__ import annotations

import os
from pathlib import Path

import aio_pika
import pytest

from bankbot.engines.rabbitmq_server import RabbitMQServer, amqp_answers, find_epmd, find_scripts_dir

pytestmark = pytest.mark.rabbitmq


@pytest.fixture(autouse=True)
def _needs_rabbitmq_server() -> None:
    if find_scripts_dir() is None or find_epmd() is None:
        pytest.skip("rabbitmq-server is not installed (apt-get install rabbitmq-server)")


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


async def publish_persistent(url: str, queue: str, count: int) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True)
        for n in range(count):
            message = aio_pika.Message(str(n).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            await channel.default_exchange.publish(message, routing_key=queue)


async def test_a_throwaway_node_serves_its_vhost_beside_another_and_leaves_nothing(rabbitmq: RabbitMQServer) -> None:
    with RabbitMQServer() as server:
        assert server.last_start_seconds is not None and server.last_start_seconds < 30
        assert server.url.startswith(f"amqp://bankbot:{server.password}@127.0.0.1:{server.port}/bankbot")
        # Its own name, AMQP port, distribution port and epmd: the session's node is untouched.
        assert server.nodename != rabbitmq.nodename
        assert {server.port, server.dist_port, server.epmd_port}.isdisjoint(
            {rabbitmq.port, rabbitmq.dist_port, rabbitmq.epmd_port}
        )
        await publish_persistent(server.url, "launcher.test", 3)
        assert server.queue_depths() == {"launcher.test": (3, 0)}
        root, beam, epmd = server.root, server.pid, server._epmd.pid if server._epmd else None
        assert root is not None and alive(beam) and alive(epmd)
    assert not root.exists()
    assert not alive(beam) and not alive(epmd)
    assert rabbitmq.accepts_amqp()


def test_a_suspended_node_answers_nothing_until_resumed(rabbitmq: RabbitMQServer) -> None:
    with rabbitmq.suspended():
        assert not amqp_answers(rabbitmq.port, timeout=1.0)
    assert amqp_answers(rabbitmq.port, timeout=5.0)


async def test_a_kept_root_keeps_durable_messages_across_a_crash_and_a_new_launcher(tmp_path: Path) -> None:
    root = tmp_path / "rabbitmq"
    first = RabbitMQServer(root=root).start()
    try:
        await publish_persistent(first.url, "kept", 5)
        first.kill_server()
        assert not first.accepts_amqp(timeout=0.5)
        first.start_server()
        assert first.queue_depths() == {"kept": (5, 0)}
        nodename, password = first.nodename, first.password
    finally:
        first.stop()
    assert root.exists()
    # The cluster profile starts a kept root again with the name and password it was created with.
    with RabbitMQServer(root=root, nodename=nodename, password=password) as again:
        assert again.queue_depths() == {"kept": (5, 0)}
        connection = await aio_pika.connect(again.url)
        await connection.close()
