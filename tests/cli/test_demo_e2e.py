"""The real demo path on the default model (SmolLM2-135M, CPU): fewer steps than `make demo`, same code."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

pytestmark = pytest.mark.slow


def test_demo_trains_beats_baseline_gates_and_reports(tmp_path: Path):
    from harness.cli._demo import run_demo
    from harness.store import Store

    out = io.StringIO()
    console = Console(file=out, width=160)
    store = str(tmp_path / "demo.db")
    code = run_demo(console, store, steps=20, report_path=tmp_path / "report.html", runs_dir=tmp_path / "runs")
    text = out.getvalue()
    assert "Advisor" in text and "lora vs baseline" in text and "Gate:" in text and "report.html" in text
    st = Store(store)
    run = st.runs()[0]
    trials = {t.name: t for t in st.trials(run.id)}
    em = {}
    for name in ("baseline", "lora"):
        ev = next(ev for ev, s in st.evaluations(trials[name].id) if s.name == "json_extract")
        em[name] = st.metrics(ev.id)["exact_match"].value
    assert em["baseline"] <= 0.1 and em["lora"] >= 0.5, em
    assert code == 0, text  # the shipped gate promotes the tuned model
    report = (tmp_path / "report.html").read_text()
    assert "Gate decisions" in report and "PROMOTE" in report
