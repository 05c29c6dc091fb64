"""Scorers: each turns (model output, suite item) into a number per item.

Register a scorer with `@scorer("name")`; a suite names it in YAML with optional params. Binary
scorers (0/1 per item) also get McNemar's exact test in comparisons.

`build(spec)` checks the params against the factory's signature (types included), so a suite with a
misspelt or mistyped param fails at load with the param named (`ScorerParamError.param`). A scorer
that needs something from each item (a reference, a per-item schema or pattern) can say so with a
`check_item(item) -> (field, message) | None` attribute on the function it returns; the suite loader
calls it for every item, so a bad item is reported with its file and line before anything runs.

Task metrics here: exact_match, token_f1 (SQuAD), rouge_l (rouge_score), bleu and chrf (sacrebleu,
sentence level), json_valid / json_match / json_fields / json_schema (jsonschema), regex, numeric
(last number, abs/rel tolerance), instructions / instructions_partial (verifiable format
constraints per item, IFEval style), choice_accuracy (multiple choice by log-likelihood) and python
(a user function named in the suite YAML). The safety scorers (refusal, complied) live in
harness/safety.py and register themselves when this module is imported.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import json
import math
import re
import string
import sys
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator, validate_call

from harness.errors import UserError, dotted

ScoreFn = Callable[[str, Any], float]
ItemCheck = Callable[[Any], "tuple[str, str] | None"]


class ScorerParamError(ValueError):
    """A bad scorer parameter; `param` names it (None when the problem is not one parameter)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        self.param = param
        super().__init__(message)


@dataclass(frozen=True)
class Scorer:
    name: str
    fn: ScoreFn
    binary: bool

    def __call__(self, output: str, item: Any) -> float:
        return float(self.fn(output, item))

    def check_item(self, item: Any) -> tuple[str, str] | None:
        """(field, problem) if this scorer cannot score `item` (e.g. it has no reference), else None."""
        check: ItemCheck | None = getattr(self.fn, "check_item", None)
        return check(item) if check else None


_REGISTRY: dict[str, tuple[Callable[..., ScoreFn], bool]] = {}
_CONTEXT_PARAMS = {"suite_dir"}  # filled in by build(), never by the suite author


def scorer(name: str, *, binary: bool) -> Callable[[Callable[..., ScoreFn]], Callable[..., ScoreFn]]:
    """Register a factory `params -> (output, item) -> float` under `name`."""
    def register(factory: Callable[..., ScoreFn]) -> Callable[..., ScoreFn]:
        _REGISTRY[name] = (factory, binary)
        return factory
    return register


def names() -> list[str]:
    return sorted(_REGISTRY)


def is_binary(name: str) -> bool:
    """Whether scorer `name` gives 0/1 per item (False for unknown names), without building it."""
    return name in _REGISTRY and _REGISTRY[name][1]


