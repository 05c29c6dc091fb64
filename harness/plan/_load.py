"""Loading a plan file: paths relative to the file, one-line descriptions, the plan's content hash."""

from __future__ import annotations

import hashlib
from pathlib import Path

from harness.base._errors import UserError, YamlDoc, dotted, in_file_order, with_others
from harness.plan._checks import cross_check
from harness.plan._parts import Loc, RagArm
from harness.plan._schema import Plan
from harness.plan._sweep import expand


def _resolve_path(value: str | None, base: Path) -> str | None:
    """Absolute path: relative to the working directory, falling back to the plan's folder."""
    if not value:
        return value
    path = Path(value).expanduser()
    if not path.exists() and not path.is_absolute() and (base / path).exists():
        path = base / path
    return str(path.resolve()) if path.exists() else value


def _not_a_file(value: str) -> str:
    return "is a folder, not a file" if Path(value).is_dir() else "file not found"


def load_plan(path: str | Path) -> tuple[Plan, YamlDoc]:
    """Validate a plan file; every problem is a UserError naming file, line and field."""
    doc = YamlDoc(Path(path))
    plan: Plan = doc.validate(Plan, context={"defer_cross_checks": True})
    base = doc.path.resolve().parent
    problems: list[tuple[Loc, str]] = []
    for key in ("train", "preference"):
        value = _resolve_path(getattr(plan.data, key), base)
        setattr(plan.data, key, value)
        if value and not Path(value).is_file():
            problems.append((("data", key), f"{_not_a_file(value)}: {value}"))
    for i, arm in enumerate(plan.arms):
        if isinstance(arm, RagArm) and arm.documents:
            arm.documents = _resolve_path(arm.documents, base)
            if not Path(arm.documents or "").is_file():
                problems.append((("arms", i, "documents"), f"{_not_a_file(arm.documents or '')}: {arm.documents}"))
    plan.suites = [_resolve_path(s, base) or s if "/" in s else s for s in plan.suites]
    if plan.gate:
        plan.gate = _resolve_path(plan.gate, base)
    if plan.model.startswith((".", "/", "~")) or (base / plan.model).exists():
        plan.model = _resolve_path(plan.model, base) or plan.model
    problems += cross_check(plan)
    if problems:
        loc, message = problems[0]
        others = in_file_order([(doc.line_of(where), dotted(where)) for where, _ in problems[1:]])
        raise UserError(with_others(message, others), file=doc.path, line=doc.line_of(loc), field=dotted(loc))
    return plan, doc


def arm_line(plan: Plan, doc: YamlDoc | None, trial_name: str, key: str | None = None) -> tuple[int | None, str]:
    """(line, 'arms[i]' or 'arms[i].key') of the plan arm a trial came from, for error messages; the line is
    the key's when the arm sets it in the file, else the arm's."""
    for index, arm in expand(plan):
        if arm.name == trial_name:
            loc = ("arms", index) + ((key,) if key else ())
            return (doc.line_of(loc) if doc else None), dotted(loc)
    return None, "arms"


def plan_hash(plan: Plan) -> str:
    return hashlib.sha256(plan.model_dump_json().encode()).hexdigest()[:16]
