"""User-defined Python scorers named in the suite YAML (`module:function` or `file.py:function`)."""

from __future__ import annotations

import importlib
import importlib.util
import math
import re
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from harness.base._errors import UserError
from harness.scorers._registry import ScoreFn, ScorerParamError, scorer


def load_function(ref: str, suite_dir: str | Path | None = None) -> Callable[..., Any]:
    """`package.module:function`, or `path/to/file.py:function` (relative to the suite folder)."""
    module_ref, sep, attr = ref.rpartition(":")
    if not sep or not module_ref or not attr:
        raise ScorerParamError(f"'{ref}' should look like 'package.module:function' or 'file.py:function'", param="ref")
    if module_ref.endswith(".py") or "/" in module_ref or "\\" in module_ref:
        path = Path(module_ref)
        if not path.is_absolute():
            if suite_dir is None:
                raise ScorerParamError(
                    f"relative scorer file '{module_ref}' needs the suite folder to resolve", param="ref"
                )
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
            raise ScorerParamError(
                f"importing '{module_ref}' failed: {type(exc).__name__}: {exc}", param="ref"
            ) from None
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
def python(
    ref: str,
    binary: bool = False,
    higher_is_better: bool = True,
    kwargs: dict[str, Any] | None = None,
    suite_dir: str | None = None,
) -> ScoreFn:
    """A user function `fn(output, item, **kwargs) -> float` named by `ref` (module:function or file.py:function).

    `binary: true` declares 0/1 scores so comparisons add McNemar's test; `higher_is_better: false` declares a
    metric that should fall (an error count, a length overrun), which comparisons and the gate then read
    that way. The function must return a
    finite number (bools count); anything else, or an exception, stops the evaluation with the item named.
    """
    fn = load_function(ref, suite_dir)
    extra = dict(kwargs or {})

    def score(output: str, item: Any) -> float:
        try:
            value = fn(output, item, **extra)
        except Exception as exc:
            raise UserError(
                f"python scorer '{ref}' raised {type(exc).__name__} on item '{item.id}': {exc}",
                field="scorers.params.ref",
            ) from exc
        if isinstance(value, bool):
            value = float(value)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(
                f"python scorer '{ref}' returned {value!r} on item '{item.id}'; it must return a finite number",
                field="scorers.params.ref",
            )
        if binary and value not in (0, 1):
            raise UserError(
                f"python scorer '{ref}' is declared binary but returned {value!r} on item '{item.id}'",
                field="scorers.params.ref",
            )
        return float(value)

    return score
