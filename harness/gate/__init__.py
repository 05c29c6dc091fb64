"""The promotion gate: a policy file in, a decision with exit code out (JUnit, JSON, Markdown).

Names are imported on first use (PEP 562), so importing one light part does not load the heavy ones."""
from __future__ import annotations

from typing import TYPE_CHECKING

from harness._lazy import lazy_getattr

if TYPE_CHECKING:
    from harness.gate._closeness import mean_interval
    from harness.gate._decide import (
        Decision,
        ERROR,
        PROMOTE,
        REJECT,
        decide,
        evaluate_rule,
    )
    from harness.gate._outputs import (
        MARKDOWN_MARKER,
        fmt,
        to_junit,
        to_markdown,
    )
    from harness.gate._policy import (
        CONFIDENCE,
        Policy,
        Rule,
        RuleResult,
        SafetyRule,
        Target,
        load_policy,
    )

_EXPORTS = {
    "CONFIDENCE": "harness.gate._policy",
    "Decision": "harness.gate._decide",
    "ERROR": "harness.gate._decide",
    "MARKDOWN_MARKER": "harness.gate._outputs",
    "PROMOTE": "harness.gate._decide",
    "Policy": "harness.gate._policy",
    "REJECT": "harness.gate._decide",
    "Rule": "harness.gate._policy",
    "RuleResult": "harness.gate._policy",
    "SafetyRule": "harness.gate._policy",
    "Target": "harness.gate._policy",
    "decide": "harness.gate._decide",
    "evaluate_rule": "harness.gate._decide",
    "fmt": "harness.gate._outputs",
    "load_policy": "harness.gate._policy",
    "mean_interval": "harness.gate._closeness",
    "to_junit": "harness.gate._outputs",
    "to_markdown": "harness.gate._outputs",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
