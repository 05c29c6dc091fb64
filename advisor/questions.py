"""What the advisor asks, as one validated model, with three ways in: a terminal, a YAML file, a dict.

`QUESTIONS` describes every question (key, prompt, type, choices, default, help, ask_if) so a form
(the Streamlit app) can be rendered from it; `Answers` validates whatever the form, the file or
the terminal produced.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from rich.console import Console
from rich.prompt import Prompt

from advisor.errors import AdvisorInputError, YamlFile, dotted

TaskType = Literal["style_format", "domain_knowledge", "classification_extraction", "reasoning",
                   "summarization", "open_qa"]
Volatility = Literal["never", "yearly", "monthly", "weekly", "daily"]
TASK_TYPES: tuple[str, ...] = TaskType.__args__  # type: ignore[attr-defined]
VOLATILITIES: tuple[str, ...] = Volatility.__args__  # type: ignore[attr-defined]
NO_GPU_WORDS = {"none", "no", "cpu", "0", ""}


class Answers(BaseModel):
    """The facts about a team's use case that decide between prompting, RAG and fine-tuning."""

    model_config = ConfigDict(extra="forbid")

    task_type: TaskType = "style_format"
    labelled_examples: int = Field(default=0, ge=0, description="good input -> output examples you have")
    preference_pairs: int = Field(default=0, ge=0, description="prompt/chosen/rejected pairs you have")
    documents: int = Field(default=0, ge=0, description="reference documents the answers depend on")
    knowledge_volatility: Volatility = "yearly"
    latency_budget_ms: int = Field(default=1000, gt=0, le=600_000)
    cost_budget_usd_per_1k_requests: float | None = Field(default=None, ge=0)
    data_can_leave_premises: bool = False
    hosted_model_allowed: bool = False
    gpu_count: int = Field(default=0, ge=0, le=1024)
    vram_gib_per_gpu: float = Field(default=0, ge=0, le=4096, validate_default=True)
    model_params_b: float = Field(default=0.135, gt=0, le=2000)
    quality_target: float = Field(default=0.8, ge=0, le=1)

    @field_validator("gpu_count", mode="before")
    @classmethod
    def gpu_words(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in NO_GPU_WORDS:
            return 0
        return value

    @field_validator("cost_budget_usd_per_1k_requests", mode="before")
    @classmethod
    def no_limit(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in {"", "none", "no limit", "unlimited"}:
            return None
        return value

    @field_validator("hosted_model_allowed")
    @classmethod
    def hosted_needs_data_out(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("data_can_leave_premises") is False:
            raise ValueError("a hosted model means the data leaves the premises; "
                             "set data_can_leave_premises to true or this to false")
        return value

    @field_validator("vram_gib_per_gpu")
    @classmethod
    def vram_matches_gpus(cls, value: float, info: ValidationInfo) -> float:
        gpus = info.data.get("gpu_count")
        if gpus and value <= 0:
            raise ValueError(f"gpu_count is {gpus}: give the memory of each GPU in GiB (e.g. 24 or 80)")
        if gpus == 0 and value > 0:
            raise ValueError("gpu_count is 0 (no GPU): leave vram_gib_per_gpu at 0")
        return value


@dataclass(frozen=True)
class Question:
    key: str
    prompt: str
    type: Literal["int", "float", "optional_float", "bool", "choice"]
    help: str
    choices: tuple[str, ...] | None = None
    ask_if: tuple[str, Any] | None = None   # ask only when answers[key] == value ("nonzero": when it is not 0)

    @property
    def default(self) -> Any:
        return Answers.model_fields[self.key].default

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"default": self.default, "choices": list(self.choices) if self.choices else None}


QUESTIONS: tuple[Question, ...] = (
    Question("task_type", "What kind of task is it?", "choice",
             "style_format: tone, persona, output format; domain_knowledge: answers that need "
             "specialist facts; classification_extraction: labels or fields out of text; reasoning: "
             "multi-step problems; summarization; open_qa: questions over a knowledge base.", TASK_TYPES),
    Question("labelled_examples", "How many good labelled examples (input -> ideal output) do you have?", "int",
             "Count only examples you would be happy for the model to copy."),
    Question("preference_pairs", "How many preference pairs (prompt, better answer, worse answer)?", "int",
             "Rankings or thumbs-up/down turned into pairs; 0 if none."),
    Question("documents", "How many reference documents do answers depend on?", "int",
             "Manuals, policies, product pages, tickets... 0 if none."),
    Question("knowledge_volatility", "How often do the facts the model needs change?", "choice",
             "never, yearly, monthly, weekly or daily.", VOLATILITIES),
    Question("latency_budget_ms", "Latency budget per request, in milliseconds?", "int",
             "The p95 you can accept end to end, e.g. 200 for autocomplete, 5000 for a chat answer."),
    Question("cost_budget_usd_per_1k_requests", "Cost budget in USD per 1,000 requests ('none' for no limit)?",
             "optional_float", "Serving cost you can accept; 'none' if it does not matter."),
    Question("data_can_leave_premises", "May the data leave your premises?", "bool",
             "No if contracts or law keep it on your own machines."),
    Question("hosted_model_allowed", "May a hosted (third-party API) model be used?", "bool",
             "Only asked when the data may leave the premises.", ask_if=("data_can_leave_premises", True)),
    Question("gpu_count", "How many GPUs can you train on ('none' for CPU only)?", "int",
             "GPUs on the machine that will train; 'none' or 0 for CPU only."),
    Question("vram_gib_per_gpu", "Memory per GPU in GiB?", "float",
             "e.g. 16 (T4), 24 (RTX 4090/A10), 40 or 80 (A100/H100).", ask_if=("gpu_count", "nonzero")),
    Question("model_params_b", "Size of the base model to tune, in billions of parameters?", "float",
             "SmolLM2-135M = 0.135, Llama-3.2-1B = 1.2, Llama-3.1-8B = 8."),
    Question("quality_target", "Quality bar: target score on your main metric (0-1)?", "float",
             "e.g. 0.9 exact match on the held-out suite."),
)
QUESTION_BY_KEY = {q.key: q for q in QUESTIONS}


SKIPPED_VALUES: dict[str, Any] = {"hosted_model_allowed": False, "vram_gib_per_gpu": 0.0}


def should_ask(q: Question, answers: Answers | dict[str, Any]) -> bool:
    """Whether a question applies given the answers so far (a form hides it otherwise and uses
    SKIPPED_VALUES[q.key])."""
    if q.ask_if is None:
        return True
    key, wanted = q.ask_if
    value = answers.get(key) if isinstance(answers, dict) else getattr(answers, key)
    return bool(value) if wanted == "nonzero" else value == wanted


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def ask_answers(console: Console | None = None, defaults: Answers | dict[str, Any] | None = None) -> Answers:
    """Ask every question in the terminal with rich.prompt; a bad answer is explained and asked again."""
    console = console or Console()
    base = defaults if isinstance(defaults, Answers) else Answers.model_validate(defaults or {})
    current = Answers.model_construct(**base.model_dump())
    validator = Answers.__pydantic_validator__
    for q in QUESTIONS:
        if not should_ask(q, current):
            setattr(current, q.key, SKIPPED_VALUES.get(q.key, q.default))
            continue
        while True:
            raw = Prompt.ask(f"[bold]{q.prompt}[/]", console=console, default=_show(getattr(current, q.key)),
                             choices=list(q.choices) if q.choices else None, show_choices=bool(q.choices))
            try:
                validator.validate_assignment(current, q.key, raw.strip())
                break
            except ValidationError as exc:
                msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
                console.print(f"[red]Invalid answer for {q.key}: {msg}[/] ({q.help})", highlight=False)
    try:
        return Answers.model_validate(current.model_dump())
    except ValidationError as exc:  # cannot happen field by field, but never return unvalidated answers
        raise AdvisorInputError(exc.errors()[0]["msg"], field=dotted(exc.errors()[0]["loc"])) from None


def load_answers(path: str | Path) -> Answers:
    """Answers from a YAML file; a bad value raises AdvisorInputError naming file, line and field."""
    return YamlFile(path).validate(Answers, what="answers file")


def answers_from_dict(data: dict[str, Any]) -> Answers:
    try:
        return Answers.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = "unknown question" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        raise AdvisorInputError(msg, field=dotted(err["loc"])) from None


def coerce_answers(answers: Answers | dict[str, Any] | str | Path) -> Answers:
    if isinstance(answers, Answers):
        return answers
    if isinstance(answers, dict):
        return answers_from_dict(answers)
    return load_answers(answers)
