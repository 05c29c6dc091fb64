"""Structured-output scorers: JSON valid / match / fields / schema, regex, numeric with tolerance."""

from __future__ import annotations

import json
import math
import re
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import Field

from harness.base._errors import UserError
from harness.scorers._registry import ScoreFn, ScorerParamError, _with_check, scorer
from harness.scorers._text import _needs_reference


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
            raise UserError(
                f"item '{item.id}' has no meta.schema and the json_schema scorer has no 'schema' param",
                field="meta.schema",
            )
        return float(_validator(key).is_valid(value))

    return _with_check(score, check)


_REGEX_FLAGS = {"ignorecase": re.I, "multiline": re.M, "dotall": re.S, "verbose": re.X, "ascii": re.A}


@cache
def _compile(pattern: str, flags: int) -> re.Pattern[str]:
    return re.compile(pattern, flags)


@scorer("regex", binary=True)
def regex(
    pattern: str | None = None,
    match: Literal["full", "partial"] = "full",
    flags: list[Literal["ignorecase", "multiline", "dotall", "verbose", "ascii"]] | None = None,
    strip: bool = True,
) -> ScoreFn:
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
            raise UserError(
                f"item '{item.id}' has no meta.pattern and the regex scorer has no 'pattern' param",
                field="meta.pattern",
            )
        text = output.strip() if strip else output
        return float((rx.fullmatch(text) if match == "full" else rx.search(text)) is not None)

    return _with_check(score, check)


_NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>[-+\u2212]?)(?:"
    r"(?P<frac>\d+/\d+)"  # 3/4
    r"|(?P<num>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"  # 1,234.5  12  .5
    r")(?P<exp>[eE][-+]?\d+)?"
)


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
