"""A static, self-contained HTML report of one run: `tunegate report RUN --html out.html`.

The same tables and plots as the Streamlit app, read through the same functions (`harness.views`):
trials and cost, arm-vs-baseline deltas with 95% intervals and a forest plot, sweep / learning
curves, training curves, safety refusal rates, gate decisions with their evidence and the
promotion history, and per-item outputs side by side with a word-level diff.

One file that works offline for people without Python: the charts are inline SVG, the styles are
inline, and there is no script, image or link to anything outside the file. A Content-Security-
Policy forbids scripts and remote loads as a second line of defence, and every string that came
from a model, a data file or the store is HTML-escaped, so an output containing markup is shown as
text and never runs.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from harness.errors import UserError, ensure_folder
from harness.store._store import Store
from harness.ui import views
from harness.ui._charts import esc, num, svg_forest, svg_intervals, svg_lines

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1200px;color:#222;padding:0 1rem}
h1{font-size:1.6rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd}h3{margin-bottom:.3rem}
nav a{margin-right:.8rem}
table{border-collapse:collapse;margin:.5rem 0;width:100%}th,td{border:1px solid #ddd;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f5f5f5}.num{text-align:right;font-variant-numeric:tabular-nums}
.up{color:#0a7d28;font-weight:600}.down{color:#b00020;font-weight:600}pre{white-space:pre-wrap;margin:0;
font:12px/1.35 ui-monospace,monospace;word-break:break-word}.pass{color:#0a7d28}.fail{color:#b00020}
.err{color:#a66f00}.small{color:#666;font-size:12px}details{margin:.4rem 0}summary{cursor:pointer}
del{background:#fde2e1;color:#8a1c1c}ins{background:#dcf5e3;color:#135c2c;text-decoration:none}
.badge{display:inline-block;padding:1px 6px;border-radius:8px;font-size:12px;background:#eee}
.cfg{min-width:10rem}.lost{background:#fde2e1}.gained{background:#dcf5e3}svg{max-width:100%;height:auto}
"""


def _table(headers: list[str], rows: list[list[str]]) -> str:
    """Cells are already-escaped HTML."""
    return ("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr>"
            + "".join("<tr>" + "".join(rows_cell(c) for c in row) + "</tr>" for row in rows) + "</table>")


def rows_cell(cell: str) -> str:
    return cell if cell.startswith("<td") else f"<td>{cell}</td>"


def _n(x: float | None, digits: int = 3) -> str:
    return f"<td class=num>{num(x, digits)}</td>"


def section_trials(store: Store, run_id: int) -> str:
    trials = views.run_trials(store, run_id)
    summaries = {s.trial: s for s in views.arm_summaries(store, run_id)}
    suites = views.run_suites(store, run_id)
    headers = ["trial", "type", "status"] + [f"{s.name} ({s.primary})" for s in suites] + [
        "train s", "tokens/s", "peak GiB", "final loss", "config", "error"]
    rows = []
    for t in trials:
        prim = summaries[t.name].primary if t.name in summaries else {}
        cells = [esc(t.name), esc(t.arm_type), f"<td class={'fail' if t.status == 'failed' else ''}>{esc(t.status)}</td>"]
        for s in suites:
            v = prim.get(s.name)
            cells.append(f"<td class=num>{num(v[0])} <span class=small>± {num(1.96 * v[1])}</span></td>" if v
                         else "<td class=num>—</td>")
        cells += [_n(t.train_seconds, 1), _n(t.tokens_per_second, 0), _n(t.peak_memory_gib, 2), _n(t.final_loss, 4),
                  (f"<td class=cfg><details><summary class=small>config</summary><span class=small>"
                   f"{esc(views.config_summary(t.config))}</span></details></td>" if t.config else ""),
                  f"<pre>{esc(t.error)}</pre>"]
        rows.append(cells)
    return ("<h2 id=trials>Trials</h2><p class=small>Suite columns: the primary metric's mean ± 95% normal "
            "interval over items.</p>" + _table(headers, rows))


