"""The ops console's data browser: intents and their examples, synonyms, lookup tables and regexes, with the lint.

Viewers read; ops add, edit and delete (`channels.ops.nlu_files` writes one-line YAML diffs, refuses duplicates,
conflicts and stale editors). Every change goes to the audit log with its diff. The lint is `bankbot nlu check`'s
(`bankcore.nlu_lint`), jieba alignment included, cached by the hashes of the files it reads.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import yaml
from aiohttp import web

from bankcore import ops_accounts
from bankcore.nlu_lint import LintIssue, Tokenizer, lint_nlu, load_domain, parse_example, tokenizer_from_config
from bankcore.ops_accounts import StaffMember
from bankcore.settings import PROJECT_ROOT
from channels.ops.nlu_files import VOCABULARY_KINDS, Edit, Example, NluData, NluEditError, file_hash
from channels.ops.pages import MEMBER, in_bank, now, render, requires
from channels.resources import SETTINGS

STATIC_DIR = Path(__file__).parent / "static"
# The Rasa project the NLU data is checked against: the domain (intents, entities) and the tokenizer's set-up.
DOMAIN_DIR = PROJECT_ROOT / "bot" / "domain"
CONFIG_PATH = PROJECT_ROOT / "bot" / "config.yml"

#: The lint's findings as ops read them (Chinese), by code; {names} come from the finding's particulars.
LINT_TEXT = {
    "yaml_error": "YAML 无法解析，Rasa 训练会失败",
    "empty_example": "空例句",
    "duplicate_across_intents": "与意图 {other_intent} 的例句重复（{other_file}）：同一句话不能属于两个意图",
    "duplicate_example": "本意图下重复出现",
    "too_few_examples": "只有 {count} 条例句，业务意图至少需要 {minimum} 条",
    "entity_value_variants": "实体 {entity} 的写法 {surfaces} 只差全角/半角或大小写，却对应不同的值 {values}："
    "请添加同义词",
    "unknown_intent": "意图未在 domain 中声明",
    "unknown_entity": "实体 {entity} 未在 domain 中声明",
    "entity_misaligned": "“{text}”（{entity}）不在分词边界上（分词：{tokens}），训练时会被 Rasa 丢弃：请把这个词加入 "
    "nlu_data/jieba/userdict.txt",
    "domain_missing": "找不到 domain 文件",
}
LINT_NAMES = {
    "yaml_error": "YAML 错误",
    "empty_example": "空例句",
    "duplicate_across_intents": "跨意图重复",
    "duplicate_example": "重复例句",
    "too_few_examples": "例句不足",
    "entity_value_variants": "实体写法不一致",
    "unknown_intent": "未声明的意图",
    "unknown_entity": "未声明的实体",
    "entity_misaligned": "实体不在分词边界",
    "domain_missing": "缺少 domain",
}
LEVEL_NAMES = {"error": "错误", "warning": "警告"}


def lint_text(issue: LintIssue) -> str:
    template = LINT_TEXT.get(issue.code)
    try:
        return template.format(**issue.details) if template else issue.message
    except KeyError:
        return issue.message


@dataclass(frozen=True)
class LintReport:
    """The lint's findings, indexed by what the page shows them beside."""

    issues: tuple[LintIssue, ...]
    by_example: dict[tuple[str, str, str], list[LintIssue]] = field(default_factory=dict)  # (file, intent, text)
    by_intent: dict[str, list[LintIssue]] = field(default_factory=dict)  # about the intent as a whole
    per_intent: Counter[str] = field(default_factory=Counter)  # all findings of an intent, its examples' included
    general: list[LintIssue] = field(default_factory=list)  # about no intent (a file, the domain, a synonym)

    @classmethod
    def of(cls, issues: list[LintIssue]) -> LintReport:
        report = cls(tuple(issues))
        for issue in issues:
            if issue.intent is None:
                report.general.append(issue)
                continue
            report.per_intent[issue.intent] += 1
            if issue.example is not None and issue.file is not None:
                report.by_example.setdefault((Path(issue.file).name, issue.intent, issue.example), []).append(issue)
            else:
                report.by_intent.setdefault(issue.intent, []).append(issue)
        return report

    def count(self, level: str) -> int:
        return sum(1 for issue in self.issues if issue.level == level)

    def codes(self) -> list[tuple[str, str, int]]:
        """(level, code, how many) for the summary, errors first."""
        counted = Counter((issue.level, issue.code) for issue in self.issues)
        return sorted(((level, code, n) for (level, code), n in counted.items()), key=lambda c: (c[0] != "error", c))

    def for_example(self, example: Example) -> list[LintIssue]:
        return self.by_example.get((example.file, example.intent, example.text), [])


