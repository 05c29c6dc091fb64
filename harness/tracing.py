"""Langfuse tracing of generation batches, lm-eval runs and judge calls.

On only when both LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY are set; the host is
LANGFUSE_BASE_URL or LANGFUSE_HOST (Langfuse Cloud if neither). The Langfuse SDK (5.x) is
OpenTelemetry-based: spans are batched in a background thread and exported as OTLP/HTTP to
`{host}/api/public/otel/v1/traces`. With the keys unset, `span()` does nothing at all: no client,
no thread, no request.

    with tracing.attributes(run_id=3, trial="lora"):      # ambient ids for everything inside
        with tracing.span("generate", suite="json_extract", n=40) as sp:
            ...
            sp.update(output=..., seconds=1.2)

Each span's attributes land in the observation's metadata (`langfuse.observation.metadata.<key>`);
the ambient ones also become trace metadata, and a run id groups its traces as one Langfuse session.
tunegate keeps its own TracerProvider, so it neither installs nor exports through a global one.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

DEFAULT_HOST = "https://cloud.langfuse.com"

_AMBIENT: ContextVar[dict[str, Any] | None] = ContextVar("tunegate_trace_attributes", default=None)
_CLIENTS: dict[tuple[str, str, str], Any] = {}
_LOCK = threading.Lock()


def settings() -> tuple[str, str, str] | None:
    """(public key, secret key, host) when tracing is configured, else None."""
    public, secret = os.environ.get("LANGFUSE_PUBLIC_KEY"), os.environ.get("LANGFUSE_SECRET_KEY")
    if not (public and secret):
        return None
    host = os.environ.get("LANGFUSE_BASE_URL") or os.environ.get("LANGFUSE_HOST") or DEFAULT_HOST
    return public, secret, host.rstrip("/")


def enabled() -> bool:
    return settings() is not None


def client() -> Any | None:
    """The Langfuse client for the current settings (created on first use), or None when unset."""
    config = settings()
    if config is None:
        return None
    with _LOCK:
        if config not in _CLIENTS:
            from langfuse import Langfuse
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider

            public, secret, host = config
            provider = TracerProvider(resource=Resource.create({"service.name": "tunegate"}))
            _CLIENTS[config] = Langfuse(public_key=public, secret_key=secret, base_url=host, tracer_provider=provider)
        return _CLIENTS[config]


def flush() -> None:
    """Send every finished span now (the SDK otherwise sends in batches, and at exit)."""
    for lf in list(_CLIENTS.values()):
        lf.flush()


def shutdown() -> None:
    """Flush and stop every client this process created."""
    with _LOCK:
        clients = list(_CLIENTS.values())
        _CLIENTS.clear()
    for lf in clients:
        lf.shutdown()


def _json(value: Any) -> Any:
    return None if value is None else json.loads(json.dumps(value, default=str))


def _clean(attrs: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe attribute values, Nones dropped."""
    return {k: _json(v) for k, v in attrs.items() if v is not None}


@contextmanager
def attributes(**attrs: Any) -> Iterator[None]:
    """Ids (run_id, trial, ...) added to every span opened inside this block, in this thread/task."""
    token = _AMBIENT.set({**(_AMBIENT.get() or {}), **_clean(attrs)})
    try:
        yield
    finally:
        _AMBIENT.reset(token)


class Span:
    """What `span()` yields: add output and attributes while the span is open."""

    def __init__(self, observation: Any = None) -> None:
        self._obs = observation

    @property
    def recording(self) -> bool:
        return self._obs is not None

    def update(self, *, output: Any = None, **attrs: Any) -> None:
        if self._obs is not None:
            self._obs.update(output=_json(output), metadata=_clean(attrs) or None)

    def event(self, name: str, **attrs: Any) -> None:
        """A point-in-time child event (e.g. one finished batch inside a generation span)."""
        if self._obs is not None:
            self._obs.create_event(name=name, metadata=_clean(attrs) or None)


@contextmanager
def span(
    name: str, *, as_type: str = "span", input: Any = None, model: str | None = None, **attrs: Any
) -> Iterator[Span]:
    """A traced block. `as_type="generation"` (with `model`) marks an LLM call. No-op when unset."""
    lf = client()
    if lf is None:
        yield Span()
        return
    from langfuse import propagate_attributes

    ambient = _AMBIENT.get() or {}
    metadata = {**ambient, **_clean(attrs)}
    session = f"tunegate-run-{ambient['run_id']}" if "run_id" in ambient else None
    kwargs: dict[str, Any] = {"name": name, "as_type": as_type, "input": _json(input), "metadata": metadata}
    if model is not None and as_type == "generation":
        kwargs["model"] = model
    with (
        propagate_attributes(metadata=ambient or None, session_id=session),
        lf.start_as_current_observation(**kwargs) as observation,
    ):
        try:
            yield Span(observation)
        except BaseException as exc:
            observation.update(level="ERROR", status_message=f"{type(exc).__name__}: {exc}"[:1000])
            raise
