"""A measured run, reported from the store: the device and library versions its trials ran with, the date,
every trial's status, metrics, train time and peak memory, each arm against the baseline (paired bootstrap
95% interval, McNemar p for 0/1 metrics), and an explicit line for every arm that did NOT beat the baseline.

"Beat" means: on every task suite the primary metric's 95% interval of the gain lies above zero. A failed
trial did not beat it either. bench/gpu_plan_report.py writes reports/gpu/plan_run.{json,md} with it."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.analysis._compare import compare_trials
from harness.store._store import Store


def _num(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 6)


def _manifest(folder: str) -> dict[str, Any]:
    path = Path(folder or "") / "manifest.json"
    return json.loads(path.read_text()) if folder and path.exists() else {}


def run_report(store: Store, run_ref: str, baseline: str = "baseline") -> dict[str, Any]:
    """Everything the report says about one run, as plain data (what plan_run.json holds)."""
    run = store.get_run(run_ref)
    trials = store.trials(run.id)
    manifests = {t.name: _manifest(t.folder) for t in trials}
    ran = [m for m in manifests.values() if m]
    trained = [m for t, m in zip(trials, manifests.values()) if m and t.train_seconds is not None]
    reference = (trained or ran or [{}])[0]
    rows: list[dict[str, Any]] = []
    for t in trials:
        metrics: dict[str, dict[str, Any]] = {}
        for ev, suite in store.evaluations(t.id):
            metrics[suite.name] = {
                m: {"value": _num(v.value), "stderr": _num(v.stderr), "n": v.n, "primary": m == suite.primary_metric}
                | ({"corpus": True} if v.corpus else {})
                for m, v in store.metrics(ev.id).items()
            }
        rows.append(
            {
                "trial": t.name,
                "type": t.arm_type,
                "status": t.status,
                "error": t.error,
                "config": t.config,
                "train_seconds": _num(t.train_seconds),
                "tokens_per_second": _num(t.tokens_per_second),
                "peak_memory_gib": _num(t.peak_memory_gib),
                "final_loss": _num(t.final_loss),
                "steps": len(store.train_steps(t.id)),
                "device_name": manifests[t.name].get("device_name"),
                "started_at": t.started_at,
                "finished_at": t.finished_at,
                "metrics": metrics,
            }
        )

    base = next((t for t in trials if t.name == baseline), None)
    comparisons: list[dict[str, Any]] = []
    verdicts: list[dict[str, Any]] = []
    for cand in trials:
        if base is None or cand.id == base.id:
            continue
        if cand.status != "finished" or base.status != "finished":
            reason = f"trial {cand.status}: {cand.error}" if cand.status != "finished" else f"baseline {base.status}"
            verdicts.append({"trial": cand.name, "type": cand.arm_type, "beat_baseline": False, "reason": reason})
            continue
        task_primary: list[dict[str, Any]] = []
        for c in compare_trials(store, base, cand):
            s = c.stats
            row = {
                "trial": cand.name,
                "suite": c.suite,
                "category": c.category,
                "metric": c.metric,
                "primary": c.primary,
                "problem": c.problem,
            }
            if s is not None:
                row |= {
                    "baseline": _num(s.mean_a),
                    "candidate": _num(s.mean_b),
                    "delta": _num(s.delta),
                    "ci_low": _num(s.lo),
                    "ci_high": _num(s.hi),
                    "mcnemar_p": _num(s.mcnemar_p),
                    "n": s.n,
                }
            comparisons.append(row)
            if c.primary and c.category == "task":
                task_primary.append(row)
        if not task_primary:
            task_primary = [r for r in comparisons if r["trial"] == cand.name and r["primary"]]
        beat = bool(task_primary) and all((r.get("ci_low") or 0) > 0 for r in task_primary)
        detail = "; ".join(
            f"{r['suite']}/{r['metric']} Δ {r['delta']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
            if r.get("delta") is not None
            else f"{r['suite']}/{r['metric']}: {r['problem'] or 'no paired scores'}"
            for r in task_primary
        )
        verdicts.append(
            {
                "trial": cand.name,
                "type": cand.arm_type,
                "beat_baseline": beat,
                "reason": detail or "no comparable suite",
            }
        )

    return {
        "run": {
            "id": run.id,
            "name": run.name,
            "status": run.status,
            "base_model": run.base_model,
            "created_at": run.created_at,
            "finished_at": run.finished_at,
            "git_sha": run.git_sha,
        },
        "device": {
            "name": reference.get("device_name"),
            "kind": reference.get("device"),
            "cuda_visible_devices": reference.get("cuda_visible_devices"),
        },
        "versions": reference.get("versions", {}),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "baseline": baseline if base is not None else None,
        "trials": rows,
        "comparisons": comparisons,
        "verdicts": verdicts,
        "did_not_beat_baseline": [v["trial"] for v in verdicts if not v["beat_baseline"]],
    }


def _f(x: Any, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def run_report_markdown(report: dict[str, Any], title: str = "Plan run") -> str:
    """The report for people: trials, verdicts, and each arm against the baseline (primary metrics)."""
    run, dev = report["run"], report["device"]
    out = [
        f"# {title}: {run['name']} (run {run['id']}, {run['status']})",
        "",
        f"- date: {report['date']}",
        f"- device: {dev['name'] or 'unknown'} ({dev['kind'] or '?'})",
        f"- base model: {run['base_model']}",
        f"- git: {run['git_sha'][:12] or 'unknown'}",
        "- libraries: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        "",
    ]
    out += [
        "## Trials",
        "",
        "| trial | type | status | train s | tokens/s | peak GiB | final loss | steps | primary metrics |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for t in report["trials"]:
        prim = "; ".join(
            f"{s}/{m} {v['value']:.3f}"
            for s, ms in t["metrics"].items()
            for m, v in ms.items()
            if v["primary"] and v["value"] is not None
        )
        if t["status"] != "finished":
            prim = f"**{t['status']}**: {t['error'] or ''}"
        out.append(
            f"| {t['trial']} | {t['type']} | {t['status']} | {_f(t['train_seconds'], '.1f')} | "
            f"{_f(t['tokens_per_second'], '.0f')} | {_f(t['peak_memory_gib'], '.2f')} | "
            f"{_f(t['final_loss'], '.3f')} | {t['steps']} | {prim} |"
        )
    out += [
        "",
        "## Verdicts",
        "",
        "An arm beats the baseline when, on every task suite, the 95% interval of its primary metric's "
        "gain lies above zero.",
        "",
    ]
    for v in report["verdicts"]:
        if v["beat_baseline"]:
            out.append(f"- {v['trial']} ({v['type']}) beat the baseline: {v['reason']}")
    for v in report["verdicts"]:
        if not v["beat_baseline"]:
            out.append(f"- **{v['trial']} ({v['type']}) did NOT beat the baseline**: {v['reason']}")
    if not report["verdicts"]:
        out.append("- no arm could be compared (no finished baseline trial)")
    out += [
        "",
        f"## Each arm vs {report['baseline'] or 'baseline (missing)'}",
        "",
        "Paired over the same items; 95% paired-bootstrap interval of the difference; McNemar exact p "
        "for 0/1 metrics; primary metrics only (plan_run.json has every metric).",
        "",
        "| trial | suite | metric | baseline | arm | Δ | 95% CI | McNemar p | n |",
        "|---|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for c in report["comparisons"]:
        if not c["primary"]:
            continue
        if c.get("delta") is None:
            out.append(f"| {c['trial']} | {c['suite']} | {c['metric']} | — | — | — | {c['problem'] or ''} | | |")
            continue
        out.append(
            f"| {c['trial']} | {c['suite']} | {c['metric']} | "
            f"{c['baseline']:.3f} | {c['candidate']:.3f} | {c['delta']:+.3f} | "
            f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] | {_f(c['mcnemar_p'], '.3g')} | {c['n']} |"
        )
    return "\n".join(out) + "\n"


def write_run_report(
    store: Store, run_ref: str, out_dir: Path, *, stem: str = "plan_run", title: str = "Plan run"
) -> tuple[Path, Path]:
    """OUT_DIR/STEM.json and OUT_DIR/STEM.md for the run; returns their paths."""
    report = run_report(store, run_ref)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=2))
    md_path.write_text(run_report_markdown(report, title))
    return json_path, md_path
