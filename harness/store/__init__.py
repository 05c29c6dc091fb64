"""The results store: tables, engines (SQLite or PostgreSQL), migrations, reads/writes and exports.

Names are imported on first use (PEP 562), so importing one light part does not load the heavy ones."""
from __future__ import annotations

from typing import TYPE_CHECKING

from harness._lazy import lazy_getattr

if TYPE_CHECKING:
    from harness.store._engine import (
        DEFAULT_STORE,
        DEFAULT_TIMEOUT_S,
        display_url,
        make_engine,
        store_url,
    )
    from harness.store._export import (
        EXPORT_FORMATS,
        EXPORT_LEVELS,
        export_results,
        results_frame,
    )
    from harness.store._store import (
        Store,
        check_integrity,
        model_name,
    )
    from harness.store._tables import (
        Base,
        Evaluation,
        EvaluationLike,
        GateDecision,
        ItemRow,
        JudgeCall,
        Metric,
        ModelRow,
        Output,
        Promotion,
        Run,
        Score,
        SuiteRow,
        TrainStep,
        Trial,
        now,
    )
    from harness.store import migrations

_EXPORTS = {
    "Base": "harness.store._tables",
    "DEFAULT_STORE": "harness.store._engine",
    "DEFAULT_TIMEOUT_S": "harness.store._engine",
    "EXPORT_FORMATS": "harness.store._export",
    "EXPORT_LEVELS": "harness.store._export",
    "Evaluation": "harness.store._tables",
    "EvaluationLike": "harness.store._tables",
    "GateDecision": "harness.store._tables",
    "ItemRow": "harness.store._tables",
    "JudgeCall": "harness.store._tables",
    "Metric": "harness.store._tables",
    "ModelRow": "harness.store._tables",
    "Output": "harness.store._tables",
    "Promotion": "harness.store._tables",
    "Run": "harness.store._tables",
    "Score": "harness.store._tables",
    "Store": "harness.store._store",
    "SuiteRow": "harness.store._tables",
    "TrainStep": "harness.store._tables",
    "Trial": "harness.store._tables",
    "check_integrity": "harness.store._store",
    "display_url": "harness.store._engine",
    "export_results": "harness.store._export",
    "make_engine": "harness.store._engine",
    "migrations": "harness.store.migrations",
    "model_name": "harness.store._store",
    "now": "harness.store._tables",
    "results_frame": "harness.store._export",
    "store_url": "harness.store._engine",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
