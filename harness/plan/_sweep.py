"""Sweep expansion: a plan's arms plus the grid or random combinations of its swept arm."""

from __future__ import annotations

import itertools
import json
import random
from typing import TYPE_CHECKING, Any

from harness.plan._parts import Range, Sweep

if TYPE_CHECKING:
    from harness.plan._schema import Plan


def _label(value: Any) -> str:
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        text = format(value, ".4g")
    elif isinstance(value, (list, tuple)):
        text = "_".join(str(v).removesuffix("_proj") for v in value)
    else:
        text = str(value)
    return "".join(ch if ch.isalnum() or ch in ".-" else "_" for ch in text)[:24]


def _param_values(sweep: Sweep) -> dict[str, list[Any] | Range]:
    out: dict[str, list[Any] | Range] = {}
    for key, value in sweep.params.items():
        out[key] = Range.model_validate(value) if isinstance(value, dict) else value
    return out


def _combos(sweep: Sweep) -> list[dict[str, Any]]:
    values = _param_values(sweep)
    keys = list(values)
    if sweep.method == "grid" or all(isinstance(v, list) for v in values.values()):
        grid = [dict(zip(keys, c)) for c in itertools.product(*(values[k] for k in keys))]  # type: ignore[misc]
        if sweep.method == "grid":
            return grid
        return random.Random(sweep.seed).sample(grid, min(sweep.n or len(grid), len(grid)))
    rng = random.Random(sweep.seed)
    combos: list[dict[str, Any]] = []
    seen: set[str] = set()
    for _ in range((sweep.n or 1) * 20):
        combo = {k: v.draw(rng) if isinstance(v, Range) else rng.choice(v) for k, v in values.items()}
        key = json.dumps(combo, sort_keys=True)
        if key not in seen:
            seen.add(key)
            combos.append(combo)
        if len(combos) == sweep.n:
            break
    return combos


def expand(plan: Plan) -> list[tuple[int, Any]]:
    """(index of the plan arm it came from, trial arm) for every trial: the swept arms replaced by their variants."""
    sweep = plan.sweep
    swept = set(sweep.arms) if sweep else set()
    combos = _combos(sweep) if sweep else []
    out: list[tuple[int, Any]] = []
    for index, arm in enumerate(plan.arms):
        if arm.name not in swept:
            out.append((index, arm))
            continue
        for combo in combos:
            suffix = "-".join(f"{k}{_label(v)}" for k, v in combo.items())
            data = arm.model_dump() | combo | {"name": f"{arm.name}-{suffix}"}
            out.append((index, type(arm).model_validate(data)))
    return out


def trial_arms(plan: Plan) -> list[Any]:
    """The plan's arms with the sweep expanded: one arm per trial."""
    return [arm for _, arm in expand(plan)]
