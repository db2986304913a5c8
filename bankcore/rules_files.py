"""Reading a rules file ops edit (risk rules, reminder rules): the text and its YAML, with errors naming the file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml


def read_rules_document(path: Path, error: Callable[[str], Exception]) -> Any:
    """The parsed YAML of `path`; `error(message)` is raised when it cannot be read or is not YAML."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as problem:
        raise error(f"{path}: cannot read the rules file ({problem})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as problem:
        raise error(f"{path}: not valid YAML ({problem})") from None
