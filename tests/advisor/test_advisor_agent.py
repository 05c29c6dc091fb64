"""The tool-calling loop against a real local HTTP server that plays a scripted model."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from advisor.advice import advise
from advisor.agent import TOOLS, AgentConfig, AgentError, explain
from advisor.cli import advise_command
from advisor.errors import AdvisorInputError

ROOT = Path(__file__).resolve().parents[2]


class ScriptedModel:
    """Answers each POST with the next scripted assistant message; a scripted int is an HTTP error status
    (sent with Retry-After: 0 and an error body that echoes the request's Authorization header)."""

    def __init__(self, script: list[dict[str, Any] | int]) -> None:
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.auth: list[str | None] = []

    def handler(self) -> type[BaseHTTPRequestHandler]:
        model = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                model.requests.append(body)
                model.paths.append(self.path)
                model.auth.append(self.headers.get("Authorization"))
                message = (
                    model.script.pop(0)
                    if model.script
                    else {"role": "assistant", "content": None, "tool_calls": [_call("probe_hardware", {})]}
                )
                if isinstance(message, int):
                    echo = f"overloaded; you sent {self.headers.get('Authorization')}"
                    data = json.dumps({"error": {"message": echo}}).encode()
                    self.send_response(message)
                    self.send_header("Retry-After", "0")
                else:
                    data = json.dumps(
                        {
                            "id": "x",
                            "object": "chat.completion",
                            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                        }
                    ).encode()
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


def _call(name: str, args: dict[str, Any], call_id: str | None = None) -> dict[str, Any]:
    return {
        "id": call_id or f"call_{name}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(args)},
    }


@pytest.fixture
def server() -> Iterator[Any]:
    servers: list[ThreadingHTTPServer] = []

    def start(script: list[dict[str, Any]]) -> tuple[ScriptedModel, str]:
        model = ScriptedModel(script)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), model.handler())
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return model, f"http://127.0.0.1:{httpd.server_port}/v1"  # the OpenAI-style base URL, with its version

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


DEMO = {
    "task_type": "classification_extraction",
    "labelled_examples": 300,
    "latency_budget_ms": 200,
    "knowledge_volatility": "never",
}


def test_tool_calls_run_and_results_go_back_to_the_model(server, jsonl) -> None:
    train = jsonl(
        "train.jsonl",
        [{"prompt": f"extract {i} from text number {i}", "completion": f'{{"n":{i}}}'} for i in range(300)],
    )
    model, url = server(
        [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    _call("recommend", {"changes": {"labelled_examples": 50}}, "c1"),
                    _call("estimate_memory", {"params_billion": 0.135, "method": "lora", "seq_len": 512}, "c2"),
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    _call("audit_dataset", {"train_path": str(train)}, "c3"),
                    _call("audit_dataset", {"train_path": "/etc/passwd"}, "c4"),
                ],
            },
            {"role": "assistant", "content": "LoRA on the small model: the JSON format is learnable from 300 rows."},
        ]
    )
    result = advise(DEMO, train, probe=False)
    run = explain(result, AgentConfig(base_url=url, model="scripted", api_key="k-123"), train_path=train)

    assert run.text == "LoRA on the small model: the JSON format is learnable from 300 rows."
    assert run.turns == 3
    assert [(c["name"], c["ok"]) for c in run.tool_calls] == [
        ("recommend", True),
        ("estimate_memory", True),
        ("audit_dataset", True),
        ("audit_dataset", False),
    ]
    assert model.paths == ["/v1/chat/completions"] * 3 and model.auth == ["Bearer k-123"] * 3

    first = model.requests[0]
    assert first["model"] == "scripted" and first["tools"] == TOOLS
    assert '"primary": "lora"' in first["messages"][0]["content"]  # the rule engine's result leads
    tool_msgs = {
        m["tool_call_id"]: json.loads(m["content"]) for m in model.requests[1]["messages"] if m["role"] == "tool"
    }
    assert tool_msgs["c1"]["primary"] == "prompting"  # a real re-run with 50 examples
    assert tool_msgs["c2"]["method"] == "lora" and tool_msgs["c2"]["total_gib"] > 0.5
    later = {m["tool_call_id"]: json.loads(m["content"]) for m in model.requests[2]["messages"] if m["role"] == "tool"}
    assert later["c3"]["rows"] == 300
    assert "only the files given" in later["c4"]["error"]


def test_loop_is_bounded(server) -> None:
    model, url = server([])  # the scripted model keeps calling tools forever
    result = advise(DEMO, probe=False)
    with pytest.raises(AgentError, match="no final answer after 3 turns"):
        explain(result, AgentConfig(base_url=url, model="m", max_turns=3))
    assert len(model.requests) == 3


def test_http_error_is_an_agent_error() -> None:
    result = advise(DEMO, probe=False)
    with pytest.raises(AgentError, match="connection error"):
        explain(result, AgentConfig(base_url="http://127.0.0.1:9/v1", model="m", timeout_s=2, retries=0))


