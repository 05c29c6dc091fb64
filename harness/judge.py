"""LLM-as-judge: rubric scores (1-5, with the judge's reason) and pairwise A/B preferences.

Judges: any OpenAI-compatible chat endpoint, called with httpx (`backend: openai`; base URL, model
and key from TUNEGATE_JUDGE_BASE_URL, TUNEGATE_JUDGE_MODEL, TUNEGATE_JUDGE_API_KEY unless the
suite names them; the key is only ever read from the environment), or a local Hugging Face model
run greedily through harness.generate (`backend: local`, `model:` any tunegate model spec).

Every request is keyed by a hash of its content (judge identity, messages, settings). A successful
answer is cached in this process and, when a store is in use, in its `judge_calls` table, so an
identical request is never sent twice. Endpoint calls retry 429s, 5xx answers, timeouts and
connection errors with exponential backoff (honouring Retry-After). A call that still fails, or
whose answer has no parseable verdict, is recorded as failed with its error and raw text: its
score is None, never a number, and it is not cached.

Rubric scoring is a scorer (`judge_rubric`) a suite names in YAML:

    scorers:
      - name: judge_rubric
        params:
          rubric: |
            5: correct and complete ... 1: wrong or off-topic
          judge: {backend: openai}          # or {backend: local, model: smollm2-135m}

Pairwise comparison (`compare_pairwise`, `compare_evaluations`) always asks both orders (A first,
then B first); a verdict that flips with the order counts as a tie, and the summary reports
position consistency, ties and B's win rate with a bootstrap interval (ties count half) next to a
Wilson interval on decisive outcomes.
"""
from __future__ import annotations

import contextvars
import hashlib
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from harness import tracing
from harness.errors import UserError
from harness.scorers import scorer

ENV_BASE_URL = "TUNEGATE_JUDGE_BASE_URL"
ENV_MODEL = "TUNEGATE_JUDGE_MODEL"
ENV_API_KEY = "TUNEGATE_JUDGE_API_KEY"


class JudgeConfig(BaseModel):
    """Which judge to ask and how (the `judge:` param of a judge scorer)."""
    model_config = ConfigDict(extra="forbid")
    backend: Literal["openai", "local"] = "openai"
    base_url: str | None = None        # openai: e.g. https://api.openai.com/v1 (default $TUNEGATE_JUDGE_BASE_URL)
    model: str | None = None           # openai: model name ($TUNEGATE_JUDGE_MODEL); local: a model spec
    api_key_env: str = ENV_API_KEY     # environment variable holding the key (never the key itself)
    headers: dict[str, str] = Field(default_factory=dict)  # extra request headers (not secrets)
    max_tokens: int = Field(default=256, ge=1, le=8192)
    timeout_s: float = Field(default=60.0, gt=0)
    retries: int = Field(default=4, ge=0, le=10)
    backoff_s: float = Field(default=1.0, ge=0)       # first wait; doubles on every retry
    max_backoff_s: float = Field(default=30.0, ge=0)
    concurrency: int = Field(default=4, ge=1, le=64)  # openai: requests in flight
    batch_size: int = Field(default=8, ge=1)          # local: prompts per generate batch

    def resolved(self) -> JudgeConfig:
        """Base URL and model filled in from the environment; ValueError if still missing."""
        base_url = self.base_url or os.environ.get(ENV_BASE_URL)
        model = self.model or (os.environ.get(ENV_MODEL) if self.backend == "openai" else None)
        if self.backend == "openai" and not base_url:
            raise ValueError(f"the judge needs an endpoint: set {ENV_BASE_URL} (e.g. https://api.openai.com/v1) "
                             "or judge.base_url")
        if not model:
            raise ValueError(f"the judge needs a model: set {ENV_MODEL} or judge.model" if self.backend == "openai"
                             else "a local judge needs judge.model (a model spec: alias, folder or hub id)")
        return self.model_copy(update={"base_url": base_url.rstrip("/") if base_url else None, "model": model})


# --- calls, cache, store -------------------------------------------------------------------------

Messages = list[dict[str, str]]


@dataclass
class Call:
    """One judge request's outcome. status 'failed' means no verdict: `value` is None."""
    key: str
    status: Literal["ok", "failed"]
    text: str | None          # the judge's raw answer (None if none came)
    error: str | None
    cached: bool
    value: Any = None         # what the parser made of the answer


