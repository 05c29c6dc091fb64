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
        annotation = Answers.model_fields[q.key].annotation
        if typing.get_origin(annotation) is typing.Literal:
            assert q.type == "choice" and tuple(meta["choices"]) == typing.get_args(annotation)
        else:
            assert meta["choices"] is None


def test_defaults_are_valid_answers() -> None:
    answers = Answers()
    assert answers.gpu_count == 0 and answers.data_can_leave_premises is False


@pytest.mark.parametrize("data,field", [
    ({"labelled_examples": -5}, "labelled_examples"),
    ({"knowledge_volatility": "hourly"}, "knowledge_volatility"),
    ({"gpu_count": 2}, "vram_gib_per_gpu"),                     # GPUs need their memory
    ({"gpu_count": 0, "vram_gib_per_gpu": 24}, "vram_gib_per_gpu"),
    ({"hosted_model_allowed": True}, "hosted_model_allowed"),   # data may not leave by default
    ({"quality_target": 1.5}, "quality_target"),
    ({"labeled_examples": 10}, "labeled_examples"),             # typo: extra keys are forbidden
])
def test_invalid_answers_name_the_field(data: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        Answers.model_validate(data)
    assert info.value.errors()[0]["loc"] == (field,)
    with pytest.raises(AdvisorInputError) as err:
        answers_from_dict(data)
    assert err.value.field == field


def test_friendly_spellings() -> None:
    a = Answers.model_validate({"gpu_count": "none", "cost_budget_usd_per_1k_requests": "no limit",
                                "data_can_leave_premises": "yes", "hosted_model_allowed": "yes"})
    assert a.gpu_count == 0 and a.cost_budget_usd_per_1k_requests is None and a.hosted_model_allowed is True


def test_demo_answers_file_recommends_lora_against_prompting_and_rag() -> None:
    answers = load_answers(ROOT / "examples" / "demo" / "answers.yaml")
    assert answers.labelled_examples == 300 and answers.gpu_count == 0 and answers.latency_budget_ms <= 200
    rec = recommend(answers)
    assert rec.primary == "lora" and rec.arms == ["lora", "prompting", "rag"]


@pytest.mark.parametrize("body,line,field", [
    ("task_type: style_format\nlabeled_examples: 300\n", 2, "labeled_examples"),
    ("task_type: style_format\nlabelled_examples: lots\n", 2, "labelled_examples"),
    ("labelled_examples: 10\n\n# comment\nknowledge_volatility: hourly\n", 4, "knowledge_volatility"),
    ("data_can_leave_premises: false\ngpu_count: 1\nhosted_model_allowed: true\n", 3, "hosted_model_allowed"),
    ("gpu_count: 2\nvram_gib_per_gpu: 0\n", 2, "vram_gib_per_gpu"),
])
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
    from advisor.questions import QUESTION_BY_KEY, SKIPPED_VALUES, should_ask

    hosted, vram = QUESTION_BY_KEY["hosted_model_allowed"], QUESTION_BY_KEY["vram_gib_per_gpu"]
    assert not should_ask(hosted, {"data_can_leave_premises": False})
    assert should_ask(hosted, {"data_can_leave_premises": True})
    assert not should_ask(vram, Answers()) and should_ask(vram, {"gpu_count": 2})
    assert Answers.model_validate({"gpu_count": 0} | {k: v for k, v in SKIPPED_VALUES.items()})
