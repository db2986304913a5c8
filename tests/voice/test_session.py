"""The voice session's dialogue mechanics with a scripted recogniser and synthesiser (no model, no Rasa)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from voice import prompts
from voice.events import (
    AsrEvent,
    AudioChunk,
    BargeIn,
    Choice,
    Final,
    Handoff,
    Hangup,
    NoInput,
    Partial,
    Prompt,
    Reply,
    Word,
)
from voice.session import DialogueUnavailable, VoiceConfig, VoiceSession

RATE = 8000
CONFIRM_BUTTONS = (Choice("确认转账", "/affirm"), Choice("取消", "/deny"))


class ScriptedStream:
    """Returns the scripted events for each fed chunk and records grammar switches."""

    def __init__(self) -> None:
        self.script: list[list[AsrEvent]] = []
        self.grammars: list[Sequence[str] | None] = []
        self.final_on_finish = Final(text="")

    async def feed(self, pcm: bytes) -> list[AsrEvent]:
        return self.script.pop(0) if self.script else []

    async def finish(self) -> Final:
        return self.final_on_finish

    def set_grammar(self, phrases: Sequence[str] | None) -> None:
        self.grammars.append(list(phrases) if phrases is not None else None)

    def close(self) -> None:
        self.closed = True


class CountingSynthesizer:
    """0.1 s of a constant tone per character, so durations are predictable."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def synthesize(self, text: str, sample_rate: int) -> bytes:
        self.texts.append(text)
        return b"\x10\x00" * int(sample_rate * 0.1 * len(text))


class ScriptedDialogue:
    def __init__(self, *answers: Sequence[Reply] | Exception) -> None:
        self.answers = list(answers)
        self.turns: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, text: str, metadata: Mapping[str, Any]) -> Sequence[Reply]:
        self.turns.append((text, dict(metadata)))
        answer = self.answers.pop(0) if self.answers else [Reply("好的。")]
        if isinstance(answer, Exception):
            raise answer
        return answer


def final(text: str, conf: float = 0.95, *, words: Sequence[tuple[str, float]] | None = None) -> Final:
    pairs = words if words is not None else [(w, conf) for w in text.split()]
    timed = tuple(Word(w, i * 0.3, i * 0.3 + 0.3, c) for i, (w, c) in enumerate(pairs))
    mean = sum(c for _, c in pairs) / len(pairs) if pairs else 0.0
    return Final(text=text, words=timed, confidence=mean)


def make_session(dialogue: ScriptedDialogue, **config: Any) -> tuple[VoiceSession, ScriptedStream, CountingSynthesizer]:
    stream, tts = ScriptedStream(), CountingSynthesizer()
    session = VoiceSession(
        open_stream=lambda: stream,
        synthesizer=tts,
        turn=dialogue,
        config=VoiceConfig(output_sample_rate=RATE, **config),
    )
    return session, stream, tts


