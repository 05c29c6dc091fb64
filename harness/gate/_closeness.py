"""How close a verdict was: the fewest items whose outcome would have to change to flip a rule, or the decision.

A rule is judged on per-item scores (`judge`). "An item's outcome changes" means the candidate's score on that
item moves to the other end of the metric's range: 0 <-> 1 for a 0/1 metric; for a continuous metric, to its
worst or best value, which is 0 or 1 when every score seen on either side lies in [0, 1] (all shipped scorers),
else the lowest or highest score seen on either side. The comparison model's scores never change.

Every check a rule makes is monotone in the candidate's scores: a floor (`min`) is easier to meet as they
rise, a ceiling (`max`) as they fall, `max_drop` and `require_improvement` as they move in the metric's better
direction. That holds for point estimates (a mean), Wilson bounds (a function of the number of 1s) and the
gate's bootstrap bounds (same seed, so the same resampled items: each resampled mean has non-negative weights
on the items, and a quantile of them is non-decreasing in each). So the search walks one path: the items in
order of how far they can move in the needed direction, farthest first, and finds the first k (by bisection,
re-running the rule's own checks) where the rule's result differs.

- A passing rule fails as soon as any one check fails: the count is the smallest over its checks.
- A failing rule passes only when all its checks pass: its failing checks must all pull one way (else no
  count), the walk goes that way, and the count stands only if the checks pulling the other way still pass.
- Exact for point rules (`min`, `max`, `max_drop` on the mean; a sum moves most by the largest moves first)
  and for interval rules on 0/1 metrics judged by Wilson bounds (a function of the count alone), with one
  exception: a failing rule on a continuous metric with checks pulling both ways (a floor and a ceiling) whose
  farthest moves overshoot the other check gets no count, though smaller moves might fit. For rules
  judged on a bootstrap interval (`require_improvement`, `judge_on: interval` with `max_drop`, or `min`/`max`
  on a continuous metric) it is an upper bound: the items found do flip the rule (re-run with the same seed),
  but another choice of as many items could move the interval more, since resampling draws items unequally
  and a difference's spread matters as well as its mean. Among equal moves the walk therefore takes first
  those that narrow the interval (helping a check pass) or widen it (making one fail), then the items the
  bootstrap draws most often; on small random 0/1 cases that finds the exhaustive minimum, on continuous
  scores it is at times one item above it (tests/gate/test_closeness.py).
- The decision: a promotion flips when any rule flips (the smallest count over rules); a rejection flips only
  when every failing rule passes and no passing rule fails, so rules on the same suite and metric are searched
  together (they share items) and the counts of independent groups add up.
- None: the rule is not judged on items (an error: missing evidence, too few items), or no change of items
  along the search flips it (a floor of 0 cannot fail; failing checks that pull opposite ways).

McNemar's p-value is reported as evidence and never decides a rule, so it has no count of its own.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from harness.base._stats import _BOOTSTRAP_CELLS, paired_bootstrap, wilson
from harness.gate._policy import CONFIDENCE, Rule


@dataclass(frozen=True)
class Check:
    text: str
    ok: bool
    up: bool  # True: easier to pass as the candidate's scores rise


@dataclass(frozen=True)
class RuleScores:
    """What one rule is judged on: the candidate's per-item scores and, for a relative rule, the comparison
    model's scores on the items scored on both sides."""

    rule: Rule
    target: str  # baseline | promoted (the comparison model, for messages)
    candidate: dict[str, float]  # item key -> score, every item with a score, in the store's order
    paired: tuple[str, ...] = ()  # the keys scored on both sides, in the store's order (absolute rule: none)
    baseline: tuple[float, ...] = ()  # the comparison model's scores on `paired`
    binary: bool = False
    higher: bool = True  # higher is better
    group: tuple[int, str] = (0, "")  # (candidate evaluation id, metric): rules that share items


def mean_interval(values: Sequence[float], binary: bool) -> tuple[float, float]:
    """95% interval of a mean: Wilson for 0/1 scores, percentile bootstrap otherwise."""
    if binary and all(v in (0.0, 1.0) for v in values):
        return wilson(int(sum(values)), len(values), CONFIDENCE)
    _, lo, hi = paired_bootstrap([0.0] * len(values), list(values), confidence=CONFIDENCE)
    return lo, hi


