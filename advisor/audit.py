"""Audit a training JSONL file before anyone trains on it.

Reports row count, token lengths against the context length, exact duplicates (ignoring case,
punctuation and spacing) and near duplicates (advisor.duplicates), train/test overlap (contamination),
personal data and secrets (advisor.pii, matched values redacted), and label balance when the outputs
look like labels.

Rows may be chat `{"messages": [...]}`, alpaca `{"instruction", "input", "output"}`,
`{"prompt", "completion"}` or preference `{"prompt", "chosen", "rejected"}`, one format per file. Files are
read with the reader `tunegate run` uses (`harness.base._data.load_rows`): bytes that are not UTF-8, a row that
is not JSON or not of the file's format, or a file with no rows is one error naming file, line and field (exit
2), never a silently skipped row or an empty audit.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from advisor.duplicates import NEAR_DUP_THRESHOLD, near_duplicate_pairs, normalize
from advisor.pii import find_pii, redact
from harness.base._data import load_rows, read_jsonl
from harness.base._errors import RowErrors, UserError, from_validation, printable
from harness.evaluation._suite import SuiteItem

WORDS_TO_TOKENS = 1.33  # rule of thumb for English: ~0.75 words per token
MAX_LISTED = 20


class Row(BaseModel):
    line: int
    format: str
    prompt: str  # the input side: what a test item would share with a training row
    output: str | None  # the target side (None for preference rows)
    text: str  # everything, for lengths, duplicates and PII


def _join(*parts: Any) -> str:
    return "\n".join(str(p) for p in parts if p not in (None, ""))


def row_from_object(obj: dict[str, Any], line: int) -> Row | None:
    if isinstance(obj.get("messages"), list):
        msgs = [m for m in obj["messages"] if isinstance(m, dict)]
        contents = [str(m.get("content", "")) for m in msgs]
        last_is_answer = bool(msgs) and msgs[-1].get("role") == "assistant"
        prompt_msgs = msgs[:-1] if last_is_answer else msgs
        return Row(
            line=line,
            format="messages",
            prompt=_join(*(m.get("content") for m in prompt_msgs)),
            output=contents[-1] if last_is_answer else None,
            text=_join(*contents),
        )
    if "chosen" in obj and "rejected" in obj:
        return Row(
            line=line,
            format="preference",
            prompt=str(obj.get("prompt", "")),
            output=None,
            text=_join(obj.get("prompt"), obj.get("chosen"), obj.get("rejected")),
        )
    if "instruction" in obj:
        prompt = _join(obj.get("instruction"), obj.get("input"))
        return Row(
            line=line,
            format="alpaca",
            prompt=prompt,
            output=str(obj.get("output", "")),
            text=_join(prompt, obj.get("output")),
        )
    if "prompt" in obj or "completion" in obj:
        return Row(
            line=line,
            format="prompt_completion",
            prompt=str(obj.get("prompt", "")),
            output=str(obj.get("completion", "")),
            text=_join(obj.get("prompt"), obj.get("completion")),
        )
    return None


def read_rows(path: str | Path) -> list[Row]:
    """The rows of a JSONL file in any of the four formats, read and validated as `tunegate run` reads them."""
    _, rows = load_rows(path)
    out = []
    for line, row in rows:
        found = row_from_object(row.model_dump(), line)
        assert found is not None, line  # load_rows validated the row as one of the four formats
        out.append(found)
    return out


def _is_suite_item(obj: dict[str, Any]) -> bool:
    """A suite item carries an `id` and an input but no training target (completion, output, chosen/rejected or a
    closing assistant message)."""
    messages = obj.get("messages")
    ends_with_answer = (
        isinstance(messages, list)
        and bool(messages)
        and isinstance(messages[-1], dict)
        and (messages[-1].get("role") == "assistant")
    )
    targets = ("completion", "output", "chosen", "rejected")
    return "id" in obj and not ends_with_answer and not any(k in obj for k in targets)


def read_test_rows(path: str | Path) -> list[Row]:
    """A held-out test file: training-format rows (read as `read_rows` does) or a suite's items (`id` with a
    `prompt` or `messages`, read and validated as `tunegate run` reads a suite's items.jsonl)."""
    rows = list(read_jsonl(path))
    if not rows:
        raise UserError("no rows", file=path)
    if not _is_suite_item(rows[0][1]):
        return read_rows(path)
    out = []
    bad = RowErrors()
    for line, obj in rows:
        try:
            item = SuiteItem.model_validate(obj)
        except ValidationError as exc:
            bad.add(from_validation(exc, path, line=line))
            continue
        prompt = "\n".join(m["content"] for m in item.chat() if m["role"] != "assistant")
        out.append(Row(line=line, format="suite_item", prompt=prompt, output=None, text=prompt))
    bad.raise_if_any()
    return out


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
    exact: list[tuple[int, int]] = Field(default_factory=list)  # (train line, test line)
    near: list[NearPair] = Field(default_factory=list)  # line_a = train, line_b = test
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
    unique_rows: int
    tokens: TokenStats | None
    exact_duplicate_groups: list[list[int]] = Field(default_factory=list)
    exact_duplicate_rows: int = 0  # copies beyond the first
    near_duplicates: list[NearPair] = Field(default_factory=list)
    near_duplicate_rows: int = 0  # rows that are a near copy of an earlier row
    overlap: Overlap | None = None
    pii: PiiReport
    labels: LabelBalance | None = None

    @property
    def duplicate_fraction(self) -> float:
        return (self.exact_duplicate_rows + self.near_duplicate_rows) / self.rows if self.rows else 0.0

    def facts(self) -> dict[str, Any]:
        """The audit as facts for the rule engine (see advisor._rulebook.FACTS)."""
        return {
            "audited": True,
            "audit_rows": self.rows,
            "audit_unique_rows": self.unique_rows,
            "duplicate_fraction": round(self.duplicate_fraction, 4),
            "contamination_fraction": self.overlap.contamination_fraction if self.overlap else None,
            "pii_rows": self.pii.rows_with_pii,
            "over_context_fraction": self.tokens.over_context_fraction if self.tokens else None,
            "minority_class_share": self.labels.minority_share if self.labels else None,
        }

    def render(self, console: Console) -> None:
        table = Table(title=f"Dataset audit: {escape(printable(self.path))}", title_justify="left", show_header=False)
        table.add_column("check")
        table.add_column("result")
        table.add_row("rows", f"{self.rows} ({self.format}); {self.unique_rows} unique")
        if self.tokens:
            t = self.tokens
            table.add_row(
                "tokens",
                f"p50 {t.p50}, p90 {t.p90}, p99 {t.p99}, max {t.max} ({t.counter}); "
                f"{t.over_context} over context {t.context_len}",
            )
        table.add_row(
            "exact duplicates", f"{self.exact_duplicate_rows} extra copies in {len(self.exact_duplicate_groups)} groups"
        )
        table.add_row("near duplicates", f"{self.near_duplicate_rows} rows (Jaccard >= {NEAR_DUP_THRESHOLD})")
        if self.overlap:
            o = self.overlap
            table.add_row(
                "train/test overlap",
                f"{o.contaminated_test_rows}/{o.test_rows} test rows "
                f"({o.contamination_fraction:.1%}): {len(o.exact)} exact, {len(o.near)} near",
            )
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.pii.counts.items())) or "none found"
        table.add_row("PII / secrets", f"{self.pii.rows_with_pii} rows: {counts}")
        if self.labels:
            lb = self.labels
            table.add_row(
                "labels", f"{lb.distinct} classes; rarest {lb.minority_share:.1%}, commonest {lb.majority_share:.1%}"
            )
        console.print(table)


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
    return TokenStats(
        counter=counter,
        exact=exact,
        p50=_percentile(ordered, 0.5),
        p90=_percentile(ordered, 0.9),
        p99=_percentile(ordered, 0.99),
        max=ordered[-1] if ordered else 0,
        mean=round(sum(lengths) / len(lengths), 1) if lengths else 0.0,
        context_len=context_len,
        over_context=over,
        over_context_fraction=round(over / len(lengths), 4) if lengths else 0.0,
    )


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
                report.findings.append(PiiFinding(line=row.line, kind=kind, redacted=redact(kind, value)))
    report.counts = dict(counts)
    return report


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
    return LabelBalance(
        distinct=len(counts),
        counts=dict(counts.most_common()),
        majority_share=round(most / n, 4),
        minority_share=round(least / n, 4),
        imbalance_ratio=round(most / least, 2),
    )


