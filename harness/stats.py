"""Paired statistics over per-item scores: bootstrap intervals and McNemar's exact test."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest


def mean_stderr(values: list[float]) -> tuple[float, float]:
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0


@dataclass(frozen=True)
class PairedDelta:
    n: int
    mean_a: float
    mean_b: float
    delta: float          # mean(b) - mean(a)
    lo: float             # 95% paired-bootstrap interval on delta
    hi: float
    mcnemar_p: float | None  # binary scores only
    b_wins: int           # items where b > a
    a_wins: int           # items where a > b

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0


def paired_bootstrap(a: list[float], b: list[float], *, resamples: int = 10_000, seed: int = 0,
                     confidence: float = 0.95) -> tuple[float, float, float]:
    """Delta mean(b) - mean(a) and its percentile interval, resampling items (pairs stay together)."""
    if len(a) != len(b):
        raise ValueError(f"paired scores need equal lengths ({len(a)} vs {len(b)})")
    diff = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    n = len(diff)
    if n == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    means = diff[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    return float(diff.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def mcnemar_exact(a: list[float], b: list[float]) -> float:
    """Two-sided exact McNemar p-value for paired 0/1 outcomes (binomial test on discordant pairs)."""
    a_only = sum(1 for x, y in zip(a, b) if x >= 0.5 > y)
    b_only = sum(1 for x, y in zip(a, b) if y >= 0.5 > x)
    if a_only + b_only == 0:
        return 1.0
    return float(binomtest(b_only, a_only + b_only, 0.5).pvalue)


def compare(a: list[float], b: list[float], *, binary: bool, seed: int = 0) -> PairedDelta:
    delta, lo, hi = paired_bootstrap(a, b, seed=seed)
    return PairedDelta(
        n=len(a), mean_a=float(np.mean(a)) if a else math.nan, mean_b=float(np.mean(b)) if b else math.nan,
        delta=delta, lo=lo, hi=hi, mcnemar_p=mcnemar_exact(a, b) if binary else None,
        b_wins=sum(1 for x, y in zip(a, b) if y > x), a_wins=sum(1 for x, y in zip(a, b) if x > y))
