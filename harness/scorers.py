"""Scorers: each turns (model output, suite item) into a number per item.

Register a scorer with `@scorer("name")`; a suite names it in YAML with optional params. Binary
scorers (0/1 per item) also get McNemar's exact test in comparisons.
"""
from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ScoreFn = Callable[[str, Any], float]


@dataclass(frozen=True)
class Scorer:
    name: str
    fn: ScoreFn
    binary: bool

    def __call__(self, output: str, item: Any) -> float:
        return float(self.fn(output, item))


_REGISTRY: dict[str, tuple[Callable[..., ScoreFn], bool]] = {}


def scorer(name: str, *, binary: bool) -> Callable[[Callable[..., ScoreFn]], Callable[..., ScoreFn]]:
    """Register a factory `params -> (output, item) -> float` under `name`."""
    def register(factory: Callable[..., ScoreFn]) -> Callable[..., ScoreFn]:
        _REGISTRY[name] = (factory, binary)
        return factory
    return register


def names() -> list[str]:
    return sorted(_REGISTRY)


def build(spec: Any) -> Scorer:
    name = spec if isinstance(spec, str) else spec.name
    params = {} if isinstance(spec, str) else dict(spec.params)
    if name not in _REGISTRY:
        raise KeyError(f"unknown scorer '{name}'; known: {', '.join(names())}")
    factory, binary = _REGISTRY[name]
    return Scorer(name, factory(**params), binary)


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
        else:
            raise ValueError(f"unknown normalization '{step}' (strip, lower, whitespace, punctuation, nfkc)")
    return text


def reference_text(item: Any) -> str:
    ref = item.reference
    return ref if isinstance(ref, str) else json.dumps(ref, separators=(",", ":"), ensure_ascii=False)


@scorer("exact_match", binary=True)
def exact_match(normalize_steps: list[str] | None = None) -> ScoreFn:
    steps = ["strip"] if normalize_steps is None else list(normalize_steps)
    normalize("", steps)  # validate names early

    def score(output: str, item: Any) -> float:
        refs = item.reference if isinstance(item.reference, list) else [reference_text(item)]
        out = normalize(output, steps)
        return float(any(out == normalize(str(r), steps) for r in refs))
    return score


def parse_json(text: str) -> tuple[bool, Any]:
    text = text.strip()
    fence = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, flags=re.S)
    if fence:
        text = fence.group(1)
    try:
        return True, json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return False, None


@scorer("json_valid", binary=True)
def json_valid() -> ScoreFn:
    """1 if the whole output (optionally in a ```json fence) parses as JSON."""
    return lambda output, item: float(parse_json(output)[0])


@scorer("json_match", binary=True)
def json_match() -> ScoreFn:
    """1 if the output parses to the same JSON value as the reference (formatting ignored)."""
    def score(output: str, item: Any) -> float:
        ok, value = parse_json(output)
        ref = item.reference if not isinstance(item.reference, str) else parse_json(item.reference)[1]
        return float(ok and value == ref)
    return score


@scorer("json_fields", binary=False)
def json_fields() -> ScoreFn:
    """Share of the reference object's fields the output gets exactly right (0 if not an object)."""
    def score(output: str, item: Any) -> float:
        ok, value = parse_json(output)
        ref = item.reference if not isinstance(item.reference, str) else parse_json(item.reference)[1]
        if not (ok and isinstance(value, dict) and isinstance(ref, dict) and ref):
            return 0.0
        return sum(value.get(k) == v for k, v in ref.items()) / len(ref)
    return score


@scorer("choice_accuracy", binary=True)
def choice_accuracy() -> ScoreFn:
    """Multiple choice by log-likelihood: the output is the most likely choice's text."""
    return lambda output, item: float(output.strip() == item.choices[item.answer].strip())