def audit_dataset(
    train_path: str | Path, test_path: str | Path | None = None, tokenizer: Any = None, context_len: int = 2048
) -> AuditReport:
    """Audit a training JSONL (and its overlap with a test JSONL). `tokenizer` is a Hugging Face
    tokenizer object or a local tokenizer folder; without one, lengths are a word-count estimate."""
    train_path = Path(train_path)
    rows = read_rows(train_path)
    formats = Counter(r.format for r in rows)
    fmt = formats.most_common(1)[0][0] if len(formats) == 1 else ("mixed" if formats else "unknown")

    by_text: dict[str, list[int]] = {}
    for r in rows:
        by_text.setdefault(normalize(r.text), []).append(r.line)
    groups = [lines for lines in by_text.values() if len(lines) > 1]
    firsts = {lines[0] for lines in by_text.values()}
    unique = [r for r in rows if r.line in firsts]

    near = [
        NearPair(line_a=unique[i].line, line_b=unique[j].line, jaccard=s)
        for i, j, s in near_duplicate_pairs([r.text for r in unique])
    ]
    near_rows = len({p.line_b for p in near})

    overlap = None
    if test_path is not None:
        test_rows = read_test_rows(test_path)
        train_prompts = {normalize(r.prompt): r.line for r in rows if r.prompt.strip()}
        exact = [
            (train_prompts[normalize(t.prompt)], t.line) for t in test_rows if normalize(t.prompt) in train_prompts
        ]
        near_pairs = [
            NearPair(line_a=rows[i].line, line_b=test_rows[j].line, jaccard=s)
            for i, j, s in near_duplicate_pairs([r.prompt for r in rows], [t.prompt for t in test_rows])
        ]
        contaminated = {t for _, t in exact} | {p.line_b for p in near_pairs}
        overlap = Overlap(
            test_path=str(test_path),
            test_rows=len(test_rows),
            exact=exact[: MAX_LISTED * 5],
            near=near_pairs[: MAX_LISTED * 5],
            contaminated_test_rows=len(contaminated),
            contamination_fraction=round(len(contaminated) / len(test_rows), 4) if test_rows else 0.0,
        )

    outputs = [r.output for r in rows if r.output is not None]
    return AuditReport(
        path=str(train_path),
        format=fmt,
        rows=len(rows),
        unique_rows=len(unique),
        tokens=token_stats([r.text for r in rows], tokenizer, context_len) if rows else None,
        exact_duplicate_groups=groups[: MAX_LISTED * 5],
        exact_duplicate_rows=sum(len(g) - 1 for g in groups),
        near_duplicates=near[: MAX_LISTED * 5],
        near_duplicate_rows=near_rows,
        overlap=overlap,
        pii=pii_report(rows),
        labels=label_balance(outputs) if len(outputs) == len(rows) else None,
    )
