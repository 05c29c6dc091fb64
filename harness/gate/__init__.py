"""The promotion gate: a policy file in, a decision with exit code out (JUnit, JSON, Markdown)."""

from harness.gate._decide import ERROR, PROMOTE, REJECT, decide
from harness.gate._outputs import to_junit, to_markdown
from harness.gate._policy import load_policy
