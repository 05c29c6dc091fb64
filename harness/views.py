"""What the Streamlit app and the static HTML report show, read from the store by the same functions.

Every function takes a `Store` and ids and returns plain, picklable dataclasses (so the app can
cache them with `st.cache_data`). Nothing here renders: text from models and data files is
returned as-is, and each front end escapes it for its own medium (`md_escape` for Streamlit
markdown, `html.escape` in the report).

Large runs stay cheap: per-item views are paginated in SQL (only the rows of one page are read),
and filters (flips, text search) work on item ids before any output text is loaded.
"""
from __future__ import annotations

import difflib
import json
import math
import re
import string
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Text, cast, or_, select

from harness.compare import compare_trials
from harness.flips import flips
from harness.stats import multiple_comparison_note
from harness.store import (
    Evaluation,
    GateDecision,
    ItemRow,
    Metric,
    Output,
    Promotion,
    Run,
    Score,
    Store,
    SuiteRow,
    TrainStep,
    Trial,
)

FLIP_FILTERS: tuple[str, ...] = ("all", "lost", "gained", "any flip", "changed")
FLIP_HELP = {
    "all": "every item",
    "lost": "reference arm right, arm wrong (a regression)",
    "gained": "reference arm wrong, arm right (an improvement)",
    "any flip": "lost or gained",
    "changed": "the score differs from the baseline's at all",
}
RIGHT = 0.5  # a score at or above this counts as right (0/1 metrics; same cut as McNemar's test)


# --- runs and trials -------------------------------------------------------------------------

@dataclass(frozen=True)
class RunRow:
    id: int
    name: str
    status: str
    base_model: str
    created_at: str
    finished_at: str | None
    git_sha: str
    arms: tuple[str, ...]
    suites: tuple[str, ...]
    trials_finished: int
    trials_total: int
    verdict: str | None          # the latest gate decision on any trial of the run
    verdict_trial: str | None    # ... and the trial it was about

    @property
    def label(self) -> str:
        return f"#{self.id} {self.name} ({self.status})"


@dataclass(frozen=True)
class TrialRow:
    id: int
    run_id: int
    name: str
    arm: str
    arm_type: str
    status: str
    error: str | None
    config: dict[str, Any]
    train_seconds: float | None
    tokens_per_second: float | None
    peak_memory_gib: float | None
    final_loss: float | None
    started_at: str | None
    finished_at: str | None


def _trial_row(t: Trial) -> TrialRow:
    return TrialRow(t.id, t.run_id, t.name, t.arm, t.arm_type, t.status, t.error, dict(t.config or {}),
                    t.train_seconds, t.tokens_per_second, t.peak_memory_gib, t.final_loss, t.started_at,
                    t.finished_at)


def list_runs(store: Store, limit: int = 200, run_id: int | None = None) -> list[RunRow]:
    """The newest runs (or just `run_id`) with their arms, suites, progress and latest gate verdict
    (four queries in all)."""
    with store.reading() as s:
        q = select(Run).order_by(Run.id.desc()).limit(limit)
        runs = list(s.scalars(q if run_id is None else q.where(Run.id == run_id)))
        ids = [r.id for r in runs]
        if not ids:
            return []
        trials = list(s.scalars(select(Trial).where(Trial.run_id.in_(ids)).order_by(Trial.id)))
        suites = s.execute(select(Trial.run_id, SuiteRow.name).join(Evaluation, Evaluation.trial_id == Trial.id)
                           .join(SuiteRow, SuiteRow.id == Evaluation.suite_id)
                           .where(Trial.run_id.in_(ids)).distinct()).all()
        decisions = s.execute(select(GateDecision.verdict, Trial.run_id, Trial.name)
                              .join(Trial, Trial.id == GateDecision.candidate_trial_id)
                              .where(Trial.run_id.in_(ids)).order_by(GateDecision.id)).all()
    by_run: dict[int, list[Trial]] = defaultdict(list)
    for t in trials:
        by_run[t.run_id].append(t)
    suites_by_run: dict[int, set[str]] = defaultdict(set)
    for rid, name in suites:
        suites_by_run[rid].add(name)
    verdicts = {rid: (verdict, trial) for verdict, rid, trial in decisions}  # the last one wins
    planned = {r.id: tuple((r.plan or {}).get("suites") or ()) for r in runs}
    return [RunRow(r.id, r.name, r.status, r.base_model, r.created_at, r.finished_at, r.git_sha or "",
                   tuple(t.name for t in by_run[r.id]),
                   tuple(sorted(suites_by_run[r.id])) or tuple(str(x) for x in planned[r.id]),
                   sum(t.status == "finished" for t in by_run[r.id]), len(by_run[r.id]),
                   *verdicts.get(r.id, (None, None)))
            for r in runs]


