"""Test stories on disk: the ones in `bot/tests/`, and a conversation from the tracker store saved as a new one.

A conversation is Rasa's tracker (the `events` table of its SQL tracker store), cut into sessions at
`session_started`. One session becomes one test story in Rasa's YAML format: user turns with their text (masked
again with `bankcore.redaction`, entity annotations moved onto the masked text), intent and entities; the bot's
actions; the featurized slots and active loops the tracker recorded. Button payloads (`/affirm`) become
intent-only steps, as in the hand-written stories. Saving appends the story to a `test_*.yml` file (the prefix
Rasa's end-to-end test reader requires), refusing a name any test story already has.
"""

from __future__ import annotations

import datetime as dt
import difflib
import fcntl
import io
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import LiteralScalarString
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from bankcore.redaction import redact

DEFAULT_FILE = "test_conversations.yml"
_FILE_NAME = re.compile(r"^test_[a-z0-9_]{1,60}\.yml$")
_NAME_MAX = 120
# Actions the tracker records that no story spells out: Rasa runs them on its own.
_IMPLICIT_ACTIONS = {"action_listen", "action_session_start", "action_unlikely_intent"}
_ENTITY_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_NEW_FILE_HEADER = (
    'version: "3.1"\n\n# Conversations from the tracker store, saved as test stories by the ops console.\nstories:\n'
)


