"""Testers' pages: failed stories read from Rasa's own output, conversations saved as test stories, roles, CSRF,
and one real `rasa test core` run against the trained model (a deliberately failing story beside a saved one)."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient
from ruamel.yaml import YAML
from sqlalchemy.orm import Session, sessionmaker

from bankbot.layout import ProjectLayout
from bankbot.training import ensure_trained, model_path
from bankcore import ops_accounts
from bankcore.database import unit_of_work
from bankcore.models import OpsAuditEntry
from channels.ops import story_files
from channels.ops.stories import DOMAIN, RUNNER
from channels.ops.story_runs import StoryRunner, failed_stories, story_names, user_texts
from tests.channels.support import FakeRasa
from tests.channels.test_ops_console import NOW, PASSWORD, sign_in

DATA = Path(__file__).parent.parent / "data" / "ops_stories"
FAILING_STORY = """version: "3.1"
stories:
  - story: deliberately failing greeting
    steps:
      - user: |
          你好
        intent: greet
      - action: utter_goodbye
"""


def _user(text: str, intent: str, confidence: float, entities: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "event": "user",
        "text": text,
        "parse_data": {"intent": {"name": intent, "confidence": confidence}, "entities": entities or [], "text": text},
        "input_channel": "rest",
        "metadata": {"channel": "webchat"},
    }


def _action(name: str) -> dict[str, Any]:
    return {"event": "action", "name": name, "policy": "RulePolicy", "confidence": 1.0}


def _session_start() -> list[dict[str, Any]]:
    return [_action("action_session_start"), {"event": "session_started"}, _action("action_listen")]


# A branch lookup as Rasa's tracker records it: the form asks for the location, the customer names it.
BRANCH_CONVERSATION = [
    *_session_start(),
    _user("附近有网点吗", "branch_lookup", 0.98),
    _action("branch_form"),
    {"event": "active_loop", "name": "branch_form"},
    {"event": "slot", "name": "requested_slot", "value": "location"},
    {"event": "bot", "text": "请问您在哪个城市哪个区？"},
    _action("action_listen"),
    _user(
        "北京朝阳区",
        "inform",
        0.91,
        [{"entity": "location", "start": 0, "end": 5, "value": "北京朝阳区", "extractor": "DIETClassifier"}],
    ),
    _action("branch_form"),
    {"event": "slot", "name": "location", "value": "北京朝阳区"},
    {"event": "active_loop", "name": None},
    {"event": "slot", "name": "requested_slot", "value": None},
    _action("action_branch_lookup"),
    {"event": "bot", "text": "朝阳区有 3 个网点。"},
    _action("action_listen"),
]

# Two sessions, secrets in the customer's words and the bot's, a button payload, slots of every kind.
SECRET_CONVERSATION = [
    *_session_start(),
    _user(
        "卡号6222021234567890123丢了怎么办",
        "report_lost_card",
        0.88,
        [{"entity": "card_last4", "start": 17, "end": 21, "value": "0123"}],
    ),
    _action("action_report_lost_card"),
    {"event": "slot", "name": "pending_confirmation", "value": "replace_card"},
    {"event": "slot", "name": "foresight_top", "value": {"intent": "report_lost_card"}},
    {"event": "bot", "text": "卡号6222021234567890123已冻结，要补办吗？"},
    _action("action_listen"),
    *_session_start(),
    _user("/affirm", "affirm", 1.0),
    _action("action_confirm_pending"),
    {"event": "slot", "name": "awaiting_code", "value": True},
    _action("action_listen"),
    _user("我的验证码是123456", "inform", 0.42),
    _action("action_submit_code"),
    _action("action_listen"),
]


def plant(path: Path, sender: str, events: list[dict[str, Any]], start: float | None = None) -> None:
    """Rasa's SQL tracker store table with `events` of one conversation, as Rasa writes them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = start or NOW.timestamp() - 600
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, sender_id VARCHAR(255) NOT NULL, "
            "type_name VARCHAR(255) NOT NULL, timestamp FLOAT, intent_name VARCHAR(255), action_name VARCHAR(255), "
            "data TEXT)"
        )
        for index, event in enumerate(events):
            intent = (event.get("parse_data") or {}).get("intent", {}).get("name") if event["event"] == "user" else None
            db.execute(
                "INSERT INTO events (sender_id, type_name, timestamp, intent_name, action_name, data) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    sender,
                    event["event"],
                    stamp + index,
                    intent,
                    event.get("name") if event["event"] == "action" else None,
                    json.dumps({**event, "timestamp": stamp + index}, ensure_ascii=False),
                ),
            )