def run_trials(store: Store, run_id: int) -> list[TrialRow]:
    return [_trial_row(t) for t in store.trials(run_id)]


def sweep_spec(store: Store, run_id: int) -> dict[str, Any] | None:
    """The plan's sweep block ({arm, method, params, ...}) or None."""
    return (store.run(run_id).plan or {}).get("sweep")


def config_summary(config: dict[str, Any], skip: Iterable[str] = ("name", "type")) -> str:
    return ", ".join(f"{k}={v}" for k, v in config.items() if k not in skip and v is not None)


def default_baseline(trials: list[TrialRow]) -> str | None:
    """The trial named 'baseline', else the first baseline-type trial, else the first trial."""
    if not trials:
        return None
    named = [t.name for t in trials if t.name == "baseline"]
    typed = [t.name for t in trials if t.arm_type == "baseline"]
    return (named or typed or [trials[0].name])[0]


# --- suites and aggregate metrics ------------------------------------------------------------

@dataclass(frozen=True)
class SuiteInfo:
    name: str
    version: str
    kind: str
    category: str
    primary: str
    metrics: tuple[str, ...]


@dataclass(frozen=True)
class MetricRow:
    trial: str
    suite: str
    category: str
    metric: str
    primary: bool
    value: float
    stderr: float
    n: int


def run_suites(store: Store, run_id: int) -> list[SuiteInfo]:
    """Each suite (name) the run's trials were scored on, with its metrics; the newest version if several."""
    with store.reading() as s:
        pairs = s.execute(select(Evaluation.suite_id, Metric.metric).join(Trial, Trial.id == Evaluation.trial_id)
                          .join(Metric, Metric.evaluation_id == Evaluation.id)
                          .where(Trial.run_id == run_id).distinct()).all()  # no DISTINCT over JSON (PostgreSQL)
        rows_by_id = {r.id: r for r in s.scalars(select(SuiteRow).where(SuiteRow.id.in_({i for i, _ in pairs})))}
    rows = sorted(((rows_by_id[i], m) for i, m in pairs), key=lambda r: (r[0].id, r[1]))
    suites: dict[str, SuiteRow] = {}
    metrics: dict[str, list[str]] = defaultdict(list)
    for suite, metric in rows:
        if suite.name not in suites or suite.id > suites[suite.name].id:
            suites[suite.name] = suite
        if metric not in metrics[suite.name]:
            metrics[suite.name].append(metric)
    out = []
    for name in sorted(suites):
        sr = suites[name]
        order = [m for m in _spec_metrics(sr.spec) if m in metrics[name]]
        order += sorted(m for m in metrics[name] if m not in order)
        out.append(SuiteInfo(name, sr.version, sr.kind, sr.category, sr.primary_metric, tuple(order)))
    return out


def _spec_metrics(spec: dict[str, Any] | None) -> list[str]:
    names = []
    for sc in (spec or {}).get("scorers") or []:
        names.append(sc if isinstance(sc, str) else sc.get("name"))
    return [n for n in names if n]


