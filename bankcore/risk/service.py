"""The risk service: current rules (reloaded when the file changes, last good kept), the learned score, and
one call that gathers signals, decides and stores the decision. Anything that stops it raises
RiskUnavailable, and callers then move no money (fail closed)."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from decimal import Decimal
from pathlib import Path

from sqlalchemy.orm import Session

from bankcore.errors import NotFoundError
from bankcore.models import Customer, Payee
from bankcore.risk import store
from bankcore.risk.config import RulesConfig, RulesFileError, load_rules
from bankcore.risk.engine import Decision, RiskModel, decide
from bankcore.risk.features import compute_for
from bankcore.risk.gather import SessionContext, gather
from bankcore.risk.store import StoredDecision

logger = logging.getLogger("bankcore.risk")


class RiskUnavailable(RuntimeError):
    """The risk service cannot decide (no valid rules ever loaded, or its data could not be read)."""


class RiskService:
    """Thread-safe; one per process. Rules are re-read when the file's mtime or size changes."""

    def __init__(self, rules_path: Path, model_dir: Path | None = None) -> None:
        self.rules_path = Path(rules_path)
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self._lock = threading.Lock()
        self._rules: RulesConfig | None = None
        self._stamp: tuple[float, int] | None = None
        self._last_error: str | None = None
        self._model: RiskModel | None = None
        self._model_for: str | None = None  # the rules version the model was checked against

    @property
    def last_error(self) -> str | None:
        """Why the newest version of the rules file was refused (None when it is in force)."""
        return self._last_error

    def rules(self) -> RulesConfig:
        with self._lock:
            try:
                stat = self.rules_path.stat()
                stamp: tuple[float, int] | None = (stat.st_mtime, stat.st_size)
            except OSError:
                stamp = None
            if stamp is not None and stamp != self._stamp:
                try:
                    self._rules = load_rules(self.rules_path)
                    self._last_error = None
                    logger.info("risk rules %s loaded (version %s)", self.rules_path, self._rules.version)
                except RulesFileError as error:
                    self._last_error = str(error)
                    logger.error("risk rules refused, the last good rules stay in force: %s", error)
                self._stamp = stamp
            elif stamp is None and self._rules is None:
                self._last_error = f"{self.rules_path}: the rules file does not exist"
            if self._rules is None:
                raise RiskUnavailable(self._last_error or "no risk rules loaded")
            return self._rules

    def model(self, config: RulesConfig) -> RiskModel | None:
        """The learned score when one is installed and fits these rules' features; None otherwise."""
        if self.model_dir is None or not config.model.enabled:
            return None
        with self._lock:
            if self._model_for == config.version:
                return self._model
            self._model, self._model_for = None, config.version
            if (self.model_dir / "meta.json").exists():
                try:
                    from bankcore.risk.model import load_model

                    self._model = load_model(self.model_dir, config)
                except Exception as error:  # a stale or broken model must not stop the rules
                    logger.warning("risk model in %s not used: %s", self.model_dir, error)
            return self._model

    def decide(self, kind: str, config: RulesConfig, features: dict[str, float]) -> Decision:
        return decide(kind, features, config, self.model(config))

    def assess(
        self,
        session: Session,
        *,
        kind: str,
        customer_id: str,
        subject_id: str,
        amount: Decimal,
        currency: str,
        payee: Payee | None,
        context: SessionContext,
        now: dt.datetime,
        exclude_transfer_id: str | None = None,
    ) -> tuple[Decision, StoredDecision]:
        """Gather, decide and store; RiskUnavailable when any of it fails."""
        config = self.rules()
        customer = session.get(Customer, customer_id)
        if customer is None:
            raise NotFoundError("customer_not_found", customer_id=customer_id)
        try:
            risk = gather(
                session,
                kind=kind,
                customer=customer,
                amount=amount,
                currency=currency,
                payee=payee,
                context=context,
                now=now,
                exclude_transfer_id=exclude_transfer_id,
            )
            features = compute_for(risk, config)
            decision = self.decide(kind, config, features)
            stored = store.record(
                session,
                decision=decision,
                risk=risk,
                features=features,
                subject_id=subject_id,
                phrases=config.fraud_phrases,
                now=now,
            )
        except RiskUnavailable:
            raise
        except Exception as error:
            logger.exception("risk assessment of %s %s failed", kind, subject_id)
            raise RiskUnavailable(f"risk assessment failed: {type(error).__name__}") from error
        logger.info(
            "risk decision",
            extra={"customer_id": customer.id, "subject": subject_id, "action": decision.action},
        )
        return decision, stored


_services: dict[tuple[str, str], RiskService] = {}
_services_lock = threading.Lock()


def service_for(rules_path: Path, model_dir: Path | None) -> RiskService:
    """One shared service per (rules file, model directory) in a process."""
    key = (str(rules_path), str(model_dir))
    with _services_lock:
        if key not in _services:
            _services[key] = RiskService(rules_path, model_dir)
        return _services[key]