class VerdictError(ValueError):
    """The judge answered, but not in a form we can read a verdict from."""


class Backend(Protocol):
    identity: dict[str, Any]  # everything about the judge that changes its answers (part of the cache key)

    def complete_many(self, requests: Sequence[Messages]) -> list[tuple[str | None, str | None]]:
        """Per request: (answer, None) or (None, error)."""
        ...


class OpenAIBackend:
    """POST {base_url}/chat/completions with greedy settings; retries 429/5xx/timeouts with backoff."""

    def __init__(self, config: JudgeConfig, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self.identity = {"backend": "openai", "base_url": config.base_url, "model": config.model,
                         "headers": dict(sorted(config.headers.items()))}
        key = os.environ.get(config.api_key_env)
        headers = {**config.headers, **({"Authorization": f"Bearer {key}"} if key else {})}
        self._http = httpx.Client(timeout=config.timeout_s, headers=headers)
        self._sleep = sleep

    def complete_many(self, requests: Sequence[Messages]) -> list[tuple[str | None, str | None]]:
        if self.config.concurrency == 1 or len(requests) == 1:
            return [self.complete(m) for m in requests]
        with ThreadPoolExecutor(self.config.concurrency) as pool:
            futures = [pool.submit(contextvars.copy_context().run, self.complete, m) for m in requests]
            return [f.result() for f in futures]

    def complete(self, messages: Messages) -> tuple[str | None, str | None]:
        c = self.config
        body = {"model": c.model, "messages": messages, "temperature": 0, "max_tokens": c.max_tokens}
        with tracing.span("judge_call", as_type="generation", model=c.model, input=messages,
                          backend="openai", base_url=c.base_url) as span:
            error = "no attempt made"
            for attempt in range(c.retries + 1):
                wait = min(c.max_backoff_s, c.backoff_s * 2 ** attempt)
                try:
                    r = self._http.post(f"{c.base_url}/chat/completions", json=body)
                except httpx.TimeoutException:
                    error = f"timed out after {c.timeout_s:g}s"
                except httpx.TransportError as exc:
                    error = f"connection error: {type(exc).__name__}: {exc}"
                else:
                    if r.status_code == 200:
                        text, error = _completion_text(r)
                        span.update(output=text, attempts=attempt + 1, status="ok" if text is not None else "failed",
                                    error=error)
                        return text, error
                    error = f"HTTP {r.status_code}: {r.text[:500]}"
                    if r.status_code != 429 and r.status_code < 500:
                        break  # a client error: retrying the same request cannot help
                    wait = _retry_after(r, wait, c.max_backoff_s)
                if attempt < c.retries:
                    self._sleep(wait)
            attempts = attempt + 1
            error = f"{error} (after {attempts} attempt{'s' if attempts > 1 else ''})"
            span.update(attempts=attempts, status="failed", error=error)
            return None, error


def _completion_text(r: httpx.Response) -> tuple[str | None, str | None]:
    try:
        content = r.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None, f"malformed chat completion: {r.text[:500]}"
    if not isinstance(content, str):
        return None, f"malformed chat completion: content is {type(content).__name__}"
    return content, None


def _retry_after(r: httpx.Response, default: float, cap: float) -> float:
    try:
        return min(cap, max(0.0, float(r.headers.get("retry-after", ""))))
    except ValueError:
        return default


class LocalBackend:
    """A Hugging Face model in this process, greedy, through harness.generate."""

    def __init__(self, config: JudgeConfig, model: Any = None, tok: Any = None) -> None:
        self.config = config
        self.identity = {"backend": "local", "model": config.model}
        self._model, self._tok = model, tok
        self._lock = threading.Lock()

    def _loaded(self) -> tuple[Any, Any]:
        with self._lock:
            if self._model is None:
                from harness.models import load_model

                self._model, self._tok = load_model(str(self.config.model))
                self._model.eval()
        return self._model, self._tok

    def complete_many(self, requests: Sequence[Messages]) -> list[tuple[str | None, str | None]]:
        from harness import generate as gen

        model, tok = self._loaded()
        with tracing.span("judge_call", as_type="generation", model=str(self.config.model),
                          input=[list(m) for m in requests], backend="local", n=len(requests)) as span:
            try:
                prompts = [gen.chat_prompt(tok, list(m)) for m in requests]
                texts = gen.generate(model, tok, prompts, max_new_tokens=self.config.max_tokens,
                                     batch_size=self.config.batch_size)
            except (RuntimeError, ValueError) as exc:  # e.g. out of memory, a template the tokenizer lacks
                error = f"{type(exc).__name__}: {exc}"
                span.update(status="failed", error=error)
                return [(None, error)] * len(requests)
            span.update(output=texts, status="ok")
        return [(t, None) for t in texts]


_MEMORY: dict[str, str] = {}
_MEMORY_LOCK = threading.Lock()
_STORE: contextvars.ContextVar[Any] = contextvars.ContextVar("tunegate_judge_store", default=None)


def clear_memory_cache() -> None:
    with _MEMORY_LOCK:
        _MEMORY.clear()


@contextmanager
def using_store(store: Any) -> Iterator[None]:
    """Judge scorers inside this block cache and record their calls in `store` (harness.store.Store)."""
    token = _STORE.set(store)
    try:
        yield
    finally:
        _STORE.reset(token)


def request_key(identity: dict[str, Any], messages: Messages, max_tokens: int) -> str:
    blob = json.dumps({"judge": identity, "messages": messages, "max_tokens": max_tokens, "temperature": 0},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class Judge:
    """Asks a judge, with the content-hash cache, retries and failure recording around it."""

    def __init__(self, config: JudgeConfig | None = None, *, backend: Backend | None = None, store: Any = None,
                 model: Any = None, tok: Any = None) -> None:
        self.config = (config or JudgeConfig()).resolved() if backend is None else (config or JudgeConfig())
        if backend is None:
            backend = (LocalBackend(self.config, model, tok) if self.config.backend == "local"
                       else OpenAIBackend(self.config))
        self.backend = backend
        self.store = store if store is not None else _STORE.get()

    @property
    def model_name(self) -> str:
        return str(self.backend.identity.get("model"))

    def ask(self, requests: Sequence[Messages], parse: Callable[[str], Any]) -> list[Call]:
        """One Call per request, in order. Cached answers are re-parsed; new ones are sent (each distinct
        request once), parsed, recorded in the store (ok or failed) and cached only if they parsed."""
        keys = [request_key(self.backend.identity, list(m), self.config.max_tokens) for m in requests]
        calls: dict[str, Call] = {}
        for key in dict.fromkeys(keys):
            with _MEMORY_LOCK:
                text = _MEMORY.get(key)
            if text is None and self.store is not None:
                text = self.store.cached_judge_response(key)
            if text is not None:
                try:
                    calls[key] = Call(key, "ok", text, None, True, parse(text))
                    with _MEMORY_LOCK:
                        _MEMORY[key] = text
                except VerdictError:
                    pass  # the parser changed since: ask again
        todo = [k for k in dict.fromkeys(keys) if k not in calls]
        if todo:
            first = {k: requests[keys.index(k)] for k in todo}
            answers = self.backend.complete_many([list(first[k]) for k in todo])
            for key, (text, error) in zip(todo, answers):
                call = self._outcome(key, text, error, parse)
                calls[key] = call
                self._record(call, first[key])
        return [calls[k] for k in keys]

    def _outcome(self, key: str, text: str | None, error: str | None, parse: Callable[[str], Any]) -> Call:
        if text is None:
            return Call(key, "failed", None, error or "no answer", False)
        try:
            value = parse(text)
        except VerdictError as exc:
            return Call(key, "failed", text, str(exc), False)
        with _MEMORY_LOCK:
            _MEMORY[key] = text
        return Call(key, "ok", text, None, False, value)

    def _record(self, call: Call, messages: Messages) -> None:
        if self.store is None:
            return
        request = {**self.backend.identity, "messages": list(messages), "max_tokens": self.config.max_tokens,
                   "temperature": 0}
        self.store.record_judge_call(call.key, self.model_name, request, call.text, call.status, call.error)

    # --- rubric --------------------------------------------------------------------------------
    def rubric(self, rubric: str, cases: Sequence[RubricCase]) -> list[RubricVerdict]:
        calls = self.ask([rubric_messages(rubric, c.question, c.response, c.reference) for c in cases],
                         parse_score)
        return [RubricVerdict(c.item_id, call.value[0] if call.status == "ok" else None,
                              call.value[1] if call.status == "ok" else None, call) for c, call in zip(cases, calls)]

    # --- pairwise ------------------------------------------------------------------------------
    def pairwise(self, criteria: str, cases: Sequence[PairCase]) -> list[PairVerdict]:
        """Both orders for every case: A shown first, then B shown first."""
        requests = []
        for c in cases:
            requests.append(pair_messages(criteria, c.question, c.a, c.b, c.reference))
            requests.append(pair_messages(criteria, c.question, c.b, c.a, c.reference))
        calls = self.ask(requests, parse_winner)
        out = []
        for i, c in enumerate(cases):
            ab, ba = calls[2 * i], calls[2 * i + 1]
            first = {"1": "a", "2": "b", "tie": "tie"}[ab.value] if ab.status == "ok" else None
            second = {"1": "b", "2": "a", "tie": "tie"}[ba.value] if ba.status == "ok" else None
            out.append(PairVerdict(c.item_id, first, second, (ab, ba)))
        return out


# --- prompts and parsing -------------------------------------------------------------------------

RUBRIC_SYSTEM = (
    "You are an impartial judge. Grade the response to the request with the rubric. Judge only what the "
    "response says, not how long it is. Answer in exactly this format:\n"
    "Reason: <one or two sentences>\nScore: <an integer from 1 to 5>")
PAIR_SYSTEM = (
    "You are an impartial judge. Compare two responses to the same request with the criteria. The order "
    "in which the responses appear, their length and their style must not sway you. Answer in exactly "
    "this format:\nReason: <one or two sentences>\nWinner: <1, 2 or tie>")


def _section(title: str, text: str) -> str:
    return f"[{title}]\n{text}\n[End of {title.lower()}]"


def rubric_messages(rubric: str, question: str, response: str, reference: str | None = None) -> Messages:
    parts = [f"Rubric (1 = worst, 5 = best):\n{rubric.strip()}", _section("Request", question)]
    if reference is not None:
        parts.append(_section("Reference answer", reference))
    parts.append(_section("Response", response))
    return [{"role": "system", "content": RUBRIC_SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


def pair_messages(criteria: str, question: str, first: str, second: str, reference: str | None = None) -> Messages:
    parts = [f"Criteria:\n{criteria.strip()}", _section("Request", question)]
    if reference is not None:
        parts.append(_section("Reference answer", reference))
    parts += [_section("Response 1", first), _section("Response 2", second)]
    return [{"role": "system", "content": PAIR_SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


_SCORE = re.compile(r"\b(?:score|rating)\b\W{0,6}([1-5])(?:\s*(?:/|out of)\s*5)?(?![\d.]*\d)", re.IGNORECASE)
_BARE_SCORE = re.compile(r"\s*([1-5])\s*(?:/\s*5)?\s*\.?\s*")
_WINNER = re.compile(r"\b(?:winner|verdict)\b\W{0,6}(?:response\s*)?(1|2|tie)\b", re.IGNORECASE)
_REASON = re.compile(r"\breason\b\W{0,4}(.+?)(?=\n\W*(?:score|rating|winner|verdict)\b|\Z)", re.IGNORECASE | re.DOTALL)


def _reason(text: str) -> str:
    m = _REASON.search(text)
    return (m.group(1) if m else text).strip()


def parse_score(text: str) -> tuple[int, str]:
    """(score 1-5, reason) from 'Reason: ... Score: N' (the last score given wins; a bare digit counts)."""
    found = _SCORE.findall(text)
    if found:
        return int(found[-1]), _reason(text)
    bare = _BARE_SCORE.fullmatch(text)
    if bare:
        return int(bare.group(1)), ""
    raise VerdictError("no score from 1 to 5 in the judge's answer")


def parse_winner(text: str) -> str:
    """'1', '2' or 'tie' from 'Winner: ...' (the last one given wins)."""
    found = _WINNER.findall(text)
    if not found:
        raise VerdictError("no 'Winner: 1, 2 or tie' in the judge's answer")
    return found[-1].lower()


# --- rubric results ------------------------------------------------------------------------------

@dataclass(frozen=True)
class RubricCase:
    item_id: str
    question: str
    response: str
    reference: str | None = None


@dataclass(frozen=True)
class RubricVerdict:
    item_id: str
    score: int | None          # None: the call failed (see call.error, call.text)
    reason: str | None
    call: Call

    @property
    def detail(self) -> str:
        if self.score is not None:
            return self.reason or ""
        raw = f" | judge said: {self.call.text[:500]}" if self.call.text else ""
        return f"judge failed: {self.call.error}{raw}"


# --- pairwise results ----------------------------------------------------------------------------

@dataclass(frozen=True)
class PairCase:
    item_id: str
    question: str
    a: str
    b: str
    reference: str | None = None


@dataclass(frozen=True)
class PairVerdict:
    item_id: str
    first: str | None    # preference with A shown first: 'a', 'b', 'tie'; None if that call failed
    second: str | None   # preference with B shown first
    calls: tuple[Call, Call]

    @property
    def failed(self) -> bool:
        return self.first is None or self.second is None

    @property
    def consistent(self) -> bool | None:
        return None if self.failed else self.first == self.second

    @property
    def outcome(self) -> str | None:
        """'a', 'b' or 'tie'; a preference that flips with the order is a tie; None if a call failed."""
        if self.failed:
            return None
        return self.first if self.first == self.second else "tie"


@dataclass(frozen=True)
class PairwiseSummary:
    n: int                        # cases asked
    judged: int                   # cases with both orders answered
    failed: int
    a_wins: int
    b_wins: int
    ties: int                     # judged ties plus order-dependent verdicts
    inconsistent: int             # verdicts that changed when the order was swapped
    position_consistency: float   # share of judged cases whose verdict survived the swap
    first_position_rate: float    # share of decisive single-order answers that picked whichever came first
    win_rate_b: float             # (b wins + ties / 2) / judged
    win_rate_b_lo: float          # 95% bootstrap interval over cases
    win_rate_b_hi: float
    decisive_rate_b: float        # b wins / (a wins + b wins)
    decisive_lo: float            # 95% Wilson interval
    decisive_hi: float


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    from scipy.stats import binomtest

    ci = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def summarize_pairwise(verdicts: Sequence[PairVerdict], *, resamples: int = 10_000, seed: int = 0) -> PairwiseSummary:
    judged = [v for v in verdicts if not v.failed]
    a = sum(v.outcome == "a" for v in judged)
    b = sum(v.outcome == "b" for v in judged)
    ties = sum(v.outcome == "tie" for v in judged)
    inconsistent = sum(not v.consistent for v in judged)
    singles = [(p, pos) for v in judged for p, pos in ((v.first, "a"), (v.second, "b")) if p != "tie"]
    first_pos = sum(p == pos for p, pos in singles)
    points = np.array([{"b": 1.0, "tie": 0.5, "a": 0.0}[v.outcome] for v in judged])  # type: ignore[index]
    if len(points):
        rng = np.random.default_rng(seed)
        means = points[rng.integers(0, len(points), size=(resamples, len(points)))].mean(axis=1)
        rate, lo, hi = float(points.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))
    else:
        rate = lo = hi = math.nan
    d_lo, d_hi = wilson(b, a + b)
    return PairwiseSummary(
        n=len(verdicts), judged=len(judged), failed=len(verdicts) - len(judged), a_wins=a, b_wins=b, ties=ties,
        inconsistent=inconsistent,
        position_consistency=(len(judged) - inconsistent) / len(judged) if judged else math.nan,
        first_position_rate=first_pos / len(singles) if singles else math.nan,
        win_rate_b=rate, win_rate_b_lo=lo, win_rate_b_hi=hi,
        decisive_rate_b=b / (a + b) if a + b else math.nan, decisive_lo=d_lo, decisive_hi=d_hi)


def compare_pairwise(judge: Judge, criteria: str, cases: Sequence[PairCase]) -> tuple[list[PairVerdict], PairwiseSummary]:
    verdicts = judge.pairwise(criteria, cases)
    return verdicts, summarize_pairwise(verdicts)


def request_text(data: dict[str, Any]) -> str:
    """The user's request of a stored suite item (its prompt, or its conversation as text)."""
    if data.get("prompt") is not None:
        return str(data["prompt"])
    return "\n".join(f"{m['role']}: {m['content']}" for m in data.get("messages") or [])


def compare_evaluations(store: Any, judge: Judge, criteria: str, baseline_eval: int, candidate_eval: int, *,
                        use_reference: bool = True) -> tuple[list[PairVerdict], PairwiseSummary]:
    """Pairwise-judge two stored evaluations of the same suite version, item by item (A = baseline)."""
    base = {r["item"]: r for r in store.item_rows(baseline_eval)}
    cases = []
    for row in store.item_rows(candidate_eval):
        if row["item"] in base:
            ref = row["data"].get("reference")
            reference = (ref if isinstance(ref, str) else json.dumps(ref)) if use_reference and ref is not None \
                else None
            cases.append(PairCase(row["item"], request_text(row["data"]), base[row["item"]]["output"], row["output"],
                                  reference))
    if not cases:
        raise UserError(f"evaluations {baseline_eval} and {candidate_eval} have no items in common")
    return compare_pairwise(judge, criteria, cases)


# --- the suite scorer ----------------------------------------------------------------------------

class RubricScorer:
    """The `judge_rubric` scorer: the judge's 1-5 score per item (None when the judge failed).

    harness.evaluation calls `verdicts()` once for all items (batched, cached, recorded); calling the
    scorer on one item also works and gives NaN for a failed judgement."""
    binary = False

    def __init__(self, rubric: str, config: JudgeConfig, use_reference: bool) -> None:
        self.rubric, self.config, self.use_reference = rubric, config, use_reference
        self._judges: dict[int, Judge] = {}

    def judge(self) -> Judge:
        store = _STORE.get()
        key = id(store)
        if key not in self._judges:
            self._judges[key] = Judge(self.config, store=store)
        return self._judges[key]

    def case(self, output: str, item: Any) -> RubricCase:
        question = request_text({"prompt": item.prompt,
                                 "messages": [m.model_dump() for m in item.messages] if item.messages else None})
        ref = item.reference if self.use_reference else None
        reference = None if ref is None else ref if isinstance(ref, str) else json.dumps(ref, ensure_ascii=False)
        return RubricCase(item.id, question, output, reference)

    def verdicts(self, outputs: Sequence[str], items: Sequence[Any]) -> list[RubricVerdict]:
        return self.judge().rubric(self.rubric, [self.case(o, it) for o, it in zip(outputs, items)])

    def __call__(self, output: str, item: Any) -> float:
        v = self.verdicts([output], [item])[0]
        return math.nan if v.score is None else float(v.score)


@scorer("judge_rubric", binary=False)
def judge_rubric(rubric: str, judge: JudgeConfig | None = None,
                 use_reference: bool = True) -> RubricScorer:
    """An LLM judge's 1-5 score against a written rubric (reasons kept; failures score None)."""
    if not rubric.strip():
        raise ValueError("judge_rubric needs a written 'rubric'")
    config = judge if isinstance(judge, JudgeConfig) else JudgeConfig.model_validate(judge or {})
    config.resolved()  # a missing endpoint or model fails when the suite loads, not after generation
    return RubricScorer(rubric, config, use_reference)


def is_judge(s: Any) -> bool:
    """Whether a built scorer is a judge (harness.evaluation scores those in one batch per suite)."""
    return isinstance(getattr(s, "fn", None), RubricScorer)


def score_items(built: Sequence[Any], results: Sequence[Any], items: Sequence[Any]) -> None:
    """Fill each judge scorer's score (None when failed) and reason into the ItemResults."""
    for s in built:
        if not is_judge(s):
            continue
        verdicts = s.fn.verdicts([r.output for r in results], items)
        for r, v in zip(results, verdicts):
            r.scores[s.name] = None if v.score is None else float(v.score)
            details = getattr(r, "details", None)
            if isinstance(details, dict):
                details[s.name] = v.detail


__all__ = ["Call", "Judge", "JudgeConfig", "LocalBackend", "OpenAIBackend", "PairCase", "PairVerdict",
           "PairwiseSummary", "RubricCase", "RubricVerdict", "VerdictError", "compare_evaluations",
           "compare_pairwise", "is_judge", "parse_score", "parse_winner", "score_items", "summarize_pairwise",
           "using_store", "wilson"]
