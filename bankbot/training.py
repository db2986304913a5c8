"""Train the Rasa model only when its inputs changed: models are named and cached by the hash of their inputs."""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import time
from pathlib import Path

from bankbot.layout import ProjectLayout, subprocess_env

_KEEP_MODELS = 3


def training_inputs(layout: ProjectLayout) -> list[Path]:
    files = [layout.config, layout.root / "requirements-rasa.lock"]
    for folder in (layout.domain, layout.dialogue_data, layout.nlu_data):
        files += sorted(p for p in folder.rglob("*") if p.is_file())
    return files


def inputs_hash(layout: ProjectLayout) -> str:
    digest = hashlib.sha256()
    for path in training_inputs(layout):
        digest.update(str(path.relative_to(layout.root)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def model_path(layout: ProjectLayout) -> Path:
    return layout.models / f"bankbot-{inputs_hash(layout)}.tar.gz"


def ensure_trained(layout: ProjectLayout, *, force: bool = False, log: bool = True) -> Path:
    """The trained model for the current data: from models/, else from the cache, else trained now.

    Concurrent callers (two test runs, `make run` beside `make test`) wait for one training, not two.
    """
    layout.cache.mkdir(parents=True, exist_ok=True)
    with open(layout.cache / "training.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_trained_locked(layout, force=force, log=log)


def _ensure_trained_locked(layout: ProjectLayout, *, force: bool, log: bool) -> Path:
    target = model_path(layout)
    cached = layout.cache / "models" / target.name
    layout.models.mkdir(parents=True, exist_ok=True)
    if not force and target.exists():
        return target
    if not force and cached.exists():
        shutil.copy2(cached, target)
        if log:
            print(f"model {target.name}: reused from the cache")
        return target
    started = time.monotonic()
    command = rasa_train_command(layout, nlu_dir=layout.nlu_data, out_dir=layout.models, name=target.name)
    if log:
        print(f"training {target.name} (inputs changed)...", flush=True)
    subprocess.run(command, cwd=layout.root, env=subprocess_env(), check=True)
    cached.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(target, cached)
    _prune(layout.models, keep=target)
    if log:
        print(f"trained {target.name} in {time.monotonic() - started:.0f} s")
    return target


def rasa_train_command(layout: ProjectLayout, *, nlu_dir: Path, out_dir: Path, name: str) -> list[str]:
    """`rasa train` of the project's domain, stories and config with the NLU data in `nlu_dir`, writing the model
    `out_dir/name` (name ends in .tar.gz)."""
    return [
        str(layout.rasa_python),
        "-m",
        "rasa",
        "train",
        "--domain",
        str(layout.domain),
        "--data",
        str(nlu_dir),
        str(layout.dialogue_data),
        "--config",
        str(layout.config),
        "--out",
        str(out_dir),
        "--fixed-model-name",
        name.removesuffix(".tar.gz"),
    ]


def _prune(folder: Path, keep: Path) -> None:
    """Keep the newest few models for rollback; the rest are in the cache anyway."""
    models = sorted(folder.glob("bankbot-*.tar.gz"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in models[_KEEP_MODELS:]:
        if old != keep:
            old.unlink(missing_ok=True)
