from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from advisor._rulebook import FACTS, OPTIONS, AllOf, AnyOf, Clause, Not, holds, truth
from advisor.errors import AdvisorInputError
from advisor.questions import Answers
from advisor.rules import load_rules, recommend


def test_default_rules_load_and_cite_sources() -> None:
    book = load_rules()
    assert len(book.rules) >= 30
    for rule in book.rules:
        assert rule.reason and rule.source
        assert set(rule.effect) <= set(OPTIONS) and set(rule.veto) <= set(OPTIONS)
    assert book.controls.options == ["prompting", "rag"]


def test_condition_language() -> None:
    env = {"labelled_examples": 150, "task_type": "style_format", "lora_fits_gpu": None}
    lt = Clause(field="labelled_examples", op="lt", value=200)
    is_style = Clause(field="task_type", op="in", value=["style_format", "reasoning"])
    unknown = Clause(field="lora_fits_gpu", op="eq", value=False)
    assert holds(lt, env) and holds(is_style, env)
    assert not holds(unknown, env), "an unknown fact never satisfies a clause"
    assert holds(AllOf(all=[lt, is_style]), env)
    assert not holds(AllOf(all=[lt, unknown]), env)
    assert holds(AnyOf(any=[unknown, lt]), env)
    assert truth(Not.model_validate({"not": unknown}), env) is None, "not unknown is still unknown"
    assert truth(AllOf(all=[lt, unknown]), env) is None and truth(AnyOf(any=[unknown]), env) is None
    assert truth(AllOf(all=[Not.model_validate({"not": lt}), unknown]), env) is False
    assert holds(AllOf(all=[]), env)
    assert not holds(Clause(field="labelled_examples", op="ge", value=151), env)
    assert holds(Clause(field="labelled_examples", op="ne", value=151), env)


def test_numbers_compare_only_with_numbers() -> None:
    with pytest.raises(ValueError, match="number"):
        Clause(field="labelled_examples", op="lt", value="100")
    with pytest.raises(ValueError, match="list"):
        Clause(field="task_type", op="in", value="style_format")
    with pytest.raises(ValueError, match="unknown field"):
        Clause(field="labeled_examples", op="lt", value=100)
    assert "lora_fits_gpu" in FACTS


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


GOOD_RULE = """\
  - id: always
    when: {all: []}
    effect: {prompting: 1}
    reason: a rule that always fires
    source: test
"""


@pytest.mark.parametrize(
    "rule,line,field,message",
    [
        (
            """\
  - id: bad-op
    when:
      all:
        - {field: labelled_examples, op: less_than, value: 100}
    effect: {lora: 1}
    reason: uses an op that does not exist
    source: test
""",
            11,
            "rules[1].when.all[0].op",
            "Input should be",
        ),
        (
            """\
  - id: bad-field
    when: {field: labeled_examples, op: lt, value: 100}
    reason: misspells a field name
    source: test
""",
            9,
            "rules[1].when.field",
            "unknown field 'labeled_examples'",
        ),
        (
            """\
  - id: bad-option
    when: {field: gpu_count, op: eq, value: 0}
    effect: {lora: 1, finetune: 3}
    reason: names an option that does not exist
    source: test
""",
            10,
            "rules[1].effect.finetune",
            "Input should be",
        ),
        (
            """\
  - id: no-reason
    when: {field: gpu_count, op: eq, value: 0}
    source: test
""",
            8,
            "rules[1].reason",
            "Field required",
        ),
        (
            """\
  - id: veto-prompting
    when: {field: gpu_count, op: eq, value: 0}
    veto: [prompting]
    reason: tries to rule out the fallback
    source: test
""",
            10,
            "rules[1].veto",
            "prompting cannot be vetoed",
        ),
        (
            """\
  - id: extra-key
    when: {field: gpu_count, op: eq, value: 0}
    reason: has a key the schema does not know
    source: test
    weight: 3
""",
            12,
            "rules[1].weight",
            "unknown key",
        ),
    ],
)
def test_bad_rules_file_names_file_line_and_field(
    tmp_path: Path, rule: str, line: int, field: str, message: str
) -> None:
    path = write(tmp_path, "version: 1\nrules:\n" + GOOD_RULE + rule)
    with pytest.raises(AdvisorInputError) as info:
        load_rules(path)
    err = info.value
    assert (err.file, err.line, err.field) == (path, line, field), str(err)
    assert message in err.message
    assert str(err).startswith(f"{path}:{line}: field '{field}'")


def test_rules_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    path = write(tmp_path, "rules:\n  - id: x\n    when: {field: gpu_count, op: eq\n")
    with pytest.raises(AdvisorInputError) as info:
        load_rules(path)
    assert info.value.line is not None and "invalid YAML" in info.value.message


def test_duplicate_rule_ids_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "rules:\n" + GOOD_RULE + GOOD_RULE)
    with pytest.raises(AdvisorInputError, match="duplicate rule id 'always'"):
        load_rules(path)


def test_rules_are_data_a_different_file_changes_the_answer(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
controls: {options: [prompting]}
rules:
  - id: always-full
    when: {all: []}
    effect: {full: 10}
    reason: this organisation always trains the whole model
    source: house policy
  - id: never-rag
    when: {field: documents, op: ge, value: 0}
    veto: [rag]
    reason: no retrieval infrastructure here
    source: house policy
""",
    )
    rec = recommend(Answers(documents=0), rules=load_rules(path))
    assert rec.primary == "full"
    assert rec.arms == ["full", "prompting"]
    assert rec.vetoed == ["rag"]
    assert [f.id for f in rec.fired] == ["always-full", "never-rag"]


def test_render_shows_primary_arms_reasons_and_changers() -> None:
    rec = recommend(Answers(task_type="style_format", labelled_examples=40, preference_pairs=0))
    out = StringIO()
    rec.render(Console(file=out, width=140))
    text = out.getvalue()
    assert "Recommendation: prompting" in text
    assert "Arms to test: prompting, rag" in text
    assert "too-few-examples" in text and "OpenAI fine-tuning guide" in text
    assert "if labelled_examples were >= 100 (now 40), primary would be lora" in text


def test_reason_placeholders_must_name_fields(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
rules:
  - id: typo
    when: {all: []}
    reason: "{labeled_examples} examples is a typo"
    source: test
""",
    )
    with pytest.raises(AdvisorInputError) as info:
        load_rules(path)
    assert info.value.field == "rules[0].reason" and "labeled_examples" in info.value.message


def test_rules_file_with_duplicate_keys_names_both_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "rules:\n  - id: a\n    when: {all: []}\n    reason: a reason here\n"
        "    source: test\n    reason: another reason\n",
    )
    with pytest.raises(AdvisorInputError, match="line 4 and again on line 6"):
        load_rules(path)