def judge(s: RuleScores, candidate: dict[str, float] | None = None) -> list[Check]:
    """The rule's checks on the candidate's scores (`candidate`: changed scores; default: as stored)."""
    rule, cand = s.rule, s.candidate if candidate is None else candidate
    checks: list[Check] = []
    if rule.min is not None or rule.max is not None:
        values = list(cand.values())
        mean = statistics.fmean(values)
        point = rule.judge_on == "point"
        lo, hi = (mean, mean) if point else mean_interval(values, s.binary)
        if rule.min is not None:
            ok = lo >= rule.min
            checks.append(
                Check(
                    f"{'mean' if point else 'lower 95% bound'} {lo:.3f} {'≥' if ok else '<'} floor "
                    f"{rule.min:g}{'' if ok else ': FAILED'}",
                    ok,
                    True,
                )
            )
        if rule.max is not None:
            ok = hi <= rule.max
            checks.append(
                Check(
                    f"{'mean' if point else 'upper 95% bound'} {hi:.3f} {'≤' if ok else '>'} ceiling "
                    f"{rule.max:g}{'' if ok else ': FAILED'}",
                    ok,
                    False,
                )
            )
    if rule.relative:
        base = list(s.baseline)
        now = [cand[k] for k in s.paired]
        sign = 1 if s.higher else -1
        if rule.require_improvement or rule.judge_on == "interval":
            delta, lo, hi = paired_bootstrap(base, now)
        else:  # the same mean of differences paired_bootstrap reports, without the resampling
            delta = float((np.asarray(now, dtype=float) - np.asarray(base, dtype=float)).mean())
            lo = hi = delta
        gain = sign * delta  # > 0: the candidate is better
        worst = lo if sign > 0 else -hi  # the interval's least favourable end, as a gain
        best = hi if sign > 0 else -lo
        if rule.max_drop is not None:
            value = gain if rule.judge_on == "point" else worst
            ok = value >= -rule.max_drop
            what = "change" if rule.judge_on == "point" else "worst end of the 95% interval"
            checks.append(
                Check(
                    f"{what} {value:+.3f} vs {s.target} (allowed drop {rule.max_drop:g}){'' if ok else ': FAILED'}",
                    ok,
                    s.higher,
                )
            )
        if rule.require_improvement:
            ok = worst > 0
            verdict = (
                "excludes 0"
                if ok
                else (
                    "lies below 0: the change is negative: FAILED"
                    if best < 0
                    else "does not exclude 0: no clear improvement: FAILED"
                )
            )
            checks.append(Check(f"gain 95% interval [{worst:+.3f}, {best:+.3f}] {verdict}", ok, s.higher))
    return checks


def score_range(group: Sequence[RuleScores]) -> tuple[float, float]:
    """The worst and best raw values an item's score can move to (see the module docstring)."""
    if all(s.binary for s in group):
        return 0.0, 1.0
    seen = [v for s in group for v in (*s.candidate.values(), *s.baseline)]
    if all(0.0 <= v <= 1.0 for v in seen):
        return 0.0, 1.0
    return min(seen), max(seen)


@dataclass(frozen=True)
class Flip:
    items: int  # how many items
    keys: tuple[str, ...]  # which ones (one choice that does it)


