"""LLM-as-judge: pairwise summaries, comparing two stored evaluations, and the judge_rubric suite scorer."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.base._errors import UserError
from harness.base._stats import paired_bootstrap, wilson
from harness.scorers._judge_client import _STORE, Judge, JudgeConfig
from harness.scorers._judge_verdicts import PairCase, PairVerdict, RubricCase, RubricVerdict
from harness.scorers._registry import scorer


@dataclass(frozen=True)
class PairwiseSummary:
    n: int  # cases asked
    judged: int  # cases with both orders answered
    failed: int
    a_wins: int
    b_wins: int
    ties: int  # judged ties plus order-dependent verdicts
    inconsistent: int  # verdicts that changed when the order was swapped
    position_consistency: float  # share of judged cases whose verdict survived the swap
    first_position_rate: float  # share of decisive single-order answers that picked whichever came first
    win_rate_b: float  # (b wins + ties / 2) / judged
    win_rate_b_lo: float  # 95% bootstrap interval over cases
    win_rate_b_hi: float
    decisive_rate_b: float  # b wins / (a wins + b wins)
    decisive_lo: float  # 95% Wilson interval
    decisive_hi: float


def summarize_pairwise(verdicts: Sequence[PairVerdict], *, resamples: int = 10_000, seed: int = 0) -> PairwiseSummary:
    judged = [v for v in verdicts if not v.failed]
    a = sum(v.outcome == "a" for v in judged)
    b = sum(v.outcome == "b" for v in judged)
    ties = sum(v.outcome == "tie" for v in judged)
    inconsistent = sum(not v.consistent for v in judged)
    singles = [(p, pos) for v in judged for p, pos in ((v.first, "a"), (v.second, "b")) if p != "tie"]
    first_pos = sum(p == pos for p, pos in singles)
    points = [{"b": 1.0, "tie": 0.5, "a": 0.0}[v.outcome] for v in judged]  # type: ignore[index]
    # B's points against an even split, resampled over cases: the same paired bootstrap as every other interval
    rate, lo, hi = paired_bootstrap([0.0] * len(points), points, resamples=resamples, seed=seed)
    d_lo, d_hi = wilson(b, a + b)
    return PairwiseSummary(
        n=len(verdicts),
        judged=len(judged),
        failed=len(verdicts) - len(judged),
        a_wins=a,
        b_wins=b,
        ties=ties,
        inconsistent=inconsistent,
        position_consistency=(len(judged) - inconsistent) / len(judged) if judged else math.nan,
        first_position_rate=first_pos / len(singles) if singles else math.nan,
        win_rate_b=rate,
        win_rate_b_lo=lo,
        win_rate_b_hi=hi,
        decisive_rate_b=b / (a + b) if a + b else math.nan,
        decisive_lo=d_lo,
        decisive_hi=d_hi,
    )


def compare_pairwise(
    judge: Judge, criteria: str, cases: Sequence[PairCase]
) -> tuple[list[PairVerdict], PairwiseSummary]:
    verdicts = judge.pairwise(criteria, cases)
    return verdicts, summarize_pairwise(verdicts)


def request_text(data: dict[str, Any]) -> str:
    """The user's request of a stored suite item (its prompt, or its conversation as text)."""
    if data.get("prompt") is not None:
        return str(data["prompt"])
    return "\n".join(f"{m['role']}: {m['content']}" for m in data.get("messages") or [])


def compare_evaluations(
    store: Any, judge: Judge, criteria: str, baseline_eval: int, candidate_eval: int, *, use_reference: bool = True
) -> tuple[list[PairVerdict], PairwiseSummary]:
    """Pairwise-judge two stored evaluations of the same suite version, item by item (A = baseline)."""
    base = {r["item"]: r for r in store.item_rows(baseline_eval)}
    cases = []
    for row in store.item_rows(candidate_eval):
        if row["item"] in base:
            ref = row["data"].get("reference")
            reference = (
                (ref if isinstance(ref, str) else json.dumps(ref)) if use_reference and ref is not None else None
            )
            cases.append(
                PairCase(row["item"], request_text(row["data"]), base[row["item"]]["output"], row["output"], reference)
            )
    if not cases:
        raise UserError(f"evaluations {baseline_eval} and {candidate_eval} have no items in common")
    return compare_pairwise(judge, criteria, cases)


class RubricScorer:
    """The `judge_rubric` scorer: the judge's 1-5 score per item (None when the judge failed).

    harness.evaluation calls `verdicts()` once for all items (batched, cached, recorded); calling the
    scorer on one item also works and gives NaN for a failed judgement."""

    binary = False

    def __init__(self, rubric: str, config: JudgeConfig, use_reference: bool) -> None:
        self.rubric, self.config, self.use_reference = rubric, config, use_reference
        self._judges: dict[int, Judge] = {}

    def judge(self) -> Judge:
        store = _STORE.get()
        key = id(store)
        if key not in self._judges:
            self._judges[key] = Judge(self.config, store=store)
        return self._judges[key]

    def case(self, output: str, item: Any) -> RubricCase:
        question = request_text(
            {"prompt": item.prompt, "messages": [m.model_dump() for m in item.messages] if item.messages else None}
        )
        ref = item.reference if self.use_reference else None
        reference = None if ref is None else ref if isinstance(ref, str) else json.dumps(ref, ensure_ascii=False)
        return RubricCase(item.id, question, output, reference)

    def verdicts(self, outputs: Sequence[str], items: Sequence[Any]) -> list[RubricVerdict]:
        return self.judge().rubric(self.rubric, [self.case(o, it) for o, it in zip(outputs, items)])

    def __call__(self, output: str, item: Any) -> float:
        v = self.verdicts([output], [item])[0]
        return math.nan if v.score is None else float(v.score)


@scorer("judge_rubric", binary=False)
def judge_rubric(rubric: str, judge: JudgeConfig | None = None, use_reference: bool = True) -> RubricScorer:
    """An LLM judge's 1-5 score against a written rubric (reasons kept; failures score None)."""
    if not rubric.strip():
        raise ValueError("judge_rubric needs a written 'rubric'")
    config = judge if isinstance(judge, JudgeConfig) else JudgeConfig.model_validate(judge or {})
    config.resolved()  # a missing endpoint or model fails when the suite loads, not after generation
    return RubricScorer(rubric, config, use_reference)


def is_judge(s: Any) -> bool:
    """Whether a built scorer is a judge (harness.evaluation scores those in one batch per suite)."""
    return isinstance(getattr(s, "fn", None), RubricScorer)


def score_items(built: Sequence[Any], results: Sequence[Any], items: Sequence[Any]) -> None:
    """Fill each judge scorer's score (None when failed) and reason into the ItemResults."""
    for s in built:
        if not is_judge(s):
            continue
        verdicts = s.fn.verdicts([r.output for r in results], items)
        for r, v in zip(results, verdicts):
            r.scores[s.name] = None if v.score is None else float(v.score)
            details = getattr(r, "details", None)
            if isinstance(details, dict):
                details[s.name] = v.detail
