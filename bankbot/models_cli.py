"""`bankbot rasa-model`: the ops console's background job (train a candidate and gate it, promote, roll back).

The console (in the gateway) queues a job in the shared database and starts `bankbot rasa-model job ID`; this
process does the work, writing its phase, percentage and log tail to the job's row, with a heartbeat so a
crash shows as a failed job. Candidates are cached by the hash of their inputs, like the serving model
(`bankbot.training`), and evaluations by (model file, evaluation data), so a repeated job costs seconds.

The gate scores the candidate and the serving model on the same data, which neither was trained on: the
held-out NLU file `bot/heldout/nlu.yml` (training reads only nlu_data/ and bot/data/) and the test stories
in bot/tests. See `bankcore.model_registry.gate` for "no worse".
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from bankbot.layout import ProjectLayout, subprocess_env
from bankbot.training import rasa_train_command
from bankcore import model_registry, ops_accounts
from bankcore.model_registry import EvaluationFigures
from bankcore.models import OpsModel, OpsModelJob, OpsUser
from bankcore.nlu_lint import load_nlu
from bankcore.ops_accounts import StaffMember
from bankcore.settings import Settings

# Bump when the evaluation changes meaning, so cached figures are not reused.
EVALUATION_VERSION = "2"
FALLBACK_INTENT = "nlu_fallback"
HEARTBEAT_SECONDS = 5.0
# How long Rasa may take to load a model on PUT /model (it loads, then swaps; the old model serves meanwhile).
LOAD_TIMEOUT_SECONDS = 600.0

# Runs inside the Rasa environment: one model load, then the held-out texts and the test stories end to end
# (as `rasa test e2e`: each user message is parsed by the model, so NLU damage fails the story it breaks).
_EVALUATE_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, logging, os, sys
    logging.disable(logging.WARNING)
    import yaml
    from rasa.core.agent import Agent
    from rasa.core.test import test as test_stories

    async def main(model, texts_file, stories, out_dir, out_file):
        agent = Agent.load(model)
        texts = json.load(open(texts_file, encoding="utf-8"))
        intents = []
        for text in texts:
            parsed = await agent.parse_message(text)
            intents.append((parsed.get("intent") or {}).get("name") or "")
        os.makedirs(out_dir, exist_ok=True)
        await test_stories(stories, agent, out_directory=out_dir, e2e=True, disable_plotting=True, warnings=False)
        report = json.load(open(os.path.join(out_dir, "story_report.json"), encoding="utf-8"))
        conversations = report.get("conversation_accuracy") or {}
        failed = []
        failed_file = os.path.join(out_dir, "failed_test_stories.yml")
        if os.path.exists(failed_file):
            document = yaml.safe_load(open(failed_file, encoding="utf-8")) or {}
            if isinstance(document, dict):
                failed = [str(s.get("story", "")) for s in document.get("stories") or []]
        result = {
            "intents": intents,
            "stories_passed": conversations.get("correct", 0),
            "stories_total": conversations.get("total", 0),
            "failed_stories": failed,
        }
        json.dump(result, open(out_file, "w", encoding="utf-8"), ensure_ascii=False)

    asyncio.run(main(*sys.argv[1:6]))
    """
)


def heldout_file(layout: ProjectLayout) -> Path:
    return layout.root / "bot" / "heldout" / "nlu.yml"


# --- the candidate's inputs -------------------------------------------------------------------------------


