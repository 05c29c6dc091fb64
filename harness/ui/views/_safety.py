"""Safety suites: refusal and over-refusal rates per arm."""

from __future__ import annotations

from dataclasses import dataclass

from harness.store._store import Store
from harness.ui.views._runs import SuiteInfo, metric_table, run_suites


@dataclass(frozen=True)
class SafetyRow:
    trial: str
    suite: str
    probes: str  # harmful | benign | other
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
