"""Paired statistics against known values: McNemar vs scipy's binomial test, bootstrap coverage, Holm by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from harness.analysis import flips
from harness.base import _stats as stats
from harness.base import (
    compare,
    holm,
    holm_table,
    mcnemar_exact,
    multiple_comparison_note,
    paired_bootstrap,
    wilson,
)


def table(both: int, a_only: int, b_only: int, neither: int) -> tuple[list[float], list[float]]:
    """Paired 0/1 outcomes from a 2x2 table (a right & b right, a only, b only, neither)."""
    a = [1.0] * both + [1.0] * a_only + [0.0] * b_only + [0.0] * neither
    b = [1.0] * both + [0.0] * a_only + [1.0] * b_only + [0.0] * neither
    return a, b


# --- McNemar ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "both,a_only,b_only,neither", [(10, 8, 2, 5), (0, 0, 7, 0), (30, 3, 3, 30), (5, 1, 12, 2), (100, 40, 20, 9)]
)
def test_mcnemar_is_the_exact_binomial_test_on_discordant_pairs(
    both: int, a_only: int, b_only: int, neither: int
) -> None:
    a, b = table(both, a_only, b_only, neither)
    expected = binomtest(b_only, a_only + b_only, 0.5, alternative="two-sided").pvalue
    assert mcnemar_exact(a, b) == pytest.approx(expected, rel=1e-12)
    assert mcnemar_exact(b, a) == pytest.approx(expected, rel=1e-12)  # symmetric


def test_mcnemar_known_values_by_hand() -> None:
    # 5 discordant pairs all favouring b: two-sided p = 2 * (1/2)^5
    assert mcnemar_exact(*table(3, 0, 5, 2)) == pytest.approx(2 / 32)
    # 1 vs 3 discordant: P(X<=1) for Binomial(4, .5) = 5/16, doubled
    assert mcnemar_exact(*table(0, 3, 1, 0)) == pytest.approx(10 / 16)
    assert mcnemar_exact(*table(4, 0, 0, 4)) == 1.0  # no discordant pairs
    assert mcnemar_exact([], []) == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact([1.0], [1.0, 0.0])


# --- paired bootstrap -----------------------------------------------------------------------------


def test_bootstrap_interval_covers_the_known_delta() -> None:
    rng = np.random.default_rng(7)
    a = rng.normal(0.5, 0.2, size=400)
    noise = rng.normal(0, 0.05, size=400)
    b = a + 0.1 + (noise - noise.mean())  # the paired delta is exactly 0.1 in this sample
    delta, lo, hi = paired_bootstrap(list(a), list(b), resamples=4000)
    assert delta == pytest.approx(0.1)
    assert lo < 0.1 < hi and lo > 0  # covers the truth and excludes zero
    assert hi - lo < 0.02  # and is about ±1.96 * 0.05 / sqrt(400) wide
    assert (hi - lo) / 2 == pytest.approx(1.96 * 0.05 / math.sqrt(400), rel=0.15)


def test_bootstrap_coverage_rate_is_near_nominal() -> None:
    """Over many synthetic data sets, the 95% interval covers the true delta about 95% of the time."""
    rng = np.random.default_rng(11)
    covered = 0
    for i in range(200):
        a = rng.binomial(1, 0.6, size=60).astype(float)
        flip = rng.random(60) < 0.2
        b = np.where(flip, 1 - a, a)  # E[b - a] = 0.2 * (1 - 2 * 0.6) = -0.04
        _, lo, hi = paired_bootstrap(list(a), list(b), resamples=1000, seed=i)
        covered += lo <= -0.04 <= hi
    assert 0.88 <= covered / 200 <= 0.99


def test_bootstrap_degenerate_cases() -> None:
    assert paired_bootstrap([0.3] * 10, [0.3] * 10) == (0.0, 0.0, 0.0)  # all equal
    assert paired_bootstrap([1.0] * 5, [0.0] * 5) == (-1.0, -1.0, -1.0)  # every item lost
    assert paired_bootstrap([0.2], [0.7]) == pytest.approx((0.5, 0.5, 0.5))  # n = 1: no spread to resample
    assert all(math.isnan(x) for x in paired_bootstrap([], []))
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [])
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [0.0], confidence=1.5)


def test_bootstrap_is_deterministic_per_seed() -> None:
    rng = np.random.default_rng(3)
    a, b = list(rng.random(50)), list(rng.random(50))
    assert paired_bootstrap(a, b, seed=5) == paired_bootstrap(a, b, seed=5)
    assert paired_bootstrap(a, b, seed=5) != paired_bootstrap(a, b, seed=6)


def test_bootstrap_blocks_give_the_same_result_as_one_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    a, b = list(rng.random(300)), list(rng.random(300))
    whole = paired_bootstrap(a, b, resamples=2000, seed=1)
    monkeypatch.setattr(stats, "_BOOTSTRAP_CELLS", 300 * 7)  # blocks of 7 resamples
    assert paired_bootstrap(a, b, resamples=2000, seed=1) == whole


def test_compare_packs_everything() -> None:
    a, b = table(10, 2, 6, 2)
    result = compare(a, b, binary=True)
    assert (result.n, result.b_wins, result.a_wins) == (20, 6, 2)
    assert result.mean_a == pytest.approx(12 / 20) and result.mean_b == pytest.approx(16 / 20)
    assert result.delta == pytest.approx(0.2)
    assert result.mcnemar_p == pytest.approx(binomtest(6, 8, 0.5).pvalue)
    assert compare(a, b, binary=False).mcnemar_p is None
    empty = compare([], [], binary=True)
    assert empty.n == 0 and math.isnan(empty.delta) and math.isnan(empty.mean_a) and empty.mcnemar_p == 1.0


def test_wilson_matches_the_closed_form() -> None:
    z = 1.959963984540054
    for k, n in ((26, 40), (0, 10), (10, 10), (3, 7)):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        lo, hi = wilson(k, n)
        assert lo == pytest.approx(max(0.0, centre - half), abs=1e-9) and hi == pytest.approx(
            min(1.0, centre + half), abs=1e-9
        )
    assert all(math.isnan(x) for x in wilson(0, 0))


def test_mean_stderr() -> None:
    assert stats.mean_stderr([1.0, 0.0, 1.0, 0.0]) == pytest.approx((0.5, math.sqrt(1 / 3) / 2))
    assert stats.mean_stderr([0.7]) == (0.7, 0.0)
    assert all(math.isnan(x) for x in stats.mean_stderr([]))


# --- Holm -----------------------------------------------------------------------------------------


def test_holm_matches_hand_computation() -> None:
    # sorted: .01*4=.04, .02*3=.06, .03*2=.06 (monotone), .04*1=.04 -> max(.06, .04) = .06
    assert holm([0.04, 0.01, 0.03, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    # capped at 1, and ties
    assert holm([0.5, 0.5, 0.001]) == pytest.approx([1.0, 1.0, 0.003])
    assert holm([0.2]) == [0.2]
    assert holm([]) == []
    with pytest.raises(ValueError):
        holm([0.1, float("nan")])
    with pytest.raises(ValueError):
        holm([1.2])


def test_holm_agrees_with_the_step_down_rule() -> None:
    """Reject H_(i) while p_(i) <= alpha / (m - i + 1): the same set as adjusted p <= alpha."""
    rng = np.random.default_rng(2)
    for _ in range(50):
        ps = list(rng.random(8) ** 3)
        order = sorted(range(8), key=ps.__getitem__)
        rejected = set()
        for rank, i in enumerate(order):
            if ps[i] > 0.05 / (8 - rank):
                break
            rejected.add(i)
        assert {i for i, q in enumerate(holm(ps)) if q <= 0.05} == rejected


def test_holm_table_and_note() -> None:
    family = {
        "lora: json_extract.exact_match": 0.001,
        "lora: arithmetic.numeric": 0.02,
        "dora: json_extract.exact_match": 0.04,
        "dora: arithmetic.numeric": 0.6,
        "rouge (no test)": None,
    }
    rows = holm_table(family)
    assert [r.label for r in rows] == [
        "lora: json_extract.exact_match",
        "lora: arithmetic.numeric",
        "dora: json_extract.exact_match",
        "dora: arithmetic.numeric",
    ]
    assert [r.p_holm for r in rows] == pytest.approx([0.004, 0.06, 0.08, 0.6])
    assert [r.significant for r in rows] == [True, False, False, False]
    note = multiple_comparison_note(family)
    assert note.startswith("4 paired tests")
    assert "1 of 4 remain significant: lora: json_extract.exact_match (p=0.001, adjusted 0.004)" in note
    assert "2 are significant only before adjustment" in note
    assert "one paired test" in multiple_comparison_note({"x": 0.03}).lower()
    assert "nothing to adjust" in multiple_comparison_note({"x": None})


# --- flips ----------------------------------------------------------------------------------------


def test_flips_lists_lost_and_gained_items() -> None:
    base = {"1": 1.0, "2": 1.0, "3": 0.0, "4": 0.0, "10": 1.0, "q": 0.5, "gone": 1.0, "fail": None}
    cand = {"1": 1.0, "2": 0.0, "3": 1.0, "4": 0.0, "10": 0.0, "q": 0.49, "new": 1.0, "fail": 1.0}
    f = flips(base, cand)
    assert f.lost == ["2", "10", "q"]  # numeric ids in numeric order
    assert f.gained == ["3"]
    assert f.kept == ["1"] and f.never == ["4"]
    assert f.missing == ["fail", "gone", "new"]
    assert (f.n, f.net) == (6, -2)
    assert "3 lost (right → wrong), 1 gained" in f.summary() and "3 not scored on both sides" in f.summary()
    strict = flips(base, cand, threshold=0.6)
    assert "q" not in strict.lost and "q" in strict.never
    assert flips({}, {}).n == 0
