"""Views: plain rows read from the store for the app and the report (no rendering here).

Names are imported on first use (PEP 562), so importing one light part does not load the heavy ones."""
from __future__ import annotations

from typing import TYPE_CHECKING

from harness._lazy import lazy_getattr

if TYPE_CHECKING:
    from harness.ui.views._compare import (
        ArmSummary,
        ComparisonRow,
        CurvePoint,
        SweepPoint,
        arm_summaries,
        comparison_note,
        comparisons,
        sweep_params,
        sweep_points,
        train_curves,
    )
    from harness.ui.views._gate import (
        DecisionView,
        PromotionView,
        RuleView,
        gate_decisions,
        promotion_history,
    )
    from harness.ui.views._items import (
        ArmOutput,
        DiffOp,
        FLIP_FILTERS,
        FLIP_HELP,
        ItemPage,
        ItemView,
        MD_SPECIAL,
        RIGHT,
        ZWSP,
        diff_markdown,
        item_page,
        item_prompt,
        item_reference,
        md_escape,
        word_diff,
    )
    from harness.ui.views._runs import (
        MetricRow,
        RunRow,
        SuiteInfo,
        TrialRow,
        config_summary,
        default_baseline,
        list_runs,
        metric_table,
        run_suites,
        run_trials,
        sweep_spec,
    )
    from harness.ui.views._safety import (
        SafetyRow,
        refusal_metric,
        safety_rates,
        safety_suites,
    )

_EXPORTS = {
    "ArmOutput": "harness.ui.views._items",
    "ArmSummary": "harness.ui.views._compare",
    "ComparisonRow": "harness.ui.views._compare",
    "CurvePoint": "harness.ui.views._compare",
    "DecisionView": "harness.ui.views._gate",
    "DiffOp": "harness.ui.views._items",
    "FLIP_FILTERS": "harness.ui.views._items",
    "FLIP_HELP": "harness.ui.views._items",
    "ItemPage": "harness.ui.views._items",
    "ItemView": "harness.ui.views._items",
    "MD_SPECIAL": "harness.ui.views._items",
    "MetricRow": "harness.ui.views._runs",
    "PromotionView": "harness.ui.views._gate",
    "RIGHT": "harness.ui.views._items",
    "RuleView": "harness.ui.views._gate",
    "RunRow": "harness.ui.views._runs",
    "SafetyRow": "harness.ui.views._safety",
    "SuiteInfo": "harness.ui.views._runs",
    "SweepPoint": "harness.ui.views._compare",
    "TrialRow": "harness.ui.views._runs",
    "ZWSP": "harness.ui.views._items",
    "arm_summaries": "harness.ui.views._compare",
    "comparison_note": "harness.ui.views._compare",
    "comparisons": "harness.ui.views._compare",
    "config_summary": "harness.ui.views._runs",
    "default_baseline": "harness.ui.views._runs",
    "diff_markdown": "harness.ui.views._items",
    "gate_decisions": "harness.ui.views._gate",
    "item_page": "harness.ui.views._items",
    "item_prompt": "harness.ui.views._items",
    "item_reference": "harness.ui.views._items",
    "list_runs": "harness.ui.views._runs",
    "md_escape": "harness.ui.views._items",
    "metric_table": "harness.ui.views._runs",
    "promotion_history": "harness.ui.views._gate",
    "refusal_metric": "harness.ui.views._safety",
    "run_suites": "harness.ui.views._runs",
    "run_trials": "harness.ui.views._runs",
    "safety_rates": "harness.ui.views._safety",
    "safety_suites": "harness.ui.views._safety",
    "sweep_params": "harness.ui.views._compare",
    "sweep_points": "harness.ui.views._compare",
    "sweep_spec": "harness.ui.views._runs",
    "train_curves": "harness.ui.views._compare",
    "word_diff": "harness.ui.views._items",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
