"""Gate decisions and the promotion history."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from harness.gate._closeness import phrase
from harness.gate._numerics import recorded
from harness.store._store import Store
from harness.store._tables import (
    GateDecision,
    Promotion,
    Run,
    Trial,
)


@dataclass(frozen=True)
class RuleView:
    name: str
    result: str  # pass | FAIL | error
    message: str
    evidence: dict[str, Any]
    flips_to_change: int | None = None  # fewest item changes that flip the rule's result


@dataclass(frozen=True)
class DecisionView:
    id: int
    verdict: str
    exit_code: int
    candidate: str
    baseline: str | None
    policy_path: str
    policy_name: str
    reason: str
    created_at: str
    rules: list[RuleView]
    promoted: bool
    flips_to_change: int | None = None  # fewest item changes that flip the verdict (older decisions: None)
    numerics: dict[str, dict[str, str]] = field(default_factory=dict)  # candidate / baseline -> key -> value
    numerics_differ: list[str] = field(default_factory=list)

    @property
    def numerics_recorded(self) -> bool:
        """Whether either side's numerics are known (decisions on rows scored before the store kept them: no)."""
        return recorded(self.numerics)

    @property
    def closeness(self) -> str:
        """`PASS — 1 item from FAIL`, or the verdict alone where the decision has no count."""
        if self.verdict == "error":
            return "ERROR"
        if self.flips_to_change is None:
            return {"promote": "PASS", "reject": "FAIL"}.get(self.verdict, self.verdict)
        return phrase(self.verdict, self.flips_to_change)


@dataclass(frozen=True)
class PromotionView:
    id: int
    kind: str  # promote | rollback
    trial: str
    previous: str | None
    decision_id: int | None
    verdict: str | None
    promoted_by: str
    reason: str
    created_at: str
    current: bool


def _trial_labels(s: Any, ids: set[int]) -> dict[int, str]:
    ids = {i for i in ids if i is not None}
    if not ids:
        return {}
    rows = s.execute(
        select(Trial.id, Trial.name, Run.id, Run.name).join(Run, Run.id == Trial.run_id).where(Trial.id.in_(ids))
    ).all()
    return {tid: f"{rname}#{rid}/{tname}" for tid, tname, rid, rname in rows}


def gate_decisions(store: Store, run_id: int | None = None, limit: int = 200) -> list[DecisionView]:
    """Gate decisions, newest first (those about the run's trials when `run_id` is given)."""
    with store.reading() as s:
        q = select(GateDecision).order_by(GateDecision.id.desc()).limit(limit)
        if run_id is not None:
            q = q.join(Trial, Trial.id == GateDecision.candidate_trial_id).where(Trial.run_id == run_id)
        decisions = list(s.scalars(q))
        promoted = set(s.scalars(select(Promotion.decision_id)))
        labels = _trial_labels(s, {d.candidate_trial_id for d in decisions} | {d.baseline_trial_id for d in decisions})
    out = []
    for d in decisions:
        rules = [
            RuleView(
                str(r.get("name", "")),
                "error" if r.get("error") else ("pass" if r.get("passed") else "FAIL"),
                str(r.get("message", "")),
                dict(r.get("evidence") or {}),
                r.get("flips_to_change"),
            )
            for r in d.rules or []
        ]
        numerics = dict(d.numerics or {})
        differ = [str(k) for k in numerics.pop("differ", None) or []]
        out.append(
            DecisionView(
                d.id,
                d.verdict,
                d.exit_code,
                labels.get(d.candidate_trial_id, "?"),
                labels.get(d.baseline_trial_id) if d.baseline_trial_id else None,
                d.policy_path,
                str((d.policy or {}).get("name", "")),
                d.reason,
                d.created_at,
                rules,
                d.id in promoted,
                d.flips_to_change,
                numerics,
                differ,
            )
        )
    return out


def promotion_history(store: Store) -> list[PromotionView]:
    """Every promotion, newest first; the first one is the model in production."""
    with store.reading() as s:
        proms = list(s.scalars(select(Promotion).order_by(Promotion.id.desc())))
        verdicts = dict(
            s.execute(
                select(GateDecision.id, GateDecision.verdict).where(
                    GateDecision.id.in_({p.decision_id for p in proms if p.decision_id})
                )
            ).all()
        )
        labels = _trial_labels(s, {p.trial_id for p in proms} | {p.previous_trial_id for p in proms})
    return [
        PromotionView(
            p.id,
            p.kind or "promote",
            labels.get(p.trial_id, f"t{p.trial_id}"),
            labels.get(p.previous_trial_id) if p.previous_trial_id else None,
            p.decision_id,
            verdicts.get(p.decision_id) if p.decision_id else None,
            p.promoted_by,
            p.reason or "",
            p.created_at,
            i == 0,
        )
        for i, p in enumerate(proms)
    ]