class StoryEditError(Exception):
    """A story that cannot be saved as asked; `kind` is duplicate | invalid | missing."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class StoryInfo:
    name: str
    file: str
    steps: int


@dataclass(frozen=True)
class Turn:
    """One tracker event as the console shows it (texts masked)."""

    kind: str  # user | bot | action | slot | loop
    text: str
    intent: str = ""
    confidence: float | None = None
    entities: tuple[tuple[str, str], ...] = ()
    at: dt.datetime | None = None


@dataclass
class Session:
    """One session of a conversation: what happened, and the test story it makes."""

    first_event_id: int
    started: dt.datetime | None
    turns: list[Turn] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def user_turns(self) -> int:
        return sum(1 for turn in self.turns if turn.kind == "user")


@dataclass(frozen=True)
class SavedStory:
    file: str
    diff: str


def _safe_yaml() -> YAML:
    return YAML(typ="safe", pure=True)


def test_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.yml") if p.is_file())


def list_stories(directory: Path) -> list[StoryInfo]:
    """Every story (and rule) in the test files, in file order."""
    found = []
    for path in test_files(directory):
        for name, steps in _names_in(path):
            found.append(StoryInfo(name, path.name, steps))
    return found


def _names_in(path: Path) -> Iterator[tuple[str, int]]:
    try:
        document = _safe_yaml().load(path.read_text(encoding="utf-8")) or {}
    except YAMLError:
        return
    for key, label in (("stories", "story"), ("rules", "rule")):
        for item in document.get(key) or []:
            if isinstance(item, dict) and label in item:
                yield str(item[label]), len(item.get("steps") or [])


def featurized_slots(domain: Path) -> set[str]:
    """Slots that influence the conversation (Rasa's default for every type but `any`), and `requested_slot`."""
    slots = {"requested_slot"}
    paths = sorted(domain.glob("*.yml")) if domain.is_dir() else [domain]
    for path in paths:
        document = _safe_yaml().load(path.read_text(encoding="utf-8")) or {}
        for name, spec in (document.get("slots") or {}).items():
            spec = spec or {}
            if spec.get("influence_conversation", spec.get("type") != "any"):
                slots.add(str(name))
    return slots


def read_conversation(tracker: Engine, sender_id: str) -> list[tuple[Any, ...]]:
    """The tracker's events of one conversation, oldest first (through the store's sender_id index)."""
    try:
        with tracker.connect() as connection:
            return [
                tuple(row)
                for row in connection.execute(
                    text(
                        "SELECT id, type_name, timestamp, intent_name, action_name, data FROM events "
                        "WHERE sender_id = :sender ORDER BY id"
                    ),
                    {"sender": sender_id},
                )
            ]
    except (OperationalError, ProgrammingError):
        return []


def sessions(rows: list[tuple[Any, ...]], slots: set[str]) -> list[Session]:
    """The conversation cut into sessions, each with its turns (for people) and story steps (for Rasa)."""
    found: list[Session] = []
    current: Session | None = None
    for event_id, type_name, timestamp, intent_name, action_name, data in rows:
        try:
            event = json.loads(data or "{}")
        except ValueError:
            continue
        at = dt.datetime.fromtimestamp(float(timestamp), dt.UTC) if timestamp else None
        if type_name == "session_started" or current is None:
            current = Session(first_event_id=int(event_id), started=at)
            found.append(current)
            if type_name == "session_started":
                continue
        _add_event(current, type_name, event, intent_name, action_name, at, slots)
    return [session for session in found if session.turns]


def _add_event(
    session: Session,
    type_name: str,
    event: dict[str, Any],
    intent_name: str | None,
    action_name: str | None,
    at: dt.datetime | None,
    slots: set[str],
) -> None:
    if type_name == "user":
        _add_user(session, event, intent_name, at)
    elif type_name == "bot":
        if event.get("text"):
            session.turns.append(Turn("bot", redact(str(event["text"])), at=at))
    elif type_name == "action":
        name = action_name or event.get("name") or ""
        if name and name not in _IMPLICIT_ACTIONS:
            session.turns.append(Turn("action", name, at=at))
            session.steps.append({"action": name})
    elif type_name == "slot":
        name = str(event.get("name") or "")
        if name in slots:
            value = _masked_value(event.get("value"))
            session.turns.append(Turn("slot", f"{name} = {json.dumps(value, ensure_ascii=False)}", at=at))
            session.steps.append({"slot_was_set": [{name: value}]})
    elif type_name == "active_loop":
        loop = event.get("name")
        session.turns.append(Turn("loop", str(loop or "null"), at=at))
        session.steps.append({"active_loop": loop})


def _masked_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [_masked_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _masked_value(v) for k, v in value.items()}
    return value


def _add_user(session: Session, event: dict[str, Any], intent_name: str | None, at: dt.datetime | None) -> None:
    raw = str(event.get("text") or "")
    parse = event.get("parse_data") or {}
    intent = str((parse.get("intent") or {}).get("name") or intent_name or "")
    confidence = (parse.get("intent") or {}).get("confidence")
    entities = [e for e in parse.get("entities") or [] if isinstance(e, dict) and e.get("entity")]
    shown = tuple((str(e["entity"]), redact(str(e.get("value")))) for e in entities)
    if not intent:
        return
    if raw.startswith("/") or not raw:
        # A button payload or gateway command: the intent (and entities) without text, as Rasa's stories write it.
        session.turns.append(Turn("user", raw.split("{", 1)[0], intent, _float(confidence), shown, at))
        step: dict[str, Any] = {"intent": intent}
        if entities:
            step["entities"] = [{str(e["entity"]): _masked_value(e.get("value"))} for e in entities]
        session.steps.append(step)
        return
    masked = redact(raw)
    session.turns.append(Turn("user", masked, intent, _float(confidence), shown, at))
    session.steps.append({"user": LiteralScalarString(_annotated(raw, masked, entities) + "\n"), "intent": intent})


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _annotated(raw: str, masked: str, entities: list[dict[str, Any]]) -> str:
    """The masked text with Rasa entity annotations.

    When masking left the text as it was, the tracker's character spans hold. Otherwise they may point at the
    wrong characters, so each entity is looked for by its (masked) value in the masked text, and one that is not
    found exactly once is left out: a masked secret is never written back unmasked to place an annotation.
    """
    spans: list[tuple[int, int, dict[str, Any]]] = []
    for entity in entities:
        start, end = entity.get("start"), entity.get("end")
        if masked == raw and isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(masked):
            spans.append((start, end, entity))
            continue
        value = redact(str(entity.get("value") or ""))
        if value and masked.count(value) == 1:
            at = masked.index(value)
            spans.append((at, at + len(value), entity))
    out, cursor = [], 0
    for start, end, entity in sorted(spans, key=lambda s: (s[0], s[1])):
        name = str(entity["entity"])
        if start < cursor or not _ENTITY_NAME.match(name):
            continue  # overlapping spans (two extractors) or a name Rasa would not read: text only
        surface = masked[start:end]
        if "[" in surface or "]" in surface:
            continue
        out += [_escape(masked[cursor:start]), f"[{surface}]{_entity_label(entity, surface)}"]
        cursor = end
    out.append(_escape(masked[cursor:]))
    return "".join(out)


def _escape(plain: str) -> str:
    # Square brackets in plain text would read as annotations; customers rarely type them.
    return plain.replace("[", "【").replace("]", "】")


def _entity_label(entity: dict[str, Any], surface: str) -> str:
    name = str(entity["entity"])
    value = entity.get("value")
    extra = {k: entity[k] for k in ("role", "group") if entity.get(k)}
    masked_value = _masked_value(value) if value is not None else surface
    if not extra and (masked_value == surface or not isinstance(masked_value, str)):
        return f"({name})"
    label: dict[str, Any] = {"entity": name, **extra}
    if isinstance(masked_value, str) and masked_value != surface:
        label["value"] = masked_value
    return json.dumps(label, ensure_ascii=False)


def story_yaml(name: str, steps: list[dict[str, Any]]) -> str:
    """The story as an item of a `stories:` list, indented as the hand-written files are."""
    yaml = YAML()
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)  # a top-level list comes out indented by 2, as in bot/tests
    yaml.representer.add_representer(
        type(None), lambda representer, _: representer.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    buffer = io.StringIO()
    yaml.dump([{"story": name, "steps": steps}], buffer)
    return buffer.getvalue()


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > _NAME_MAX or any(ch in name for ch in "\r\n\t#"):
        raise StoryEditError("invalid", f"a story name is one line of 1-{_NAME_MAX} characters, without '#'")
    return name


def check_file_name(file_name: str) -> str:
    file_name = file_name.strip() or DEFAULT_FILE
    if not _FILE_NAME.match(file_name):
        raise StoryEditError("invalid", "the file is named test_<a-z 0-9 _>.yml (Rasa reads test_ files as tests)")
    return file_name


def save_story(directory: Path, file_name: str, name: str, steps: list[dict[str, Any]]) -> SavedStory:
    """Append the story to `directory/file_name`; refuses a name already used by any test story or rule."""
    name, file_name = check_name(name), check_file_name(file_name)
    if not any("intent" in step for step in steps):
        raise StoryEditError("invalid", "this session has no user turn to test")
    path = directory / file_name
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        # One writer at a time across processes: the duplicate check and the append are one step.
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        for story in list_stories(directory):
            if story.name == name:
                raise StoryEditError("duplicate", f"a test story named {name!r} already exists in {story.file}")
        before = path.read_text(encoding="utf-8") if path.exists() else ""
        if before:
            document = _safe_yaml().load(before) or {}
            if list(document)[-1:] != ["stories"]:
                raise StoryEditError("invalid", f"{file_name} does not end with its stories: add the story by hand")
            after = before.rstrip("\n") + "\n\n" + story_yaml(name, steps)
        else:
            after = _NEW_FILE_HEADER + story_yaml(name, steps)
        written = (_safe_yaml().load(after) or {}).get("stories") or []
        if not written or written[-1].get("story") != name:
            raise StoryEditError("invalid", "the story did not read back as written")
        _write_atomically(path, after)
    finally:
        os.close(descriptor)
    diff = "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True), after.splitlines(keepends=True), f"a/{file_name}", f"b/{file_name}"
        )
    )
    return SavedStory(file_name, diff)


def _write_atomically(path: Path, content: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(content)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
