"""What the advisor asks, as one validated model, with three ways in: a terminal, a YAML file, a dict.

`QUESTIONS` describes every question (key, prompt, type, choices, default, help, skip_if) so a form
(the Streamlit app) can be rendered from it; `Answers` validates whatever the form, the file or
the terminal produced.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from rich.console import Console
from rich.prompt import Prompt

from advisor.errors import AdvisorInputError
from harness.base import YamlDoc, dotted

TaskType = Literal[
    "style_format", "domain_knowledge", "classification_extraction", "reasoning", "summarization", "open_qa"
]
SecondTask = Literal[
    "none", "style_format", "domain_knowledge", "classification_extraction", "reasoning", "summarization", "open_qa"
]
Volatility = Literal["never", "yearly", "monthly", "weekly", "daily", "hourly"]
Deployment = Literal["hosted", "on_premises", "edge"]
TASK_TYPES: tuple[str, ...] = TaskType.__args__  # type: ignore[attr-defined]
VOLATILITIES: tuple[str, ...] = Volatility.__args__  # type: ignore[attr-defined]
NO_GPU_WORDS = {"none", "no", "cpu", "0"}
UNKNOWN_WORDS = {"unknown", "?", "don't know", "dont know", "not sure", ""}
NO_LIMIT_WORDS = {"none", "no limit", "no_limit", "unlimited"}
NO_LIMIT = "no_limit"
NUMBER_FIELDS = {
    "labelled_examples",
    "preference_pairs",
    "documents",
    "latency_budget_ms",
    "requests_per_day",
    "cost_budget_usd_per_1k_requests",
    "gpu_count",
    "vram_gib_per_gpu",
    "model_params_b",
    "quality_target",
}


class Answers(BaseModel):
    """The facts about a team's use case that decide between prompting, RAG and fine-tuning.

    Every answer may be unknown (None; written `unknown` in a file, the terminal or the form). An
    answer left out is unknown too; `model_fields_set` tells the two apart. Nothing unknown is
    replaced by a guess: the only values filled in are implied by other answers (no hosted model
    when the data may not leave the premises; no GPU memory without a GPU).
    """

    model_config = ConfigDict(extra="forbid")

    task_type: TaskType | None = None
    second_task_type: SecondTask | None = Field(default=None, description="a second aspect the answers need")
    labelled_examples: int | None = Field(default=None, ge=0, description="good input -> output examples you have")
    preference_pairs: int | None = Field(default=None, ge=0, description="prompt/chosen/rejected pairs you have")
    documents: int | None = Field(default=None, ge=0, description="reference documents the answers depend on")
    knowledge_volatility: Volatility | None = None
    citations_required: bool | None = None
    latency_budget_ms: int | None = Field(default=None, gt=0, le=600_000)
    requests_per_day: int | None = Field(default=None, ge=0)
    cost_budget_usd_per_1k_requests: Annotated[float, Field(ge=0)] | Literal["no_limit"] | None = None
    data_can_leave_premises: bool | None = None
    hosted_model_allowed: bool | None = None
    deployment_target: Deployment | None = None
    gpu_count: int | None = Field(default=None, ge=0, le=1024)
    vram_gib_per_gpu: float | None = Field(default=None, ge=0, le=4096)
    model_params_b: float | None = Field(default=None, gt=0, le=2000)
    quality_target: float | None = Field(default=None, ge=0, le=1)

    @field_validator("*", mode="before")
    @classmethod
    def unknown_words(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str) and value.strip().lower() in UNKNOWN_WORDS:
            return None
        if isinstance(value, bool) and info.field_name in NUMBER_FIELDS:
            raise ValueError(f"expected a number, not {str(value).lower()}")
        return value

    @field_validator("gpu_count", mode="before")
    @classmethod
    def gpu_words(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in NO_GPU_WORDS:
            return 0
        return value

    @field_validator("cost_budget_usd_per_1k_requests", mode="before")
    @classmethod
    def no_limit(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in NO_LIMIT_WORDS:
            return NO_LIMIT
        return value

    @field_validator("hosted_model_allowed")
    @classmethod
    def hosted_needs_data_out(cls, value: bool | None, info: ValidationInfo) -> bool | None:
        if value and info.data.get("data_can_leave_premises") is False:
            raise ValueError(
                "a hosted model means the data leaves the premises; "
                "set data_can_leave_premises to true or this to false"
            )
        return value

    @field_validator("deployment_target")
    @classmethod
    def hosted_deployment_needs_data_out(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value == "hosted" and info.data.get("data_can_leave_premises") is False:
            raise ValueError(
                "a hosted deployment means the data leaves the premises; "
                "choose on_premises or edge, or set data_can_leave_premises to true"
            )
        return value

    @field_validator("vram_gib_per_gpu")
    @classmethod
    def vram_matches_gpus(cls, value: float | None, info: ValidationInfo) -> float | None:
        gpus = info.data.get("gpu_count")
        if gpus and value is not None and value <= 0:
            raise ValueError(f"gpu_count is {gpus}: give the memory of each GPU in GiB (e.g. 24 or 80)")
        if gpus == 0 and value:
            raise ValueError("gpu_count is 0 (no GPU): leave vram_gib_per_gpu at 0")
        return value

    @model_validator(mode="after")
    def implied(self) -> Answers:
        """Fill in what other answers imply (not a default: a consequence); see `implied_by`."""
        for key, (_, value) in implied_by(self).items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        return self

    def unknown(self) -> list[str]:
        """The answers that are unknown, in question order."""
        return [k for k in type(self).model_fields if getattr(self, k) is None]


def implied_by(answers: Answers | dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """key -> (the answer that implies it, the implied value), for answers a form need not ask."""
    get = answers.get if isinstance(answers, dict) else lambda k: getattr(answers, k)
    out: dict[str, tuple[str, Any]] = {}
    if get("data_can_leave_premises") is False:
        out["hosted_model_allowed"] = ("data_can_leave_premises is no", False)
    if get("gpu_count") == 0:
        out["vram_gib_per_gpu"] = ("gpu_count is 0", 0.0)
    return out


@dataclass(frozen=True)
class Question:
    key: str
    prompt: str
    type: Literal["int", "float", "optional_float", "bool", "choice"]
    help: str
    choices: tuple[str, ...] | None = None
    skip_if: tuple[str, Any] | None = None  # not asked when answers[key] == value ("not_positive": not > 0)

    @property
    def default(self) -> Any:
        return Answers.model_fields[self.key].default

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"default": self.default, "choices": list(self.choices) if self.choices else None}


QUESTIONS: tuple[Question, ...] = (
    Question(
        "task_type",
        "What kind of task is it?",
        "choice",
        "style_format: tone, persona, output format; domain_knowledge: answers that need "
        "specialist facts; classification_extraction: labels or fields out of text; reasoning: "
        "multi-step problems; summarization; open_qa: questions over a knowledge base.",
        TASK_TYPES,
    ),
    Question(
        "second_task_type",
        "Does the task have a second aspect (e.g. a house style *and* domain facts)?",
        "choice",
        "The second thing the answers must get right, or none.",
        SecondTask.__args__,
    ),  # type: ignore[attr-defined]
    Question(
        "labelled_examples",
        "How many good labelled examples (input -> ideal output) do you have?",
        "int",
        "Count only examples you would be happy for the model to copy.",
    ),
    Question(
        "preference_pairs",
        "How many preference pairs (prompt, better answer, worse answer)?",
        "int",
        "Rankings or thumbs-up/down turned into pairs; 0 if none.",
    ),
    Question(
        "documents",
        "How many reference documents do answers depend on?",
        "int",
        "Manuals, policies, product pages, tickets... 0 if none.",
    ),
    Question(
        "knowledge_volatility",
        "How often do the facts the model needs change?",
        "choice",
        "never, yearly, monthly, weekly, daily or hourly.",
        VOLATILITIES,
    ),
    Question(
        "citations_required",
        "Must each answer cite the source it came from?",
        "bool",
        "Yes if users or auditors need to check where an answer came from.",
    ),
    Question(
        "latency_budget_ms",
        "Latency budget per request, in milliseconds?",
        "int",
        "The p95 you can accept end to end, e.g. 200 for autocomplete, 5000 for a chat answer.",
    ),
    Question(
        "requests_per_day",
        "How many requests a day do you expect?",
        "int",
        "At scale a short prompt on a small tuned model costs less per request; at low volume training is not repaid.",
    ),
    Question(
        "cost_budget_usd_per_1k_requests",
        "Cost budget in USD per 1,000 requests ('no limit' if none)?",
        "optional_float",
        "Serving cost you can accept; 'no limit' if it does not matter.",
    ),
    Question(
        "data_can_leave_premises",
        "May the data leave your premises?",
        "bool",
        "No if contracts or law keep it on your own machines.",
    ),
    Question(
        "hosted_model_allowed",
        "May a hosted (third-party API) model be used?",
        "bool",
        "Not asked when the data may not leave the premises.",
        skip_if=("data_can_leave_premises", False),
    ),
    Question(
        "deployment_target",
        "Where will the model run in production?",
        "choice",
        "hosted: a cloud service; on_premises: your own servers; edge: a device that may be offline.",
        Deployment.__args__,
    ),  # type: ignore[attr-defined]
    Question(
        "gpu_count",
        "How many GPUs can you train on ('none' for CPU only)?",
        "int",
        "GPUs on the machine that will train; 'none' or 0 for CPU only.",
    ),
    Question(
        "vram_gib_per_gpu",
        "Memory per GPU in GiB?",
        "float",
        "e.g. 16 (T4), 24 (RTX 4090/A10), 40 or 80 (A100/H100).",
        skip_if=("gpu_count", "not_positive"),
    ),
    Question(
        "model_params_b",
        "Size of the base model to tune, in billions of parameters?",
        "float",
        "SmolLM2-135M = 0.135, Llama-3.2-1B = 1.2, Llama-3.1-8B = 8.",
    ),
    Question(
        "quality_target",
        "Quality bar: target score on your main metric (0-1)?",
        "float",
        "e.g. 0.9 exact match on the held-out suite.",
    ),
)
QUESTION_BY_KEY = {q.key: q for q in QUESTIONS}


def should_ask(q: Question, answers: Answers | dict[str, Any]) -> bool:
    """Whether a question applies given the answers so far. A question not asked is left unknown,
    and `Answers` fills in what the other answers imply (see `implied_by`)."""
    if q.skip_if is None:
        return True
    key, condition = q.skip_if
    value = answers.get(key) if isinstance(answers, dict) else getattr(answers, key)
    if condition == "not_positive":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    return value is not condition


def show(value: Any) -> str:
    """An answer as a person would type it."""
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value == NO_LIMIT:
        return "no limit"
    return f"{value:g}" if isinstance(value, float) else str(value)


def ask_answers(console: Console | None = None, defaults: Answers | dict[str, Any] | None = None) -> Answers:
    """Ask every question in the terminal with rich.prompt; a bad answer is explained and asked again."""
    console = console or Console()
    base = defaults if isinstance(defaults, Answers) else Answers.model_validate(defaults or {})
    current = Answers.model_construct(**base.model_dump())
    validator = Answers.__pydantic_validator__
    for q in QUESTIONS:
        if not should_ask(q, current):
            setattr(current, q.key, implied_by(current).get(q.key, (None, None))[1])
            continue
        while True:
            raw = Prompt.ask(
                f"[bold]{q.prompt}[/] ('unknown' if you do not know)",
                console=console,
                default=show(getattr(current, q.key)),
                choices=[*q.choices, "unknown"] if q.choices else None,
                show_choices=bool(q.choices),
            )
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
    return YamlDoc(path, error=AdvisorInputError).validate(Answers, what="answers file")


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