@pytest.fixture
def stories_dir(tmp_path: Path) -> Path:
    target = tmp_path / "bot_tests"
    target.mkdir()
    (target / "test_failing.yml").write_text(FAILING_STORY, encoding="utf-8")
    return target


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """The models folder with the trained model under the name the stand-in Rasa's /status reports."""
    target = tmp_path / "models"
    target.mkdir()
    trained = model_path(ProjectLayout())  # `make pytest` trains first; ensure_trained would queue on its lock
    (target / "test.tar.gz").symlink_to(trained if trained.exists() else ensure_trained(ProjectLayout(), log=False))
    return target


@pytest.fixture
async def console(
    start_gateway: Callable[..., Any],
    fake_rasa: FakeRasa,
    stories_dir: Path,
    models_dir: Path,
    tmp_path: Path,
    session_factory: sessionmaker[Session],
) -> TestClient[Any, Any]:
    with unit_of_work(session_factory) as session:
        for name, role in (("olivia", "ops"), ("vera", "viewer"), ("tess", "tester")):
            ops_accounts.add_user(session, name, PASSWORD, role, NOW)
    tracker = tmp_path / "var" / "tracker.db"
    plant(tracker, "webchat:C002", BRANCH_CONVERSATION)
    plant(tracker, "wecom:C003", SECRET_CONVERSATION)
    client: TestClient[Any, Any] = await start_gateway(
        fake_rasa.url, BANKBOT_TEST_STORIES_DIR=str(stories_dir), BANKBOT_MODELS_DIR=str(models_dir)
    )
    return client


def _load(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))


# --- Rasa's failed_test_stories.yml, as written by real runs (tests/data/ops_stories/README.md says how) ---


def test_a_wrong_action_reads_as_expected_and_predicted() -> None:
    stories = failed_stories((DATA / "failed_test_stories_core.yml").read_text(encoding="utf-8"))
    story = {s.name: s for s in stories}["deliberately failing greeting"]
    assert story.source == "test_deliberately_failing.yml"
    # Rasa goes on after a wrong action (with the expected one), so the turn after it is judged too.
    assert [(s.kind, s.expected, s.actual) for s in story.steps if s.wrong] == [
        ("action", "utter_goodbye", "action_greet"),
        ("action", "action_listen", "action_default_fallback"),
    ]
    assert (story.steps[0].kind, story.steps[0].expected, story.steps[0].wrong) == ("user", "greet", False)
    # Rasa's file leaves the customer's words out; the test story has them.
    texts = user_texts(DATA, story.source, story.name)
    assert texts == ["你好"] and story.with_texts(texts).steps[0].text == "你好"


def test_a_misunderstood_message_and_a_wrong_entity_read_as_expected_and_predicted() -> None:
    stories = {s.name: s for s in failed_stories((DATA / "failed_test_stories_e2e.yml").read_text(encoding="utf-8"))}
    misunderstood = [s for s in stories["deliberately misunderstood balance"].steps if s.wrong]
    assert (misunderstood[0].kind, misunderstood[0].expected) == ("user", "transfer_money")
    assert misunderstood[0].actual == "check_balance：我卡里还有多少钱" and not misunderstood[0].note
    wrong_entity = [s for s in stories["deliberately wrong entity"].steps if s.wrong]
    assert [(s.kind, s.expected, s.actual) for s in wrong_entity] == [("entity", "payee=活期", "account_type=debit")]
    # Same intent, and Rasa found an entity the story does not have: the message as Rasa read it.
    (extra,) = [s for s in stories["failed transfer inquiry"].steps if s.wrong]
    assert extra.actual == "failed_transfer_inquiry：[昨天](date)转账怎么没成功" and extra.note == "意图相同，实体不同"
    assert all(story.source for story in stories.values())


def test_rasa_writing_that_nothing_failed_is_no_failed_story() -> None:
    assert failed_stories("# None of the test stories failed - all good!") == []
    names = story_names((DATA / "successful_test_stories_core.yml").read_text(encoding="utf-8"))
    assert "balance" in names and "deliberately failing greeting" not in names
    assert all("(" not in name for name in names)


# --- a conversation becomes a story ---


def _sessions(events: list[dict[str, Any]], tmp_path: Path) -> list[story_files.Session]:
    plant(tmp_path / "tracker.db", "x", events)
    with sqlite3.connect(tmp_path / "tracker.db") as db:
        rows = db.execute(
            "SELECT id, type_name, timestamp, intent_name, action_name, data FROM events ORDER BY id"
        ).fetchall()
    return story_files.sessions(rows, story_files.featurized_slots(DOMAIN))


