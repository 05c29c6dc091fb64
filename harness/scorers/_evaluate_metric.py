"""Any Hugging Face `evaluate` metric as a suite scorer (the optional extra `tunegate[evaluate]`).

A suite names the metric by a local script or folder (`path`, resolved against the suite folder: always works
offline) or by a Hub name (`name`: works where the network does, or where `evaluate` has it cached). The metric
is loaded when the suite loads, so a Hub name that cannot be fetched fails there, before any generation.

Per item (`per_item: true`, the default) the scorer calls `compute` once on every output of the suite: where the
value under `key` is a list as long as the predictions (bertscore's f1), those are the item scores; where it is
one number, `compute` runs again once per item and each item gets its own value. A corpus-level metric
(`per_item: false`: corpus BLEU, SARI, a correlation) is computed once over the suite and stored as the suite's
metric with no item scores; the gate refuses item-based rules on it.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import os
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from harness.base._errors import UserError
from harness.scorers._registry import ScorerParamError, scorer

INSTALL = "pip install 'tunegate[evaluate]'"
_TRUE = {"1", "ON", "YES", "TRUE"}


def _offline() -> bool:
    return any(os.environ.get(v, "").upper() in _TRUE for v in ("HF_HUB_OFFLINE", "HF_EVALUATE_OFFLINE"))


def _evaluate() -> Any:
    try:
        import evaluate  # heavy: imports datasets, pyarrow and pandas; the optional extra tunegate[evaluate]
    except ImportError:
        raise ScorerParamError(f"the evaluate scorer needs Hugging Face evaluate: {INSTALL}") from None
    return evaluate


def _content_hash(path: Path) -> str:
    """sha256 over a script, or over every file of a folder (relative names and bytes, sorted; caches skipped)."""
    digest = hashlib.sha256()
    files = (
        [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    )
    for f in files:
        digest.update(str(f.relative_to(path) if f != path else f.name).encode() + b"\0")
        digest.update(f.read_bytes() + b"\0")
    return digest.hexdigest()


@cache
def _load(source: str, local: bool, config_name: str | None, revision: str | None, content: str | None = None) -> Any:
    """The loaded EvaluationModule (one per process for each metric and script content): predictions are kept in
    memory, never written to evaluate's cache folder."""
    evaluate = _evaluate()
    if local:
        return evaluate.load(source, config_name=config_name, keep_in_memory=True)
    from datasets import DownloadConfig  # evaluate downloads through datasets' config

    download = DownloadConfig(local_files_only=True) if _offline() else None
    return evaluate.load(
        source, config_name=config_name, revision=revision, keep_in_memory=True, download_config=download
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


def _features(module: Any) -> set[str]:
    features = module.info.features
    return {name for f in (features if isinstance(features, list) else [features]) for name in f}


def _number(value: Any) -> float | None:
    """A finite float from a number (numpy scalars and one-element lists included), else None."""
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if hasattr(value, "item") and getattr(value, "size", 1) == 1:
        value = value.item()
    if not isinstance(value, (int, float)):  # bools are ints
        return None
    return float(value) if math.isfinite(value) else None


class EvaluateMetric:
    """The `evaluate` scorer. harness.evaluation calls `item_scores` (per-item metrics) or `corpus_score`
    (corpus-level ones) once for the whole suite; calling the scorer on one item computes that item alone."""

    def __init__(
        self,
        module: Any,
        label: str,
        key: str,
        args: dict[str, Any],
        inputs: dict[str, str],
        per_item: bool,
        binary: bool,
        identity: dict[str, Any],
    ) -> None:
        self.module, self.label, self.key, self.args, self.inputs = module, label, key, args, inputs
        self.per_item, self.binary, self.identity = per_item, binary, identity
        self.references = "references" in _features(module) and "references" not in inputs

    def check_item(self, item: Any) -> tuple[str, str] | None:
        ref = item.reference
        if self.references and (ref is None or (isinstance(ref, list) and not ref)):
            return "reference", f"evaluate metric '{self.label}' compares with references: every item needs one"
        for field in self.inputs.values():
            if item_field(item, field) is None:
                return field, f"evaluate metric '{self.label}' takes '{field}' as an input: every item needs it"
        return None

    def _compute(self, outputs: Sequence[str], items: Sequence[Any]) -> Any:
        inputs: dict[str, Any] = {"predictions": list(outputs)}
        if self.references:
            inputs["references"] = [item.reference for item in items]
        for name, field in self.inputs.items():
            inputs[name] = [item_field(item, field) for item in items]
        where = f"item '{items[0].id}'" if len(items) == 1 else f"the {len(items)} items"
        try:
            result = self.module.compute(**inputs, **self.args)
        except Exception as exc:  # the metric's own code raised
            raise UserError(
                f"evaluate metric '{self.label}' raised {type(exc).__name__} on {where}: {_first_line(exc)}",
                field="scorers.params",
            ) from exc
        if not isinstance(result, dict) or self.key not in result:
            have = ", ".join(map(str, result)) if isinstance(result, dict) else type(result).__name__
            raise UserError(
                f"evaluate metric '{self.label}' gave no '{self.key}' (it gave: {have}); set 'key' to one of those",
                field="scorers.params.key",
            )
        return result[self.key]

    def _checked(self, value: Any, item: Any) -> float:
        number = _number(value)
        if number is None:
            hint = "; a metric defined only over the whole suite needs per_item: false" if self.per_item else ""
            raise UserError(
                f"evaluate metric '{self.label}' gave {self.key}={value!r} on item '{item.id}', not a "
                f"finite number{hint}",
                field="scorers.params.key",
            )
        if self.binary and number not in (0.0, 1.0):
            raise UserError(
                f"evaluate metric '{self.label}' is declared binary but gave {self.key}={number!r} on item '{item.id}'",
                field="scorers.params.binary",
            )
        return number

    def item_scores(self, outputs: Sequence[str], items: Sequence[Any]) -> list[float]:
        """One score per item: the metric's own per-item list where it gives one, else one compute per item."""
        if not items:
            return []
        value = self._compute(outputs, items)
        if hasattr(value, "tolist"):
            value = value.tolist()
        if isinstance(value, (list, tuple)) and len(value) == len(items) and len(items) > 1:
            return [self._checked(v, item) for v, item in zip(value, items)]
        if len(items) == 1:
            return [self._checked(value, items[0])]
        return [self(output, item) for output, item in zip(outputs, items)]

    def corpus_score(self, outputs: Sequence[str], items: Sequence[Any]) -> float:
        value = self._compute(outputs, items)
        number = _number(value)
        if number is None:
            raise UserError(
                f"evaluate metric '{self.label}' is corpus-level (per_item: false) but gave "
                f"{self.key}={value!r}, not one finite number",
                field="scorers.params.key",
            )
        return number

    def __call__(self, output: str, item: Any) -> float:
        return self._checked(self._compute([output], [item]), item)


def item_field(item: Any, field: str) -> Any:
    """An item's `prompt`, `reference` or `id`, or a value under its meta (`meta.source`, `meta.a.b`); None if
    absent."""
    if not field.startswith("meta."):
        return getattr(item, field)
    value: Any = item.meta
    for part in field.split(".")[1:]:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _metric(params: dict[str, Any]) -> str:
    """`<metric>/<key>`: the Hub name (its last part) or the script or folder's name, then the result key;
    `metric` overrides it."""
    if params.get("metric"):
        return str(params["metric"])
    source = str(params.get("path") or params.get("name") or "evaluate")
    stem = Path(source.rstrip("/\\")).name.removesuffix(".py") or "evaluate"
    return f"{stem}/{params.get('key', '?')}"


@scorer("evaluate", binary=False, metric=_metric)
def evaluate_metric(
    key: str,
    path: str | None = None,
    name: str | None = None,
    args: dict[str, Any] | None = None,
    inputs: dict[str, str] | None = None,
    config_name: str | None = None,
    revision: str | None = None,
    per_item: bool = True,
    higher_is_better: bool = True,
    binary: bool = False,
    metric: str | None = None,
    suite_dir: str | None = None,
) -> EvaluateMetric:
    """A Hugging Face `evaluate` metric: `path` (a local script or folder, relative to the suite folder) or `name`
    (a Hub metric such as bertscore, or owner/metric); `key` picks the value from what `compute` returns; `args`
    are passed to `compute`, and `inputs` maps further `compute` inputs to item fields (`{sources: meta.source}`:
    one value per item, as predictions); each item's `reference` goes in as `references` where the metric takes
    them. `config_name` (and for a Hub name `revision`) go to `evaluate.load`. `per_item: false`
    declares a corpus-level metric; `binary: true` declares 0/1 item scores (McNemar's test applies);
    `higher_is_better: false` a metric that should fall. `metric` names the stored metric (default
    `<metric>/<key>`). The metric's identity (Hub name or script content hash, evaluate's version, args) is part of
    the suite's version."""
    if (path is None) == (name is None):
        raise ScorerParamError(
            "the evaluate scorer needs exactly one of 'path' (a local metric script or folder) or "
            "'name' (a Hugging Face Hub metric)",
            param="path" if path else "name",
        )
    if len(_metric({"metric": metric, "path": path, "name": name, "key": key})) > 100:
        raise ScorerParamError(
            "the stored metric name is longer than 100 characters; give a shorter 'metric'", param="metric"
        )
    if binary and not per_item:
        raise ScorerParamError(
            "a corpus-level metric (per_item: false) has no item scores to be binary", param="binary"
        )
    inputs = dict(inputs or {})
    for input_name, field in inputs.items():
        if input_name == "predictions" or not (
            field in ("prompt", "reference", "id") or (field.startswith("meta.") and len(field) > len("meta."))
        ):
            raise ScorerParamError(
                f"input '{input_name}: {field}': give a compute input other than predictions, and "
                "an item field: prompt, reference, id or meta.<key>",
                param="inputs",
            )
    evaluate = _evaluate()
    args = dict(args or {})
    identity: dict[str, Any] = {
        "evaluate": evaluate.__version__,
        "key": key,
        "args": args,
        "inputs": inputs,
        "config_name": config_name,
        "per_item": per_item,
    }
    if path is not None:
        where = Path(path)
        if not where.is_absolute():
            if suite_dir is None:
                raise ScorerParamError(f"relative metric path '{path}' needs the suite folder to resolve", param="path")
            where = Path(suite_dir) / where
        where = where.resolve()
        script = where / f"{where.name}.py" if where.is_dir() else where
        if not script.is_file() or script.suffix != ".py":
            raise ScorerParamError(
                f"no metric script at {script}: give a .py file, or a folder holding a script named like the folder",
                param="path",
            )
        label = path
        identity |= {"path": path, "sha256": _content_hash(where)}
        try:
            module = _load(str(where), True, config_name, None, identity["sha256"])
        except Exception as exc:  # the metric's script raised while loading
            raise ScorerParamError(
                f"loading evaluate metric {script} failed: {type(exc).__name__}: {_first_line(exc)}", param="path"
            ) from None
    else:
        assert name is not None
        if name.count("/") > 1 or name.startswith((".", "/")):
            raise ScorerParamError(
                f"'{name}' is not a Hub metric name (bertscore, owner/metric); give a local script or folder as 'path'",
                param="name",
            )
        label = name
        try:
            module = _load(name, False, config_name, revision)
        except (ConnectionError, FileNotFoundError, OSError) as exc:
            why = (
                "offline (HF_HUB_OFFLINE or HF_EVALUATE_OFFLINE is set) and it is not in evaluate's cache"
                if _offline()
                else "neither the Hugging Face Hub nor evaluate's cache has it (is the Hub "
                f"reachable? {type(exc).__name__})"
            )
            raise ScorerParamError(
                f"evaluate metric '{name}' cannot be loaded: {why}; load it once online, or "
                "give a local script or folder as 'path'",
                param="name",
            ) from None
        except Exception as exc:  # the Hub's script raised while loading
            raise ScorerParamError(
                f"loading evaluate metric '{name}' failed: {type(exc).__name__}: {_first_line(exc)}", param="name"
            ) from None
        script_file = Path(getattr(inspect.getmodule(type(module)), "__file__", None) or "")
        identity |= {
            "name": name,
            "revision": revision,
            "sha256": _content_hash(script_file) if script_file.is_file() else None,
        }
    identity["module"] = module.name
    return EvaluateMetric(module, label, key, args, inputs, per_item, binary, identity)


def is_evaluate(s: Any) -> bool:
    """Whether a built scorer wraps an `evaluate` metric (harness.evaluation scores those once per suite)."""
    return isinstance(getattr(s, "fn", None), EvaluateMetric)


def score_items(built: Sequence[Any], results: Sequence[Any], items: Sequence[Any]) -> dict[str, float]:
    """Fill every per-item evaluate scorer's scores into the ItemResults; return the corpus-level ones' values
    (metric name -> the suite's value)."""
    corpus: dict[str, float] = {}
    outputs = [r.output for r in results]
    for s in built:
        if not is_evaluate(s):
            continue
        if not s.fn.per_item:
            corpus[s.name] = s.fn.corpus_score(outputs, items)
            continue
        for r, value in zip(results, s.fn.item_scores(outputs, items), strict=True):
            r.scores[s.name] = value
    return corpus