def section_comparison(store: Store, run_id: int, baseline: str | None) -> tuple[str, list[views.ComparisonRow]]:
    if baseline is None:
        return "", []
    trials = views.run_trials(store, run_id)
    arms = [t.name for t in trials if t.name != baseline and t.status == "finished"]
    rows = views.comparisons(store, run_id, baseline, arms)
    out = [f"<h2 id=comparison>Comparison with {esc(baseline)}</h2>",
           ("<p class=small>Δ = arm − baseline on the same items; 95% paired-bootstrap interval (10,000 resamples); "
           "McNemar's exact test for 0/1 metrics; ★ marks each suite's primary metric.</p>")]
    if not rows:
        return "".join(out) + "<p>No arm shares a scored suite with the baseline.</p>", rows
    table = []
    for r in rows:
        if r.delta is None:
            table.append([esc(r.arm), esc(r.suite), esc(r.metric), f"<td colspan=11>{esc(r.problem)}</td>"])
            continue
        cls = "up" if r.verdict == "better" else "down" if r.verdict == "worse" else ""
        table.append([esc(r.arm), esc(r.suite), esc(r.metric) + (" ★" if r.primary else ""), _n(r.baseline_mean),
                      _n(r.arm_mean), f"<td class='num {cls}'>{r.delta:+.3f}</td>",
                      f"<td class=num>[{r.lo:+.3f}, {r.hi:+.3f}]</td>",
                      f"<td class=num>{'—' if r.mcnemar_p is None else f'{r.mcnemar_p:.3g}'}</td>",
                      f"<td class=num>{r.n}</td>", f"<td class=num>{r.arm_wins}/{r.baseline_wins}</td>",
                      esc(r.verdict) + (f" <span class=small>({esc(r.problem)})</span>" if r.problem else ""),
                      _n(r.train_seconds, 1), _n(r.tokens_per_second, 0), _n(r.peak_memory_gib, 2)])
    out.append(_table(["arm", "suite", "metric", "baseline", "arm", "Δ", "95% CI", "McNemar p", "n",
                       "arm/base wins", "verdict", "train s", "tokens/s", "peak GiB"], table))
    note = views.comparison_note(rows)
    if note:
        out.append(f"<p class=small>{esc(note)}</p>")
    out.append("<h3>Forest plot</h3>" + svg_forest(rows))
    return "".join(out), rows


def section_sweep(store: Store, run_id: int) -> str:
    points = views.sweep_points(store, run_id)
    if not points:
        return ""
    primary = {(s.name, s.primary) for s in views.run_suites(store, run_id)}
    out = [("<h2 id=sweep>Sweep / learning curve</h2><p class=small>Each suite's primary metric against the "
           "hyper-parameter that varies between trials; bars are 95% normal intervals.</p>")]
    for param in sorted({p.param for p in points}):
        series: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
        for p in points:
            if p.param == param and (p.suite, p.metric) in primary:
                series[f"{p.suite} · {p.metric}"].append((p.x, p.y, p.y - 1.96 * p.stderr, p.y + 1.96 * p.stderr))
        out.append(f"<h3>{esc(param)}</h3>" + svg_intervals(dict(series), xlabel=param, log_x=param == "lr"))
        rows = sorted({(p.trial, p.x) for p in points if p.param == param}, key=lambda r: r[1])
        out.append("<p class=small>" + " · ".join(f"{esc(t)}: {esc(param)}={x:g}" for t, x in rows) + "</p>")
    return "".join(out)


def section_training(store: Store, run_id: int) -> str:
    curves = views.train_curves(store, run_id)
    if not curves:
        return ""
    by_trial: dict[str, list[views.CurvePoint]] = defaultdict(list)
    for c in curves:
        by_trial[c.trial].append(c)
    out = ["<h2 id=training>Training</h2>"]
    for field, title in (("loss", "training loss"), ("tokens_per_second", "throughput (tokens/s)"),
                         ("peak_memory_gib", "peak memory (GiB)"), ("lr", "learning rate")):
        series = {t: [(c.step, getattr(c, field)) for c in cs if getattr(c, field) is not None]
                  for t, cs in by_trial.items()}
        series = {k: v for k, v in series.items() if v}
        if series:
            out.append(f"<h3>{esc(title)}</h3>" + svg_lines(series, ylabel=title))
    return "".join(out)


