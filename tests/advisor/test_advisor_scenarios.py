"""Expert scenarios written from the seed criteria (tests/fixtures/advisor_scenarios/*.yaml): each is
an answers file plus the option, method and rules a careful engineer expects, and the row of the
advisor's decision table (docs/advisor.md, "## The decision table") it encodes."""

from __future__ import annotations

import re
import string
import typing
from pathlib import Path
from typing import Any

import pytest

from advisor._rulebook import OPTIONS, AllOf, AnyOf, Clause, Not
from advisor.planner import write_plan
from advisor.questions import Answers, answers_from_dict
from advisor.rules import default_rules, recommend
from harness.base import YamlDoc

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = sorted((ROOT / "tests" / "fixtures" / "advisor_scenarios").glob("*.yaml"))


def scenario(path: Path) -> dict[str, Any]:
    return YamlDoc(path).data


def answers_of(path: Path) -> Answers:
    return answers_from_dict(scenario(path)["answers"])


def table_rows() -> dict[int, str]:
    text = (ROOT / "docs" / "advisor.md").read_text(encoding="utf-8")
    section = text.split("## The decision table", 1)[1].split("\n## ", 1)[0]
    return {int(m.group(1)): m.group(0) for m in re.finditer(r"^\| (\d+) \|.*$", section, re.M)}


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_scenario(path: Path) -> None:
    data = scenario(path)
    expect = data["expect"]
    rec = recommend(answers_of(path))
    fired = [f.id for f in rec.fired]
    assert (rec.primary, rec.method) == (expect["option"], expect["method"]), (rec.scores, fired)
    assert set(expect["fires"]) <= set(fired), fired
    assert (rec.tie_break is not None) == expect["tie"], (rec.tied, rec.scores)
    assert rec.arms[0] == rec.primary and not set(rec.arms) & set(rec.vetoed)
    assert 0 <= rec.confidence <= 1
    for f in rec.fired:
        assert "{" not in f.reason and "}" not in f.reason, f.reason


def test_scenarios_cover_options_unknowns_and_the_decision_table() -> None:
    assert len(FIXTURES) >= 40
    data = [scenario(p) for p in FIXTURES]
    assert {d["expect"]["option"] for d in data} == set(OPTIONS)
    assert {"qlora", "rag+qlora", "lora+dpo", "qlora+dpo", "dpo"} <= {d["expect"]["method"] for d in data}
    said_unknown = {k for d in data for k, v in d["answers"].items() if v == "unknown"}
    assert said_unknown == set(Answers.model_fields), set(Answers.model_fields) - said_unknown
    rows = table_rows()
    assert {d["row"] for d in data} == set(rows), set(rows) ^ {d["row"] for d in data}
    rule_ids = {r.id for r in default_rules().rules}
    for d in data:
        for rule in d["expect"]["fires"]:
            assert rule in rule_ids
            if rule != "cheap-baselines":
                assert f"`{rule}`" in rows[d["row"]] or any(f"`{rule}`" in r for r in rows.values()), rule


def test_every_rule_is_in_the_decision_table() -> None:
    table = "\n".join(table_rows().values())
    missing = [r.id for r in default_rules().rules if f"`{r.id}`" not in table and not r.id.startswith("audit-")]
    assert not missing


def test_demo_arms_are_exactly_lora_then_prompting_and_rag() -> None:
    rec = recommend(answers_of(next(p for p in FIXTURES if "demo" in p.stem)))
    assert rec.arms == ["lora", "prompting", "rag"] and rec.method == "lora"


# --- unknown answers ------------------------------------------------------------------------------

STYLE = {
    "task_type": "style_format",
    "labelled_examples": 300,
    "preference_pairs": 0,
    "documents": 0,
    "knowledge_volatility": "never",
    "data_can_leave_premises": False,
    "gpu_count": 0,
    "model_params_b": 0.135,
}


