"""Audit a training JSONL file before anyone trains on it.

Reports row count, token lengths against the context length, exact duplicates (ignoring case,
punctuation and spacing) and near duplicates (word-bigram Jaccard >= 0.8, found with MinHash LSH
from `datasketch` and confirmed exactly; bigrams rather than longer shingles because rows are
short: one changed word in a 25-word row still counts as a near copy, while templated rows that
differ in several slots do not), train/test overlap (contamination), personal data and secrets, and label
balance when the outputs look like labels.

Rows may be chat `{"messages": [...]}`, alpaca `{"instruction", "input", "output"}`,
`{"prompt", "completion"}` or preference `{"prompt", "chosen", "rejected"}`. The reader is
deliberately tolerant: a row it cannot read is counted in `bad_rows` rather than stopping the
audit (the harness's strict loader, `harness.data.load_rows`, rejects such files at training time).

PII detection uses regular expressions plus a Luhn check, not a library. Checked on PyPI:
presidio-analyzer needs a spaCy language model downloaded at run time (it fails offline), and
scrubadub installs and runs offline but found neither card numbers in the usual 4x4 layouts nor
API keys, and pulls in scikit-learn, textblob and faker. The patterns here cover emails, phone
numbers (10-15 digits in common layouts), payment card numbers (13-19 digits that pass Luhn),
IPv4 addresses (not loopback/unspecified), AWS access key ids and secret assignments, `sk-` API
keys, GitHub and Slack tokens, private key blocks and `password=`/`api_key:`-style assignments.
Matched values are redacted in the report.
"""
from __future__ import annotations

import json
import math
import re
import zlib
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table

NEAR_DUP_THRESHOLD = 0.8
NUM_PERM = 128
WORDS_TO_TOKENS = 1.33      # rule of thumb for English: ~0.75 words per token
MAX_LISTED = 20


# --- reading rows -------------------------------------------------------------------------------

class Row(BaseModel):
    line: int
    format: str
    prompt: str          # the input side: what a test item would share with a training row
    output: str | None   # the target side (None for preference rows)
    text: str            # everything, for lengths, duplicates and PII


def _join(*parts: Any) -> str:
    return "\n".join(str(p) for p in parts if p not in (None, ""))


def row_from_object(obj: dict[str, Any], line: int) -> Row | None:
    if isinstance(obj.get("messages"), list):
        msgs = [m for m in obj["messages"] if isinstance(m, dict)]
        contents = [str(m.get("content", "")) for m in msgs]
        last_is_answer = bool(msgs) and msgs[-1].get("role") == "assistant"
        prompt_msgs = msgs[:-1] if last_is_answer else msgs
        return Row(line=line, format="messages", prompt=_join(*(m.get("content") for m in prompt_msgs)),
                   output=contents[-1] if last_is_answer else None, text=_join(*contents))
    if "chosen" in obj and "rejected" in obj:
        return Row(line=line, format="preference", prompt=str(obj.get("prompt", "")), output=None,
                   text=_join(obj.get("prompt"), obj.get("chosen"), obj.get("rejected")))
    if "instruction" in obj:
        prompt = _join(obj.get("instruction"), obj.get("input"))
        return Row(line=line, format="alpaca", prompt=prompt, output=str(obj.get("output", "")),
                   text=_join(prompt, obj.get("output")))
    if "prompt" in obj or "completion" in obj:
        return Row(line=line, format="prompt_completion", prompt=str(obj.get("prompt", "")),
                   output=str(obj.get("completion", "")), text=_join(obj.get("prompt"), obj.get("completion")))
    return None


def read_rows(path: str | Path) -> tuple[list[Row], list[tuple[int, str]]]:
    """(rows, bad rows as (line, why)) from a JSONL file in any of the four formats."""
    rows, bad = [], []
    with Path(path).open(encoding="utf-8", errors="replace") as f:
        for line, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                bad.append((line, f"invalid JSON: {exc.msg}"))
                continue
            row = row_from_object(obj, line) if isinstance(obj, dict) else None
            if row is None:
                bad.append((line, "not a messages / instruction / prompt-completion / preference row"))
            else:
                rows.append(row)
    return rows, bad


# --- report models ------------------------------------------------------------------------------

