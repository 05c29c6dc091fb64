"""Analysis of stored results: paired comparisons of trials (with harness/base's statistics), flips and run reports."""

from harness.analysis._compare import compare_trials, metric_kind
from harness.analysis._flips import flips
from harness.analysis._run_report import run_report, write_run_report
