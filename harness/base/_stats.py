"""Statistics over per-item scores: Wilson intervals for proportions, paired bootstrap intervals, McNemar's
exact test, and Holm's step-down adjustment for when many arm pairs and metrics are compared at once."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


def mean_stderr(values: list[float]) -> tuple[float, float]:
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion successes/n (NaN, NaN when n is 0)."""
    if n == 0:
        return math.nan, math.nan
    from scipy.stats import binomtest  # imported on first use: scipy.stats alone takes about 0.5 s to import

    ci = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


@dataclass(frozen=True)
class PairedDelta:
    n: int
    mean_a: float
    mean_b: float
    delta: float  # mean(b) - mean(a)
    lo: float  # 95% paired-bootstrap interval on delta
    hi: float
    mcnemar_p: float | None  # binary scores only
    b_wins: int  # items where b > a
    a_wins: int  # items where a > b

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0


_BOOTSTRAP_CELLS = 2_000_000  # resampled indices held at once (16 MB)


def paired_bootstrap(
    a: list[float], b: list[float], *, resamples: int = 10_000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Delta mean(b) - mean(a) and its percentile interval, resampling items (pairs stay together)."""
    if len(a) != len(b):
        raise ValueError(f"paired scores need equal lengths ({len(a)} vs {len(b)})")
    if resamples < 1 or not 0 < confidence < 1:
        raise ValueError("resamples must be >= 1 and confidence in (0, 1)")
    diff = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    n = len(diff)
    if n == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    rows = max(1, _BOOTSTRAP_CELLS // n)  # draw in blocks: bounded memory, same stream as one big draw
    means = np.concatenate(
        [
            diff[rng.integers(0, n, size=(min(rows, resamples - start), n))].mean(axis=1)
            for start in range(0, resamples, rows)
        ]
    )
    alpha = (1 - confidence) / 2
    return float(diff.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def mcnemar_exact(a: list[float], b: list[float]) -> float:
    """Two-sided exact McNemar p-value for paired 0/1 outcomes (binomial test on discordant pairs)."""
    if len(a) != len(b):
        raise ValueError(f"paired scores need equal lengths ({len(a)} vs {len(b)})")
    a_only = sum(1 for x, y in zip(a, b) if x >= 0.5 > y)
    b_only = sum(1 for x, y in zip(a, b) if y >= 0.5 > x)
    if a_only + b_only == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(b_only, a_only + b_only, 0.5).pvalue)


def compare(a: list[float], b: list[float], *, binary: bool, seed: int = 0) -> PairedDelta:
    delta, lo, hi = paired_bootstrap(a, b, seed=seed)
    return PairedDelta(
        n=len(a),
        mean_a=float(np.mean(a)) if a else math.nan,
        mean_b=float(np.mean(b)) if b else math.nan,
        delta=delta,
        lo=lo,
        hi=hi,
        mcnemar_p=mcnemar_exact(a, b) if binary else None,
        b_wins=sum(1 for x, y in zip(a, b) if y > x),
        a_wins=sum(1 for x, y in zip(a, b) if x > y),
    )


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order (family-wise error control, no independence needed).

    Sorted ascending, p_(i) becomes max over j <= i of min(1, (m - j + 1) * p_(j)).
    """
    ps = [float(p) for p in pvalues]
    for p in ps:
        if not 0.0 <= p <= 1.0:  # also rejects NaN
            raise ValueError(f"p-values must lie in [0, 1], got {p}")
    m = len(ps)
    order = sorted(range(m), key=ps.__getitem__)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class AdjustedP:
    label: str  # e.g. "lora vs baseline: json_extract.exact_match"
    p: float
    p_holm: float
    alpha: float

    @property
    def significant(self) -> bool:
        return self.p_holm < self.alpha

    @property
    def significant_unadjusted(self) -> bool:
        return self.p < self.alpha


def holm_table(pvalues: Mapping[str, float | None], *, alpha: float = 0.05) -> list[AdjustedP]:
    """Holm-adjust a family of labelled p-values (None: no test, left out), smallest p first."""
    tested = {k: float(p) for k, p in pvalues.items() if p is not None}
    adjusted = holm(list(tested.values()))
    rows = [AdjustedP(k, p, q, alpha) for (k, p), q in zip(tested.items(), adjusted)]
    return sorted(rows, key=lambda r: (r.p, r.label))


def multiple_comparison_note(pvalues: Mapping[str, float | None], *, alpha: float = 0.05) -> str:
    """One paragraph for a report: how many of the tested differences survive Holm's adjustment."""
    rows = holm_table(pvalues, alpha=alpha)
    m = len(rows)
    if m == 0:
        return "No paired significance tests were run, so there is nothing to adjust for multiple comparisons."
    if m == 1:
        r = rows[0]
        return (
            f"One paired test ({r.label}, p={r.p:.3g}); with a single comparison no multiple-comparison "
            "adjustment is needed."
        )
    kept = [r for r in rows if r.significant]
    lost = [r for r in rows if r.significant_unadjusted and not r.significant]
    text = (
        f"{m} paired tests were run across arm pairs and metrics, so some small p-values are expected by "
        f"chance. After Holm-Bonferroni adjustment (family-wise alpha={alpha:g}), {len(kept)} of {m} "
        f"remain significant"
    )
    text += ": " + "; ".join(f"{r.label} (p={r.p:.3g}, adjusted {r.p_holm:.3g})" for r in kept) + "." if kept else "."
    if lost:
        text += (
            f" {len(lost)} {'is' if len(lost) == 1 else 'are'} significant only before adjustment: "
            + "; ".join(f"{r.label} (p={r.p:.3g}, adjusted {r.p_holm:.3g})" for r in lost)
            + "."
        )
    return text
