"""The testers' conversation stories in bot/tests pass against the trained model (`rasa test core --stories`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bankbot.layout import ProjectLayout, subprocess_env
from bankbot.training import ensure_trained

pytestmark = pytest.mark.rasa


def test_every_test_story_passes(tmp_path: Path) -> None:
    layout = ProjectLayout()
    model = ensure_trained(layout, log=False)
    out = tmp_path / "results"
    command = [
        str(layout.rasa_python),
        "-m",
        "rasa",
        "test",
        "core",
        "--stories",
        str(layout.test_stories),
        "--model",
        str(model),
        "--out",
        str(out),
        "--fail-on-prediction-errors",
    ]
    result = subprocess.run(command, cwd=layout.root, env=subprocess_env(), capture_output=True, text=True)
    failed = out / "failed_test_stories.yml"
    detail = failed.read_text(encoding="utf-8") if failed.exists() else result.stdout[-4000:] + result.stderr[-4000:]
    assert result.returncode == 0, detail
    assert "None of the test stories failed" in failed.read_text(encoding="utf-8")
