"""Closed-answer grammars: snapping results to allowed phrases, and rejecting what is not an answer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.voice.korean_speech import KoreanSpeech, silence, white_noise
from voice.asr import AsrEngine
from voice.events import Alternative, Final, Word
from voice.grammar import (
    KOREAN_FILLERS,
    Grammar,
    GrammarMatch,
    digits_grammar,
    menu_grammar,
    similarity,
    yes_no_grammar,
)

pytestmark = pytest.mark.voice_model

RATE = 16000


def heard(text: str, conf: float = 1.0, alternatives: tuple[str, ...] = ()) -> Final:
    words = tuple(Word(word, 0.1 * i, 0.1 * i + 0.1, conf) for i, word in enumerate(text.split()))
    return Final(
        text=text,
        words=() if alternatives else words,
        alternatives=tuple(Alternative(alternative, 100.0 - i) for i, alternative in enumerate(alternatives)),
        confidence=0.0 if alternatives else conf,
    )


# -- pure matching ---------------------------------------------------------------------------------------------


def test_exact_phrase_matches_its_value() -> None:
    grammar = yes_no_grammar("ko")
    assert grammar.match(heard("네")) == GrammarMatch("affirm", "네", 1.0)
    assert grammar.match(heard("아니요")) == GrammarMatch("deny", "아니요", 1.0)


def test_near_miss_snaps_to_the_nearest_phrase_spaces_ignored() -> None:
    grammar = yes_no_grammar("ko")
    assert grammar.match(heard("아니 요")) == GrammarMatch("deny", "아니요", 1.0)
    match = grammar.match(heard("아니오요"))
    assert match is not None and match.value == "deny" and match.score == 0.75
    assert Grammar(grammar.options, min_score=0.8).match(heard("아니오요")) is None


def test_equally_near_phrases_of_different_values_are_ambiguous() -> None:
    # 不是的 ("it is not") is one edit from both 不是 (deny) and 是的 (affirm): guessing would be a coin toss.
    assert Grammar({"affirm": ["是的"], "deny": ["不是"]}, min_score=0.6).match(heard("不是的")) is None


def test_far_text_is_rejected() -> None:
    assert yes_no_grammar("ko").match(heard("아니요 아니요")) is None
    assert menu_grammar(["잔액 조회", "이체"]).match(heard("상담원")) is None


def test_low_word_confidence_is_rejected_because_the_model_forces_sounds_onto_grammar_words() -> None:
    grammar = yes_no_grammar("ko")
    assert grammar.match(heard("네", conf=0.49)) is None
    assert grammar.match(heard("네", conf=0.5)) is not None
    assert Grammar(grammar.options, min_confidence=0.9).match(heard("네", conf=0.8)) is None


def test_fillers_and_unknown_word_mean_something_else() -> None:
    grammar = yes_no_grammar("ko")
    assert "사람" in grammar.phrases()
    assert grammar.match(heard("사람")) is None
    assert grammar.match(heard("감사 네")) is None
    assert grammar.match(heard("[unk]")) is None


def test_a_filler_that_is_also_an_answer_stays_an_answer() -> None:
    grammar = menu_grammar(["잔액", "송금"], fillers=KOREAN_FILLERS)
    assert grammar.phrases().count("잔액") == 1
    assert grammar.match(heard("잔액")) == GrammarMatch("잔액", "잔액", 1.0)
    assert grammar.match(heard("통장")) is None


def test_n_best_alternatives_rescue_a_near_miss_but_not_a_filler_best_guess() -> None:
    grammar = yes_no_grammar("ko")
    rescued = grammar.match(heard("그래", alternatives=("그래", "네")))
    assert rescued == GrammarMatch("affirm", "네", 1.0)
    assert grammar.match(heard("사람", alternatives=("사람", "네"))) is None


def test_digit_sequences_concatenate_values() -> None:
    grammar = digits_grammar("ko")
    assert grammar.match(heard("일 이 삼 공")) == GrammarMatch("1230", "일 이 삼 공", 1.0)
    assert grammar.match(heard("일 사람")) is None
    assert digits_grammar("zh").match(heard("幺 两 洞")) is not None


def test_phrases_keep_order_and_drop_duplicates() -> None:
    grammar = Grammar({"a": ["네", " 네 ", "예"], "b": ["아니요"], "empty": [" "]}, fillers=["네", "사람"])
    assert grammar.phrases() == ["네", "예", "아니요", "사람"]
    assert set(grammar.options) == {"a", "b"}


def test_invalid_grammars_are_refused() -> None:
    with pytest.raises(ValueError):
        Grammar({"a": [""]})
    with pytest.raises(TypeError):
        Grammar({"a": "네"})
    with pytest.raises(ValueError):
        Grammar({"a": ["네"]}, min_score=1.5)


@given(st.text(max_size=12), st.text(max_size=12))
def test_similarity_is_symmetric_and_bounded(a: str, b: str) -> None:
    score = similarity(a, b)
    assert 0.0 <= score <= 1.0
    assert score == pytest.approx(similarity(b, a))
    assert (score == 1.0) == (a == b)


# -- with the Korean model -------------------------------------------------------------------------------------


async def closed_answer(engine: AsrEngine, grammar: Grammar, pcm: bytes) -> GrammarMatch | None:
    """Recognise `pcm` with the grammar and snap the first non-empty result."""
    stream = engine.open_stream(RATE, grammar=grammar.phrases())
    results: list[Final] = []
    for start in range(0, len(pcm), 3200):
        results.extend(e for e in await stream.feed(pcm[start : start + 3200]) if isinstance(e, Final))
    results.append(await stream.finish())
    first = next((final for final in results if final.text), None)
    return grammar.match(first) if first is not None else None


@pytest.mark.parametrize(
    ("word", "voice", "value"),
    # Voices whose confidence sat well above the 0.5 floor in the measurements (Vosk's confidences wobble ~0.01).
    [("네", {}, "affirm"), ("응", {}, "affirm"), ("아니", {"speed": 130}, "deny"), ("아니요", {"speed": 130}, "deny")],
)
async def test_spoken_in_grammar_answer_is_accepted(
    engine: AsrEngine, speech: KoreanSpeech, word: str, voice: dict[str, int], value: str
) -> None:
    match = await closed_answer(engine, yes_no_grammar("ko"), speech.padded(word, RATE, **voice))
    assert match is not None and match.value == value


@pytest.mark.parametrize("word", ["안녕하세요", "감사합니다", "연결"])
async def test_spoken_out_of_grammar_word_is_rejected(engine: AsrEngine, speech: KoreanSpeech, word: str) -> None:
    assert await closed_answer(engine, yes_no_grammar("ko"), speech.padded(word, RATE)) is None


@pytest.mark.parametrize("amplitude", [3000, 8000, 15000])
async def test_white_noise_is_rejected(engine: AsrEngine, amplitude: int) -> None:
    noise = silence(0.5, RATE) + white_noise(2.0, RATE, amplitude=amplitude) + silence(1.0, RATE)
    assert await closed_answer(engine, yes_no_grammar("ko"), noise) is None


async def test_spoken_digits_are_read_as_a_digit_string(engine: AsrEngine, speech: KoreanSpeech) -> None:
    # espeak's Korean digits are hard for the model; 이, 사 and 오 were recognised reliably in the measurements.
    match = await closed_answer(engine, digits_grammar("ko"), speech.padded("이 사 오", RATE, speed=130))
    assert match is not None and match.value == "245"


VOICES = (
    {"speed": 130, "pitch": 50},
    {"speed": 175, "pitch": 50},
    {"speed": 220, "pitch": 70},
    {"speed": 160, "pitch": 30},
)


@pytest.mark.slow
async def test_measure_yes_no_acceptance(engine: AsrEngine, speech: KoreanSpeech) -> None:
    """The measurement behind the defaults (make bench): acceptance of answers, other words and noise.

    Last run (Korean small model, espeak-ng, 4 voices): answers 18/32 accepted (espeak's 예 is never heard; its
    그래요 comes out as 아니오 at confidence 0.32-0.48 and is rejected by the 0.5 floor, while 아니요 scored
    0.50-0.67), other words 1/36 accepted (잔액 -> 예 at 0.72), white noise 0/12.
    """
    grammar = yes_no_grammar("ko")
    answers = ["네", "예", "응", "그래요", "아니요", "아니", "싫어요", "맞아"]
    others = ["안녕하세요", "감사합니다", "상담원", "조회", "연결", "커피", "월요일", "잔액", "하나"]
    accepted_answers = accepted_others = accepted_noise = 0
    for word in answers:
        for voice in VOICES:
            match = await closed_answer(engine, grammar, speech.padded(word, RATE, **voice))
            accepted_answers += match is not None
    for word in others:
        for voice in VOICES:
            accepted_others += await closed_answer(engine, grammar, speech.padded(word, RATE, **voice)) is not None
    for amplitude in (1000, 3000, 8000, 15000):
        for seed in range(3):
            noise = silence(0.5, RATE) + white_noise(2.0, RATE, amplitude=amplitude, seed=seed) + silence(1.0, RATE)
            accepted_noise += await closed_answer(engine, grammar, noise) is not None
    print(f"answers {accepted_answers}/32, other words {accepted_others}/36, noise {accepted_noise}/12")
    assert accepted_answers >= 16 and accepted_others <= 4 and accepted_noise <= 1
