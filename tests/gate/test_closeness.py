"""How close a verdict was (flips_to_change), checked against brute force: every set of items, every way each
can change, on small cases (n <= 8) of every rule kind; equal where the search is exact, never below the
exhaustive minimum (and its items really flip the rule) where it is an upper bound."""

from __future__ import annotations

import itertools
import random
import zlib
from typing import Any

import pytest

from harness.gate._closeness import (
    RuleScores,
    decision_flips,
    judge,
    rule_flip,
    score_range,
    to_pass,
)
from harness.gate._policy import Rule


def passes(s: RuleScores, cand: dict[str, float]) -> bool:
    return all(c.ok for c in judge(s, cand))


def changes(cand: dict[str, float], keys: tuple[str, ...], bounds: tuple[float, float]):
    """Every way the items `keys` can each move to another end of the range."""
    options = [[v for v in bounds if v != cand[k]] for k in keys]
    for values in itertools.product(*options):
        yield {**cand, **dict(zip(keys, values))}


def brute_group(group: list[RuleScores], flipped) -> int | None:
    """The fewest items (of the shared candidate) whose change makes `flipped(candidate scores)` true."""
    cand = group[0].candidate
    bounds = score_range(group)
    for k in range(1, len(cand) + 1):
        for keys in itertools.combinations(cand, k):
            if any(flipped(changed) for changed in changes(cand, keys, bounds)):
                return k
    return None


def brute_rule(s: RuleScores) -> int | None:
    before = passes(s, s.candidate)
    return brute_group([s], lambda cand: passes(s, cand) != before)


def scores(
    rule: Rule,
    cand: list[float],
    base: list[float] | None = None,
    *,
    binary: bool = True,
    higher: bool = True,
    group: tuple[int, str] = (1, "m"),
) -> RuleScores:
    keys = [f"i{i}" for i in range(len(cand))]
    return RuleScores(
        rule,
        "baseline",
        dict(zip(keys, cand)),
        tuple(keys) if base is not None else (),
        tuple(base or ()),
        binary=binary,
        higher=higher,
        group=group,
    )


def check_against_brute(s: RuleScores, exact: bool) -> tuple[int | None, int | None]:
    flip, brute = rule_flip(s), brute_rule(s)
    got = flip.items if flip else None
    if exact:
        assert got == brute, (s.rule, s.candidate, s.baseline)
    else:
        if got is not None:
            assert brute is not None and got >= brute, (s.rule, s.candidate, s.baseline)
    if flip is not None:  # the items it names do flip the rule
        before = passes(s, s.candidate)
        assert any(passes(s, changed) != before for changed in changes(s.candidate, flip.keys, score_range([s])))
    return got, brute


def binary_cases(rng: random.Random, n_cases: int, n: int) -> list[tuple[list[float], list[float]]]:
    return [
        ([float(rng.random() < 0.6) for _ in range(n)], [float(rng.random() < 0.6) for _ in range(n)])
        for _ in range(n_cases)
    ]


RULES_EXACT_BINARY: list[dict[str, Any]] = [
    {"min": 0.5},
    {"min": 0.7},
    {"max": 0.4},
    {"min": 0.5, "judge_on": "interval"},
    {"max": 0.6, "judge_on": "interval"},
    {"max_drop": 0.0},
    {"max_drop": 0.15},
    {"min": 0.5, "max_drop": 0.0},
    {"min": 0.25, "max": 0.75},
]


