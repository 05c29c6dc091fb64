"""The one client for OpenAI-compatible servers (harness.llm_client) and the redaction it applies: what a
judge stores and what an error says never carries a credential. Real local HTTP servers, no mocks."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from harness import scorers as J
from harness.base import paired_bootstrap
from harness.llm_client import ChatClient, ChatError, Retry, public_headers, retry_after
from harness.redact import redact


@pytest.mark.parametrize(
    "text, secret",
    [
        ("POST https://bob:hunter2-pw@api.example.com/v1/chat/completions failed", "hunter2-pw"),
        ("Authorization: Bearer abc.DEF-123_xyz", "abc.DEF-123_xyz"),
        ("header: Basic Ym9iOmh1bnRlcjI=", "Ym9iOmh1bnRlcjI="),
        ('{"error": "invalid key sk-proj-AbCdEf123456"}', "AbCdEf123456"),
        ("GET /v1/models?api_key=zz9-plural-z-alpha&x=1", "zz9-plural-z-alpha"),
        ('{"api-key": "q8w7e6r5t4"}', "q8w7e6r5t4"),
        ("token=hf_AbCdEfGhIjKlMn", "AbCdEfGhIjKlMn"),
    ],
)
def test_redact_masks_credentials(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out and "***" in out


def test_redact_leaves_ordinary_text_alone() -> None:
    text = 'HTTP 400: {"max_tokens": 24, "prompt_tokens": 3} at http://127.0.0.1:8000/v1/chat/completions'
    assert redact(text) == text


def test_public_headers_mask_credential_headers_only() -> None:
    assert public_headers({"X-Api-Key": "k", "Authorization": "Bearer k", "X-Trace": "on"}) == {
        "X-Api-Key": "***",
        "Authorization": "***",
        "X-Trace": "on",
    }


def test_retry_after_seconds_date_cap_and_garbage() -> None:
    assert retry_after("2", 9.0, 30.0) == 2.0
    assert retry_after("120", 9.0, 30.0) == 30.0  # capped
    assert retry_after(None, 9.0, 30.0) == retry_after("soon", 9.0, 30.0) == 9.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    assert 15.0 < retry_after(later, 9.0, 30.0) <= 20.0  # an HTTP date
    earlier = format_datetime(datetime.now(UTC) - timedelta(seconds=20), usegmt=True)
    assert retry_after(earlier, 9.0, 30.0) == 0.0


class Scripted:
    """A real HTTP server answering each POST with the next scripted (status, headers, body)."""

    def __init__(self, script: list[tuple[int, dict[str, str], dict[str, Any]]]) -> None:
        self.script, self.seen = list(script), []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                owner.seen.append(
                    (
                        self.path,
                        self.headers.get("Authorization"),
                        json.loads(self.rfile.read(int(self.headers["Content-Length"]))),
                    )
                )
                status, headers, body = owner.script.pop(0)
                data = json.dumps(body).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"


@pytest.fixture
def scripted() -> Iterator[Any]:
    servers: list[Scripted] = []

    def start(script: list[tuple[int, dict[str, str], dict[str, Any]]]) -> Scripted:
        servers.append(Scripted(script))
        return servers[-1]

    yield start
    for s in servers:
        s.httpd.shutdown()
        s.httpd.server_close()


def ok(content: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    return 200, {}, {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}


def test_client_posts_to_base_url_chat_completions_and_honours_retry_after(scripted) -> None:
    server = scripted(
        [(429, {"Retry-After": "7"}, {"error": "slow down"}), (502, {}, {"error": "bad gateway"}), ok("hi")]
    )
    sleeps: list[float] = []
    with ChatClient(
        server.url + "/", api_key="k-abcdef123", retry=Retry(retries=3, backoff_s=0.5), sleep=sleeps.append
    ) as client:
        done = client.chat({"model": "m", "messages": [{"role": "user", "content": "hello"}]})
    assert done.message["content"] == "hi" and done.attempts == 3
    assert sleeps == [7.0, 1.0]  # the server's Retry-After, then backoff (0.5 * 2)
    assert [p for p, _, _ in server.seen] == ["/v1/chat/completions"] * 3
    assert {a for _, a, _ in server.seen} == {"Bearer k-abcdef123"}


def test_client_errors_fail_at_once_and_are_redacted(scripted) -> None:
    server = scripted([(401, {}, {"error": "key k-abcdef123 is not valid here"})])
    client = ChatClient(server.url, api_key="k-abcdef123", sleep=lambda s: pytest.fail("a 401 must not be retried"))
    with pytest.raises(ChatError) as err:
        client.chat({"model": "m", "messages": []})
    assert err.value.attempts == 1 and "HTTP 401" in str(err.value) and "k-abcdef123" not in str(err.value)
    server = scripted([(200, {}, {"choices": []})])
    with pytest.raises(ChatError, match="malformed chat completion"):
        ChatClient(server.url).chat({"model": "m", "messages": []})


def test_judge_never_stores_a_credential(store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key header and the API key stay out of the judge_calls row; userinfo in the base URL is refused up front
    (httpx would send it as Basic auth instead of the key, issue 31 item 6), naming the variable to use."""
    monkeypatch.setenv(J.ENV_API_KEY, "sk-live-0123456789")
    J.clear_memory_cache()
    with pytest.raises(ValueError, match="judge.base_url must not hold credentials.*TUNEGATE_JUDGE_API_KEY"):
        J.Judge(J.JudgeConfig(base_url="http://ops:pw-9876543@127.0.0.1:9/v1", model="m"), store=store)
    monkeypatch.setenv(J.ENV_BASE_URL, "http://ops@127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="TUNEGATE_JUDGE_BASE_URL must not hold credentials"):
        J.Judge(J.JudgeConfig(model="m"), store=store)
    with pytest.raises(ValueError, match="must not hold credentials"):
        ChatClient("https://u:p@example.com/v1")
    config = J.JudgeConfig(
        base_url="http://127.0.0.1:9/v1",
        model="m",
        retries=0,
        timeout_s=2,
        headers={"X-Api-Key": "hdr-secret-42", "X-Team": "evals"},
    )
    [verdict] = J.Judge(config, store=store).rubric("5: right. 1: wrong.", [J.RubricCase("q", "2+2?", "4")])
    assert verdict.call.status == "failed" and "connection error" in (verdict.call.error or "")
    [row] = store.judge_calls()
    stored = json.dumps({"request": row.request, "error": row.error})
    for secret in ("sk-live-0123456789", "hdr-secret-42"):
        assert secret not in stored and secret not in verdict.detail
    assert row.request["headers"] == {"X-Api-Key": "***", "X-Team": "evals"}
    assert row.request["base_url"] == "http://127.0.0.1:9/v1"


def test_pairwise_interval_is_the_stats_paired_bootstrap() -> None:
    """summarize_pairwise uses harness.analysis's bootstrap (one home), with the numbers it always gave."""
    call = J.Call("k", "ok", "", None, False)
    verdicts = [
        J.PairVerdict(str(i), f, s, (call, call))
        for i, (f, s) in enumerate([("b", "b")] * 7 + [("a", "a")] * 3 + [("a", "b")] * 2 + [("tie", "tie")])
    ]
    summary = J.summarize_pairwise(verdicts, resamples=2000, seed=3)
    points = np.array([1.0] * 7 + [0.0] * 3 + [0.5] * 3)
    means = points[np.random.default_rng(3).integers(0, 13, size=(2000, 13))].mean(axis=1)
    assert (summary.win_rate_b, summary.win_rate_b_lo, summary.win_rate_b_hi) == pytest.approx(
        (points.mean(), np.quantile(means, 0.025), np.quantile(means, 0.975))
    )
    assert (summary.win_rate_b, summary.win_rate_b_lo, summary.win_rate_b_hi) == pytest.approx(
        paired_bootstrap([0.0] * 13, list(points), resamples=2000, seed=3)
    )
