"""Test-story runs from the console: `rasa test core` in the background, one at a time, results kept per run.

A run is a child process of the Rasa environment (`.venv-rasa`), never an import: the gateway stays free of
Rasa's dependencies. Each run has its own folder under `var/story-runs/<id>/` holding `run.json` (state, who,
model, mode, counts), Rasa's log and its results (`failed_test_stories.yml`, `successful_test_stories.yml`,
`story_report.json`). A failed story is read back from Rasa's own file: Rasa writes the story as the test
expected it and marks every wrong prediction with an end-of-line comment (`# predicted: ...`); `failed_stories`
turns those into expected and actual turns side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

logger = logging.getLogger(__name__)

FAILED_FILE = "failed_test_stories.yml"
SUCCESSFUL_FILE = "successful_test_stories.yml"
REPORT_FILE = "story_report.json"
MODES = ("core", "e2e")
_KEEP_RUNS = 20
_RUN_ID = re.compile(r"^[0-9]{8}T[0-9]{6}-[0-9a-f]{6}$")
_SOURCE = re.compile(r"^(?P<name>.*) \((?P<source>[^()]*\.ya?ml)\)$")
# What Rasa prints as it goes, mapped to what the page says it is doing (the last one seen wins).
_PHASES = (
    ("Loading model", "加载模型"),
    ("Evaluating", "评估故事"),
    ("Processed story blocks", "读取测试故事"),
    ("Running", "运行故事"),
    ("Finished evaluation", "汇总结果"),
    ("Evaluation Results", "汇总结果"),
)


class RunBusy(Exception):
    """A run is already going: one at a time (a run takes a core for a minute or more)."""


@dataclass
class StoryRun:
    id: str
    state: str  # running | passed | failed | error | interrupted
    mode: str  # core | e2e
    by: str
    model: str
    started_at: str
    finished_at: str | None = None
    returncode: int | None = None
    total: int | None = None
    failed: int | None = None
    stories: str = ""
    error: str = ""

    @property
    def finished(self) -> bool:
        return self.state != "running"

    @property
    def seconds(self) -> float:
        start = dt.datetime.fromisoformat(self.started_at)
        end = dt.datetime.fromisoformat(self.finished_at) if self.finished_at else dt.datetime.now(dt.UTC)
        return max(0.0, (end - start).total_seconds())


@dataclass(frozen=True)
class StepDiff:
    kind: str  # user | entity | action | bot | slot | loop | other
    expected: str
    actual: str  # equal to `expected` when Rasa predicted it right
    note: str = ""
    text: str = ""  # a user turn's words, from the test story (Rasa's failed story leaves them out)

    @property
    def wrong(self) -> bool:
        return self.expected != self.actual


@dataclass(frozen=True)
class FailedStory:
    name: str
    source: str
    steps: list[StepDiff] = field(default_factory=list)

    def with_texts(self, texts: list[str]) -> FailedStory:
        """The story with the user turns' words put back (from the test story), when the turns line up."""
        users = [i for i, step in enumerate(self.steps) if step.kind == "user"]
        if len(users) != len(texts):
            return self
        steps = list(self.steps)
        for index, words in zip(users, texts, strict=True):
            steps[index] = replace(steps[index], text=words)
        return FailedStory(self.name, self.source, steps)

    @property
    def wrong_steps(self) -> int:
        return sum(1 for step in self.steps if step.wrong)


def _comment(node: Any, key: Any) -> str:
    """The end-of-line comment ruamel keeps for `key` of a mapping (or index of a sequence), without `#`."""
    items = getattr(getattr(node, "ca", None), "items", {}) or {}
    tokens = items.get(key) or []
    texts = []
    for token in tokens:
        for part in token if isinstance(token, list) else [token]:
            value = getattr(part, "value", None)
            if isinstance(value, str):
                texts.append(value)
    # A comment token can carry the following blank lines and full-line comments too: keep its first line.
    first = "".join(texts).strip().splitlines()[:1]
    return first[0].lstrip("#").strip() if first else ""


def _predicted(comment: str) -> str | None:
    return comment[len("predicted:") :].strip() if comment.startswith("predicted:") else None


def _step_diffs(step: CommentedMap) -> list[StepDiff]:
    if "intent" in step or "user" in step:
        return _user_diffs(step)
    if "action" in step:
        expected = str(step["action"])
        predicted = _predicted(_comment(step, "action"))
        if predicted is None:
            return [StepDiff("action", expected, expected)]
        # "predicted: action_unlikely_intent after ..." is a warning Rasa writes beside a right prediction too.
        actual, _, after = predicted.partition(" after ")
        return [StepDiff("action", expected, actual, f"之后 {after}" if after else "")]
    if "bot" in step:
        expected = str(step["bot"]).strip()
        predicted = _predicted(_comment(step, "bot"))
        return [StepDiff("bot", expected, expected if predicted is None else predicted)]
    if "slot_was_set" in step:
        shown = []
        for item in step["slot_was_set"] or []:
            if isinstance(item, dict):
                shown += [f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in item.items()]
            else:
                shown.append(f"{item}")
        text = "，".join(shown)
        return [StepDiff("slot", text, text)]
    if "active_loop" in step:
        loop = str(step["active_loop"]) if step["active_loop"] is not None else "null"
        return [StepDiff("loop", loop, loop)]
    text = json.dumps(dict(step), ensure_ascii=False, default=str)
    return [StepDiff("other", text, text)]


