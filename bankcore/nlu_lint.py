"""The project's own lint of the NLU training data: pure checks over `nlu_data/` and the domain.

`bankbot nlu check` runs it next to `rasa data validate`; the ops console shows it beside the intents and examples.
It lives in the shared core so both can import it (channels never import bankbot). Messages are English for the
command line; `code`, `intent` and `params` let the console say the same in Chinese.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = [
    "NON_BANKING_INTENTS",
    "NORMALISED_ENTITIES",
    "EntitySpan",
    "LintIssue",
    "NluExample",
    "Tokenizer",
    "fold_text",
    "lint_nlu",
    "load_domain",
    "load_nlu",
    "parse_example",
    "tokenizer_from_config",
]

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml where it is built in: ten times faster

#: Character spans (start, end) of the tokens of a text, as Rasa's JiebaTokenizer cuts it.
Tokenizer = Callable[[str], list[tuple[int, int]]]

#: Entities whose raw text the actions normalise themselves (parse_amount, date parsing, digit folding):
#: width or case variants of their values are expected and not reported.
NORMALISED_ENTITIES = frozenset({"amount", "card_last4", "date"})

#: Intents the minimum-count rule does not apply to (chit-chat and gateway-only intents).
NON_BANKING_INTENTS = frozenset(
    {"greet", "goodbye", "thank", "affirm", "deny", "bot_challenge", "out_of_scope", "submit_otp", "contact_opened"}
)

# [text](entity), [text](entity:value) (Rasa 2 shorthand), [text]{"entity": ..., "value": ...}
_ANNOTATION = re.compile(r"\[(?P<text>[^\]]+?)\](?:\((?P<short>[^)]+)\)|(?P<json>\{[^}]*\}))")


@dataclass(frozen=True)
class LintIssue:
    """One finding: `level` is 'error' (fails the check) or 'warning'."""

    level: Literal["error", "warning"]
    code: str
    message: str
    file: str | None = None
    example: str | None = None  # the example as written (annotations included)
    intent: str | None = None  # the intent the finding is about, where there is one
    params: tuple[tuple[str, str], ...] = ()  # the message's particulars, for a translated rendering

    @property
    def details(self) -> dict[str, str]:
        return dict(self.params)


@dataclass(frozen=True)
class EntitySpan:
    """An annotated entity inside an example's plain text."""

    entity: str
    start: int
    end: int
    text: str
    value: str | None = None


@dataclass
class NluExample:
    """One training example: its intent, plain text and annotated entities."""

    intent: str
    raw: str
    text: str
    file: str
    entities: list[EntitySpan] = field(default_factory=list)


@dataclass
class NluData:
    """Everything the lint reads from the NLU directory."""

    examples: list[NluExample] = field(default_factory=list)
    synonyms: dict[str, str] = field(default_factory=dict)  # lower-cased surface form -> canonical value
    regex_names: set[str] = field(default_factory=set)
    lookup_names: set[str] = field(default_factory=set)
    issues: list[LintIssue] = field(default_factory=list)


