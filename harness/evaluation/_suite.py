"""Evaluation suites as data: `suites/<name>/suite.yaml` plus a JSONL of items, in one registry.

A suite has items, a generation config and scorers. Its version is the content hash of its YAML
and items, stored with every result so the gate never compares results of different versions.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.base._data import Message, read_jsonl
from harness.base._errors import RowErrors, UserError, YamlDoc, dotted, from_validation
from harness.bundled import suites_dir
from harness.evaluation import _lmeval_config as lmeval_config
from harness.evaluation._lmeval_config import LmEvalConfig
from harness.scorers import _registry as scorers

SUITES_DIR = suites_dir()


class ScorerSpec(BaseModel):
    """A scorer as a suite names it: `- exact_match`, `- name: numeric` with `params:`, or the short form
    `- evaluate: {path: ..., key: ...}` (the scorer's name as the one key, its params as the value)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def short_form(cls, data: Any) -> Any:
        if isinstance(data, dict) and len(data) == 1:
            ((key, value),) = data.items()
            if key not in ("name", "params") and isinstance(value, dict | None):
                return {"name": key, "params": value or {}}
        return data

    @property
    def metric(self) -> str:
        """The metric this scorer's scores are stored under (its name, or e.g. the evaluate scorer's
        `<metric>/<key>`)."""
        return scorers.metric_name(self)


class GenerationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_new_tokens: int = Field(default=64, ge=1, le=4096)
    batch_size: int = Field(default=16, ge=1)


class SuiteSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9_\-]+$")
    description: str = ""
    kind: Literal["generate", "multiple_choice", "lm_eval"] = "generate"
    category: Literal["task", "regression", "safety", "benchmark"] = "task"
    items: str = "items.jsonl"
    system: str | None = None
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    scorers: list[ScorerSpec | str] = Field(default_factory=list)
    primary: str | None = None
    lm_eval: LmEvalConfig | None = None  # kind lm_eval: the lm-eval tasks to run (harness/evaluation/_lmeval.py)

    @model_validator(mode="after")
    def check(self) -> SuiteSpec:
        if (self.kind == "lm_eval") != (self.lm_eval is not None):
            raise ValueError("a suite has an 'lm_eval' block exactly when its kind is lm_eval")
        if self.kind == "lm_eval":
            if self.scorers:
                raise ValueError("an lm_eval suite is scored by its lm-eval tasks; remove 'scorers'")
            return self  # metrics (and the default primary) come from lm-eval when it runs
        self.scorers = [ScorerSpec(name=s) if isinstance(s, str) else s for s in self.scorers]
        if self.kind == "multiple_choice":
            self.scorers = [ScorerSpec(name="choice_accuracy")]
        if not self.scorers:
            raise ValueError("a generate suite needs at least one scorer")
        names = [s.metric for s in self.scorers]  # type: ignore[union-attr]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(
                f"two scorers store their scores as metric '{twice[0]}'; give one a distinct 'metric'"
                " param (evaluate scorers) or drop the repeat"
            )
        if self.primary is None:
            self.primary = names[0]
        elif self.primary not in names:
            raise ValueError(f"primary '{self.primary}' is not one of the scorers {names}")
        return self


class SuiteItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    prompt: str | None = None
    messages: list[Message] | None = None
    reference: Any = None
    choices: list[str] | None = None
    answer: int | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def int_ids(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("id"), int):
            data = {**data, "id": str(data["id"])}
        return data

    @model_validator(mode="after")
    def has_prompt(self) -> SuiteItem:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' or 'messages'")
        return self

    def chat(self, system: str | None = None) -> list[dict[str, str]]:
        msgs = (
            [m.model_dump() for m in self.messages]
            if self.messages
            else [{"role": "user", "content": self.prompt or ""}]
        )
        if system and msgs[0]["role"] != "system":
            msgs = [{"role": "system", "content": system}] + msgs
        return msgs


