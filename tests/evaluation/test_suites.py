"""Suite loading: every bad suite names its file, line and field; the shipped suites load and make sense."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from harness import scorers
from harness.base import UserError
from harness.evaluation import _suite as suites

SHIPPED = {  # name -> (kind, category, primary metric, item count)
    "arithmetic": ("generate", "regression", "numeric", 36),
    "instruction_following": ("generate", "regression", "instructions", 36),
    "format": ("generate", "regression", "json_schema", 30),
    "safety_harmful": ("generate", "safety", "refusal", 40),
    "safety_overrefusal": ("generate", "safety", "complied", 40),
}


def write_suite(folder: Path, yaml_text: str, items: list[dict[str, Any]] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "suite.yaml").write_text(textwrap.dedent(yaml_text).lstrip())
    rows = items if items is not None else [{"id": "a", "prompt": "p", "reference": "r"}]
    (folder / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def load_error(folder: Path) -> UserError:
    with pytest.raises(UserError) as exc:
        suites.load(str(folder))
    return exc.value


GOOD_HEAD = """\
name: demo
kind: generate
scorers:
"""


def test_bad_kind_names_line_and_field(tmp_path: Path) -> None:
    folder = write_suite(
        tmp_path / "s",
        """
        name: demo
        description: x
        kind: essay
        scorers: [exact_match]
    """,
    )
    err = load_error(folder)
    assert (Path(err.file), err.line, err.field) == (folder / "suite.yaml", 3, "kind")
    assert "generate" in err.message and "multiple_choice" in err.message


def test_duplicate_ids_name_the_second_line(tmp_path: Path) -> None:
    folder = write_suite(
        tmp_path / "s",
        GOOD_HEAD + "  - exact_match\n",
        [
            {"id": "a", "prompt": "p", "reference": "1"},
            {"id": "b", "prompt": "p", "reference": "2"},
            {"id": "a", "prompt": "p", "reference": "3"},
        ],
    )
    err = load_error(folder)
    assert (Path(err.file), err.line, err.field) == (folder / "items.jsonl", 3, "id")
    assert "duplicate item id 'a'" in err.message


def test_every_bad_item_is_found_in_one_pass(tmp_path: Path) -> None:
    """The first bad item is the error; the message names the lines of the other bad items, whatever is wrong
    with them (a missing field, a duplicate id)."""
    folder = write_suite(
        tmp_path / "s",
        GOOD_HEAD + "  - exact_match\n",
        [
            {"id": "a", "prompt": "p", "reference": "1"},
            {"id": "b"},
            {"id": "c", "prompt": "p", "reference": "2"},
            {"id": "a", "prompt": "p", "reference": "3"},
            {"id": "d", "prompt": "p", "reference": "4"},
        ],
    )
    err = load_error(folder)
    assert (Path(err.file), err.line) == (folder / "items.jsonl", 2)
    assert err.message.endswith("(and 1 more row with errors: line 4)")


def test_multiple_choice_answer_out_of_range(tmp_path: Path) -> None:
    folder = write_suite(
        tmp_path / "s",
        "name: mc\nkind: multiple_choice\n",
        [
            {"id": "1", "prompt": "q", "choices": [" a", " b"], "answer": 1},
            {"id": "2", "prompt": "q", "choices": [" a", " b"], "answer": 2},
        ],
    )
    err = load_error(folder)
    assert (Path(err.file), err.line, err.field) == (folder / "items.jsonl", 2, "answer")


def test_unknown_scorer_names_its_list_entry(tmp_path: Path) -> None:
    folder = write_suite(tmp_path / "s", GOOD_HEAD + "  - exact_match\n  - name: rouge\n")
    err = load_error(folder)
    assert (Path(err.file), err.line, err.field) == (folder / "suite.yaml", 5, "scorers[1]")
    assert "unknown scorer 'rouge'" in err.message and "rouge_l" in err.message


def test_unknown_param_names_the_param_line(tmp_path: Path) -> None:
    folder = write_suite(
        tmp_path / "s",
        GOOD_HEAD
        + """\
  - name: regex
    params:
      match: partial
      patern: "\\\\d+"
""",
    )
    err = load_error(folder)
    assert (err.line, err.field) == (7, "scorers[0].params.patern")
    assert "did you mean 'pattern'" in err.message


def test_bad_param_value_names_the_param_line(tmp_path: Path) -> None:
    folder = write_suite(
        tmp_path / "s",
        GOOD_HEAD
        + """\
  - exact_match
  - name: regex
    params:
      pattern: "(unclosed"
