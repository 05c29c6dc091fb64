"""Score one model on one suite, item by item: generate (or rank choices), then apply every scorer."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from harness import tracing
from harness.evaluation import _lmeval as lmeval
from harness.evaluation._results import ItemResult, Shaper, SuiteResult, shape_all
from harness.evaluation._suite import Suite
from harness.model import _generate as gen
from harness.scorers import _evaluate_metric as hf_metric
from harness.scorers import _judge as judge
from harness.scorers import _registry as scorers


def evaluate(model: Any, tok: Any, suite: Suite, *, shaper: Shaper | None = None,
             progress: Callable[[int], None] | None = None, device_batch: bool = True) -> SuiteResult:
    """Score `model` on `suite`. On a GPU with `device_batch` the batch is sized from free memory
    (`generate.device_batch_size`); on CPU, or with `device_batch=False`, the suite's `batch_size` is used."""
    if suite.spec.kind == "lm_eval":
        return lmeval.evaluate_suite(model, tok, suite, progress=progress)
    started = time.perf_counter()
    built = [scorers.build(s, base_dir=suite.path.parent) for s in suite.spec.scorers]
    if suite.spec.kind == "multiple_choice":
        with tracing.span("loglikelihood", suite=suite.name, suite_version=suite.version, n=len(suite.items)):
            prompts, outputs = _rank_choices(model, tok, suite, progress, device_batch)
    else:
        chats = shape_all(shaper, [item.chat(suite.spec.system) for item in suite.items])
        prompts = [gen.chat_prompt(tok, chat) for chat in chats]
        with tracing.span("generate", suite=suite.name, suite_version=suite.version, n=len(prompts),
                          batch_size=suite.spec.generation.batch_size,
                          max_new_tokens=suite.spec.generation.max_new_tokens) as span:
            outputs = gen.generate(model, tok, prompts, max_new_tokens=suite.spec.generation.max_new_tokens,
                                   batch_size=suite.spec.generation.batch_size,
                                   progress=_traced(span, progress), device_batch=device_batch)
    items = [ItemResult(item.id, prompt, out, {s.name: s(out, item) for s in built if _per_item(s)})
             for item, prompt, out in zip(suite.items, prompts, outputs)]
    judge.score_items(built, items, suite.items)  # judge scorers: one batched, cached pass per suite
    corpus = hf_metric.score_items(built, items, suite.items)  # evaluate metrics: one compute over the suite
    return SuiteResult(suite, items, time.perf_counter() - started, corpus=corpus)


def _per_item(s: scorers.Scorer) -> bool:
    """Whether a scorer is called item by item (judges and evaluate metrics score the whole suite at once)."""
    return not judge.is_judge(s) and not hf_metric.is_evaluate(s)


def _traced(span: tracing.Span, progress: Callable[[int], None] | None) -> Callable[[int], None] | None:
    """A progress callback that also marks every finished generation batch on the trace."""
    if not span.recording:
        return progress
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        span.event("batch", size=n, done=done)
        if progress:
            progress(n)
    return advance


def _rank_choices(model: Any, tok: Any, suite: Suite, progress: Callable[[int], None] | None,
                  device_batch: bool = True) -> tuple[list[str], list[str]]:
    pairs = [(item.prompt or "", choice) for item in suite.items for choice in item.choices or []]
    batch = suite.spec.generation.batch_size
    if device_batch:  # a scoring pass keeps no cache: on a GPU one batch of every distinct input is cheap
        longest = max((len(c) + len(x)) // 3 for c, x in pairs) if pairs else 0  # ~3+ characters a token
        batch = gen.device_batch_size(model, len(pairs), longest, 1, batch) if pairs else batch
    lls = gen.loglikelihood(model, tok, pairs, batch_size=batch)
    outputs, k = [], 0
    for item in suite.items:
        n = len(item.choices or [])
        scores = lls[k:k + n]
        k += n
        outputs.append((item.choices or [])[max(range(n), key=scores.__getitem__)])
        if progress:
            progress(1)
    return [item.prompt or "" for item in suite.items], outputs


def evaluate_adapters(model: Any, tok: Any, suite: Suite, adapters: Sequence[str], *,
                      progress: Callable[[int], None] | None = None,
                      device_batch: bool = True) -> dict[str, SuiteResult]:
    """Score several LoRA adapters of one PEFT model (one base) on `suite` in one pass: generation suites
    run every (adapter, item) pair in shared batches with PEFT's mixed-adapter inference (`adapter_names`),
    so the base model's work is batched across adapters; log-likelihood and lm-eval suites score one adapter
    after another on the same loaded model. Per item, the result is that of `evaluate` on each adapter alone."""
    if suite.spec.kind != "generate":
        results = {}
        for name in adapters:
            model.set_adapter(name)
            results[name] = evaluate(model, tok, suite, progress=progress, device_batch=device_batch)
        return results
    started = time.perf_counter()
    built = [scorers.build(s, base_dir=suite.path.parent) for s in suite.spec.scorers]
    prompts = [gen.chat_prompt(tok, item.chat(suite.spec.system)) for item in suite.items]
    gen_spec = suite.spec.generation
    with tracing.span("generate", suite=suite.name, suite_version=suite.version, n=len(prompts) * len(adapters),
                      adapters=len(adapters), max_new_tokens=gen_spec.max_new_tokens) as span:
        outputs = gen.generate(model, tok, [p for _ in adapters for p in prompts],
                               max_new_tokens=gen_spec.max_new_tokens, batch_size=gen_spec.batch_size,
                               progress=_traced(span, progress), device_batch=device_batch,
                               adapter_names=[a for a in adapters for _ in prompts])
    seconds = (time.perf_counter() - started) / len(adapters)  # each adapter's share of the shared pass
    results = {}
    for k, name in enumerate(adapters):
        mine = outputs[k * len(prompts):(k + 1) * len(prompts)]
        items = [ItemResult(item.id, prompt, out, {s.name: s(out, item) for s in built if _per_item(s)})
                 for item, prompt, out in zip(suite.items, prompts, mine, strict=True)]
        judge.score_items(built, items, suite.items)
        corpus = hf_metric.score_items(built, items, suite.items)
        results[name] = SuiteResult(suite, items, seconds, corpus=corpus)
    return results
