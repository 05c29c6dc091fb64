"""The scorer registry: `@scorer(name)` registers a factory; `build(spec)` checks its params against the signature."""
from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError, validate_call

from harness.errors import dotted

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
