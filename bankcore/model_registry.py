"""The registry of Rasa models the ops console trains and serves, its background jobs, and the promotion gate.

Shared by the gateway (which shows models and jobs, and starts jobs) and the job process (`bankbot rasa-model
job`, which trains, evaluates, promotes and rolls back). Only one job runs at a time: a job holds the unique
`active` slot from the moment it is queued until it finishes, and a job whose process stopped sending
heartbeats is failed, so a crash is seen and frees the slot.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bankcore.models import OpsModel, OpsModelJob

JOB_KINDS = ("train", "promote", "rollback")
MODEL_STATUSES = ("candidate", "refused", "serving", "retired")
# A running job reports at least every few seconds; after this long without a word its process is gone.
STALE_AFTER = dt.timedelta(seconds=90)
# How many earlier serving models stay available for a one-click rollback.
KEEP_FOR_ROLLBACK = 5
# "No worse": intent accuracy and macro-F1 on the held-out set may not drop by more than this (one point
# absorbs a single held-out sentence flipping between two trainings of the same data), and no test story
# that passes with the serving model may fail with the candidate.
GATE_TOLERANCE = 0.01


class JobBusy(RuntimeError):
    """Another job is queued or running."""


@dataclass(frozen=True)
class EvaluationFigures:
    """One model's scores on the held-out NLU file and the test stories."""

    intent_accuracy: float
    intent_macro_f1: float
    heldout_examples: int
    stories_passed: int
    stories_total: int
    failed_stories: list[str] = field(default_factory=list)
    # Held-out sentences the model got wrong: [text, expected intent, predicted intent], a few.
    misses: list[list[str]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationFigures:
        return cls(
            intent_accuracy=float(data["intent_accuracy"]),
            intent_macro_f1=float(data["intent_macro_f1"]),
            heldout_examples=int(data["heldout_examples"]),
            stories_passed=int(data["stories_passed"]),
            stories_total=int(data["stories_total"]),
            failed_stories=[str(s) for s in data.get("failed_stories", [])],
            misses=[[str(x) for x in m] for m in data.get("misses", [])],
        )


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    # Machine names of the checks that failed: intent_accuracy, intent_macro_f1, stories.
    failed_checks: list[str]
    # Stories that pass with the serving model and fail with the candidate.
    newly_failing_stories: list[str]

    def as_record(self, candidate: EvaluationFigures, serving: EvaluationFigures, serving_model: str) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "failed_checks": self.failed_checks,
            "newly_failing_stories": self.newly_failing_stories,
            "tolerance": GATE_TOLERANCE,
            "serving_model": serving_model,
            "candidate": asdict(candidate),
            "serving": asdict(serving),
        }


def gate(candidate: EvaluationFigures, serving: EvaluationFigures, tolerance: float = GATE_TOLERANCE) -> GateDecision:
    """Promote only a candidate no worse than the serving model on the held-out split and on the test stories."""
    failed: list[str] = []
    if candidate.intent_accuracy < serving.intent_accuracy - tolerance:
        failed.append("intent_accuracy")
    if candidate.intent_macro_f1 < serving.intent_macro_f1 - tolerance:
        failed.append("intent_macro_f1")
    newly_failing = sorted(set(candidate.failed_stories) - set(serving.failed_stories))
    if newly_failing or candidate.stories_passed < serving.stories_passed:
        failed.append("stories")
    return GateDecision(not failed, failed, newly_failing)


# --- jobs -------------------------------------------------------------------------------------------------


def fail_stale_jobs(session: Session, now: dt.datetime) -> int:
    """Fail active jobs whose process stopped reporting (crashed, killed, machine restarted)."""
    stale = 0
    for job in session.scalars(select(OpsModelJob).where(OpsModelJob.active.is_not(None))):
        last = job.heartbeat_at or job.created_at
        if now - last > STALE_AFTER:
            _finish(job, "failed", "stale", now)
            stale += 1
    session.flush()
    return stale


def start_job(session: Session, kind: str, requested_by: str, now: dt.datetime, model_id: int | None = None) -> int:
    """Queue a job and take the one active slot; JobBusy when another job holds it."""
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {kind!r}")
    fail_stale_jobs(session, now)
    if session.scalar(select(OpsModelJob.id).where(OpsModelJob.active.is_not(None))) is not None:
        raise JobBusy("another job is running")
    job = OpsModelJob(
        kind=kind,
        requested_by=requested_by,
        model_id=model_id,
        state="queued",
        phase="queued",
        progress=0,
        log_tail="",
        error="",
        active=1,
        created_at=now,
        heartbeat_at=now,
    )
    try:
        with session.begin_nested():
            session.add(job)
            session.flush()
    except IntegrityError as error:  # a concurrent request took the slot between the check and the insert
        raise JobBusy("another job is running") from error
    return job.id


def claim_job(session: Session, job_id: int, pid: int, now: dt.datetime) -> OpsModelJob | None:
    """The job process takes its queued job; None if it is not queued (already run, or failed as stale)."""
    job = session.get(OpsModelJob, job_id)
    if job is None or job.state != "queued":
        return None
    job.state, job.pid, job.started_at, job.heartbeat_at = "running", pid, now, now
    session.flush()
    return job


def report(session: Session, job_id: int, phase: str, progress: int, log_tail: str, now: dt.datetime) -> None:
    session.execute(
        update(OpsModelJob)
        .where(OpsModelJob.id == job_id, OpsModelJob.state == "running")
        .values(phase=phase, progress=max(0, min(100, progress)), log_tail=log_tail[-4000:], heartbeat_at=now)
    )


