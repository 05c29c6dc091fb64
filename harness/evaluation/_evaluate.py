"""Score one model on one suite, item by item: generate (or rank choices), then apply every scorer.

Two numerics modes: "invariant" (the default; `harness.model._invariant`: every item's output and log-likelihood
bit-identical whatever shares its batch) and "fast" (`harness.model._generate`: sorted, device-sized and
mixed-adapter batches, packed scoring; an item's last bits, and so sometimes a greedy output, depend on its
batch). Every result carries its numerics record (`SuiteResult.numerics`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from harness import tracing
from harness.evaluation import _lmeval as lmeval
from harness.evaluation._results import ItemResult, Shaper, SuiteResult, shape_all
from harness.evaluation._suite import Suite
from harness.model import _generate as gen
from harness.model import _invariant as inv
from harness.model import _numerics
from harness.scorers import _evaluate_metric as hf_metric
from harness.scorers import _judge as judge
from harness.scorers import _registry as scorers


def numerics_of(model: Any, mode: str, kind: str = "generate") -> tuple[bool, dict[str, str]]:
    """Whether `model` is scored by the invariant path under `mode`, and the numerics record of that scoring
    (a suite of `kind`). Invariant mode on an architecture the fixed-shape path cannot drive falls back to the
    fast path, and the record says "fast" with the reason."""
    lm_eval_note = "; lm-eval generate_until at batch 1" if kind == "lm_eval" else ""
    if mode == "invariant":
        why_not = inv.supported(model)
        if why_not is None:
            device = next(model.parameters()).device
            return True, _numerics.record(
                model,
                "invariant",
                inv.shapes_for(device).describe() + lm_eval_note,
                attention=inv.attention_used(model),
            )
        return False, _numerics.record(model, "fast", f"hf-generate (fixed-shape unsupported: {why_not})")
    if kind == "lm_eval":
        return False, _numerics.record(model, "fast", "lm-eval hflm")
    return False, _numerics.record(model, "fast", f"hf-generate; loglik {gen.scoring_mode(model)}")


def evaluate(
    model: Any,
    tok: Any,
    suite: Suite,
    *,
    shaper: Shaper | None = None,
    progress: Callable[[int], None] | None = None,
    device_batch: bool = True,
    numerics: str | None = None,
) -> SuiteResult:
    """Score `model` on `suite` under the numerics mode `numerics` (invariant | fast; None: `_numerics.resolve_mode`).
    Fast mode: on a GPU with `device_batch` the batch is sized from free memory (`generate.device_batch_size`);
    on CPU, or with `device_batch=False`, the suite's `batch_size` is used. Invariant mode ignores both."""
    mode = _numerics.resolve_mode(numerics)
    invariant, record = numerics_of(model, mode, suite.spec.kind)
    with _numerics.using_mode(mode):
        if suite.spec.kind == "lm_eval":
            result = lmeval.evaluate_suite(model, tok, suite, progress=progress, invariant=invariant)
            result.numerics = record
            return result
        started = time.perf_counter()
        built = [scorers.build(s, base_dir=suite.path.parent) for s in suite.spec.scorers]
        if suite.spec.kind == "multiple_choice":
            with tracing.span("loglikelihood", suite=suite.name, suite_version=suite.version, n=len(suite.items)):
                prompts, outputs = _rank_choices(model, tok, suite, progress, device_batch, invariant)
        else:
            chats = shape_all(shaper, [item.chat(suite.spec.system) for item in suite.items])
            prompts = [gen.chat_prompt(tok, chat) for chat in chats]
            gen_spec = suite.spec.generation
            with tracing.span(
                "generate",
                suite=suite.name,
                suite_version=suite.version,
                n=len(prompts),
                batch_size=gen_spec.batch_size,
                max_new_tokens=gen_spec.max_new_tokens,
                numerics=mode,
            ) as span:
                if invariant:
                    outputs = inv.generate(
                        model, tok, prompts, max_new_tokens=gen_spec.max_new_tokens, progress=_traced(span, progress)
                    )
                else:
                    outputs = gen.generate(
                        model,
                        tok,
                        prompts,
                        max_new_tokens=gen_spec.max_new_tokens,
                        batch_size=gen_spec.batch_size,
                        progress=_traced(span, progress),
                        device_batch=device_batch,
                    )
        items = [
            ItemResult(item.id, prompt, out, {s.name: s(out, item) for s in built if _per_item(s)})
            for item, prompt, out in zip(suite.items, prompts, outputs)
        ]
        judge.score_items(built, items, suite.items)  # judge scorers: one batched, cached pass per suite
    corpus = hf_metric.score_items(built, items, suite.items)  # evaluate metrics: one compute over the suite
    return SuiteResult(suite, items, time.perf_counter() - started, corpus=corpus, numerics=record)


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


