"""Views: plain rows read from the store for the app and the report (no rendering here)."""

from harness.ui.views._compare import (
    ArmSummary,
    ComparisonRow,
    CurvePoint,
    SweepPoint,
    arm_summaries,
    comparison_note,
    comparisons,
    sweep_points,
    train_curves,
)
from harness.ui.views._gate import DecisionView, PromotionView, gate_decisions, promotion_history
from harness.ui.views._items import (
    FLIP_FILTERS,
    FLIP_HELP,
    RIGHT,
    ItemPage,
    ItemView,
    diff_markdown,
    item_page,
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
)
from harness.ui.views._safety import SafetyRow, safety_rates