def _user_diffs(step: CommentedMap) -> list[StepDiff]:
    text = str(step.get("user") or "").strip()
    intent = str(step.get("intent") or "")
    expected = f"{intent}：{text}" if text else intent
    predicted = _predicted(_comment(step, "intent")) or (_predicted(_comment(step, "user")) if text else None)
    if predicted is None:
        diffs = [StepDiff("user", expected, expected)]
    else:
        # "predicted: <intent>: <the message with the entities Rasa found>"
        actual_intent, _, actual_text = predicted.partition(": ")
        actual = f"{actual_intent}：{actual_text.strip()}" if actual_text.strip() else actual_intent
        note = "意图相同，实体不同" if actual_intent == intent else ""
        diffs = [StepDiff("user", expected, actual, note)]
    entities = step.get("entities")
    if isinstance(entities, CommentedSeq):
        for index, entity in enumerate(entities):
            if isinstance(entity, CommentedMap):
                for key, value in entity.items():
                    shown = f"{key}={value}"
                    wrong = _predicted(_comment(entity, key))
                    if wrong is not None:
                        name, _, found = wrong.partition(": ")
                        diffs.append(StepDiff("entity", shown, f"{name}={found}"))
                    else:
                        diffs.append(StepDiff("entity", shown, shown))
            else:
                shown = str(entity)
                wrong = _predicted(_comment(entities, index))
                diffs.append(StepDiff("entity", shown, shown if wrong is None else wrong))
    return diffs


def failed_stories(content: str) -> list[FailedStory]:
    """The failed stories of Rasa's `failed_test_stories.yml` as expected-vs-actual steps (none: an empty list)."""
    try:
        document = YAML().load(content)
    except YAMLError as error:
        raise ValueError(f"{FAILED_FILE} is not YAML: {error}") from error
    if not isinstance(document, CommentedMap):
        return []  # "# None of the test stories failed - all good!"
    found = []
    for story in document.get("stories") or []:
        name, source = _name_and_source(str(story.get("story", "")))
        steps = [d for step in story.get("steps") or [] if isinstance(step, CommentedMap) for d in _step_diffs(step)]
        found.append(FailedStory(name, source, steps))
    return found


def story_names(content: str) -> list[str]:
    """The story names of one of Rasa's result files (without the source Rasa appends)."""
    try:
        document = YAML(typ="safe", pure=True).load(content)
    except YAMLError:
        return []
    if not isinstance(document, dict):
        return []
    return [_name_and_source(str(s.get("story", "")))[0] for s in document.get("stories") or [] if isinstance(s, dict)]


def user_texts(stories: Path, source: str, name: str) -> list[str]:
    """The words of each user step (empty for an intent-only one) of the story `name` in `stories/source`."""
    path = stories / Path(source).name
    try:
        document = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8")) or {}
    except (OSError, YAMLError):
        return []
    for story in document.get("stories") or []:
        if isinstance(story, dict) and str(story.get("story")) == name:
            steps = [s for s in story.get("steps") or [] if isinstance(s, dict)]
            return [str(s.get("user") or "").strip() for s in steps if "intent" in s or "user" in s]
    return []


def _name_and_source(label: str) -> tuple[str, str]:
    match = _SOURCE.match(label)
    if match is None:
        return label, ""
    return match.group("name"), Path(match.group("source")).name