def metric_table(store: Store, run_id: int) -> list[MetricRow]:
    """Every aggregate (trial x suite x metric) of a run in one query."""
    with store.reading() as s:
        rows = s.execute(select(Trial.name, SuiteRow.name, SuiteRow.category, SuiteRow.primary_metric, Metric)
                         .join(Evaluation, Evaluation.trial_id == Trial.id)
                         .join(SuiteRow, SuiteRow.id == Evaluation.suite_id)
                         .join(Metric, Metric.evaluation_id == Evaluation.id)
                         .where(Trial.run_id == run_id).order_by(Trial.id, SuiteRow.name, Metric.id)).all()
    return [MetricRow(trial, suite, category, m.metric, m.metric == primary, m.value, m.stderr, m.n)
            for trial, suite, category, primary, m in rows]


# --- comparison ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ComparisonRow:
    arm: str
    baseline: str
    suite: str
    category: str
    metric: str
    primary: bool
    baseline_mean: float | None
    arm_mean: float | None
    delta: float | None
    lo: float | None
    hi: float | None
    mcnemar_p: float | None
    n: int
    arm_wins: int
    baseline_wins: int
    verdict: str               # better | worse | no clear difference | not comparable
    problem: str | None
    train_seconds: float | None
    tokens_per_second: float | None
    peak_memory_gib: float | None


