"""Rendering what the store holds: the static HTML report and the Streamlit app (`harness/ui/app.py`).

Names are imported on first use (PEP 562), so importing one light part does not load the heavy ones."""
from __future__ import annotations

from typing import TYPE_CHECKING

from harness._lazy import lazy_getattr

if TYPE_CHECKING:
    from harness.ui._charts import (
        COLORS,
        LEGEND_W,
        esc,
        num,
        svg_forest,
        svg_intervals,
        svg_lines,
        tick,
    )
    from harness.ui._report import (
        ArmCell,
        CSP,
        SECTIONS,
        comparison_section,
        diff_html,
        environment,
        gate_section,
        item_rows,
        items_section,
        render,
        safety_section,
        sweep_section,
        training_section,
        trials_section,
        write_html,
    )
    from harness.ui import views

_EXPORTS = {
    "ArmCell": "harness.ui._report",
    "COLORS": "harness.ui._charts",
    "CSP": "harness.ui._report",
    "LEGEND_W": "harness.ui._charts",
    "SECTIONS": "harness.ui._report",
    "comparison_section": "harness.ui._report",
    "diff_html": "harness.ui._report",
    "environment": "harness.ui._report",
    "esc": "harness.ui._charts",
    "gate_section": "harness.ui._report",
    "item_rows": "harness.ui._report",
    "items_section": "harness.ui._report",
    "num": "harness.ui._charts",
    "render": "harness.ui._report",
    "safety_section": "harness.ui._report",
    "svg_forest": "harness.ui._charts",
    "svg_intervals": "harness.ui._charts",
    "svg_lines": "harness.ui._charts",
    "sweep_section": "harness.ui._report",
    "tick": "harness.ui._charts",
    "training_section": "harness.ui._report",
    "trials_section": "harness.ui._report",
    "views": "harness.ui.views",
    "write_html": "harness.ui._report",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