@pytest.mark.parametrize("spec", RULES_EXACT_BINARY, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
@pytest.mark.parametrize("higher", [True, False])
def test_exact_on_binary_scores(spec: dict[str, Any], higher: bool) -> None:
    rng = random.Random(zlib.crc32(repr((spec, higher)).encode()))
    rule = Rule(suite="s", metric="m", **spec)
    for cand, base in binary_cases(rng, 12, rng.choice([6, 7, 8])):
        check_against_brute(scores(rule, cand, base if rule.relative else None, higher=higher), exact=True)


RULES_EXACT_CONTINUOUS: list[dict[str, Any]] = [
    {"min": 0.5},
    {"max": 0.4},
    {"max_drop": 0.0},
    {"max_drop": 0.1},
    {"min": 0.45, "max_drop": 0.05},
]


@pytest.mark.parametrize("spec", RULES_EXACT_CONTINUOUS, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_exact_on_continuous_scores(spec: dict[str, Any]) -> None:
    """Continuous scores move to 0 or 1 (the range of scores in [0, 1]); a point rule is exact."""
    rng = random.Random(zlib.crc32(repr(spec).encode()))
    rule = Rule(suite="s", metric="m", **spec)
    for _ in range(10):
        n = rng.choice([5, 6])
        cand = [rng.choice([0.0, 0.2, 0.45, 0.7, 0.9, 1.0]) for _ in range(n)]
        base = [rng.choice([0.0, 0.3, 0.5, 0.8, 1.0]) for _ in range(n)]
        check_against_brute(scores(rule, cand, base if rule.relative else None, binary=False), exact=True)


def test_a_metric_outside_0_1_moves_to_the_lowest_or_highest_score_seen() -> None:
    rule = Rule(suite="s", metric="m", max=2.0)  # e.g. a count of errors per answer
    s = scores(rule, [0.0, 1.0, 3.0, 2.0], None, binary=False)
    assert score_range([s]) == (0.0, 3.0)
    flip = rule_flip(s)  # mean 1.5 <= 2: passes; one item 0 -> 3 makes it 2.25
    assert flip is not None and flip.items == 1 and flip.keys == ("i0",)
    assert check_against_brute(s, exact=True) == (1, 1)


RULES_BOOTSTRAP: list[tuple[dict[str, Any], bool]] = [
    ({"require_improvement": True}, True),
    ({"max_drop": 0.1, "judge_on": "interval"}, True),
    ({"require_improvement": True}, False),
    ({"max_drop": 0.1, "judge_on": "interval"}, False),
    ({"min": 0.4, "judge_on": "interval"}, False),
    ({"max": 0.6, "judge_on": "interval"}, False),
]


@pytest.mark.parametrize("higher", [True, False])
@pytest.mark.parametrize("spec,binary", RULES_BOOTSTRAP, ids=lambda x: str(x))
def test_bootstrap_interval_rules_are_an_upper_bound(spec: dict[str, Any], binary: bool, higher: bool) -> None:
    """A bootstrap interval, re-run with the gate's seed after each change: never below the exhaustive minimum,
    and the items it names do flip the rule. On these 0/1 cases the search's order (toward or away from the
    comparison model's score, then the most drawn item) also finds the minimum itself."""
    rng = random.Random(zlib.crc32(repr((spec, binary, higher)).encode()))
    rule = Rule(suite="s", metric="m", **spec)
    found = 0
    for _ in range(8):
        n = rng.choice([5, 6, 7])
        if binary:
            cand, base = binary_cases(rng, 1, n)[0]
        else:
            cand = [rng.choice([0.0, 0.3, 0.6, 1.0]) for _ in range(n)]
            base = [rng.choice([0.0, 0.4, 0.7, 1.0]) for _ in range(n)]
        got, _ = check_against_brute(
            scores(rule, cand, base if rule.relative else None, binary=binary, higher=higher), exact=binary
        )
        found += got is not None
    assert found  # the cases exercise the search, not only rules nothing can flip


def test_a_genuine_improvement_flips_back_with_as_few_items_as_brute_force_finds() -> None:
    """A plain case: require_improvement passes on 8 items where the candidate wins 6; taking back 2 wins
    makes the interval touch 0."""
    rule = Rule(suite="s", metric="m", require_improvement=True)
    s = scores(rule, [1.0] * 8, [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    got, brute = check_against_brute(s, exact=False)
    assert got is not None and got >= brute


def test_a_floor_of_zero_cannot_fail_and_opposed_checks_have_no_count() -> None:
    assert rule_flip(scores(Rule(suite="s", metric="m", min=0.0), [0.0, 1.0, 1.0])) is None
    # the interval is too wide on both sides: a higher mean helps the floor and hurts the ceiling
    wide = Rule(suite="s", metric="m", min=0.45, max=0.55, judge_on="interval")
    s = scores(wide, [0.0, 1.0, 0.0, 1.0])
    assert not passes(s, s.candidate)
    assert rule_flip(s) is None and brute_rule(s) is None


def verdict(group: list[RuleScores], cand_by_group: dict[tuple[int, str], dict[str, float]]) -> bool:
    return all(passes(s, cand_by_group[s.group]) for s in group)


def brute_decision(rules: list[RuleScores]) -> int | None:
    """Every change of the items of both suites at once (binary)."""
    groups = sorted({s.group for s in rules})
    cands = {g: next(s.candidate for s in rules if s.group == g) for g in groups}
    flat = [(g, k) for g in groups for k in cands[g]]
    before = verdict(rules, cands)
    for k in range(1, len(flat) + 1):
        for chosen in itertools.combinations(flat, k):
            changed = {g: dict(c) for g, c in cands.items()}
            for g, key in chosen:
                changed[g][key] = 1.0 - changed[g][key]
            if verdict(rules, changed) != before:
                return k
    return None


@pytest.mark.parametrize("seed", range(8))
def test_the_whole_verdict_against_brute_force(seed: int) -> None:
    """Two suites; on the first, two rules on the same metric (they share items), on the second, a safety-style
    must-not-fall rule. A promotion flips with the easiest rule; a rejection needs every failing group fixed."""
    rng = random.Random(seed)
    n = 4
    a, b = binary_cases(rng, 2, n)
    task_floor = scores(Rule(suite="task", metric="m", min=rng.choice([0.25, 0.5, 0.75])), a[0], None, group=(1, "m"))
    task_drop = scores(Rule(suite="task", metric="m", max_drop=rng.choice([0.0, 0.25])), a[0], a[1], group=(1, "m"))
    safety = scores(Rule(suite="safety", metric="m", max_drop=0.0), b[0], b[1], group=(2, "m"))
    rules = [task_floor, task_drop, safety]
    passed = [passes(s, s.candidate) for s in rules]
    flips = [(f.items if (f := rule_flip(s)) else None) for s in rules]
    word = "promote" if all(passed) else "reject"
    assert decision_flips(list(zip(passed, rules)), flips, word) == brute_decision(rules), (a, b, passed)


def test_an_error_or_a_rule_without_items_has_no_count() -> None:
    s = scores(Rule(suite="s", metric="m", min=0.9), [1.0, 0.0])
    assert decision_flips([(False, s), (False, None)], [1, None], "reject") is None
    assert decision_flips([(True, s)], [1], "error") is None
    assert to_pass([s]) is not None and to_pass([s]).items == 1