def candidate_inputs(layout: ProjectLayout, nlu_dir: Path) -> list[tuple[str, Path]]:
    """The training inputs of a model trained from `nlu_dir`, each under its name in the project.

    The same names and order as `bankbot.training.training_inputs`, so a candidate of unchanged data has the
    serving model's hash (and file). The jieba dictionaries always come from the project: the Rasa config
    names them by a path relative to the project root.
    """
    root = layout.root
    entries = [(str(p.relative_to(root)), p) for p in (layout.config, root / "requirements-rasa.lock")]
    for folder in (layout.domain, layout.dialogue_data):
        entries += [(str(p.relative_to(root)), p) for p in sorted(q for q in folder.rglob("*") if q.is_file())]
    nlu: list[tuple[tuple[str, ...], str, Path]] = []
    for path in nlu_dir.rglob("*"):
        relative = path.relative_to(nlu_dir)
        if path.is_file() and relative.parts[0] != "jieba":
            nlu.append((("nlu_data", *relative.parts), str(Path("nlu_data") / relative), path))
    for path in (layout.nlu_data / "jieba").rglob("*"):
        if path.is_file():
            relative = path.relative_to(layout.nlu_data)
            nlu.append((("nlu_data", *relative.parts), str(Path("nlu_data") / relative), path))
    entries += [(name, path) for _, name, path in sorted(nlu, key=lambda item: item[0])]
    return entries


