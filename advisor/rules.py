"""The rule engine: rules are data (advisor/rules.yaml), conditions a tiny safe language, no eval().

A condition is one of
    {field: NAME, op: lt|le|gt|ge|eq|ne|in, value: V}
    {all: [condition, ...]}        (true when every part is; `all: []` is always true)
    {any: [condition, ...]}
    {not: condition}
over the answers (`advisor.questions.Answers`) and the facts in `FACTS`. Logic is three-valued: a
clause on an unknown answer or fact (None) is unknown, `not` of unknown is unknown, and a rule
fires only when its condition is true - so an unknown fact adds nothing.

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
import string
import typing
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator
from rich.console import Console
from rich.table import Table
from rich.text import Text

from advisor.errors import AdvisorInputError
from advisor.questions import NO_LIMIT, Answers, implied_by, show
from harness.base import YamlDoc
from harness.plan import estimate_training_memory

Option = Literal["prompting", "rag", "lora", "qlora", "hybrid_rag_lora", "dpo", "full"]
OPTIONS: tuple[str, ...] = Option.__args__  # type: ignore[attr-defined]   # cheapest first: breaks ties
Op = Literal["lt", "le", "gt", "ge", "eq", "ne", "in"]
RULES_PATH = Path(__file__).with_name("rules.yaml")
CONFIDENCE_SCALE = 6.0
UNKNOWN_DECISIVE = 0.8     # confidence factor for each unknown answer that could change the primary
UNKNOWN_MINOR = 0.97       # ... and for each unknown answer that could not
FAMILY: dict[str, str] = {"prompting": "prompting", "rag": "rag", "lora": "fine_tuning", "qlora": "fine_tuning",
                          "full": "fine_tuning", "dpo": "fine_tuning", "hybrid_rag_lora": "hybrid"}

FACTS: dict[str, str] = {
    "audited": "a training file was audited",
    "audit_rows": "rows in the audited training file",
    "audit_unique_rows": "rows left after removing exact duplicates",
    "duplicate_fraction": "share of rows that are exact or near duplicates of another row",
    "contamination_fraction": "share of test rows whose prompt also appears (exactly or nearly) in train",
    "pii_rows": "rows with an email, phone number, card number, IP address or secret",
    "over_context_fraction": "share of rows longer than the context length",
    "minority_class_share": "share of the rarest label, when outputs look like labels",
    "lora_fits_gpu": "LoRA (grad checkpointing, seq 1024, batch 4) fits in one GPU's memory",
    "qlora_fits_gpu": "QLoRA fits in one GPU's memory",
    "full_fits_gpu": "full fine-tuning fits across the GPUs (weights, grads and optimizer sharded)",
    "est_lora_gib": "estimated LoRA training memory, GiB",
    "est_qlora_gib": "estimated QLoRA training memory, GiB",
    "est_full_gib": "estimated full fine-tuning memory, GiB (unsharded)",
    "preference_share": "preference pairs as a share of all training rows (pairs + labelled examples)",
}
FIELDS: tuple[str, ...] = tuple(Answers.model_fields) + tuple(FACTS)


class Clause(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str
    op: Op
    value: Any

    @field_validator("field")
    @classmethod
    def known_field(cls, name: str) -> str:
        if name not in FIELDS:
            raise ValueError(f"unknown field '{name}'; known: {', '.join(FIELDS)}")
        return name

    @model_validator(mode="after")
    def value_fits_op(self) -> Clause:
        if self.op == "in" and not isinstance(self.value, list):
            raise ValueError("op 'in' needs a list value")
        if self.op in ("lt", "le", "gt", "ge") and (isinstance(self.value, bool)
                                                   or not isinstance(self.value, (int, float))):
            raise ValueError(f"op '{self.op}' needs a number value")
        return self


class AllOf(BaseModel):
    model_config = ConfigDict(extra="forbid")
    all: list[Condition]


class AnyOf(BaseModel):
    model_config = ConfigDict(extra="forbid")
    any: list[Condition] = Field(min_length=1)


class Not(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    not_: Condition = Field(alias="not")


def _condition_kind(value: Any) -> str:
    if isinstance(value, dict):
        for key in ("all", "any", "not"):
            if key in value:
                return key
    elif isinstance(value, BaseModel):
        return {AllOf: "all", AnyOf: "any", Not: "not"}.get(type(value), "clause")
    return "clause"


Condition = Annotated[Union[Annotated[Clause, Tag("clause")], Annotated[AllOf, Tag("all")],
                            Annotated[AnyOf, Tag("any")], Annotated[Not, Tag("not")]],
                      Discriminator(_condition_kind)]
AllOf.model_rebuild()
AnyOf.model_rebuild()
Not.model_rebuild()


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    when: Condition
    effect: dict[Option, float] = Field(default_factory=dict)
    veto: list[Option] = Field(default_factory=list)
    reason: str = Field(min_length=10)
    source: str = Field(min_length=3)

    @field_validator("reason")
    @classmethod
    def placeholders_are_fields(cls, reason: str) -> str:
        for _, name, spec, _ in string.Formatter().parse(reason):
            if name is not None and name not in FIELDS:
                raise ValueError(f"the reason names an unknown field '{{{name}}}'; known: {', '.join(FIELDS)}")
            if name is not None and spec:
                try:
                    format(0.5, spec)
                except ValueError:
                    raise ValueError(f"bad format '{spec}' for '{{{name}}}' in the reason") from None
        return reason

    @field_validator("veto")
    @classmethod
    def prompting_always_possible(cls, veto: list[str]) -> list[str]:
        if "prompting" in veto:
            raise ValueError("prompting cannot be vetoed: it is the fallback that always works")
        return veto


class Controls(BaseModel):
    model_config = ConfigDict(extra="forbid")
    options: list[Option] = Field(default_factory=list)
    reason: str = ""


class RuleBook(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: Literal[1] = 1
    max_arms: int = Field(5, ge=1, le=len(OPTIONS))
    controls: Controls = Field(default_factory=Controls)
    tie_break: list[Option] = Field(default_factory=lambda: list(OPTIONS))
    tie_break_reason: str = "the option listed first in tie_break (cheapest to build and run) wins a tie"
    rules: list[Rule] = Field(min_length=1)

    @field_validator("tie_break")
    @classmethod
    def tie_break_lists_every_option(cls, order: list[str]) -> list[str]:
        if sorted(order) != sorted(OPTIONS):
            raise ValueError(f"tie_break must list every option once: {', '.join(OPTIONS)}")
        return order

    @field_validator("rules")
    @classmethod
    def unique_ids(cls, rules: list[Rule]) -> list[Rule]:
        seen: set[str] = set()
        for rule in rules:
            if rule.id in seen:
                raise ValueError(f"duplicate rule id '{rule.id}'")
            seen.add(rule.id)
        return rules


def load_rules(path: str | Path | None = None) -> RuleBook:
    """Parse and validate a rules file; errors name the file, line and field."""
    return YamlDoc(path or RULES_PATH, error=AdvisorInputError).validate(RuleBook, what="rules file")


@lru_cache(maxsize=1)
def default_rules() -> RuleBook:
    return load_rules(RULES_PATH)


def _compare(op: str, actual: Any, expected: Any) -> bool | None:
    """True, False, or None when the answer or fact is unknown."""
    if actual is None:
        return None
    if op == "eq":
        return bool(actual == expected)
    if op == "ne":
        return bool(actual != expected)
    if op == "in":
        return actual in expected
    if isinstance(actual, bool) or not isinstance(actual, (int, float)):
        return False
    return {"lt": actual < expected, "le": actual <= expected, "gt": actual > expected,
            "ge": actual >= expected}[op]


def truth(cond: Clause | AllOf | AnyOf | Not, env: dict[str, Any]) -> bool | None:
    """Kleene's three-valued logic: None (unknown) unless the known parts decide."""
    if isinstance(cond, AllOf):
        parts = [truth(c, env) for c in cond.all]
        return False if False in parts else None if None in parts else True
    if isinstance(cond, AnyOf):
        parts = [truth(c, env) for c in cond.any]
        return True if True in parts else None if None in parts else False
    if isinstance(cond, Not):
        inner = truth(cond.not_, env)
        return None if inner is None else not inner
    return _compare(cond.op, env.get(cond.field), cond.value)


