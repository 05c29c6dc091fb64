"""Turn a recommendation into an experiment plan that tests it against its alternatives.

The plan follows the harness's schema (`harness.plan.Plan`): a baseline arm, then one arm per
recommended option. `hybrid_rag_lora` has no arm type of its own, so it is tested as its two
halves (a rag arm and the adapter the recommendation's method names: lora, or qlora when LoRA does
not fit). A dpo arm continues from a supervised arm when the rules allow one (the recommendation
did not veto it), and needs a preference file; without one it is left out and a note says so.

The plan's base model must be the model the answers describe: `model_params_b` and the model spec
agree (within `SIZE_TOLERANCE`), or the planner picks the model from the answers, or it stops with
an error naming the field.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

from advisor.errors import AdvisorInputError
from advisor.questions import Answers
from advisor.rules import Recommendation

DEFAULT_MODEL = "smollm2-135m"
SIZE_TOLERANCE = 1.5  # a model within this factor of model_params_b is "the same size"
# public instruct models by size (billions of parameters), the sizes the memory estimator has shapes for
MODELS_BY_SIZE: dict[str, float] = {
    "smollm2-135m": 0.135,
    "HuggingFaceTB/SmolLM2-360M-Instruct": 0.36,
    "meta-llama/Llama-3.2-1B-Instruct": 1.24,
    "HuggingFaceTB/SmolLM2-1.7B-Instruct": 1.7,
    "meta-llama/Llama-3.2-3B-Instruct": 3.21,
    "meta-llama/Llama-3.1-8B-Instruct": 8.03,
    "meta-llama/Llama-2-13b-chat-hf": 13.0,
    "Qwen/Qwen2.5-32B-Instruct": 32.8,
    "meta-llama/Llama-3.1-70B-Instruct": 70.6,
}
_SIZE_IN_NAME = re.compile(r"(?<![A-Za-z0-9.])(\d+(?:\.\d+)?)\s*([bBmM])(?![A-Za-z])")

DEFAULT_GATE = "examples/demo/gate.yaml"
SUITES_BY_TASK: dict[str, list[str]] = {
    "classification_extraction": ["json_extract", "general_knowledge"],
}
DEFAULT_SUITES = ["general_knowledge"]


def model_size_b(spec: str) -> float | None:
    """The parameter count (billions) of a model spec: from the known list, else from a size in its name
    ('Llama-3.1-8B', 'SmolLM2-360M'); None when neither tells."""
    if spec in MODELS_BY_SIZE:
        return MODELS_BY_SIZE[spec]
    found = _SIZE_IN_NAME.findall(Path(spec).name)
    if not found:
        return None
    number, unit = found[-1]
    return float(number) / (1000 if unit.lower() == "m" else 1)


def _same_size(a: float, b: float) -> bool:
    return abs(math.log(a / b)) <= math.log(SIZE_TOLERANCE)


def choose_model(answers: Answers, model: str | None, notes: list[str]) -> str:
    """The plan's base model: `model` checked against model_params_b, or picked from model_params_b."""
    size = answers.model_params_b
    if model:
        stated = model_size_b(model)
        if size is not None and stated is not None and not _same_size(size, stated):
            raise AdvisorInputError(
                f"the plan's model {model} has {stated:g}B parameters but model_params_b is "
                f"{size:g}; name a model of about {size:g}B (or leave the model out to pick "
                "one) or correct model_params_b",
                field="model",
            )
        if size is not None and stated is None:
            notes.append(
                f"could not tell the size of {model}; check that it is the {size:g}B model the memory rules assumed."
            )
        return model
    if size is None:
        notes.append(
            f"model_params_b is unknown: the plan uses the default {DEFAULT_MODEL} "
            f"({MODELS_BY_SIZE[DEFAULT_MODEL]:g}B) and the memory rules did not run."
        )
        return DEFAULT_MODEL
    name, known = min(MODELS_BY_SIZE.items(), key=lambda kv: abs(math.log(kv[1] / size)))
    if not _same_size(size, known):
        raise AdvisorInputError(
            f"no model of about {size:g}B parameters is known to the advisor (nearest: {name}, "
            f"{known:g}B); name the base model to tune",
            field="model",
        )
    return name


def _epochs(n_examples: int) -> float:
    """More passes over small sets, one over large ones."""
    if n_examples < 500:
        return 3.0
    if n_examples < 5000:
        return 2.0
    return 1.0


def _train_arm(name: str, kind: str, answers: Answers, max_length: int, tight_memory: bool) -> dict[str, Any]:
    arm: dict[str, Any] = {"name": name, "type": kind}
    if kind in ("lora", "qlora", "dora"):
        arm |= {"r": 16, "alpha": 32, "dropout": 0.05, "lr": 2.0e-4}
    else:
        arm |= {"lr": 2.0e-5}
    arm |= {
        "epochs": _epochs(answers.labelled_examples or 0),
        "batch_size": 8 if answers.gpu_count else 4,
        "max_length": max_length,
    }
    if tight_memory:
        arm["gradient_checkpointing"] = True
    return arm


