"""Text scorers: exact match (normalised), token F1 (SQuAD), ROUGE-L, BLEU and chrF (sacrebleu)."""

from __future__ import annotations

import json
import re
import string
import unicodedata
from collections import Counter
from typing import Annotated, Any, Literal

from pydantic import Field

from harness.scorers._registry import ScoreFn, ScorerParamError, _with_check, scorer


def normalize(text: str, steps: list[str]) -> str:
    for step in steps:
        if step == "strip":
            text = text.strip()
        elif step == "lower":
            text = text.lower()
        elif step == "whitespace":
            text = " ".join(text.split())
        elif step == "punctuation":
            text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
        elif step == "nfkc":
            text = unicodedata.normalize("NFKC", text)
        elif step == "articles":
            text = re.sub(r"\b(a|an|the)\b", " ", text, flags=re.I)
        else:
            raise ValueError(f"unknown normalization '{step}' (strip, lower, whitespace, punctuation, nfkc, articles)")
    return text


def reference_text(item: Any) -> str:
    ref = item.reference
    return ref if isinstance(ref, str) else json.dumps(ref, separators=(",", ":"), ensure_ascii=False)


def references(item: Any) -> list[str]:
    """The item's reference answers as strings: a list means alternatives, anything else is one answer."""
    if isinstance(item.reference, list):
        return [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in item.reference]
    return [reference_text(item)]


def _needs_reference(item: Any) -> tuple[str, str] | None:
    ref = item.reference
    if ref is None or (isinstance(ref, list) and not ref):
        return "reference", "this suite's scorers need a 'reference' on every item"
    return None


@scorer("exact_match", binary=True)
def exact_match(normalize_steps: list[str] | None = None) -> ScoreFn:
    """1 if the output equals a reference after the normalization steps (default: strip)."""
    steps = ["strip"] if normalize_steps is None else list(normalize_steps)
    try:
        normalize("", steps)  # validate names early
    except ValueError as exc:
        raise ScorerParamError(str(exc), param="normalize_steps") from None

    def score(output: str, item: Any) -> float:
        out = normalize(output, steps)
        return float(any(out == normalize(r, steps) for r in references(item)))

    return _with_check(score, _needs_reference)


def squad_normalize(text: str) -> str:
    """SQuAD's answer normalization: lower case, drop punctuation and articles, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in string.punctuation and not unicodedata.category(ch).startswith("P"))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1_score(prediction: str, reference: str) -> float:
    """SQuAD v1.1 token F1 between two strings (1.0 when both normalize to nothing)."""
    pred, ref = squad_normalize(prediction).split(), squad_normalize(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


@scorer("token_f1", binary=False)
def token_f1() -> ScoreFn:
    """SQuAD-style token F1 against the best-matching reference."""

    def score(output: str, item: Any) -> float:
        return max(token_f1_score(output, r) for r in references(item))

    return _with_check(score, _needs_reference)


class _UnicodeWordTokenizer:
    """Lower-cased \\w+ tokens: unlike rouge_score's default, keeps non-Latin scripts."""

    def tokenize(self, text: str) -> list[str]:
        return re.findall(r"\w+", text.lower())


@scorer("rouge_l", binary=False)
def rouge_l(
    measure: Literal["fmeasure", "precision", "recall"] = "fmeasure",
    use_stemmer: bool = True,
    tokenizer: Literal["default", "unicode"] = "default",
) -> ScoreFn:
    """ROUGE-L (longest common subsequence) via Google's rouge_score, best over references.

    tokenizer "default" is rouge_score's (ASCII letters and digits only, Porter stemming optional);
    "unicode" keeps every script's word characters (no stemming) for non-English text.
    """
    from rouge_score import rouge_scorer

    tok = _UnicodeWordTokenizer() if tokenizer == "unicode" else None
    rs = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer and tok is None, tokenizer=tok)

    def score(output: str, item: Any) -> float:
        return max(getattr(rs.score(r, output)["rougeL"], measure) for r in references(item))

    return _with_check(score, _needs_reference)


SACREBLEU_TOKENIZERS = ("13a", "intl", "zh", "ja-mecab", "ko-mecab", "char", "flores101", "flores200", "none")


@scorer("bleu", binary=False)
def bleu(
    tokenize: str = "13a", lowercase: bool = False, smooth_method: Literal["exp", "floor", "add-k", "none"] = "exp"
) -> ScoreFn:
    """Sentence-level BLEU from sacrebleu against all references, scaled to 0..1."""
    import sacrebleu

    if tokenize not in SACREBLEU_TOKENIZERS:
        raise ScorerParamError(
            f"unknown sacrebleu tokenizer '{tokenize}' ({', '.join(SACREBLEU_TOKENIZERS)})", param="tokenize"
        )

    def score(output: str, item: Any) -> float:
        result = sacrebleu.sentence_bleu(
            output, references(item), smooth_method=smooth_method, tokenize=tokenize, lowercase=lowercase
        )
        return min(1.0, max(0.0, result.score / 100))

    return _with_check(score, _needs_reference)


@scorer("chrf", binary=False)
def chrf(
    char_order: Annotated[int, Field(ge=1)] = 6,
    word_order: Annotated[int, Field(ge=0)] = 0,
    beta: Annotated[int, Field(ge=1)] = 2,
    lowercase: bool = False,
) -> ScoreFn:
    """Sentence-level chrF (word_order 2 gives chrF++) from sacrebleu, scaled to 0..1."""
    from sacrebleu.metrics import CHRF

    metric = CHRF(char_order=char_order, word_order=word_order, beta=beta, lowercase=lowercase)

    def score(output: str, item: Any) -> float:
        return min(1.0, max(0.0, metric.sentence_score(output, references(item)).score / 100))

    return _with_check(score, _needs_reference)
