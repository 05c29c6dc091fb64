"""Turn a recommendation into an experiment plan that tests it against its alternatives.

The plan follows the harness's schema (`harness.plan.Plan`): a baseline arm, then one arm per
recommended option. `hybrid_rag_lora` has no arm type of its own, so it is tested as its two
halves (a rag arm and a lora arm). A dpo arm needs a preference file; without one it is left out
and a note says so.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from advisor.questions import Answers
from advisor.rules import Recommendation

DEFAULT_GATE = "examples/demo/gate.yaml"
SUITES_BY_TASK: dict[str, list[str]] = {
    "classification_extraction": ["json_extract", "general_knowledge"],
}
DEFAULT_SUITES = ["general_knowledge"]


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
    arm |= {"epochs": _epochs(answers.labelled_examples), "batch_size": 8 if answers.gpu_count else 4,
            "max_length": max_length}
    if tight_memory:
        arm["gradient_checkpointing"] = True
    return arm


def _system_prompt(answers: Answers) -> str:
    return {
        "classification_extraction": "Extract exactly what is asked and answer with compact JSON only.",
        "style_format": "Answer in the house style and format shown in the examples.",
        "domain_knowledge": "Answer precisely using the domain knowledge in the context; say when you do not know.",
        "reasoning": "Work through the problem step by step, then give the final answer.",
        "summarization": "Summarise faithfully and concisely in the format shown in the examples.",
        "open_qa": "Answer from the provided context and say when the context does not contain the answer.",
    }[answers.task_type]


def write_plan(recommendation: Recommendation, answers: Answers, train_path: str | Path,
               suites: list[str] | None = None, model: str = "smollm2-135m", *,
               name: str | None = None, gate: str | None = DEFAULT_GATE, preference_path: str | Path | None = None,
               max_length: int = 512, notes: list[str] | None = None) -> dict[str, Any]:
    """A plan dict for `tunegate run`. `notes`, when given, collects why arms were added or left out."""
    notes = notes if notes is not None else []
    suites = suites or SUITES_BY_TASK.get(answers.task_type, DEFAULT_SUITES)
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
            add({"name": "rag", "type": "rag", "k": 3})
            add(_train_arm(tuned, tuned, answers, max_length, tight))
            sft_arm = sft_arm or tuned
            notes.append(f"hybrid_rag_lora is tested as its halves (rag and {tuned} arms); serve the tuned "
                         "model with retrieval if both win.")
        elif option == "dpo":
            if preference_path is None:
                notes.append("dpo was recommended but no preference file was given (--preference); "
                             "the dpo arm is left out.")
                continue
            dpo: dict[str, Any] = {"name": "dpo", "type": "dpo", "beta": 0.1, "lr": 5.0e-6,
                                   "epochs": 1.0, "batch_size": 8 if answers.gpu_count else 4}
            if sft_arm is None and answers.labelled_examples >= 100:
                add(_train_arm("lora", "lora", answers, max_length, tight))
                sft_arm = "lora"
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
    header = [f"# Written by `tunegate advise`: primary recommendation {recommendation.primary} "
              f"(confidence {recommendation.confidence:.0%}); arms test it against {', '.join(recommendation.arms[1:]) or 'the baseline'}."]
    header += [f"# note: {n}" for n in notes or []]
    return "\n".join(header) + "\n" + yaml.safe_dump(plan, sort_keys=False, width=110)


def save_plan(path: str | Path, plan: dict[str, Any], recommendation: Recommendation,
              notes: list[str] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(plan_yaml(plan, recommendation, notes), encoding="utf-8")
    return path
