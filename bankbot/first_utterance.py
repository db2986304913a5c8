"""Does the foresight prior help on short, ambiguous first utterances? Measured on a case file, not guessed.

Each case is an utterance, what the customer meant, and their recent events. Without the prior the assistant
acts on NLU's intent, or asks (buttons) when NLU falls back. With the prior it does the same, except that a
fallback is settled by `foresight.prior.combine` when the combined ranking is clear (the action server's
rule, the same function). Counted per case: acted on the right intent, acted on a wrong one, or asked.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bankcore.events import Contact, Event
from foresight.dataset import Example
from foresight.predictor import Predictor
from foresight.prior import FALLBACK_INTENT, combine, nlu_ranking

# Any fixed instant: the cases give event times relative to the contact.
_CONTACT_AT = dt.datetime(2026, 6, 1, 10, 0, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Case:
    text: str
    intent: str
    example: Example


@dataclass
class Outcome:
    right: int = 0
    wrong: int = 0
    asked: int = 0
    decisions: list[str | None] = field(default_factory=list)

    def add(self, decided: str | None, truth: str) -> None:
        self.decisions.append(decided)
        if decided is None:
            self.asked += 1
        elif decided == truth:
            self.right += 1
        else:
            self.wrong += 1

    def as_dict(self, n: int) -> dict[str, float]:
        return {
            "right": self.right,
            "wrong": self.wrong,
            "asked": self.asked,
            "accuracy": self.right / n if n else 0.0,
        }


def load_cases(path: Path) -> list[Case]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    default_channel = str(data.get("channel", "app"))
    cases: list[Case] = []
    for number, item in enumerate(data["cases"]):
        customer_id = f"case-{number}"
        events = tuple(
            sorted(
                (
                    Event(
                        customer_id=customer_id,
                        ts=_CONTACT_AT - dt.timedelta(hours=float(e["hours_before"])),
                        channel=str(e["channel"]),
                        type=str(e["type"]),
                        attrs=dict(e.get("attrs") or {}),
                    )
                    for e in item.get("events") or []
                ),
                key=lambda e: e.ts,
            )
        )
        contact = Contact(customer_id, _CONTACT_AT, str(item.get("channel", default_channel)))
        cases.append(Case(str(item["text"]), str(item["intent"]), Example(contact, events, None)))
    return cases


def rasa_parser(rasa_url: str, token: str) -> Callable[[str], dict[str, Any]]:
    """Rasa's /model/parse as a function: the NLU result the dialogue would see."""

    def parse(text: str) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{rasa_url}/model/parse?token={token}",
            data=json.dumps({"text": text}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return dict(json.loads(response.read()))

    return parse


def evaluate(cases: Sequence[Case], parse: Callable[[str], dict[str, Any]], predictor: Predictor) -> dict[str, Any]:
    """Right / wrong / asked with and without the prior, plus per-case detail."""
    probabilities = predictor.predict_proba([case.example for case in cases])
    without, with_prior = Outcome(), Outcome()
    rows: list[dict[str, Any]] = []
    for case, row in zip(cases, probabilities, strict=True):
        parsed = parse(case.text)
        top = str((parsed.get("intent") or {}).get("name") or "")
        ranking = nlu_ranking(parsed)
        fell_back = top == FALLBACK_INTENT
        plain = None if fell_back else top
        prior = {intent: float(p) for intent, p in zip(predictor.intents, row, strict=True)}
        combined = combine(ranking, prior)
        decided = combined.accepted if fell_back else top
        without.add(plain, case.intent)
        with_prior.add(decided, case.intent)
        rows.append(
            {
                "text": case.text,
                "intent": case.intent,
                "nlu": top,
                "nlu_ranking": ranking[:3],
                "prior_top": max(prior, key=lambda k: prior[k]),
                "with_prior": decided,
            }
        )
    n = len(cases)
    return {"cases": n, "without_prior": without.as_dict(n), "with_prior": with_prior.as_dict(n), "detail": rows}


def bench_first_utterance(cases_file: Path, out: Path) -> dict[str, Any]:
    """Start Rasa (with the trained model) and measure the case file with the demo foresight model."""
    import tempfile

    from rich.console import Console
    from rich.table import Table

    from bankbot.foresight_demo import ensure_demo_model
    from bankbot.layout import ProjectLayout
    from bankbot.stack import Stack, bench_env
    from bankbot.training import ensure_trained
    from bankcore.settings import Settings
    from foresight.transformer import TransformerPredictor

    console = Console()
    layout = ProjectLayout()
    model = ensure_trained(layout)
    predictor = TransformerPredictor.load(ensure_demo_model(layout))
    with tempfile.TemporaryDirectory(prefix="bankbot-first-") as tmp:
        env = bench_env(Path(tmp))
        settings = Settings.from_env(env)
        from bankcore.database import migrate

        migrate(settings.database_url)
        stack = Stack(layout, env, model)
        stack.start()
        try:
            report = evaluate(load_cases(cases_file), rasa_parser(settings.rasa_url, settings.rasa_token), predictor)
        finally:
            stack.stop()
    table = Table("", "right", "wrong", "asked", "accuracy", title=f"first utterances ({report['cases']} cases)")
    for name in ("without_prior", "with_prior"):
        row = report[name]
        table.add_row(name, str(row["right"]), str(row["wrong"]), str(row["asked"]), f"{row['accuracy']:.3f}")
    console.print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "first_utterance.json").write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    return report
