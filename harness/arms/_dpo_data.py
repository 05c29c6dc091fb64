"""Preference pairs checked before any training: one line naming file, line and field for each kind of bad pair,
and the lines of any other bad pairs.

`load_pairs` reads a preference JSONL file (`harness.base._data.load_preferences`: missing `chosen`/`rejected`
fields and malformed rows are reported there) and refuses pairs DPO cannot learn from: an empty (or all-whitespace)
prompt, chosen or rejected answer, and a chosen answer identical to the rejected one. `pair_lengths` tokenizes each
pair as TRL's DPOTrainer does (the chat template over prompt, prompt + chosen, prompt + rejected; the completion
starts where the prompt's tokens and the pair's diverge) and refuses a pair longer than the arm's `max_length`,
unless the arm says `truncation: keep_start`: then the pair is cut to `max_length` by TRL's collator, as TRL
does, and only a prompt that fills `max_length` by itself (which would leave no answer token to learn from) is
refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.base._data import Preference, load_preferences
from harness.base._errors import RowErrors, UserError
from harness.model._load import fix_tokenizer, load_tokenizer, resolve

TRUNCATIONS = ("error", "keep_start")  # the DPO arm's `truncation`: refuse over-long pairs, or cut them as TRL


@dataclass(frozen=True)
class PairTokens:
    """Token counts of one pair as TRL tokenizes it (before any truncation)."""

    prompt: int
    chosen: int  # completion tokens of the chosen answer
    rejected: int

    @property
    def chosen_sequence(self) -> int:
        return self.prompt + self.chosen

    @property
    def rejected_sequence(self) -> int:
        return self.prompt + self.rejected


def check_pairs(pairs: Sequence[Preference], file: str | Path) -> None:
    """Refuse a pair with an empty prompt, chosen or rejected text, or with chosen identical to rejected: the first
    bad pair, with the lines of the others."""
    bad = RowErrors()
    for pair in pairs:
        line = pair.line or None
        if not any(m.content.strip() for m in pair.prompt):
            bad.add(
                UserError(
                    "empty prompt: a pair needs the question both answers reply to",
                    file=file,
                    line=line,
                    field="prompt",
                )
            )
            continue
        empty = [name for name in ("chosen", "rejected") if not getattr(pair, name).strip()]
        if empty:
            bad.add(
                UserError(
                    f"empty '{empty[0]}' answer (only whitespace): a pair needs two non-empty answers",
                    file=file,
                    line=line,
                    field=empty[0],
                )
            )
        elif pair.chosen.strip() == pair.rejected.strip():
            bad.add(
                UserError(
                    "identical to 'chosen': a pair must prefer one answer over a different one (DPO "
                    "learns nothing from it)",
                    file=file,
                    line=line,
                    field="rejected",
                )
            )
    bad.raise_if_any()


def load_pairs(path: str | Path) -> list[Preference]:
    """The pairs of a preference JSONL file, every row checked (`check_pairs`)."""
    pairs = load_preferences(path)
    check_pairs(pairs, path)
    return pairs


def pair_tokenizer(spec: str) -> Any:
    """The tokenizer of a model spec, without converting a GGUF model's weights (its tokenizer is read from the
    GGUF file itself): for checking pair lengths before training."""
    resolved = resolve(spec)
    if resolved.kind not in ("alias", "gguf"):
        return load_tokenizer(spec)
    from transformers import AutoTokenizer

    gguf = Path(resolved.source)
    return fix_tokenizer(AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name))


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def tokenize_pair(tok: Any, pair: Preference) -> PairTokens:
    """Token counts of a pair as TRL's DPOTrainer computes them (its `_prepare_dataset` for conversational rows)."""
    from trl.data_utils import _tokenize

    prompt = [m.model_dump() for m in pair.prompt]
    prompt_ids = _tokenize(tok, prompt, add_generation_prompt=True)["input_ids"]
    chosen_ids = _tokenize(tok, prompt + [{"role": "assistant", "content": pair.chosen}])["input_ids"]
    rejected_ids = _tokenize(tok, prompt + [{"role": "assistant", "content": pair.rejected}])["input_ids"]
    shared = min(_common_prefix(prompt_ids, chosen_ids), _common_prefix(prompt_ids, rejected_ids))
    return PairTokens(prompt=shared, chosen=len(chosen_ids) - shared, rejected=len(rejected_ids) - shared)


def pair_lengths(
    pairs: Sequence[Preference],
    tok: Any,
    max_length: int,
    file: str | Path,
    truncation: str = "error",
    counted: Sequence[PairTokens] | None = None,
) -> list[PairTokens]:
    """Each pair's token counts (`counted`, when the pairs were tokenized already); a pair longer than
    `max_length` is an error unless `truncation` is keep_start, and a prompt that fills `max_length` by itself is
    an error either way."""
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation: expected one of {TRUNCATIONS}, got {truncation!r}")
    out = list(counted) if counted is not None else [tokenize_pair(tok, pair) for pair in pairs]
    bad = RowErrors()
    for pair, tokens in zip(pairs, out, strict=True):
        line = pair.line or None
        if tokens.prompt >= max_length:
            bad.add(
                UserError(
                    f"the prompt alone is {tokens.prompt} tokens, max_length is {max_length}: no answer "
                    "token would be left to learn from; shorten the prompt or raise max_length",
                    file=file,
                    line=line,
                    field="prompt",
                )
            )
            continue
        too_long = [n for n in ("chosen", "rejected") if getattr(tokens, f"{n}_sequence") > max_length]
        if truncation == "error" and too_long:
            name = too_long[0]
            bad.add(
                UserError(
                    f"prompt + {name} is {getattr(tokens, f'{name}_sequence')} tokens, longer than the arm's "
                    f"max_length {max_length}: shorten it, raise max_length, or set `truncation: keep_start` "
                    "on the arm to cut over-long pairs as TRL does",
                    file=file,
                    line=line,
                    field=name,
                )
            )
    bad.raise_if_any()
    return out


def sequence_lengths(tokens: Sequence[PairTokens], max_length: int) -> list[int]:
    """Real tokens per pair as training sees them (chosen + rejected sequence, each cut to `max_length`)."""
    return [min(t.chosen_sequence, max_length) + min(t.rejected_sequence, max_length) for t in tokens]
