"""Write nlu_data/jieba/numerals.txt: spoken abbreviated amounts ("两千五", "一万二") as jieba words.

jieba's dictionary knows "两千" but not "两千五", so it cuts the amount in two and its HMM glues the orphan
digit onto the next character ("五给"); an entity span then no longer falls on token boundaries. The list
is the complete set of <digit><unit><digit> and <digit><unit><digit><next unit> forms, generated, not
picked from the training data.
Run: .venv/bin/python tools/gen_numeral_words.py (tests/test_nlu_lint.py checks the file is current).
"""

from __future__ import annotations

import sys
from pathlib import Path

DIGITS = "一二两三四五六七八九"
TRAILING = "一二三四五六七八九"
UNITS = "十百千万"
# High enough that jieba prefers the whole amount to "两千" + "五"; the tag marks a numeral (m).
FREQUENCY = 3000
TARGET = Path(__file__).resolve().parent.parent / "nlu_data" / "jieba" / "numerals.txt"


# A unit and the next one down: "二百八十", "两千五百", "三万五千" (the full form of the short ones).
UNIT_STEPS = (("万", "千"), ("千", "百"), ("百", "十"))


def numeral_words() -> list[str]:
    words = []
    for lead in DIGITS:
        for unit in UNITS:
            if lead == "两" and unit == "十":
                continue  # "两十" is not said
            for tail in TRAILING:
                words.append(f"{lead}{unit}{tail}")
        for unit, lower in UNIT_STEPS:
            for tail in TRAILING:
                words.append(f"{lead}{unit}{tail}{lower}")
    return words


def render() -> str:
    return "".join(f"{word} {FREQUENCY} m\n" for word in numeral_words())


def main() -> int:
    TARGET.write_text(render(), encoding="utf-8")
    print(f"wrote {len(numeral_words())} words to {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