def holds(cond: Clause | AllOf | AnyOf | Not, env: dict[str, Any]) -> bool:
    """Whether the condition is known to be true."""
    return truth(cond, env) is True


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
    est = {m: estimate_training_memory(n, m, seq_len=seq_len, batch_size=4, grad_checkpointing=True)  # type: ignore[arg-type]
           for m in ("lora", "qlora", "full")}
    facts: dict[str, Any] = {f"est_{m}_gib": round(e.total_gib, 2) for m, e in est.items()}
    if not answers.gpu_count or answers.vram_gib_per_gpu is None:
        return facts | unknown
    vram = answers.vram_gib_per_gpu
    full = est["full"].breakdown
    sharded = sum(full[k] for k in ("weights", "gradients", "optimizer_states")) / answers.gpu_count
    unsharded = est["full"].total_gib - sum(full[k] for k in ("weights", "gradients", "optimizer_states"))
    return facts | {"lora_fits_gpu": est["lora"].fits(vram), "qlora_fits_gpu": est["qlora"].fits(vram),
                    "full_fits_gpu": sharded + unsharded <= vram}


class FiredRule(BaseModel):
    id: str
    reason: str            # with the team's figures filled in
    source: str
    effect: dict[str, float]
    veto: list[str]


class Changer(BaseModel):
    field: str
    current: Any
    value: Any
    relation: Literal["=", ">=", "<="]
    new_primary: str
    text: str
    also: dict[str, Any] = Field(default_factory=dict)   # companion changes that keep the answers valid