class LintCache:
    """The lint of an NLU directory, run again only when a file it reads changed (by content hash).

    The jieba tokenizer (a second to build) is kept while the config and the user dictionaries are unchanged.
    """

    def __init__(self, domain_dir: Path = DOMAIN_DIR, config_path: Path = CONFIG_PATH) -> None:
        self.domain_dir, self.config_path = domain_dir, config_path
        self._lock = threading.Lock()
        self._reports: dict[Path, tuple[str, LintReport]] = {}
        self._tokenizer: tuple[str, Tokenizer] | None = None
        self._entities: tuple[str, list[str]] | None = None
        self._entities_lock = threading.Lock()  # not the lint's: a lint run takes a second

    @staticmethod
    def _digest(paths: list[Path]) -> str:
        digest = hashlib.sha256()
        for path in paths:
            digest.update(str(path).encode() + b"\0")
            digest.update(path.read_bytes() if path.is_file() else b"-")
        return digest.hexdigest()

    def _domain_files(self) -> list[Path]:
        return sorted(self.domain_dir.rglob("*.yml")) if self.domain_dir.is_dir() else [self.domain_dir]

    def _tokenizer_for(self) -> Tokenizer | None:
        if not self.config_path.is_file():
            return None
        root = self.config_path.parent.parent  # paths in bot/config.yml are relative to the project root
        config = yaml.safe_load(self.config_path.read_text(encoding="utf-8")) or {}
        jieba: dict[str, Any] = next((c for c in config.get("pipeline", []) if c.get("name") == "JiebaTokenizer"), {})
        dictionaries = sorted((root / jieba["dictionary_path"]).glob("*")) if jieba.get("dictionary_path") else []
        key = self._digest([self.config_path, *dictionaries])
        if self._tokenizer is None or self._tokenizer[0] != key:
            self._tokenizer = (key, tokenizer_from_config(self.config_path, root))
        return self._tokenizer[1]

    def report(self, nlu_dir: Path) -> LintReport:
        files = sorted(p for p in nlu_dir.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file())
        with self._lock:
            tokenizer = self._tokenizer_for()
            key = self._digest([*files, *self._domain_files()]) + (self._tokenizer[0] if self._tokenizer else "")
            cached = self._reports.get(nlu_dir)
            if cached is not None and cached[0] == key:
                return cached[1]
            report = LintReport.of(lint_nlu(nlu_dir, self.domain_dir, tokenizer=tokenizer))
            if len(self._reports) > 16:
                self._reports.clear()
            self._reports[nlu_dir] = (key, report)
            return report

    def entities(self) -> list[str]:
        """The entities the domain declares (what ops may mark in a message)."""
        key = self._digest(self._domain_files())
        with self._entities_lock:
            if self._entities is None or self._entities[0] != key:
                self._entities = (key, sorted(load_domain(self.domain_dir)[1]))
            return self._entities[1]


LINT = web.AppKey("ops_nlu_lint", LintCache)
# One per process: the tokenizer and the reports depend on file contents only, so every app may share them.
_SHARED_LINT = LintCache()


def _data(request: web.Request) -> NluData:
    return NluData(request.app[SETTINGS].nlu_data_dir)


def domain_entities(app: web.Application) -> list[str]:
    return app[LINT].entities()


def _refused(request: web.Request, error: NluEditError, back: str) -> web.Response:
    return render(request, "message.html", status=409 if error.kind != "invalid" else 400, error=str(error), back=back)


async def _audit(request: web.Request, action: str, target: str, edit: Edit) -> None:
    member: StaffMember = request[MEMBER]
    await in_bank(request, lambda s: ops_accounts.audit(s, member, action, target, edit.diff, now()))


