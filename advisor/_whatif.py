"""What-if analysis: re-run the rules on changed answers to find what would change the primary.

`changers` change one known answer at a time and keep the smallest change that moves the primary;
`unknown_impacts` try the values of each unknown (or implied) answer. Numeric answers are tried at the rule
book's thresholds (and one step either side) and on a ladder of typical values (`LADDERS`); answers that must
change together to stay valid change together (`_companions`).
"""

from __future__ import annotations

import math
import typing
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from advisor._ranking import facts_for, primary_option, score_options
from advisor._rulebook import AllOf, AnyOf, Not, RuleBook
from advisor.questions import NO_LIMIT, Answers, implied_by, show


class Changer(BaseModel):
    field: str
    current: Any
    value: Any
    relation: Literal["=", ">=", "<="]
    new_primary: str
    text: str
    also: dict[str, Any] = Field(default_factory=dict)  # companion changes that keep the answers valid


class UnknownImpact(BaseModel):
    """An answer the engine did not have, and what filling it in would do."""

    field: str
    status: Literal["unknown", "not answered", "implied"]
    value: Any = None  # the implied value, for status 'implied'
    would_change: dict[str, list[Any]] = Field(default_factory=dict)  # new primary -> the values that give it
    text: str


LADDERS: dict[str, tuple[float, ...]] = {
    "gpu_count": (0, 1, 2, 4, 8),
    "vram_gib_per_gpu": (8, 12, 16, 24, 40, 48, 80, 141),
    "model_params_b": (0.135, 0.36, 0.5, 1.0, 1.5, 3.0, 7.0, 8.0, 13.0, 32.0, 70.0),
    "labelled_examples": (0, 50, 300, 3000, 30000),
    "preference_pairs": (0, 200, 5000),
    "documents": (0, 1000),
    "latency_budget_ms": (200, 1000, 5000),
    "requests_per_day": (100, 10_000, 1_000_000),
    "cost_budget_usd_per_1k_requests": (0.2, 5.0),
    "quality_target": (0.7, 0.95),
}


def _thresholds(book: RuleBook) -> dict[str, set[float]]:
    out: dict[str, set[float]] = {}

    def walk(cond: Any) -> None:
        if isinstance(cond, AllOf):
            for c in cond.all:
                walk(c)
        elif isinstance(cond, AnyOf):
            for c in cond.any:
                walk(c)
        elif isinstance(cond, Not):
            walk(cond.not_)
        elif cond.op in ("lt", "le", "gt", "ge"):
            out.setdefault(cond.field, set()).add(float(cond.value))

    for rule in book.rules:
        walk(rule.when)
    return out


def _numeric_candidates(name: str, current: float | None, thresholds: Iterable[float], integer: bool) -> list[float]:
    values: set[float] = set(LADDERS.get(name, ()))
    for t in thresholds:
        step = 1.0 if integer else max(abs(t) * 0.01, 0.01)
        values.update({t - step, t, t + step})
    if integer:
        values = {float(math.floor(v)) if v >= 0 else -1.0 for v in values}
    return sorted(v for v in values if v >= 0 and v != current)


def _kind(name: str) -> tuple[str, tuple[Any, ...]]:
    """('bool', ()), ('choice', choices) or ('int'|'float', ()) for an answer field."""
    args = [a for a in typing.get_args(Answers.model_fields[name].annotation) if a is not type(None)]
    literals = [c for a in args if typing.get_origin(a) is Literal for c in typing.get_args(a)]
    if bool in args:
        return "bool", ()
    if int in args:
        return "int", ()
    if float in args:
        return "float", tuple(literals)
    return "choice", tuple(literals)


class _Rerun:
    """Re-runs the rules with one answer changed."""

    def __init__(self, answers: Answers, audit_facts: dict[str, Any] | None, book: RuleBook) -> None:
        self.base, self.audit_facts, self.book = answers.model_dump(), audit_facts, book

    def primary_with(self, field: str, value: Any, also: dict[str, Any] | None = None) -> str | None:
        try:
            changed = Answers.model_validate(self.base | {field: value} | (also or {}))
        except ValidationError:
            return None
        scores, vetoed, _ = score_options(changed, facts_for(changed, self.audit_facts), self.book)
        return primary_option(scores, vetoed, self.book)