def fold_text(text: str) -> str:
    """The comparison key of an example: NFKC (full-width to half-width), case-folded, no whitespace."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text)).casefold()


def parse_example(raw: str) -> tuple[str, list[EntitySpan]]:
    """Strip Rasa entity annotations from an example; return the plain text and the entity spans."""
    plain: list[str] = []
    spans: list[EntitySpan] = []
    length = 0
    last = 0
    for match in _ANNOTATION.finditer(raw):
        before = raw[last : match.start()]
        plain.append(before)
        length += len(before)
        surface = match.group("text")
        entity, value = _annotation_target(match)
        spans.append(EntitySpan(entity, length, length + len(surface), surface, value))
        plain.append(surface)
        length += len(surface)
        last = match.end()
    plain.append(raw[last:])
    return "".join(plain), spans


def _annotation_target(match: re.Match[str]) -> tuple[str, str | None]:
    if match.group("short") is not None:
        entity, _, value = match.group("short").partition(":")
        return entity.strip(), (value.strip() or None)
    try:
        data = json.loads(match.group("json"))
    except json.JSONDecodeError:
        return "", None
    value = data.get("value")
    return str(data.get("entity", "")), (str(value) if value is not None else None)


def _example_lines(block: Any) -> Iterator[str]:
    """Examples are a '- ' list inside a block string, or a list of strings or {text: ...} mappings."""
    if isinstance(block, str):
        for line in block.splitlines():
            stripped = line.strip()
            if stripped.startswith("- "):
                yield stripped[2:].strip()
            elif stripped == "-":
                yield ""
    elif isinstance(block, list):
        for item in block:
            if isinstance(item, dict):
                yield str(item.get("text", ""))
            else:
                yield str(item)


def _yaml_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file())


def load_nlu(nlu_dir: Path) -> NluData:
    """Read every NLU YAML file under `nlu_dir` (intents, synonyms, regexes, lookups)."""
    data = NluData()
    for path in _yaml_files(nlu_dir):
        name = str(path)
        try:
            document = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER) or {}
        except yaml.YAMLError as exc:
            data.issues.append(LintIssue("error", "yaml_error", f"cannot parse YAML: {exc}", name))
            continue
        items = document.get("nlu") if isinstance(document, dict) else None
        for item in items or []:
            if not isinstance(item, dict):
                continue
            if "intent" in item:
                for raw in _example_lines(item.get("examples")):
                    text, spans = parse_example(raw)
                    data.examples.append(NluExample(str(item["intent"]), raw, text, name, spans))
            elif "synonym" in item:
                for raw in _example_lines(item.get("examples")):
                    data.synonyms[raw.lower()] = str(item["synonym"])
            elif "regex" in item:
                data.regex_names.add(str(item["regex"]))
            elif "lookup" in item:
                data.lookup_names.add(str(item["lookup"]))
    return data


def _names(entries: Any) -> set[str]:
    """Names from a domain list whose items are strings or one-key mappings ({name: {...}})."""
    names: set[str] = set()
    for entry in entries or []:
        if isinstance(entry, str):
            names.add(entry)
        elif isinstance(entry, dict):
            names.update(str(key) for key in entry)
    return names


def load_domain(domain_dir: Path) -> tuple[set[str], set[str], list[LintIssue]]:
    """Intents and entities declared in all YAML files of a domain directory (or one domain file)."""
    intents: set[str] = set()
    entities: set[str] = set()
    issues: list[LintIssue] = []
    files = [domain_dir] if domain_dir.is_file() else _yaml_files(domain_dir) if domain_dir.is_dir() else []
    if not files:
        issues.append(LintIssue("error", "domain_missing", f"no domain YAML files in {domain_dir}", str(domain_dir)))
    for path in files:
        try:
            document = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER) or {}
        except yaml.YAMLError as exc:
            issues.append(LintIssue("error", "yaml_error", f"cannot parse YAML: {exc}", str(path)))
            continue
        if isinstance(document, dict):
            intents |= _names(document.get("intents"))
            entities |= _names(document.get("entities"))
    return intents, entities, issues


def _check_duplicates(examples: list[NluExample]) -> list[LintIssue]:
    issues: list[LintIssue] = []
    first_seen: dict[str, NluExample] = {}
    for example in examples:
        key = fold_text(example.text)
        if not key:
            issues.append(
                LintIssue(
                    "error",
                    "empty_example",
                    f"empty example under intent '{example.intent}'",
                    example.file,
                    example.raw,
                    example.intent,
                )
            )
            continue
        earlier = first_seen.get(key)
        if earlier is None:
            first_seen[key] = example
        elif earlier.intent != example.intent:
            issues.append(
                LintIssue(
                    "error",
                    "duplicate_across_intents",
                    f"'{example.text}' is an example of both '{earlier.intent}' ({earlier.file}) "
                    f"and '{example.intent}'",
                    example.file,
                    example.raw,
                    example.intent,
                    (("other_intent", earlier.intent), ("other_file", Path(earlier.file).name)),
                )
            )
        else:
            issues.append(
                LintIssue(
                    "warning",
                    "duplicate_example",
                    f"'{example.text}' appears twice under '{example.intent}'",
                    example.file,
                    example.raw,
                    example.intent,
                )
            )
    return issues


def _check_counts(examples: list[NluExample], min_examples: int) -> list[LintIssue]:
    counts: dict[str, int] = defaultdict(int)
    files: dict[str, str] = {}
    for example in examples:
        counts[example.intent] += 1
        files.setdefault(example.intent, example.file)
    return [
        LintIssue(
            "error",
            "too_few_examples",
            f"intent '{intent}' has {count} examples; banking intents need at least {min_examples}",
            files[intent],
            intent=intent,
            params=(("count", str(count)), ("minimum", str(min_examples))),
        )
        for intent, count in sorted(counts.items())
        if intent not in NON_BANKING_INTENTS and count < min_examples
    ]


def _check_value_variants(data: NluData) -> list[LintIssue]:
    """Values of one entity that differ only in width or case must map to one canonical value."""
    groups: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    where: dict[tuple[str, str], NluExample] = {}
    for example in data.examples:
        for span in example.entities:
            if span.entity in NORMALISED_ENTITIES:
                continue
            canonical = span.value or data.synonyms.get(span.text.lower(), span.text)
            key = (span.entity, fold_text(span.text))
            groups[key][canonical].add(span.text)
            where.setdefault(key, example)
    issues: list[LintIssue] = []
    for (entity, _folded), canonicals in sorted(groups.items()):
        if len(canonicals) > 1:
            surfaces = sorted({s for forms in canonicals.values() for s in forms})
            example = where[(entity, _folded)]
            issues.append(
                LintIssue(
                    "error",
                    "entity_value_variants",
                    f"entity '{entity}' has values {surfaces} that differ only in width or case but map to "
                    f"{sorted(canonicals)}; add a synonym so they share one value",
                    example.file,
                    example.raw,
                    example.intent,
                    (("entity", entity), ("surfaces", "、".join(surfaces)), ("values", "、".join(sorted(canonicals)))),
                )
            )
    return issues


def _check_against_domain(data: NluData, intents: set[str], entities: set[str]) -> list[LintIssue]:
    issues: list[LintIssue] = []
    reported: set[tuple[str, str]] = set()
    for example in data.examples:
        if example.intent not in intents and ("intent", example.intent) not in reported:
            reported.add(("intent", example.intent))
            issues.append(
                LintIssue(
                    "error",
                    "unknown_intent",
                    f"intent '{example.intent}' is not declared in the domain",
                    example.file,
                    example.raw,
                    example.intent,
                )
            )
        for span in example.entities:
            if span.entity not in entities and ("entity", span.entity) not in reported:
                reported.add(("entity", span.entity))
                issues.append(
                    LintIssue(
                        "error",
                        "unknown_entity",
                        f"entity '{span.entity}' is not declared in the domain",
                        example.file,
                        example.raw,
                        example.intent,
                        (("entity", span.entity),),
                    )
                )
    return issues


def tokenizer_from_config(config_path: Path, project_root: Path) -> Tokenizer:
    """A jieba tokenizer set up as bot/config.yml sets up Rasa's JiebaTokenizer (dictionary and pattern).

    Building one loads jieba's dictionary (about a second); callers that lint repeatedly keep it.
    """
    import jieba  # only the alignment check needs it

    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    component: dict[str, Any] = next((c for c in config.get("pipeline", []) if c.get("name") == "JiebaTokenizer"), {})
    tokenizer = jieba.Tokenizer()
    dictionary_path = component.get("dictionary_path")
    if dictionary_path:
        for path in sorted((project_root / dictionary_path).glob("*")):
            tokenizer.load_userdict(str(path))
    pattern = re.compile(component["token_pattern"]) if component.get("token_pattern") else None

    def tokens(text: str) -> list[tuple[int, int]]:
        result: list[tuple[int, int]] = []
        for word, start, _end in tokenizer.tokenize(text):
            pieces = pattern.findall(word) if pattern else [word]
            offset = 0
            for piece in pieces or [word]:
                index = word.index(piece, offset)
                offset = index + len(piece)
                result.append((start + index, start + offset))
        return result

    return tokens


def _check_alignment(data: NluData, tokens: Tokenizer) -> list[LintIssue]:
    """Entity spans that do not start and end on a token boundary are dropped by Rasa at training time."""
    issues: list[LintIssue] = []
    for example in data.examples:
        if not example.entities:
            continue
        bounds = tokens(example.text)
        starts = {start for start, _ in bounds}
        ends = {end for _, end in bounds}
        for span in example.entities:
            if span.start not in starts or span.end not in ends:
                words = "/".join(example.text[s:e] for s, e in bounds)
                issues.append(
                    LintIssue(
                        "warning",
                        "entity_misaligned",
                        f"'{span.text}' ({span.entity}) does not fall on token boundaries: {words}; "
                        "add the word to nlu_data/jieba/userdict.txt",
                        example.file,
                        example.raw,
                        example.intent,
                        (("text", span.text), ("entity", span.entity), ("tokens", words)),
                    )
                )
    return issues


def lint_nlu(
    nlu_dir: Path,
    domain_dir: Path,
    min_examples: int = 25,
    *,
    config_path: Path | None = None,
    project_root: Path | None = None,
    tokenizer: Tokenizer | None = None,
) -> list[LintIssue]:
    """Lint the NLU data against the domain; with `config_path` (or a `tokenizer` built from it), also check
    that entity spans fall on token boundaries."""
    data = load_nlu(Path(nlu_dir))
    issues = list(data.issues)
    issues += _check_duplicates(data.examples)
    issues += _check_counts(data.examples, min_examples)
    issues += _check_value_variants(data)
    intents, entities, domain_issues = load_domain(Path(domain_dir))
    issues += domain_issues
    if not domain_issues:
        issues += _check_against_domain(data, intents, entities)
    if tokenizer is None and config_path is not None:
        root = Path(project_root) if project_root is not None else Path(config_path).resolve().parent.parent
        tokenizer = tokenizer_from_config(Path(config_path), root)
    if tokenizer is not None:
        issues += _check_alignment(data, tokenizer)
    return issues