class TokenStats(BaseModel):
    counter: str
    exact: bool
    p50: int
    p90: int
    p99: int
    max: int
    mean: float
    context_len: int
    over_context: int
    over_context_fraction: float


class NearPair(BaseModel):
    line_a: int
    line_b: int
    jaccard: float


class Overlap(BaseModel):
    test_path: str
    test_rows: int
    exact: list[tuple[int, int]] = Field(default_factory=list)   # (train line, test line)
    near: list[NearPair] = Field(default_factory=list)            # line_a = train, line_b = test
    contaminated_test_rows: int = 0
    contamination_fraction: float = 0.0


class PiiFinding(BaseModel):
    line: int
    kind: str
    redacted: str


class PiiReport(BaseModel):
    method: str = "regex + Luhn check (see advisor.audit docstring)"
    counts: dict[str, int] = Field(default_factory=dict)
    rows_with_pii: int = 0
    findings: list[PiiFinding] = Field(default_factory=list)


class LabelBalance(BaseModel):
    distinct: int
    counts: dict[str, int]
    majority_share: float
    minority_share: float
    imbalance_ratio: float


class AuditReport(BaseModel):
    path: str
    format: str
    rows: int
    bad_rows: list[tuple[int, str]] = Field(default_factory=list)
    unique_rows: int
    tokens: TokenStats | None
    exact_duplicate_groups: list[list[int]] = Field(default_factory=list)
    exact_duplicate_rows: int = 0        # copies beyond the first
    near_duplicates: list[NearPair] = Field(default_factory=list)
    near_duplicate_rows: int = 0         # rows that are a near copy of an earlier row
    overlap: Overlap | None = None
    pii: PiiReport
    labels: LabelBalance | None = None

    @property
    def duplicate_fraction(self) -> float:
        return (self.exact_duplicate_rows + self.near_duplicate_rows) / self.rows if self.rows else 0.0

    def facts(self) -> dict[str, Any]:
        """The audit as facts for the rule engine (see advisor.rules.FACTS)."""
        return {"audited": True, "audit_rows": self.rows, "audit_unique_rows": self.unique_rows,
                "duplicate_fraction": round(self.duplicate_fraction, 4),
                "contamination_fraction": self.overlap.contamination_fraction if self.overlap else None,
                "pii_rows": self.pii.rows_with_pii,
                "over_context_fraction": self.tokens.over_context_fraction if self.tokens else None,
                "minority_class_share": self.labels.minority_share if self.labels else None}

    def render(self, console: Console) -> None:
        table = Table(title=f"Dataset audit: {self.path}", title_justify="left", show_header=False)
        table.add_column("check")
        table.add_column("result")
        table.add_row("rows", f"{self.rows} ({self.format}); {self.unique_rows} unique"
                      + (f"; {len(self.bad_rows)} unreadable" if self.bad_rows else ""))
        if self.tokens:
            t = self.tokens
            table.add_row("tokens", f"p50 {t.p50}, p90 {t.p90}, p99 {t.p99}, max {t.max} ({t.counter}); "
                          f"{t.over_context} over context {t.context_len}")
        table.add_row("exact duplicates", f"{self.exact_duplicate_rows} extra copies in "
                      f"{len(self.exact_duplicate_groups)} groups")
        table.add_row("near duplicates", f"{self.near_duplicate_rows} rows (Jaccard >= {NEAR_DUP_THRESHOLD})")
        if self.overlap:
            o = self.overlap
            table.add_row("train/test overlap", f"{o.contaminated_test_rows}/{o.test_rows} test rows "
                          f"({o.contamination_fraction:.1%}): {len(o.exact)} exact, {len(o.near)} near")
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.pii.counts.items())) or "none found"
        table.add_row("PII / secrets", f"{self.pii.rows_with_pii} rows: {counts}")
        if self.labels:
            lb = self.labels
            table.add_row("labels", f"{lb.distinct} classes; rarest {lb.minority_share:.1%}, "
                          f"commonest {lb.majority_share:.1%}")
        console.print(table)


# --- token lengths ------------------------------------------------------------------------------

def _percentile(sorted_values: list[int], q: float) -> int:
    if not sorted_values:
        return 0
    idx = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[idx]


def _load_tokenizer(tokenizer: Any) -> Any:
    if isinstance(tokenizer, (str, Path)):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
    return tokenizer


