"""The simulated WeCom users of `bankbot bench wecom`, run as a process of their own.

In its own process the load generator shares neither an event loop nor the GIL with the platform simulator it
waits on, so an acknowledgement time it measures is the gateway's, not its own queueing. It posts signed,
encrypted callbacks the way WeCom does and waits for replies through the simulator's long-poll
(`GET /bench/replies`). Usage: `python -m bankbot.wecom_load CONFIG.json RESULT.json`.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout, TCPConnector

from bankbot.turn_bench import BENCH_TEXTS
from channels.platform_simulators.wecom_callbacks import Callback, WeComCallbacks

PHASES = ("warmup", "conversation", "burst", "storm")
# The demo bank's own WeCom user (C001): its turns warm Rasa and the action server up and are not measured.
WARMUP_USER = "wangwei"


@dataclass(frozen=True)
class LoadConfig:
    gateway_url: str
    simulator_url: str
    token: str
    encoding_aes_key: str
    corp_id: str
    agent_id: str
    users: list[str]
    messages: int
    burst: int
    retry_storm: int
    think_s: float
    reply_timeout_s: float
    seed: int
    warmup: int = 8


@dataclass
class LoadResult:
    """What was sent: MsgIds per phase, distinct messages per user, acknowledgement times, HTTP statuses."""

    msg_ids: dict[str, list[str]] = field(default_factory=lambda: {phase: [] for phase in PHASES})
    per_user: Counter[str] = field(default_factory=Counter)
    ack_ms: dict[str, list[float]] = field(default_factory=lambda: {phase: [] for phase in PHASES})
    statuses: Counter[int] = field(default_factory=Counter)
    phase_s: dict[str, float] = field(default_factory=dict)
    unanswered_waits: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "msg_ids": self.msg_ids,
            "per_user": dict(self.per_user),
            "ack_ms": self.ack_ms,
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "phase_s": self.phase_s,
            "unanswered_waits": self.unanswered_waits,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadResult:
        return cls(
            msg_ids=data["msg_ids"],
            per_user=Counter(data["per_user"]),
            ack_ms=data["ack_ms"],
            statuses=Counter({int(k): v for k, v in data["statuses"].items()}),
            phase_s=data["phase_s"],
            unanswered_waits=data["unanswered_waits"],
        )


class LoadGenerator:
    def __init__(self, config: LoadConfig, http: ClientSession) -> None:
        self.config = config
        self.http = http
        self.url = f"{config.gateway_url}/wecom/callback"
        self.callbacks = WeComCallbacks(config.token, config.encoding_aes_key, config.corp_id, agent_id=config.agent_id)
        self.result = LoadResult()
        self.random = random.Random(config.seed)

    async def post(self, callback: Callback, phase: str) -> None:
        started = time.perf_counter()
        async with self.http.post(self.url, params=callback.query, data=callback.body) as response:
            await response.read()
            status = response.status
        self.result.ack_ms[phase].append((time.perf_counter() - started) * 1000)
        self.result.statuses[status] += 1

    async def replies(self, user: str, at_least: int, timeout_s: float) -> int:
        """The number of replies the platform has delivered to `user`, once it reaches `at_least` (or timeout)."""
        params = {"user": user, "at_least": str(at_least), "timeout": str(timeout_s)}
        async with self.http.get(
            f"{self.config.simulator_url}/bench/replies",
            params=params,
            timeout=ClientTimeout(total=timeout_s + 30),
        ) as response:
            return int((await response.json())["count"])

    def _text(self, user_index: int, turn: int) -> str:
        return BENCH_TEXTS[(user_index + turn) % len(BENCH_TEXTS)]

    def _callback(self, phase: str, user: str, text: str) -> Callback:
        msg_id = self.callbacks.next_msg_id()
        self.result.msg_ids[phase].append(msg_id)
        self.result.per_user[user] += 1
        return self.callbacks.text(user, text, msg_id=msg_id)

    async def conversation(self, index: int, user: str) -> None:
        """Closed loop: a message, its reply, a pause to think, the next message."""
        await asyncio.sleep(self.random.uniform(0, self.config.think_s))  # users arrive spread out
        for turn in range(self.config.messages):
            before = await self.replies(user, 0, 0)
            await self.post(self._callback("conversation", user, self._text(index, turn)), "conversation")
            if await self.replies(user, before + 1, self.config.reply_timeout_s) <= before:
                self.result.unanswered_waits += 1
                return
            await asyncio.sleep(self.random.uniform(0.5, 1.5) * self.config.think_s)

    async def warm_up(self) -> None:
        """A few turns one after another before anything is measured: the first turns load models lazily."""
        for turn in range(self.config.warmup):
            before = await self.replies(WARMUP_USER, 0, 0)
            await self.post(self._callback("warmup", WARMUP_USER, self._text(0, turn)), "warmup")
            await self.replies(WARMUP_USER, before + 1, self.config.reply_timeout_s)

    async def burst(self, index: int, user: str) -> None:
        for turn in range(self.config.burst):
            await self.post(self._callback("burst", user, self._text(index, turn + 3)), "burst")

    async def storm(self, index: int, user: str) -> None:
        """One message and `retry_storm` identical copies of its callback, all at once."""
        callback = self._callback("storm", user, self._text(index, 7))
        await asyncio.gather(*(self.post(callback, "storm") for _ in range(self.config.retry_storm + 1)))

    async def run_phase(self, name: str, step: Callable[[int, str], Awaitable[None]]) -> None:
        started = time.perf_counter()
        await asyncio.gather(*(step(index, user) for index, user in enumerate(self.config.users)))
        self.result.phase_s[name] = time.perf_counter() - started


async def generate(config: LoadConfig) -> LoadResult:
    async with ClientSession(connector=TCPConnector(limit=0), timeout=ClientTimeout(total=120)) as http:
        generator = LoadGenerator(config, http)
        await generator.warm_up()
        await generator.run_phase("conversation", generator.conversation)
        await generator.run_phase("burst", generator.burst)
        await generator.run_phase("storm", generator.storm)
        return generator.result


def main(argv: Sequence[str]) -> int:
    config_path, result_path = argv
    config = LoadConfig(**json.loads(Path(config_path).read_text()))
    result = asyncio.run(generate(config))
    Path(result_path).write_text(json.dumps(result.to_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
