"""What scoring one model on one suite produces: per-item results and the suite's metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from harness.base._stats import mean_stderr
from harness.evaluation._suite import Suite
from harness.scorers import _registry as scorers
from harness.scorers._registry import MetricKind

# Turns an item's chat messages into the messages an arm actually sends (system prompt, shots, context).
# A shaper may also have `many(chats)`, shaping a whole suite at once (retrieval embeds every question in batches).
Shaper = Callable[[list[dict[str, str]]], list[dict[str, str]]]


def shape_all(shaper: Shaper | None, chats: list[list[dict[str, str]]]) -> list[list[dict[str, str]]]:
    """Every item's messages as the arm sends them, through the shaper's batched `many` where it has one."""
    if shaper is None:
        return chats
    many = getattr(shaper, "many", None)
    return many(chats) if callable(many) else [shaper(chat) for chat in chats]


@dataclass
class ItemResult:
    item_id: str
    prompt: str
    output: str
    scores: dict[str, float | None]  # None: the scorer failed on this item (e.g. a judge call)
    details: dict[str, str] = field(default_factory=dict)  # per metric, e.g. the judge's reason


@dataclass
class SuiteResult:
    suite: Suite
    items: list[ItemResult]
    seconds: float
    metrics: dict[str, tuple[float, float, int]] = field(default_factory=dict)  # name -> (mean, stderr, n)
    kinds: dict[str, MetricKind] = field(default_factory=dict)  # name -> direction and 0/1-ness, stored with it
    corpus: dict[str, float] = field(default_factory=dict)  # corpus-level metrics: name -> the suite's value
    numerics: dict[str, str] | None = None  # what the scores' bits depend on (`harness.model._numerics.record`)

    def __post_init__(self) -> None:
        for spec in self.suite.spec.scorers:
            self.kinds.setdefault(spec if isinstance(spec, str) else spec.metric, scorers.kind(spec))
        for name in self.suite.scorer_names:
            if name in self.corpus:  # one value for the suite, over every item; no per-item spread to estimate
                self.metrics[name] = (self.corpus[name], 0.0, len(self.items))
                continue
            values = [v for r in self.items if (v := r.scores.get(name)) is not None]
            if values:  # n counts the items that got a score; failed ones are left out, never zeroed
                mean, se = mean_stderr(values)
                self.metrics[name] = (mean, se, len(values))
