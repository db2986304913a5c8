"""Edits of the NLU data ops make from the console, written back as small, reviewable YAML diffs.

The files are Rasa's YAML (`nlu: - intent: X  examples: |  - text`, and the same shape for `synonym`, `lookup` and
`regex`). ruamel.yaml's round-trip mode keeps the order, the comments and the literal block style; an edit rewrites
only the one line of the block it is about, so adding, changing or deleting an example is a one-line diff. Every
change holds a lock on the directory, checks the file's hash against the one the editor saw (two editors never
overwrite each other silently), and refuses an example that is already there, under the same intent (duplicate) or
another one (conflict). The refusals are shown to ops as they are, so their messages are Chinese.
"""

from __future__ import annotations

import difflib
import fcntl
import hashlib
import io
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml as pyyaml
from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import LiteralScalarString

from bankcore.nlu_lint import fold_text

_ANNOTATION = re.compile(r"\[([^\]]+)\]\((?:[^)]+)\)|\[([^\]]+)\]\{[^}]*\}")
_NEW_FILE = "inbox_corrections.yml"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
MAX_CHARS = 500

#: The vocabulary kinds: Rasa's key, where a new group of that kind goes when no file has one yet, its Chinese name.
VOCABULARY_KINDS: dict[str, tuple[str, str]] = {
    "synonym": ("synonyms.yml", "同义词"),
    "lookup": ("regex.yml", "查找表"),
    "regex": ("regex.yml", "正则"),
}
_KEYS = ("intent", *VOCABULARY_KINDS)
_LOADER = getattr(pyyaml, "CSafeLoader", pyyaml.SafeLoader)  # reading only: libyaml is ten times faster
# The entries of each file as last read, by content hash: pages and edits read every file several times.
_READ: dict[Path, tuple[bytes, tuple[tuple[str, str, str], ...]]] = {}


class NluEditError(Exception):
    """An edit that was refused; `kind` is duplicate | conflict | stale | invalid. The message is for ops."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Example:
    intent: str
    text: str  # as written, entity annotations included
    file: str
    index: int = 0  # its place among the intent's examples in that file, from 0

    @property
    def plain(self) -> str:
        return plain_text(self.text)


@dataclass(frozen=True)
class VocabularyGroup:
    """One `synonym`, `lookup` or `regex` entry and its values."""

    kind: str
    name: str
    file: str
    values: tuple[str, ...]


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
            raise NluEditError(
                "invalid", f"实体标注 {start}-{end}:{entity} 不成立：超出句子范围、与其他标注重叠，或实体名不合法。"
            )
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


def _entry_lines(block: str) -> list[int]:
    """The line numbers of a block's entries ('- text' lines; other lines are left as they are)."""
    return [number for number, line in enumerate(block.split("\n")) if line.strip().startswith("- ")]


def _entry(line: str) -> str:
    return line.strip()[2:].strip()


def _examples_of(block: str) -> list[str]:
    lines = block.split("\n")
    return [_entry(lines[number]) for number in _entry_lines(block)]


def _one_line(text: str, what: str) -> str:
    text = text.strip()
    if not text or "\n" in text or "\r" in text or len(text) > MAX_CHARS:
        raise NluEditError("invalid", f"{what}须为一行、不能为空，最多 {MAX_CHARS} 个字符。")
    return text


