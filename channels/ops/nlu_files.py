"""Edits of the NLU data ops make from the console, written back as small, reviewable YAML diffs.

The files are Rasa's YAML (`nlu: - intent: X  examples: |  - text`). ruamel.yaml's round-trip mode keeps the
order, the comments and the literal block style, so adding an example changes one line. Every edit checks the
file's hash against the one the editor saw (two editors never overwrite each other silently) and refuses an
example that is already there, under the same intent (duplicate) or another one (conflict).
"""

from __future__ import annotations

import difflib
import hashlib
import io
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import LiteralScalarString

_ANNOTATION = re.compile(r"\[([^\]]+)\]\((?:[^)]+)\)|\[([^\]]+)\]\{[^}]*\}")
_NEW_FILE = "inbox_corrections.yml"


class NluEditError(Exception):
    """An edit that was refused; `kind` is duplicate | conflict | stale | invalid."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Example:
    intent: str
    text: str  # as written, entity annotations included
    file: str

    @property
    def plain(self) -> str:
        return plain_text(self.text)


@dataclass(frozen=True)
class Edit:
    file: str
    diff: str  # unified diff of the file


def plain_text(example: str) -> str:
    """An example without its entity annotations ("我的[储蓄卡](account_type)" → "我的储蓄卡"), trimmed."""
    return _ANNOTATION.sub(lambda m: m.group(1) or m.group(2), example).strip()


def annotate(text: str, spans: list[tuple[int, int, str]]) -> str:
    """`text` with entity spans (start, end, entity) written as Rasa annotations; spans must not overlap."""
    out, cursor = [], 0
    for start, end, entity in sorted(spans):
        if start < cursor or not 0 <= start < end <= len(text) or not re.fullmatch(r"[a-z][a-z0-9_]*", entity):
            raise NluEditError("invalid", f"bad entity span {start}-{end} {entity!r}")
        out += [text[cursor:start], f"[{text[start:end]}]({entity})"]
        cursor = end
    out.append(text[cursor:])
    return "".join(out)


def _yaml() -> YAML:
    yaml = YAML()  # round trip
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=2, offset=0)
    return yaml


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.exists() else "new"


def _examples_of(block: str) -> list[str]:
    return [line.strip()[2:].strip() for line in block.splitlines() if line.strip().startswith("- ")]


class NluData:
    """The NLU data directory ops edit (`nlu_data/`)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def files(self) -> list[Path]:
        return sorted(p for p in self.directory.glob("*.yml") if p.is_file())

    def _load(self, path: Path) -> Any:
        return _yaml().load(path.read_text(encoding="utf-8"))

    def examples(self) -> Iterator[Example]:
        for path in self.files():
            document = self._load(path) or {}
            for item in document.get("nlu") or []:
                if "intent" in item and "examples" in item:
                    for text in _examples_of(str(item["examples"])):
                        yield Example(str(item["intent"]), text, path.name)

    def intents(self) -> dict[str, list[Example]]:
        found: dict[str, list[Example]] = {}
        for example in self.examples():
            found.setdefault(example.intent, []).append(example)
        return found

    def file_of(self, intent: str) -> Path:
        """The file that holds the intent's examples (a new corrections file when no file does)."""
        for example in self.examples():
            if example.intent == intent:
                return self.directory / example.file
        return self.directory / _NEW_FILE

    def add_example(self, intent: str, text: str, *, expected_hash: str | None) -> Edit:
        """Add `text` (annotations allowed) under `intent`; refuses duplicates, conflicts and stale editors."""
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", intent):
            raise NluEditError("invalid", f"bad intent name {intent!r}")
        plain = plain_text(text)
        if not plain or "\n" in text or len(text) > 500:
            raise NluEditError("invalid", "an example is one line of at most 500 characters")
        for example in self.examples():
            if example.plain == plain:
                if example.intent == intent:
                    raise NluEditError("duplicate", f"already an example of {intent} in {example.file}")
                raise NluEditError(
                    "conflict", f"the same text is an example of {example.intent} in {example.file}: fix that first"
                )
        path = self.file_of(intent)
        if expected_hash is not None and file_hash(path) != expected_hash:
            raise NluEditError("stale", f"{path.name} changed since you opened it: reload and try again")
        before = path.read_text(encoding="utf-8") if path.exists() else ""
        yaml = _yaml()
        document = yaml.load(before) if before else None
        if document is None:
            document = yaml.load('version: "3.1"\nnlu: []\n')
        items = document.setdefault("nlu", [])
        block = next((item for item in items if item.get("intent") == intent and "examples" in item), None)
        if block is None:
            items.append({"intent": intent, "examples": LiteralScalarString(f"- {text}\n")})
        else:
            current = str(block["examples"])
            block["examples"] = LiteralScalarString(current.rstrip("\n") + f"\n- {text}\n")
        buffer = io.StringIO()
        yaml.dump(document, buffer)
        after = buffer.getvalue()
        _write_atomically(path, after)
        diff = "".join(
            difflib.unified_diff(
                before.splitlines(keepends=True), after.splitlines(keepends=True), f"a/{path.name}", f"b/{path.name}"
            )
        )
        return Edit(path.name, diff)


def _write_atomically(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