def _rank_choices(
    model: Any,
    tok: Any,
    suite: Suite,
    progress: Callable[[int], None] | None,
    device_batch: bool = True,
    invariant: bool = False,
) -> tuple[list[str], list[str]]:
    pairs = [(item.prompt or "", choice) for item in suite.items for choice in item.choices or []]
    if invariant:
        lls = inv.loglikelihood(model, tok, pairs)
    else:
        batch = suite.spec.generation.batch_size
        if device_batch:  # a scoring pass keeps no cache: on a GPU one batch of every distinct input is cheap
            longest = max((len(c) + len(x)) // 3 for c, x in pairs) if pairs else 0  # ~3+ characters a token
            batch = gen.device_batch_size(model, len(pairs), longest, 1, batch) if pairs else batch
        lls = gen.loglikelihood(model, tok, pairs, batch_size=batch)
    outputs, k = [], 0
    for item in suite.items:
        n = len(item.choices or [])
        scores = lls[k : k + n]
        k += n
        outputs.append((item.choices or [])[max(range(n), key=scores.__getitem__)])
        if progress:
            progress(1)
    return [item.prompt or "" for item in suite.items], outputs


def evaluate_adapters(
    model: Any,
    tok: Any,
    suite: Suite,
    adapters: Sequence[str],
    *,
    progress: Callable[[int], None] | None = None,
    device_batch: bool = True,
    numerics: str | None = None,
) -> dict[str, SuiteResult]:
    """Score several LoRA adapters of one PEFT model (one base) on `suite`. In fast mode generation suites run
    every (adapter, item) pair in shared batches with PEFT's mixed-adapter inference (`adapter_names`), so the
    base model's work is batched across adapters. In invariant mode (PEFT runs a mixed batch's LoRA on
    sub-batches whose size depends on the mix), and for log-likelihood and lm-eval suites, the adapters are
    scored one after another on the same loaded model. Per item, the result is that of `evaluate` on each
    adapter alone (bit for bit in invariant mode)."""
    mode = _numerics.resolve_mode(numerics)
    invariant, record = numerics_of(model, mode, suite.spec.kind)
    if suite.spec.kind != "generate" or invariant:
        results = {}
        for name in adapters:
            model.set_adapter(name)
            results[name] = evaluate(model, tok, suite, progress=progress, device_batch=device_batch, numerics=mode)
        return results
    started = time.perf_counter()
    built = [scorers.build(s, base_dir=suite.path.parent) for s in suite.spec.scorers]
    prompts = [gen.chat_prompt(tok, item.chat(suite.spec.system)) for item in suite.items]
    gen_spec = suite.spec.generation
    with tracing.span(
        "generate",
        suite=suite.name,
        suite_version=suite.version,
        n=len(prompts) * len(adapters),
        adapters=len(adapters),
        max_new_tokens=gen_spec.max_new_tokens,
    ) as span:
        outputs = gen.generate(
            model,
            tok,
            [p for _ in adapters for p in prompts],
            max_new_tokens=gen_spec.max_new_tokens,
            batch_size=gen_spec.batch_size,
            progress=_traced(span, progress),
            device_batch=device_batch,
            adapter_names=[a for a in adapters for _ in prompts],
        )
    seconds = (time.perf_counter() - started) / len(adapters)  # each adapter's share of the shared pass
    results = {}
    for k, name in enumerate(adapters):
        mine = outputs[k * len(prompts) : (k + 1) * len(prompts)]
        items = [
            ItemResult(item.id, prompt, out, {s.name: s(out, item) for s in built if _per_item(s)})
            for item, prompt, out in zip(suite.items, prompts, mine, strict=True)
        ]
        with _numerics.using_mode(mode):
            judge.score_items(built, items, suite.items)
        corpus = hf_metric.score_items(built, items, suite.items)
        results[name] = SuiteResult(suite, items, seconds, corpus=corpus, numerics=record)
    return results
