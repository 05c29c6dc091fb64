"""Per-item drill-down: outputs side by side, flips, word-level diffs."""

from __future__ import annotations

import difflib
import json
import math
import re
import string
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Text, cast, or_, select

from harness.analysis._flips import flips
from harness.store._store import Store
from harness.store._tables import (
    Evaluation,
    ItemRow,
    Output,
    Score,
    SuiteRow,
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


@dataclass(frozen=True)
class ArmOutput:
    output: str
    prompt: str  # the exact prompt the arm sent (shots, context included)
    scores: dict[str, float | None]
    details: dict[str, str]  # judge reasons and other per-score notes


@dataclass(frozen=True)
class ItemView:
    key: str
    prompt: str
    reference: str
    meta: dict[str, Any]
    arms: dict[str, ArmOutput]  # trial name -> its output (missing if that arm has none)


@dataclass(frozen=True)
class ItemPage:
    total: int  # items matching the filters
    suite_items: int  # items in the suite, unfiltered
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


def _evaluations(
    s: Any, run_id: int, suite: str, trials: list[str], reference: str | None
) -> tuple[dict[str, int], list[str]]:
    """trial name -> its evaluation id on one version of `suite`: the version the reference arm was
    scored on last (else the newest). Also the trials scored only on another version."""
    rows = s.execute(
        select(Trial.name, Evaluation.id, Evaluation.suite_id)
        .join(Evaluation, Evaluation.trial_id == Trial.id)
        .join(SuiteRow, SuiteRow.id == Evaluation.suite_id)
        .where(Trial.run_id == run_id, SuiteRow.name == suite, Trial.name.in_(trials))
        .order_by(Evaluation.id)
    ).all()
    if not rows:
        return {}, []
    latest = {name: suite_id for name, _, suite_id in rows}  # ordered by id: the last one wins
    version = latest.get(reference) if reference in latest else rows[-1][2]
    evs = {name: ev for name, ev, suite_id in rows if suite_id == version}
    return evs, sorted(set(latest) - set(evs))


def _metric_scores(s: Any, evaluation_id: int, metric: str) -> dict[int, float | None]:
    return dict(
        s.execute(
            select(Score.item_id, Score.value).where(Score.evaluation_id == evaluation_id, Score.metric == metric)
        ).all()
    )


def _flip_sets(base: dict[int, float | None], arm: dict[int, float | None]) -> dict[str, set[int]]:
    found = flips({str(k): v for k, v in base.items()}, {str(k): v for k, v in arm.items()}, threshold=RIGHT)
    lost, gained = {int(k) for k in found.lost}, {int(k) for k in found.gained}
    changed = {i for i, b in base.items() if b is not None and arm.get(i) is not None and arm[i] != b}
    return {"lost": lost, "gained": gained, "any flip": lost | gained, "changed": changed}


def item_page(
    store: Store,
    run_id: int,
    suite: str,
    trials: list[str],
    *,
    baseline: str | None = None,
    metric: str | None = None,
    flip: str = "all",
    search: str = "",
    page: int = 1,
    page_size: int = 25,
) -> ItemPage:
    """One page of a suite's items with every selected arm's output and scores.

    `flip` keeps items whose `metric` score moved between `baseline` and any other selected arm
    ('lost': baseline right -> arm wrong; 'gained': the reverse (harness.analysis.flips, score >= 0.5 is
    right); 'any flip'; 'changed': any difference). Items are those of the suite version the
    baseline was scored on; arms scored only on another version are listed in `other_version`. `search` is a
    case-insensitive substring of the prompt, an output, the item key or the item data (reference). Only the
    page's rows are read from the store."""
    if flip not in FLIP_FILTERS:
        raise ValueError(f"flip must be one of {FLIP_FILTERS}")
    page_size = max(1, int(page_size))
    with store.reading() as s:
        evs, other_version = _evaluations(s, run_id, suite, trials, baseline)
        ev_ids = list(evs.values())
        if not ev_ids:
            return ItemPage(0, 0, 1, 1, page_size, [], {}, other_version)
        all_ids = list(
            s.scalars(
                select(Output.item_id).where(Output.evaluation_id.in_(ev_ids)).distinct().order_by(Output.item_id)
            )
        )
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
            hits = set(
                s.scalars(
                    select(Output.item_id)
                    .join(ItemRow, ItemRow.id == Output.item_id)
                    .where(
                        Output.evaluation_id.in_(ev_ids),
                        or_(
                            Output.output.icontains(needle, autoescape=True),
                            Output.prompt.icontains(needle, autoescape=True),
                            ItemRow.item_key.icontains(needle, autoescape=True),
                            cast(ItemRow.data, Text).icontains(needle, autoescape=True),
                        ),
                    )
                )
            )
            ids = [i for i in ids if i in hits]
        total = len(ids)
        pages = max(1, math.ceil(total / page_size))
        page = min(max(1, int(page)), pages)
        chosen = ids[(page - 1) * page_size : page * page_size]
        if not chosen:
            return ItemPage(total, suite_items, page, pages, page_size, [], counts, other_version)
        items = {i.id: i for i in s.scalars(select(ItemRow).where(ItemRow.id.in_(chosen)))}
        outputs = s.execute(
            select(Output.evaluation_id, Output.item_id, Output.output, Output.prompt).where(
                Output.evaluation_id.in_(ev_ids), Output.item_id.in_(chosen)
            )
        ).all()
        scores = s.execute(
            select(Score.evaluation_id, Score.item_id, Score.metric, Score.value, Score.detail)
            .where(Score.evaluation_id.in_(ev_ids), Score.item_id.in_(chosen))
            .order_by(Score.id)
        ).all()
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
        views.append(
            ItemView(row.item_key, item_prompt(data), item_reference(data), dict(data.get("meta") or {}), arms)
        )
    return ItemPage(total, suite_items, page, pages, page_size, views, counts, other_version)


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
_AUTOLINKS = [
    (re.compile(r"(?i)(https?|ftp)://"), lambda m: m.group(0) + ZWSP),
    (re.compile(r"(?i)\bwww\."), lambda m: m.group(0)[:3] + ZWSP + "."),
    (re.compile("@"), lambda m: "@" + ZWSP),
]


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
