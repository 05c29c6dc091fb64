"""Verifiable instruction constraints per item (IFEval style): word, sentence and line counts, case, format."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from harness.scorers._registry import ScoreFn, _with_check, scorer
from harness.scorers._structured import parse_json
from harness.scorers._text import squad_normalize


class _Count(BaseModel):
    model_config = ConfigDict(extra="forbid")
    exactly: int | None = Field(default=None, ge=0)
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def bounds(self) -> _Count:
        if self.exactly is None and self.min is None and self.max is None:
            raise ValueError("give 'exactly', 'min' or 'max'")
        return self

    def ok(self, n: int) -> bool:
        return (
            (self.exactly is None or n == self.exactly)
            and (self.min is None or n >= self.min)
            and (self.max is None or n <= self.max)
        )


class WordCount(_Count):
    type: Literal["word_count"]

    def check(self, text: str) -> bool:
        return self.ok(len(words(text)))


class SentenceCount(_Count):
    type: Literal["sentence_count"]

    def check(self, text: str) -> bool:
        return self.ok(len(sentences(text)))


class LineCount(_Count):
    type: Literal["line_count"]

    def check(self, text: str) -> bool:
        return self.ok(len([ln for ln in text.strip().splitlines() if ln.strip()]))


class CharCount(_Count):
    type: Literal["char_count"]

    def check(self, text: str) -> bool:
        return self.ok(len(text.strip()))


class BulletCount(_Count):
    type: Literal["bullet_count"]

    def check(self, text: str) -> bool:
        return self.ok(sum(1 for ln in text.splitlines() if re.match(r"\s*(?:[-*\u2022]|\d+[.)])\s+\S", ln)))


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["case"]
    case: Literal["upper", "lower"]

    def check(self, text: str) -> bool:
        """Every cased letter in the wanted case, and at least one cased letter (CJK alone says nothing)."""
        cased = [ch for ch in text if ch.upper() != ch.lower()]
        return bool(cased) and all(ch.isupper() if self.case == "upper" else ch.islower() for ch in cased)


class StartsWith(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["starts_with"]
    text: str = Field(min_length=1)
    case_sensitive: bool = False

    def check(self, text: str) -> bool:
        out, want = text.strip(), self.text
        return out.startswith(want) if self.case_sensitive else out.lower().startswith(want.lower())


class EndsWith(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["ends_with"]
    text: str = Field(min_length=1)
    case_sensitive: bool = False

    def check(self, text: str) -> bool:
        out, want = text.strip(), self.text
        return out.endswith(want) if self.case_sensitive else out.lower().endswith(want.lower())


class Contains(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["contains"]
    words: list[str] = Field(min_length=1)

    def check(self, text: str) -> bool:
        return all(_word_re(w).search(text) for w in self.words)


class Excludes(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["excludes"]
    words: list[str] = Field(min_length=1)

    def check(self, text: str) -> bool:
        return not any(_word_re(w).search(text) for w in self.words)


class NoCommas(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["no_commas"]

    def check(self, text: str) -> bool:
        return "," not in text and "\uff0c" not in text


class OneOf(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["one_of"]
    options: list[str] = Field(min_length=1)

    def check(self, text: str) -> bool:
        out = squad_normalize(text)
        return any(out == squad_normalize(o) for o in self.options)


class JsonShape(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["json"]
    json_type: Literal["list", "object", "any"] = "any"
    length: int | None = Field(default=None, ge=0)
    keys: list[str] | None = None
    items: Literal["string", "number", "integer", "boolean", "object", "list"] | None = None

    def check(self, text: str) -> bool:
        ok, value = parse_json(text)
        if not ok:
            return False
        if self.json_type == "list" and not isinstance(value, list):
            return False
        if self.json_type == "object" and not isinstance(value, dict):
            return False
        if self.length is not None and (not isinstance(value, (list, dict)) or len(value) != self.length):
            return False
        if self.keys is not None and (not isinstance(value, dict) or set(value) != set(self.keys)):
            return False
        if self.items is not None:
            members = value if isinstance(value, list) else list(value.values()) if isinstance(value, dict) else None
            return members is not None and all(_json_kind(v, self.items) for v in members)
        return True


class Regex(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["regex"]
    pattern: str
    match: Literal["full", "partial"] = "full"
    ignorecase: bool = False

    @model_validator(mode="after")
    def compiles(self) -> Regex:
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        return self

    def check(self, text: str) -> bool:
        rx = re.compile(self.pattern, re.I if self.ignorecase else 0)
        return (rx.fullmatch(text.strip()) if self.match == "full" else rx.search(text)) is not None


class Quoted(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["quoted"]

    def check(self, text: str) -> bool:
        out = text.strip()
        return len(out) >= 2 and out[0] in '"\u201c' and out[-1] in '"\u201d'


Constraint = Annotated[
    WordCount
    | SentenceCount
    | LineCount
    | CharCount
    | BulletCount
    | Case
    | StartsWith
    | EndsWith
    | Contains
    | Excludes
    | NoCommas
    | OneOf
    | JsonShape
    | Regex
    | Quoted,
    Field(discriminator="type"),
]
_CONSTRAINTS = TypeAdapter(list[Constraint])


def words(text: str) -> list[str]:
    """Whitespace-separated tokens with at least one letter or digit ("don't", "3.5", "well-known")."""
    return [w for w in text.split() if any(ch.isalnum() for ch in w)]


def sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?\u3002\uff01\uff1f])\s+", text.strip())
    return [p for p in parts if any(ch.isalnum() for ch in p)]


def _word_re(word: str) -> re.Pattern[str]:
    return re.compile(r"(?<!\w)" + re.escape(word) + r"(?!\w)", re.I)


def _json_kind(value: Any, kind: str) -> bool:
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    types = {"string": str, "boolean": bool, "object": dict, "list": list}
    return isinstance(value, types[kind])


def constraints_of(item: Any) -> list[Any]:
    return _CONSTRAINTS.validate_python(item.meta.get("constraints"))


def _check_constraints(item: Any) -> tuple[str, str] | None:
    if not item.meta.get("constraints"):
        return "meta.constraints", "instruction scorers need a non-empty list meta.constraints on every item"
    try:
        constraints_of(item)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = list(err["loc"])
        # a discriminated union puts the tag right after the list index; it is not a field
        loc = [p for i, p in enumerate(loc) if not (i > 0 and isinstance(loc[i - 1], int) and p in _CONSTRAINT_TAGS)]
        return "meta.constraints" + _loc_suffix(loc), err["msg"]
    return None


_CONSTRAINT_TAGS = {
    "word_count",
    "sentence_count",
    "line_count",
    "char_count",
    "bullet_count",
    "case",
    "starts_with",
    "ends_with",
    "contains",
    "excludes",
    "no_commas",
    "one_of",
    "json",
    "regex",
    "quoted",
}


def _loc_suffix(loc: list[Any]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)


@scorer("instructions", binary=True)
def instructions() -> ScoreFn:
    """1 if the output satisfies every verifiable constraint in the item's meta.constraints."""

    def score(output: str, item: Any) -> float:
        return float(all(c.check(output) for c in constraints_of(item)))

    return _with_check(score, _check_constraints)


@scorer("instructions_partial", binary=False)
def instructions_partial() -> ScoreFn:
    """Share of the item's meta.constraints the output satisfies."""

    def score(output: str, item: Any) -> float:
        cs = constraints_of(item)
        return sum(c.check(output) for c in cs) / len(cs)

    return _with_check(score, _check_constraints)
