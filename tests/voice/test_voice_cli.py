"""`bankbot models install`, `bankbot voice transcribe` and `bankbot voice talk`, as ops and testers run them."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bankbot.cli import main
from tests.voice.korean_speech import KoreanSpeech
from tests.voice.voice_stack import restart_conversation


def _model_archive(path: Path) -> Path:
    """A tar.gz shaped like a Vosk model release (one top folder holding am/ and conf/)."""
    with tarfile.open(path, "w:gz") as bundle:
        for name, data in {
            "vosk-model-test-0.1/am/final.mdl": b"model",
            "vosk-model-test-0.1/conf/model.conf": b"--endpoint.rule1.min-trailing-silence=0.5\n",
            "vosk-model-test-0.1/conf/mfcc.conf": b"--sample-frequency=16000\n",
            "vosk-model-test-0.1/README": b"test model\n",
        }.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The archive on a loopback HTTP server: (URL, its SHA-256)."""
    archive = _model_archive(tmp_path / "vosk-model-test-0.1.tar.gz")
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{archive.name}"
        yield url, hashlib.sha256(archive.read_bytes()).hexdigest()
    finally:
        server.shutdown()


def test_models_install_verifies_the_checksum_then_unpacks_from_a_url(served, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    url, sha256 = served
    dest = tmp_path / "models"
    assert main(["models", "install", url, "--sha256", "0" * 64, "--dest", str(dest)]) == 1
    assert "sha" in capsys.readouterr().err.lower()
    assert not (dest / "vosk-model-test-0.1").exists(), "nothing is installed from an archive that does not match"
    assert main(["models", "install", url, "--sha256", sha256, "--dest", str(dest)]) == 0
    assert (dest / "vosk-model-test-0.1" / "am" / "final.mdl").read_bytes() == b"model"
    assert "BANKBOT_VOSK_MODEL=" in capsys.readouterr().out


@pytest.mark.voice_model
def test_transcribe_prints_what_the_recogniser_heard(korean_model, speech: KoreanSpeech, capsys) -> None:  # type: ignore[no-untyped-def]
    wav = speech.wav("아니요", 8000)
    assert main(["voice", "transcribe", str(wav), "--model", str(korean_model.path), "--grammar", "네,아니요"]) == 0
    out = capsys.readouterr().out
    assert "아니요" in out and "real-time factor" in out


@pytest.mark.voice_model
def test_transcribe_without_a_model_says_how_to_get_one(tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("BANKBOT_VOSK_MODEL", raising=False)
    monkeypatch.setenv("BANKBOT_VAR_DIR", str(tmp_path))
    assert main(["voice", "transcribe", str(tmp_path / "x.wav")]) == 2
    assert "bankbot models install" in capsys.readouterr().err


@pytest.mark.rasa
@pytest.mark.voice_model
def test_talk_runs_a_voice_conversation_against_the_running_assistant(  # type: ignore[no-untyped-def]
    live_stack, korean_model, speech: KoreanSpeech, tmp_path, monkeypatch, capsys
) -> None:
    settings = live_stack.settings
    for name, value in {
        "BANKBOT_VAR_DIR": str(settings.var_dir),
        "BANKBOT_DATABASE_URL": settings.database_url,
        "BANKBOT_RASA_URL": settings.rasa_url,
        "BANKBOT_RASA_TOKEN": settings.rasa_token,
        "BANKBOT_SECRET_KEY": settings.secret_key,
    }.items():
        monkeypatch.setenv(name, value)
    restart_conversation(live_stack, "voice", "C001")
    out_dir = tmp_path / "talk"
    steps = ["text:我的余额是多少", str(speech.wav("상담원 연결해 주세요", 16000))]
    assert (
        main(["voice", "talk", "--customer", "C001", "--model", str(korean_model.path), "--out", str(out_dir), *steps])
        == 0
    )
    out = capsys.readouterr().out
    assert "余额" in out, out
    assert "heard" in out, "the WAV step went through the recogniser"
    replies = sorted(out_dir.glob("reply-*.wav"))
    assert replies and replies[0].stat().st_size > 8000, "reply audio was written"