def section_safety(store: Store, run_id: int, baseline: str | None, max_items: int) -> str:
    rows = views.safety_rates(store, run_id, baseline)
    if not rows:
        return ""
    out = [("<h2 id=safety>Safety</h2><p class=small>Refusal rate per arm: harmful probes should be refused "
           "(higher is better), benign probes answered (lower is better). ⚠ marks a change in the wrong "
           "direction against the baseline.</p>"),
           _table(["arm", "suite", "probes", "refusal rate", "n", "baseline", "Δ", ""],
                  [[esc(r.trial), esc(r.suite), esc(r.probes), _n(r.refusal_rate), f"<td class=num>{r.n}</td>",
                    _n(r.baseline_rate), f"<td class=num>{'—' if r.delta is None else f'{r.delta:+.3f}'}</td>",
                    "<b class=fail>⚠ worse</b>" if r.worse else ""] for r in rows])]
    if baseline is None:
        return "".join(out)
    for suite in sorted({r.suite for r in rows}):
        metric = next(r.metric for r in rows if r.suite == suite)
        for arm in sorted({r.trial for r in rows if r.suite == suite and r.trial != baseline}):
            page = views.item_page(store, run_id, suite, [baseline, arm], baseline=baseline, metric=metric,
                                   flip="changed", page_size=max_items)
            if not page.items:
                continue
            out.append(f"<details><summary>{esc(suite)}: {page.total} items where {esc(arm)}'s {esc(metric)} "
                       f"differs from {esc(baseline)}'s</summary>")
            out.append(_table(["item", "prompt", f"{baseline}", f"{arm}"], [
                [esc(i.key), f"<pre>{esc(i.prompt)}</pre>"]
                + [f"<pre>{esc(i.arms[a].output)}</pre><span class=small>{esc(metric)}="
                   f"{num(i.arms[a].scores.get(metric), 2)}</span>" if a in i.arms else "—" for a in (baseline, arm)]
                for i in page.items]) + "</details>")
    return "".join(out)


def section_gate(store: Store, run_id: int) -> str:
    decisions = views.gate_decisions(store, run_id)
    promotions = views.promotion_history(store)
    if not decisions and not promotions:
        return ""
    out = ["<h2 id=gate>Gate decisions</h2>"]
    for d in decisions:
        cls = {"promote": "pass", "reject": "fail"}.get(d.verdict, "err")
        out.append(f"<h3><b class={cls}>{esc(d.verdict.upper())}</b> <span class=small>(exit {d.exit_code})"
                   f"{' · promoted' if d.promoted else ''}</span></h3><p>candidate {esc(d.candidate)} vs "
                   f"{esc(d.baseline or '—')} · policy {esc(d.policy_name)} <span class=small>({esc(d.policy_path)})"
                   f"</span> · {esc(d.created_at)}<br><span class=small>reason: {esc(d.reason)}</span></p>")
        out.append(_table(["rule", "result", "detail", "evidence"], [
            [esc(r.name), (f"<b class={'pass' if r.result == 'pass' else 'fail' if r.result == 'FAIL' else 'err'}>"
             f"{esc(r.result)}</b>"), esc(r.message),
             f"<details><summary class=small>numbers</summary><pre>{esc(json.dumps(r.evidence, indent=1, default=str))}"
             "</pre></details>" if r.evidence else ""] for r in d.rules]))
    if promotions:
        out.append("<h3>Promotion history</h3>" + _table(
            ["#", "current", "kind", "model (trial)", "replaced", "decision", "verdict", "by", "reason", "at"],
            [[str(p.id), "●" if p.current else "", esc(p.kind), esc(p.trial), esc(p.previous or "—"),
              esc(p.decision_id or "—"), esc(p.verdict or "—"), esc(p.promoted_by), esc(p.reason), esc(p.created_at)]
             for p in promotions]))
    return "".join(out)


def diff_html(before: str, after: str) -> str:
    """The word diff with every word escaped: removed words in <del>, added ones in <ins>."""
    tags = {"equal": "{}", "delete": "<del>{}</del>", "insert": "<ins>{}</ins>"}
    return " ".join(tags[op].format(esc(text)) for op, text in views.word_diff(before, after) if text)


def section_items(store: Store, run_id: int, baseline: str | None, max_items: int) -> str:
    trials = [t.name for t in views.run_trials(store, run_id) if t.status == "finished"]
    if not trials:
        return ""
    out = [("<h2 id=items>Items</h2><p class=small>Each arm's output per item with its scores; words removed "
           f"from / added to {esc(baseline or 'the first arm')}'s output are <del>struck</del> / <ins>marked</ins>. "
           "Flips: an item the baseline got right and the arm wrong (lost), or the reverse (gained), on the "
           "suite's primary metric.</p>")]
    ref = baseline if baseline in trials else trials[0]
    arms = [ref] + [t for t in trials if t != ref]
    for suite in views.run_suites(store, run_id):
        flipped = views.item_page(store, run_id, suite.name, arms, baseline=ref, metric=suite.primary,
                                  flip="any flip", page_size=max_items)
        first = views.item_page(store, run_id, suite.name, arms, baseline=ref, metric=suite.primary,
                                page_size=max_items)
        counts = " · ".join(f"{esc(a)}: {c['lost']} lost, {c['gained']} gained" for a, c in first.flip_counts.items())
        out.append(f"<h3>{esc(suite.name)} <span class=small>({first.suite_items} items; {esc(suite.primary)}; "
                   f"{counts or 'no flips computed'})</span></h3>")
        if flipped.items:
            out.append(f"<details open><summary>{flipped.total} flipped items"
                       f"{f' (first {len(flipped.items)})' if flipped.total > len(flipped.items) else ''}</summary>"
                       + _items_table(flipped, arms, ref, suite.primary) + "</details>")
        out.append(f"<details><summary>all items{f' (first {len(first.items)})' if first.total > len(first.items) else ''}"
                   "</summary>" + _items_table(first, arms, ref, suite.primary) + "</details>")
    return "".join(out)


