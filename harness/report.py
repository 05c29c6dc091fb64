"""A static, self-contained HTML report of one run, read from the store (no scripts, no network).

Every string that came from a model or a data file is HTML-escaped, so an output containing
markup is shown as text and never runs.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from harness.compare import compare_trials
from harness.store import Store

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{font-size:1.6rem}h2{margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0;width:100%}th,td{border:1px solid #ddd;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f5f5f5}.num{text-align:right;font-variant-numeric:tabular-nums}
.up{color:#0a7d28;font-weight:600}.down{color:#b00020;font-weight:600}pre{white-space:pre-wrap;margin:0;
font:12px/1.35 ui-monospace,monospace}.pass{color:#0a7d28}.fail{color:#b00020}.err{color:#a66f00}
.small{color:#666;font-size:12px}details{margin:.3rem 0}
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def num(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def svg_lines(series: dict[str, list[tuple[float, float]]], width: int = 520, height: int = 220,
              ylabel: str = "loss") -> str:
    """A small line chart as inline SVG (one polyline per series)."""
    points = [p for s in series.values() for p in s]
    if not points:
        return "<p class=small>no data</p>"
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    pad = 40
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f'<rect x="{pad}" y="10" width="{width - pad - 10}" height="{height - pad - 10}" fill="none" stroke="#ccc"/>',
             f'<text x="4" y="16" font-size="11">{y1:.3g}</text>',
             f'<text x="4" y="{height - pad}" font-size="11">{y0:.3g}</text>',
             f'<text x="{pad}" y="{height - 12}" font-size="11">step {x0:.0f}</text>',
             f'<text x="{width - 70}" y="{height - 12}" font-size="11">{x1:.0f}</text>',
             f'<text x="{width / 2 - 20}" y="{height - 12}" font-size="11">{esc(ylabel)}</text>']
    for i, (name, pts) in enumerate(series.items()):
        coords = " ".join(f"{pad + (x - x0) / (x1 - x0) * (width - pad - 10):.1f},"
                          f"{10 + (1 - (y - y0) / (y1 - y0)) * (height - pad - 10):.1f}" for x, y in pts)
        color = colors[i % len(colors)]
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{coords}"/>')
        parts.append(f'<text x="{pad + 8}" y="{26 + 14 * i}" font-size="11" fill="{color}">{esc(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render(store: Store, run_ref: str, max_items: int = 200) -> str:
    run = store.run(run_ref)
    trials = store.trials(run.id)
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>tunegate run {esc(run.name)}</title>",
           f"<style>{CSS}</style></head><body>",
           f"<h1>tunegate · run {run.id}: {esc(run.name)}</h1>",
           f"<p class=small>base model <b>{esc(run.base_model)}</b> · status {esc(run.status)} · "
           f"created {esc(run.created_at)} · git {esc(run.git_sha[:10])}</p>"]
    out.append("<h2>Trials</h2><table><tr><th>trial</th><th>type</th><th>status</th><th>train s</th>"
               "<th>tokens/s</th><th>peak GiB</th><th>final loss</th><th>error</th></tr>")
    for t in trials:
        out.append(f"<tr><td>{esc(t.name)}</td><td>{esc(t.arm_type)}</td><td>{esc(t.status)}</td>"
                   f"<td class=num>{num(t.train_seconds, 1)}</td><td class=num>{num(t.tokens_per_second, 0)}</td>"
                   f"<td class=num>{num(t.peak_memory_gib, 2)}</td><td class=num>{num(t.final_loss)}</td>"
                   f"<td>{esc(t.error)}</td></tr>")
    out.append("</table>")

    base = next((t for t in trials if t.arm_type == "baseline" and t.status == "finished"), None)
    if base is not None:
        out.append(f"<h2>Comparison with {esc(base.name)}</h2><p class=small>Δ = arm − baseline on the same items; "
                   "95% paired-bootstrap interval (10,000 resamples); McNemar's exact test for 0/1 metrics. "
                   "With several arms, intervals are per comparison (no multiple-comparison correction).</p>")
        out.append("<table><tr><th>arm</th><th>suite</th><th>metric</th><th>baseline</th><th>arm</th><th>Δ</th>"
                   "<th>95% CI</th><th>McNemar p</th><th>n</th></tr>")
        for cand in trials:
            if cand.id == base.id or cand.status != "finished":
                continue
            for c in compare_trials(store, base, cand):
                s = c.stats
                if s is None:
                    out.append(f"<tr><td>{esc(cand.name)}</td><td>{esc(c.suite)}</td><td>{esc(c.metric)}</td>"
                               f"<td colspan=6>{esc(c.problem)}</td></tr>")
                    continue
                cls = "up" if s.lo > 0 else ("down" if s.hi < 0 else "")
                out.append(f"<tr><td>{esc(cand.name)}</td><td>{esc(c.suite)}</td><td>{esc(c.metric)}"
                           f"{' ★' if c.primary else ''}</td><td class=num>{num(s.mean_a)}</td>"
                           f"<td class=num>{num(s.mean_b)}</td><td class='num {cls}'>{s.delta:+.3f}</td>"
                           f"<td class=num>[{s.lo:+.3f}, {s.hi:+.3f}]</td>"
                           f"<td class=num>{'—' if s.mcnemar_p is None else f'{s.mcnemar_p:.3g}'}</td>"
                           f"<td class=num>{s.n}</td></tr>")
        out.append("</table>")

    curves = {t.name: [(s.step, s.loss) for s in store.train_steps(t.id) if s.loss is not None] for t in trials}
    curves = {k: v for k, v in curves.items() if v}
    if curves:
        out.append("<h2>Training loss</h2>" + svg_lines(curves))

    decisions = [d for d in store.decisions(200) if d.candidate_trial_id in {t.id for t in trials}]
    if decisions:
        out.append("<h2>Gate decisions</h2>")
        for d in decisions:
            cls = {"promote": "pass", "reject": "fail"}.get(d.verdict, "err")
            out.append(f"<p><b class={cls}>{esc(d.verdict.upper())}</b> (exit {d.exit_code}) · policy "
                       f"{esc(d.policy_path)} · {esc(d.created_at)}<br>{esc(d.reason)}</p><table>"
                       "<tr><th>rule</th><th>result</th><th>detail</th></tr>")
            for r in d.rules:
                res = "error" if r["error"] else ("pass" if r["passed"] else "FAIL")
                out.append(f"<tr><td>{esc(r['name'])}</td><td>{res}</td><td>{esc(r['message'])}</td></tr>")
            out.append("</table>")

    out.append("<h2>Items</h2><p class=small>Each arm's output per item, with its scores.</p>")
    by_trial = {t.id: {suite.name: ev for ev, suite in store.evaluations(t.id)} for t in trials}
    suite_names = sorted({name for evs in by_trial.values() for name in evs})
    for suite_name in suite_names:
        rows_by_trial = {t.name: {r["item"]: r for r in store.item_rows(by_trial[t.id][suite_name].id)}
                         for t in trials if suite_name in by_trial[t.id]}
        names = list(rows_by_trial)
        keys = list(next(iter(rows_by_trial.values())).keys())[:max_items]
        out.append(f"<details><summary><b>{esc(suite_name)}</b> ({len(keys)} items)</summary><table><tr><th>item</th>"
                   "<th>reference</th>" + "".join(f"<th>{esc(n)}</th>" for n in names) + "</tr>")
        for key in keys:
            first = rows_by_trial[names[0]][key]
            data = first["data"]
            ref = data.get("reference")
            if ref is None and data.get("choices") is not None:
                ref = data["choices"][data["answer"]]
            cells = []
            for n in names:
                r = rows_by_trial[n].get(key)
                if r is None:
                    cells.append("<td>—</td>")
                    continue
                scores = " ".join(f"{m}={v:.2f}" if v is not None else f"{m}=failed" for m, v in r["scores"].items())
                cells.append(f"<td><pre>{esc(r['output'])}</pre><span class=small>{esc(scores)}</span></td>")
            out.append(f"<tr><td>{esc(key)}<br><span class=small><pre>{esc(data.get('prompt') or '')}</pre></span></td>"
                       f"<td><pre>{esc(ref)}</pre></td>{''.join(cells)}</tr>")
        out.append("</table></details>")
    out.append("</body></html>")
    return "\n".join(out)


def write_html(store: Store, run_ref: str, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(store, run_ref), encoding="utf-8")
    return path