def draw_counts(n: int, resamples: int = 10_000, seed: int = 0) -> np.ndarray:
    """How often the gate's bootstrap (paired_bootstrap: same seed, same blocks) draws each of n items."""
    rng = np.random.default_rng(seed)
    rows = max(1, _BOOTSTRAP_CELLS // n)
    counts = np.zeros(n, dtype=np.int64)
    for start in range(0, resamples, rows):
        counts += np.bincount(rng.integers(0, n, size=(min(rows, resamples - start), n)).ravel(), minlength=n)
    return counts


def _walk(group: Sequence[RuleScores], up: bool, narrow: bool) -> tuple[list[str], Callable[[int], dict[str, float]]]:
    """The items in the order the search changes them, and the candidate's scores with the first k changed.

    Farthest move first (what moves a mean most); among equal moves, with `narrow` (the search helps a check
    pass) one that brings the candidate's score toward the comparison model's first (a paired difference nearer
    0 narrows a bootstrap interval, lifting its worst end), else one that takes it away first (widening it);
    then the item the bootstrap draws most often, then the store's order."""
    candidate = group[0].candidate
    to = score_range(group)[1 if up else 0]
    paired = next((s for s in group if s.paired), None)
    base = dict(zip(paired.paired, paired.baseline)) if paired else {}
    weight = draw_counts(len(paired.paired)) if paired else draw_counts(len(candidate))
    position = {k: i for i, k in enumerate(paired.paired if paired else candidate)}
    moves = []
    for i, (k, v) in enumerate(candidate.items()):
        if v == to:
            continue
        toward = k in base and abs(to - base[k]) < abs(v - base[k])
        w = int(weight[position[k]]) if k in position else 0
        moves.append((-abs(to - v), toward != narrow, -w, i, k))
    order = [m[-1] for m in sorted(moves)]

    def state(k: int) -> dict[str, float]:
        changed = dict(candidate)
        for key in order[:k]:
            changed[key] = to
        return changed

    return order, state


def _first(n: int, holds: Callable[[int], bool]) -> int | None:
    """The smallest k in 1..n where `holds` (monotone: once true, true for every larger k), or None."""
    if n < 1 or not holds(n):
        return None
    lo, hi = 1, n
    while lo < hi:
        mid = (lo + hi) // 2
        if holds(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _all_pass(group: Sequence[RuleScores], cand: dict[str, float], up: bool | None = None) -> bool:
    return all(c.ok for s in group for c in judge(s, cand) if up is None or c.up == up)


def to_fail(s: RuleScores) -> Flip | None:
    """The fewest items whose change makes a passing rule fail (its easiest check to break)."""
    base = judge(s)
    best: Flip | None = None
    for index, check in enumerate(base):
        order, state = _walk([s], not check.up, narrow=False)
        k = _first(len(order), lambda k, state=state, index=index: not judge(s, state(k))[index].ok)
        if k is not None and (best is None or k < best.items):
            best = Flip(k, tuple(order[:k]))
    return best


def to_pass(group: Sequence[RuleScores]) -> Flip | None:
    """The fewest items whose change makes every rule of `group` (rules on one candidate evaluation and metric)
    pass at once; None when the failing checks pull opposite ways or the walk breaks a passing check."""
    checks = [c for s in group for c in judge(s)]
    if all(c.ok for c in checks):
        return Flip(0, ())
    directions = {c.up for c in checks if not c.ok}
    if len(directions) != 1:
        return None
    up = directions.pop()
    order, state = _walk(group, up, narrow=True)
    k = _first(len(order), lambda k: _all_pass(group, state(k), up))
    if k is None or not _all_pass(group, state(k)):
        return None
    return Flip(k, tuple(order[:k]))


def rule_flip(s: RuleScores) -> Flip | None:
    """How far the rule's result is from the other one: a passing rule from failing, a failing one from passing."""
    return to_fail(s) if all(c.ok for c in judge(s)) else to_pass([s])


def phrase(verdict: str, flips: int | None) -> str:
    """`PASS — 1 item from FAIL`: a result and how close it was (a rule's `pass`/`FAIL`, a decision's
    `promote`/`reject`; an error has no count)."""
    word = {"promote": "PASS", "pass": "PASS", "reject": "FAIL", "fail": "FAIL"}.get(verdict.lower())
    if word is None:
        return "ERROR"
    other = "FAIL" if word == "PASS" else "PASS"
    if flips is None:
        return f"{word} — no change of items found that flips it"
    return f"{word} — {flips} item{'' if flips == 1 else 's'} from {other}"


def decision_flips(
    judged: Sequence[tuple[bool, RuleScores | None]], flips: Sequence[int | None], verdict: str
) -> int | None:
    """The fewest item changes that turn a promotion into a rejection or a rejection into a promotion, given each
    rule's (passed, scores) and its own count; None for an error, or when some rule is not judged on items."""
    if verdict == "promote":
        counts = [f for f in flips if f is not None]
        return min(counts) if counts else None
    if verdict != "reject" or any(s is None for _, s in judged):
        return None
    groups: dict[tuple[int, str], list[tuple[bool, RuleScores]]] = {}
    for passed, s in judged:
        assert s is not None
        groups.setdefault(s.group, []).append((passed, s))
    total = 0
    for members in groups.values():
        if all(passed for passed, _ in members):
            continue
        flip = to_pass([s for _, s in members])
        if flip is None:
            return None
        total += flip.items
    return total