class UnknownImpact(BaseModel):
    """An answer the engine did not have, and what filling it in would do."""
    field: str
    status: Literal["unknown", "not answered", "implied"]
    value: Any = None                                     # the implied value, for status 'implied'
    would_change: dict[str, list[Any]] = Field(default_factory=dict)   # new primary -> the values that give it
    text: str


class Recommendation(BaseModel):
    primary: Option
    family: Literal["prompting", "rag", "fine_tuning", "hybrid"]
    method: str            # how to build the primary, e.g. lora, qlora, lora+dpo, rag+qlora
    arms: list[Option]
    confidence: float = Field(ge=0, le=1)
    scores: dict[str, float]
    vetoed: list[str]
    tied: list[str] = Field(default_factory=list)   # options with the primary's score (the primary first)
    tie_break: str | None = None                    # how the tie was broken, when there was one
    fired: list[FiredRule]
    changers: list[Changer] = Field(default_factory=list)
    unknowns: list[UnknownImpact] = Field(default_factory=list)
    controls_reason: str = ""

    @property
    def notes(self) -> list[FiredRule]:
        """Rules that fired only to warn (no score effect, no veto)."""
        return [f for f in self.fired if not f.effect and not f.veto]

    def render(self, console: Console) -> None:
        console.print(f"[bold]Recommendation:[/] [bold green]{self.primary}[/] (method {self.method}; "
                      f"confidence {self.confidence:.0%})", highlight=False)
        if self.tie_break:
            console.print(f"[yellow]Tie:[/] {', '.join(self.tied)} score {self.scores[self.primary]:+g} each; "
                          f"{self.tie_break}", highlight=False)
        arms = Table(title="Options", title_justify="left")
        arms.add_column("option")
        arms.add_column("score", justify="right")
        arms.add_column("status")
        for opt in sorted(OPTIONS, key=lambda o: (o in self.vetoed, -self.scores[o], OPTIONS.index(o))):
            status = ("primary" if opt == self.primary else "vetoed" if opt in self.vetoed
                      else "tied" if opt in self.tied else "test" if opt in self.arms else "")
            arms.add_row(opt, f"{self.scores[opt]:+g}", status)
        console.print(arms)
        console.print(f"[bold]Arms to test:[/] {', '.join(self.arms)}", highlight=False)
        fired = Table(title="Why (rules that fired)", title_justify="left", show_lines=True)
        fired.add_column("rule and effect", no_wrap=True)
        fired.add_column("reason (source)")
        for f in self.fired:
            effects = [f"{k} {v:+g}" for k, v in f.effect.items()] + [f"{v} vetoed" for v in f.veto]
            fired.add_row(Text(f.id + "\n" + ("\n".join(effects) or "note")),
                          Text(f.reason + " ") + Text(f"({f.source})", style="dim"))
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


def _env(answers: Answers, facts: dict[str, Any]) -> dict[str, Any]:
    return answers.model_dump() | facts


def _score(answers: Answers, facts: dict[str, Any], book: RuleBook) -> tuple[dict[str, float], set[str], list[FiredRule]]:
    env = _env(answers, facts)
    scores = {o: 0.0 for o in OPTIONS}
    vetoed: set[str] = set()
    fired = []
    for rule in book.rules:
        if holds(rule.when, env):
            for opt, delta in rule.effect.items():
                scores[opt] += delta
            vetoed.update(rule.veto)
            fired.append(FiredRule(id=rule.id, reason=render_reason(rule.reason, env), source=rule.source,
                                   effect={str(k): v for k, v in rule.effect.items()}, veto=list(rule.veto)))
    return scores, vetoed, fired


def _ranked(scores: dict[str, float], vetoed: set[str], book: RuleBook) -> list[str]:
    """Live options, best first; equal scores in the rule book's tie_break order."""
    order = book.tie_break
    return sorted((o for o in OPTIONS if o not in vetoed), key=lambda o: (-scores[o], order.index(o)))


def _primary(scores: dict[str, float], vetoed: set[str], book: RuleBook) -> str:
    return _ranked(scores, vetoed, book)[0]


