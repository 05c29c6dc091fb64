"""Optional LLM explanations: the advisor's tools exposed to an OpenAI-compatible chat model.

Off unless TUNEGATE_ADVISOR_BASE_URL and TUNEGATE_ADVISOR_MODEL are set (TUNEGATE_ADVISOR_API_KEY
is sent as a bearer token when present). The base URL follows harness.llm_client's rule, the same as
the judge's: the API root with its version path (e.g. http://localhost:8000/v1), requests go to
`{base_url}/chat/completions`. The model gets the rule engine's recommendation as the source of
truth and may call the tools below (audit, hardware, memory estimate, recommend with changed
answers) in a bounded loop; its final message is the prose. Transient endpoint failures are retried
(honouring Retry-After) by the shared client. The audit tool only reads the files the user passed
to the advisor.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advisor.advice import AdviceResult
from advisor.audit import audit_dataset
from advisor.errors import AdvisorInputError
from advisor.hardware import probe_hardware
from advisor.questions import Answers
from advisor.rules import recommend
from harness.llm_client import ChatClient, ChatError, Retry, chat_url, check_base_url
from harness.plan import estimate_training_memory

MAX_TURNS = 6
TIMEOUT_S = 60.0
RETRIES = 3


class AgentError(Exception):
    """The model endpoint failed or misbehaved; the rule-based result stands on its own."""


@dataclass(frozen=True)
class AgentConfig:
    base_url: str
    model: str
    api_key: str | None = None
    max_turns: int = MAX_TURNS
    timeout_s: float = TIMEOUT_S
    retries: int = RETRIES

    @property
    def chat_url(self) -> str:
        return chat_url(self.base_url)

    def client(self) -> ChatClient:
        return ChatClient(
            self.base_url, api_key=self.api_key, timeout_s=self.timeout_s, retry=Retry(retries=self.retries)
        )

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> AgentConfig | None:
        env = dict(os.environ) if env is None else env
        base, model = env.get("TUNEGATE_ADVISOR_BASE_URL"), env.get("TUNEGATE_ADVISOR_MODEL")
        if not base or not model:
            return None
        try:
            check_base_url(base, named="TUNEGATE_ADVISOR_BASE_URL", key_variable="TUNEGATE_ADVISOR_API_KEY")
        except ValueError as exc:
            raise AdvisorInputError(str(exc), field="TUNEGATE_ADVISOR_BASE_URL") from None
        return cls(base_url=base, model=model, api_key=env.get("TUNEGATE_ADVISOR_API_KEY") or None)


def _fn(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            },
        },
    }


TOOLS: list[dict[str, Any]] = [
    _fn(
        "audit_dataset",
        "Audit the user's training JSONL: rows, token lengths, duplicates, train/test overlap, PII, label balance.",
        {"train_path": {"type": "string"}, "test_path": {"type": "string"}},
        ["train_path"],
    ),
    _fn("probe_hardware", "GPUs, CPU cores, RAM and free disk of the machine running the advisor.", {}, []),
    _fn(
        "estimate_memory",
        "Estimated peak GPU memory (GiB) for training a Llama-shaped model.",
        {
            "params_billion": {"type": "number"},
            "method": {"type": "string", "enum": ["lora", "qlora", "full", "dora"]},
            "seq_len": {"type": "integer"},
            "batch_size": {"type": "integer"},
            "lora_r": {"type": "integer"},
            "grad_checkpointing": {"type": "boolean"},
        },
        ["params_billion", "method"],
    ),
    _fn(
        "recommend",
        "Re-run the rule engine with some answers changed; returns primary, arms, confidence and the rules that fired.",
        {"changes": {"type": "object", "description": "answer fields to change"}},
        ["changes"],
    ),
]


@dataclass
class AgentRun:
    text: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    turns: int = 0


class ToolBox:
    """Runs the tools the model asks for, limited to the files the user gave."""

    def __init__(self, answers: Answers, allowed_files: list[Path]) -> None:
        self.answers = answers
        self.allowed = {p.resolve() for p in allowed_files}

    def _path(self, value: Any) -> Path:
        path = Path(str(value)).resolve()
        if path not in self.allowed:
            raise ValueError(f"only the files given to the advisor can be audited: {sorted(map(str, self.allowed))}")
        return path

    def call(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        if name == "audit_dataset":
            test = self._path(args["test_path"]) if args.get("test_path") else None
            report = audit_dataset(self._path(args["train_path"]), test)
            return report.model_dump(mode="json", exclude={"near_duplicates", "exact_duplicate_groups"})
        if name == "probe_hardware":
            return probe_hardware().model_dump(mode="json")
        if name == "estimate_memory":
            est = estimate_training_memory(
                float(args["params_billion"]) * 1e9,
                args["method"],
                seq_len=int(args.get("seq_len", 1024)),
                batch_size=int(args.get("batch_size", 4)),
                lora_r=int(args.get("lora_r", 16)),
                grad_checkpointing=bool(args.get("grad_checkpointing", False)),
            )
            return est.model_dump()
        if name == "recommend":
            changed = Answers.model_validate(self.answers.model_dump() | dict(args.get("changes") or {}))
            rec = recommend(changed, with_changers=False)
            return {
                "primary": rec.primary,
                "arms": rec.arms,
                "confidence": rec.confidence,
                "fired": [f.id for f in rec.fired],
            }
        raise ValueError(f"unknown tool {name!r}")


def _system_prompt(result: AdviceResult) -> str:
    rec = result.recommendation
    facts = {
        "primary": rec.primary,
        "arms": rec.arms,
        "confidence": rec.confidence,
        "fired": [{"id": f.id, "reason": f.reason} for f in rec.fired],
        "changers": [c.text for c in rec.changers],
        "answers": result.answers.model_dump(),
    }
    return (
        "You explain tunegate's recommendation to an engineering team. The rule engine's result below is "
        "the source of truth: do not contradict it. Use the tools to check facts you cite. Reply in at most "
        "200 words: the recommendation, the two or three reasons that matter most, what the experiment "
        "plan will show, and what would change the advice.\n\nRule engine result:\n" + json.dumps(facts)
    )


def run_agent(
    messages: list[dict[str, Any]], config: AgentConfig, tools: ToolBox, client: ChatClient | None = None
) -> AgentRun:
    """The bounded tool-calling loop: ask, run any tool calls, send results back, until a final message."""
    own = client is None
    client = client or config.client()
    run = AgentRun(text="")
    try:
        for turn in range(1, config.max_turns + 1):
            run.turns = turn
            try:
                message = client.chat(
                    {"model": config.model, "messages": messages, "tools": TOOLS, "tool_choice": "auto"}
                ).message
            except ChatError as exc:
                raise AgentError(f"{client.redact(client.url)}: {exc}") from None
            calls = message.get("tool_calls") or []
            if not calls:
                run.text = (message.get("content") or "").strip()
                if not run.text:
                    raise AgentError("the model returned an empty answer")
                return run
            messages.append({"role": "assistant", "content": message.get("content"), "tool_calls": calls})
            for call in calls:
                name = call.get("function", {}).get("name", "")
                try:
                    args = json.loads(call.get("function", {}).get("arguments") or "{}")
                    output = tools.call(name, args)
                except Exception as exc:  # a tool error goes back to the model, it does not end the run
                    output = {"error": f"{type(exc).__name__}: {exc}"}
                run.tool_calls.append(
                    {"name": name, "arguments": call.get("function", {}).get("arguments"), "ok": "error" not in output}
                )
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": call.get("id", name),
                        "content": json.dumps(output, default=str)[:20000],
                    }
                )
        raise AgentError(f"no final answer after {config.max_turns} turns")
    finally:
        if own:
            client.close()


def explain(
    result: AdviceResult,
    config: AgentConfig,
    train_path: Path | None = None,
    test_path: Path | None = None,
    question: str = "Explain this recommendation.",
    client: ChatClient | None = None,
) -> AgentRun:
    files = [Path(p) for p in (train_path, test_path) if p is not None]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": _system_prompt(result)},
        {"role": "user", "content": question},
    ]
    return run_agent(messages, config, ToolBox(result.answers, files), client)
