from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest
from pydantic import ValidationError

from advisor.errors import AdvisorInputError
from advisor.questions import QUESTIONS, Answers, answers_from_dict, coerce_answers, load_answers
from advisor.rules import recommend

ROOT = Path(__file__).resolve().parents[2]


def test_questions_cover_every_answer_field_with_form_metadata() -> None:
    assert [q.key for q in QUESTIONS] == list(Answers.model_fields)
    for q in QUESTIONS:
        meta = q.as_dict()
        json.dumps(meta)  # a form can be rendered from plain data
        assert set(meta) >= {"key", "prompt", "type", "choices", "default", "help"}
        assert meta["default"] == Answers.model_fields[q.key].default
        args = typing.get_args(Answers.model_fields[q.key].annotation)
        literal = [a for a in args if typing.get_origin(a) is typing.Literal]
        if q.type == "choice":
            assert tuple(meta["choices"]) == typing.get_args(literal[0])
        else:
            assert meta["choices"] is None


def test_nothing_unanswered_is_guessed() -> None:
    answers = Answers()
    assert all(getattr(answers, k) is None for k in Answers.model_fields)
    assert answers.unknown() == list(Answers.model_fields)


def test_implied_answers_are_filled_in_and_nothing_else() -> None:
    a = Answers(data_can_leave_premises=False, gpu_count=0)
    assert a.hosted_model_allowed is False and a.vram_gib_per_gpu == 0.0
    assert Answers(gpu_count=2).vram_gib_per_gpu is None  # a GPU of unknown memory stays unknown
    assert Answers(data_can_leave_premises=True).hosted_model_allowed is None


@pytest.mark.parametrize(
    "data,field",
    [
        ({"labelled_examples": -5}, "labelled_examples"),
        ({"knowledge_volatility": "fortnightly"}, "knowledge_volatility"),
        ({"gpu_count": 2, "vram_gib_per_gpu": 0}, "vram_gib_per_gpu"),  # GPUs need their memory
        ({"gpu_count": 0, "vram_gib_per_gpu": 24}, "vram_gib_per_gpu"),
        ({"data_can_leave_premises": False, "hosted_model_allowed": True}, "hosted_model_allowed"),
        ({"data_can_leave_premises": "no", "deployment_target": "hosted"}, "deployment_target"),
        ({"labelled_examples": True}, "labelled_examples"),  # a boolean is not a count
        ({"model_params_b": False}, "model_params_b"),
        ({"quality_target": 1.5}, "quality_target"),
        ({"labeled_examples": 10}, "labeled_examples"),  # typo: extra keys are forbidden
    ],
)
def test_invalid_answers_name_the_field(data: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        Answers.model_validate(data)
    assert info.value.errors()[0]["loc"] == (field,)
    with pytest.raises(AdvisorInputError) as err:
        answers_from_dict(data)
    assert err.value.field == field


def test_friendly_spellings() -> None:
    a = Answers.model_validate(
        {
            "gpu_count": "none",
            "cost_budget_usd_per_1k_requests": "no limit",
            "data_can_leave_premises": "yes",
            "hosted_model_allowed": "yes",
            "model_params_b": "unknown",
            "task_type": "?",
        }
    )
    assert a.gpu_count == 0 and a.cost_budget_usd_per_1k_requests == "no_limit" and a.hosted_model_allowed is True
    assert a.model_params_b is None and a.task_type is None
    assert (
        Answers.model_validate({"cost_budget_usd_per_1k_requests": "unknown"}).cost_budget_usd_per_1k_requests is None
    )


def test_demo_answers_file_recommends_lora_against_prompting_and_rag() -> None:
    answers = load_answers(ROOT / "examples" / "demo" / "answers.yaml")
    assert answers.labelled_examples == 300 and answers.gpu_count == 0 and answers.latency_budget_ms <= 200
    rec = recommend(answers)
    assert rec.primary == "lora" and rec.arms == ["lora", "prompting", "rag"]


@pytest.mark.parametrize(
    "body,line,field",
    [
        ("task_type: style_format\nlabeled_examples: 300\n", 2, "labeled_examples"),
        ("task_type: style_format\nlabelled_examples: lots\n", 2, "labelled_examples"),
        ("labelled_examples: 10\n\n# comment\nknowledge_volatility: fortnightly\n", 4, "knowledge_volatility"),
        ("data_can_leave_premises: false\ngpu_count: 1\nhosted_model_allowed: true\n", 3, "hosted_model_allowed"),
        ("gpu_count: 2\nvram_gib_per_gpu: 0\n", 2, "vram_gib_per_gpu"),
        ("task_type: style_format\nlabelled_examples: true\n", 2, "labelled_examples"),
        ("gpu_count: 1\nvram_gib_per_gpu: 24\nmodel_params_b: yes\n", 3, "model_params_b"),
    ],
)
def test_bad_answers_file_names_file_line_and_field(tmp_path: Path, body: str, line: int, field: str) -> None:
    path = tmp_path / "answers.yaml"
    path.write_text(body)
    with pytest.raises(AdvisorInputError) as info:
        load_answers(path)
    assert (info.value.line, info.value.field) == (line, field), str(info.value)
    assert str(info.value).startswith(f"{path}:{line}: field '{field}'")


def test_answers_file_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "answers.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(AdvisorInputError, match="mapping"):
        load_answers(path)


def test_three_ways_in_give_the_same_answers(tmp_path: Path) -> None:
    data = {"task_type": "reasoning", "labelled_examples": 1200, "gpu_count": 1, "vram_gib_per_gpu": 24}
    path = tmp_path / "a.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in data.items()))
    assert coerce_answers(data) == coerce_answers(path) == coerce_answers(Answers.model_validate(data))


def test_form_hides_follow_up_questions() -> None:
    from advisor.questions import QUESTION_BY_KEY, should_ask

    hosted, vram = QUESTION_BY_KEY["hosted_model_allowed"], QUESTION_BY_KEY["vram_gib_per_gpu"]
    assert not should_ask(hosted, {"data_can_leave_premises": False})
    assert should_ask(hosted, {"data_can_leave_premises": True}) and should_ask(
        hosted, {"data_can_leave_premises": None}
    )
    assert not should_ask(vram, Answers()) and should_ask(vram, {"gpu_count": 2})
    assert not should_ask(vram, {"gpu_count": 0})


def test_demo_answers_answer_every_question() -> None:
    answers = load_answers(ROOT / "examples" / "demo" / "answers.yaml")
    assert answers.model_fields_set == set(Answers.model_fields) and not answers.unknown()


# --- bad answers files: one line, exit 2 -----------------------------------------------------------


def test_duplicate_key_names_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "answers.yaml"
    path.write_text(
        "task_type: style_format\ndata_can_leave_premises: true\nlabelled_examples: 300\n"
        "data_can_leave_premises: false\n"
    )
    with pytest.raises(AdvisorInputError) as info:
        load_answers(path)
    assert (info.value.line, info.value.field) == (4, "data_can_leave_premises")
    assert "line 2" in info.value.message and "line 4" in info.value.message


def test_non_utf8_file_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "answers.yaml"
    path.write_bytes("task_type: style_format\n# r\u00e9sum\u00e9 of the team\n".encode("latin-1"))
    with pytest.raises(AdvisorInputError) as info:
        load_answers(path)
    assert info.value.line == 2 and "UTF-8" in info.value.message and "\n" not in str(info.value)


def test_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "answers.yaml"
    path.write_bytes(b"\xef\xbb\xbftask_type: style_format\nlabelled_examples: 300\n")
    assert load_answers(path).labelled_examples == 300
