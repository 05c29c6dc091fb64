"""Multiple choice by log-likelihood: the suite ranks the choices, the scorer checks the top one."""

from __future__ import annotations

from harness.scorers._registry import ScoreFn, scorer


@scorer("choice_accuracy", binary=True)
def choice_accuracy() -> ScoreFn:
    """Multiple choice by log-likelihood: the output is the most likely choice's text."""
    return lambda output, item: float(output.strip() == item.choices[item.answer].strip())
