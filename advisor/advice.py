"""One entry point for every front end: answers (+ optional files) -> recommendation, audit, hardware."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, Field
from rich.console import Console
from rich.markup import escape

from advisor._rulebook import RuleBook
from advisor.audit import AuditReport, audit_dataset
from advisor.errors import AdvisorInputError
from advisor.hardware import HardwareReport, probe_hardware
from advisor.questions import Answers, coerce_answers
from advisor.rules import Recommendation, load_rules, recommend
from harness.base._errors import printable


class Override(BaseModel):
    field: str
    stated: Any
    audited: Any
    why: str


class AdviceResult(BaseModel):
    stated: Answers  # what the user said
    answers: Answers  # what the engine used (audit facts override counts)
    overrides: list[Override] = Field(default_factory=list)
    recommendation: Recommendation
    audit: AuditReport | None = None
    hardware: HardwareReport | None = None

    def render(self, console: Console) -> None:
        if self.hardware:
            self.hardware.render(console)
        if self.audit:
            self.audit.render(console)
        for o in self.overrides:
            console.print(
                f"[yellow]Using the audited {o.field} = {o.audited} instead of the stated {o.stated}:[/] "
                f"{escape(printable(o.why))}",
                highlight=False,
            )
        self.recommendation.render(console)
        size, gpus = self.answers.model_params_b, self.answers.gpu_count
        model = f"a {size:g}B-parameter base model" if size is not None else "a base model of unknown size"
        gpu_text = "an unknown number of GPUs" if gpus is None else f"{gpus or 'no'} GPU{'s' if gpus != 1 else ''}"
        console.print(f"(for {model}; {gpu_text})", highlight=False)


def audit_overrides(answers: Answers, audit: AuditReport) -> tuple[Answers, list[Override]]:
    """Replace stated counts with what the training file actually holds (unique rows)."""
    field = "preference_pairs" if audit.format == "preference" else "labelled_examples"
    stated = getattr(answers, field)
    if stated == audit.unique_rows:
        return answers, []
    why = f"{audit.path} has {audit.rows} rows, {audit.unique_rows} after removing exact duplicates"
    changed = answers.model_copy(update={field: audit.unique_rows})
    return changed, [Override(field=field, stated=stated, audited=audit.unique_rows, why=why)]


def advise(
    answers: Answers | dict[str, Any] | str | Path,
    train_path: str | Path | None = None,
    test_path: str | Path | None = None,
    *,
    tokenizer: Any = None,
    context_len: int = 2048,
    rules: RuleBook | str | Path | None = None,
    probe: bool = True,
) -> AdviceResult:
    """Run the audit (when a training file is given), the hardware probe and the rules."""
    stated = coerce_answers(answers)
    book = load_rules(rules) if isinstance(rules, (str, Path)) else rules
    audit = None
    if test_path is not None and train_path is None:
        raise AdvisorInputError("a test file was given without a training file to compare it with", field="train")
    for label, p in (("train", train_path), ("test", test_path)):
        if p is not None and not Path(p).is_file():
            raise AdvisorInputError("file not found", file=p, field=label)
    effective, overrides = stated, cast(list[Override], [])
    if train_path is not None:
        audit = audit_dataset(train_path, test_path, tokenizer=tokenizer, context_len=context_len)
        if audit.rows == 0:
            raise AdvisorInputError("no readable rows in the training file", file=train_path, field="train")
        effective, overrides = audit_overrides(stated, audit)
    rec = recommend(effective, audit.facts() if audit else None, book)
    return AdviceResult(
        stated=stated,
        answers=effective,
        overrides=overrides,
        recommendation=rec,
        audit=audit,
        hardware=probe_hardware() if probe else None,
    )
