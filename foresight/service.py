"""The foresight model at session start: the likely reasons for a contact, from the customer's stored history."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import torch
from sqlalchemy.orm import Session

from bankcore.event_store import events_before, profile_of
from bankcore.events import Contact, public_channel
from foresight.dataset import DEFAULT_LOOKBACK, Example
from foresight.predictor import Ranked, top_k
from foresight.transformer import META_FILE, TransformerPredictor

logger = logging.getLogger(__name__)

THRESHOLD_FILE = "threshold.json"
DEFAULT_THRESHOLD = 0.5


def saved_threshold(model_dir: Path) -> float | None:
    """The threshold saved with the model (threshold.json's "threshold"), or None when there is none."""
    path = Path(model_dir) / THRESHOLD_FILE
    if not path.exists():
        return None
    try:
        return float(json.loads(path.read_text(encoding="utf-8"))["threshold"])
    except (OSError, ValueError, KeyError, TypeError):
        logger.warning("foresight: ignoring unreadable %s", path)
        return None


class ForesightService:
    """Loads the model once; `predict_for` reads one customer's history (two queries) and predicts one example."""

    def __init__(self, predictor: TransformerPredictor, threshold: float) -> None:
        self.predictor = predictor
        self.threshold = threshold

    @classmethod
    def load(
        cls, model_dir: Path, *, threshold: float | None = None, threads: int | None = 1
    ) -> ForesightService | None:
        """The service, or None (logged once) when `model_dir` holds no model.

        `threads`: torch intra-op threads for this process. One is the fastest for a single short sequence
        and leaves the other cores to the server; None leaves torch's setting alone.
        """
        model_dir = Path(model_dir)
        if not (model_dir / META_FILE).exists():
            logger.info("foresight: no model in %s; greetings stay generic", model_dir)
            return None
        if threads:
            torch.set_num_threads(threads)
        predictor = TransformerPredictor.load(model_dir)
        if threshold is None:
            threshold = saved_threshold(model_dir)
        return cls(predictor, DEFAULT_THRESHOLD if threshold is None else threshold)

    @property
    def intents(self) -> tuple[str, ...]:
        return self.predictor.intents

    def predict_for(
        self, session: Session, customer_id: str, channel: str, at: dt.datetime, k: int = 3
    ) -> list[Ranked] | None:
        """The k likeliest reasons, best first; None for an unknown customer (no events and no profile).

        Only events strictly before `at` are read (events_before); `channel` may be a gateway channel name.
        """
        if at.tzinfo is None:
            at = at.replace(tzinfo=dt.UTC)
        events = events_before(
            session, customer_id, at, max_events=self.predictor.max_events, lookback=DEFAULT_LOOKBACK
        )
        profile = profile_of(session, customer_id)
        if not events and profile is None:
            return None
        example = Example(Contact(customer_id, at, public_channel(channel)), tuple(events), profile)
        probabilities = self.predictor.predict_proba([example])[0]
        return top_k(self.predictor.intents, probabilities, k)
