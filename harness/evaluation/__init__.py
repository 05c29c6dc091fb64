"""Evaluation: suites as data, scoring one model on one suite item by item, and lm-eval suites.

Names are imported on first use (PEP 562), so importing one light part does not load the heavy ones."""
from __future__ import annotations

from typing import TYPE_CHECKING

from harness._lazy import lazy_getattr

if TYPE_CHECKING:
    from harness.evaluation._evaluate import (
        evaluate,
        evaluate_adapters,
    )
    from harness.evaluation._lmeval import (
        Collected,
        collect,
        evaluate_suite,
    )
    from harness.evaluation._lmeval_config import (
        ID_FIELDS,
        LOCAL_TASKS,
        LmEvalConfig,
        include_dirs,
        suite_version,
        validate,
    )
    from harness.evaluation._results import (
        ItemResult,
        Shaper,
        SuiteResult,
        shape_all,
    )
    from harness.evaluation._suite import (
        GenerationConfig,
        SUITES_DIR,
        ScorerSpec,
        Suite,
        SuiteItem,
        SuiteSpec,
        available,
        find,
        load,
        search_dirs,
    )

_EXPORTS = {
    "Collected": "harness.evaluation._lmeval",
    "GenerationConfig": "harness.evaluation._suite",
    "ID_FIELDS": "harness.evaluation._lmeval_config",
    "ItemResult": "harness.evaluation._results",
    "LOCAL_TASKS": "harness.evaluation._lmeval_config",
    "LmEvalConfig": "harness.evaluation._lmeval_config",
    "SUITES_DIR": "harness.evaluation._suite",
    "ScorerSpec": "harness.evaluation._suite",
    "Shaper": "harness.evaluation._results",
    "Suite": "harness.evaluation._suite",
    "SuiteItem": "harness.evaluation._suite",
    "SuiteResult": "harness.evaluation._results",
    "SuiteSpec": "harness.evaluation._suite",
    "available": "harness.evaluation._suite",
    "collect": "harness.evaluation._lmeval",
    "evaluate": "harness.evaluation._evaluate",
    "evaluate_adapters": "harness.evaluation._evaluate",
    "evaluate_suite": "harness.evaluation._lmeval",
    "find": "harness.evaluation._suite",
    "include_dirs": "harness.evaluation._lmeval_config",
    "load": "harness.evaluation._suite",
    "search_dirs": "harness.evaluation._suite",
    "shape_all": "harness.evaluation._results",
    "suite_version": "harness.evaluation._lmeval_config",
    "validate": "harness.evaluation._lmeval_config",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
