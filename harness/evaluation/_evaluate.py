"""Score one model on one suite, item by item: generate (or rank choices), then apply every scorer."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from harness import tracing
from harness.evaluation import _lmeval as lmeval
from harness.evaluation._results import ItemResult, Shaper, SuiteResult
from harness.evaluation._suite import Suite
from harness.model import _generate as gen
from harness.scorers import _judge as judge
from harness.scorers import _registry as scorers


def evaluate(model: Any, tok: Any, suite: Suite, *, shaper: Shaper | None = None,
             progress: Callable[[int], None] | None = None) -> SuiteResult:
    if suite.spec.kind == "lm_eval":
        return lmeval.evaluate_suite(model, tok, suite, progress=progress)
    started = time.perf_counter()
    built = [scorers.build(s, base_dir=suite.path.parent) for s in suite.spec.scorers]
    if suite.spec.kind == "multiple_choice":
        with tracing.span("loglikelihood", suite=suite.name, suite_version=suite.version, n=len(suite.items)):
            prompts, outputs = _rank_choices(model, tok, suite, progress)
    else:
        shape = shaper or (lambda msgs: msgs)
        prompts = [gen.chat_prompt(tok, shape(item.chat(suite.spec.system))) for item in suite.items]
        with tracing.span("generate", suite=suite.name, suite_version=suite.version, n=len(prompts),
                          batch_size=suite.spec.generation.batch_size,
                          max_new_tokens=suite.spec.generation.max_new_tokens) as span:
            outputs = gen.generate(model, tok, prompts, max_new_tokens=suite.spec.generation.max_new_tokens,
                                   batch_size=suite.spec.generation.batch_size,
                                   progress=_traced(span, progress))
    items = [ItemResult(item.id, prompt, out, {s.name: s(out, item) for s in built if not judge.is_judge(s)})
             for item, prompt, out in zip(suite.items, prompts, outputs)]
    judge.score_items(built, items, suite.items)  # judge scorers: one batched, cached pass per suite
    return SuiteResult(suite, items, time.perf_counter() - started)


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


def _rank_choices(model: Any, tok: Any, suite: Suite,
                  progress: Callable[[int], None] | None) -> tuple[list[str], list[str]]:
    pairs = [(item.prompt or "", choice) for item in suite.items for choice in item.choices or []]
    lls = gen.loglikelihood(model, tok, pairs, batch_size=suite.spec.generation.batch_size)
    outputs, k = [], 0
    for item in suite.items:
        n = len(item.choices or [])
        scores = lls[k:k + n]
        k += n
        outputs.append((item.choices or [])[max(range(n), key=scores.__getitem__)])
        if progress:
            progress(1)
    return [item.prompt or "" for item in suite.items], outputs
