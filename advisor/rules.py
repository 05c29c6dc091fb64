"""The rule engine's public entry: load a rule book (advisor/rules.yaml) and `recommend` from the answers.

The rule book's schema and its three-valued conditions are in `advisor._rulebook`, scoring and ranking the
options in `advisor._ranking`, and the what-if analysis (`changers`, `unknown_impacts`) in `advisor._whatif`.
Rules are data, conditions a tiny safe language, no eval().

A rule fires only when its condition is known to be true (an unknown answer or fact adds nothing).

A rule's reason may name answers and facts in braces (`{labelled_examples}`); the output shows the
team's own figures there. Each option's score is the sum of the effects of the rules that fired;
vetoed options are out. The primary is the best-scoring option; a tie is reported as a tie and
broken by the rule book's named `tie_break` order. The arms are the primary, the other options with
a positive score, then the file's control options (cheap baselines a fine-tune must beat).
Confidence grows with the margin between the primary and the runner-up and shrinks with every
unknown answer (more when filling that answer in could change the primary). `changers` re-run the
engine on perturbed answers to find what would change the primary; `unknown_impacts` do the same
for each unknown answer.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table
from rich.text import Text

from advisor._ranking import FiredRule, facts_for, method_for, ranked_options, score_options
from advisor._rulebook import OPTIONS, Option, RuleBook
from advisor._whatif import Changer, UnknownImpact, changers, unknown_impacts
from advisor.errors import AdvisorInputError
from advisor.questions import Answers
from harness.base._errors import YamlDoc

RULES_PATH = Path(__file__).with_name("rules.yaml")
CONFIDENCE_SCALE = 6.0
UNKNOWN_DECISIVE = 0.8  # confidence factor for each unknown answer that could change the primary
UNKNOWN_MINOR = 0.97  # ... and for each unknown answer that could not
FAMILY: dict[str, str] = {
    "prompting": "prompting",
    "rag": "rag",
    "lora": "fine_tuning",
    "qlora": "fine_tuning",
    "full": "fine_tuning",
    "dpo": "fine_tuning",
    "hybrid_rag_lora": "hybrid",
}


def load_rules(path: str | Path | None = None) -> RuleBook:
    """Parse and validate a rules file; errors name the file, line and field."""
    return YamlDoc(path or RULES_PATH, error=AdvisorInputError).validate(RuleBook, what="rules file")


@lru_cache(maxsize=1)
def default_rules() -> RuleBook:
    return load_rules(RULES_PATH)


class Recommendation(BaseModel):
    primary: Option
    family: Literal["prompting", "rag", "fine_tuning", "hybrid"]
    method: str  # how to build the primary, e.g. lora, qlora, lora+dpo, rag+qlora
    arms: list[Option]
    confidence: float = Field(ge=0, le=1)
    scores: dict[str, float]
    vetoed: list[str]
    tied: list[str] = Field(default_factory=list)  # options with the primary's score (the primary first)
    tie_break: str | None = None  # how the tie was broken, when there was one
    fired: list[FiredRule]
    changers: list[Changer] = Field(default_factory=list)
    unknowns: list[UnknownImpact] = Field(default_factory=list)
    controls_reason: str = ""

    @property
    def notes(self) -> list[FiredRule]:
        """Rules that fired only to warn (no score effect, no veto)."""
        return [f for f in self.fired if not f.effect and not f.veto]

    def render(self, console: Console) -> None:
        console.print(
            f"[bold]Recommendation:[/] [bold green]{self.primary}[/] (method {self.method}; "
            f"confidence {self.confidence:.0%})",
            highlight=False,
        )
        if self.tie_break:
            console.print(
                f"[yellow]Tie:[/] {', '.join(self.tied)} score {self.scores[self.primary]:+g} each; {self.tie_break}",
                highlight=False,
            )
        arms = Table(title="Options", title_justify="left")
        arms.add_column("option")
        arms.add_column("score", justify="right")
        arms.add_column("status")
        for opt in sorted(OPTIONS, key=lambda o: (o in self.vetoed, -self.scores[o], OPTIONS.index(o))):
            status = (
                "primary"
                if opt == self.primary
                else "vetoed"
                if opt in self.vetoed
                else "tied"
                if opt in self.tied
                else "test"
                if opt in self.arms
                else ""
            )
            arms.add_row(opt, f"{self.scores[opt]:+g}", status)
        console.print(arms)
        console.print(f"[bold]Arms to test:[/] {', '.join(self.arms)}", highlight=False)
        fired = Table(title="Why (rules that fired)", title_justify="left", show_lines=True)
        fired.add_column("rule and effect", no_wrap=True)
        fired.add_column("reason (source)")
        for f in self.fired:
            effects = [f"{k} {v:+g}" for k, v in f.effect.items()] + [f"{v} vetoed" for v in f.veto]
            fired.add_row(
                Text(f.id + "\n" + ("\n".join(effects) or "note")),
                Text(f.reason + " ") + Text(f"({f.source})", style="dim"),
            )
        console.print(fired)
        if self.unknowns:
            console.print("[bold]Answers the advice did not have:[/]")
            for u in self.unknowns:
                console.print(f"  - {u.text}", highlight=False)
        if self.changers:
            console.print("[bold]What would change it:[/]")
            for c in self.changers:
                console.print(f"  - {c.text}", highlight=False)
        else:
            console.print("[bold]What would change it:[/] no single answer change moves the primary.")


def recommend(
    answers: Answers,
    audit_facts: dict[str, Any] | None = None,
    rules: RuleBook | None = None,
    with_changers: bool = True,
) -> Recommendation:
    """Run the rules on the answers (+ audit facts) and explain the result."""
    book = rules or default_rules()
    facts = facts_for(answers, audit_facts)
    scores, vetoed, fired = score_options(answers, facts, book)
    ranked = ranked_options(scores, vetoed, book)
    primary = ranked[0]
    live = [o for o in OPTIONS if o not in vetoed]
    contenders = [o for o in ranked[1:] if scores[o] > 0]
    controls = [o for o in book.controls.options if o in live and o != primary and o not in contenders]
    arms = ([primary] + contenders + controls)[: book.max_arms]
    tied = [o for o in ranked if scores[o] == scores[primary]]
    tie_break = None
    if len(tied) > 1:
        tie_break = f"broken toward {primary}: {book.tie_break_reason}"
    runner_up = max((scores[o] for o in live if o != primary), default=None)
    margin = math.inf if runner_up is None else scores[primary] - runner_up
    confidence = 1.0 if margin == math.inf else 0.5 + 0.5 * math.tanh(margin / CONFIDENCE_SCALE)
    impacts = unknown_impacts(answers, audit_facts, book, primary) if with_changers else []
    for impact in impacts:
        if impact.status != "implied":
            confidence *= UNKNOWN_DECISIVE if impact.would_change else UNKNOWN_MINOR
    rec = Recommendation(
        primary=primary,
        family=FAMILY[primary],
        method=method_for(primary, scores, vetoed),  # type: ignore[arg-type]
        arms=arms,
        confidence=round(confidence, 3),
        scores=scores,  # type: ignore[arg-type]
        vetoed=[o for o in OPTIONS if o in vetoed],
        tied=tied,
        tie_break=tie_break,
        fired=fired,
        unknowns=impacts,
        controls_reason=book.controls.reason,
    )
    if with_changers:
        rec.changers = changers(answers, audit_facts, book, primary)
    return rec