def method_for(primary: str, scores: dict[str, float], vetoed: set[str]) -> str:
    """How to build the primary. The LoRA half of a hybrid, and the supervised stage before DPO, use
    LoRA unless the memory rules vetoed it (then QLoRA); DPO runs alone when supervised tuning is
    vetoed (too few labelled examples)."""
    adapter = next((m for m in ("lora", "qlora") if m not in vetoed), None)
    if primary == "hybrid_rag_lora":
        return f"rag+{adapter or 'lora'}"
    if primary == "dpo":
        sft = max((m for m in ("lora", "qlora", "full") if m not in vetoed), default=None,
                  key=lambda m: (scores[m], m == adapter))
        return f"{sft}+dpo" if sft else "dpo"
    return primary


def recommend(answers: Answers, audit_facts: dict[str, Any] | None = None, rules: RuleBook | None = None,
              with_changers: bool = True) -> Recommendation:
    """Run the rules on the answers (+ audit facts) and explain the result."""
    book = rules or default_rules()
    facts = _facts(answers, audit_facts)
    scores, vetoed, fired = _score(answers, facts, book)
    ranked = _ranked(scores, vetoed, book)
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
    rec = Recommendation(primary=primary, family=FAMILY[primary], method=method_for(primary, scores, vetoed),  # type: ignore[arg-type]
                         arms=arms, confidence=round(confidence, 3), scores=scores,  # type: ignore[arg-type]
                         vetoed=[o for o in OPTIONS if o in vetoed], tied=tied, tie_break=tie_break, fired=fired,
                         unknowns=impacts, controls_reason=book.controls.reason)
    if with_changers:
        rec.changers = changers(answers, audit_facts, book, primary)
    return rec


def _facts(answers: Answers, audit_facts: dict[str, Any] | None) -> dict[str, Any]:
    base: dict[str, Any] = {name: None for name in FACTS} | {"audited": False}
    base |= audit_facts or {}
    prefs, labels = answers.preference_pairs, answers.labelled_examples
    if prefs is not None and labels is not None:
        base["preference_share"] = round(prefs / (prefs + labels), 4) if prefs + labels else 0.0
    return base | memory_facts(answers)


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
        scores, vetoed, _ = _score(changed, _facts(changed, self.audit_facts), self.book)
        return _primary(scores, vetoed, self.book)


def unknown_impacts(answers: Answers, audit_facts: dict[str, Any] | None, book: RuleBook,
                    primary: str) -> list[UnknownImpact]:
    """For each unknown (or implied) answer: which values would change the primary, and to what."""
    rerun, thresholds = _Rerun(answers, audit_facts, book), _thresholds(book)
    implied = implied_by(answers)
    out: list[UnknownImpact] = []
    for name in Answers.model_fields:
        value = getattr(answers, name)
        if name in implied and name not in answers.model_fields_set and value == implied[name][1]:
            out.append(UnknownImpact(field=name, status="implied", value=value,
                                     text=f"{name}: {show(value)}, implied because {implied[name][0]}"))
            continue
        if value is not None:
            continue
        kind, choices = _kind(name)
        if kind == "bool":
            candidates: list[Any] = [True, False]
        elif kind == "choice":
            candidates = list(choices)
        else:
            candidates = [int(v) if kind == "int" else v
                          for v in _numeric_candidates(name, None, thresholds.get(name, ()), kind == "int")]
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
            cands = _numeric_candidates(name, current if current != NO_LIMIT else None,
                                        thresholds.get(name, ()), integer)
            cur = current if isinstance(current, (int, float)) else math.inf
            ups = [v for v in cands if v > cur]
            downs = sorted((v for v in cands if v < cur), reverse=True)
            for direction, steps in ((">=", ups), ("<=", downs)):
                for v in steps:
                    value = int(v) if integer else v
                    new = rerun.primary_with(name, value, _companions(name, value, base))
                    if new and new != primary:
                        found.append(_changer(name, current, value, direction, new,  # type: ignore[arg-type]
                                              _companions(name, value, base)))
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


def _changer(field: str, current: Any, value: Any, relation: Literal["=", ">=", "<="], new: str,
             also: dict[str, Any] | None = None) -> Changer:
    with_ = "".join(f" with {k} {v:g}" if isinstance(v, float) else f" with {k} {v}" for k, v in (also or {}).items())
    text = (f"if {field} were {'' if relation == '=' else relation + ' '}{value}{with_} (now {show(current)}), "
            f"primary would be {new}")
    return Changer(field=field, current=current, value=value, relation=relation, new_primary=new, text=text,
                   also=also or {})
