"""One client for OpenAI-compatible chat servers, used by the LLM judge and by the advisor's explanations.

Base-URL rule, the same for every caller and the same as the OpenAI SDK's `base_url`: the URL of the API
root *including* its version path (https://api.openai.com/v1, http://localhost:8000/v1). Requests go to
`{base_url}/chat/completions`; nothing is appended or guessed.

Retries: timeouts, connection errors, HTTP 429 and 5xx are retried with exponential backoff (the first
wait `backoff_s`, doubling, at most `max_backoff_s`), or after the server's Retry-After (seconds or an HTTP
date, same cap) when it sends one; other client errors fail at once, since the same request cannot succeed.
Every error message is passed through `harness.redact.redact` (and the client's own key is masked) before
it is raised, so nothing a caller stores, logs or prints carries a credential.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from harness.redact import MASK, redact


def check_base_url(base_url: str, *, named: str, key_variable: str) -> None:
    """Refuse a base URL that holds credentials (`https://user:password@host/v1`): httpx would send them as Basic
    auth instead of the configured key, and the URL would be stored and printed with them. ValueError naming
    `named` (where the URL came from) and the environment variable the key belongs in."""
    try:
        parts = urlsplit(base_url)
        has_userinfo = parts.username is not None or parts.password is not None
    except ValueError:
        has_userinfo = "@" in base_url.split("//", 1)[-1].split("/", 1)[0]
    if has_userinfo:
        raise ValueError(
            f"{named} must not hold credentials (user:password@host): remove them and put the key in "
            f"the environment variable {key_variable}"
        )


def chat_url(base_url: str) -> str:
    """The chat completions endpoint of an OpenAI-style base URL (see the module docstring)."""
    return base_url.rstrip("/") + "/chat/completions"


@dataclass(frozen=True)
class Retry:
    retries: int = 4  # attempts after the first
    backoff_s: float = 1.0  # the first wait; doubles on every retry
    max_backoff_s: float = 30.0

    def wait(self, attempt: int) -> float:
        return min(self.max_backoff_s, self.backoff_s * 2**attempt)


class ChatError(Exception):
    """The endpoint failed (after the retries that could help); the message is already redacted."""

    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


@dataclass(frozen=True)
class Completion:
    message: dict[str, Any]  # the first choice's assistant message (content, tool_calls, ...)
    attempts: int


class ChatClient:
    """POST {base_url}/chat/completions with a bearer key, retries and redacted errors. Thread-safe."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float = 60.0,
        retry: Retry = Retry(),
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        check_base_url(base_url, named="the base URL", key_variable="that holds the API key")
        self.url = chat_url(base_url)
        self.timeout_s, self.retry, self._sleep = timeout_s, retry, sleep
        self._secrets = [v for v in (api_key, *secret_headers(headers or {}).values()) if v]
        auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(timeout=timeout_s, headers={**(headers or {}), **auth}, transport=transport)

    def redact(self, text: str) -> str:
        text = redact(text)
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def chat(self, body: dict[str, Any]) -> Completion:
        """The first choice's message; ChatError when the endpoint fails or answers something unreadable."""
        error = "no attempt made"
        attempts = 0
        for attempt in range(self.retry.retries + 1):
            attempts = attempt + 1
            wait = self.retry.wait(attempt)
            try:
                r = self._http.post(self.url, json=body)
            except httpx.TimeoutException:
                error = f"timed out after {self.timeout_s:g}s"
            except httpx.TransportError as exc:
                error = f"connection error: {type(exc).__name__}: {exc}"
            else:
                if r.status_code == 200:
                    return Completion(self._message(r, attempts), attempts)
                error = f"HTTP {r.status_code}: {r.text[:500]}"
                if r.status_code != 429 and r.status_code < 500:
                    break  # a client error: retrying the same request cannot help
                wait = retry_after(r.headers.get("retry-after"), wait, self.retry.max_backoff_s)
            if attempt < self.retry.retries:
                self._sleep(wait)
        raise ChatError(self.redact(f"{error} (after {attempts} attempt{'s' if attempts > 1 else ''})"), attempts)

    def _message(self, r: httpx.Response, attempts: int) -> dict[str, Any]:
        try:
            message = r.json()["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise ChatError(self.redact(f"malformed chat completion: {r.text[:500]}"), attempts) from None
        if not isinstance(message, dict):
            raise ChatError(f"malformed chat completion: message is {type(message).__name__}", attempts)
        return message

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def retry_after(value: str | None, default: float, cap: float) -> float:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), capped; `default` if absent."""
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return default
    return min(cap, max(0.0, seconds))


_SECRET_HEADER = re.compile(r"(?i)authorization|api[-_]?key|token|secret|password|cookie")


def secret_headers(headers: dict[str, str]) -> dict[str, str]:
    """The headers whose names say they carry a credential."""
    return {k: v for k, v in headers.items() if _SECRET_HEADER.search(k)}


def public_headers(headers: dict[str, str]) -> dict[str, str]:
    """Headers fit to store or print: credential-carrying ones masked."""
    return {k: MASK if _SECRET_HEADER.search(k) else v for k, v in headers.items()}
