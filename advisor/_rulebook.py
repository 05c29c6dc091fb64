"""The rule book's schema: rules are data (advisor/rules.yaml), conditions a tiny safe language, no eval().

A condition is one of
    {field: NAME, op: lt|le|gt|ge|eq|ne|in, value: V}
    {all: [condition, ...]}        (true when every part is; `all: []` is always true)
    {any: [condition, ...]}
    {not: condition}
over the answers (`advisor.questions.Answers`) and the facts in `FACTS`. Logic is three-valued (`truth`): a
clause on an unknown answer or fact (None) is unknown, `not` of unknown is unknown, and a rule fires only when
its condition is true (`holds`) - so an unknown fact adds nothing.
"""

from __future__ import annotations

import string
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from advisor.questions import Answers

Option = Literal["prompting", "rag", "lora", "qlora", "hybrid_rag_lora", "dpo", "full"]
OPTIONS: tuple[str, ...] = Option.__args__  # type: ignore[attr-defined]   # cheapest first: breaks ties
Op = Literal["lt", "le", "gt", "ge", "eq", "ne", "in"]

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
        if self.op in ("lt", "le", "gt", "ge") and (
            isinstance(self.value, bool) or not isinstance(self.value, (int, float))
        ):
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


Condition = Annotated[
    Annotated[Clause, Tag("clause")]
    | Annotated[AllOf, Tag("all")]
    | Annotated[AnyOf, Tag("any")]
    | Annotated[Not, Tag("not")],
    Discriminator(_condition_kind),
]
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
    return {"lt": actual < expected, "le": actual <= expected, "gt": actual > expected, "ge": actual >= expected}[op]


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
