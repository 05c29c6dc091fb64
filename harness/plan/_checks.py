"""Consistency checks across a plan's parts (sweep params, arm dependencies, data each arm needs)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import ValidationError

from harness.base._kinds import NEEDS_TRAIN_DATA, SFT
from harness.plan._parts import DpoArm, Loc, Range
from harness.plan._sweep import expand, trial_arms

if TYPE_CHECKING:
    from harness.plan._schema import Plan


def _sweep_fields(plan: Plan, names: list[str]) -> list[tuple[Loc, str]]:
    """The sweep's arm names and params, each problem found."""
    sweep = plan.sweep
    assert sweep is not None
    problems: list[tuple[Loc, str]] = [
        (("sweep", "arm"), f"'{arm_name}' is not an arm of this plan (arms: {', '.join(names)})")
        for arm_name in sweep.arms
        if arm_name not in names
    ]
    swept = [a for a in plan.arms if a.name in sweep.arms]
    for key, value in sweep.params.items():
        loc = ("sweep", "params", key)
        if key in ("name", "type"):
            problems.append((loc, f"'{key}' cannot be swept"))
        for arm in swept:
            if key not in type(arm).model_fields:
                fields = ", ".join(f for f in type(arm).model_fields if f not in ("name", "type"))
                problems.append((loc, f"'{key}' is not a field of {arm.type} arm '{arm.name}' (fields: {fields})"))
                break
        if isinstance(value, dict):
            if sweep.method == "grid":
                problems.append((loc, "a range ({low, high}) needs method: random; grid search takes a list"))
            else:
                try:
                    Range.model_validate(value)
                except ValidationError as exc:
                    problems += [(loc + tuple(err["loc"]), err["msg"]) for err in exc.errors()]
        elif not isinstance(value, list) or not value:
            problems.append((loc, "give a non-empty list of values (or, for method: random, {low, high})"))
    if sweep.method == "random" and sweep.n is None and any(isinstance(v, dict) for v in sweep.params.values()):
        problems.append((("sweep", "n"), "random search over a range needs n (how many trials)"))
    return problems


def _sweep_trials(plan: Plan) -> list[tuple[Loc, str]]:
    """The trials the sweep expands into: each value valid for its arm, no two trials of one name."""
    sweep = plan.sweep
    assert sweep is not None
    try:
        expanded = expand(plan)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = err["loc"][0] if err["loc"] else None
        loc = ("sweep", "params", key) if key in sweep.params else ("sweep", "params")
        value = err.get("input")
        return [(loc, f"value {value!r}: {err['msg']}")]
    seen: set[str] = set()
    for _, arm in expanded:
        if arm.name in seen:
            return [
                (
                    ("sweep", "params"),
                    f"two trials would both be named '{arm.name}'; rename an arm or change the swept values",
                )
            ]
        seen.add(arm.name)
    return []


def _dpo_parents(plan: Plan) -> list[tuple[Loc, str]]:
    """Each DPO arm's `from_arm`: an SFT arm or trial of the plan, named as a trial when that arm is swept."""
    expanded = trial_arms(plan)
    by_name = {a.name: a for a in expanded}
    swept = set(plan.sweep.arms) if plan.sweep else set()
    problems: list[tuple[Loc, str]] = []
    for i, arm in enumerate(plan.arms):
        if not isinstance(arm, DpoArm) or not arm.from_arm:
            continue
        loc: Loc = ("arms", i, "from_arm")
        parent = by_name.get(arm.from_arm)
        if arm.name in swept:
            problems.append((loc, "a dpo arm with from_arm cannot itself be swept"))
        elif arm.from_arm in swept:
            options = [a.name for a in expanded if a.name.startswith(arm.from_arm + "-")]
            problems.append(
                (loc, f"'{arm.from_arm}' is swept into {len(options)} trials; name one of them: {', '.join(options)}")
            )
        elif parent is None:
            problems.append((loc, f"'{arm.from_arm}' is not an arm or trial of this plan"))
        elif parent.type not in SFT:
            problems.append((loc, f"'{arm.from_arm}' is a {parent.type} arm; DPO continues from a {'/'.join(SFT)} arm"))
    return problems


def cross_check(plan: Plan) -> list[tuple[Loc, str]]:
    """Problems no single field shows, every one found: duplicate arm names, data an arm needs, the sweep's arms and
    params; then, once those pass (they need unique names and a valid sweep), the trials the sweep expands into and
    each DPO arm's parent."""
    names = [a.name for a in plan.arms]
    problems: list[tuple[Loc, str]] = [
        (("arms", i, "name"), f"arm names must be unique; '{arm.name}' is already arms[{names.index(arm.name)}]")
        for i, arm in enumerate(plan.arms)
        if arm.name in names[:i]
    ]
    for i, arm in enumerate(plan.arms):
        if arm.type in NEEDS_TRAIN_DATA and not plan.data.train:
            problems.append((("data", "train"), f"arm '{arm.name}' ({arm.type}) needs training data: set data.train"))
        if arm.type == "rag" and arm.documents is None and not plan.data.train:
            problems.append((("arms", i, "documents"), "a rag arm retrieves from data.train or from documents"))
        if isinstance(arm, DpoArm) and not plan.data.preference:
            problems.append(
                (
                    ("arms", i, "type"),
                    f"arm '{arm.name}' is dpo, which needs preference pairs: set "
                    "data.preference (JSONL with prompt/chosen/rejected)",
                )
            )
    if plan.sweep is not None:
        problems += _sweep_fields(plan, names)
        if not problems:
            problems = _sweep_trials(plan)
    return problems or _dpo_parents(plan)