@pytest.mark.parametrize(
    "field,rule",
    [
        ("data_can_leave_premises", "self-hosted"),
        ("gpu_count", "no-gpu-small-model"),
        ("model_params_b", "no-gpu-small-model"),
    ],
)
def test_an_unknown_fact_adds_nothing_and_lowers_confidence(field: str, rule: str) -> None:
    known = recommend(Answers.model_validate(STYLE))
    unknown = recommend(Answers.model_validate(STYLE | {field: "unknown"}))
    assert unknown.scores["lora"] < known.scores["lora"]  # the reason it gave is gone, nothing replaces it
    assert unknown.confidence < known.confidence
    listed = {u.field: u for u in unknown.unknowns}
    assert listed[field].status == "unknown" and field in listed[field].text
    assert rule in {f.id for f in known.fired} and rule not in {f.id for f in unknown.fired}


def test_unanswered_privacy_and_hardware_print_no_privacy_or_cpu_reason() -> None:
    rec = recommend(Answers.model_validate({"task_type": "style_format", "labelled_examples": 300}))
    text = " ".join(f.reason for f in rec.fired)
    assert "self-hosted" not in text and "CPU" not in text and "privacy" not in text.lower()
    status = {u.field: u.status for u in rec.unknowns}
    assert status["hosted_model_allowed"] == "not answered" and status["gpu_count"] == "not answered"


def test_unknown_impacts_are_real_reruns() -> None:
    a = Answers.model_validate(
        {"task_type": "style_format", "labelled_examples": 300, "knowledge_volatility": "unknown"}
    )
    rec = recommend(a)
    vol = next(u for u in rec.unknowns if u.field == "knowledge_volatility")
    assert vol.would_change, vol.text
    for new, values in vol.would_change.items():
        for v in values:
            changed = Answers.model_validate(a.model_dump() | {"knowledge_volatility": v})
            assert recommend(changed, with_changers=False).primary == new != rec.primary


def test_implied_answers_are_listed_as_implied_not_unknown() -> None:
    rec = recommend(Answers.model_validate(STYLE))
    implied = {u.field: u for u in rec.unknowns if u.status == "implied"}
    assert implied["hosted_model_allowed"].value is False and implied["vram_gib_per_gpu"].value == 0.0


def test_a_tie_is_reported_with_its_tie_break() -> None:
    rec = recommend(
        Answers.model_validate(
            {"task_type": "style_format", "labelled_examples": 300, "gpu_count": 1, "model_params_b": 8}
        )
    )
    assert rec.tied == ["lora", "qlora"] and rec.primary == "lora" and rec.confidence < 0.5
    assert rec.tie_break and "broken toward lora" in rec.tie_break and "cheaper" in rec.tie_break


# --- hybrids scored fairly ------------------------------------------------------------------------


def test_self_hosting_rules_reward_the_hybrids_lora_alike() -> None:
    rules = {r.id: r for r in default_rules().rules}
    for rid in ("self-hosted", "no-gpu-small-model"):
        assert rules[rid].effect["lora"] == rules[rid].effect["hybrid_rag_lora"] > 0, rid
    for rid in ("monthly-knowledge", "volatile-knowledge", "realtime-knowledge"):
        assert rules[rid].effect["lora"] < 0 <= rules[rid].effect["hybrid_rag_lora"], rid
    assert "hybrid_rag_lora" not in rules["limited-vram"].effect and "hybrid_rag_lora" not in rules["limited-vram"].veto


# --- reasons state the team's figure and the threshold ----------------------------------------------


def _numeric_clauses(cond: Any) -> list[Clause]:
    if isinstance(cond, AllOf):
        return [c for part in cond.all for c in _numeric_clauses(part)]
    if isinstance(cond, AnyOf):
        return [c for part in cond.any for c in _numeric_clauses(part)]
    if isinstance(cond, Not):
        return _numeric_clauses(cond.not_)
    return [cond] if cond.op in ("lt", "le", "gt", "ge") else []