def test_a_conversation_session_becomes_the_steps_of_a_story(tmp_path: Path) -> None:
    (session,) = _sessions(BRANCH_CONVERSATION, tmp_path)
    text = story_files.story_yaml("branch lookup from the tracker", session.steps)
    assert _load_story(text)["steps"] == [
        {"user": "附近有网点吗\n", "intent": "branch_lookup"},
        {"action": "branch_form"},
        {"active_loop": "branch_form"},
        {"slot_was_set": [{"requested_slot": "location"}]},
        {"user": "[北京朝阳区](location)\n", "intent": "inform"},
        {"action": "branch_form"},
        {"active_loop": None},
        {"slot_was_set": [{"requested_slot": None}]},
        {"action": "action_branch_lookup"},
    ]
    # Laid out as the hand-written stories are: indented under `stories:`, user text as a literal block.
    assert text.startswith(
        "  - story: branch lookup from the tracker\n    steps:\n      - user: |\n          附近有网点吗\n"
    )


def _load_story(text: str) -> Any:
    return YAML(typ="safe", pure=True).load("stories:\n" + text)["stories"][0]


def test_secrets_are_masked_payloads_become_intents_and_only_featurized_slots_are_kept(tmp_path: Path) -> None:
    first, second = _sessions(SECRET_CONVERSATION, tmp_path)
    story = _load_story(story_files.story_yaml("s", first.steps + second.steps))
    text = json.dumps(story, ensure_ascii=False)
    assert "6222021234567890123" not in text and "123456" not in text
    assert story["steps"][0] == {"user": "卡号**** [0123](card_last4)丢了怎么办\n", "intent": "report_lost_card"}
    assert {"slot_was_set": [{"pending_confirmation": "replace_card"}]} in story["steps"]
    assert "foresight_top" not in text  # an `any` slot does not influence the conversation
    assert {"intent": "affirm"} in story["steps"]  # the button payload, as the hand-written stories have it
    assert {"user": "我的验证码是******\n", "intent": "inform"} in story["steps"]
    shown = [turn.text for turn in first.turns + second.turns]
    assert "卡号**** 0123已冻结，要补办吗？" in shown and not any("123456" in t for t in shown)


# --- access, CSRF, saving through the console ---


@pytest.mark.parametrize(("username", "allowed"), [("vera", False), ("tess", True), ("olivia", True)])
async def test_only_testers_and_up_reach_the_story_pages(
    console: TestClient[Any, Any], username: str, allowed: bool, stories_dir: Path, tmp_path: Path
) -> None:
    csrf = await sign_in(console, username)
    with sqlite3.connect(tmp_path / "var" / "tracker.db") as db:
        (session_id,) = db.execute(
            "SELECT id FROM events WHERE sender_id = 'webchat:C002' AND type_name = 'session_started'"
        ).fetchone()
    statuses = [
        (await console.get("/ops/stories")).status,
        (await console.get("/ops/stories/conversations")).status,
        (await console.get("/ops/stories/conversations/view?sender=webchat%3AC002")).status,
    ]
    save = await console.post(
        "/ops/stories/conversations/save",
        data={"csrf": csrf, "sender": "webchat:C002", "session": session_id, "name": "by " + username, "file": ""},
        allow_redirects=False,
    )
    run = await console.post("/ops/stories/run", data={"csrf": csrf, "mode": "nonsense"}, allow_redirects=False)
    if allowed:
        assert statuses == [200, 200, 200]
        assert save.status == 303, await save.text()
        assert run.status == 400  # past the role check: the mode is what is wrong
    else:
        assert statuses == [403, 403, 403] and save.status == 403 and run.status == 403
        assert not (stories_dir / story_files.DEFAULT_FILE).exists()
    # The dashboard is for every role.
    assert (await console.get("/ops/dashboard")).status == 200


async def test_saving_without_the_csrf_token_or_from_another_origin_is_refused(
    console: TestClient[Any, Any], stories_dir: Path
) -> None:
    csrf = await sign_in(console, "tess")
    form = {"sender": "webchat:C002", "session": "1", "name": "csrf check", "file": ""}
    assert (await console.post("/ops/stories/conversations/save", data=form)).status == 403
    assert (await console.post("/ops/stories/conversations/save", data={**form, "csrf": "forged"})).status == 403
    foreign = await console.post(
        "/ops/stories/conversations/save", data={**form, "csrf": csrf}, headers={"Origin": "https://evil.example"}
    )
    assert foreign.status == 403
    assert (await console.post("/ops/stories/run", data={"mode": "core"})).status == 403
    assert not (stories_dir / story_files.DEFAULT_FILE).exists()
    assert not console.server.app[RUNNER].runs()


