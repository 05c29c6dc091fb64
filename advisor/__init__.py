"""tunegate's advisor: should this team prompt, retrieve or fine-tune - and how to test that claim.

Public API (imported lazily, so one part loads without the others):
    advise(answers, train_path=None, test_path=None) -> AdviceResult
    recommend(answers, audit_facts=None, rules=None) -> Recommendation
    Answers, QUESTIONS, ask_answers, load_answers
    audit_dataset, probe_hardware, estimate_training_memory, write_plan
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "advise": "advisor.advice",
    "AdviceResult": "advisor.advice",
    "recommend": "advisor.rules",
    "Recommendation": "advisor.rules",
    "load_rules": "advisor.rules",
    "Answers": "advisor.questions",
    "QUESTIONS": "advisor.questions",
    "ask_answers": "advisor.questions",
    "load_answers": "advisor.questions",
    "audit_dataset": "advisor.audit",
    "AuditReport": "advisor.audit",
    "probe_hardware": "advisor.hardware",
    "HardwareReport": "advisor.hardware",
    "estimate_training_memory": "harness.plan._memory",
    "MemoryEstimate": "harness.plan._memory",
    "write_plan": "advisor.planner",
    "AdvisorInputError": "advisor.errors",
    "advise_command": "advisor.cli",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'advisor' has no attribute {name!r}")