def token_stats(texts: list[str], tokenizer: Any = None, context_len: int = 2048) -> TokenStats:
    tok = _load_tokenizer(tokenizer)
    if tok is not None:
        lengths = [len(ids) for ids in tok(texts, add_special_tokens=True)["input_ids"]]
        name = getattr(tok, "name_or_path", "") or type(tok).__name__
        counter, exact = f"tokenizer {name}", True
    else:
        lengths = [math.ceil(len(t.split()) * WORDS_TO_TOKENS) for t in texts]
        counter, exact = f"estimate: whitespace words x {WORDS_TO_TOKENS} (pass a tokenizer for exact counts)", False
    ordered = sorted(lengths)
    over = sum(1 for n in lengths if n > context_len)
    return TokenStats(counter=counter, exact=exact, p50=_percentile(ordered, 0.5), p90=_percentile(ordered, 0.9),
                      p99=_percentile(ordered, 0.99), max=ordered[-1] if ordered else 0,
                      mean=round(sum(lengths) / len(lengths), 1) if lengths else 0.0, context_len=context_len,
                      over_context=over, over_context_fraction=round(over / len(lengths), 4) if lengths else 0.0)


# --- duplicates ---------------------------------------------------------------------------------

_WORD = re.compile(r"\w+", re.UNICODE)


