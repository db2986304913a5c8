"""The ops console: sign-in, roles per endpoint, CSRF, session expiry, the masked inbox, YAML edits and the audit."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import shutil
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from bankbot.cli import main as bankbot_main
from bankcore import ops_accounts
from bankcore.database import unit_of_work
from bankcore.models import OpsAuditEntry, OpsSession
from bankcore.settings import PROJECT_ROOT
from tests.channels.support import FakeRasa

PASSWORD = "correct horse battery"
NOW = dt.datetime.now(dt.UTC)


def _tracker_events(path: Path, rows: list[tuple[str, str, float, dict[str, Any]]]) -> None:
    """Rasa's SQL tracker store table, with user turns as Rasa writes them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, sender_id VARCHAR(255) NOT NULL, "
            "type_name VARCHAR(255) NOT NULL, timestamp FLOAT, intent_name VARCHAR(255), action_name VARCHAR(255), "
            "data TEXT)"
        )
        for sender, text, confidence, extra in rows:
            intent = extra.get("intent", "check_balance")
            data = {
                "event": "user",
                "text": text,
                "parse_data": {
                    "intent": {"name": intent, "confidence": confidence},
                    "entities": extra.get("entities", []),
                },
                "metadata": {"channel": sender.split(":")[0]},
            }
            db.execute(
                "INSERT INTO events (sender_id, type_name, timestamp, intent_name, data) VALUES (?, 'user', ?, ?, ?)",
                (sender, NOW.timestamp(), intent, json.dumps(data, ensure_ascii=False)),
            )
            db.execute(
                "INSERT INTO events (sender_id, type_name, timestamp, action_name, data) VALUES (?, 'bot', ?, NULL, ?)",
                (sender, NOW.timestamp(), json.dumps({"event": "bot", "text": "好的"})),
            )


@pytest.fixture
def nlu_dir(tmp_path: Path) -> Path:
    target = tmp_path / "nlu_data"
    target.mkdir()
    for path in (PROJECT_ROOT / "nlu_data").glob("*.yml"):
        shutil.copy(path, target / path.name)
    return target


@pytest.fixture
async def console(
    start_gateway: Callable[..., Any],
    fake_rasa: FakeRasa,
    nlu_dir: Path,
    tmp_path: Path,
    session_factory: sessionmaker[Session],
) -> TestClient[Any, Any]:
    with unit_of_work(session_factory) as session:
        for name, role in (("olivia", "ops"), ("vera", "viewer"), ("tess", "tester")):
            ops_accounts.add_user(session, name, PASSWORD, role, NOW)
    _tracker_events(
        tmp_path / "var" / "tracker.db",
        [
            ("webchat:C001", "查一下余额", 0.97, {}),
            ("wecom:C002", "我的验证码是123456你看下", 0.31, {"intent": "nlu_fallback"}),
            ("webchat:C003", "卡号6222021234567890123丢了怎么办", 0.42, {"intent": "report_lost_card"}),
            ("ivr:C004", "帮我看看活期里还有几块钱", 0.55, {}),
            ("webchat:C001", "/affirm", 1.0, {"intent": "affirm"}),
        ],
    )
    client: TestClient[Any, Any] = await start_gateway(fake_rasa.url, BANKBOT_NLU_DATA_DIR=str(nlu_dir))
    return client


async def sign_in(client: TestClient[Any, Any], username: str) -> str:
    """Signs in (the client keeps the cookie); returns the CSRF token shown on the inbox page."""
    response = await client.post("/ops/login", data={"username": username, "password": PASSWORD}, allow_redirects=False)
    assert response.status == 303, await response.text()
    page = await (await client.get("/ops/inbox")).text()
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, page[:500]
    return match.group(1)


