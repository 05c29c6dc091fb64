"""The numerics a score was computed under, as the gate reads and compares them.

Each evaluation row carries a flat record (`evaluations.numerics`: dtype, invariant mode, engine, library and
kernel versions, GPU name, ...), written by the evaluation that produced the scores. Rows written before the
store kept it have none: every key of theirs reads as "unknown". Two evaluations were scored under the same
numerics when both records are known and equal on every key either has.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

UNKNOWN = "unknown"


def numerics_of(evaluation: Any) -> dict[str, str]:
    """An evaluation row's record as text values; {} when it has none (an older row: "unknown")."""
    raw = getattr(evaluation, "numerics", None)
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): str(v) for k, v in raw.items()}


def merged(records: Iterable[Mapping[str, str]], keys: Iterable[str] | None = None) -> dict[str, str]:
    """One side's records (one per suite it was judged on) as one, over `keys` (default: every key they have):
    a key's value, or its values joined with " | " where suites differ; "unknown" where a record lacks it.
    No key at all: {"numerics": "unknown"}."""
    records = list(records)
    if not records:
        return {}
    keys = sorted(set(keys) if keys is not None else {k for r in records for k in r})
    if not keys:
        return {"numerics": UNKNOWN}
    return {k: " | ".join(sorted({r.get(k, UNKNOWN) for r in records})) for k in keys}


def differing(candidate: Mapping[str, str], baseline: Mapping[str, str]) -> list[str]:
    """The keys on which two evaluations' records differ ("numerics" alone when either is unknown)."""
    if not candidate or not baseline:
        return [] if not candidate and not baseline else ["numerics"]
    return sorted(k for k in set(candidate) | set(baseline) if candidate.get(k, UNKNOWN) != baseline.get(k, UNKNOWN))


def describe(keys: Iterable[str], candidate: Mapping[str, str], baseline: Mapping[str, str]) -> str:
    """`dtype (baseline float32, candidate bfloat16), gpu (...)`: the differing keys with both values."""
    return ", ".join(
        f"{k} (baseline {baseline.get(k, UNKNOWN) if baseline else UNKNOWN}, candidate "
        f"{candidate.get(k, UNKNOWN) if candidate else UNKNOWN})"
        for k in keys
    )


def recorded(numerics: Mapping[str, Mapping[str, str]]) -> bool:
    """Whether a decision's numerics (side -> record) know anything beyond "unknown"."""
    return any(v != UNKNOWN for record in numerics.values() for v in record.values())