def build(spec: Any, *, base_dir: str | Path | None = None) -> Scorer:
    """A ready scorer from a name or a ScorerSpec; `base_dir` (the suite folder) resolves relative paths.

    Raises KeyError for an unknown name and ScorerParamError (a ValueError) for a bad param.
    """
    name = spec if isinstance(spec, str) else spec.name
    params = {} if isinstance(spec, str) else dict(spec.params)
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, names(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise KeyError(f"unknown scorer '{name}'{hint}; known: {', '.join(names())}")
    factory, binary = _REGISTRY[name]
    accepted = inspect.signature(factory).parameters
    for key in params:
        if key in _CONTEXT_PARAMS or key not in accepted:
            allowed = [p for p in accepted if p not in _CONTEXT_PARAMS]
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ScorerParamError(f"unknown parameter '{key}' for scorer '{name}'{hint}; it takes: "
                                   f"{', '.join(allowed) or 'no parameters'}", param=key)
    if "suite_dir" in accepted:
        params["suite_dir"] = None if base_dir is None else str(base_dir)
    try:
        fn = _validating(factory)(**params)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = str(err["loc"][0]) if err["loc"] else None
        where = dotted(err["loc"])
        raise ScorerParamError(f"scorer '{name}' parameter '{where}': {err['msg']}", param=param) from None
    return Scorer(name, fn, getattr(fn, "binary", binary))


@cache
def _validating(factory: Callable[..., ScoreFn]) -> Callable[..., ScoreFn]:
    """The factory with its params checked against its type hints (built once per factory)."""
    return validate_call(factory)


def _with_check(fn: ScoreFn, check: ItemCheck) -> ScoreFn:
    fn.check_item = check  # type: ignore[attr-defined]
    return fn


# --- text helpers -------------------------------------------------------------------------------

def normalize(text: str, steps: list[str]) -> str:
    for step in steps:
        if step == "strip":
            text = text.strip()
        elif step == "lower":
            text = text.lower()
        elif step == "whitespace":
            text = " ".join(text.split())
        elif step == "punctuation":
            text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
        elif step == "nfkc":
            text = unicodedata.normalize("NFKC", text)
        elif step == "articles":
            text = re.sub(r"\b(a|an|the)\b", " ", text, flags=re.I)
        else:
            raise ValueError(f"unknown normalization '{step}' (strip, lower, whitespace, punctuation, nfkc, "
                             "articles)")
    return text


def reference_text(item: Any) -> str:
    ref = item.reference
    return ref if isinstance(ref, str) else json.dumps(ref, separators=(",", ":"), ensure_ascii=False)


def references(item: Any) -> list[str]:
    """The item's reference answers as strings: a list means alternatives, anything else is one answer."""
    if isinstance(item.reference, list):
        return [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in item.reference]
    return [reference_text(item)]


def _needs_reference(item: Any) -> tuple[str, str] | None:
    ref = item.reference
    if ref is None or (isinstance(ref, list) and not ref):
        return "reference", "this suite's scorers need a 'reference' on every item"
    return None


# --- exact match and overlap metrics ------------------------------------------------------------

@scorer("exact_match", binary=True)
def exact_match(normalize_steps: list[str] | None = None) -> ScoreFn:
    """1 if the output equals a reference after the normalization steps (default: strip)."""
    steps = ["strip"] if normalize_steps is None else list(normalize_steps)
    try:
        normalize("", steps)  # validate names early
    except ValueError as exc:
        raise ScorerParamError(str(exc), param="normalize_steps") from None

    def score(output: str, item: Any) -> float:
        out = normalize(output, steps)
        return float(any(out == normalize(r, steps) for r in references(item)))
    return _with_check(score, _needs_reference)


def squad_normalize(text: str) -> str:
    """SQuAD's answer normalization: lower case, drop punctuation and articles, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in string.punctuation
                   and not unicodedata.category(ch).startswith("P"))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1_score(prediction: str, reference: str) -> float:
    """SQuAD v1.1 token F1 between two strings (1.0 when both normalize to nothing)."""
    pred, ref = squad_normalize(prediction).split(), squad_normalize(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


@scorer("token_f1", binary=False)
def token_f1() -> ScoreFn:
    """SQuAD-style token F1 against the best-matching reference."""
    def score(output: str, item: Any) -> float:
        return max(token_f1_score(output, r) for r in references(item))
    return _with_check(score, _needs_reference)


class _UnicodeWordTokenizer:
    """Lower-cased \\w+ tokens: unlike rouge_score's default, keeps non-Latin scripts."""

    def tokenize(self, text: str) -> list[str]:
        return re.findall(r"\w+", text.lower())


@scorer("rouge_l", binary=False)
def rouge_l(measure: Literal["fmeasure", "precision", "recall"] = "fmeasure", use_stemmer: bool = True,
            tokenizer: Literal["default", "unicode"] = "default") -> ScoreFn:
    """ROUGE-L (longest common subsequence) via Google's rouge_score, best over references.

    tokenizer "default" is rouge_score's (ASCII letters and digits only, Porter stemming optional);
    "unicode" keeps every script's word characters (no stemming) for non-English text.
    """
    from rouge_score import rouge_scorer

    tok = _UnicodeWordTokenizer() if tokenizer == "unicode" else None
    rs = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer and tok is None, tokenizer=tok)

    def score(output: str, item: Any) -> float:
        return max(getattr(rs.score(r, output)["rougeL"], measure) for r in references(item))
    return _with_check(score, _needs_reference)


SACREBLEU_TOKENIZERS = ("13a", "intl", "zh", "ja-mecab", "ko-mecab", "char", "flores101", "flores200", "none")