async def test_sign_in_sets_a_strict_http_only_cookie_and_refuses_a_wrong_password(
    console: TestClient[Any, Any],
) -> None:
    wrong = await console.post("/ops/login", data={"username": "olivia", "password": "nope nope nope"})
    assert wrong.status == 401 and "用户名或密码不正确" in await wrong.text()
    unknown = await console.post("/ops/login", data={"username": "nobody", "password": PASSWORD})
    assert unknown.status == 401
    response = await console.post(
        "/ops/login", data={"username": "olivia", "password": PASSWORD}, allow_redirects=False
    )
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ops/" in cookie


async def test_signed_out_staff_are_sent_to_the_login(console: TestClient[Any, Any]) -> None:
    for path in ("/ops/inbox", "/ops/intents", "/ops/audit"):
        response = await console.get(path, allow_redirects=False)
        assert response.status == 303 and response.headers["Location"] == "/ops/login"
    assert (await console.post("/ops/inbox/1/review", data={"action": "dismiss"})).status == 401


@pytest.mark.parametrize(
    ("username", "allowed"),
    [
        ("vera", {"inbox", "intents"}),
        ("tess", {"inbox", "intents"}),
        ("olivia", {"inbox", "intents", "audit", "review", "add"}),
    ],
)
async def test_each_role_can_do_only_what_it_should(
    console: TestClient[Any, Any], username: str, allowed: set[str]
) -> None:
    csrf = await sign_in(console, username)
    outcomes = {
        "inbox": (await console.get("/ops/inbox")).status,
        "intents": (await console.get("/ops/intents")).status,
        "audit": (await console.get("/ops/audit")).status,
        "review": (
            await console.post("/ops/inbox/1/review", data={"csrf": csrf, "action": "dismiss"}, allow_redirects=False)
        ).status,
        "add": (
            await console.post(
                "/ops/intents/greet/examples", data={"csrf": csrf, "text": "早上好呀各位"}, allow_redirects=False
            )
        ).status,
    }
    for name, status in outcomes.items():
        assert (status in (200, 303)) == (name in allowed), (name, status)
        if name not in allowed:
            assert status == 403


async def test_a_post_without_the_session_csrf_token_or_from_another_origin_is_refused(
    console: TestClient[Any, Any], nlu_dir: Path
) -> None:
    csrf = await sign_in(console, "olivia")
    before = {p.name: p.read_text() for p in nlu_dir.glob("*.yml")}
    assert (await console.post("/ops/intents/greet/examples", data={"text": "早上好呀各位"})).status == 403
    assert (
        await console.post("/ops/intents/greet/examples", data={"csrf": "forged", "text": "早上好呀各位"})
    ).status == 403
    foreign = await console.post(
        "/ops/intents/greet/examples",
        data={"csrf": csrf, "text": "早上好呀各位"},
        headers={"Origin": "https://evil.example"},
    )
    assert foreign.status == 403
    assert {p.name: p.read_text() for p in nlu_dir.glob("*.yml")} == before


