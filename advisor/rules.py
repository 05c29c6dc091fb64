"""The rule engine: rules are data (advisor/rules.yaml), conditions a tiny safe language, no eval().

A condition is one of
    {field: NAME, op: lt|le|gt|ge|eq|ne|in, value: V}
    {all: [condition, ...]}        (true when every part is; `all: []` is always true)
    {any: [condition, ...]}
    {not: condition}
over the answers (`advisor.questions.Answers`) and the facts in `FACTS`. A fact that is unknown
(None, e.g. an audit fact when no file was audited) makes its clause false.

Each option's score is the sum of the effects of the rules that fired; vetoed options are out.
The primary is the best-scoring option (ties go to the cheaper option, in `OPTIONS` order), the
arms are the primary, the other options with a positive score, then the file's control options
(cheap baselines a fine-tune must beat). Confidence grows with the margin between the primary and
the runner-up. `changers` re-run the engine on perturbed answers to find what would change the
primary.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator
from rich.console import Console
from rich.table import Table
from rich.text import Text

from advisor.errors import YamlFile
from advisor.questions import Answers
from harness.plan import estimate_training_memory

Option = Literal["prompting", "rag", "lora", "qlora", "hybrid_rag_lora", "dpo", "full"]
OPTIONS: tuple[str, ...] = Option.__args__  # type: ignore[attr-defined]   # cheapest first: breaks ties
Op = Literal["lt", "le", "gt", "ge", "eq", "ne", "in"]
RULES_PATH = Path(__file__).with_name("rules.yaml")
CONFIDENCE_SCALE = 6.0

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
    rules: list[Rule] = Field(min_length=1)

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
    return YamlFile(path or RULES_PATH).validate(RuleBook, what="rules file")


@lru_cache(maxsize=1)
def default_rules() -> RuleBook:
    return load_rules(RULES_PATH)


# --- evaluation ---------------------------------------------------------------------------------

def _compare(op: str, actual: Any, expected: Any) -> bool:
    if actual is None:
        return False
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


def holds(cond: Clause | AllOf | AnyOf | Not, env: dict[str, Any]) -> bool:
    if isinstance(cond, AllOf):
        return all(holds(c, env) for c in cond.all)
    if isinstance(cond, AnyOf):
        return any(holds(c, env) for c in cond.any)
    if isinstance(cond, Not):
        return not holds(cond.not_, env)
    return _compare(cond.op, env.get(cond.field), cond.value)


def memory_facts(answers: Answers, seq_len: int = 1024) -> dict[str, Any]:
    """Whether LoRA / QLoRA / full fine-tuning of the stated model fits the stated GPUs."""
    n = answers.model_params_b * 1e9
    est = {m: estimate_training_memory(n, m, seq_len=seq_len, batch_size=4, grad_checkpointing=True)  # type: ignore[arg-type]
           for m in ("lora", "qlora", "full")}
    facts: dict[str, Any] = {f"est_{m}_gib": round(e.total_gib, 2) for m, e in est.items()}
    if answers.gpu_count == 0:
        return facts | {"lora_fits_gpu": None, "qlora_fits_gpu": None, "full_fits_gpu": None}
    vram = answers.vram_gib_per_gpu
    full = est["full"].breakdown
    sharded = sum(full[k] for k in ("weights", "gradients", "optimizer_states")) / answers.gpu_count
    unsharded = est["full"].total_gib - sum(full[k] for k in ("weights", "gradients", "optimizer_states"))
    return facts | {"lora_fits_gpu": est["lora"].fits(vram), "qlora_fits_gpu": est["qlora"].fits(vram),
                    "full_fits_gpu": sharded + unsharded <= vram}


class FiredRule(BaseModel):
    id: str
    reason: str
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


class Recommendation(BaseModel):
    primary: Option
    arms: list[Option]
    confidence: float = Field(ge=0, le=1)
    scores: dict[str, float]
    vetoed: list[str]
    fired: list[FiredRule]
    changers: list[Changer] = Field(default_factory=list)
    controls_reason: str = ""

    @property
    def notes(self) -> list[FiredRule]:
        """Rules that fired only to warn (no score effect, no veto)."""
        return [f for f in self.fired if not f.effect and not f.veto]

    def render(self, console: Console) -> None:
        console.print(f"[bold]Recommendation:[/] [bold green]{self.primary}[/]  "
                      f"(confidence {self.confidence:.0%})", highlight=False)
        arms = Table(title="Options", title_justify="left")
        arms.add_column("option")
        arms.add_column("score", justify="right")
        arms.add_column("status")
        for opt in sorted(OPTIONS, key=lambda o: (o in self.vetoed, -self.scores[o], OPTIONS.index(o))):
            status = ("primary" if opt == self.primary else "vetoed" if opt in self.vetoed
                      else "test" if opt in self.arms else "")
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
        if self.changers:
            console.print("[bold]What would change it:[/]")
            for c in self.changers:
                console.print(f"  - {c.text}", highlight=False)
        else:
            console.print("[bold]What would change it:[/] no single answer change moves the primary.")


def _score(answers: Answers, facts: dict[str, Any], book: RuleBook) -> tuple[dict[str, float], set[str], list[FiredRule]]:
    env = answers.model_dump() | facts
    scores = {o: 0.0 for o in OPTIONS}
    vetoed: set[str] = set()
    fired = []
    for rule in book.rules:
        if holds(rule.when, env):
            for opt, delta in rule.effect.items():
                scores[opt] += delta
            vetoed.update(rule.veto)
            fired.append(FiredRule(id=rule.id, reason=rule.reason, source=rule.source,
                                   effect={str(k): v for k, v in rule.effect.items()}, veto=list(rule.veto)))
    return scores, vetoed, fired


def _primary(scores: dict[str, float], vetoed: set[str]) -> str:
    return max((o for o in OPTIONS if o not in vetoed), key=lambda o: (scores[o], -OPTIONS.index(o)))


def recommend(answers: Answers, audit_facts: dict[str, Any] | None = None, rules: RuleBook | None = None,
              with_changers: bool = True) -> Recommendation:
    """Run the rules on the answers (+ audit facts) and explain the result."""
    book = rules or default_rules()
    facts = _facts(answers, audit_facts)
    scores, vetoed, fired = _score(answers, facts, book)
    primary = _primary(scores, vetoed)
    live = [o for o in OPTIONS if o not in vetoed]
    contenders = sorted((o for o in live if o != primary and scores[o] > 0),
                        key=lambda o: (-scores[o], OPTIONS.index(o)))
    controls = [o for o in book.controls.options if o in live and o != primary and o not in contenders]
    arms = ([primary] + contenders + controls)[: book.max_arms]
    runner_up = max((scores[o] for o in live if o != primary), default=None)
    margin = math.inf if runner_up is None else scores[primary] - runner_up
    confidence = 1.0 if margin == math.inf else 0.5 + 0.5 * math.tanh(margin / CONFIDENCE_SCALE)
    rec = Recommendation(primary=primary, arms=arms, confidence=round(confidence, 3), scores=scores,  # type: ignore[arg-type]
                         vetoed=[o for o in OPTIONS if o in vetoed], fired=fired,
                         controls_reason=book.controls.reason)
    if with_changers:
        rec.changers = changers(answers, audit_facts, book, primary)
    return rec


def _facts(answers: Answers, audit_facts: dict[str, Any] | None) -> dict[str, Any]:
    base: dict[str, Any] = {name: None for name in FACTS} | {"audited": False}
    base |= audit_facts or {}
    return base | memory_facts(answers)


# --- what would change the recommendation -----------------------------------------------------

LADDERS: dict[str, tuple[float, ...]] = {
    "gpu_count": (0, 1, 2, 4, 8),
    "vram_gib_per_gpu": (8, 12, 16, 24, 40, 48, 80, 141),
    "model_params_b": (0.135, 0.36, 0.5, 1.0, 1.5, 3.0, 7.0, 8.0, 13.0, 32.0, 70.0),
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


def changers(answers: Answers, audit_facts: dict[str, Any] | None, book: RuleBook, primary: str) -> list[Changer]:
    """Change one answer at a time, re-run the rules, and keep the smallest change that moves the primary."""
    thresholds = _thresholds(book)
    found: list[Changer] = []
    base = answers.model_dump()

    def primary_with(field: str, value: Any) -> str | None:
        try:
            changed = Answers.model_validate(base | {field: value} | _companions(field, value, base))
        except ValidationError:
            return None
        scores, vetoed, _ = _score(changed, _facts(changed, audit_facts), book)
        return _primary(scores, vetoed)

    for name, info in Answers.model_fields.items():
        current = base[name]
        annotation = info.annotation
        choices = getattr(annotation, "__args__", None)
        if annotation is bool:
            new = primary_with(name, not current)
            if new and new != primary:
                found.append(_changer(name, current, not current, "=", new, _companions(name, not current, base)))
        elif choices and all(isinstance(c, str) for c in choices):
            by_primary: dict[str, list[str]] = {}
            for choice in choices:
                new = primary_with(name, choice) if choice != current else None
                if new and new != primary:
                    by_primary.setdefault(new, []).append(choice)
            for new, values in by_primary.items():
                found.append(_changer(name, current, " or ".join(values), "=", new))
        else:
            integer = annotation is int
            cands = _numeric_candidates(name, current, thresholds.get(name, ()), integer)
            cur = current if current is not None else math.inf
            ups = [v for v in cands if v > cur]
            downs = sorted((v for v in cands if v < cur), reverse=True)
            for direction, steps in ((">=", ups), ("<=", downs)):
                for v in steps:
                    value = int(v) if integer else v
                    new = primary_with(name, value)
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
        return {"hosted_model_allowed": False}
    return {}


def _changer(field: str, current: Any, value: Any, relation: Literal["=", ">=", "<="], new: str,
             also: dict[str, Any] | None = None) -> Changer:
    shown = "none" if current is None else current
    with_ = "".join(f" with {k} {v:g}" if isinstance(v, float) else f" with {k} {v}" for k, v in (also or {}).items())
    text = (f"if {field} were {'' if relation == '=' else relation + ' '}{value}{with_} (now {shown}), "
            f"primary would be {new}")
    return Changer(field=field, current=current, value=value, relation=relation, new_primary=new, text=text,
                   also=also or {})
