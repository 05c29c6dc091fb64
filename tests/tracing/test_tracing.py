"""Langfuse tracing against a real OTLP/HTTP receiver on 127.0.0.1 (tests/support/servers/otlp_receiver.py):
with keys set, evaluation batches and judge calls arrive as spans carrying run/trial/suite ids;
with keys unset nothing is created and nothing is sent."""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path

import pytest

from harness import tracing
from tests.support.servers.otlp_receiver import OtlpReceiver

META = "langfuse.observation.metadata."


@pytest.fixture(scope="module")
def receiver():
    with OtlpReceiver() as r:
        yield r


@pytest.fixture
def langfuse_env(receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch):
    """Keys for this test only (the SDK keeps one client per public key) and the receiver as host."""
    receiver.received.clear()
    public, secret = f"pk-lf-{uuid.uuid4().hex[:8]}", "sk-lf-test"
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", public)
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", secret)
    monkeypatch.setenv("LANGFUSE_HOST", receiver.url)
    monkeypatch.delenv("LANGFUSE_BASE_URL", raising=False)
    yield public, secret
    tracing.shutdown()


@pytest.fixture(scope="module")
def model_tok(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def small_suite(n: int = 3):
    from harness.evaluation import _suite as suites

    suite = suites.load("json_extract")
    spec = suite.spec.model_copy(
        update={"generation": suite.spec.generation.model_copy(update={"max_new_tokens": 3, "batch_size": 2})}
    )
    return suite.model_copy(update={"items": suite.items[:n], "spec": spec})


def test_spans_reach_the_otlp_endpoint_with_our_ids(langfuse_env, receiver: OtlpReceiver) -> None:
    public, secret = langfuse_env
    with tracing.attributes(run_id=7, trial="lora"), tracing.span("generate", suite="json_extract", n=3) as span:
        assert span.recording
        span.update(output=["a", "b", "c"], seconds=0.5)
    tracing.flush()
    [req] = receiver.requests()
    assert req.path == "/api/public/otel/v1/traces"
    assert req.headers["authorization"] == "Basic " + base64.b64encode(f"{public}:{secret}".encode()).decode()
    [s] = receiver.spans()
    assert s.name == "generate" and s.resource["service.name"] == "tunegate"
    meta = {k[len(META) :]: json.loads(v) for k, v in s.attributes.items() if k.startswith(META)}
    assert meta == {"run_id": 7, "trial": "lora", "suite": "json_extract", "n": 3, "seconds": 0.5}
    assert json.loads(s.attributes["langfuse.observation.output"]) == ["a", "b", "c"]
    assert json.loads(s.attributes["langfuse.trace.metadata.run_id"]) == 7  # trace-level ids too
    assert s.attributes["session.id"] == "tunegate-run-7"  # a run's traces group together


@pytest.mark.parametrize(("numerics", "sizes"), [("fast", [1, 2]), ("invariant", [3])])
def test_evaluation_batches_and_judge_calls_are_traced(
    langfuse_env, receiver: OtlpReceiver, model_tok, tiny_model_dir: Path, numerics: str, sizes: list[int]
) -> None:
    """One `batch` event per generation batch: the suite's batch size in fast mode, one group of fixed lanes (all
    three items) in the invariant mode."""
    from harness import scorers as J
    from harness.evaluation import evaluate

    suite = small_suite(3)
    with tracing.attributes(run_id=3, trial="baseline"):
        evaluate(*model_tok, suite, numerics=numerics)
        J.clear_memory_cache()
        local = J.Judge(J.JudgeConfig(backend="local", model=str(tiny_model_dir), max_tokens=4))
        local.rubric("5 best, 1 worst", [J.RubricCase("x", "q?", "a")])
    tracing.flush()
    spans = receiver.spans()
    [gen] = [s for s in spans if s.name == "generate"]
    meta = {k[len(META) :]: json.loads(v) for k, v in gen.attributes.items() if k.startswith(META)}
    assert meta["run_id"] == 3 and meta["trial"] == "baseline" and meta["suite"] == "json_extract"
    assert meta["suite_version"] == suite.version and meta["n"] == 3 and meta["batch_size"] == 2
    batches = [s for s in spans if s.name == "batch" and s.parent_span_id == gen.span_id]
    assert sorted(json.loads(b.attributes[META + "size"]) for b in batches) == sizes  # one per generate batch
    [call] = [s for s in spans if s.name == "judge_call"]
    assert call.attributes["langfuse.observation.type"] == "generation"
    assert call.attributes["langfuse.observation.model.name"] == str(tiny_model_dir)
    assert json.loads(call.attributes[META + "trial"]) == "baseline"
    assert "Score" in call.attributes["langfuse.observation.input"]  # the judge prompt
    assert "langfuse.observation.output" in call.attributes


def test_an_error_marks_the_span(langfuse_env, receiver: OtlpReceiver) -> None:
    with pytest.raises(RuntimeError), tracing.span("generate", suite="s"):
        raise RuntimeError("out of memory")
    tracing.flush()
    [s] = receiver.spans()
    assert s.attributes["langfuse.observation.level"] == "ERROR"
    assert "out of memory" in s.attributes["langfuse.observation.status_message"]


def test_nothing_is_created_or_sent_without_keys(
    receiver: OtlpReceiver, model_tok, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.evaluation import evaluate

    tracing.shutdown()
    receiver.received.clear()
    monkeypatch.setenv("LANGFUSE_HOST", receiver.url)
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", "pk-only")  # one key is not enough
    monkeypatch.delenv("LANGFUSE_SECRET_KEY", raising=False)
    assert not tracing.enabled() and tracing.client() is None
    with tracing.attributes(run_id=1, trial="t"), tracing.span("generate", suite="s") as span:
        assert not span.recording
        span.update(output="ignored")
        span.event("batch", size=1)
    evaluate(*model_tok, small_suite(2))
    tracing.flush()
    time.sleep(0.3)
    assert receiver.requests() == [] and tracing._CLIENTS == {}