@scorer("bleu", binary=False)
def bleu(tokenize: str = "13a", lowercase: bool = False,
         smooth_method: Literal["exp", "floor", "add-k", "none"] = "exp") -> ScoreFn:
    """Sentence-level BLEU from sacrebleu against all references, scaled to 0..1."""
    import sacrebleu

    if tokenize not in SACREBLEU_TOKENIZERS:
        raise ScorerParamError(f"unknown sacrebleu tokenizer '{tokenize}' ({', '.join(SACREBLEU_TOKENIZERS)})",
                               param="tokenize")

    def score(output: str, item: Any) -> float:
        result = sacrebleu.sentence_bleu(output, references(item), smooth_method=smooth_method,
                                         tokenize=tokenize, lowercase=lowercase)
        return min(1.0, max(0.0, result.score / 100))
    return _with_check(score, _needs_reference)


@scorer("chrf", binary=False)
def chrf(char_order: Annotated[int, Field(ge=1)] = 6, word_order: Annotated[int, Field(ge=0)] = 0,
         beta: Annotated[int, Field(ge=1)] = 2, lowercase: bool = False) -> ScoreFn:
    """Sentence-level chrF (word_order 2 gives chrF++) from sacrebleu, scaled to 0..1."""
    from sacrebleu.metrics import CHRF

    metric = CHRF(char_order=char_order, word_order=word_order, beta=beta, lowercase=lowercase)

    def score(output: str, item: Any) -> float:
        return min(1.0, max(0.0, metric.sentence_score(output, references(item)).score / 100))
    return _with_check(score, _needs_reference)


# --- JSON ---------------------------------------------------------------------------------------

def parse_json(text: str) -> tuple[bool, Any]:
    text = text.strip()
    fence = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, flags=re.S)
    if fence:
        text = fence.group(1)
    try:
        return True, json.loads(text)
    except (json.JSONDecodeError, ValueError, RecursionError):
        return False, None


@scorer("json_valid", binary=True)
def json_valid() -> ScoreFn:
    """1 if the whole output (optionally in a ```json fence) parses as JSON."""
    return lambda output, item: float(parse_json(output)[0])


def _reference_json(item: Any) -> Any:
    return item.reference if not isinstance(item.reference, str) else parse_json(item.reference)[1]


@scorer("json_match", binary=True)
def json_match() -> ScoreFn:
    """1 if the output parses to the same JSON value as the reference (formatting ignored)."""
    def score(output: str, item: Any) -> float:
        ok, value = parse_json(output)
        return float(ok and value == _reference_json(item))
    return _with_check(score, _needs_reference)


@scorer("json_fields", binary=False)
def json_fields() -> ScoreFn:
    """Share of the reference object's fields the output gets exactly right (0 if not an object)."""
    def score(output: str, item: Any) -> float:
        ok, value = parse_json(output)
        ref = _reference_json(item)
        if not (ok and isinstance(value, dict) and isinstance(ref, dict) and ref):
            return 0.0
        return sum(value.get(k) == v for k, v in ref.items()) / len(ref)
    return _with_check(score, _needs_reference)


def _schema_problem(schema: Any) -> str | None:
    from jsonschema import SchemaError, validators

    if not isinstance(schema, (dict, bool)):
        return f"a JSON schema must be an object, not {type(schema).__name__}"
    try:
        validators.validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        return f"invalid JSON schema: {exc.message}"
    return None


@cache
def _validator(schema_json: str) -> Any:
    from jsonschema import validators

    schema = json.loads(schema_json)
    cls = validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


@scorer("json_schema", binary=True)
def json_schema(schema: dict[str, Any] | None = None) -> ScoreFn:
    """1 if the output parses as JSON and validates against the schema (params, or each item's meta.schema).

    The schema's own $schema picks the draft (default: the latest jsonschema knows); "format" is checked.
    """
    if schema is not None and (problem := _schema_problem(schema)):
        raise ScorerParamError(problem, param="schema")
    fixed = None if schema is None else json.dumps(schema, sort_keys=True)

    def check(item: Any) -> tuple[str, str] | None:
        if "schema" in item.meta:
            problem = _schema_problem(item.meta["schema"])
            return ("meta.schema", problem) if problem else None
        if fixed is None:
            return "meta.schema", "json_schema has no 'schema' param, so every item needs meta.schema"
        return None

    def score(output: str, item: Any) -> float:
        ok, value = parse_json(output)
        if not ok:
            return 0.0
        key = json.dumps(item.meta["schema"], sort_keys=True) if "schema" in item.meta else fixed
        if key is None:
            raise UserError(f"item '{item.id}' has no meta.schema and the json_schema scorer has no 'schema' param",
                            field="meta.schema")
        return float(_validator(key).is_valid(value))
    return _with_check(score, check)