async def say(session: VoiceSession, stream: ScriptedStream, *events: AsrEvent, pcm: bytes = b"") -> list[Any]:
    stream.script.append(list(events))
    return await session.feed_audio(pcm or b"\x00\x00" * (RATE // 50), RATE)


def replies(events: Sequence[Any]) -> list[str]:
    return [e.text for e in events if isinstance(e, Reply)]


async def test_free_speech_is_normalised_sent_as_a_voice_turn_and_the_reply_is_spoken() -> None:
    dialogue = ScriptedDialogue([Reply("您的活期账户余额为2,500.50元。")])
    session, stream, tts = make_session(dialogue)
    events = await say(session, stream, final("查 一下 余额"))
    assert dialogue.turns == [("查一下余额", {"input_mode": "voice", "asr_confidence": 0.95})]
    chunks = [e for e in events if isinstance(e, AudioChunk)]
    assert chunks and chunks[-1].last and not any(c.last for c in chunks[:-1])
    assert all(c.sample_rate == RATE for c in chunks)
    # The amount is spoken in words, not read as digits.
    assert any("两千五百元五角" in text for text in tts.texts), tts.texts
    assert stream.grammars[-1] is None, "an open question listens with free decoding"


async def test_a_read_back_listens_with_a_yes_no_grammar_and_a_spoken_yes_sends_the_payload() -> None:
    dialogue = ScriptedDialogue([Reply("请核对：向李娜转账300.00元。确认转账吗？", "choice", CONFIRM_BUTTONS)])
    session, stream, _ = make_session(dialogue)
    await session.text("给李娜转三百块")
    grammar = stream.grammars[-1]
    assert grammar is not None and "确认转账" in grammar and "是的" in grammar and "取消" in grammar
    await say(session, stream, final("是的"))
    assert dialogue.turns[-1][0] == "/affirm"
    assert dialogue.turns[-1][1]["input_mode"] == "voice"


async def test_an_answer_outside_the_grammar_is_reprompted_twice_then_handed_to_a_person() -> None:
    dialogue = ScriptedDialogue([Reply("确认转账吗？", "choice", CONFIRM_BUTTONS)])
    session, stream, _ = make_session(dialogue)
    await session.text("给李娜转三百块")
    first = await say(session, stream, final("今天 天气 怎么样"))
    assert any(prompts.YES_NO_HINT in text for text in prompted(first))
    await say(session, stream, final("今天 天气 怎么样"))
    assert len(dialogue.turns) == 1, "nothing outside the grammar reaches the dialogue"
    third = await say(session, stream, final("今天 天气 怎么样"))
    assert any(isinstance(e, Handoff) for e in third)
    assert dialogue.turns[-1][0] == "/human_handoff"


def prompted(events: Sequence[Any]) -> list[str]:
    return [e.text for e in events if isinstance(e, Prompt)]


async def test_silence_is_reprompted_twice_then_handed_over() -> None:
    dialogue = ScriptedDialogue()
    session, stream, tts = make_session(dialogue)
    await session.start([Reply("您好，请问有什么可以帮您？")])
    await say(session, stream, NoInput(5.0))
    await say(session, stream, NoInput(5.0))
    assert not dialogue.turns
    assert sum(prompts.NO_INPUT[0] in t or prompts.NO_INPUT[1] in t for t in tts.texts) == 2
    events = await say(session, stream, NoInput(5.0))
    assert any(isinstance(e, Handoff) for e in events)


async def test_an_amount_heard_with_low_confidence_is_read_back_before_the_dialogue_sees_it() -> None:
    dialogue = ScriptedDialogue()
    session, stream, tts = make_session(dialogue)
    heard = final(
        "转 两千五百 块 给 张三", words=[("转", 0.9), ("两千五百", 0.5), ("块", 0.9), ("给", 0.95), ("张三", 0.9)]
    )
    await say(session, stream, heard)
    assert not dialogue.turns
    assert any("两千五百元" in t for t in tts.texts), tts.texts
    assert stream.grammars[-1] is not None and "对" in stream.grammars[-1]
    await say(session, stream, final("对"))
    assert dialogue.turns == [
        ("转2500块给张三", {"input_mode": "voice", "asr_confidence": pytest.approx(1.0, abs=0.2)})
    ]


async def test_a_denied_amount_is_asked_again_and_can_be_keyed_in() -> None:
    dialogue = ScriptedDialogue()
    session, stream, tts = make_session(dialogue)
    await say(
        session, stream, final("转 一万二 给 张三", words=[("转", 0.9), ("一万二", 0.4), ("给", 0.9), ("张三", 0.9)])
    )
    await say(session, stream, final("不对"))
    assert not dialogue.turns
    assert any(prompts.REPEAT_AMOUNT in t for t in tts.texts)
    await session.dtmf("1200#")
    assert dialogue.turns == [("1200", {"input_mode": "keypad"})]


async def test_a_confident_amount_goes_straight_through() -> None:
    dialogue = ScriptedDialogue()
    session, stream, _ = make_session(dialogue)
    await say(session, stream, final("转 两千五百 块 给 张三", conf=0.97))
    assert dialogue.turns[0][0] == "转2500块给张三"


async def test_a_pin_is_never_taken_by_speech_and_keypad_digits_go_through_once() -> None:
    dialogue = ScriptedDialogue([Reply("请输入您的6位交易密码。", "pin")])
    session, stream, tts = make_session(dialogue)
    await session.text("确认")
    spoken = await say(session, stream, Partial("一 二 三"), final("一 二 三 四 五 六"))
    assert len(dialogue.turns) == 1, "a spoken PIN is not sent anywhere"
    assert not any(isinstance(e, Final | Partial) for e in spoken), "nor passed to the channel"
    assert any(prompts.KEYPAD_ONLY in t for t in tts.texts)
    await session.dtmf("2468")
    assert len(dialogue.turns) == 1
    await session.dtmf("10")
    assert dialogue.turns[-1] == ("246810", {"input_mode": "keypad"})


async def test_keypad_picks_a_choice_by_number() -> None:
    dialogue = ScriptedDialogue([Reply("确认转账吗？", "choice", CONFIRM_BUTTONS)])
    session, _, _ = make_session(dialogue)
    await session.text("给李娜转三百块")
    await session.dtmf("2")
    assert dialogue.turns[-1] == ("/deny", {"input_mode": "keypad"})


async def test_speaking_over_a_reply_stops_playback_only_when_loud_enough() -> None:
    dialogue = ScriptedDialogue([Reply("您好，这里是智能客服，请问有什么可以帮您？")])
    session, stream, _ = make_session(dialogue, barge_in_rms=500.0)
    await session.text("你好")
    quiet = b"\x20\x00" * 160
    echo = await say(session, stream, Partial("嗯"), pcm=quiet)
    assert not any(isinstance(e, BargeIn) for e in echo), "the assistant's own echo is quieter than a caller"
    loud = (b"\x00\x20" + b"\x00\xe0") * 80
    barge = await say(session, stream, Partial("我要"), pcm=loud)
    assert any(isinstance(e, BargeIn) for e in barge)
    after = await say(session, stream, final("我要 查 余额"))
    assert dialogue.turns[-1][0] == "我要查余额", "the turn continues from what the caller said"
    assert any(isinstance(e, Reply) for e in after)


async def test_a_long_silence_ends_the_call_politely() -> None:
    session, _stream, tts = make_session(ScriptedDialogue(), silence_timeout_s=1.0, max_reprompts=10)
    events: list[Any] = []
    for _ in range(60):
        events += await session.feed_audio(b"\x00\x00" * (RATE // 50), RATE)
    assert isinstance(events[-1], Hangup) and events[-1].reason == "silence"
    assert any(prompts.SILENCE_GOODBYE in t for t in tts.texts)
    assert await session.feed_audio(b"\x00\x00" * 160, RATE) == [], "an ended session takes no more audio"


async def test_an_unavailable_dialogue_gets_an_apology_not_a_crash() -> None:
    session, stream, tts = make_session(ScriptedDialogue(DialogueUnavailable("down")))
    await say(session, stream, final("查 余额"))
    assert any(prompts.RASA_UNAVAILABLE in t for t in tts.texts)


async def test_empty_or_unsure_speech_is_not_sent() -> None:
    dialogue = ScriptedDialogue()
    session, stream, _ = make_session(dialogue)
    await say(session, stream, final(""))
    await say(session, stream, final("嗯 啊", conf=0.1))
    assert not dialogue.turns


async def test_the_last_reply_that_expects_something_decides_the_grammar() -> None:
    dialogue = ScriptedDialogue(
        [Reply("好的。"), Reply("确认转账吗？", "choice", CONFIRM_BUTTONS), Reply("您也可以说“取消”。")]
    )
    session, stream, _ = make_session(dialogue)
    await session.text("给李娜转三百块")
    assert stream.grammars[-1] is not None
    await session.dtmf("1")
    assert dialogue.turns[-1][0] == "/affirm"