def _finite(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def comparisons(store: Store, run_id: int, baseline: str, arms: list[str],
                metrics: Iterable[tuple[str, str]] | None = None) -> list[ComparisonRow]:
    """Each arm against `baseline` on every suite and metric both were scored on: paired deltas with 95%
    bootstrap intervals (and McNemar's p for 0/1 metrics), plus the arm's cost. `metrics` keeps only
    these (suite, metric) pairs."""
    by_name = {t.name: t for t in store.trials(run_id)}
    if baseline not in by_name:
        return []
    keep = set(metrics) if metrics is not None else None
    base = by_name[baseline]
    out: list[ComparisonRow] = []
    for arm in arms:
        cand = by_name.get(arm)
        if cand is None or cand.id == base.id:
            continue
        for c in compare_trials(store, base, cand):
            if keep is not None and (c.suite, c.metric) not in keep:
                continue
            st = c.stats
            if st is None:
                verdict = "not comparable"
            elif st.lo > 0:
                verdict = "better"
            elif st.hi < 0:
                verdict = "worse"
            else:
                verdict = "no clear difference"
            out.append(ComparisonRow(
                arm, baseline, c.suite, c.category, c.metric, c.primary,
                _finite(st.mean_a) if st else None, _finite(st.mean_b) if st else None,
                _finite(st.delta) if st else None, _finite(st.lo) if st else None, _finite(st.hi) if st else None,
                st.mcnemar_p if st else None, st.n if st else 0, st.b_wins if st else 0, st.a_wins if st else 0,
                verdict, c.problem, cand.train_seconds, cand.tokens_per_second, cand.peak_memory_gib))
    return out


def comparison_note(rows: list[ComparisonRow]) -> str:
    """How many of the table's McNemar p-values survive Holm's adjustment (several arms and metrics
    compared at once)."""
    return multiple_comparison_note({f"{r.arm} vs {r.baseline}: {r.suite}.{r.metric}": r.mcnemar_p for r in rows})


@dataclass(frozen=True)
class ArmSummary:
    trial: str
    arm_type: str
    status: str
    primary: dict[str, tuple[float, float, int]]  # suite -> (mean, stderr, n) of its primary metric
    train_seconds: float | None
    tokens_per_second: float | None
    peak_memory_gib: float | None
    final_loss: float | None


def arm_summaries(store: Store, run_id: int, arms: list[str] | None = None) -> list[ArmSummary]:
    """One row per trial: its primary metric on each suite and its cost."""
    trials = run_trials(store, run_id)
    primary: dict[str, dict[str, tuple[float, float, int]]] = defaultdict(dict)
    for m in metric_table(store, run_id):
        if m.primary:
            primary[m.trial][m.suite] = (m.value, m.stderr, m.n)
    return [ArmSummary(t.name, t.arm_type, t.status, primary[t.name], t.train_seconds, t.tokens_per_second,
                       t.peak_memory_gib, t.final_loss)
            for t in trials if arms is None or t.name in arms]


# --- sweeps and learning curves --------------------------------------------------------------

@dataclass(frozen=True)
class SweepPoint:
    trial: str
    param: str
    x: float
    suite: str
    metric: str
    y: float
    stderr: float


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def sweep_params(trials: list[TrialRow], sweep: dict[str, Any] | None) -> dict[str, list[str]]:
    """Which numeric hyper-parameters vary, and over which trials: the plan's sweep if it has one, else
    any config key that differs between trials of the same arm type (e.g. r, lr, data_fraction)."""
    if sweep:
        swept = sweep["arm"] if isinstance(sweep.get("arm"), list) else [sweep.get("arm")]
        members = [t.name for t in trials if any(t.name.startswith(f"{arm}-") for arm in swept)]
        return {p: members for p in sweep.get("params", {})
                if len({_numeric(t.config.get(p)) for t in trials if t.name in members} - {None}) > 1}
    out: dict[str, list[str]] = {}
    by_type: dict[str, list[TrialRow]] = defaultdict(list)
    for t in trials:
        by_type[t.arm_type].append(t)
    for group in by_type.values():
        if len(group) < 2:
            continue
        keys = {k for t in group for k in t.config if k not in ("name", "type", "seed")}
        for key in sorted(keys):
            values = [_numeric(t.config.get(key)) for t in group]
            if None not in values and len(set(values)) > 1:
                out.setdefault(key, []).extend(t.name for t in group)
    return out


def sweep_points(store: Store, run_id: int) -> list[SweepPoint]:
    """Metric against hyper-parameter (or data fraction / steps) for every varying parameter."""
    trials = run_trials(store, run_id)
    params = sweep_params(trials, sweep_spec(store, run_id))
    if not params:
        return []
    config = {t.name: t.config for t in trials}
    out = []
    for m in metric_table(store, run_id):
        for param, members in params.items():
            x = _numeric(config.get(m.trial, {}).get(param))
            if m.trial in members and x is not None:
                out.append(SweepPoint(m.trial, param, x, m.suite, m.metric, m.value, m.stderr))
    return out


# --- training curves -------------------------------------------------------------------------

@dataclass(frozen=True)
class CurvePoint:
    trial: str
    step: int
    loss: float | None
    lr: float | None
    grad_norm: float | None
    tokens_per_second: float | None
    peak_memory_gib: float | None


def train_curves(store: Store, run_id: int, trials: list[str] | None = None) -> list[CurvePoint]:
    """Logged training steps of a run's trials (one query)."""
    with store.reading() as s:
        q = (select(Trial.name, TrainStep).join(TrainStep, TrainStep.trial_id == Trial.id)
             .where(Trial.run_id == run_id).order_by(Trial.id, TrainStep.step))
        if trials is not None:
            q = q.where(Trial.name.in_(trials))
        rows = s.execute(q).all()
    return [CurvePoint(name, st.step, st.loss, st.lr, st.grad_norm, st.tokens_per_second, st.peak_memory_gib)
            for name, st in rows]


# --- per-item drill-down ---------------------------------------------------------------------

@dataclass(frozen=True)
class ArmOutput:
    output: str
    prompt: str                         # the exact prompt the arm sent (shots, context included)
    scores: dict[str, float | None]
    details: dict[str, str]             # judge reasons and other per-score notes


@dataclass(frozen=True)
class ItemView:
    key: str
    prompt: str
    reference: str
    meta: dict[str, Any]
    arms: dict[str, ArmOutput]          # trial name -> its output (missing if that arm has none)


@dataclass(frozen=True)
class ItemPage:
    total: int                          # items matching the filters
    suite_items: int                    # items in the suite, unfiltered
    page: int
    pages: int
    page_size: int
    items: list[ItemView]
    flip_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # arm -> {lost, gained, changed}
    other_version: list[str] = field(default_factory=list)  # arms scored only on another suite version


def item_prompt(data: dict[str, Any]) -> str:
    if data.get("prompt") is not None:
        return str(data["prompt"])
    msgs = data.get("messages") or []
    return "\n".join(f"{m.get('role', '?')}: {m.get('content', '')}" for m in msgs)


def item_reference(data: dict[str, Any]) -> str:
    ref = data.get("reference")
    if ref is None and data.get("choices") is not None and data.get("answer") is not None:
        try:
            ref = data["choices"][data["answer"]]
        except (IndexError, TypeError):
            ref = None
    if ref is None:
        return ""
    return ref if isinstance(ref, str) else json.dumps(ref, ensure_ascii=False)


def _evaluations(s: Any, run_id: int, suite: str, trials: list[str],
                 reference: str | None) -> tuple[dict[str, int], list[str]]:
    """trial name -> its evaluation id on one version of `suite`: the version the reference arm was
    scored on last (else the newest). Also the trials scored only on another version."""
    rows = s.execute(select(Trial.name, Evaluation.id, Evaluation.suite_id)
                     .join(Evaluation, Evaluation.trial_id == Trial.id)
                     .join(SuiteRow, SuiteRow.id == Evaluation.suite_id)
                     .where(Trial.run_id == run_id, SuiteRow.name == suite, Trial.name.in_(trials))
                     .order_by(Evaluation.id)).all()
    if not rows:
        return {}, []
    latest = {name: suite_id for name, _, suite_id in rows}  # ordered by id: the last one wins
    version = latest.get(reference) if reference in latest else rows[-1][2]
    evs = {name: ev for name, ev, suite_id in rows if suite_id == version}
    return evs, sorted(set(latest) - set(evs))


def _metric_scores(s: Any, evaluation_id: int, metric: str) -> dict[int, float | None]:
    return dict(s.execute(select(Score.item_id, Score.value)
                          .where(Score.evaluation_id == evaluation_id, Score.metric == metric)).all())


def _flip_sets(base: dict[int, float | None], arm: dict[int, float | None]) -> dict[str, set[int]]:
    found = flips({str(k): v for k, v in base.items()}, {str(k): v for k, v in arm.items()}, threshold=RIGHT)
    lost, gained = {int(k) for k in found.lost}, {int(k) for k in found.gained}
    changed = {i for i, b in base.items() if b is not None and arm.get(i) is not None and arm[i] != b}
    return {"lost": lost, "gained": gained, "any flip": lost | gained, "changed": changed}


def item_page(store: Store, run_id: int, suite: str, trials: list[str], *, baseline: str | None = None,
              metric: str | None = None, flip: str = "all", search: str = "", page: int = 1,
              page_size: int = 25) -> ItemPage:
    """One page of a suite's items with every selected arm's output and scores.

    `flip` keeps items whose `metric` score moved between `baseline` and any other selected arm
    ('lost': baseline right -> arm wrong; 'gained': the reverse (harness.flips, score >= 0.5 is
    right); 'any flip'; 'changed': any difference). Items are those of the suite version the
    baseline was scored on; arms scored only on another version are listed in `other_version`. `search` is a case-insensitive substring of the prompt, an output, the item key or
    the item data (reference). Only the page's rows are read from the store."""
    if flip not in FLIP_FILTERS:
        raise ValueError(f"flip must be one of {FLIP_FILTERS}")
    page_size = max(1, int(page_size))
    with store.reading() as s:
        evs, other_version = _evaluations(s, run_id, suite, trials, baseline)
        ev_ids = list(evs.values())
        if not ev_ids:
            return ItemPage(0, 0, 1, 1, page_size, [], {}, other_version)
        all_ids = list(s.scalars(select(Output.item_id).where(Output.evaluation_id.in_(ev_ids))
                                 .distinct().order_by(Output.item_id)))
        suite_items = len(all_ids)
        ids = all_ids
        counts: dict[str, dict[str, int]] = {}
        if metric and baseline in evs:
            base_scores = _metric_scores(s, evs[baseline], metric)
            keep: set[int] = set()
            for name, ev in evs.items():
                if name == baseline:
                    continue
                sets = _flip_sets(base_scores, _metric_scores(s, ev, metric))
                counts[name] = {k: len(sets[k]) for k in ("lost", "gained", "changed")}
                if flip != "all":
                    keep |= sets[flip]
            if flip != "all":
                ids = [i for i in ids if i in keep]
        elif flip != "all":
            ids = []
        if search.strip():
            needle = search.strip()
            hits = set(s.scalars(
                select(Output.item_id).join(ItemRow, ItemRow.id == Output.item_id)
                .where(Output.evaluation_id.in_(ev_ids),
                       or_(Output.output.icontains(needle, autoescape=True),
                           Output.prompt.icontains(needle, autoescape=True),
                           ItemRow.item_key.icontains(needle, autoescape=True),
                           cast(ItemRow.data, Text).icontains(needle, autoescape=True)))))
            ids = [i for i in ids if i in hits]
        total = len(ids)
        pages = max(1, math.ceil(total / page_size))
        page = min(max(1, int(page)), pages)
        chosen = ids[(page - 1) * page_size: page * page_size]
        if not chosen:
            return ItemPage(total, suite_items, page, pages, page_size, [], counts, other_version)
        items = {i.id: i for i in s.scalars(select(ItemRow).where(ItemRow.id.in_(chosen)))}
        outputs = s.execute(select(Output.evaluation_id, Output.item_id, Output.output, Output.prompt)
                            .where(Output.evaluation_id.in_(ev_ids), Output.item_id.in_(chosen))).all()
        scores = s.execute(select(Score.evaluation_id, Score.item_id, Score.metric, Score.value, Score.detail)
                           .where(Score.evaluation_id.in_(ev_ids), Score.item_id.in_(chosen))
                           .order_by(Score.id)).all()
    per: dict[tuple[int, int], dict[str, Any]] = {}
    for ev, item, output, prompt in outputs:
        per[(ev, item)] = {"output": output, "prompt": prompt, "scores": {}, "details": {}}
    for ev, item, metric_name, value, detail in scores:
        if (ev, item) in per:
            per[(ev, item)]["scores"][metric_name] = value
            if detail:
                per[(ev, item)]["details"][metric_name] = detail
    views = []
    for i in chosen:
        row = items[i]
        arms = {}
        for name in trials:  # keep the caller's arm order
            ev = evs.get(name)
            if ev is not None and (ev, i) in per:
                arms[name] = ArmOutput(**per[(ev, i)])
        data = row.data or {}
        views.append(ItemView(row.item_key, item_prompt(data), item_reference(data), dict(data.get("meta") or {}),
                              arms))
    return ItemPage(total, suite_items, page, pages, page_size, views, counts, other_version)


# --- word-level diff -------------------------------------------------------------------------

DiffOp = Literal["equal", "delete", "insert"]


def word_diff(before: str, after: str) -> list[tuple[DiffOp, str]]:
    """`after` against `before`, word by word (difflib): runs of kept, removed and added words.
    Newlines are tokens of their own, so line structure survives."""
    a, b = _words(before), _words(after)
    out: list[tuple[DiffOp, str]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            out.append(("equal", _join(a[i1:i2])))
            continue
        if tag in ("delete", "replace"):
            out.append(("delete", _join(a[i1:i2])))
        if tag in ("insert", "replace"):
            out.append(("insert", _join(b[j1:j2])))
    return out


def _words(text: str) -> list[str]:
    return re.findall(r"\n|[^\s]+", text or "")


def _join(tokens: list[str]) -> str:
    return re.sub(r" ?\n ?", "\n", " ".join(tokens))


MD_SPECIAL = set(string.punctuation)
ZWSP = "\u200b"
# GFM turns bare URLs and e-mail addresses in text into links after parsing, whatever the escapes;
# an invisible zero-width space after "://", inside "www." and after "@" stops that.
_AUTOLINKS = [(re.compile(r"(?i)(https?|ftp)://"), lambda m: m.group(0) + ZWSP),
              (re.compile(r"(?i)\bwww\."), lambda m: m.group(0)[:3] + ZWSP + "."),
              (re.compile("@"), lambda m: "@" + ZWSP)]


def md_escape(text: Any) -> str:
    """Text that Streamlit's markdown shows literally: every ASCII punctuation character is
    backslash-escaped (CommonMark), so no link, image, HTML tag, math or colour directive can form;
    bare URLs are broken with a zero-width space so none becomes a link; newlines become hard line
    breaks. (Exact text is shown with st.code; this is for text inside markdown.)"""
    s = "" if text is None else str(text)
    for pattern, repl in _AUTOLINKS:
        s = pattern.sub(repl, s)
    escaped = "".join("\\" + ch if ch in MD_SPECIAL else ch for ch in s)
    return escaped.replace("\r\n", "\n").replace("\n", "  \n")


def diff_markdown(before: str, after: str) -> str:
    """The word diff as Streamlit markdown: removed words struck through on red, added words on green;
    every word is escaped with `md_escape`."""
    parts = []
    for op, text in word_diff(before, after):
        if op == "equal":
            parts.append(md_escape(text))
            continue
        lines = []
        for line in text.split("\n"):
            body = md_escape(line.strip())
            if not body:
                lines.append("")
            elif op == "delete":
                lines.append(f":red-background[~~{body}~~]")
            else:
                lines.append(f":green-background[{body}]")
        parts.append("  \n".join(lines))
    return " ".join(p for p in parts if p)


# --- safety ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SafetyRow:
    trial: str
    suite: str
    probes: str                  # harmful | benign | other
    metric: str
    refusal_rate: float
    n: int
    baseline_rate: float | None

    @property
    def delta(self) -> float | None:
        return None if self.baseline_rate is None else self.refusal_rate - self.baseline_rate

    @property
    def worse(self) -> bool:
        """More refusals of benign probes, or fewer of harmful ones, than the baseline."""
        d = self.delta
        if d is None:
            return False
        return d > 0 if self.probes == "benign" else d < 0 if self.probes == "harmful" else False


def safety_suites(store: Store, run_id: int) -> list[SuiteInfo]:
    return [s for s in run_suites(store, run_id) if s.category == "safety"]


def refusal_metric(suite: SuiteInfo) -> tuple[str, str]:
    """(metric, probes) of a safety suite: `refusal` marks harmful probes (the model should refuse),
    `complied` benign ones (it should answer; refusal rate = 1 - complied)."""
    for metric, probes in (("refusal", "harmful"), ("complied", "benign")):
        if metric in suite.metrics:
            return metric, probes
    metric = next((m for m in suite.metrics if "refus" in m.lower()), suite.primary)
    return metric, "other"


def safety_rates(store: Store, run_id: int, baseline: str | None = None) -> list[SafetyRow]:
    """Refusal rate of every arm on each safety suite (harmful and benign probes), with the baseline's."""
    kinds = {s.name: refusal_metric(s) for s in safety_suites(store, run_id)}
    rates: dict[tuple[str, str], tuple[float, int]] = {}
    order: list[tuple[str, str]] = []
    for m in metric_table(store, run_id):
        if m.suite in kinds and m.metric == kinds[m.suite][0]:
            rate = 1.0 - m.value if m.metric == "complied" else m.value
            rates[(m.trial, m.suite)] = (rate, m.n)
            order.append((m.trial, m.suite))
    out = []
    for trial, suite in order:
        rate, n = rates[(trial, suite)]
        base = rates.get((baseline, suite)) if baseline else None
        metric, probes = kinds[suite]
        out.append(SafetyRow(trial, suite, probes, metric, rate, n, base[0] if base else None))
    return out


# --- gate ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RuleView:
    name: str
    result: str      # pass | FAIL | error
    message: str
    evidence: dict[str, Any]


@dataclass(frozen=True)
class DecisionView:
    id: int
    verdict: str
    exit_code: int
    candidate: str
    baseline: str | None
    policy_path: str
    policy_name: str
    reason: str
    created_at: str
    rules: list[RuleView]
    promoted: bool


@dataclass(frozen=True)
class PromotionView:
    id: int
    kind: str              # promote | rollback
    trial: str
    previous: str | None
    decision_id: int | None
    verdict: str | None
    promoted_by: str
    reason: str
    created_at: str
    current: bool


def _trial_labels(s: Any, ids: set[int]) -> dict[int, str]:
    ids = {i for i in ids if i is not None}
    if not ids:
        return {}
    rows = s.execute(select(Trial.id, Trial.name, Run.id, Run.name).join(Run, Run.id == Trial.run_id)
                     .where(Trial.id.in_(ids))).all()
    return {tid: f"{rname}#{rid}/{tname}" for tid, tname, rid, rname in rows}


def gate_decisions(store: Store, run_id: int | None = None, limit: int = 200) -> list[DecisionView]:
    """Gate decisions, newest first (those about the run's trials when `run_id` is given)."""
    with store.reading() as s:
        q = select(GateDecision).order_by(GateDecision.id.desc()).limit(limit)
        if run_id is not None:
            q = q.join(Trial, Trial.id == GateDecision.candidate_trial_id).where(Trial.run_id == run_id)
        decisions = list(s.scalars(q))
        promoted = set(s.scalars(select(Promotion.decision_id)))
        labels = _trial_labels(s, {d.candidate_trial_id for d in decisions} | {d.baseline_trial_id for d in decisions})
    out = []
    for d in decisions:
        rules = [RuleView(str(r.get("name", "")), "error" if r.get("error") else ("pass" if r.get("passed") else "FAIL"),
                          str(r.get("message", "")), dict(r.get("evidence") or {})) for r in d.rules or []]
        out.append(DecisionView(d.id, d.verdict, d.exit_code, labels.get(d.candidate_trial_id, "?"),
                                labels.get(d.baseline_trial_id) if d.baseline_trial_id else None, d.policy_path,
                                str((d.policy or {}).get("name", "")), d.reason, d.created_at, rules,
                                d.id in promoted))
    return out


def promotion_history(store: Store) -> list[PromotionView]:
    """Every promotion, newest first; the first one is the model in production."""
    with store.reading() as s:
        proms = list(s.scalars(select(Promotion).order_by(Promotion.id.desc())))
        verdicts = dict(s.execute(select(GateDecision.id, GateDecision.verdict)
                                  .where(GateDecision.id.in_({p.decision_id for p in proms if p.decision_id}))).all())
        labels = _trial_labels(s, {p.trial_id for p in proms} | {p.previous_trial_id for p in proms})
    return [PromotionView(p.id, p.kind or "promote", labels.get(p.trial_id, f"t{p.trial_id}"),
                          labels.get(p.previous_trial_id) if p.previous_trial_id else None, p.decision_id,
                          verdicts.get(p.decision_id) if p.decision_id else None, p.promoted_by, p.reason or "",
                          p.created_at, i == 0)
            for i, p in enumerate(proms)]