def _index(form: Any) -> int:
    try:
        return int(str(form.get("index", "")))
    except ValueError:
        raise web.HTTPBadRequest(text="bad index") from None


def _hash(form: Any) -> str | None:
    return str(form.get("file_hash", "")) or None


# Intents and examples


@requires("viewer")
async def intents_page(request: web.Request) -> web.StreamResponse:
    data = _data(request)
    only_issues = request.query.get("only") == "issues"

    def load() -> tuple[list[tuple[str, list[Example]]], dict[str, str], LintReport, list[str]]:
        intents = sorted(data.intents().items())
        hashes = {path.name: file_hash(path) for path in data.files()}
        return intents, hashes, request.app[LINT].report(data.directory), request.app[LINT].entities()

    intents, hashes, report, entities = await asyncio.to_thread(load)
    shown = [(intent, examples) for intent, examples in intents if not only_issues or report.per_intent[intent]]
    return render(
        request,
        "intents.html",
        intents=shown,
        all_intents=intents,
        hashes=hashes,
        report=report,
        entities=entities,
        only_issues=only_issues,
        lint_text=lint_text,
        lint_names=LINT_NAMES,
        level_names=LEVEL_NAMES,
        can_edit=request[MEMBER].can("ops"),
    )


@requires("ops")
async def edit_example_page(request: web.Request) -> web.StreamResponse:
    intent, file = request.match_info["intent"], request.query.get("file", "")
    try:
        index = int(request.query.get("index", ""))
    except ValueError:
        raise web.HTTPNotFound() from None
    data = _data(request)

    def load() -> tuple[Example | None, str, LintReport, list[str]]:
        found = next((e for e in data.examples() if (e.intent, e.file, e.index) == (intent, file, index)), None)
        path = data.directory / file
        digest = file_hash(path) if found is not None else ""
        return found, digest, request.app[LINT].report(data.directory), request.app[LINT].entities()

    example, digest, report, entities = await asyncio.to_thread(load)
    if example is None:
        return render(
            request,
            "message.html",
            status=404,
            error="找不到这条例句（可能已被修改或删除），请刷新。",
            back="/ops/intents",
        )
    return render(
        request,
        "example_edit.html",
        example=example,
        file_hash=digest,
        issues=report.for_example(example),
        entities=entities,
        lint_text=lint_text,
        level_names=LEVEL_NAMES,
    )