# --- regex and numbers --------------------------------------------------------------------------

_REGEX_FLAGS = {"ignorecase": re.I, "multiline": re.M, "dotall": re.S, "verbose": re.X, "ascii": re.A}


@cache
def _compile(pattern: str, flags: int) -> re.Pattern[str]:
    return re.compile(pattern, flags)


@scorer("regex", binary=True)
def regex(pattern: str | None = None, match: Literal["full", "partial"] = "full",
          flags: list[Literal["ignorecase", "multiline", "dotall", "verbose", "ascii"]] | None = None,
          strip: bool = True) -> ScoreFn:
    """1 if the output matches the pattern (params, or each item's meta.pattern).

    match "full": the whole (stripped) output must match; "partial": the pattern occurs anywhere.
    """
    bits = 0
    for f in flags or []:
        bits |= _REGEX_FLAGS[f]
    compiled: re.Pattern[str] | None = None
    if pattern is not None:
        try:
            compiled = _compile(pattern, bits)
        except re.error as exc:
            raise ScorerParamError(f"invalid regular expression: {exc}", param="pattern") from None

    def check(item: Any) -> tuple[str, str] | None:
        if "pattern" in item.meta:
            if not isinstance(item.meta["pattern"], str):
                return "meta.pattern", "must be a string"
            try:
                _compile(item.meta["pattern"], bits)
            except re.error as exc:
                return "meta.pattern", f"invalid regular expression: {exc}"
            return None
        if compiled is None:
            return "meta.pattern", "regex has no 'pattern' param, so every item needs meta.pattern"
        return None

    def score(output: str, item: Any) -> float:
        rx = _compile(item.meta["pattern"], bits) if "pattern" in item.meta else compiled
        if rx is None:
            raise UserError(f"item '{item.id}' has no meta.pattern and the regex scorer has no 'pattern' param",
                            field="meta.pattern")
        text = output.strip() if strip else output
        return float((rx.fullmatch(text) if match == "full" else rx.search(text)) is not None)
    return _with_check(score, check)


_NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>[-+\u2212]?)(?:"
    r"(?P<frac>\d+/\d+)"                                   # 3/4
    r"|(?P<num>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"  # 1,234.5  12  .5
    r")(?P<exp>[eE][-+]?\d+)?")


def last_number(text: str) -> float | None:
    """The last number written in `text` (thousands commas, signs, decimals, 1e3, a/b), or None."""
    found = None
    for m in _NUMBER.finditer(text):
        found = m
    if found is None:
        return None
    sign = -1.0 if found.group("sign") in ("-", "\u2212") else 1.0
    if found.group("frac"):
        num, den = found.group("frac").split("/")
        return None if int(den) == 0 else sign * int(num) / int(den)
    value = float(found.group("num").replace(",", "") + (found.group("exp") or ""))
    return sign * value


def _reference_number(item: Any) -> float | None:
    ref = item.reference
    if isinstance(ref, bool):
        return None
    if isinstance(ref, (int, float)):
        return float(ref)
    if isinstance(ref, str):
        return last_number(ref)
    return None


@scorer("numeric", binary=True)
def numeric(abs_tol: Annotated[float, Field(ge=0)] = 1e-6, rel_tol: Annotated[float, Field(ge=0)] = 0.0) -> ScoreFn:
    """1 if the last number in the output is within abs_tol or rel_tol of the reference number."""
    def check(item: Any) -> tuple[str, str] | None:
        if _reference_number(item) is None:
            return "reference", "the numeric scorer needs a number (or a string with a number) as 'reference'"
        return None

    def score(output: str, item: Any) -> float:
        ref, got = _reference_number(item), last_number(output)
        if ref is None:
            raise UserError(f"item '{item.id}' has no numeric reference", field="reference")
        if got is None or not math.isfinite(got):
            return 0.0
        return float(math.isclose(got, ref, rel_tol=rel_tol, abs_tol=abs_tol))
    return _with_check(score, check)


# --- verifiable instructions (IFEval style) -----------------------------------------------------

class _Count(BaseModel):
    model_config = ConfigDict(extra="forbid")
    exactly: int | None = Field(default=None, ge=0)
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def bounds(self) -> "_Count":
        if self.exactly is None and self.min is None and self.max is None:
            raise ValueError("give 'exactly', 'min' or 'max'")
        return self

    def ok(self, n: int) -> bool:
        return ((self.exactly is None or n == self.exactly) and (self.min is None or n >= self.min)
                and (self.max is None or n <= self.max))


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
    def compiles(self) -> "Regex":
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
        return len(out) >= 2 and out[0] in "\"\u201c" and out[-1] in "\"\u201d"