def unknown_impacts(
    answers: Answers, audit_facts: dict[str, Any] | None, book: RuleBook, primary: str
) -> list[UnknownImpact]:
    """For each unknown (or implied) answer: which values would change the primary, and to what."""
    rerun, thresholds = _Rerun(answers, audit_facts, book), _thresholds(book)
    implied = implied_by(answers)
    out: list[UnknownImpact] = []
    for name in Answers.model_fields:
        value = getattr(answers, name)
        if name in implied and name not in answers.model_fields_set and value == implied[name][1]:
            out.append(
                UnknownImpact(
                    field=name,
                    status="implied",
                    value=value,
                    text=f"{name}: {show(value)}, implied because {implied[name][0]}",
                )
            )
            continue
        if value is not None:
            continue
        kind, choices = _kind(name)
        if kind == "bool":
            candidates: list[Any] = [True, False]
        elif kind == "choice":
            candidates = list(choices)
        else:
            candidates = [
                int(v) if kind == "int" else v
                for v in _numeric_candidates(name, None, thresholds.get(name, ()), kind == "int")
            ]
            candidates += list(choices)
        would: dict[str, list[Any]] = {}
        for candidate in candidates:
            new = rerun.primary_with(name, candidate, _companions(name, candidate, rerun.base))
            if new and new != primary:
                would.setdefault(new, []).append(candidate)
        status: Literal["unknown", "not answered"] = "unknown" if name in answers.model_fields_set else "not answered"
        if would:
            effect = "; ".join(f"{_values_text(vals, kind)} would make it {new}" for new, vals in would.items())
        else:
            effect = "no value would change the primary"
        out.append(UnknownImpact(field=name, status=status, would_change=would, text=f"{name} ({status}): {effect}"))
    return out


def _values_text(values: list[Any], kind: str) -> str:
    if kind in ("int", "float") and len(values) > 1 and all(isinstance(v, (int, float)) for v in values):
        low, high = min(values), max(values)
        return f"a value from {show(low)} to {show(high)} (tried {', '.join(show(v) for v in values)})"
    return " or ".join(show(v) for v in values)


def changers(answers: Answers, audit_facts: dict[str, Any] | None, book: RuleBook, primary: str) -> list[Changer]:
    """Change one known answer at a time, re-run the rules, and keep the smallest change that moves the
    primary (unknown answers are covered by `unknown_impacts`)."""
    thresholds = _thresholds(book)
    rerun = _Rerun(answers, audit_facts, book)
    base = rerun.base
    found: list[Changer] = []
    for name in Answers.model_fields:
        current = base[name]
        if current is None or (name in implied_by(answers) and name not in answers.model_fields_set):
            continue
        kind, choices = _kind(name)
        if kind == "bool":
            new = rerun.primary_with(name, not current, _companions(name, not current, base))
            if new and new != primary:
                found.append(_changer(name, current, not current, "=", new, _companions(name, not current, base)))
        elif kind == "choice":
            by_primary: dict[str, list[str]] = {}
            for choice in choices:
                new = rerun.primary_with(name, choice) if choice != current else None
                if new and new != primary:
                    by_primary.setdefault(new, []).append(choice)
            for new, values in by_primary.items():
                found.append(_changer(name, current, " or ".join(values), "=", new))
        else:
            integer = kind == "int"
            cands = _numeric_candidates(
                name, current if current != NO_LIMIT else None, thresholds.get(name, ()), integer
            )
            cur = current if isinstance(current, (int, float)) else math.inf
            ups = [v for v in cands if v > cur]
            downs = sorted((v for v in cands if v < cur), reverse=True)
            for direction, steps in ((">=", ups), ("<=", downs)):
                for v in steps:
                    value = int(v) if integer else v
                    new = rerun.primary_with(name, value, _companions(name, value, base))
                    if new and new != primary:
                        found.append(
                            _changer(
                                name,
                                current,
                                value,
                                direction,
                                new,  # type: ignore[arg-type]
                                _companions(name, value, base),
                            )
                        )
                        break
    return found


TYPICAL_VRAM_GIB = 24.0


def _companions(field: str, value: Any, base: dict[str, Any]) -> dict[str, Any]:
    """Answers that must change along with `field` for the answers to stay valid."""
    if field == "gpu_count":
        if value == 0:
            return {"vram_gib_per_gpu": 0.0}
        if base["gpu_count"] == 0:
            return {"vram_gib_per_gpu": TYPICAL_VRAM_GIB}
    if field == "data_can_leave_premises" and value is False:
        also: dict[str, Any] = {"hosted_model_allowed": False}
        if base.get("deployment_target") == "hosted":
            also["deployment_target"] = "on_premises"
        return also
    return {}


def _changer(
    field: str,
    current: Any,
    value: Any,
    relation: Literal["=", ">=", "<="],
    new: str,
    also: dict[str, Any] | None = None,
) -> Changer:
    with_ = "".join(f" with {k} {v:g}" if isinstance(v, float) else f" with {k} {v}" for k, v in (also or {}).items())
    text = (
        f"if {field} were {'' if relation == '=' else relation + ' '}{value}{with_} (now {show(current)}), "
        f"primary would be {new}"
    )
    return Changer(
        field=field, current=current, value=value, relation=relation, new_primary=new, text=text, also=also or {}
    )