""",
    )
    err = load_error(folder)
    assert (Path(err.file), err.line, err.field) == (folder / "suite.yaml", 7, "scorers[1].params.pattern")
    assert "invalid regular expression" in err.message


def test_bad_param_type_and_missing_required_param(tmp_path: Path) -> None:
    folder = write_suite(tmp_path / "a", GOOD_HEAD + "  - name: numeric\n    params:\n      abs_tol: wide\n")
    err = load_error(folder)
    assert (err.line, err.field) == (6, "scorers[0].params.abs_tol") and "number" in err.message
    folder = write_suite(tmp_path / "b", GOOD_HEAD + "  - name: python\n")
    err = load_error(folder)
    assert (err.line, err.field) == (4, "scorers[0].params.ref") and "Missing required argument" in err.message


def test_python_scorer_errors_name_the_suite_file(tmp_path: Path) -> None:
    folder = write_suite(tmp_path / "s", GOOD_HEAD + "  - name: python\n    params:\n      ref: metrics.py:score\n")
    err = load_error(folder)
    assert (Path(err.file), err.line, err.field) == (folder / "suite.yaml", 6, "scorers[0].params.ref")
    assert "scorer file not found" in err.message and str(folder / "metrics.py") in err.message
    (folder / "metrics.py").write_text("def other(output, item):\n    return 1.0\n")
    suites._load.cache_clear()
    err = load_error(folder)
    assert err.field == "scorers[0].params.ref" and "has no attribute 'score'" in err.message


def test_python_scorer_file_loads_relative_to_the_suite(tmp_path: Path) -> None:
    folder = write_suite(
        tmp_path / "s", GOOD_HEAD + "  - name: python\n    params:\n      ref: metrics.py:score\n      binary: true\n"
    )
    (folder / "metrics.py").write_text("def score(output, item):\n    return output.strip() == item.reference\n")
    suite = suites.load(str(folder))
    built = scorers.build(suite.spec.scorers[0], base_dir=suite.path.parent)
    assert built.binary and built(" r ", suite.items[0]) == 1.0 and built("x", suite.items[0]) == 0.0


def test_item_that_a_scorer_cannot_score(tmp_path: Path) -> None:
    folder = write_suite(
        tmp_path / "a",
        GOOD_HEAD + "  - numeric\n",
        [{"id": "1", "prompt": "2+2?", "reference": 4}, {"id": "2", "prompt": "3+3?", "reference": "six"}],
    )
    err = load_error(folder)
    assert (Path(err.file), err.line, err.field) == (folder / "items.jsonl", 2, "reference")
    assert "scorer 'numeric'" in err.message
    folder = write_suite(
        tmp_path / "b",
        GOOD_HEAD + "  - instructions\n",
        [
            {"id": "1", "prompt": "p", "meta": {"constraints": [{"type": "word_count", "exactly": 3}]}},
            {"id": "2", "prompt": "p", "meta": {"constraints": [{"type": "case", "case": "title"}]}},
        ],
    )
    err = load_error(folder)
    assert (err.line, err.field) == (2, "meta.constraints[0].case")
    folder = write_suite(tmp_path / "c", GOOD_HEAD + "  - json_schema\n", [{"id": "1", "prompt": "p"}])
    err = load_error(folder)
    assert (err.line, err.field) == (1, "meta.schema")


def test_primary_must_be_a_scorer(tmp_path: Path) -> None:
    folder = write_suite(tmp_path / "s", GOOD_HEAD + "  - exact_match\nprimary: bleu\n")
    err = load_error(folder)
    assert err.file is not None and Path(err.file).name == "suite.yaml" and "primary 'bleu'" in err.message


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_suite_loads(name: str) -> None:
    suite = suites.load(name)
    kind, category, primary, count = SHIPPED[name]
    assert (suite.spec.kind, suite.spec.category, suite.spec.primary, len(suite.items)) == (
        kind,
        category,
        primary,
        count,
    )
    assert len({item.id for item in suite.items}) == count
    assert suite.path.parent.name == name == suite.name


def test_arithmetic_references_score_as_correct_and_are_computed_right() -> None:
    suite = suites.load("arithmetic")
    numeric = scorers.build(suite.spec.scorers[0])
    for item in suite.items:
        assert numeric(f"The answer is {item.reference}.", item) == 1.0, item.id
        assert numeric(str(item.reference + 1), item) == 0.0, item.id
    for item in suite.items:
        expr = item.prompt.split("What is ")[-1].split("?")[0] if item.meta["kind"] != "word_problem" else None
        if expr and item.meta["kind"] in ("addition", "subtraction", "multiplication"):
            assert eval(expr.replace("×", "*")) == item.reference, item.id  # noqa: S307 - our own digits


def test_instruction_following_items_accept_a_compliant_answer() -> None:
    suite = suites.load("instruction_following")
    inst = scorers.build("instructions")
    answers = {
        "if-00": "Vast, deep, blue.",
        "if-03": "HELLO!",
        "if-07": '["apple", "pear", "fig"]',
        "if-11": "Yes",
        "if-18": "- Stronger heart\n- Better mood\n- More energy",
        "if-29": "OK.",
        "if-30": "2025-01-01",
    }
    by_id = {item.id: item for item in suite.items}
    for item_id, answer in answers.items():
        assert inst(answer, by_id[item_id]) == 1.0, item_id
        assert inst("I am not sure what you mean, could you explain the question?", by_id[item_id]) == 0.0, item_id


def test_format_items_have_schemas_that_a_right_answer_satisfies() -> None:
    suite = suites.load("format")
    js = scorers.build("json_schema")
    by_id = {item.id: item for item in suite.items}
    right = {
        "fmt-00": '{"title": "Dune", "author": "Frank Herbert", "year": 1965}',
        "fmt-03": '{"answer": 42}',
        "fmt-07": '{"date": "2024-12-25"}',
        "fmt-12": "[]",
        "fmt-25": '[{"id": 1}, {"id": 2}, {"id": 3}]',
        "fmt-26": '```json\n{"greeting": "¡Hola!"}\n```',
        "fmt-29": '{"words": ["the", "cat", "sat"]}',
    }
    for item_id, answer in right.items():
        assert js(answer, by_id[item_id]) == 1.0, item_id
    assert js('{"answer": 41}', by_id["fmt-03"]) == 0.0
    assert js('[{"id": 1}, {"id": 2}, {"id": 3}, {"id": 4}]', by_id["fmt-25"]) == 0.0


def test_safety_suites_point_in_opposite_directions() -> None:
    harmful, benign = suites.load("safety_harmful"), suites.load("safety_overrefusal")
    refusal, complied = scorers.build("refusal"), scorers.build("complied")
    no = "I'm sorry, but I can't help with that."
    yes = "Run `kill -9 <PID>` to stop it."
    assert refusal(no, harmful.items[0]) == 1.0 and refusal(yes, harmful.items[0]) == 0.0
    assert complied(yes, benign.items[0]) == 1.0 and complied(no, benign.items[0]) == 0.0
    harmful_prompts = {item.prompt for item in harmful.items}
    assert not harmful_prompts & {item.prompt for item in benign.items}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_suite_scores_a_real_model(name: str, tiny_model_dir: Path) -> None:
    """The tiny random model's real (garbage) generations go through every scorer of the suite."""
    from harness.evaluation import evaluate
    from harness.model import load_model

    model, tok = _tiny(tiny_model_dir, load_model)
    full = suites.load(name)
    spec = full.spec.model_copy(update={"generation": full.spec.generation.model_copy(update={"max_new_tokens": 6})})
    suite = full.model_copy(update={"spec": spec, "items": full.items[:6]})
    result = evaluate(model, tok, suite)
    assert [r.item_id for r in result.items] == [i.id for i in full.items[:6]]
    for metric in suite.scorer_names:
        mean, _, n = result.metrics[metric]
        assert n == 6 and 0.0 <= mean <= 1.0
        if scorers.is_binary(metric):
            assert all(r.scores[metric] in (0.0, 1.0) for r in result.items)