def normalize(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def shingles(text: str, n: int = 2) -> set[str]:
    words = normalize(text).split()
    if len(words) < n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


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


def near_duplicate_pairs(texts_a: list[str], texts_b: list[str] | None = None,
                         threshold: float = NEAR_DUP_THRESHOLD) -> list[tuple[int, int, float]]:
    """Index pairs whose word-bigram Jaccard similarity is >= threshold, found with MinHash LSH and
    then confirmed on the exact shingle sets. Within one list (texts_b None) pairs are i < j;
    identical normalised texts are left out (they are exact duplicates)."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold * 0.9, num_perm=NUM_PERM)   # looser index, exact check after
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


# --- PII ----------------------------------------------------------------------------------------

_PII_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("private_key", re.compile(r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY(?: BLOCK)?-----")),
    ("aws_access_key", re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b")),
    ("aws_secret_key", re.compile(r"(?i)aws_?secret_?(?:access_?)?key\W{0,3}[:=]\s*['\"]?[A-Za-z0-9/+=]{40}")),
    ("api_key", re.compile(r"\bsk-(?:proj-|ant-|live-|test-)?[A-Za-z0-9_\-]{20,}")),
    ("github_token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b")),
    ("slack_token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("secret_assignment", re.compile(
        r"(?i)\b(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token)\b\s*[:=]\s*['\"]?[^\s'\",;]{8,}")),
    ("email", re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b")),
    ("credit_card", re.compile(r"(?<![\d\-])(?:\d[ \-]?){12,18}\d(?![\d\-])")),
    ("ipv4", re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.])")),
    ("phone", re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .\-]?)?(?:\(\d{1,4}\)[ .\-]?|\d{1,4}[ .\-])(?:\d{2,4}[ .\-]){1,3}\d{2,4}(?![\w])")),
]


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum that every payment card number satisfies."""
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _accept(kind: str, match: str) -> bool:
    if kind == "credit_card":
        digits = re.sub(r"\D", "", match)
        return 13 <= len(digits) <= 19 and luhn_valid(digits)
    if kind == "phone":
        return 10 <= len(re.sub(r"\D", "", match)) <= 15
    if kind == "ipv4":
        return not (match.startswith("127.") or match == "0.0.0.0")
    return True


def _redact(kind: str, value: str) -> str:
    if kind == "email":
        user, _, domain = value.partition("@")
        return f"{user[:1]}***@{domain}"
    if kind in ("credit_card", "phone"):
        digits = re.sub(r"\D", "", value)
        return f"***{digits[-4:]}"
    return value[:4] + "***" if len(value) > 8 else "***"


def find_pii(text: str) -> list[tuple[str, str]]:
    """(kind, matched text) for each finding; earlier patterns claim their span first, so a card
    number is not also counted as a phone number."""
    found = []
    for kind, pattern in _PII_PATTERNS:
        for m in pattern.finditer(text):
            if _accept(kind, m.group()):
                found.append((kind, m.group()))
                text = text[:m.start()] + " " * (m.end() - m.start()) + text[m.end():]
    return found


def pii_report(rows: list[Row]) -> PiiReport:
    report = PiiReport()
    counts: Counter[str] = Counter()
    for row in rows:
        hits = find_pii(row.text)
        if hits:
            report.rows_with_pii += 1
        for kind, value in hits:
            counts[kind] += 1
            if len(report.findings) < MAX_LISTED * 5:
                report.findings.append(PiiFinding(line=row.line, kind=kind, redacted=_redact(kind, value)))
    report.counts = dict(counts)
    return report


# --- labels -------------------------------------------------------------------------------------

def label_balance(outputs: list[str], max_classes: int = 20, max_words: int = 4) -> LabelBalance | None:
    """Class counts when the outputs look like labels: few distinct, short values that repeat."""
    values = [o.strip() for o in outputs]
    if len(values) < 10:
        return None
    counts = Counter(values)
    if len(counts) > max_classes or len(counts) > len(values) / 2:
        return None
    if any(len(v.split()) > max_words or len(v) > 40 for v in counts):
        return None
    n = len(values)
    most, least = counts.most_common()[0][1], counts.most_common()[-1][1]
    return LabelBalance(distinct=len(counts), counts=dict(counts.most_common()), majority_share=round(most / n, 4),
                        minority_share=round(least / n, 4), imbalance_ratio=round(most / least, 2))


# --- the audit ----------------------------------------------------------------------------------

def audit_dataset(train_path: str | Path, test_path: str | Path | None = None, tokenizer: Any = None,
                  context_len: int = 2048) -> AuditReport:
    """Audit a training JSONL (and its overlap with a test JSONL). `tokenizer` is a Hugging Face
    tokenizer object or a local tokenizer folder; without one, lengths are a word-count estimate."""
    train_path = Path(train_path)
    rows, bad = read_rows(train_path)
    formats = Counter(r.format for r in rows)
    fmt = formats.most_common(1)[0][0] if len(formats) == 1 else ("mixed" if formats else "unknown")

    by_text: dict[str, list[int]] = {}
    for r in rows:
        by_text.setdefault(normalize(r.text), []).append(r.line)
    groups = [lines for lines in by_text.values() if len(lines) > 1]
    firsts = {lines[0] for lines in by_text.values()}
    unique = [r for r in rows if r.line in firsts]

    near = [NearPair(line_a=unique[i].line, line_b=unique[j].line, jaccard=s)
            for i, j, s in near_duplicate_pairs([r.text for r in unique])]
    near_rows = len({p.line_b for p in near})

    overlap = None
    if test_path is not None:
        test_rows, _ = read_rows(test_path)
        train_prompts = {normalize(r.prompt): r.line for r in rows if r.prompt.strip()}
        exact = [(train_prompts[normalize(t.prompt)], t.line) for t in test_rows
                 if normalize(t.prompt) in train_prompts]
        near_pairs = [NearPair(line_a=rows[i].line, line_b=test_rows[j].line, jaccard=s)
                      for i, j, s in near_duplicate_pairs([r.prompt for r in rows], [t.prompt for t in test_rows])]
        contaminated = {t for _, t in exact} | {p.line_b for p in near_pairs}
        overlap = Overlap(test_path=str(test_path), test_rows=len(test_rows), exact=exact[:MAX_LISTED * 5],
                          near=near_pairs[:MAX_LISTED * 5], contaminated_test_rows=len(contaminated),
                          contamination_fraction=round(len(contaminated) / len(test_rows), 4) if test_rows else 0.0)

    outputs = [r.output for r in rows if r.output is not None]
    return AuditReport(
        path=str(train_path), format=fmt, rows=len(rows), bad_rows=bad[:MAX_LISTED * 5], unique_rows=len(unique),
        tokens=token_stats([r.text for r in rows], tokenizer, context_len) if rows else None,
        exact_duplicate_groups=groups[:MAX_LISTED * 5], exact_duplicate_rows=sum(len(g) - 1 for g in groups),
        near_duplicates=near[:MAX_LISTED * 5], near_duplicate_rows=near_rows, overlap=overlap,
        pii=pii_report(rows), labels=label_balance(outputs) if len(outputs) == len(rows) else None)