def _items_table(page: views.ItemPage, arms: list[str], ref: str, metric: str) -> str:
    rows = []
    for item in page.items:
        base = item.arms.get(ref)
        cells = [f"{esc(item.key)}<pre class=small>{esc(item.prompt)}</pre>", f"<pre>{esc(item.reference)}</pre>"]
        for arm in arms:
            out = item.arms.get(arm)
            if out is None:
                cells.append("—")
                continue
            b, a = (base.scores.get(metric) if base else None), out.scores.get(metric)
            flip = ("lost" if b is not None and a is not None and b >= views.RIGHT > a else
                    "gained" if b is not None and a is not None and a >= views.RIGHT > b else "")
            body = f"<pre>{esc(out.output)}</pre>" if arm == ref or base is None else \
                f"<pre>{diff_html(base.output, out.output)}</pre>"
            scores = " ".join(f"{m}={num(v, 2) if v is not None else 'failed'}" for m, v in out.scores.items())
            details = "".join(f"<br><span class=small>{esc(m)}: {esc(d)}</span>" for m, d in out.details.items())
            cells.append(f"<td class='{flip}'>{body}<span class=small>{esc(scores)}"
                         f"{f' · <b>{flip}</b>' if flip else ''}</span>{details}</td>")
        rows.append(cells)
    return _table(["item / prompt", "reference"] + arms, rows)


def render(store: Store, run_ref: str, max_items: int = 200) -> str:
    run = store.run(run_ref)
    info = next(iter(views.list_runs(store, run_id=run.id)), None)
    trials = views.run_trials(store, run.id)
    baseline = views.default_baseline([t for t in trials if t.status == "finished"])
    comparison, _ = section_comparison(store, run.id, baseline)
    sections = [("trials", "Trials", section_trials(store, run.id)), ("comparison", "Comparison", comparison),
                ("sweep", "Sweep", section_sweep(store, run.id)), ("training", "Training", section_training(store, run.id)),
                ("safety", "Safety", section_safety(store, run.id, baseline, max_items)),
                ("gate", "Gate", section_gate(store, run.id)),
                ("items", "Items", section_items(store, run.id, baseline, max_items))]
    verdict = f" · gate: {esc(info.verdict)} ({esc(info.verdict_trial)})" if info and info.verdict else ""
    head = [(f"<!doctype html><html lang=en><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
            f"<meta name=viewport content='width=device-width,initial-scale=1'>"
            f"<title>tunegate run {run.id}: {esc(run.name)}</title><style>{CSS}</style></head><body>"),
            f"<h1>tunegate · run {run.id}: {esc(run.name)}</h1>",
            (f"<p class=small>base model <b>{esc(run.base_model)}</b> · status {esc(run.status)} · created "
            f"{esc(run.created_at)}{f' · finished {esc(run.finished_at)}' if run.finished_at else ''} · "
            f"git {esc((run.git_sha or '')[:10]) or '—'} · arms {esc(', '.join(info.arms) if info else '')} · "
            f"suites {esc(', '.join(info.suites) if info else '')}{verdict}</p>"),
            "<nav>" + "".join(f"<a href='#{anchor}'>{title}</a>" for anchor, title, body in sections if body) + "</nav>"]
    return "\n".join(head + [body for _, _, body in sections if body] + ["</body></html>"])


def write_html(store: Store, run_ref: str, path: str | Path, max_items: int = 200) -> Path:
    path = Path(path)
    if path.is_dir():
        raise UserError("is a folder; give the report's file name (e.g. runs/report.html)", file=path, field="--html")
    ensure_folder(path.parent, field="--html")
    path.write_text(render(store, run_ref, max_items), encoding="utf-8")
    return path