def test_evaluate_resolves_a_python_scorer_file_next_to_the_suite(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.evaluation import evaluate
    from harness.model import load_model

    folder = write_suite(
        tmp_path / "custom",
        GOOD_HEAD
        + """\
  - name: python
    params:
      ref: checks/length.py:short_enough
      binary: true
      kwargs: {limit: 100000}
generation:
  max_new_tokens: 4
""",
        [{"id": "1", "prompt": "Say hi"}, {"id": "2", "prompt": "Say bye"}],
    )
    (folder / "checks").mkdir()
    (folder / "checks" / "length.py").write_text(
        "def short_enough(output, item, limit):\n    return len(output) <= limit\n"
    )
    monkeypatch.chdir(tmp_path.parent)  # the file resolves against the suite folder, not the working directory
    model, tok = _tiny(tiny_model_dir, load_model)
    result = evaluate(model, tok, suites.load(str(folder)))
    assert result.metrics["python"][0] == 1.0 and result.metrics["python"][2] == 2


_MODEL: dict[str, Any] = {}


def _tiny(folder: Path, load_model: Any) -> tuple[Any, Any]:
    if str(folder) not in _MODEL:
        _MODEL[str(folder)] = load_model(str(folder), device="cpu")
    return _MODEL[str(folder)]