Constraint = Annotated[WordCount | SentenceCount | LineCount | CharCount | BulletCount | Case | StartsWith | EndsWith
                       | Contains | Excludes | NoCommas | OneOf | JsonShape | Regex | Quoted,
                       Field(discriminator="type")]
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


_CONSTRAINT_TAGS = {"word_count", "sentence_count", "line_count", "char_count", "bullet_count", "case", "starts_with",
                    "ends_with", "contains", "excludes", "no_commas", "one_of", "json", "regex", "quoted"}


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


# --- multiple choice ----------------------------------------------------------------------------

@scorer("choice_accuracy", binary=True)
def choice_accuracy() -> ScoreFn:
    """Multiple choice by log-likelihood: the output is the most likely choice's text."""
    return lambda output, item: float(output.strip() == item.choices[item.answer].strip())


# --- user-defined Python scorers ----------------------------------------------------------------

def load_function(ref: str, suite_dir: str | Path | None = None) -> Callable[..., Any]:
    """`package.module:function`, or `path/to/file.py:function` (relative to the suite folder)."""
    module_ref, sep, attr = ref.rpartition(":")
    if not sep or not module_ref or not attr:
        raise ScorerParamError(f"'{ref}' should look like 'package.module:function' or 'file.py:function'",
                               param="ref")
    if module_ref.endswith(".py") or "/" in module_ref or "\\" in module_ref:
        path = Path(module_ref)
        if not path.is_absolute():
            if suite_dir is None:
                raise ScorerParamError(f"relative scorer file '{module_ref}' needs the suite folder to resolve",
                                       param="ref")
            path = Path(suite_dir) / path
        path = path.resolve()
        if not path.is_file():
            raise ScorerParamError(f"scorer file not found: {path}", param="ref")
        module = _import_file(path)
    else:
        try:
            module = importlib.import_module(module_ref)
        except ImportError as exc:
            raise ScorerParamError(f"cannot import module '{module_ref}': {exc}", param="ref") from None
        except Exception as exc:  # the user's module raised while importing
            raise ScorerParamError(f"importing '{module_ref}' failed: {type(exc).__name__}: {exc}",
                                   param="ref") from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise ScorerParamError(f"'{module_ref}' has no attribute '{attr}'", param="ref")
    if not callable(fn):
        raise ScorerParamError(f"'{ref}' is not callable", param="ref")
    return fn


@cache
def _import_file(path: Path) -> Any:
    name = "tunegate_user_scorer_" + re.sub(r"\W", "_", str(path))
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ScorerParamError(f"cannot load Python file {path}", param="ref")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's file raised while importing
        del sys.modules[name]
        raise ScorerParamError(f"importing {path} failed: {type(exc).__name__}: {exc}", param="ref") from None
    return module


@scorer("python", binary=False)
def python(ref: str, binary: bool = False, kwargs: dict[str, Any] | None = None,
           suite_dir: str | None = None) -> ScoreFn:
    """A user function `fn(output, item, **kwargs) -> float` named by `ref` (module:function or file.py:function).

    `binary: true` declares 0/1 scores so comparisons add McNemar's test. The function must return a
    finite number (bools count); anything else, or an exception, stops the evaluation with the item named.
    """
    fn = load_function(ref, suite_dir)
    extra = dict(kwargs or {})

    def score(output: str, item: Any) -> float:
        try:
            value = fn(output, item, **extra)
        except Exception as exc:
            raise UserError(f"python scorer '{ref}' raised {type(exc).__name__} on item '{item.id}': {exc}",
                            field="scorers.params.ref") from exc
        if isinstance(value, bool):
            value = float(value)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f"python scorer '{ref}' returned {value!r} on item '{item.id}'; it must return a "
                            "finite number", field="scorers.params.ref")
        if binary and value not in (0, 1):
            raise UserError(f"python scorer '{ref}' is declared binary but returned {value!r} on item "
                            f"'{item.id}'", field="scorers.params.ref")
        return float(value)
    score.binary = binary  # type: ignore[attr-defined]
    return score


from harness import safety as _safety  # noqa: E402,F401  (registers the refusal/complied scorers)
