"""The judge's model calls: OpenAI-compatible or local backends, retries, a cache, every call logged to the store."""

from __future__ import annotations

import contextvars
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from harness import tracing
from harness.llm_client import ChatClient, ChatError, Retry, check_base_url, public_headers
from harness.redact import redact
from harness.scorers._judge_verdicts import (
    Call,
    Messages,
    PairCase,
    PairVerdict,
    RubricCase,
    RubricVerdict,
    VerdictError,
    pair_messages,
    parse_score,
    parse_winner,
    rubric_messages,
)

ENV_BASE_URL = "TUNEGATE_JUDGE_BASE_URL"
ENV_MODEL = "TUNEGATE_JUDGE_MODEL"
ENV_API_KEY = "TUNEGATE_JUDGE_API_KEY"


class JudgeConfig(BaseModel):
    """Which judge to ask and how (the `judge:` param of a judge scorer)."""

    model_config = ConfigDict(extra="forbid")
    backend: Literal["openai", "local"] = "openai"
    base_url: str | None = None  # openai: the API root with its version, e.g. https://api.openai.com/v1
    # (default $TUNEGATE_JUDGE_BASE_URL); requests go to {base_url}/chat/completions
    model: str | None = None  # openai: model name ($TUNEGATE_JUDGE_MODEL); local: a model spec
    api_key_env: str = ENV_API_KEY  # environment variable holding the key (never the key itself)
    headers: dict[str, str] = Field(default_factory=dict)  # extra request headers (credential ones masked when stored)
    max_tokens: int = Field(default=256, ge=1, le=8192)
    timeout_s: float = Field(default=60.0, gt=0)
    retries: int = Field(default=4, ge=0, le=10)
    backoff_s: float = Field(default=1.0, ge=0)  # first wait; doubles on every retry
    max_backoff_s: float = Field(default=30.0, ge=0)
    concurrency: int = Field(default=4, ge=1, le=64)  # openai: requests in flight
    batch_size: int = Field(default=8, ge=1)  # local: prompts per generate batch

    def resolved(self) -> JudgeConfig:
        """Base URL and model filled in from the environment; ValueError if still missing."""
        base_url = self.base_url or os.environ.get(ENV_BASE_URL)
        model = self.model or (os.environ.get(ENV_MODEL) if self.backend == "openai" else None)
        if self.backend == "openai" and not base_url:
            raise ValueError(
                f"the judge needs an endpoint: set {ENV_BASE_URL} (e.g. https://api.openai.com/v1) or judge.base_url"
            )
        if self.backend == "openai" and base_url:  # credentials in a URL would be stored with the suite's spec
            check_base_url(
                base_url, named="judge.base_url" if self.base_url else ENV_BASE_URL, key_variable=self.api_key_env
            )
        if not model:
            raise ValueError(
                f"the judge needs a model: set {ENV_MODEL} or judge.model"
                if self.backend == "openai"
                else "a local judge needs judge.model (a model spec: alias, folder or hub id)"
            )
        return self.model_copy(update={"base_url": base_url.rstrip("/") if base_url else None, "model": model})


class Backend(Protocol):
    identity: dict[str, Any]  # everything about the judge that changes its answers (part of the cache key)

    def complete_many(self, requests: Sequence[Messages]) -> list[tuple[str | None, str | None]]:
        """Per request: (answer, None) or (None, error)."""
        ...