def finish_job(session: Session, job_id: int, now: dt.datetime, error: str = "") -> None:
    job = session.get(OpsModelJob, job_id)
    if job is not None and job.active is not None:
        _finish(job, "failed" if error else "succeeded", error, now)
        session.flush()


def _finish(job: OpsModelJob, state: str, error: str, now: dt.datetime) -> None:
    job.state, job.error, job.active, job.finished_at = state, error[-4000:], None, now
    if state == "succeeded":
        job.progress = 100


@dataclass(frozen=True)
class JobView:
    id: int
    kind: str
    requested_by: str
    model_id: int | None
    state: str
    phase: str
    progress: int
    log_tail: str
    error: str
    created_at: dt.datetime
    finished_at: dt.datetime | None

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")


def _job_view(job: OpsModelJob) -> JobView:
    return JobView(
        job.id,
        job.kind,
        job.requested_by,
        job.model_id,
        job.state,
        job.phase,
        job.progress,
        job.log_tail,
        job.error,
        job.created_at,
        job.finished_at,
    )


def job(session: Session, job_id: int) -> JobView | None:
    row = session.get(OpsModelJob, job_id)
    return _job_view(row) if row is not None else None


def recent_jobs(session: Session, limit: int = 10) -> list[JobView]:
    rows = session.scalars(select(OpsModelJob).order_by(OpsModelJob.id.desc()).limit(limit))
    return [_job_view(row) for row in rows]


# --- models -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelView:
    id: int
    file_name: str
    data_hash: str
    fingerprint: str
    trained_by: str
    trained_at: dt.datetime
    status: str
    gate: dict[str, Any]
    promoted_by: str | None
    promoted_at: dt.datetime | None
    retired_at: dt.datetime | None


def _model_view(row: OpsModel) -> ModelView:
    return ModelView(
        row.id,
        row.file_name,
        row.data_hash,
        row.fingerprint,
        row.trained_by,
        row.trained_at,
        row.status,
        dict(row.gate or {}),
        row.promoted_by,
        row.promoted_at,
        row.retired_at,
    )


def models(session: Session, limit: int = 30) -> list[ModelView]:
    rows = session.scalars(select(OpsModel).order_by(OpsModel.trained_at.desc(), OpsModel.id.desc()).limit(limit))
    return [_model_view(row) for row in rows]


def model(session: Session, model_id: int) -> ModelView | None:
    row = session.get(OpsModel, model_id)
    return _model_view(row) if row is not None else None


def model_by_file(session: Session, file_name: str) -> ModelView | None:
    row = session.scalar(select(OpsModel).where(OpsModel.file_name == file_name))
    return _model_view(row) if row is not None else None


def serving(session: Session) -> ModelView | None:
    row = session.scalar(select(OpsModel).where(OpsModel.status == "serving").order_by(OpsModel.id.desc()))
    return _model_view(row) if row is not None else None


def rollback_targets(session: Session, keep: int = KEEP_FOR_ROLLBACK) -> list[ModelView]:
    """The models that served before the current one, newest first: the last `keep` of them."""
    rows = session.scalars(
        select(OpsModel)
        .where(OpsModel.status == "retired")
        .order_by(OpsModel.retired_at.desc(), OpsModel.id.desc())
        .limit(keep)
    )
    return [_model_view(row) for row in rows]


def record_model(
    session: Session,
    *,
    file_name: str,
    data_hash: str,
    fingerprint: str,
    trained_by: str,
    trained_at: dt.datetime,
    status: str,
    gate_record: dict[str, Any] | None = None,
) -> int:
    """Add a model, or update the entry of the same file (a retrained candidate of unchanged data)."""
    if status not in MODEL_STATUSES:
        raise ValueError(f"unknown model status {status!r}")
    row = session.scalar(select(OpsModel).where(OpsModel.file_name == file_name))
    if row is None:
        row = OpsModel(file_name=file_name, data_hash=data_hash, trained_by=trained_by, trained_at=trained_at)
        session.add(row)
    elif row.status == "serving" and status in ("candidate", "refused"):
        # The serving model's own data retrained: it stays serving; only the gate figures are refreshed.
        status = "serving"
    row.fingerprint = fingerprint or row.fingerprint or ""
    row.status = status
    row.gate = gate_record if gate_record is not None else dict(row.gate or {})
    session.flush()
    return row.id


def mark_serving(session: Session, model_id: int, promoted_by: str, now: dt.datetime) -> list[str]:
    """`model_id` is the serving model now; the one before is retired. Returns the files no longer kept.

    Only the last KEEP_FOR_ROLLBACK retired models stay rollback targets; older ones are marked 'retired'
    still, but their files may be deleted (the caller does it, the names are returned).
    """
    for row in session.scalars(select(OpsModel).where(OpsModel.status == "serving", OpsModel.id != model_id)):
        row.status, row.retired_at = "retired", now
    target = session.get(OpsModel, model_id)
    if target is None:
        raise LookupError(f"no model {model_id}")
    target.status, target.promoted_by, target.promoted_at = "serving", promoted_by, now
    session.flush()
    kept = {m.id for m in rollback_targets(session)}
    old = session.scalars(select(OpsModel).where(OpsModel.status == "retired", OpsModel.id.not_in(kept)))
    return [row.file_name for row in old]
