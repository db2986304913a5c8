"""Child processes get a Rasa cache that cannot serve components trained with other jieba dictionaries."""

from __future__ import annotations

from pathlib import Path

from bankbot.layout import jieba_dictionary_hash, subprocess_env


def test_rasa_cache_is_keyed_by_the_jieba_dictionaries(tmp_path: Path) -> None:
    (tmp_path / "nlu_data" / "jieba").mkdir(parents=True)
    words = tmp_path / "nlu_data" / "jieba" / "userdict.txt"
    words.write_text("李四 100 nr\n", encoding="utf-8")
    before = jieba_dictionary_hash(tmp_path)
    words.write_text("李四 100 nr\n王芳 100 nr\n", encoding="utf-8")
    assert jieba_dictionary_hash(tmp_path) != before
    assert subprocess_env()["RASA_CACHE_DIRECTORY"].endswith(jieba_dictionary_hash())
    assert subprocess_env()["RASA_TELEMETRY_ENABLED"] == "false"