class OpenAIBackend:
    """Greedy chat completions through harness.llm_client (its base-URL rule, retries and redaction)."""

    def __init__(self, config: JudgeConfig, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        base_url = redact(str(config.base_url))
        self.identity = {
            "backend": "openai",
            "base_url": base_url,
            "model": config.model,
            "headers": dict(sorted(public_headers(config.headers).items())),
        }
        self._client = ChatClient(
            str(config.base_url),
            api_key=os.environ.get(config.api_key_env) or None,
            headers=config.headers,
            timeout_s=config.timeout_s,
            retry=Retry(config.retries, config.backoff_s, config.max_backoff_s),
            sleep=sleep,
        )

    def complete_many(self, requests: Sequence[Messages]) -> list[tuple[str | None, str | None]]:
        if self.config.concurrency == 1 or len(requests) == 1:
            return [self.complete(m) for m in requests]
        with ThreadPoolExecutor(self.config.concurrency) as pool:
            futures = [pool.submit(contextvars.copy_context().run, self.complete, m) for m in requests]
            return [f.result() for f in futures]

    def complete(self, messages: Messages) -> tuple[str | None, str | None]:
        c = self.config
        body = {"model": c.model, "messages": messages, "temperature": 0, "max_tokens": c.max_tokens}
        with tracing.span(
            "judge_call",
            as_type="generation",
            model=c.model,
            input=messages,
            backend="openai",
            base_url=self.identity["base_url"],
        ) as span:
            try:
                done = self._client.chat(body)
            except ChatError as exc:
                span.update(attempts=exc.attempts, status="failed", error=str(exc))
                return None, str(exc)
            content = done.message.get("content")
            text, error = (
                (content, None)
                if isinstance(content, str)
                else (None, f"malformed chat completion: content is {type(content).__name__}")
            )
            span.update(output=text, attempts=done.attempts, status="ok" if text is not None else "failed", error=error)
            return text, error


class LocalBackend:
    """A Hugging Face model in this process, greedy, through harness.model._generate."""

    def __init__(self, config: JudgeConfig, model: Any = None, tok: Any = None) -> None:
        self.config = config
        self.identity = {"backend": "local", "model": config.model}
        self._model, self._tok = model, tok
        self._lock = threading.Lock()

    def _loaded(self) -> tuple[Any, Any]:
        with self._lock:
            if self._model is None:
                from harness.model._load import load_model  # heavy: transformers, only for a local judge model

                self._model, self._tok = load_model(str(self.config.model))
                self._model.eval()
        return self._model, self._tok

    def complete_many(self, requests: Sequence[Messages]) -> list[tuple[str | None, str | None]]:
        from harness.model import _generate as gen  # torch: only for a local judge model
        from harness.model import _invariant as inv  # torch: only for a local judge model
        from harness.model._numerics import resolve_mode  # with the local judge model: the evaluation's mode

        model, tok = self._loaded()
        with tracing.span(
            "judge_call",
            as_type="generation",
            model=str(self.config.model),
            input=[list(m) for m in requests],
            backend="local",
            n=len(requests),
        ) as span:
            try:
                prompts = [gen.chat_prompt(tok, list(m)) for m in requests]
                if resolve_mode() == "invariant" and inv.supported(model) is None:
                    texts = inv.generate(model, tok, prompts, max_new_tokens=self.config.max_tokens)
                else:
                    texts = gen.generate(
                        model, tok, prompts, max_new_tokens=self.config.max_tokens, batch_size=self.config.batch_size
                    )
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
    blob = json.dumps(
        {"judge": identity, "messages": messages, "max_tokens": max_tokens, "temperature": 0},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class Judge:
    """Asks a judge, with the content-hash cache, retries and failure recording around it."""

    def __init__(
        self,
        config: JudgeConfig | None = None,
        *,
        backend: Backend | None = None,
        store: Any = None,
        model: Any = None,
        tok: Any = None,
    ) -> None:
        self.config = (config or JudgeConfig()).resolved() if backend is None else (config or JudgeConfig())
        if backend is None:
            backend = (
                LocalBackend(self.config, model, tok) if self.config.backend == "local" else OpenAIBackend(self.config)
            )
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
        request = {
            **self.backend.identity,
            "messages": list(messages),
            "max_tokens": self.config.max_tokens,
            "temperature": 0,
        }
        self.store.record_judge_call(call.key, self.model_name, request, call.text, call.status, call.error)

    def rubric(self, rubric: str, cases: Sequence[RubricCase]) -> list[RubricVerdict]:
        calls = self.ask([rubric_messages(rubric, c.question, c.response, c.reference) for c in cases], parse_score)
        return [
            RubricVerdict(
                c.item_id,
                call.value[0] if call.status == "ok" else None,
                call.value[1] if call.status == "ok" else None,
                call,
            )
            for c, call in zip(cases, calls)
        ]

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