def test_every_reason_names_the_figure_and_the_threshold_it_tests() -> None:
    for rule in default_rules().rules:
        names = {name for _, name, _, _ in string.Formatter().parse(rule.reason) if name}
        for clause in _numeric_clauses(rule.when):
            v = clause.value
            shown = {f"{v:,}" if isinstance(v, int) else f"{v:g}", f"{v:.0%}", f"{v:g}"}
            assert clause.field in names, (rule.id, clause.field)
            assert any(s in rule.reason for s in shown), (rule.id, v)


def test_sources_are_public_documents() -> None:
    for rule in default_rules().rules:
        assert "tunegate" not in rule.source.lower() and "issue" not in rule.source.lower(), rule.id
        assert re.search(r"arXiv:\d{4}\.\d{4,5}|OpenAI|Hugging Face|huggingface\.co|IEEE", rule.source), rule.id


def test_fired_reason_uses_the_teams_number() -> None:
    rec = recommend(
        Answers.model_validate(
            {"task_type": "domain_knowledge", "labelled_examples": 5000, "knowledge_volatility": "never"}
        )
    )
    reason = next(f.reason for f in rec.fired if f.id == "domain-band")
    assert reason.startswith("5,000 labelled examples, at or above the 1,000")


# --- method choice and the plan ---------------------------------------------------------------------


def fixture(stem_part: str) -> tuple[Answers, Any]:
    a = answers_of(next(p for p in FIXTURES if stem_part in p.stem))
    return a, recommend(a, with_changers=False)


def test_qlora_plan_for_an_8b_model_trains_an_8b_model() -> None:
    a, rec = fixture("qlora-8b-16gib")
    notes: list[str] = []
    plan = write_plan(rec, a, "data/train.jsonl", notes=notes)
    assert plan["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert [x["type"] for x in plan["arms"]][:2] == ["baseline", "qlora"]
    pytest.importorskip("harness.plan").Plan.model_validate(plan)


def test_dpo_is_chained_after_the_sft_stage_the_rules_allow() -> None:
    a, rec = fixture("preferences-tight-vram")
    plan = write_plan(rec, a, "data/train.jsonl", preference_path="data/prefs.jsonl")
    arms = {x["name"]: x for x in plan["arms"]}
    assert arms["dpo"]["from_arm"] == "qlora" and "lora" not in arms
    pytest.importorskip("harness.plan").Plan.model_validate(plan)


def test_no_tuning_arm_below_the_rules_floor() -> None:
    a, rec = fixture("preferences-only")
    plan = write_plan(rec, a, "data/train.jsonl", preference_path="data/prefs.jsonl")
    types = [x["type"] for x in plan["arms"]]
    assert "dpo" in types and not {"lora", "qlora", "full"} & set(types)
    assert "from_arm" not in next(x for x in plan["arms"] if x["type"] == "dpo")
    for p in FIXTURES:
        answers = answers_of(p)
        if (answers.labelled_examples or 0) < 100:
            assert not {"lora", "qlora", "full", "hybrid_rag_lora"} & set(recommend(answers, with_changers=False).arms)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_changers_are_real_reruns(path: Path) -> None:
    """Every reported change, applied to the answers, really gives the stated new primary."""
    a = answers_of(path)
    rec = recommend(a)
    for c in rec.changers:
        values = str(c.value).split(" or ") if c.relation == "=" and isinstance(c.value, str) else [c.value]
        for v in values:
            changed = Answers.model_validate(a.model_dump() | {c.field: v} | c.also)
            assert recommend(changed, with_changers=False).primary == c.new_primary != rec.primary, c.text


def test_choice_fields_accept_unknown_in_the_answers_model() -> None:
    for name, info in Answers.model_fields.items():
        assert type(None) in typing.get_args(info.annotation), name
        assert getattr(Answers.model_validate({name: "unknown"}), name) is None
