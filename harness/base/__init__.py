"""The base layer every package builds on: the one-line user errors and the one YAML loader (`_errors`), the arm
kinds (`_kinds`), training data formats (`_data`) and paired statistics (`_stats`). It imports no other harness
package.

Names are imported on first use (PEP 562): every package imports the base, and its errors alone must not load
NumPy and SciPy (the statistics)."""

from __future__ import annotations

from harness._lazy import lazy_getattr

_EXPORTS = {
    "Example": "harness.base._data",
    "Message": "harness.base._data",
    "Preference": "harness.base._data",
    "detect_format": "harness.base._data",
    "file_sha256": "harness.base._data",
    "load_examples": "harness.base._data",
    "load_preferences": "harness.base._data",
    "load_rows": "harness.base._data",
    "UserError": "harness.base._errors",
    "YamlDoc": "harness.base._errors",
    "dotted": "harness.base._errors",
    "ARM_KINDS": "harness.base._kinds",
    "TRAINED": "harness.base._kinds",
    "compare": "harness.base._stats",
    "holm": "harness.base._stats",
    "holm_table": "harness.base._stats",
    "mcnemar_exact": "harness.base._stats",
    "mean_stderr": "harness.base._stats",
    "multiple_comparison_note": "harness.base._stats",
    "paired_bootstrap": "harness.base._stats",
    "wilson": "harness.base._stats",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
