"""The gate's policy file: rules with thresholds, validated with file, line and field."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from harness.base._errors import UserError, YamlDoc

Target = Literal["baseline", "promoted"]
CONFIDENCE = 0.95


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str | None = None
    suite: str
    metric: str
    version: str | None = None  # pin the suite's content hash
    min: float | None = Field(default=None, ge=0)  # absolute floor on the candidate's mean (metrics are >= 0)
    max: float | None = Field(default=None, ge=0)  # absolute ceiling on the candidate's mean
    max_drop: float | None = Field(default=None, ge=0)  # largest allowed fall vs the comparison model
    require_improvement: bool = False  # the paired interval of the gain must lie above 0
    compare_to: Target | None = None  # default: the policy's compare_to
    judge_on: Literal["point", "interval"] = "point"  # the point estimate, or the interval's worst end
    min_items: int = Field(default=1, ge=1)
    require_all_items: bool = True
    higher_is_better: bool | None = None  # which way is better; default: as stored with the metric
    _line: int | None = PrivateAttr(default=None)
    _safety: bool = PrivateAttr(default=False)

    @model_validator(mode="after")
    def something_to_check(self) -> Rule:
        if self.min is None and self.max is None and self.max_drop is None and not self.require_improvement:
            raise ValueError("a rule needs at least one of min, max, max_drop, require_improvement")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self

    @property
    def label(self) -> str:
        name = self.name or f"{self.suite}.{self.metric}"
        return f"safety: {name}" if self._safety else name

    @property
    def relative(self) -> bool:
        return self.max_drop is not None or self.require_improvement


class SafetyRule(Rule):
    """A rule under `safety:`. Given no check, it means "must not fall": max_drop 0 on the point estimate."""

    @model_validator(mode="before")
    @classmethod
    def must_not_fall(cls, data: Any) -> Any:
        if (
            isinstance(data, dict)
            and all(data.get(k) is None for k in ("min", "max", "max_drop"))
            and not data.get("require_improvement")
        ):
            data = {**data, "max_drop": 0.0}
        return data


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str = "gate"
    baseline: str = "baseline"  # trial name in the candidate's run, unless --baseline is given
    compare_to: Target = "baseline"
    require_same_numerics: bool = False  # baseline and candidate scored under different numerics: error (exit 2)
    rules: list[Rule] = Field(default_factory=list)
    safety: list[SafetyRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def has_rules(self) -> Policy:
        if not self.rules and not self.safety:
            raise ValueError("a policy needs at least one rule under 'rules' or 'safety'")
        return self

    def all_rules(self) -> list[Rule]:
        """Safety rules first: they are what a reader of the decision should see first."""
        return [*self.safety, *self.rules]

    def target(self, rule: Rule) -> Target:
        return rule.compare_to or self.compare_to


@dataclass
class RuleResult:
    name: str
    passed: bool
    error: bool
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    safety: bool = False
    flips_to_change: int | None = None  # fewest item changes that flip the result (None: not item-based)


def load_policy(path: str | Path) -> Policy:
    doc = YamlDoc(Path(path))
    policy: Policy = doc.validate(Policy)
    seen: dict[str, str] = {}
    for key, rules in (("safety", policy.safety), ("rules", policy.rules)):
        for i, rule in enumerate(rules):
            rule._line = doc.line_of((key, i))
            rule._safety = key == "safety"
            if rule.label in seen:
                raise UserError(
                    f"a second rule named '{rule.label}' (first at {seen[rule.label]}); give each rule "
                    "a distinct `name`",
                    file=path,
                    line=rule._line,
                    field=f"{key}[{i}].name",
                )
            seen[rule.label] = f"line {rule._line}"
    return policy
