"""A real OpenAI-compatible chat server for tests: `POST /v1/chat/completions` answered by a Hugging
Face causal LM run greedily (chat template, `max_tokens` new tokens), on 127.0.0.1, stdlib only.

For deterministic tests of what a judge does with an answer, and of how it copes with a failing
endpoint, the server can also:
- answer with a fixed completion when the request carries `X-Tunegate-Test-Force: <text>`
  (`\\n` in the header value becomes a newline); without the header the model answers;
- fail the next requests with queued status codes (`fail_next`, e.g. [503, 503]), optionally with a
  Retry-After header, or every request (`always_status`);
- sleep before answering the next requests (`delay_next`, seconds) to make clients time out;
- require `Authorization: Bearer <api_key>` when started with an api_key.
Every request is recorded (body, headers, status, what was answered and by whom) in `requests`.

    python -m tests.support.servers.openai_compat --model path/to/hf-folder --port 8000
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from tests.support.servers._loopback import LoopbackServer

FORCE_HEADER = "X-Tunegate-Test-Force"


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    status: int = 0
    content: str | None = None
    source: str = ""  # model | forced | injected-failure | rejected


@dataclass
class ChatServer(LoopbackServer):
    thread_name = "chat-server"
    model_dir: str | Path
    api_key: str | None = None
    model_name: str = "tiny-judge"
    max_tokens_cap: int = 128
    requests: list[Recorded] = field(default_factory=list)
    fail_next: deque = field(default_factory=deque)  # status codes (or (status, retry_after) pairs)
    delay_next: deque = field(default_factory=deque)  # seconds
    always_status: int | None = None

    def __post_init__(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(self.model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(self.model_dir).eval()
        self._model_lock = threading.Lock()
        self._lock = threading.Lock()

    # --- lifecycle (start, stop, context: LoopbackServer) ---------------------------------------
    def handler(self) -> type[BaseHTTPRequestHandler]:
        return _handler(self)

    @property
    def url(self) -> str:
        """Base URL in OpenAI's style (with /v1)."""
        return self.root_url + "/v1"

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.fail_next.clear()
            self.delay_next.clear()
            self.always_status = None

    @property
    def count(self) -> int:
        """Chat completion requests received (failed ones included)."""
        with self._lock:
            return sum(r.path.endswith("/chat/completions") for r in self.requests)

    # --- answering ---------------------------------------------------------------------------
    def complete(self, messages: list[dict[str, str]], max_tokens: int) -> tuple[str, int, int]:
        """Greedy completion by the model: (text, prompt tokens, completion tokens)."""
        import torch

        ids = self.tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with self._model_lock, torch.inference_mode():
            out = self.model.generate(
                **ids,
                do_sample=False,
                max_new_tokens=max(1, min(max_tokens, self.max_tokens_cap)),
                pad_token_id=self.tok.pad_token_id,
            )
        new = out[0, ids["input_ids"].shape[1] :]
        return self.tok.decode(new, skip_special_tokens=True), int(ids["input_ids"].shape[1]), int(new.shape[0])


def _handler(server: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, payload: dict[str, Any], extra: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test)

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._send(200, {"object": "list", "data": [{"id": server.model_name, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                body = None
            rec = Recorded(self.path, {k: v for k, v in self.headers.items()}, body)
            with server._lock:
                server.requests.append(rec)
                failure = server.fail_next.popleft() if server.fail_next else server.always_status
                delay = server.delay_next.popleft() if server.delay_next else 0.0
            if not self.path.rstrip("/").endswith("/chat/completions"):
                rec.status, rec.source = 404, "rejected"
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                rec.status, rec.source = 401, "rejected"
                return self._send(401, {"error": {"message": "invalid api key", "type": "invalid_request_error"}})
            if failure is not None:
                status, retry_after = failure if isinstance(failure, tuple) else (failure, None)
                rec.status, rec.source = status, "injected-failure"
                return self._send(
                    status,
                    {"error": {"message": f"injected failure {status}"}},
                    {"Retry-After": str(retry_after)} if retry_after is not None else None,
                )
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                rec.status, rec.source = 400, "rejected"
                return self._send(400, {"error": {"message": "body must be JSON with a 'messages' list"}})
            if delay:
                time.sleep(delay)
            forced = self.headers.get(FORCE_HEADER)
            if forced is not None:
                text, n_prompt, n_new = forced.replace("\\n", "\n"), 0, 0
                rec.source = "forced"
            else:
                text, n_prompt, n_new = server.complete(body["messages"], int(body.get("max_tokens") or 16))
                rec.source = "model"
            rec.status, rec.content = 200, text
            self._send(
                200,
                {
                    "id": f"chatcmpl-{len(server.requests)}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", server.model_name),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "length" if n_new >= int(body.get("max_tokens") or 16) else "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_new, "total_tokens": n_prompt + n_new},
                },
            )

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a local Hugging Face model folder")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args()
    server = ChatServer(args.model, api_key=args.api_key).start(args.port)
    print(f"serving {args.model} at {server.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
