"""Where things are in the project checkout: the two environments, the Rasa project, the model folder."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from bankcore.settings import PROJECT_ROOT


@dataclass(frozen=True)
class ProjectLayout:
    root: Path = PROJECT_ROOT

    @property
    def python(self) -> Path:
        return self.root / ".venv" / "bin" / "python"

    @property
    def rasa_python(self) -> Path:
        return self.root / ".venv-rasa" / "bin" / "python"

    @property
    def domain(self) -> Path:
        return self.root / "bot" / "domain"

    @property
    def config(self) -> Path:
        return self.root / "bot" / "config.yml"

    @property
    def dialogue_data(self) -> Path:
        return self.root / "bot" / "data"

    @property
    def test_stories(self) -> Path:
        return self.root / "bot" / "tests"

    @property
    def nlu_data(self) -> Path:
        return self.root / "nlu_data"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def cache(self) -> Path:
        return Path(os.environ.get("BANKBOT_CACHE_DIR", str(Path.home() / ".cache" / "bankbot")))


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every child process gets: quiet Rasa, our code importable, plus `extra`."""
    env = dict(os.environ)
    env.update(
        {
            "RASA_TELEMETRY_ENABLED": "false",
            "SQLALCHEMY_SILENCE_UBER_WARNING": "1",
            "PYTHONUNBUFFERED": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONPATH": str(PROJECT_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
        }
    )
    # Rasa caches trained components by their config and training data only; the jieba dictionaries are
    # files it does not fingerprint, so a changed dictionary would restore stale tokens. One cache per
    # dictionary content keeps the cache safe.
    env.setdefault("RASA_CACHE_DIRECTORY", str(ProjectLayout().cache / "rasa-cache" / jieba_dictionary_hash()))
    env.update(extra or {})
    return env


def jieba_dictionary_hash(root: Path = PROJECT_ROOT) -> str:
    digest = hashlib.sha256()
    for path in sorted((root / "nlu_data" / "jieba").glob("*")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