async def _save(client: TestClient[Any, Any], csrf: str, sender: str, name: str, **extra: str) -> Any:
    page = await (await client.get("/ops/stories/conversations/view?sender=" + quote(sender))).text()
    sessions = re.findall(r'name="session" value="(\d+)"', page)
    assert sessions, page[:800]
    data = {"csrf": csrf, "sender": sender, "session": sessions[extra.pop("index", 0)], "name": name, "file": ""}
    data.update(extra)
    return await client.post("/ops/stories/conversations/save", data=data, allow_redirects=False)


async def test_a_saved_story_is_masked_audited_and_its_name_cannot_be_taken_twice(
    console: TestClient[Any, Any], stories_dir: Path, session_factory: sessionmaker[Session]
) -> None:
    csrf = await sign_in(console, "tess")
    listing = await (await console.get("/ops/stories/conversations")).text()
    assert "webchat:C002" in listing and "wecom:C003" in listing
    page = await (await console.get("/ops/stories/conversations/view?sender=wecom%3AC003")).text()
    assert "6222021234567890123" not in page and "123456" not in page and "卡号**** 0123丢了怎么办" in page
    # Newest session first: the second one holds the code.
    response = await _save(console, csrf, "wecom:C003", "lost card from wecom", index=1)
    assert response.status == 303, await response.text()
    saved = stories_dir / story_files.DEFAULT_FILE
    story = _load(saved)["stories"][-1]
    assert story["story"] == "lost card from wecom"
    assert story["steps"][0] == {"user": "卡号**** [0123](card_last4)丢了怎么办\n", "intent": "report_lost_card"}
    assert "6222021234567890123" not in saved.read_text(encoding="utf-8")
    with unit_of_work(session_factory) as session:
        entry = session.query(OpsAuditEntry).filter_by(action="save_story").one()
    assert entry.username == "tess" and "lost card from wecom" in entry.target and "wecom:C003" in entry.target
    assert "+  - story: lost card from wecom" in entry.diff and "+      - action: action_report_lost_card" in entry.diff

    before = saved.read_text(encoding="utf-8")
    for name in ("lost card from wecom", "deliberately failing greeting"):
        again = await _save(console, csrf, "webchat:C002", name)
        assert again.status == 409 and "already exists" in await again.text()
    bad_file = await _save(console, csrf, "webchat:C002", "another", file="__new__", new_file="../evil.yml")
    assert bad_file.status == 400
    assert saved.read_text(encoding="utf-8") == before
    listed = await (await console.get("/ops/stories")).text()
    assert "lost card from wecom" in listed and "deliberately failing greeting" in listed


# --- one real run: Rasa tests a deliberately failing story and a conversation saved from the tracker ---


@pytest.mark.rasa
async def test_a_tester_runs_the_stories_and_reads_the_failed_one_as_a_diff(
    console: TestClient[Any, Any], stories_dir: Path, session_factory: sessionmaker[Session]
) -> None:
    csrf = await sign_in(console, "tess")
    assert (await _save(console, csrf, "webchat:C002", "branch lookup from the tracker")).status == 303
    page = await (await console.get("/ops/stories")).text()
    assert "test.tar.gz" in page and "Rasa 正在使用的模型" in page
    started = await console.post("/ops/stories/run", data={"csrf": csrf, "mode": "core"}, allow_redirects=False)
    assert started.status == 303, await started.text()
    run_url = started.headers["Location"]
    progress = await (await console.get(run_url)).text()
    assert 'http-equiv="refresh"' in progress and 'data-state="running"' in progress
    busy = await console.post("/ops/stories/run", data={"csrf": csrf, "mode": "core"}, allow_redirects=False)
    assert busy.status == 409  # one run at a time
    runner: StoryRunner = console.server.app[RUNNER]
    await asyncio.wait_for(runner.wait(), timeout=240)
    result = await (await console.get(run_url)).text()
    assert 'data-state="failed"' in result, result[-3000:]
    assert "2 个故事，失败 1 个" in result
    failed = re.search(r'<section class="failed-story" data-story="([^"]+)">(.*?)</section>', result, re.S)
    assert failed and failed.group(1) == "deliberately failing greeting"
    rows = re.findall(r'<tr class="(wrong)?">(.*?)</tr>', failed.group(2), re.S)
    assert '<td class="words">你好</td>' in rows[0][1] and not rows[0][0]
    wrong = [row for marked, row in rows if marked]
    assert len(wrong) == 2
    assert "<del>utter_goodbye</del>" in wrong[0] and "<ins>action_greet</ins>" in wrong[0]
    assert re.search(r'<ul class="passed">\s*<li>branch lookup from the tracker</li>', result)
    (run,) = runner.runs()
    assert run.by == "tess" and run.model == "test.tar.gz" and (run.total, run.failed) == (2, 1)
    with unit_of_work(session_factory) as session:
        assert session.query(OpsAuditEntry).filter_by(action="run_stories").count() == 1
