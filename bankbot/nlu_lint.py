"""`bankbot nlu check`: the project's NLU lint (shared with the ops console, in `bankcore.nlu_lint`) and Rasa's own
`rasa data validate`, run in the Rasa environment."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bankbot.layout import subprocess_env
from bankcore.nlu_lint import (
    NON_BANKING_INTENTS,
    NORMALISED_ENTITIES,
    EntitySpan,
    LintIssue,
    NluExample,
    fold_text,
    lint_nlu,
    load_domain,
    load_nlu,
    parse_example,
    tokenizer_from_config,
)

__all__ = [
    "NON_BANKING_INTENTS",
    "NORMALISED_ENTITIES",
    "EntitySpan",
    "LintIssue",
    "NluExample",
    "fold_text",
    "lint_nlu",
    "load_domain",
    "load_nlu",
    "parse_example",
    "run_rasa_validate",
    "tokenizer_from_config",
]


def run_rasa_validate(project_root: Path, rasa_python: Path = Path(".venv-rasa/bin/python")) -> int:
    """Run `rasa data validate` on the project with the Rasa environment's Python; return its exit code."""
    root = Path(project_root)
    python = rasa_python if Path(rasa_python).is_absolute() else root / rasa_python
    command = [
        str(python),
        "-m",
        "rasa",
        "data",
        "validate",
        "--domain",
        "bot/domain",
        "--data",
        "nlu_data",
        "bot/data",
        "--config",
        "bot/config.yml",
    ]
    return subprocess.run(command, cwd=root, env=subprocess_env(), check=False).returncode
