"""Item flips between two models on one suite: what the candidate newly gets wrong, and newly gets right.

For capability retention the base model is the reference: a tuned model may gain on its task and
still lose items the base answered. A net delta hides that; the flip lists show it item by item.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Flips:
    lost: list[str]  # right on the baseline, wrong on the candidate (regressions)
    gained: list[str]  # wrong on the baseline, right on the candidate
    kept: list[str]  # right on both
    never: list[str]  # wrong on both
    missing: list[str] = field(default_factory=list)  # scored on one side only, or a failed (None) score
    threshold: float = 0.5

    @property
    def n(self) -> int:
        """Items scored on both sides."""
        return len(self.lost) + len(self.gained) + len(self.kept) + len(self.never)

    @property
    def net(self) -> int:
        return len(self.gained) - len(self.lost)

    def summary(self) -> str:
        text = (
            f"{self.n} paired items: {len(self.lost)} lost (right → wrong), {len(self.gained)} gained "
            f"(wrong → right), {len(self.kept)} right on both, {len(self.never)} wrong on both"
        )
        if self.missing:
            text += f"; {len(self.missing)} not scored on both sides"
        return text


def _sort_key(item_id: str) -> tuple[int, Any]:
    return (0, int(item_id)) if item_id.isdigit() else (1, item_id)


def flips(
    baseline: Mapping[str, float | None], candidate: Mapping[str, float | None], *, threshold: float = 0.5
) -> Flips:
    """Compare two per-item score maps (item id -> score); a score >= threshold counts as right."""
    lost, gained, kept, never, missing = [], [], [], [], []
    for item_id in sorted(set(baseline) | set(candidate), key=_sort_key):
        a, b = baseline.get(item_id), candidate.get(item_id)
        if a is None or b is None:
            missing.append(item_id)
            continue
        was, now = a >= threshold, b >= threshold
        (kept if was and now else lost if was else gained if now else never).append(item_id)
    return Flips(lost, gained, kept, never, missing, threshold)


def trial_flips(
    store: Any, baseline_trial_id: int, candidate_trial_id: int, suite: str, metric: str, *, threshold: float = 0.5
) -> Flips:
    """Flips between two trials' latest evaluations of `suite` on `metric`, read from the store.

    Raises ValueError when either trial has no evaluation of the suite or the suite versions differ
    (items of different versions are not the same questions).
    """
    evals = []
    for trial_id in (baseline_trial_id, candidate_trial_id):
        found = [(ev, row) for ev, row in store.evaluations(trial_id) if row.name == suite]
        if not found:
            raise ValueError(f"trial {trial_id} has no evaluation of suite '{suite}'")
        evals.append(max(found, key=lambda pair: pair[0].id))
    (base_ev, base_suite), (cand_ev, cand_suite) = evals
    if base_suite.version != cand_suite.version:
        raise ValueError(
            f"suite '{suite}' versions differ ({base_suite.version} vs {cand_suite.version}); "
            "re-score both trials on the same version"
        )
    return flips(store.item_scores(base_ev.id, metric), store.item_scores(cand_ev.id, metric), threshold=threshold)