class StoryRunner:
    """Starts `rasa test core` runs, one at a time, and keeps their records and results under `root`."""

    def __init__(self, root: Path, rasa_python: Path, project_root: Path, *, timeout_s: float = 1800.0) -> None:
        self.root = root
        self.rasa_python = rasa_python
        self.project_root = project_root
        self.timeout_s = timeout_s
        self._process: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def recover(self) -> None:
        """Runs a previous gateway left running can no longer finish: mark them interrupted."""
        for run in self.runs():
            if run.state == "running":
                run.state, run.finished_at, run.error = "interrupted", _now(), "网关重启，运行中断。"
                self._save(run)

    def runs(self) -> list[StoryRun]:
        if not self.root.exists():
            return []
        found = [self.get(p.name) for p in self.root.iterdir() if _RUN_ID.match(p.name)]
        return sorted((r for r in found if r is not None), key=lambda r: r.id, reverse=True)

    def get(self, run_id: str) -> StoryRun | None:
        if not _RUN_ID.match(run_id):
            return None
        path = self.root / run_id / "run.json"
        try:
            return StoryRun(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None

    def results_dir(self, run_id: str) -> Path:
        return self.root / run_id / "results"

    def log_tail(self, run_id: str, lines: int = 30) -> str:
        try:
            content = (self.root / run_id / "rasa.log").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        # tqdm redraws its bar with carriage returns: keep what the line ended as.
        shown = [part.rsplit("\r", 1)[-1] for part in content.split("\n")]
        return "\n".join([line for line in shown if line.strip()][-lines:])

    def phase(self, run_id: str) -> str:
        tail = self.log_tail(run_id, lines=200)
        found = "启动 Rasa"
        for line in tail.splitlines():
            for marker, label in _PHASES:
                if marker in line:
                    found = label
        return found

    def failed(self, run_id: str) -> list[FailedStory]:
        path = self.results_dir(run_id) / FAILED_FILE
        if not path.exists():
            return []
        stories = self.root / run_id / "stories"
        found = failed_stories(path.read_text(encoding="utf-8"))
        return [story.with_texts(user_texts(stories, story.source, story.name)) for story in found]

    def passed(self, run_id: str) -> list[str]:
        path = self.results_dir(run_id) / SUCCESSFUL_FILE
        return story_names(path.read_text(encoding="utf-8")) if path.exists() else []

    @property
    def busy(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self, stories: Path, model: Path, mode: str, by: str) -> StoryRun:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        async with self._lock:
            if self.busy:
                raise RunBusy("a story run is going")
            run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S") + "-" + os.urandom(3).hex()
            folder = self.root / run_id
            folder.mkdir(parents=True)
            run = StoryRun(run_id, "running", mode, by, model.name, _now(), stories=str(stories))
            self._save(run)
            # Rasa tests a copy: edits during the run do not mix in, and the diff shows the stories as tested.
            snapshot = folder / "stories"
            snapshot.mkdir()
            for path in sorted(stories.glob("*.yml")) + sorted(stories.glob("*.yaml")):
                shutil.copy2(path, snapshot / path.name)
            command = [
                str(self.rasa_python),
                "-m",
                "rasa",
                "test",
                "core",
                "--stories",
                str(snapshot),
                "--model",
                str(model),
                "--out",
                str(self.results_dir(run_id)),
                "--no-plot",
                "--successes",
            ] + (["--e2e"] if mode == "e2e" else [])
            env = dict(os.environ)
            env.update(
                {
                    "RASA_TELEMETRY_ENABLED": "false",
                    "SQLALCHEMY_SILENCE_UBER_WARNING": "1",
                    "PYTHONUNBUFFERED": "1",
                    "TF_CPP_MIN_LOG_LEVEL": "2",
                    # A stale project cache (.rasa/cache) breaks `rasa test` on 3.6.21: each run has its own.
                    "RASA_CACHE_DIRECTORY": str(folder / "cache"),
                }
            )
            log = open(folder / "rasa.log", "wb")  # noqa: SIM115 (the child writes it; closed by the watcher)
            try:
                self._process = await asyncio.create_subprocess_exec(
                    *command,
                    cwd=self.project_root,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as error:
                log.close()
                run.state, run.finished_at, run.error = "error", _now(), f"无法启动 Rasa：{error}"
                self._save(run)
                return run
            self._watcher = asyncio.create_task(self._watch(self._process, run, log))
            self._prune()
            return run

    async def _watch(self, process: asyncio.subprocess.Process, run: StoryRun, log: Any) -> None:
        started = time.monotonic()
        try:
            try:
                returncode = await asyncio.wait_for(process.wait(), timeout=self.timeout_s)
            except TimeoutError:
                process.kill()
                returncode = await process.wait()
                run.error = f"超过 {int(self.timeout_s)} 秒，已停止。"
        finally:
            log.close()
        self._finish(run, returncode)
        logger.info(
            "story run finished",
            extra={"run": run.id, "state": run.state, "seconds": round(time.monotonic() - started, 1)},
        )

    def _finish(self, run: StoryRun, returncode: int) -> None:
        run.returncode, run.finished_at = returncode, _now()
        shutil.rmtree(self.root / run.id / "cache", ignore_errors=True)
        report = self.results_dir(run.id) / REPORT_FILE
        if returncode != 0 or run.error:
            run.state = "error"
            run.error = run.error or f"Rasa 以状态 {returncode} 退出，见日志。"
        else:
            try:
                failed = len(self.failed(run.id))
                accuracy = json.loads(report.read_text(encoding="utf-8")).get("conversation_accuracy") or {}
                run.failed = failed
                run.total = int(accuracy.get("total", failed + len(self.passed(run.id))))
                run.state = "failed" if failed else "passed"
            except (OSError, ValueError) as error:
                run.state, run.error = "error", f"无法读取 Rasa 的结果：{error}"
        self._save(run)

    async def close(self) -> None:
        """Stop a run that is going (the gateway is shutting down)."""
        if self.busy and self._process is not None:
            self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), timeout=10)
            except TimeoutError:
                self._process.kill()
        if self._watcher is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._watcher, timeout=10)

    async def wait(self) -> None:
        """Until the current run (if any) has finished and its record is written."""
        if self._watcher is not None:
            await asyncio.shield(self._watcher)

    def _save(self, run: StoryRun) -> None:
        path = self.root / run.id / "run.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(run), ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(temporary, path)

    def _prune(self) -> None:
        for old in self.runs()[_KEEP_RUNS:]:
            if old.finished:
                shutil.rmtree(self.root / old.id, ignore_errors=True)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