class Suite(BaseModel):
    spec: SuiteSpec
    items: list[SuiteItem]
    path: Path
    version: str  # content hash

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def scorer_names(self) -> list[str]:
        return [s.metric for s in self.spec.scorers]  # type: ignore[union-attr]


def search_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("TUNEGATE_SUITES", "").split(os.pathsep) if p]
    return extra + [SUITES_DIR]


def available() -> list[str]:
    names: set[str] = set()
    for d in search_dirs():
        names.update(p.parent.name for p in d.glob("*/suite.yaml"))
    return sorted(names)


def find(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    if p.is_dir() and (p / "suite.yaml").is_file():
        return p / "suite.yaml"
    for d in search_dirs():
        candidate = d / name_or_path / "suite.yaml"
        if candidate.is_file() and candidate.resolve().is_relative_to(d.resolve()):  # a name never leaves its root
            return candidate
    raise UserError(f"unknown suite '{name_or_path}'; known suites: {', '.join(available()) or 'none'}", field="suites")


def load(name_or_path: str) -> Suite:
    return _load(find(name_or_path).resolve())


def _item_problem(item: SuiteItem, spec: SuiteSpec, built: list[Any], seen: set[str]) -> tuple[str, str] | None:
    """(field, message) of what is wrong with one validated suite item, if anything."""
    if item.id in seen:
        return "id", f"duplicate item id '{item.id}'"
    if spec.kind == "multiple_choice" and (
        not item.choices or item.answer is None or not 0 <= item.answer < len(item.choices)
    ):
        return "answer", "a multiple-choice item needs 'choices' and an 'answer' index into them"
    for sc in built:
        if problem := sc.check_item(item):
            return problem[0], f"{problem[1]} (scorer '{sc.name}')"
    return None


@cache
def _load(path: Path) -> Suite:
    doc = YamlDoc(path)
    spec: SuiteSpec = doc.validate(SuiteSpec)
    if spec.lm_eval is not None:
        lmeval_config.validate(doc, spec.lm_eval)
        return Suite(spec=spec, items=[], path=path, version=lmeval_config.suite_version(path, spec.lm_eval))
    built = []
    for i, s in enumerate(spec.scorers):
        try:
            built.append(scorers.build(s, base_dir=path.parent))  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError) as exc:
            param = getattr(exc, "param", None)
            short = ("scorers", i, s.name) in doc.lines  # the short form, `- evaluate: {...}`
            loc = ("scorers", i, s.name if short else "params", param) if param else ("scorers", i)
            msg = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)  # KeyError quotes str()
            raise UserError(msg, file=path, line=doc.line_of(loc), field=dotted(loc)) from None
    items_path = (path.parent / spec.items).resolve()
    if not items_path.is_relative_to(path.parent.resolve()):
        raise UserError(
            f"'{spec.items}' is outside the suite's folder {path.parent}; keep a suite's items in its folder",
            file=path,
            line=doc.line_of(("items",)),
            field="items",
        )
    items: list[SuiteItem] = []
    seen: set[str] = set()
    bad = RowErrors()  # every item is checked; the first bad one is reported with the lines of the others
    for lineno, obj in read_jsonl(items_path):
        try:
            item = SuiteItem.model_validate(obj)
        except ValidationError as exc:
            bad.add(from_validation(exc, items_path, line=lineno))
            continue
        if problem := _item_problem(item, spec, built, seen):
            bad.add(UserError(problem[1], file=items_path, line=lineno, field=problem[0]))
        seen.add(item.id)
        items.append(item)
    bad.raise_if_any()
    if not items:
        raise UserError("suite has no items", file=items_path)
    content = path.read_bytes() + b"\0" + items_path.read_bytes()
    identities = [sc.fn.identity for sc in built if hasattr(sc.fn, "identity")]
    if identities:  # what a scorer loaded from outside the suite's files (an evaluate metric's script and version)
        content += b"\0" + json.dumps(identities, sort_keys=True, default=str).encode()
    digest = hashlib.sha256(content).hexdigest()[:16]
    return Suite(spec=spec, items=items, path=path, version=digest)
