from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from advisor.planner import plan_yaml, save_plan, write_plan
from advisor.questions import Answers
from advisor.rules import recommend

GPU80_8B = {
    "gpu_count": 1,
    "vram_gib_per_gpu": 80,
    "model_params_b": 8,
    "data_can_leave_premises": True,
    "hosted_model_allowed": True,
}


def harness_plan_model():
    return pytest.importorskip("harness.plan").Plan


def plan_for(answers: dict, **kw) -> tuple[dict, list[str]]:
    a = Answers.model_validate(answers)
    notes: list[str] = []
    return write_plan(recommend(a), a, "data/train.jsonl", notes=notes, **kw), notes


def test_demo_plan_tests_lora_against_prompt_and_rag() -> None:
    plan, notes = plan_for(
        {
            "task_type": "classification_extraction",
            "labelled_examples": 300,
            "latency_budget_ms": 200,
            "knowledge_volatility": "never",
            "gpu_count": 0,
            "model_params_b": 0.135,
        }
    )
    assert [(a["name"], a["type"]) for a in plan["arms"]] == [
        ("baseline", "baseline"),
        ("lora", "lora"),
        ("prompt", "prompt"),
        ("rag", "rag"),
    ]
    lora = plan["arms"][1]
    assert (lora["r"], lora["alpha"], lora["epochs"], lora["batch_size"]) == (16, 32, 3.0, 4)
    assert plan["suites"] == ["json_extract", "general_knowledge"]
    assert plan["gate"] == "examples/demo/gate.yaml" and plan["model"] == "smollm2-135m"
    assert "preference" not in plan["data"] and notes == []
    harness_plan_model().model_validate(plan)


def test_hybrid_becomes_rag_and_lora_arms_with_a_note() -> None:
    plan, notes = plan_for(
        {
            "task_type": "domain_knowledge",
            "labelled_examples": 3000,
            "documents": 2000,
            "knowledge_volatility": "weekly",
            **GPU80_8B,
        }
    )
    types = [a["type"] for a in plan["arms"]]
    assert types == ["baseline", "rag", "lora", "prompt"]
    assert any("hybrid_rag_lora" in n for n in notes)
    assert plan["arms"][2]["epochs"] == 2.0 and plan["arms"][2]["batch_size"] == 8
    harness_plan_model().model_validate(plan)


def test_dpo_arm_continues_from_the_sft_arm_when_preferences_are_given() -> None:
    answers = {"task_type": "style_format", "labelled_examples": 2000, "preference_pairs": 20000, **GPU80_8B}
    plan, _ = plan_for(answers, preference_path="data/prefs.jsonl")
    arms = {a["name"]: a for a in plan["arms"]}
    assert arms["dpo"]["from_arm"] == "lora" and arms["dpo"]["beta"] == 0.1
    assert [a["name"] for a in plan["arms"]].index("lora") < [a["name"] for a in plan["arms"]].index("dpo")
    assert plan["data"]["preference"] == "data/prefs.jsonl"
    harness_plan_model().model_validate(plan)


def test_dpo_left_out_without_a_preference_file() -> None:
    answers = {"task_type": "style_format", "labelled_examples": 2000, "preference_pairs": 20000, **GPU80_8B}
    plan, notes = plan_for(answers)
    assert "dpo" not in [a["type"] for a in plan["arms"]]
    assert any("no preference file" in n for n in notes)
    harness_plan_model().model_validate(plan)


def test_limited_vram_plan_uses_qlora_with_checkpointing() -> None:
    plan, _ = plan_for(
        {
            "task_type": "style_format",
            "labelled_examples": 500,
            "gpu_count": 1,
            "vram_gib_per_gpu": 16,
            "model_params_b": 8,
        },
        model="meta-llama/Llama-3.1-8B",
    )
    qlora = next(a for a in plan["arms"] if a["type"] == "qlora")
    assert qlora["gradient_checkpointing"] is True and plan["model"] == "meta-llama/Llama-3.1-8B"
    assert "lora" not in [a["type"] for a in plan["arms"]]
    harness_plan_model().model_validate(plan)


def test_saved_plan_loads_with_the_harness(tmp_path: Path) -> None:
    load_plan = pytest.importorskip("harness.plan").load_plan
    train = tmp_path / "train.jsonl"
    train.write_text('{"prompt": "a", "completion": "b"}\n')
    a = Answers(task_type="style_format", labelled_examples=300)
    rec = recommend(a)
    plan = write_plan(rec, a, train, ["general_knowledge"], gate=None, name="my-exp")
    path = save_plan(tmp_path / "out" / "plan.yaml", plan, rec, ["a note"])
    text = path.read_text()
    assert text.startswith("# Written by `tunegate advise`: primary recommendation lora")
    assert "# note: a note" in text and yaml.safe_load(text) == plan
    loaded, _ = load_plan(path)
    assert loaded.name == "my-exp" and loaded.gate is None
    assert yaml.safe_load(plan_yaml(plan, rec, [])) == plan


def test_hybrid_with_limited_vram_tests_rag_and_qlora() -> None:
    plan, notes = plan_for(
        {
            "task_type": "domain_knowledge",
            "labelled_examples": 3000,
            "documents": 500,
            "knowledge_volatility": "weekly",
            "gpu_count": 1,
            "vram_gib_per_gpu": 24,
            "model_params_b": 8,
            "data_can_leave_premises": True,
            "hosted_model_allowed": True,
        }
    )
    types = [a["type"] for a in plan["arms"]]
    assert "lora" not in types and {"rag", "qlora"} <= set(types)
    harness_plan_model().model_validate(plan)


def test_the_plans_model_agrees_with_model_params_b() -> None:
    from advisor.errors import AdvisorInputError

    answers = {
        "task_type": "style_format",
        "labelled_examples": 500,
        "gpu_count": 1,
        "vram_gib_per_gpu": 16,
        "model_params_b": 8,
    }
    plan, _ = plan_for(answers)
    assert plan["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    with pytest.raises(AdvisorInputError) as info:
        plan_for(answers, model="smollm2-135m")  # a QLoRA plan for 8B must not train the 135M default
    assert (
        info.value.field == "model" and "0.135B" in info.value.message and "model_params_b is 8" in info.value.message
    )
    plan, notes = plan_for(answers, model="/models/my-finetune")  # size not in the name: kept, with a note
    assert plan["model"] == "/models/my-finetune" and any("could not tell the size" in n for n in notes)
    with pytest.raises(AdvisorInputError, match="no model of about 400B"):
        plan_for(answers | {"gpu_count": 8, "vram_gib_per_gpu": 80, "model_params_b": 400})


def test_unknown_model_size_uses_the_default_with_a_note() -> None:
    plan, notes = plan_for({"task_type": "style_format", "labelled_examples": 500})
    assert plan["model"] == "smollm2-135m" and any("model_params_b is unknown" in n for n in notes)
    harness_plan_model().model_validate(plan)
