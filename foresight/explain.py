"""Why the model predicts what it does for one contact: the top intents and each event's contribution by occlusion."""

from __future__ import annotations

from dataclasses import dataclass, replace

from bankcore.events import Event
from foresight.dataset import Example
from foresight.predictor import Predictor, Ranked, top_k


@dataclass(frozen=True, slots=True)
class EventContribution:
    event: Event
    # Probability of the top intent with every event minus the probability without this one: positive
    # means the event pushed towards the top intent.
    contribution: float


@dataclass(frozen=True, slots=True)
class Explanation:
    example: Example
    top: list[Ranked]
    contributions: list[EventContribution]  # best (largest contribution) first


def explain(predictor: Predictor, example: Example, k: int = 3) -> Explanation:
    """Top-k intents and, for each event, how much removing it lowers the top intent's probability.

    One call to `predict_proba` with the full example and each one-event-removed variant.
    """
    variants = [example] + [
        replace(example, events=example.events[:i] + example.events[i + 1 :]) for i in range(len(example.events))
    ]
    probabilities = predictor.predict_proba(variants)
    intents = tuple(predictor.intents)
    top = top_k(intents, probabilities[0], k)
    column = intents.index(top[0].intent)
    base = float(probabilities[0, column])
    contributions = [
        EventContribution(event, base - float(probabilities[i + 1, column])) for i, event in enumerate(example.events)
    ]
    # Ties: the more recent event first (that is what staff look at first).
    order = sorted(range(len(contributions)), key=lambda i: (-contributions[i].contribution, -i))
    return Explanation(example=example, top=top, contributions=[contributions[i] for i in order])
