"""lm-eval benchmarks as tunegate suites: `kind: lm_eval` runs lm-eval tasks on the in-memory model.

The model under test (base, PEFT adapter model or merged) is wrapped in lm-eval's `HFLM` and run
through `lm_eval.simple_evaluate` with `log_samples=True`. Every document lm-eval scores becomes
one suite item, so benchmark results pair item by item across arms like any other suite, and the
suite's metrics are lm-eval's own reported values and standard errors.

Task names are looked up first in tunegate's offline tasks (`suites/lmeval/tasks/`) and in the
suite's `include_path` folders; anything else (hellaswag, arc_easy, mmlu, ...) comes from lm-eval's
registry and its datasets from the Hugging Face hub. In a task YAML under those folders a relative
`dataset_kwargs.data_files` path is resolved against the YAML's own folder.

Names: with one lm-eval task, items are keyed by the document's id field (`id` by default) or its
index, and metrics are lm-eval's metric names (`acc`, `acc_norm`, `exact_match`). With several
tasks (or a group) both are prefixed by the task: `arc_easy/17`, `arc_easy/acc`. A metric reported
under more than one filter pipeline gets the filter too: `exact_match:strict-match`.

Each metric is stored with its direction, lm-eval's own `higher_is_better` for it (higher when lm-eval
gives none), and as binary when every document scored 0 or 1 on it (then McNemar's test applies).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import tracing
from harness.base._errors import UserError, YamlDoc
from harness.base._stats import mean_stderr
from harness.evaluation._lmeval_config import ID_FIELDS, LmEvalConfig, _local_manager, _local_yaml_paths, include_dirs
from harness.evaluation._results import ItemResult, SuiteResult
from harness.evaluation._suite import SuiteItem
from harness.scorers._registry import MetricKind

if TYPE_CHECKING:
    from harness.evaluation._results import SuiteResult
    from harness.evaluation._suite import Suite


def _absolute_data_files(cfg: dict[str, Any], folder: Path) -> dict[str, Any]:
    kwargs = dict(cfg.get("dataset_kwargs") or {})
    files = kwargs.get("data_files")

    def fix(p: Any) -> Any:
        if isinstance(p, str) and "://" not in p and not Path(p).is_absolute():
            return str(folder / p)
        return p

    if isinstance(files, dict):
        kwargs["data_files"] = {k: [fix(x) for x in v] if isinstance(v, list) else fix(v) for k, v in files.items()}
    elif isinstance(files, list):
        kwargs["data_files"] = [fix(x) for x in files]
    elif files is not None:
        kwargs["data_files"] = fix(files)
    return {**cfg, "dataset_kwargs": kwargs} if kwargs else cfg


def _task_specs(suite: Suite, cfg: LmEvalConfig) -> tuple[Any, list[Any]]:
    """A TaskManager and what to pass as `tasks`: config dicts for local tasks (data paths made
    absolute), plain names for lm-eval's registry. The full registry is indexed only when needed."""
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._yaml_loader import load_yaml

    dirs = include_dirs(suite.path, cfg)
    manager = _local_manager(dirs)
    index = manager.task_index
    specs: list[Any] = []
    remote: list[str] = []
    for name in cfg.tasks:
        entry = index.get(name)
        if entry is None:
            remote.append(name)
        elif entry.yaml_path is None:  # a tag: each of its local tasks
            for path in _local_yaml_paths(name, index):
                specs.append(_absolute_data_files(load_yaml(path, resolve_func=True), path.parent))
        elif entry.kind.name == "GROUP":  # a local group loads by name (give its tasks absolute data paths)
            specs.append(name)
        else:
            path = Path(entry.yaml_path)
            specs.append(_absolute_data_files(load_yaml(path, resolve_func=True), path.parent))
    if remote:
        manager = TaskManager(include_path=[str(d) for d in dirs])
        doc = YamlDoc(suite.path)
        for name in remote:
            if name not in manager.task_index:
                i = cfg.tasks.index(name)
                close = get_close_matches(name, manager.all_tasks, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise UserError(
                    f"unknown lm-eval task '{name}'{hint}",
                    file=suite.path,
                    line=doc.line_of(("lm_eval", "tasks", i)),
                    field=f"lm_eval.tasks[{i}]",
                )
        specs += remote
    return manager, specs


def _build_tasks(manager: Any, specs: list[Any], suite: Suite) -> list[Any]:
    """Build each task (or group) once, loading its dataset: a task config or dataset that cannot load
    is the suite's problem, reported as such, before the model runs."""
    built: list[Any] = []
    tasks = suite.spec.lm_eval.tasks if suite.spec.lm_eval else []
    for spec in specs:
        name = spec if isinstance(spec, str) else spec.get("task", "?")
        try:
            loaded = manager.load([spec])
        except Exception as exc:  # anything a task config or its data can raise
            i = tasks.index(name) if name in tasks else None
            raise UserError(
                f"lm-eval could not load task '{name}': {type(exc).__name__}: {exc}",
                file=suite.path,
                line=YamlDoc(suite.path).line_of(("lm_eval", "tasks") + ((i,) if i is not None else ())),
                field="lm_eval.tasks" + (f"[{i}]" if i is not None else ""),
            ) from exc
        children = {c for kids in loaded["group_map"].values() for c in kids}
        tops = [g for g_name, g in loaded["groups"].items() if g_name not in children]
        built += tops or list(loaded["tasks"].values())
    return built


def _invariant_hflm(hflm: type) -> type:
    """HFLM whose log-likelihood requests go through the fixed-shape scorer (`harness.model._invariant`), so
    each request's (log-probability, is-greedy) is bit-identical whatever lm-eval batched it with."""
    from harness.model import _invariant as inv  # torch

    class InvariantHFLM(hflm):  # type: ignore[misc, valid-type]
        def _loglikelihood_tokens(
            self,
            requests: list[tuple[tuple[str, str], list[int], list[int]]],
            disable_tqdm: bool = False,
            override_bs: int | None = None,
        ) -> list[tuple[float, bool]]:
            seqs = []
            for _, context, continuation in requests:  # lm-eval's window: the last max_length + 1 tokens
                whole = (context + continuation)[-(self.max_length + 1) :]
                seqs.append((whole, max(1, len(whole) - len(continuation))))
            answers = inv.loglikelihood_tokens(self.model, seqs)
            for (request, _, _), answer in zip(requests, answers, strict=True):
                if request is not None:
                    self.cache_hook.add_partial("loglikelihood", request, answer)
            return answers

    return InvariantHFLM


def evaluate_suite(
    model: Any, tok: Any, suite: Suite, *, progress: Callable[[int], None] | None = None, invariant: bool = False
) -> SuiteResult:
    """Run the suite's lm-eval tasks on an in-memory model; per-document results become items. `invariant`:
    log-likelihood requests through the fixed-shape scorer and `generate_until` at batch 1 (lm-eval's own
    generation loop; a batch of one has no companions), so every document's result depends on it alone."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    cfg = suite.spec.lm_eval
    assert cfg is not None
    started = time.perf_counter()
    manager, specs = _task_specs(suite, cfg)
    tasks = _build_tasks(manager, specs, suite)
    lm = (_invariant_hflm(HFLM) if invariant else HFLM)(
        pretrained=model, tokenizer=tok, batch_size=1 if invariant else cfg.batch_size
    )
    with tracing.span(
        "lm_eval", suite=suite.name, suite_version=suite.version, tasks=cfg.tasks, limit=cfg.limit
    ) as span:
        out = simple_evaluate(
            model=lm,
            tasks=tasks,
            task_manager=manager,
            limit=cfg.limit,
            num_fewshot=cfg.num_fewshot,
            bootstrap_iters=cfg.bootstrap_iters,
            log_samples=True,
            apply_chat_template=cfg.apply_chat_template,
            system_instruction=cfg.system_instruction,
            gen_kwargs=cfg.gen_kwargs,
            random_seed=cfg.seed,
            numpy_random_seed=cfg.seed,
            torch_random_seed=cfg.seed,
            fewshot_random_seed=cfg.seed,
        )
        assert out is not None  # single process: rank 0
        collected = collect(out, id_field=cfg.id_field, suite_path=suite.path)
        span.update(output={m: v[0] for m, v in collected.metrics.items()}, n=len(collected.items))
    primary = suite.spec.primary or collected.default_primary
    if primary not in collected.metrics:
        doc = YamlDoc(suite.path)
        raise UserError(
            f"primary '{primary}' is not a metric lm-eval reported; reported: {', '.join(collected.metrics)}",
            file=suite.path,
            line=doc.line_of(("primary",)),
            field="primary",
        )
    spec = suite.spec.model_copy(update={"primary": primary})
    ran = suite.model_copy(update={"spec": spec, "items": collected.suite_items})
    result = SuiteResult(ran, collected.items, time.perf_counter() - started)
    result.metrics.update(collected.metrics)
    result.kinds.update(collected.kinds)
    if progress:
        progress(len(collected.items))
    return result


@dataclass
class Collected:
    suite_items: list[Any]  # SuiteItem per document (what the store keeps)
    items: list[Any]  # ItemResult per document
    metrics: dict[str, tuple[float, float, int]]  # lm-eval's value, stderr, documents
    default_primary: str
    kinds: dict[str, MetricKind]  # direction (lm-eval's higher_is_better) and 0/1-ness


def _kind(directions: dict[str, Any], metric: str, values: list[float] | None) -> MetricKind:
    """lm-eval's direction for `metric` (higher when it has none), binary when every document scored 0 or 1."""
    higher = directions.get(metric)
    return MetricKind(
        higher_is_better=higher if isinstance(higher, bool) else True,
        binary=bool(values) and all(v in (0.0, 1.0) for v in values or ()),
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _metric_keys(task_results: dict[str, Any]) -> list[tuple[str, str]]:
    """(metric, filter) pairs lm-eval reported for one task or group, in its order."""
    keys = []
    for key in task_results:
        if "," in key:
            metric, filt = key.split(",", 1)
            if not metric.endswith("_stderr"):
                keys.append((metric, filt))
    return keys


def _namer(prefix: bool, task: str, filters: set[str]) -> Callable[[str, str], str]:
    def name(metric: str, filt: str) -> str:
        out = metric if len(filters) <= 1 else f"{metric}:{filt}"
        return f"{task}/{out}" if prefix else out

    return name


def _output_text(sample: dict[str, Any], output_type: str) -> str:
    resps = sample.get("filtered_resps")
    if output_type == "multiple_choice" and isinstance(resps, list) and resps:
        lls = [r[0] if isinstance(r, (list, tuple)) else r for r in resps]
        best = max(range(len(lls)), key=lambda i: lls[i])
        return str(sample["arguments"][best][1])
    if output_type == "generate_until":
        first = resps[0] if isinstance(resps, list) and resps else resps
        return first if isinstance(first, str) else json.dumps(first, default=str)
    return json.dumps(resps, default=str)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _item_key(
    task: str,
    doc: dict[str, Any],
    doc_id: int,
    id_field: str | None,
    prefix: bool,
    seen: set[str],
    suite_path: Path | None,
) -> str:
    if id_field is not None:
        if id_field not in doc:
            raise UserError(
                f"task '{task}' documents have no field '{id_field}'", file=suite_path, field="lm_eval.id_field"
            )
        key = str(doc[id_field])
    else:
        field = next((f for f in ID_FIELDS if isinstance(doc.get(f), (str, int))), None)
        key = str(doc[field]) if field else str(doc_id)
        if key in seen:
            key = str(doc_id)
    if key in seen:
        raise UserError(f"task '{task}': two documents share the id '{key}'", file=suite_path, field="lm_eval.id_field")
    seen.add(key)
    return f"{task}/{key}" if prefix else key


def collect(out: dict[str, Any], *, id_field: str | None = None, suite_path: Path | None = None) -> Collected:
    """Turn `simple_evaluate(..., log_samples=True)` output into suite items and metrics."""

    samples: dict[str, list[dict[str, Any]]] = out["samples"]
    results: dict[str, dict[str, Any]] = out["results"]
    groups: dict[str, dict[str, Any]] = {
        **{k: v for k, v in results.items() if k not in samples},
        **out.get("groups", {}),
    }
    tasks = list(samples)
    prefix = len(tasks) > 1 or bool(groups)
    metrics: dict[str, tuple[float, float, int]] = {}
    kinds: dict[str, MetricKind] = {}
    directions: dict[str, dict[str, Any]] = out.get("higher_is_better") or {}
    suite_items: list[Any] = []
    items: list[Any] = []
    default_primary = ""
    for task in tasks:
        res = results[task]
        keys = _metric_keys(res)
        name = _namer(prefix, task, {f for _, f in keys})
        by_doc: dict[int, list[dict[str, Any]]] = {}
        for s in samples[task]:
            by_doc.setdefault(int(s["doc_id"]), []).append(s)
        n = int(out.get("n-samples", {}).get(task, {}).get("effective", len(by_doc)))
        per_item: dict[str, list[float]] = {}
        output_type = out["configs"][task].get("output_type", "")
        seen: set[str] = set()
        for doc_id in sorted(by_doc):
            entries = by_doc[doc_id]
            first = entries[0]
            doc = _jsonable(first["doc"])
            key = _item_key(task, doc, doc_id, id_field, prefix, seen, suite_path)
            scores: dict[str, float] = {}
            for s in entries:
                for m in s.get("metrics", []):
                    v = _number(s.get(m))
                    if v is not None:
                        scores[name(m, s.get("filter", "none"))] = v
            for m, v in scores.items():
                per_item.setdefault(m, []).append(v)
            args = first.get("arguments") or [("",)]
            context = args[0][0] if isinstance(args[0], (list, tuple)) else str(args[0])
            target = _jsonable(first.get("target"))
            choices = [str(a[1]) for a in args] if output_type == "multiple_choice" else None
            answer = target if choices and isinstance(target, int) and 0 <= target < len(choices) else None
            suite_items.append(
                SuiteItem(
                    id=key,
                    prompt=str(context),
                    reference=target,
                    choices=choices,
                    answer=answer,
                    meta={"task": task, "doc_id": doc_id, "doc": doc},
                )
            )
            items.append(ItemResult(key, str(context), _output_text(first, output_type), scores))
        for metric, filt in keys:
            value = _number(res.get(f"{metric},{filt}"))
            if value is None:
                continue
            stderr = _stderr(res.get(f"{metric}_stderr,{filt}"), per_item.get(name(metric, filt)))
            metrics[name(metric, filt)] = (value, stderr, n)
            kinds[name(metric, filt)] = _kind(directions.get(task, {}), metric, per_item.get(name(metric, filt)))
            default_primary = default_primary or name(metric, filt)
    subtasks = out.get("group_subtasks", {})
    for group, res in groups.items():
        n = sum(int(out.get("n-samples", {}).get(t, {}).get("effective", 0)) for t in _leaves(group, subtasks))
        for metric, filt in _metric_keys(res):
            value = _number(res.get(f"{metric},{filt}"))
            if value is not None:
                label = f"{group}/{metric}" if filt == "none" else f"{group}/{metric}:{filt}"
                metrics[label] = (value, _stderr(res.get(f"{metric}_stderr,{filt}"), None), n)
                kinds[label] = _kind(directions.get(group, {}), metric, None)
    return Collected(suite_items, items, metrics, default_primary, kinds)


def _leaves(group: str, subtasks: dict[str, list[str]]) -> list[str]:
    out = []
    for child in subtasks.get(group, []):
        out += _leaves(child, subtasks) if child in subtasks else [child]
    return out


def _stderr(reported: Any, values: list[float] | None) -> float:
    """lm-eval's stderr; where it reported none ('N/A'), the items' standard error if they have
    per-item values, else infinity (unknown uncertainty never reads as certainty)."""
    se = _number(reported)
    if se is not None:
        return se
    if values and len(values) > 1:
        return mean_stderr(values)[1]
    return math.inf
