"""Evaluation: suites as data, scoring one model on one suite item by item, and lm-eval suites.

Names are imported on first use (PEP 562), so importing one light part does not load the heavy ones."""

from __future__ import annotations

from harness._lazy import lazy_getattr

_EXPORTS = {
    "evaluate": "harness.evaluation._evaluate",
    "evaluate_adapters": "harness.evaluation._evaluate",
    "LOCAL_TASKS": "harness.evaluation._lmeval_config",
    "ItemResult": "harness.evaluation._results",
    "SuiteResult": "harness.evaluation._results",
    "shape_all": "harness.evaluation._results",
    "ScorerSpec": "harness.evaluation._suite",
    "SuiteItem": "harness.evaluation._suite",
    "load": "harness.evaluation._suite",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