async def test_an_expired_session_signs_the_member_out(
    console: TestClient[Any, Any], session_factory: sessionmaker[Session]
) -> None:
    await sign_in(console, "vera")
    assert (await console.get("/ops/inbox", allow_redirects=False)).status == 200
    with unit_of_work(session_factory) as session:
        session.execute(update(OpsSession).values(expires_at=NOW - dt.timedelta(seconds=1)))
    response = await console.get("/ops/inbox", allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/ops/login"


async def test_the_inbox_masks_codes_and_card_numbers_and_puts_fallbacks_first(console: TestClient[Any, Any]) -> None:
    await sign_in(console, "vera")
    page = await (await console.get("/ops/inbox")).text()
    assert "123456" not in page and "6222021234567890123" not in page
    texts = re.findall(r'<td class="text">([^<]*)</td>', page)
    assert len(texts) == 4, texts  # the button payload (/affirm) was never an NLU guess
    assert texts[0].startswith("我的验证码是") and texts[1].startswith("卡号")  # fallbacks, least sure first
    assert texts[-1] == "查一下余额"
    only_ivr = await (await console.get("/ops/inbox?channel=ivr")).text()
    assert re.findall(r'<td class="text">([^<]*)</td>', only_ivr) == ["帮我看看活期里还有几块钱"]


async def test_correcting_an_inbox_item_writes_one_yaml_line_and_the_audit(
    console: TestClient[Any, Any], nlu_dir: Path, session_factory: sessionmaker[Session]
) -> None:
    csrf = await sign_in(console, "olivia")
    page = await (await console.get("/ops/inbox?channel=ivr")).text()
    item = re.search(r'data-item="(\d+)"', page)
    file_hash = re.search(r'name="file_hash" value="([^"]*)"', page)
    assert item and file_hash
    before = (nlu_dir / "accounts.yml").read_text()
    response = await console.post(
        f"/ops/inbox/{item.group(1)}/review",
        data={
            "csrf": csrf,
            "action": "save",
            "intent": "check_balance",
            "entities": "4-6:account_type",
            "file_hash": file_hash.group(1),
        },
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    after = (nlu_dir / "accounts.yml").read_text()
    added = [line for line in after.splitlines() if line not in before.splitlines()]
    assert added == ["    - 帮我看看[活期](account_type)里还有几块钱"]
    assert len(after.splitlines()) == len(before.splitlines()) + 1
    with unit_of_work(session_factory) as session:
        entry = session.query(OpsAuditEntry).one()
    assert entry.username == "olivia" and entry.action == "inbox_confirmed"
    assert "+    - 帮我看看[活期](account_type)里还有几块钱" in entry.diff
    assert "帮我看看" in await (await console.get("/ops/audit")).text()
    # Reviewed, it leaves the queue.
    assert "帮我看看活期" not in await (await console.get("/ops/inbox?channel=ivr")).text()


async def test_duplicates_conflicts_and_stale_editors_are_refused_with_a_reason(
    console: TestClient[Any, Any], nlu_dir: Path
) -> None:
    csrf = await sign_in(console, "olivia")
    page = await (await console.get("/ops/intents")).text()
    greet_hash = re.search(
        r'/ops/intents/greet/examples">\s*<input[^>]*>\s*<input type="hidden" name="file_hash" value="([^"]+)"', page
    )
    assert greet_hash, "the form carries the file's hash"
    duplicate = await console.post("/ops/intents/check_balance/examples", data={"csrf": csrf, "text": "查余额"})
    assert duplicate.status == 409 and "意图 check_balance 在 accounts.yml 中已有这条例句" in await duplicate.text()
    conflict = await console.post("/ops/intents/greet/examples", data={"csrf": csrf, "text": "查余额"})
    assert conflict.status == 409 and "同样的句子已是意图 check_balance 的例句" in await conflict.text()
    stale = await console.post(
        "/ops/intents/greet/examples", data={"csrf": csrf, "text": "各位早上好呀", "file_hash": "0000000000000000"}
    )
    assert stale.status == 409 and "在您打开页面之后已被修改" in await stale.text()
    fresh = await console.post(
        "/ops/intents/greet/examples",
        data={"csrf": csrf, "text": "各位早上好呀", "file_hash": greet_hash.group(1)},
        allow_redirects=False,
    )
    assert fresh.status == 303
    assert "    - 各位早上好呀" in "".join(p.read_text() for p in nlu_dir.glob("*.yml"))


def test_add_user_from_the_command_line(
    monkeypatch: pytest.MonkeyPatch, database_url: str, tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    monkeypatch.setenv("BANKBOT_DATABASE_URL", database_url)
    monkeypatch.setenv("BANKBOT_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setattr(sys, "stdin", io.StringIO("a long enough password\n"))
    assert bankbot_main(["ops", "add-user", "carol", "--role", "tester", "--password-stdin"]) == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert bankbot_main(["ops", "add-user", "dave", "--password-stdin"]) == 1
    with unit_of_work(session_factory) as session:
        signed = ops_accounts.sign_in(session, "carol", "a long enough password", NOW, ttl=dt.timedelta(minutes=5))
    assert signed is not None and signed.member.role == "tester"
