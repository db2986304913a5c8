"""Tests for the project's NLU lint (bankbot.nlu_lint): every check can fail, and the real data passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from bankbot.nlu_lint import LintIssue, fold_text, lint_nlu, parse_example

ROOT = Path(__file__).resolve().parent.parent

DOMAIN = """\
version: "3.1"
intents:
  - greet
  - check_balance
  - transfer_money
  - exchange_rate
entities:
  - amount
  - payee
  - currency:
      influence_conversation: false
"""


def write_nlu(directory: Path, name: str, body: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text('version: "3.1"\nnlu:\n' + body, encoding="utf-8")


def examples(intent: str, lines: list[str]) -> str:
    return f"- intent: {intent}\n  examples: |\n" + "".join(f"    - {line}\n" for line in lines)


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Path]:
    nlu_dir = tmp_path / "nlu_data"
    domain_dir = tmp_path / "domain"
    domain_dir.mkdir()
    (domain_dir / "core.yml").write_text(DOMAIN, encoding="utf-8")
    write_nlu(nlu_dir, "chitchat.yml", examples("greet", ["你好", "您好"]))
    write_nlu(nlu_dir, "accounts.yml", examples("check_balance", [f"查余额{i}" for i in range(3)]))
    write_nlu(
        nlu_dir,
        "transfers.yml",
        examples("transfer_money", [f"给[张三](payee)转[{i}00元](amount)" for i in range(1, 4)]),
    )
    return nlu_dir, domain_dir


def codes(issues: list[LintIssue], level: str = "error") -> list[str]:
    return [issue.code for issue in issues if issue.level == level]


def test_clean_fixture_has_no_errors(project: tuple[Path, Path]) -> None:
    nlu_dir, domain_dir = project
    assert codes(lint_nlu(nlu_dir, domain_dir, min_examples=3)) == []


def test_same_example_under_two_intents_is_an_error_after_folding(project: tuple[Path, Path]) -> None:
    nlu_dir, domain_dir = project
    # Full-width digits, an annotation and extra spaces still make it the same example.
    write_nlu(nlu_dir, "extra.yml", examples("greet", ["查余额　１", "给 [张三](payee) 转[100元](amount)"]))
    issues = lint_nlu(nlu_dir, domain_dir, min_examples=2)
    duplicates = [issue for issue in issues if issue.code == "duplicate_across_intents"]
    assert len(duplicates) == 2
    assert all(issue.level == "error" and issue.file and issue.example for issue in duplicates)


def test_repeated_example_under_one_intent_is_a_warning(project: tuple[Path, Path]) -> None:
    nlu_dir, domain_dir = project
    write_nlu(nlu_dir, "extra.yml", examples("check_balance", ["查余额0"]))
    issues = lint_nlu(nlu_dir, domain_dir, min_examples=3)
    assert codes(issues, "warning") == ["duplicate_example"]
    assert codes(issues) == []


def test_banking_intent_below_the_minimum_is_an_error(project: tuple[Path, Path]) -> None:
    nlu_dir, domain_dir = project
    issues = lint_nlu(nlu_dir, domain_dir, min_examples=4)
    flagged = sorted(issue.message.split("'")[1] for issue in issues if issue.code == "too_few_examples")
    # greet is chit-chat: the minimum applies to banking intents only.
    assert flagged == ["check_balance", "transfer_money"]


def test_entity_values_differing_only_in_width_or_case_need_a_synonym(project: tuple[Path, Path]) -> None:
    nlu_dir, domain_dir = project
    write_nlu(nlu_dir, "rates.yml", examples("exchange_rate", ["[USD](currency)汇率", "[ＵＳＤ](currency)汇率多少"]))
    assert "entity_value_variants" in codes(lint_nlu(nlu_dir, domain_dir, min_examples=1))
    # With a synonym both surfaces map to one value and the error goes away.
    write_nlu(nlu_dir, "synonyms.yml", "- synonym: USD\n  examples: |\n    - ＵＳＤ\n")
    assert "entity_value_variants" not in codes(lint_nlu(nlu_dir, domain_dir, min_examples=1))


def test_amount_width_variants_are_normalised_by_code_and_not_reported(project: tuple[Path, Path]) -> None:
    nlu_dir, domain_dir = project
    write_nlu(nlu_dir, "more.yml", examples("transfer_money", ["转[５００](amount)", "我要转[500](amount)"]))
    assert "entity_value_variants" not in codes(lint_nlu(nlu_dir, domain_dir, min_examples=1))


def test_entity_not_declared_in_the_domain_is_an_error(project: tuple[Path, Path]) -> None:
    nlu_dir, domain_dir = project
    write_nlu(nlu_dir, "more.yml", examples("check_balance", ["查[储蓄卡](account_kind)余额"]))
    issues = lint_nlu(nlu_dir, domain_dir, min_examples=1)
    assert codes(issues) == ["unknown_entity"]
    assert "account_kind" in issues[0].message


def test_intent_not_declared_in_the_domain_is_an_error(project: tuple[Path, Path]) -> None:
    nlu_dir, domain_dir = project
    write_nlu(nlu_dir, "more.yml", examples("ask_weather", ["今天天气怎么样"]))
    assert codes(lint_nlu(nlu_dir, domain_dir, min_examples=1)) == ["unknown_intent"]


def test_domain_split_over_several_files_is_read_whole(project: tuple[Path, Path]) -> None:
    nlu_dir, domain_dir = project
    write_nlu(nlu_dir, "more.yml", examples("ask_weather", ["今天天气怎么样"]))
    (domain_dir / "weather.yml").write_text('version: "3.1"\nintents:\n  - ask_weather\n', encoding="utf-8")
    assert codes(lint_nlu(nlu_dir, domain_dir, min_examples=1)) == []


def test_missing_domain_and_broken_yaml_are_errors(project: tuple[Path, Path], tmp_path: Path) -> None:
    nlu_dir, _ = project
    (nlu_dir / "broken.yml").write_text("nlu:\n- intent: greet\n  examples: [unclosed\n", encoding="utf-8")
    issues = codes(lint_nlu(nlu_dir, tmp_path / "no-domain", min_examples=1))
    assert "domain_missing" in issues
    assert "yaml_error" in issues


def test_entity_span_off_token_boundaries_is_a_warning(project: tuple[Path, Path], tmp_path: Path) -> None:
    nlu_dir, domain_dir = project
    (tmp_path / "bot").mkdir()
    config = tmp_path / "bot" / "config.yml"
    config.write_text("language: zh\npipeline:\n  - name: JiebaTokenizer\n", encoding="utf-8")
    # Without a user dictionary jieba glues the unknown name to the verb: 张三转.
    write_nlu(nlu_dir, "more.yml", examples("transfer_money", ["给[张三](payee)转钱"]))
    issues = lint_nlu(nlu_dir, domain_dir, min_examples=1, config_path=config, project_root=tmp_path)
    assert "entity_misaligned" in codes(issues, "warning")


def test_parse_example_returns_plain_text_and_spans() -> None:
    text, spans = parse_example('给[我妈](payee)转[两千五]{"entity": "amount"}用[储蓄卡](account_type:debit)')
    assert text == "给我妈转两千五用储蓄卡"
    assert [(s.entity, text[s.start : s.end], s.value) for s in spans] == [
        ("payee", "我妈", None),
        ("amount", "两千五", None),
        ("account_type", "储蓄卡", "debit"),
    ]
    assert fold_text("ＵＳＤ 汇率") == fold_text("usd汇率")


def test_real_nlu_data_passes_the_lint() -> None:
    domain = ROOT / "bot" / "domain"
    if not domain.is_dir():
        pytest.skip("bot/domain is not written yet")
    issues = lint_nlu(ROOT / "nlu_data", domain, config_path=ROOT / "bot" / "config.yml", project_root=ROOT)
    errors = [issue for issue in issues if issue.level == "error"]
    assert errors == []
    assert [issue for issue in issues if issue.code == "entity_misaligned"] == []


def test_generated_numeral_words_are_current() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_numeral_words", ROOT / "tools" / "gen_numeral_words.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (ROOT / "nlu_data" / "jieba" / "numerals.txt").read_text(encoding="utf-8") == module.render()
    assert "两千五" in module.numeral_words() and "两十五" not in module.numeral_words()
