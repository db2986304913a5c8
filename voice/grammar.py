"""Closed answers (yes/no, digits, menu choices): the phrases a recogniser listens for, and snapping results to them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from voice.events import Final

Language = Literal["zh", "ko"]

UNKNOWN_WORD = "[unk]"

# Decoy words listened for next to the real phrases. A model without an [unk] word forces every sound onto some
# grammar word; with these in the grammar, other speech and noise land on a decoy instead and are rejected.
# Chosen by measurement on the Korean small model with espeak-ng speech (see tests/voice/test_grammar.py):
# mostly multi-syllable words, because vowel-like single syllables (이, 자, 음...) captured real answers (응 -> 음);
# 이체 is left out because espeak's 예 was heard as it.
KOREAN_FILLERS: tuple[str, ...] = (
    "사람",
    "지금",
    "정말",
    "은행",
    "카드",
    "번호",
    "계좌",
    "잔액",
    "송금",
    "감사",
    "안녕",
    "하나",
    "다섯",
    "여기",
    "그런데",
    "어떻게",
    "얼마",
    "전화",
    "고객",
    "통장",
    "비밀번호",
    "확인",
    # Fricative syllables soak up white noise, which otherwise lands on answers that start with ㅅ (싫어요).
    "스",
    "쉬",
    "시",
)
# Not measured (no Mandarin model is available here): common multi-character words, by the same reasoning.
MANDARIN_FILLERS: tuple[str, ...] = (
    "我们",
    "你们",
    "什么",
    "这个",
    "那个",
    "现在",
    "时候",
    "银行",
    "账户",
    "余额",
    "转账",
    "谢谢",
    "你好",
    "电话",
    "客服",
    "密码",
    "怎么",
    "为什么",
)
FILLERS: Mapping[Language, tuple[str, ...]] = {"ko": KOREAN_FILLERS, "zh": MANDARIN_FILLERS}

# Defaults from measurements with the Korean model and espeak-ng voices at 4 speeds/pitches (the slow test
# test_measure_yes_no_acceptance). Confidence alone cannot separate answers from forced matches: out-of-grammar
# words that landed on an answer scored up to 1.0. But the floor matters for misheard answers: espeak's 그래요
# ("yes") came out as 아니오 ("no") at 0.32-0.48, while correctly heard 아니요 scored 0.50-0.67 and 네 0.65-1.0.
DEFAULT_MIN_CONFIDENCE = 0.5
# A hypothesis must be at least this similar (1 - normalised character edit distance) to an allowed phrase.
# 0.7 accepts one wrong character in three-syllable phrases and rejects doubled answers ("아니요 아니요": 0.5).
DEFAULT_MIN_SCORE = 0.7


@dataclass(frozen=True)
class GrammarMatch:
    """The allowed answer a result snapped to: its value, the phrase, and the similarity (0..1, 1 is exact)."""

    value: str
    phrase: str
    score: float


class Grammar:
    """A closed set of answers: `options` maps each value (e.g. "affirm") to the phrases that mean it.

    With `sequence=True` (digits) every recognised word is snapped on its own and the values are concatenated.
    """

    def __init__(
        self,
        options: Mapping[str, Sequence[str]],
        *,
        fillers: Sequence[str] = (),
        min_score: float = DEFAULT_MIN_SCORE,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
        sequence: bool = False,
    ) -> None:
        if not 0.0 <= min_score <= 1.0 or not 0.0 <= min_confidence <= 1.0:
            raise ValueError("min_score and min_confidence are fractions between 0 and 1")
        self.options: dict[str, tuple[str, ...]] = {}
        for value, phrases in options.items():
            if isinstance(phrases, str):
                raise TypeError(f"phrases of {value!r} must be a sequence of strings, not one string")
            cleaned = tuple(dict.fromkeys(" ".join(phrase.split()) for phrase in phrases if phrase.strip()))
            if cleaned:
                self.options[value] = cleaned
        if not self.options:
            raise ValueError("a grammar needs at least one non-empty phrase")
        self.min_score = min_score
        self.min_confidence = min_confidence
        self.sequence = sequence
        # (normalised phrase, phrase, value), in declaration order so that ties go to the first declared.
        self._targets = [
            (_normalise(phrase), phrase, value) for value, group in self.options.items() for phrase in group
        ]
        answer_words = {word for _, group in self.options.items() for phrase in group for word in phrase.split()}
        self.fillers = tuple(dict.fromkeys(f for f in fillers if f.strip() and f not in answer_words))

    def phrases(self) -> list[str]:
        """What the recogniser should listen for: every answer phrase, then the fillers."""
        return list(dict.fromkeys([phrase for _, phrase, _ in self._targets] + list(self.fillers)))

    def match(self, final: Final) -> GrammarMatch | None:
        """The answer `final` means, or None when it is not close enough to any (or too unsure to trust).

        The best hypothesis is tried first, then the n-best alternatives in rank order. The word-confidence floor
        applies only when Vosk reported word confidences (it does not when n-best is on).
        """
        has_confidences = bool(final.words) and not final.alternatives
        if has_confidences and final.confidence < self.min_confidence:
            return None
        candidates = [final.text] + [alternative.text for alternative in final.alternatives]
        for rank, text in enumerate(dict.fromkeys(c.strip() for c in candidates if c.strip())):
            if self._is_rejection(text.split()):
                if rank == 0:
                    # The recogniser's own best guess is "something else": no alternative should overrule it.
                    return None
                continue
            found = self.match_text(text)
            if found is not None:
                return found
        return None

    def match_text(self, text: str) -> GrammarMatch | None:
        """Snap plain text to the nearest allowed phrase (no confidence check)."""
        words = text.split()
        if not words or self._is_rejection(words):
            return None
        if not self.sequence:
            return self._nearest(text)
        matches = [self._nearest(word) for word in words]
        if any(found is None for found in matches):
            return None
        parts = [found for found in matches if found is not None]
        return GrammarMatch(
            value="".join(found.value for found in parts),
            phrase=" ".join(found.phrase for found in parts),
            score=min(found.score for found in parts),
        )

    def _is_rejection(self, words: Iterable[str]) -> bool:
        return any(word == UNKNOWN_WORD or word in self.fillers for word in words)

    def _nearest(self, text: str) -> GrammarMatch | None:
        heard = _normalise(text)
        if not heard:
            return None
        best: GrammarMatch | None = None
        ambiguous = False
        for target, phrase, value in self._targets:
            score = similarity(heard, target)
            if best is None or score > best.score:
                best = GrammarMatch(value=value, phrase=phrase, score=score)
                ambiguous = False
            elif score == best.score and value != best.value:
                ambiguous = True
        # Equally close to answers that mean different things (不是的: 不是 or 是的?) is no answer.
        if best is None or best.score < self.min_score or ambiguous:
            return None
        return best


_IGNORED = re.compile(r"[\s\W_]+", re.UNICODE)


def _normalise(text: str) -> str:
    """Characters that matter for matching: spaces and punctuation removed (ASR output spaces words arbitrarily)."""
    return _IGNORED.sub("", text).lower()


def similarity(a: str, b: str) -> float:
    """1 - Levenshtein distance / longer length, over characters; 1.0 for two empty strings."""
    if a == b:
        return 1.0
    longest = max(len(a), len(b))
    if longest == 0:
        return 1.0
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return 1.0 - previous[-1] / longest


# -- presets ---------------------------------------------------------------------------------------------------

_YES_NO: Mapping[Language, Mapping[str, Sequence[str]]] = {
    "zh": {
        "affirm": ("是", "是的", "对", "对的", "好", "好的", "可以", "确认", "嗯"),
        "deny": ("不是", "不对", "不要", "不用", "不", "取消", "不可以"),
    },
    # 맞아요 is a natural "that's right" but is missing from the Korean small model's vocabulary; 맞아 is there.
    "ko": {
        # 좋아요 ("good") was left out: it attracted most out-of-grammar words in the measurements.
        "affirm": ("네", "예", "응", "맞아", "그래요"),
        "deny": ("아니요", "아니오", "아니", "싫어요"),
    },
}

_DIGITS: Mapping[Language, Mapping[str, Sequence[str]]] = {
    "zh": {
        "0": ("零", "〇", "洞"),
        "1": ("一", "幺"),
        "2": ("二", "两"),
        "3": ("三",),
        "4": ("四",),
        "5": ("五",),
        "6": ("六",),
        "7": ("七", "拐"),
        "8": ("八",),
        "9": ("九", "勾"),
    },
    # Sino-Korean digits are what people read numbers with; native numerals 1-4 are common for short choices.
    "ko": {
        "0": ("영", "공"),
        "1": ("일", "하나"),
        "2": ("이", "둘"),
        "3": ("삼", "셋"),
        "4": ("사", "넷"),
        "5": ("오", "다섯"),
        "6": ("육", "여섯"),
        "7": ("칠", "일곱"),
        "8": ("팔", "여덟"),
        "9": ("구", "아홉"),
    },
}


def yes_no_grammar(
    lang: Language = "zh", *, min_score: float = DEFAULT_MIN_SCORE, min_confidence: float = DEFAULT_MIN_CONFIDENCE
) -> Grammar:
    """Answers valued "affirm" and "deny", with that language's fillers."""
    return Grammar(_YES_NO[lang], fillers=FILLERS[lang], min_score=min_score, min_confidence=min_confidence)


def digits_grammar(
    lang: Language = "zh", *, min_score: float = DEFAULT_MIN_SCORE, min_confidence: float = DEFAULT_MIN_CONFIDENCE
) -> Grammar:
    """Spoken digits, one or more in a row; the value is the digit string ("1234")."""
    return Grammar(
        _DIGITS[lang], fillers=FILLERS[lang], sequence=True, min_score=min_score, min_confidence=min_confidence
    )


def menu_grammar(
    choices: Sequence[str],
    *,
    fillers: Sequence[str] = (),
    min_score: float = DEFAULT_MIN_SCORE,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
) -> Grammar:
    """One option per choice, its value being the choice text itself (a choice that is also a filler wins)."""
    if isinstance(choices, str):
        raise TypeError("choices must be a sequence of strings, not one string")
    return Grammar(
        {choice: (choice,) for choice in choices}, fillers=fillers, min_score=min_score, min_confidence=min_confidence
    )