def candidate_hash(layout: ProjectLayout, nlu_dir: Path) -> str:
    digest = hashlib.sha256()
    for name, path in candidate_inputs(layout, nlu_dir):
        digest.update(name.encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_fingerprint(path: Path) -> str:
    """Rasa's model_id of a model file (what GET /status reports once it is loaded)."""
    with tarfile.open(path, "r:gz") as archive:
        for member in archive:
            if member.name.lstrip("/") == "metadata.json":
                handle = archive.extractfile(member)
                if handle is not None:
                    return str(json.load(handle).get("model_id", ""))
    return ""


def data_hash_of(file_name: str) -> str:
    match = re.fullmatch(r"bankbot-([0-9a-f]+)\.tar\.gz", file_name)
    return match.group(1) if match else ""


# --- progress ---------------------------------------------------------------------------------------------


class JobReporter:
    """Writes the job's phase, percentage and log tail to its row (throttled), and a heartbeat meanwhile."""

    def __init__(self, factory: sessionmaker[Session], job_id: int, *, tail_lines: int = 25) -> None:
        self._factory = factory
        self.job_id = job_id
        self.phase = "preparing"
        self.progress = 0
        self._lines: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self._overwrite_last = False
        self._lock = threading.Lock()
        self._last_write = 0.0
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> JobReporter:
        self._heartbeat.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._heartbeat.join(timeout=10)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            self.flush()

    def update(self, phase: str | None = None, progress: int | None = None, *, force: bool = False) -> None:
        with self._lock:
            if phase is not None:
                self.phase = phase
            if progress is not None:
                self.progress = progress
        if force or phase is not None or time.monotonic() - self._last_write > 1.0:
            self.flush()

    def line(self, text: str, *, overwritable: bool = False) -> None:
        """Add a log line; a line ended by a carriage return (a progress bar) is replaced by the next one."""
        text = text.rstrip()
        with self._lock:
            if self._overwrite_last and self._lines:
                self._lines.pop()
            if text:
                self._lines.append(text[:300])
            self._overwrite_last = overwritable and bool(text)
        self.update()

    @property
    def tail(self) -> str:
        with self._lock:
            return "\n".join(self._lines)

    def flush(self) -> None:
        with self._lock:
            phase, progress, tail = self.phase, self.progress, "\n".join(self._lines)
            self._last_write = time.monotonic()
        try:
            with self._factory() as session, session.begin():
                model_registry.report(session, self.job_id, phase, progress, tail, _now())
        except SQLAlchemyError as error:
            # A busy or briefly unreachable database must not fail a training; the next report tries again.
            print(f"progress report failed: {error}", file=sys.stderr, flush=True)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


_EPOCHS = re.compile(r"Epochs:\s*(\d+)%")


def _stream(command: list[str], cwd: Path, env: dict[str, str], on_line: Callable[[str, bool], None]) -> int:
    """Run a command, passing each output line (and progress-bar redraw) to `on_line`; return its exit code."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    buffer = b""
    while True:
        chunk = os.read(process.stdout.fileno(), 4096)
        if not chunk:
            break
        buffer += chunk
        while True:
            cut = min((i for i in (buffer.find(b"\n"), buffer.find(b"\r")) if i >= 0), default=-1)
            if cut < 0:
                break
            on_line(buffer[:cut].decode("utf-8", "replace"), buffer[cut : cut + 1] == b"\r")
            buffer = buffer[cut + 1 :]
    if buffer:
        on_line(buffer.decode("utf-8", "replace"), False)
    return process.wait()


# --- training ---------------------------------------------------------------------------------------------


def train_candidate(layout: ProjectLayout, nlu_dir: Path, reporter: JobReporter, low: int, high: int) -> Path:
    """The model of `nlu_dir`'s data: from the cache, else trained now (progress from `low` to `high` %)."""
    name = f"bankbot-{candidate_hash(layout, nlu_dir)}.tar.gz"
    cached = layout.cache / "models" / name
    cached.parent.mkdir(parents=True, exist_ok=True)
    with open(layout.cache / "training.lock", "w") as lock:
        reporter.line("waiting for any other training on this machine...")
        fcntl.flock(lock, fcntl.LOCK_EX)
        if cached.exists():
            reporter.line(f"{name}: these inputs were trained before; reusing the cached model")
            return cached
        work = Path(tempfile.mkdtemp(prefix="candidate-", dir=layout.cache))
        try:
            bars = {"done": 0, "last": 0}

            def on_line(text: str, redraw: bool) -> None:
                match = _EPOCHS.search(text)
                if match:
                    percent = int(match.group(1))
                    if percent < bars["last"]:
                        bars["done"] += 1  # a new progress bar: DIET's epochs first, then TED's
                    bars["last"] = percent
                    fraction = min(1.0, (bars["done"] + percent / 100) / 2)
                    reporter.update(progress=low + int((high - low) * fraction))
                reporter.line(text, overwritable=redraw)

            command = rasa_train_command(layout, nlu_dir=nlu_dir, out_dir=work, name=name)
            reporter.line(f"training {name}...")
            started = time.monotonic()
            code = _stream(command, layout.root, subprocess_env(), on_line)
            if code != 0:
                raise RuntimeError(f"rasa train exited with {code}")
            shutil.move(str(work / name), cached)
            reporter.line(f"trained {name} in {time.monotonic() - started:.0f} s")
            return cached
        finally:
            shutil.rmtree(work, ignore_errors=True)


# --- evaluation -------------------------------------------------------------------------------------------


def evaluation_data(layout: ProjectLayout) -> list[Path]:
    return [heldout_file(layout), *sorted(p for p in layout.test_stories.rglob("*.yml") if p.is_file())]


def evaluation_data_hash(layout: ProjectLayout) -> str:
    digest = hashlib.sha256(EVALUATION_VERSION.encode() + b"\0")
    for path in evaluation_data(layout):
        digest.update(str(path.relative_to(layout.root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def intent_scores(gold: list[str], predicted: list[str]) -> tuple[float, float]:
    """Accuracy and macro-F1 over the gold intents; a fallback is a miss (the customer was not understood)."""
    pairs = list(zip(gold, predicted, strict=True))
    accuracy = sum(g == p for g, p in pairs) / len(pairs) if pairs else 0.0
    f1s = []
    for label in sorted(set(gold)):
        tp = sum(g == label and p == label for g, p in pairs)
        fp = sum(g != label and p == label for g, p in pairs)
        fn = sum(g == label and p != label for g, p in pairs)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return accuracy, statistics.fmean(f1s) if f1s else 0.0


def evaluate(layout: ProjectLayout, model: Path, log: Callable[[str], None]) -> EvaluationFigures:
    """The model's figures on the held-out file and the test stories; cached by (model file, data)."""
    key = f"{file_sha256(model)[:16]}-{evaluation_data_hash(layout)}"
    cached = layout.cache / "evaluations" / f"{key}.json"
    if cached.exists():
        log(f"{model.name}: evaluated before on this data; figures from the cache")
        return EvaluationFigures.from_dict(json.loads(cached.read_text(encoding="utf-8")))
    examples = load_nlu(heldout_file(layout).parent).examples
    if not examples:
        raise RuntimeError(f"no held-out examples in {heldout_file(layout)}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="evaluate-") as temp:
        work = Path(temp)
        (work / "texts.json").write_text(json.dumps([e.text for e in examples], ensure_ascii=False), "utf-8")
        (work / "evaluate.py").write_text(_EVALUATE_SCRIPT, encoding="utf-8")
        env = subprocess_env({"RASA_CACHE_DIRECTORY": str(work / "cache")})
        command = [
            str(layout.rasa_python),
            str(work / "evaluate.py"),
            str(model),
            str(work / "texts.json"),
            str(layout.test_stories),
            str(work / "out"),
            str(work / "result.json"),
        ]
        output: collections.deque[str] = collections.deque(maxlen=40)
        code = _stream(command, layout.root, env, lambda text, _redraw: output.append(text))
        if code != 0:
            raise RuntimeError(f"evaluating {model.name} failed ({code}):\n" + "\n".join(output))
        result = json.loads((work / "result.json").read_text(encoding="utf-8"))
    gold = [e.intent for e in examples]
    predicted = [str(p) for p in result["intents"]]
    accuracy, macro_f1 = intent_scores(gold, predicted)
    figures = EvaluationFigures(
        intent_accuracy=round(accuracy, 4),
        intent_macro_f1=round(macro_f1, 4),
        heldout_examples=len(examples),
        stories_passed=int(result["stories_passed"]),
        stories_total=int(result["stories_total"]),
        failed_stories=sorted(str(s) for s in result["failed_stories"]),
        misses=[[e.text, e.intent, p] for e, p in zip(examples, predicted, strict=True) if e.intent != p][:20],
    )
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(asdict(figures), ensure_ascii=False), encoding="utf-8")
    log(f"{model.name}: evaluated in {time.monotonic() - started:.0f} s")
    return figures


# --- the Rasa server --------------------------------------------------------------------------------------


def _rasa(settings: Settings, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
    url = f"{settings.rasa_url}{path}?token={urllib.parse.quote(settings.rasa_token)}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def rasa_status(settings: Settings) -> dict[str, Any]:
    status = _rasa(settings, "GET", "/status")
    if not isinstance(status, dict):
        raise RuntimeError("Rasa's /status answered something other than an object")
    return status


def deployed_models(settings: Settings) -> Path:
    """Where the files of models the console promoted are kept (Rasa loads them from here)."""
    return settings.var_dir / "models"


def find_model_file(layout: ProjectLayout, settings: Settings, file_name: str) -> Path | None:
    for folder in (deployed_models(settings), layout.models, layout.cache / "models"):
        if (folder / file_name).is_file():
            return folder / file_name
    return None


def _deploy(source: Path, settings: Settings) -> Path:
    """The model file where Rasa loads it from: a hard link to the cached file where possible."""
    target = deployed_models(settings) / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
    return target


def load_into_rasa(settings: Settings, model: Path) -> dict[str, Any]:
    """PUT /model, then GET /status must name the new file and fingerprint; returns the status."""
    _rasa(settings, "PUT", "/model", {"model_file": str(model)}, timeout=LOAD_TIMEOUT_SECONDS)
    status = rasa_status(settings)
    expected = model_fingerprint(model)
    if status.get("model_file") != model.name or (expected and status.get("model_id") != expected):
        raise RuntimeError(
            f"Rasa reports {status.get('model_file')} ({status.get('model_id')}) after loading "
            f"{model.name} ({expected})"
        )
    return status


# --- jobs -------------------------------------------------------------------------------------------------


class JobRefused(RuntimeError):
    """The job cannot do what it was asked (staff-facing reason, in English, shown with the job)."""


def _serving_entry(layout: ProjectLayout, settings: Settings, factory: sessionmaker[Session]) -> tuple[int, Path]:
    """The registry entry and file of the model Rasa serves now (entered as serving if it was not known)."""
    status = rasa_status(settings)
    name = str(status.get("model_file") or "")
    path = find_model_file(layout, settings, name)
    if path is None:
        raise JobRefused(f"the serving model's file {name!r} is not in var/models, models/ or the cache")
    with factory() as session, session.begin():
        known = model_registry.model_by_file(session, name)
        if known is not None and known.status == "serving":
            return known.id, path
        model_id = model_registry.record_model(
            session,
            file_name=name,
            data_hash=data_hash_of(name),
            fingerprint=str(status.get("model_id") or ""),
            trained_by=known.trained_by if known else "",
            trained_at=known.trained_at if known else dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC),
            status="serving",
        )
        promoted_by = (known.promoted_by or "") if known is not None else ""
        model_registry.mark_serving(session, model_id, promoted_by, _now())
        return model_id, path


def run_train(
    layout: ProjectLayout, settings: Settings, factory: sessionmaker[Session], member: StaffMember, r: JobReporter
) -> None:
    r.update("preparing", 2)
    _, serving_path = _serving_entry(layout, settings, factory)
    r.line(f"serving model: {serving_path.name}")
    r.update("training", 5)
    candidate = train_candidate(layout, settings.nlu_data_dir, r, 5, 70)
    r.update("evaluating_candidate", 70)
    candidate_figures = evaluate(layout, candidate, r.line)
    r.update("evaluating_serving", 85)
    serving_figures = evaluate(layout, serving_path, r.line)
    r.update("gate", 97)
    decision = model_registry.gate(candidate_figures, serving_figures)
    record = decision.as_record(candidate_figures, serving_figures, serving_path.name)
    r.line(
        f"gate: {'passed' if decision.passed else 'refused'}; accuracy {candidate_figures.intent_accuracy:.4f} vs "
        f"{serving_figures.intent_accuracy:.4f}, macro-F1 {candidate_figures.intent_macro_f1:.4f} vs "
        f"{serving_figures.intent_macro_f1:.4f}, stories {candidate_figures.stories_passed}/"
        f"{candidate_figures.stories_total} vs {serving_figures.stories_passed}/{serving_figures.stories_total}"
    )
    with factory() as session, session.begin():
        model_id = model_registry.record_model(
            session,
            file_name=candidate.name,
            data_hash=data_hash_of(candidate.name),
            fingerprint=model_fingerprint(candidate),
            trained_by=member.username,
            trained_at=_now(),
            status="candidate" if decision.passed else "refused",
            gate_record=record,
        )
        job_row = session.get(OpsModelJob, r.job_id)
        if job_row is not None:
            job_row.model_id = model_id
        ops_accounts.audit(
            session,
            member,
            "model_gate_passed" if decision.passed else "model_gate_refused",
            candidate.name,
            json.dumps({k: record[k] for k in ("passed", "failed_checks", "serving_model")}, ensure_ascii=False)
            + "\n"
            + r.tail.splitlines()[-1],
            _now(),
        )


def run_swap(
    layout: ProjectLayout,
    settings: Settings,
    factory: sessionmaker[Session],
    member: StaffMember,
    r: JobReporter,
    kind: str,
    model_id: int,
) -> None:
    r.update("preparing", 5)
    _, serving_path = _serving_entry(layout, settings, factory)
    with factory() as session:
        target = model_registry.model(session, model_id)
        targets = {m.id for m in model_registry.rollback_targets(session)}
    if target is None:
        raise JobRefused(f"no model {model_id}")
    if kind == "promote":
        if target.status != "candidate" or not target.gate.get("passed"):
            raise JobRefused(f"{target.file_name} is {target.status}: only a candidate that passed the gate goes live")
        if target.gate.get("serving_model") != serving_path.name:
            raise JobRefused(
                f"the gate compared {target.file_name} with {target.gate.get('serving_model')}, but "
                f"{serving_path.name} serves now: train again to gate it against the serving model"
            )
    elif target.id not in targets:
        raise JobRefused(f"{target.file_name} is not one of the last {model_registry.KEEP_FOR_ROLLBACK} served models")
    source = find_model_file(layout, settings, target.file_name)
    if source is None:
        raise JobRefused(f"the file of {target.file_name} is gone")
    deployed = _deploy(source, settings)
    r.line(f"PUT /model {deployed}")
    r.update("loading", 30)
    started = time.monotonic()
    status = load_into_rasa(settings, deployed)
    r.line(f"Rasa serves {status['model_file']} ({status['model_id']}) after {time.monotonic() - started:.1f} s")
    r.update("recording", 95)
    with factory() as session, session.begin():
        row = session.get(OpsModel, target.id)
        if row is not None and not row.fingerprint:
            row.fingerprint = str(status.get("model_id") or "")
        dropped = model_registry.mark_serving(session, target.id, member.username, _now())
        ops_accounts.audit(
            session,
            member,
            "model_promoted" if kind == "promote" else "model_rolled_back",
            target.file_name,
            f"-serving {serving_path.name}\n+serving {target.file_name}",
            _now(),
        )
    for name in dropped:
        (deployed_models(settings) / name).unlink(missing_ok=True)


def run_job(job_id: int, settings: Settings, layout: ProjectLayout | None = None) -> int:
    """Run one queued job to its end; the job's row says how it went. Exit code 0 when it succeeded."""
    from bankcore.database import make_engine, make_session_factory, unit_of_work

    layout = layout or ProjectLayout()
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    try:
        with unit_of_work(factory) as session:
            job = model_registry.claim_job(session, job_id, os.getpid(), _now())
            if job is None:
                print(f"job {job_id} is not waiting to run")
                return 1
            kind, model_id, username = job.kind, job.model_id, job.requested_by
            user = session.scalar(select(OpsUser).where(OpsUser.username == username))
            member = StaffMember(user.id if user else 0, username, user.role if user else "ops")
        with JobReporter(factory, job_id) as reporter:
            try:
                if kind == "train":
                    run_train(layout, settings, factory, member, reporter)
                else:
                    assert model_id is not None
                    run_swap(layout, settings, factory, member, reporter, kind, model_id)
            except Exception as error:
                reporter.line(f"failed: {error}")
                reporter.flush()
                with unit_of_work(factory) as session:
                    model_registry.finish_job(session, job_id, _now(), error=f"{type(error).__name__}: {error}")
                return 1
            reporter.update("done", 100, force=True)
        with unit_of_work(factory) as session:
            model_registry.finish_job(session, job_id, _now())
        return 0
    finally:
        engine.dispose()


def cmd_job(args: argparse.Namespace) -> int:
    return run_job(args.job_id, Settings.from_env())


def cmd_list(args: argparse.Namespace) -> int:
    from bankcore.database import make_engine, make_session_factory, migrate, unit_of_work

    settings = Settings.from_env()
    migrate(settings.database_url)
    with unit_of_work(make_session_factory(make_engine(settings.database_url))) as session:
        for entry in model_registry.models(session):
            decision = entry.gate.get("passed")
            gate_text = "" if decision is None else ("gate passed" if decision else "gate refused")
            print(f"{entry.id:4} {entry.status:10} {entry.file_name} {entry.trained_by or '-':12} {gate_text}")
    return 0


def register(commands: Any) -> None:
    group = commands.add_parser("rasa-model", help="the ops console's model jobs and registry").add_subparsers(
        dest="rasa_model_command", required=True
    )
    job = group.add_parser("job", help="run a queued console job (started by the console)")
    job.add_argument("job_id", type=int)
    job.set_defaults(handler=cmd_job)
    group.add_parser("list", help="the models the console knows").set_defaults(handler=cmd_list)
