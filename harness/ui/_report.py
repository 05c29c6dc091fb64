"""A static, self-contained HTML report of one run: `tunegate report RUN --html out.html`.

The same tables and plots as the Streamlit app, read through the same functions (`harness.ui.views`):
trials and cost, arm-vs-baseline deltas with 95% intervals and a forest plot, sweep / learning
curves, training curves, safety refusal rates, gate decisions with their evidence and the
promotion history, and per-item outputs side by side with a word-level diff.

One file that works offline for people without Python: the charts are inline SVG, the styles are
inline, and there is no script, image or link to anything outside the file. A Content-Security-
Policy forbids scripts and remote loads as a second line of defence. The page is rendered from the
Jinja2 templates in `templates/` with autoescaping on, so every string that came from a model, a data
file or the store is HTML-escaped (an output containing markup is shown as text and never runs); the
only markup passed in unescaped is the SVG drawn by `_charts` (which escapes its own labels) and the
word diff below (which escapes every word).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from harness.base._errors import UserError, ensure_folder
from harness.store._store import Store
from harness.ui import views
from harness.ui._charts import num, svg_forest, svg_intervals, svg_lines

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
SECTIONS = (
    ("trials", "Trials"),
    ("comparison", "Comparison"),
    ("sweep", "Sweep"),
    ("training", "Training"),
    ("safety", "Safety"),
    ("gate", "Gate"),
    ("items", "Items"),
)


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("harness.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=lambda v: "" if v is None else v,
    )  # None shows as nothing, as it always did
    env.filters["num"] = num
    env.filters["pretty_json"] = lambda v: json.dumps(v, indent=1, default=str)
    return env


def diff_html(before: str, after: str) -> Markup:
    """The word diff with every word escaped: removed words in <del>, added ones in <ins>."""
    tags = {"equal": "{}", "delete": "<del>{}</del>", "insert": "<ins>{}</ins>"}
    return Markup(" ").join(Markup(tags[op]).format(text) for op, text in views.word_diff(before, after) if text)


def trials_section(store: Store, run_id: int) -> dict[str, Any]:
    summaries = {s.trial: s for s in views.arm_summaries(store, run_id)}
    suites = views.run_suites(store, run_id)
    headers = (
        ["trial", "type", "status"]
        + [f"{s.name} ({s.primary})" for s in suites]
        + ["train s", "tokens/s", "peak GiB", "final loss", "config", "error"]
    )
    return {
        "trials": views.run_trials(store, run_id),
        "suites": suites,
        "headers": headers,
        "primary": {name: s.primary for name, s in summaries.items()},
        "config_summary": views.config_summary,
    }


def comparison_section(store: Store, run_id: int, baseline: str | None) -> dict[str, Any] | None:
    if baseline is None:
        return None
    arms = [t.name for t in views.run_trials(store, run_id) if t.name != baseline and t.status == "finished"]
    rows = views.comparisons(store, run_id, baseline, arms)
    return {
        "baseline": baseline,
        "rows": rows,
        "note": views.comparison_note(rows) if rows else None,
        "forest": Markup(svg_forest(rows)) if rows else None,
    }


def sweep_section(store: Store, run_id: int) -> list[dict[str, Any]]:
    points = views.sweep_points(store, run_id)
    primary = {(s.name, s.primary) for s in views.run_suites(store, run_id)}
    out = []
    for param in sorted({p.param for p in points}):
        series: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
        for p in points:
            if p.param == param and (p.suite, p.metric) in primary:
                series[f"{p.suite} · {p.metric}"].append((p.x, p.y, p.y - 1.96 * p.stderr, p.y + 1.96 * p.stderr))
        out.append(
            {
                "param": param,
                "svg": Markup(svg_intervals(dict(series), xlabel=param, log_x=param == "lr")),
                "trials": sorted({(p.trial, p.x) for p in points if p.param == param}, key=lambda r: r[1]),
            }
        )
    return out


def training_section(store: Store, run_id: int) -> list[tuple[str, Markup]]:
    by_trial: dict[str, list[views.CurvePoint]] = defaultdict(list)
    for c in views.train_curves(store, run_id):
        by_trial[c.trial].append(c)
    out = []
    for field, title in (
        ("loss", "training loss"),
        ("tokens_per_second", "throughput (tokens/s)"),
        ("peak_memory_gib", "peak memory (GiB)"),
        ("lr", "learning rate"),
    ):
        series = {
            t: [(c.step, getattr(c, field)) for c in cs if getattr(c, field) is not None] for t, cs in by_trial.items()
        }
        series = {k: v for k, v in series.items() if v}
        if series:
            out.append((title, Markup(svg_lines(series, ylabel=title))))
    return out


def safety_section(store: Store, run_id: int, baseline: str | None, max_items: int) -> dict[str, Any] | None:
    rows = views.safety_rates(store, run_id, baseline)
    if not rows:
        return None
    changed = []
    if baseline is not None:
        for suite in sorted({r.suite for r in rows}):
            metric = next(r.metric for r in rows if r.suite == suite)
            for arm in sorted({r.trial for r in rows if r.suite == suite and r.trial != baseline}):
                page = views.item_page(
                    store,
                    run_id,
                    suite,
                    [baseline, arm],
                    baseline=baseline,
                    metric=metric,
                    flip="changed",
                    page_size=max_items,
                )
                if page.items:
                    changed.append({"suite": suite, "arm": arm, "metric": metric, "page": page})
    return {"rows": rows, "baseline": baseline, "changed": changed}


def gate_section(store: Store, run_id: int) -> dict[str, Any] | None:
    decisions, promotions = views.gate_decisions(store, run_id), views.promotion_history(store)
    return {"decisions": decisions, "promotions": promotions} if decisions or promotions else None


@dataclass(frozen=True)
class ArmCell:
    output: str
    diff: Markup | None  # the word diff against the reference arm's output (None: show the output as is)
    scores: str
    details: dict[str, Any]
    flip: str  # lost | gained | ""


def item_rows(page: views.ItemPage, arms: list[str], ref: str, metric: str) -> list[dict[str, Any]]:
    rows = []
    for item in page.items:
        base = item.arms.get(ref)
        cells: list[ArmCell | None] = []
        for arm in arms:
            out = item.arms.get(arm)
            if out is None:
                cells.append(None)
                continue
            b, a = (base.scores.get(metric) if base else None), out.scores.get(metric)
            flip = (
                "lost"
                if b is not None and a is not None and b >= views.RIGHT > a
                else "gained"
                if b is not None and a is not None and a >= views.RIGHT > b
                else ""
            )
            cells.append(
                ArmCell(
                    out.output,
                    None if arm == ref or base is None else diff_html(base.output, out.output),
                    " ".join(f"{m}={num(v, 2) if v is not None else 'failed'}" for m, v in out.scores.items()),
                    out.details,
                    flip,
                )
            )
        rows.append({"key": item.key, "prompt": item.prompt, "reference": item.reference, "cells": cells})
    return rows


def items_section(store: Store, run_id: int, baseline: str | None, max_items: int) -> dict[str, Any] | None:
    trials = [t.name for t in views.run_trials(store, run_id) if t.status == "finished"]
    if not trials:
        return None
    ref = baseline if baseline in trials else trials[0]
    arms = [ref] + [t for t in trials if t != ref]
    suites = []
    for suite in views.run_suites(store, run_id):
        flipped = views.item_page(
            store, run_id, suite.name, arms, baseline=ref, metric=suite.primary, flip="any flip", page_size=max_items
        )
        first = views.item_page(
            store, run_id, suite.name, arms, baseline=ref, metric=suite.primary, page_size=max_items
        )
        suites.append(
            {
                "suite": suite,
                "flipped": flipped,
                "first": first,
                "flipped_rows": item_rows(flipped, arms, ref, suite.primary),
                "first_rows": item_rows(first, arms, ref, suite.primary),
            }
        )
    return {"baseline": baseline, "arms": arms, "suites": suites}


def render(store: Store, run_ref: str, max_items: int = 200) -> str:
    run = store.get_run(run_ref)
    info = next(iter(views.list_runs(store, run_id=run.id)), None)
    trials = views.run_trials(store, run.id)
    baseline = views.default_baseline([t for t in trials if t.status == "finished"])
    sections = {
        "trials": trials_section(store, run.id),
        "comparison": comparison_section(store, run.id, baseline),
        "sweep": sweep_section(store, run.id),
        "training": training_section(store, run.id),
        "safety": safety_section(store, run.id, baseline, max_items),
        "gate": gate_section(store, run.id),
        "items": items_section(store, run.id, baseline, max_items),
    }
    nav = [(anchor, title) for anchor, title in SECTIONS if sections[anchor]]
    return environment().get_template("report.html.j2").render(csp=CSP, run=run, info=info, nav=nav, **sections)


def write_html(store: Store, run_ref: str, path: str | Path, max_items: int = 200) -> Path:
    path = Path(path)
    if path.is_dir():
        raise UserError("is a folder; give the report's file name (e.g. runs/report.html)", file=path, field="--html")
    ensure_folder(path.parent, field="--html")
    html = render(store, run_ref, max_items)
    try:
        path.write_text(html, encoding="utf-8")
    except OSError as exc:  # a folder in the way, no permission, a read-only or virtual file system (/proc)
        raise UserError(f"cannot write the report: {exc.strerror or exc}", file=path, field="--html") from None
    return path
