"""Scenarios from the issue's guidance: each states the team's answers and what a careful engineer
would recommend (primary, and which options must / must not be among the arms tested)."""
from __future__ import annotations

from typing import Any

import pytest

from advisor.questions import Answers
from advisor.rules import recommend


def cloud(**kw: Any) -> dict[str, Any]:
    """A team that may send data out and use a hosted model."""
    return {"data_can_leave_premises": True, "hosted_model_allowed": True} | kw


def onprem(**kw: Any) -> dict[str, Any]:
    return {"data_can_leave_premises": False, "hosted_model_allowed": False} | kw


GPU80_8B = {"gpu_count": 1, "vram_gib_per_gpu": 80, "model_params_b": 8}
GPU24_1B = {"gpu_count": 1, "vram_gib_per_gpu": 24, "model_params_b": 1.2}

# id, answers, expected primary, must be in arms, must not be in arms
SCENARIOS: list[tuple[str, dict[str, Any], str, set[str], set[str]]] = [
    ("tiny-data-start-with-prompting", cloud(task_type="style_format", labelled_examples=40, **GPU24_1B),
     "prompting", {"rag"}, {"lora", "full"}),
    ("tiny-data-strict-privacy", onprem(task_type="style_format", labelled_examples=30, **GPU24_1B),
     "prompting", set(), {"lora", "qlora", "full"}),
    ("no-examples-at-all", cloud(task_type="classification_extraction", labelled_examples=0),
     "prompting", {"rag"}, {"lora", "full", "dpo"}),
    ("style-300-examples-gpu", cloud(task_type="style_format", labelled_examples=300, **GPU24_1B),
     "lora", {"prompting", "rag"}, {"qlora", "dpo"}),
    ("demo-extraction-cpu-onprem", onprem(task_type="classification_extraction", labelled_examples=300,
                                          knowledge_volatility="never", latency_budget_ms=200, gpu_count=0,
                                          model_params_b=0.135, quality_target=0.9),
     "lora", {"prompting", "rag"}, {"qlora", "full", "dpo", "hybrid_rag_lora"}),
    ("volatile-facts-open-qa", cloud(task_type="open_qa", documents=5000, knowledge_volatility="daily"),
     "rag", {"prompting"}, {"lora", "full"}),
    ("volatile-facts-strict-latency", onprem(task_type="open_qa", documents=5000, knowledge_volatility="daily",
                                             latency_budget_ms=150, **GPU80_8B),
     "rag", set(), {"full"}),
    ("domain-skills-plus-weekly-facts", cloud(task_type="domain_knowledge", labelled_examples=3000, documents=2000,
                                              knowledge_volatility="weekly", **GPU80_8B),
     "hybrid_rag_lora", {"rag", "lora"}, {"qlora"}),
    ("stable-domain-1k-10k-band", cloud(task_type="domain_knowledge", labelled_examples=3000, documents=500,
                                        knowledge_volatility="yearly", **GPU80_8B),
     "lora", {"rag", "prompting"}, {"hybrid_rag_lora", "qlora"}),
    ("domain-few-examples-with-docs", cloud(task_type="domain_knowledge", labelled_examples=300, documents=800,
                                            **GPU24_1B),
     "rag", {"prompting"}, {"full"}),
    ("documents-but-no-labels", cloud(task_type="domain_knowledge", documents=500, labelled_examples=0),
     "rag", {"prompting"}, {"lora", "qlora", "full", "hybrid_rag_lora"}),
    ("plenty-of-preference-pairs", cloud(task_type="style_format", labelled_examples=2000,
                                         preference_pairs=20000, **GPU80_8B),
     "dpo", {"lora"}, {"qlora"}),
    ("few-labels-some-preferences-no-sft", onprem(task_type="style_format", labelled_examples=30,
                                                  preference_pairs=100, **GPU24_1B),
     "prompting", set(), {"lora", "qlora", "full"}),
    ("preference-pairs-only", cloud(task_type="style_format", labelled_examples=0, preference_pairs=5000,
                                    **GPU80_8B),
     "dpo", set(), set()),
    ("few-preference-pairs-still-an-arm", cloud(task_type="style_format", labelled_examples=400,
                                                preference_pairs=200, **GPU24_1B),
     "lora", {"dpo"}, set()),
    ("no-gpu-small-model", cloud(task_type="style_format", labelled_examples=400, gpu_count=0,
                                 model_params_b=0.36),
     "lora", {"prompting"}, {"qlora"}),
    ("no-gpu-large-model", cloud(task_type="style_format", labelled_examples=400, gpu_count=0, model_params_b=8),
     "prompting", set(), {"qlora", "full"}),
    ("limited-vram-16gib-8b", cloud(task_type="style_format", labelled_examples=500, gpu_count=1,
                                    vram_gib_per_gpu=16, model_params_b=8),
     "qlora", {"prompting"}, {"full", "lora"}),
    ("limited-vram-24gib-8b", onprem(task_type="classification_extraction", labelled_examples=800, gpu_count=1,
                                     vram_gib_per_gpu=24, model_params_b=8),
     "qlora", set(), {"full"}),
    ("nothing-fits-70b-on-24gib", cloud(task_type="style_format", labelled_examples=500, gpu_count=1,
                                        vram_gib_per_gpu=24, model_params_b=70),
     "prompting", {"rag"}, {"qlora", "lora", "full"}),
    ("plenty-vram-prefers-lora-over-qlora", cloud(task_type="style_format", labelled_examples=500, **GPU80_8B),
     "lora", set(), {"qlora"}),
    ("10k-plus-examples-full-fine-tune", cloud(task_type="classification_extraction", labelled_examples=50000,
                                               quality_target=0.95, gpu_count=8, vram_gib_per_gpu=80,
                                               model_params_b=8),
     "full", {"lora"}, {"qlora"}),
    ("10k-plus-examples-on-cpu", cloud(task_type="classification_extraction", labelled_examples=20000,
                                       gpu_count=0, model_params_b=0.135),
     "lora", {"full"}, {"qlora"}),
    ("10k-plus-examples-full-does-not-fit", cloud(task_type="classification_extraction", labelled_examples=50000,
                                                  gpu_count=1, vram_gib_per_gpu=24, model_params_b=8),
     "qlora", set(), {"full"}),
    ("reasoning-few-examples", cloud(task_type="reasoning", labelled_examples=300, **GPU80_8B),
     "prompting", set(), set()),
    ("reasoning-distillation-set", cloud(task_type="reasoning", labelled_examples=5000, **GPU80_8B),
     "lora", {"prompting"}, set()),
    ("summarization-reference-summaries", cloud(task_type="summarization", labelled_examples=800, **GPU24_1B),
     "lora", {"prompting"}, set()),
    ("monthly-facts-style-onprem", onprem(task_type="style_format", labelled_examples=600,
                                          knowledge_volatility="monthly", **GPU24_1B),
     "lora", {"rag", "hybrid_rag_lora"}, set()),
    ("style-with-weekly-facts-hybrid", cloud(task_type="style_format", labelled_examples=1000,
                                             knowledge_volatility="weekly", **GPU80_8B),
     "hybrid_rag_lora", {"rag"}, set()),
    ("tight-cost-budget", cloud(task_type="classification_extraction", labelled_examples=200,
                                cost_budget_usd_per_1k_requests=0.2, **GPU24_1B),
     "lora", {"prompting"}, set()),
]


