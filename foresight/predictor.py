"""The interface every foresight model implements: the Transformer, the baselines, the simulator's posterior."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from foresight.dataset import Example


@dataclass(frozen=True, slots=True)
class Ranked:
    intent: str
    p: float


class Predictor(Protocol):
    """Probabilities over `intents` (columns in that order) for each example; rows sum to 1."""

    name: str

    @property
    def intents(self) -> tuple[str, ...]: ...

    def predict_proba(self, examples: Sequence[Example]) -> np.ndarray: ...


def top_k(intents: Sequence[str], probabilities: np.ndarray, k: int = 3) -> list[Ranked]:
    """The k most likely intents of one row, best first (ties by intent name, for determinism)."""
    order = sorted(range(len(intents)), key=lambda i: (-float(probabilities[i]), intents[i]))
    return [Ranked(intents[i], float(probabilities[i])) for i in order[:k]]
