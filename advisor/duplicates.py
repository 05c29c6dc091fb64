"""Near-duplicate text: word-bigram Jaccard similarity, found with MinHash LSH from `datasketch` and confirmed
exactly. Bigrams rather than longer shingles because training rows are short: one changed word in a 25-word row
still counts as a near copy, while templated rows that differ in several slots do not."""

from __future__ import annotations

import re
import zlib
from functools import lru_cache
from typing import Any

NEAR_DUP_THRESHOLD = 0.8
NUM_PERM = 128

_WORD = re.compile(r"\w+", re.UNICODE)


def normalize(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def shingles(text: str, n: int = 2) -> set[str]:
    words = normalize(text).split()
    if len(words) < n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


@lru_cache(maxsize=1)
def _permutations() -> Any:
    from datasketch import MinHash

    m = MinHash(num_perm=NUM_PERM, seed=1)
    return m.scheme, m.permutations


def _minhash(sh: set[str]) -> Any:
    """MinHash of a shingle set; CRC32 as the base hash and permutations made once (both fast)."""
    from datasketch import MinHash

    scheme, permutations = _permutations()
    m = MinHash(num_perm=NUM_PERM, hashfunc=zlib.crc32, permutations=permutations, scheme=scheme)
    m.update_batch([s.encode("utf-8") for s in sh])
    return m


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


def near_duplicate_pairs(
    texts_a: list[str], texts_b: list[str] | None = None, threshold: float = NEAR_DUP_THRESHOLD
) -> list[tuple[int, int, float]]:
    """Index pairs whose word-bigram Jaccard similarity is >= threshold, found with MinHash LSH and
    then confirmed on the exact shingle sets. Within one list (texts_b None) pairs are i < j;
    identical normalised texts are left out (they are exact duplicates)."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold * 0.9, num_perm=NUM_PERM)  # looser index, exact check after
    sh_a = [shingles(t) for t in texts_a]
    mh_a = [_minhash(sh) if sh else None for sh in sh_a]
    for i, mh in enumerate(mh_a):
        if mh is not None:
            lsh.insert(i, mh)
    queries = sh_a if texts_b is None else [shingles(t) for t in texts_b]
    mh_q = mh_a if texts_b is None else [_minhash(sh) if sh else None for sh in queries]
    norm_a = [normalize(t) for t in texts_a]
    norm_q = norm_a if texts_b is None else [normalize(t) for t in texts_b]
    pairs = []
    for j, (sh, mh) in enumerate(zip(queries, mh_q)):
        if mh is None:
            continue
        for i in lsh.query(mh):
            if (texts_b is None and i >= j) or norm_a[i] == norm_q[j]:
                continue
            sim = _jaccard(sh_a[i], sh)
            if sim >= threshold:
                pairs.append((i, j, round(sim, 3)))
    return sorted(pairs)