def _sft_before_dpo(recommendation: Recommendation) -> str | None:
    """The supervised stage DPO is chained after: the method's first half when DPO is the primary,
    else the best live adapter; None when the rules vetoed supervised tuning."""
    if recommendation.primary == "dpo":
        first = recommendation.method.partition("+")[0]
        return first if recommendation.method != "dpo" else None
    return next((m for m in ("lora", "qlora") if m not in recommendation.vetoed), None)


def _system_prompt(answers: Answers) -> str:
    if answers.task_type is None:
        return "Answer as the examples show."
    return {
        "classification_extraction": "Extract exactly what is asked and answer with compact JSON only.",
        "style_format": "Answer in the house style and format shown in the examples.",
        "domain_knowledge": "Answer precisely using the domain knowledge in the context; say when you do not know.",
        "reasoning": "Work through the problem step by step, then give the final answer.",
        "summarization": "Summarise faithfully and concisely in the format shown in the examples.",
        "open_qa": "Answer from the provided context and say when the context does not contain the answer.",
    }[answers.task_type]


def write_plan(
    recommendation: Recommendation,
    answers: Answers,
    train_path: str | Path,
    suites: list[str] | None = None,
    model: str | None = None,
    *,
    name: str | None = None,
    gate: str | None = DEFAULT_GATE,
    preference_path: str | Path | None = None,
    max_length: int = 512,
    notes: list[str] | None = None,
) -> dict[str, Any]:
    """A plan dict for `tunegate run`. `notes`, when given, collects why arms were added or left out."""
    notes = notes if notes is not None else []
    model = choose_model(answers, model, notes)
    suites = suites or SUITES_BY_TASK.get(answers.task_type or "", DEFAULT_SUITES)
    tight = "qlora" in recommendation.arms or any(f.id == "limited-vram" for f in recommendation.fired)
    arms: list[dict[str, Any]] = [{"name": "baseline", "type": "baseline"}]
    sft_arm: str | None = None

    def add(arm: dict[str, Any]) -> None:
        if all(a["name"] != arm["name"] for a in arms):
            arms.append(arm)

    for option in recommendation.arms:
        if option == "prompting":
            add({"name": "prompt", "type": "prompt", "system": _system_prompt(answers), "k_shot": 3})
        elif option == "rag":
            add({"name": "rag", "type": "rag", "k": 3})
        elif option in ("lora", "qlora", "full"):
            add(_train_arm(option, option, answers, max_length, tight))
            sft_arm = sft_arm or option
        elif option == "hybrid_rag_lora":
            tuned = "qlora" if "lora" in recommendation.vetoed else "lora"
            if recommendation.primary == "hybrid_rag_lora":
                tuned = recommendation.method.removeprefix("rag+")
            add({"name": "rag", "type": "rag", "k": 3})
            add(_train_arm(tuned, tuned, answers, max_length, tight))
            sft_arm = sft_arm or tuned
            notes.append(
                f"hybrid_rag_lora is tested as its halves (rag and {tuned} arms); serve the tuned "
                "model with retrieval if both win."
            )
        elif option == "dpo":
            if preference_path is None:
                notes.append(
                    "dpo was recommended but no preference file was given (--preference); the dpo arm is left out."
                )
                continue
            dpo: dict[str, Any] = {
                "name": "dpo",
                "type": "dpo",
                "beta": 0.1,
                "lr": 5.0e-6,
                "epochs": 1.0,
                "batch_size": 8 if answers.gpu_count else 4,
            }
            if tight:
                dpo["gradient_checkpointing"] = True
            sft = _sft_before_dpo(recommendation)
            if sft_arm is None and sft is not None:  # only when the rules did not veto supervised tuning
                add(_train_arm(sft, sft, answers, max_length, tight))
                sft_arm = sft
            if sft_arm is not None:
                dpo["from_arm"] = sft_arm
            add(dpo)

    stem = re.sub(r"[^A-Za-z0-9_.\-]+", "-", Path(train_path).stem).strip("-.") or "data"
    plan: dict[str, Any] = {
        "name": name or f"advise-{stem}",
        "model": model,
        "data": {"train": str(train_path), "preference": str(preference_path) if preference_path else None},
        "arms": arms,
        "suites": list(suites),
    }
    if plan["data"]["preference"] is None:
        del plan["data"]["preference"]
    if gate:
        plan["gate"] = gate
    return plan


def plan_yaml(plan: dict[str, Any], recommendation: Recommendation, notes: list[str] | None = None) -> str:
    """The plan as YAML with a header saying where it came from."""
    header = [
        f"# Written by `tunegate advise`: primary recommendation {recommendation.primary} "
        f"(confidence {recommendation.confidence:.0%}); arms test it against "
        f"{', '.join(recommendation.arms[1:]) or 'the baseline'}."
    ]
    header += [f"# note: {n}" for n in notes or []]
    return "\n".join(header) + "\n" + yaml.safe_dump(plan, sort_keys=False, width=110)


def save_plan(
    path: str | Path, plan: dict[str, Any], recommendation: Recommendation, notes: list[str] | None = None
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(plan_yaml(plan, recommendation, notes), encoding="utf-8")
    return path
