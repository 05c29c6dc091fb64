"""Score one model on one suite, item by item: generate (or rank choices), then apply every scorer."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness import generate as gen
from harness import scorers
from harness.stats import mean_stderr
from harness.suites import Suite

# Turns an item's chat messages into the messages an arm actually sends (system prompt, shots, context).
Shaper = Callable[[list[dict[str, str]]], list[dict[str, str]]]


@dataclass
class ItemResult:
    item_id: str
    prompt: str
    output: str
    scores: dict[str, float]


@dataclass
class SuiteResult:
    suite: Suite
    items: list[ItemResult]
    seconds: float
    metrics: dict[str, tuple[float, float, int]] = field(default_factory=dict)  # name -> (mean, stderr, n)

    def __post_init__(self) -> None:
        for name in self.suite.scorer_names:
            mean, se = mean_stderr([r.scores[name] for r in self.items])
            self.metrics[name] = (mean, se, len(self.items))


def evaluate(model: Any, tok: Any, suite: Suite, *, shaper: Shaper | None = None,
             progress: Callable[[int], None] | None = None) -> SuiteResult:
    started = time.perf_counter()
    built = [scorers.build(s) for s in suite.spec.scorers]
    if suite.spec.kind == "multiple_choice":
        prompts, outputs = _rank_choices(model, tok, suite, progress)
    else:
        shape = shaper or (lambda msgs: msgs)
        prompts = [gen.chat_prompt(tok, shape(item.chat(suite.spec.system))) for item in suite.items]
        outputs = gen.generate(model, tok, prompts, max_new_tokens=suite.spec.generation.max_new_tokens,
                               batch_size=suite.spec.generation.batch_size, progress=progress)
    items = [ItemResult(item.id, prompt, out, {s.name: s(out, item) for s in built})
             for item, prompt, out in zip(suite.items, prompts, outputs)]
    return SuiteResult(suite, items, time.perf_counter() - started)


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