def test_overload_is_retried_and_errors_never_show_the_key(server) -> None:
    """The shared client retries 503 after the server's Retry-After; a failure's message is redacted."""
    model, url = server([503, {"role": "assistant", "content": "Tune it."}])
    result = advise(DEMO, probe=False)
    run = explain(result, AgentConfig(base_url=url, model="m", api_key="k-secret-123456"))
    assert run.text == "Tune it." and len(model.requests) == 2 and model.auth == ["Bearer k-secret-123456"] * 2

    model, url = server([503, 503])
    with pytest.raises(AgentError) as err:
        explain(result, AgentConfig(base_url=url, model="m", api_key="k-secret-123456", retries=1))
    message = str(err.value)
    assert "HTTP 503" in message and "after 2 attempts" in message and len(model.requests) == 2
    assert "k-secret-123456" not in message

    # credentials in the URL: refused before any request (httpx would send them instead of the key)
    model, url = server([{"role": "assistant", "content": "never asked"}])
    with pytest.raises(ValueError, match="must not hold credentials") as refused:
        explain(result, AgentConfig(base_url=url.replace("://", "://alice:pw-123@"), model="m", api_key="k"))
    assert model.requests == [] and "pw-123" not in str(refused.value)
    with pytest.raises(
        AdvisorInputError, match="TUNEGATE_ADVISOR_BASE_URL must not hold credentials.*TUNEGATE_ADVISOR_API_KEY"
    ):
        AgentConfig.from_env(
            {"TUNEGATE_ADVISOR_BASE_URL": url.replace("://", "://alice:pw-123@"), "TUNEGATE_ADVISOR_MODEL": "m"}
        )


def test_base_url_rule_is_the_judges() -> None:
    """One rule for every OpenAI-compatible endpoint: {base_url}/chat/completions, nothing appended."""
    from harness.llm_client import chat_url

    for base in ("http://h:1/v1", "http://h:1/v1/", "https://api.example.com/openai/v1", "http://h:1"):
        expected = base.rstrip("/") + "/chat/completions"
        assert AgentConfig(base_url=base, model="m").chat_url == chat_url(base) == expected


def test_config_from_env() -> None:
    assert AgentConfig.from_env({}) is None
    assert AgentConfig.from_env({"TUNEGATE_ADVISOR_BASE_URL": "http://h:1"}) is None
    cfg = AgentConfig.from_env({"TUNEGATE_ADVISOR_BASE_URL": "http://h:1/v1/", "TUNEGATE_ADVISOR_MODEL": "m"})
    assert cfg is not None and cfg.chat_url == "http://h:1/v1/chat/completions" and cfg.api_key is None


def test_cli_explain_prints_the_models_prose(server, monkeypatch) -> None:
    _, url = server([{"role": "assistant", "content": "Because the format is stable, tune it."}])
    monkeypatch.setenv("TUNEGATE_ADVISOR_BASE_URL", url)
    monkeypatch.setenv("TUNEGATE_ADVISOR_MODEL", "scripted")
    out = StringIO()
    code = advise_command(
        ROOT / "examples" / "demo" / "answers.yaml",
        False,
        None,
        None,
        None,
        False,
        Console(file=out, width=120),
        explain=True,
    )
    assert code == 0
    assert "Recommendation: lora" in out.getvalue()
    assert "Because the format is stable, tune it." in out.getvalue()


ECHOED = (
    "Sure. Your server said Authorization: Bearer sk-live-abcdef0123456789, the key plain-key-778899, "
    "and Basic dXNlcjpwYXNzd29yZA==\x1b]0;pwned\x07."
)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_cli_explain_redacts_what_the_model_echoes(server, monkeypatch, as_json: bool) -> None:
    """Issue 31, item 6: a server echoing credentials (a bearer token, the configured key, Basic credentials) is
    printed redacted, in the text and in --json; its control characters never reach the terminal."""
    _, url = server([{"role": "assistant", "content": ECHOED}])
    monkeypatch.setenv("TUNEGATE_ADVISOR_BASE_URL", url)
    monkeypatch.setenv("TUNEGATE_ADVISOR_MODEL", "scripted")
    monkeypatch.setenv("TUNEGATE_ADVISOR_API_KEY", "plain-key-778899")
    out = StringIO()
    code = advise_command(
        ROOT / "examples" / "demo" / "answers.yaml",
        False,
        None,
        None,
        None,
        as_json,
        Console(file=out, width=200),
        explain=True,
    )
    assert code == 0
    printed = out.getvalue()
    explanation = json.loads(printed)["explanation"] if as_json else printed
    assert "Sure. Your server said" in explanation and "***" in explanation
    for secret in ("sk-live-abcdef0123456789", "plain-key-778899", "dXNlcjpwYXNzd29yZA=="):
        assert secret not in printed
    assert "\x1b" not in printed and "\x07" not in printed