def _back_to(intent: str, message: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther("/ops/intents?" + urlencode({"msg": message}) + f"#intent-{intent}")


def _entity_check(request: web.Request, text: str) -> None:
    """Refuse annotations of entities the domain does not declare (the lint would flag them as errors)."""
    known = set(request.app[LINT].entities())
    unknown = sorted({span.entity for span in parse_example(text)[1]} - known)
    if unknown:
        raise NluEditError(
            "invalid", f"实体 {'、'.join(unknown)} 未在 domain 中声明；可用的实体：{'、'.join(sorted(known))}"
        )


@requires("ops")
async def add_example(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    intent = request.match_info["intent"]
    text = str(form.get("text", "")).strip()
    try:
        _entity_check(request, text)
        edit = await asyncio.to_thread(_data(request).add_example, intent, text, expected_hash=_hash(form))
    except NluEditError as error:
        return _refused(request, error, f"/ops/intents#intent-{intent}")
    await _audit(request, "add_example", f"{edit.file} {intent}", edit)
    raise _back_to(intent, f"已添加到 {edit.file}。")


@requires("ops")
async def edit_example(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    intent, file, index = request.match_info["intent"], str(form.get("file", "")), _index(form)
    old, new = str(form.get("old", "")), str(form.get("text", "")).strip()
    try:
        _entity_check(request, new)
        edit = await asyncio.to_thread(
            _data(request).edit_example, intent, file, index, old, new, expected_hash=_hash(form)
        )
    except NluEditError as error:
        return _refused(request, error, f"/ops/intents#intent-{intent}")
    await _audit(request, "edit_example", f"{edit.file} {intent}", edit)
    raise _back_to(intent, f"已修改 {edit.file} 中的例句。")


@requires("ops")
async def delete_example(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    intent, file, index = request.match_info["intent"], str(form.get("file", "")), _index(form)
    try:
        edit = await asyncio.to_thread(
            _data(request).delete_example, intent, file, index, str(form.get("old", "")), expected_hash=_hash(form)
        )
    except NluEditError as error:
        return _refused(request, error, f"/ops/intents#intent-{intent}")
    await _audit(request, "delete_example", f"{edit.file} {intent}", edit)
    raise _back_to(intent, f"已从 {edit.file} 删除例句。")


# Synonyms, lookup tables, regexes


@requires("viewer")
async def vocabulary_page(request: web.Request) -> web.StreamResponse:
    data = _data(request)

    def load() -> tuple[Any, dict[str, str], LintReport]:
        hashes = {path.name: file_hash(path) for path in data.files()}
        return data.vocabulary(), hashes, request.app[LINT].report(data.directory)

    groups, hashes, report = await asyncio.to_thread(load)
    variants = [issue for issue in report.issues if issue.code == "entity_value_variants"]
    return render(
        request,
        "vocabulary.html",
        kinds=[(kind, name, [g for g in groups if g.kind == kind]) for kind, (_, name) in VOCABULARY_KINDS.items()],
        hashes=hashes,
        variants=variants,
        lint_text=lint_text,
        can_edit=request[MEMBER].can("ops"),
    )


def _group(form: Any) -> tuple[str, str]:
    return str(form.get("kind", "")), str(form.get("name", "")).strip()


def _vocabulary_back(message: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther("/ops/vocabulary?" + urlencode({"msg": message}))


@requires("ops")
async def add_value(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    kind, name = _group(form)
    try:
        edit = await asyncio.to_thread(
            _data(request).add_value, kind, name, str(form.get("value", "")), expected_hash=_hash(form)
        )
    except NluEditError as error:
        return _refused(request, error, "/ops/vocabulary")
    await _audit(request, f"add_{kind}_value", f"{edit.file} {kind}:{name}", edit)
    raise _vocabulary_back(f"已添加到 {edit.file}（{name}）。")


@requires("ops")
async def edit_value(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    kind, name = _group(form)
    file, index, old = str(form.get("file", "")), _index(form), str(form.get("old", ""))
    try:
        edit = await asyncio.to_thread(
            _data(request).edit_value,
            kind,
            name,
            file,
            index,
            old,
            str(form.get("value", "")),
            expected_hash=_hash(form),
        )
    except NluEditError as error:
        return _refused(request, error, "/ops/vocabulary")
    await _audit(request, f"edit_{kind}_value", f"{edit.file} {kind}:{name}", edit)
    raise _vocabulary_back(f"已修改 {edit.file}（{name}）。")


@requires("ops")
async def delete_value(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    kind, name = _group(form)
    file, index, old = str(form.get("file", "")), _index(form), str(form.get("old", ""))
    try:
        edit = await asyncio.to_thread(
            _data(request).delete_value, kind, name, file, index, old, expected_hash=_hash(form)
        )
    except NluEditError as error:
        return _refused(request, error, "/ops/vocabulary")
    await _audit(request, f"delete_{kind}_value", f"{edit.file} {kind}:{name}", edit)
    raise _vocabulary_back(f"已从 {edit.file}（{name}）删除。")


def register(app: web.Application) -> None:
    app[LINT] = _SHARED_LINT
    app.router.add_get("/ops/intents", intents_page)
    app.router.add_post("/ops/intents/{intent}/examples", add_example)
    app.router.add_get("/ops/intents/{intent}/edit", edit_example_page)
    app.router.add_post("/ops/intents/{intent}/examples/edit", edit_example)
    app.router.add_post("/ops/intents/{intent}/examples/delete", delete_example)
    app.router.add_get("/ops/vocabulary", vocabulary_page)
    app.router.add_post("/ops/vocabulary/add", add_value)
    app.router.add_post("/ops/vocabulary/edit", edit_value)
    app.router.add_post("/ops/vocabulary/delete", delete_value)
    # The console's own scripts (the CSP allows same-origin scripts only).
    app.router.add_static("/ops/static/", STATIC_DIR, append_version=False)
