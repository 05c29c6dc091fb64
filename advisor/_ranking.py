"""Scoring the options: the facts the rules see, the rules that fire on them, and the options ranked by score.

A rule's reason may name answers and facts in braces (`{labelled_examples}`); the output shows the team's own
figures there (`render_reason`). Each option's score is the sum of the effects of the rules that fired; vetoed
options are out. The primary is the best-scoring option; equal scores are ordered by the rule book's named
`tie_break` order.
"""

from __future__ import annotations

import string
from typing import Any

from pydantic import BaseModel

from advisor._rulebook import FACTS, OPTIONS, RuleBook, holds
from advisor.questions import NO_LIMIT, Answers, show
from harness.plan import Method, estimate_training_memory


class _Figures(string.Formatter):
    """Formats the team's figures into a reason: 5,000; 0.9; yes/no; unknown."""

    def format_field(self, value: Any, format_spec: str) -> str:
        if value is None:
            return "unknown"
        if format_spec and isinstance(value, (int, float)) and not isinstance(value, bool):
            return format(value, format_spec)
        if isinstance(value, bool) or value == NO_LIMIT:
            return show(value)
        if isinstance(value, int):
            return f"{value:,}"
        if isinstance(value, float):
            return f"{value:,.0f}" if value >= 1000 and value.is_integer() else f"{value:g}"
        return str(value).replace("_", " ")


def render_reason(template: str, env: dict[str, Any]) -> str:
    return _Figures().vformat(template, (), env)


def memory_facts(answers: Answers, seq_len: int = 1024) -> dict[str, Any]:
    """Whether LoRA / QLoRA / full fine-tuning of the stated model fits the stated GPUs (None when the
    model size, the GPU count or the GPU memory is unknown, or there is no GPU)."""
    unknown: dict[str, Any] = {"lora_fits_gpu": None, "qlora_fits_gpu": None, "full_fits_gpu": None}
    if answers.model_params_b is None:
        return unknown | {"est_lora_gib": None, "est_qlora_gib": None, "est_full_gib": None}
    n = answers.model_params_b * 1e9
    methods: tuple[Method, ...] = ("lora", "qlora", "full")
    est = {m: estimate_training_memory(n, m, seq_len=seq_len, batch_size=4, grad_checkpointing=True) for m in methods}
    facts: dict[str, Any] = {f"est_{m}_gib": round(e.total_gib, 2) for m, e in est.items()}
    if not answers.gpu_count or answers.vram_gib_per_gpu is None:
        return facts | unknown
    vram = answers.vram_gib_per_gpu
    full = est["full"].breakdown
    sharded = sum(full[k] for k in ("weights", "gradients", "optimizer_states")) / answers.gpu_count
    unsharded = est["full"].total_gib - sum(full[k] for k in ("weights", "gradients", "optimizer_states"))
    return facts | {
        "lora_fits_gpu": est["lora"].fits(vram),
        "qlora_fits_gpu": est["qlora"].fits(vram),
        "full_fits_gpu": sharded + unsharded <= vram,
    }


class FiredRule(BaseModel):
    id: str
    reason: str  # with the team's figures filled in
    source: str
    effect: dict[str, float]
    veto: list[str]


def _env(answers: Answers, facts: dict[str, Any]) -> dict[str, Any]:
    return answers.model_dump() | facts


def score_options(
    answers: Answers, facts: dict[str, Any], book: RuleBook
) -> tuple[dict[str, float], set[str], list[FiredRule]]:
    env = _env(answers, facts)
    scores = {o: 0.0 for o in OPTIONS}
    vetoed: set[str] = set()
    fired = []
    for rule in book.rules:
        if holds(rule.when, env):
            for opt, delta in rule.effect.items():
                scores[opt] += delta
            vetoed.update(rule.veto)
            fired.append(
                FiredRule(
                    id=rule.id,
                    reason=render_reason(rule.reason, env),
                    source=rule.source,
                    effect={str(k): v for k, v in rule.effect.items()},
                    veto=list(rule.veto),
                )
            )
    return scores, vetoed, fired


def ranked_options(scores: dict[str, float], vetoed: set[str], book: RuleBook) -> list[str]:
    """Live options, best first; equal scores in the rule book's tie_break order."""
    order = book.tie_break
    return sorted((o for o in OPTIONS if o not in vetoed), key=lambda o: (-scores[o], order.index(o)))


def primary_option(scores: dict[str, float], vetoed: set[str], book: RuleBook) -> str:
    return ranked_options(scores, vetoed, book)[0]


def method_for(primary: str, scores: dict[str, float], vetoed: set[str]) -> str:
    """How to build the primary. The LoRA half of a hybrid, and the supervised stage before DPO, use
    LoRA unless the memory rules vetoed it (then QLoRA); DPO runs alone when supervised tuning is
    vetoed (too few labelled examples)."""
    adapter = next((m for m in ("lora", "qlora") if m not in vetoed), None)
    if primary == "hybrid_rag_lora":
        return f"rag+{adapter or 'lora'}"
    if primary == "dpo":
        sft = max(
            (m for m in ("lora", "qlora", "full") if m not in vetoed),
            default=None,
            key=lambda m: (scores[m], m == adapter),
        )
        return f"{sft}+dpo" if sft else "dpo"
    return primary


def facts_for(answers: Answers, audit_facts: dict[str, Any] | None) -> dict[str, Any]:
    base: dict[str, Any] = {name: None for name in FACTS} | {"audited": False}
    base |= audit_facts or {}
    prefs, labels = answers.preference_pairs, answers.labelled_examples
    if prefs is not None and labels is not None:
        base["preference_share"] = round(prefs / (prefs + labels), 4) if prefs + labels else 0.0
    return base | memory_facts(answers)
