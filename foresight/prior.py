"""The foresight prediction as a prior on the customer's first utterance, when NLU is unsure.

The rule (Bayes with a change of prior). The NLU classifier's confidences approximate P(intent | text) under
the class prior of its training data, which is close to uniform (every intent has about as many examples).
For this customer the contact-reason model gives a prior q(intent). Replacing the uniform prior by q:

    score(i) = nlu(i) * q(i) / u,   normalised over the intents NLU ranked,

where u = 1/K is the uniform prior over the K banking intents the model covers. Intents outside the model's
vocabulary (greet, affirm, chit-chat) keep q(i) = u, so the prior neither helps nor hurts them. The prior is
mixed with the uniform prior by its `weight` (1.0: full Bayes; 0.0: NLU unchanged), which bounds how far a
wrong prediction can pull a clear utterance; the default 1.0 is used only when NLU already fell back.

Only NLU's own candidates take part: its `candidates` best intents. The prior decides between readings NLU
found plausible ("我的卡": lost, replace or activate?); it never invents one. And the combined top intent is
taken only when those candidates hold at least `min_candidate_mass` of NLU's confidence (NLU is unsure
*between* them, rather than at a loss: "嗯那个就是…"), when its score is at least `accept` and leads the
runner-up by `margin`. Otherwise the assistant still asks, offering the combined ranking's best as buttons.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

FALLBACK_INTENT = "nlu_fallback"
DEFAULT_ACCEPT = 0.5
DEFAULT_MARGIN = 0.15
DEFAULT_CANDIDATES = 3
DEFAULT_MIN_CANDIDATE_MASS = 0.5


@dataclass(frozen=True, slots=True)
class Combined:
    ranking: list[tuple[str, float]]  # best first, scores sum to 1 over the ranked intents
    accepted: str | None  # the intent to act on, or None: ask the customer


def nlu_ranking(parse_data: Mapping[str, Any]) -> list[tuple[str, float]]:
    """NLU's intent ranking from a Rasa parse result, without the fallback pseudo-intent."""
    return [
        (str(r["name"]), float(r.get("confidence") or 0.0))
        for r in parse_data.get("intent_ranking") or []
        if r.get("name") and r.get("name") != FALLBACK_INTENT
    ]


def combine(
    nlu_ranking: Sequence[tuple[str, float]],
    prior: Mapping[str, float],
    *,
    weight: float = 1.0,
    accept: float = DEFAULT_ACCEPT,
    margin: float = DEFAULT_MARGIN,
    candidates: int = DEFAULT_CANDIDATES,
    min_candidate_mass: float = DEFAULT_MIN_CANDIDATE_MASS,
) -> Combined:
    """NLU's candidates re-weighted by the prior (see the module doc), and whether the top is clear enough."""
    nlu_ranking = sorted(((name, max(conf, 0.0)) for name, conf in nlu_ranking), key=lambda r: (-r[1], r[0]))
    nlu_ranking = nlu_ranking[:candidates]
    if not nlu_ranking:
        return Combined([], None)
    at_a_loss = sum(conf for _, conf in nlu_ranking) < min_candidate_mass
    if not prior or weight <= 0:
        ranking = _normalised(nlu_ranking)
        return Combined(ranking, None if at_a_loss else _decide(ranking, accept, margin))
    total = sum(max(p, 0.0) for p in prior.values())
    uniform = 1.0 / len(prior)
    scores: list[tuple[str, float]] = []
    for name, confidence in nlu_ranking:
        q = max(prior[name], 0.0) / total if name in prior and total > 0 else uniform
        mixed = weight * q + (1.0 - weight) * uniform
        scores.append((name, confidence * mixed / uniform))
    ranking = _normalised(sorted(scores, key=lambda r: (-r[1], r[0])))
    return Combined(ranking, None if at_a_loss else _decide(ranking, accept, margin))


def _normalised(ranking: list[tuple[str, float]]) -> list[tuple[str, float]]:
    total = sum(score for _, score in ranking)
    if total <= 0:
        return [(name, 1.0 / len(ranking)) for name, _ in ranking]
    return [(name, score / total) for name, score in ranking]


def _decide(ranking: list[tuple[str, float]], accept: float, margin: float) -> str | None:
    if not ranking:
        return None
    best = ranking[0][1]
    runner_up = ranking[1][1] if len(ranking) > 1 else 0.0
    return ranking[0][0] if best >= accept and best - runner_up >= margin else None