@pytest.mark.parametrize("answers,primary,must,must_not", [s[1:] for s in SCENARIOS], ids=[s[0] for s in SCENARIOS])
def test_scenario(answers: dict[str, Any], primary: str, must: set[str], must_not: set[str]) -> None:
    rec = recommend(Answers.model_validate(answers))
    assert rec.primary == primary, [(f.id, f.effect) for f in rec.fired]
    assert rec.arms[0] == primary
    assert must <= set(rec.arms), rec.arms
    assert not (must_not & set(rec.arms)), rec.arms
    assert 0.5 <= rec.confidence <= 1.0
    assert rec.fired, "a recommendation always cites the rules that made it"


def test_scenario_count() -> None:
    assert len(SCENARIOS) >= 25 and len({s[0] for s in SCENARIOS}) == len(SCENARIOS)


def test_demo_arms_are_exactly_lora_then_prompting_and_rag() -> None:
    rec = recommend(Answers.model_validate(SCENARIOS[4][1]))
    assert rec.arms == ["lora", "prompting", "rag"]


def test_tiny_data_changer_names_the_threshold() -> None:
    rec = recommend(Answers.model_validate(cloud(task_type="style_format", labelled_examples=40, **GPU24_1B)))
    texts = [c.text for c in rec.changers]
    assert "if labelled_examples were >= 100 (now 40), primary would be lora" in texts, texts


def test_no_gpu_large_model_changer_is_a_smaller_model() -> None:
    rec = recommend(Answers.model_validate(cloud(task_type="style_format", labelled_examples=400, gpu_count=0,
                                                 model_params_b=8)))
    by_field = {c.field: c for c in rec.changers}
    assert by_field["model_params_b"].relation == "<="
    assert by_field["model_params_b"].value <= 1.5
    assert by_field["model_params_b"].new_primary == "lora"


@pytest.mark.parametrize("answers", [s[1] for s in SCENARIOS], ids=[s[0] for s in SCENARIOS])
def test_changers_are_real_reruns(answers: dict[str, Any]) -> None:
    """Every reported change, applied to the answers, really gives the stated new primary."""
    a = Answers.model_validate(answers)
    rec = recommend(a)
    for c in rec.changers:
        values = str(c.value).split(" or ") if c.relation == "=" and isinstance(c.value, str) else [c.value]
        for v in values:
            changed = Answers.model_validate(a.model_dump() | {c.field: v} | c.also)
            assert recommend(changed, with_changers=False).primary == c.new_primary != rec.primary, c.text


def test_gpu_changer_for_a_cpu_team_brings_its_vram_along() -> None:
    rec = recommend(Answers.model_validate(cloud(task_type="style_format", labelled_examples=400, gpu_count=0,
                                                 model_params_b=8)))
    gpu = next(c for c in rec.changers if c.field == "gpu_count")
    assert gpu.also == {"vram_gib_per_gpu": 24.0} and gpu.new_primary == "qlora"
    assert gpu.text == "if gpu_count were >= 1 with vram_gib_per_gpu 24 (now 0), primary would be qlora"


def test_confidence_grows_with_margin() -> None:
    close = recommend(Answers.model_validate(cloud(task_type="domain_knowledge", labelled_examples=3000,
                                                   documents=500, **GPU80_8B)))
    clear = recommend(Answers.model_validate(SCENARIOS[4][1]))
    assert close.confidence < clear.confidence
