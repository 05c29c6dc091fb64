"""The scorer registry: `@scorer(name, binary=..., higher_is_better=...)` registers a factory; `build(spec)` checks
its params against the signature. A factory that takes a `binary` or `higher_is_better` parameter lets the suite
author declare it (the python scorer does), one that takes `per_item` lets them declare a corpus-level metric (the
evaluate scorer does); `kind(spec)` is what a scorer's metric is, without building it. A scorer's scores are stored
under its name, or under the name its registered `metric` function gives for the spec's params."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError, validate_call

from harness.base._errors import dotted

ScoreFn = Callable[[str, Any], float]
ItemCheck = Callable[[Any], "tuple[str, str] | None"]
MetricNamer = Callable[[dict[str, Any]], str]  # a scorer's params -> the metric its scores are stored under


class ScorerParamError(ValueError):
    """A bad scorer parameter; `param` names it (None when the problem is not one parameter)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        self.param = param
        super().__init__(message)


@dataclass(frozen=True)
class MetricKind:
    """How to read a metric: which way is better (as lm-evaluation-harness's `higher_is_better`), and whether
    every item scores 0 or 1 (then McNemar's test and Wilson intervals apply). A corpus-level metric has one value
    for the whole suite and no per-item scores, so nothing item-based (paired intervals, McNemar, flips) applies."""

    higher_is_better: bool = True
    binary: bool = False
    corpus: bool = False


@dataclass(frozen=True)
class Registered:
    factory: Callable[..., ScoreFn]
    kind: MetricKind
    metric: MetricNamer | None = None  # where the metric is not named like the scorer


@dataclass(frozen=True)
class Scorer:
    name: str
    fn: ScoreFn
    binary: bool
    higher_is_better: bool = True

    def __call__(self, output: str, item: Any) -> float:
        return float(self.fn(output, item))

    def check_item(self, item: Any) -> tuple[str, str] | None:
        """(field, problem) if this scorer cannot score `item` (e.g. it has no reference), else None."""
        check: ItemCheck | None = getattr(self.fn, "check_item", None)
        return check(item) if check else None


_REGISTRY: dict[str, Registered] = {}
_CONTEXT_PARAMS = {"suite_dir"}  # filled in by build(), never by the suite author
_KIND_PARAMS = ("higher_is_better", "binary")  # a factory taking these lets the suite author declare them
_BOOL = TypeAdapter(bool)


def scorer(
    name: str, *, binary: bool, higher_is_better: bool = True, metric: MetricNamer | None = None
) -> Callable[[Callable[..., ScoreFn]], Callable[..., ScoreFn]]:
    """Register a factory `params -> (output, item) -> float` under `name`, with its metric's direction and
    whether it scores 0/1 per item; `metric(params)`, if given, names the metric its scores are stored under."""

    def register(factory: Callable[..., ScoreFn]) -> Callable[..., ScoreFn]:
        _REGISTRY[name] = Registered(factory, MetricKind(higher_is_better=higher_is_better, binary=binary), metric)
        return factory

    return register


def names() -> list[str]:
    return sorted(_REGISTRY)


def metric_name(spec: Any) -> str:
    """The metric a scorer's scores are stored under: its name, or what its registered `metric` function gives
    for the spec's params (the evaluate scorer's `<metric>/<key>`)."""
    name = spec if isinstance(spec, str) else spec.name
    registered = _REGISTRY.get(name)
    if registered is None or registered.metric is None or isinstance(spec, str):
        return name
    return registered.metric(dict(spec.params))


def kind(spec: Any) -> MetricKind:
    """The metric a scorer (a name or a ScorerSpec) produces: as registered, unless the spec declares `binary`
    or `higher_is_better` to a factory that takes them. An unknown name: higher is better, not binary."""
    name = spec if isinstance(spec, str) else spec.name
    if name not in _REGISTRY:
        return MetricKind()
    registered = _REGISTRY[name]
    params = {} if isinstance(spec, str) else dict(spec.params)
    accepted = inspect.signature(registered.factory).parameters
    declared = {}
    for key in _KIND_PARAMS:
        if key in accepted:
            default = accepted[key].default
            value = params.get(key, getattr(registered.kind, key) if default is inspect.Parameter.empty else default)
            declared[key] = _BOOL.validate_python(value)
    if "per_item" in accepted:
        declared["corpus"] = not _BOOL.validate_python(params.get("per_item", accepted["per_item"].default))
    return MetricKind(**{**vars(registered.kind), **declared})


def is_binary(name: str) -> bool:
    """Whether scorer `name` gives 0/1 per item as registered (False for unknown names), without building it."""
    return kind(name).binary


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
    factory = _REGISTRY[name].factory
    accepted = inspect.signature(factory).parameters
    for key in params:
        if key in _CONTEXT_PARAMS or key not in accepted:
            allowed = [p for p in accepted if p not in _CONTEXT_PARAMS]
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ScorerParamError(
                f"unknown parameter '{key}' for scorer '{name}'{hint}; it takes: "
                f"{', '.join(allowed) or 'no parameters'}",
                param=key,
            )
    if "suite_dir" in accepted:
        params["suite_dir"] = None if base_dir is None else str(base_dir)
    try:
        fn = _validating(factory)(**params)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = str(err["loc"][0]) if err["loc"] else None
        where = dotted(err["loc"])
        raise ScorerParamError(f"scorer '{name}' parameter '{where}': {err['msg']}", param=param) from None
    metric = kind(spec)
    return Scorer(metric_name(spec), fn, metric.binary, metric.higher_is_better)


@cache
def _validating(factory: Callable[..., ScoreFn]) -> Callable[..., ScoreFn]:
    """The factory with its params checked against its type hints (built once per factory)."""
    return validate_call(factory)


def _with_check(fn: ScoreFn, check: ItemCheck) -> ScoreFn:
    fn.check_item = check  # type: ignore[attr-defined]
    return fn
