"""Paired statistics over stored results: bootstrap intervals, McNemar, Holm, comparisons, flips and run reports.

Names are imported on first use (PEP 562), so importing one light part does not load the heavy ones."""
from __future__ import annotations

from typing import TYPE_CHECKING

from harness._lazy import lazy_getattr

if TYPE_CHECKING:
    from harness.analysis._compare import (
        Comparison,
        Paired,
        compare_trials,
        kind_of,
        latest_evaluations,
        matching_evaluation,
        metric_kind,
        paired_scores,
        verdict,
    )
    from harness.analysis._flips import (
        Flips,
        flips,
        trial_flips,
    )
    from harness.analysis._run_report import (
        run_report,
        run_report_markdown,
        write_run_report,
    )
    from harness.base._stats import (
        AdjustedP,
        PairedDelta,
        compare,
        holm,
        holm_table,
        mcnemar_exact,
        mean_stderr,
        multiple_comparison_note,
        paired_bootstrap,
        wilson,
    )

_EXPORTS = {
    "AdjustedP": "harness.base._stats",
    "Comparison": "harness.analysis._compare",
    "Flips": "harness.analysis._flips",
    "Paired": "harness.analysis._compare",
    "PairedDelta": "harness.base._stats",
    "compare": "harness.base._stats",
    "compare_trials": "harness.analysis._compare",
    "flips": "harness.analysis._flips",
    "holm": "harness.base._stats",
    "holm_table": "harness.base._stats",
    "kind_of": "harness.analysis._compare",
    "latest_evaluations": "harness.analysis._compare",
    "matching_evaluation": "harness.analysis._compare",
    "mcnemar_exact": "harness.base._stats",
    "mean_stderr": "harness.base._stats",
    "metric_kind": "harness.analysis._compare",
    "multiple_comparison_note": "harness.base._stats",
    "paired_bootstrap": "harness.base._stats",
    "paired_scores": "harness.analysis._compare",
    "run_report": "harness.analysis._run_report",
    "run_report_markdown": "harness.analysis._run_report",
    "trial_flips": "harness.analysis._flips",
    "verdict": "harness.analysis._compare",
    "wilson": "harness.base._stats",
    "write_run_report": "harness.analysis._run_report",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