class NluData:
    """The NLU data directory ops edit (`nlu_data/`)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def files(self) -> list[Path]:
        return sorted(p for p in self.directory.glob("*.yml") if p.is_file())

    @staticmethod
    def _entries(path: Path) -> tuple[tuple[str, str, str], ...]:
        """(key, name, block text) of the file's intent, synonym, lookup and regex entries with a block of examples."""
        content = path.read_bytes()
        digest = hashlib.sha256(content).digest()
        cached = _READ.get(path)
        if cached is not None and cached[0] == digest:
            return cached[1]
        document = pyyaml.load(content.decode("utf-8"), Loader=_LOADER) or {}
        entries = []
        for item in (document.get("nlu") if isinstance(document, dict) else None) or []:
            key = next((k for k in _KEYS if isinstance(item, dict) and k in item), None)
            if key is not None and isinstance(item.get("examples"), str):
                entries.append((key, str(item[key]), item["examples"]))
        if len(_READ) > 256:
            _READ.clear()  # many directories (tests): start over rather than grow
        _READ[path] = (digest, tuple(entries))
        return _READ[path][1]

    def _blocks(self, key: str) -> Iterator[tuple[Path, str, str]]:
        """(file, name, block text) of every `key` entry (intent, synonym, lookup, regex) with a block of examples."""
        for path in self.files():
            for kind, name, block in self._entries(path):
                if kind == key:
                    yield path, name, block

    def examples(self) -> Iterator[Example]:
        counters: dict[tuple[str, str], int] = {}
        for path, intent, block in self._blocks("intent"):
            for text in _examples_of(block):
                index = counters.get((path.name, intent), 0)
                counters[(path.name, intent)] = index + 1
                yield Example(intent, text, path.name, index)

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

    def vocabulary(self) -> list[VocabularyGroup]:
        """Synonyms, lookup tables and regexes, in file order."""
        groups: dict[tuple[str, str, str], list[str]] = {}  # blocks of one name in one file count as one
        for path in self.files():
            for kind, name, block in self._entries(path):
                if kind in VOCABULARY_KINDS:
                    groups.setdefault((kind, name, path.name), []).extend(_examples_of(block))
        order = {name: rank for rank, name in enumerate(VOCABULARY_KINDS)}
        return [
            VocabularyGroup(kind, name, file, tuple(values))
            for (kind, name, file), values in sorted(groups.items(), key=lambda entry: order[entry[0][0]])
        ]

    # Examples of intents

    def _refuse_repeats(self, intent: str, text: str, *, besides: Example | None = None) -> None:
        key = fold_text(plain_text(text))
        for example in self.examples():
            if example == besides or fold_text(example.plain) != key:
                continue
            if example.intent == intent:
                raise NluEditError("duplicate", f"意图 {intent} 在 {example.file} 中已有这条例句：{example.text}")
            raise NluEditError(
                "conflict",
                f"同样的句子已是意图 {example.intent} 的例句（{example.file}：{example.text}），请先处理那一条。",
            )

    def add_example(self, intent: str, text: str, *, expected_hash: str | None) -> Edit:
        """Add `text` (annotations allowed) under `intent`; refuses duplicates, conflicts and stale editors."""
        if not _NAME.fullmatch(intent):
            raise NluEditError("invalid", f"意图名称不合法：{intent}")
        text = _one_line(text, "例句")
        if not plain_text(text):
            raise NluEditError("invalid", "例句不能为空。")
        with self._locked():
            path = self.file_of(intent)
            self._check_hash(path, expected_hash)
            self._refuse_repeats(intent, text)

            def change(document: Any) -> None:
                items = document.setdefault("nlu", [])
                block = next((i for i in items if i.get("intent") == intent and "examples" in i), None)
                if block is None:
                    items.append({"intent": intent, "examples": LiteralScalarString(f"- {text}\n")})
                else:
                    block["examples"] = _appended(block["examples"], text)

            return self._rewrite(path, change)

    def _example(self, intent: str, file: str, index: int, old: str) -> Example:
        wanted = Example(intent, old, file, index)
        if wanted not in self.examples():
            raise NluEditError("stale", f"在 {file} 中找不到要修改的例句（可能已被同事修改或删除），请刷新页面。")
        return wanted

    def edit_example(
        self, intent: str, file: str, index: int, old: str, new: str, *, expected_hash: str | None
    ) -> Edit:
        """Replace example number `index` of `intent` in `file` (which must still read `old`) with `new`."""
        new = _one_line(new, "例句")
        if not plain_text(new):
            raise NluEditError("invalid", "例句不能为空。")
        with self._locked():
            path = self._path(file)
            self._check_hash(path, expected_hash, required=True)
            example = self._example(intent, file, index, old)
            if new == old:
                raise NluEditError("invalid", "例句没有改动。")
            self._refuse_repeats(intent, new, besides=example)
            return self._rewrite(path, self._replacing("intent", intent, index, new))

    def delete_example(self, intent: str, file: str, index: int, old: str, *, expected_hash: str | None) -> Edit:
        """Delete example number `index` of `intent` in `file`; an intent keeps at least its one last example."""
        with self._locked():
            path = self._path(file)
            self._check_hash(path, expected_hash, required=True)
            self._example(intent, file, index, old)
            if sum(1 for example in self.examples() if example.intent == intent) <= 1:
                raise NluEditError(
                    "invalid",
                    f"这是意图 {intent} 的最后一条例句，不能删除；要去掉这个意图，请在 domain 中删除它并重新训练。",
                )
            return self._rewrite(path, self._replacing("intent", intent, index, None))

    # Synonyms, lookup tables, regexes

    def _group_file(self, kind: str, name: str) -> Path:
        groups = [g for g in self.vocabulary() if g.kind == kind]
        found = next((g for g in groups if g.name == name), None) or next(iter(groups), None)
        return self.directory / (found.file if found else VOCABULARY_KINDS[kind][0])

    def _check_value(self, kind: str, name: str, value: str, *, besides: int | None = None) -> None:
        if kind == "regex":
            try:
                re.compile(value)
            except re.error as problem:
                raise NluEditError("invalid", f"正则表达式无法编译：{problem}") from None
        # Rasa matches synonyms and lookups case-insensitively; a regex is as written.
        key = value if kind == "regex" else value.lower()
        for group in self.vocabulary():
            for index, existing in enumerate(group.values):
                if group.kind != kind or (existing if kind == "regex" else existing.lower()) != key:
                    continue
                if group.name == name and index != besides:
                    raise NluEditError("duplicate", f"{VOCABULARY_KINDS[kind][1]} {name} 中已有“{existing}”。")
                if group.name != name and kind == "synonym":
                    raise NluEditError(
                        "conflict",
                        f"“{existing}”已是同义词 {group.name} 的写法（{group.file}）：一个写法只能对应一个标准值。",
                    )

    def _valid_group(self, kind: str, name: str) -> None:
        if kind not in VOCABULARY_KINDS:
            raise NluEditError("invalid", f"没有这类词表：{kind}")
        if kind == "synonym":
            _one_line(name, "同义词的标准值")
        elif not _NAME.fullmatch(name):
            raise NluEditError("invalid", f"{VOCABULARY_KINDS[kind][1]}名称只能含字母、数字和下划线：{name}")

    def add_value(self, kind: str, name: str, value: str, *, expected_hash: str | None) -> Edit:
        """Add `value` to the synonym, lookup table or regex `name` (a new one when there is none)."""
        self._valid_group(kind, name)
        name, value = name.strip(), _one_line(value, "取值")
        with self._locked():
            path = self._group_file(kind, name)
            self._check_hash(path, expected_hash)
            self._check_value(kind, name, value)

            def change(document: Any) -> None:
                items = document.setdefault("nlu", [])
                block = next((i for i in items if i.get(kind) == name and "examples" in i), None)
                if block is None:
                    items.append({kind: name, "examples": LiteralScalarString(f"- {value}\n")})
                else:
                    block["examples"] = _appended(block["examples"], value)

            return self._rewrite(path, change)

    def _value(self, kind: str, name: str, file: str, index: int, old: str) -> None:
        for group in self.vocabulary():
            if (group.kind, group.name, group.file) == (kind, name, file) and group.values[index : index + 1] == (old,):
                return
        raise NluEditError("stale", f"在 {file} 中找不到要修改的取值（可能已被同事修改或删除），请刷新页面。")

    def edit_value(
        self, kind: str, name: str, file: str, index: int, old: str, new: str, *, expected_hash: str | None
    ) -> Edit:
        self._valid_group(kind, name)
        new = _one_line(new, "取值")
        with self._locked():
            path = self._path(file)
            self._check_hash(path, expected_hash, required=True)
            self._value(kind, name, file, index, old)
            if new == old:
                raise NluEditError("invalid", "取值没有改动。")
            self._check_value(kind, name, new, besides=index)
            return self._rewrite(path, self._replacing(kind, name, index, new))

    def delete_value(self, kind: str, name: str, file: str, index: int, old: str, *, expected_hash: str | None) -> Edit:
        """Delete one value; deleting the last one removes the synonym, lookup table or regex."""
        self._valid_group(kind, name)
        with self._locked():
            path = self._path(file)
            self._check_hash(path, expected_hash, required=True)
            self._value(kind, name, file, index, old)
            return self._rewrite(path, self._replacing(kind, name, index, None))

    # The file machinery

    def _path(self, file: str) -> Path:
        path = self.directory / file
        if Path(file).name != file or path not in self.files():
            raise NluEditError("invalid", f"没有这个数据文件：{file}")
        return path

    @staticmethod
    def _check_hash(path: Path, expected_hash: str | None, *, required: bool = False) -> None:
        """Refuse an editor who saw another version of the file; a change of what exists must say what it saw."""
        if expected_hash is None and required:
            raise NluEditError("invalid", "表单缺少文件校验值（file_hash），请刷新页面后重试。")
        if expected_hash is not None and file_hash(path) != expected_hash:
            raise NluEditError(
                "stale",
                f"{path.name} 在您打开页面之后已被修改（可能是同事刚保存了编辑）。为避免覆盖对方的修改，"
                "本次没有保存：请刷新页面，在最新内容上重新操作。",
            )

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One edit at a time in the directory, across threads and gateway processes (an flock on the directory)."""
        handle = os.open(self.directory, os.O_RDONLY)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        finally:
            os.close(handle)  # closing releases the lock

    @staticmethod
    def _replacing(key: str, name: str, index: int, new: str | None) -> Callable[[Any], None]:
        """A change that replaces (or, with None, deletes) entry `index` of the `key: name` blocks of a document."""

        def change(document: Any) -> None:
            items = document.get("nlu") or []
            position = index
            for item in list(items):
                if not (isinstance(item, dict) and item.get(key) == name and isinstance(item.get("examples"), str)):
                    continue
                block = str(item["examples"])
                numbers = _entry_lines(block)
                if position >= len(numbers):
                    position -= len(numbers)
                    continue
                lines = block.split("\n")
                number = numbers[position]
                if new is None:
                    del lines[number]
                else:
                    indent = lines[number][: len(lines[number]) - len(lines[number].lstrip())]
                    lines[number] = f"{indent}- {new}"
                if new is None and len(numbers) == 1:
                    items.remove(item)  # its last entry: an empty block is not valid Rasa data
                else:
                    item["examples"] = LiteralScalarString("\n".join(lines))
                return
            raise NluEditError("stale", "要修改的条目已不存在，请刷新页面。")

        return change

    def _rewrite(self, path: Path, change: Callable[[Any], None]) -> Edit:
        before = path.read_text(encoding="utf-8") if path.exists() else ""
        yaml = _yaml()
        document = yaml.load(before) if before else None
        if document is None:
            document = yaml.load('version: "3.1"\nnlu: []\n')
        change(document)
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


def _appended(block: Any, entry: str) -> LiteralScalarString:
    return LiteralScalarString(str(block).rstrip("\n") + f"\n- {entry}\n")


def _write_atomically(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
