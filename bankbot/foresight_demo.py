"""The demo foresight model for `bankbot run` and the test stack: trained on a seeded simulation, cached.

A bank trains its model on its own contacts (`bankbot foresight train --from-db`) and points
BANKBOT_FORESIGHT_MODEL_DIR at it. A laptop has no contact history, so `bankbot run` uses a model trained on
the simulator (same event vocabulary as the sandbox bank's core facts), cached under
~/.cache/bankbot/foresight/<hash of the foresight code and the simulation parameters> so it is trained once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from pathlib import Path

from rich.console import Console

from bankbot.layout import ProjectLayout

DEMO_CUSTOMERS = 4000
DEMO_DAYS = 60
DEMO_SEED = 7
DEMO_MAX_EPOCHS = 12
TARGET_PRECISION = 0.8


def _key(layout: ProjectLayout) -> str:
    digest = hashlib.sha256()
    sources = [*sorted((layout.root / "foresight").glob("*.py")), layout.root / "bankcore" / "events.py"]
    for path in sources:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    digest.update(json.dumps([DEMO_CUSTOMERS, DEMO_DAYS, DEMO_SEED, DEMO_MAX_EPOCHS, TARGET_PRECISION]).encode())
    return digest.hexdigest()[:16]


def demo_model_dir(layout: ProjectLayout) -> Path:
    return layout.cache / "foresight" / f"demo-{_key(layout)}"


def ensure_demo_model(layout: ProjectLayout, *, log: bool = True) -> Path:
    """The cached demo model's directory, training it first when this code has none yet."""
    target = demo_model_dir(layout)
    if (target / "meta.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f"{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "meta.json").exists():
            return target
        console = Console(quiet=not log)
        console.print(f"training the demo foresight model ({DEMO_CUSTOMERS} simulated customers)...")
        staging = target.with_name(target.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        _train(staging, progress=log)
        staging.rename(target)
    return target


def _train(out: Path, *, progress: bool) -> None:
    from foresight.dataset import build_examples, time_split
    from foresight.evaluate import save_naming_threshold
    from foresight.simulate import simulate
    from foresight.transformer import TrainConfig, train_transformer

    data = simulate(DEMO_CUSTOMERS, DEMO_DAYS, DEMO_SEED)
    examples = build_examples(data.contacts, data.events, data.profiles)
    split = time_split(examples, valid_fraction=0.2, test_fraction=0.0)
    model = train_transformer(
        split.train, split.valid, TrainConfig(seed=DEMO_SEED, max_epochs=DEMO_MAX_EPOCHS), progress=progress
    )
    model.save(out)
    save_naming_threshold(model, split.valid, out, TARGET_PRECISION)
