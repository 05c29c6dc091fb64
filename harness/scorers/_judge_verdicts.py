"""The judge's prompts and verdicts: rubric and pairwise messages, parsing a score or a winner from a reply."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

Messages = list[dict[str, str]]


@dataclass
class Call:
    """One judge request's outcome. status 'failed' means no verdict: `value` is None."""

    key: str
    status: Literal["ok", "failed"]
    text: str | None  # the judge's raw answer (None if none came)
    error: str | None
    cached: bool
    value: Any = None  # what the parser made of the answer


class VerdictError(ValueError):
    """The judge answered, but not in a form we can read a verdict from."""


RUBRIC_SYSTEM = (
    "You are an impartial judge. Grade the response to the request with the rubric. Judge only what the "
    "response says, not how long it is. Answer in exactly this format:\n"
    "Reason: <one or two sentences>\nScore: <an integer from 1 to 5>"
)
PAIR_SYSTEM = (
    "You are an impartial judge. Compare two responses to the same request with the criteria. The order "
    "in which the responses appear, their length and their style must not sway you. Answer in exactly "
    "this format:\nReason: <one or two sentences>\nWinner: <1, 2 or tie>"
)


def _section(title: str, text: str) -> str:
    return f"[{title}]\n{text}\n[End of {title.lower()}]"


def rubric_messages(rubric: str, question: str, response: str, reference: str | None = None) -> Messages:
    parts = [f"Rubric (1 = worst, 5 = best):\n{rubric.strip()}", _section("Request", question)]
    if reference is not None:
        parts.append(_section("Reference answer", reference))
    parts.append(_section("Response", response))
    return [{"role": "system", "content": RUBRIC_SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


def pair_messages(criteria: str, question: str, first: str, second: str, reference: str | None = None) -> Messages:
    parts = [f"Criteria:\n{criteria.strip()}", _section("Request", question)]
    if reference is not None:
        parts.append(_section("Reference answer", reference))
    parts += [_section("Response 1", first), _section("Response 2", second)]
    return [{"role": "system", "content": PAIR_SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


_SCORE = re.compile(r"\b(?:score|rating)\b\W{0,6}([1-5])(?:\s*(?:/|out of)\s*5)?(?![\d.]*\d)", re.IGNORECASE)
_BARE_SCORE = re.compile(r"\s*([1-5])\s*(?:/\s*5)?\s*\.?\s*")
_WINNER = re.compile(r"\b(?:winner|verdict)\b\W{0,6}(?:response\s*)?(1|2|tie)\b", re.IGNORECASE)
_REASON = re.compile(r"\breason\b\W{0,4}(.+?)(?=\n\W*(?:score|rating|winner|verdict)\b|\Z)", re.IGNORECASE | re.DOTALL)


def _reason(text: str) -> str:
    m = _REASON.search(text)
    return (m.group(1) if m else text).strip()


def parse_score(text: str) -> tuple[int, str]:
    """(score 1-5, reason) from 'Reason: ... Score: N' (the last score given wins; a bare digit counts)."""
    found = _SCORE.findall(text)
    if found:
        return int(found[-1]), _reason(text)
    bare = _BARE_SCORE.fullmatch(text)
    if bare:
        return int(bare.group(1)), ""
    raise VerdictError("no score from 1 to 5 in the judge's answer")


def parse_winner(text: str) -> str:
    """'1', '2' or 'tie' from 'Winner: ...' (the last one given wins)."""
    found = _WINNER.findall(text)
    if not found:
        raise VerdictError("no 'Winner: 1, 2 or tie' in the judge's answer")
    return found[-1].lower()


@dataclass(frozen=True)
class RubricCase:
    item_id: str
    question: str
    response: str
    reference: str | None = None


@dataclass(frozen=True)
class RubricVerdict:
    item_id: str
    score: int | None  # None: the call failed (see call.error, call.text)
    reason: str | None
    call: Call

    @property
    def detail(self) -> str:
        if self.score is not None:
            return self.reason or ""
        raw = f" | judge said: {self.call.text[:500]}" if self.call.text else ""
        return f"judge failed: {self.call.error}{raw}"


@dataclass(frozen=True)
class PairCase:
    item_id: str
    question: str
    a: str
    b: str
    reference: str | None = None


@dataclass(frozen=True)
class PairVerdict:
    item_id: str
    first: str | None  # preference with A shown first: 'a', 'b', 'tie'; None if that call failed
    second: str | None  # preference with B shown first
    calls: tuple[Call, Call]

    @property
    def failed(self) -> bool:
        return self.first is None or self.second is None

    @property
    def consistent(self) -> bool | None:
        return None if self.failed else self.first == self.second

    @property
    def outcome(self) -> str | None:
        """'a', 'b' or 'tie'; a preference that flips with the order is a tie; None if a call failed."""
        if self.failed:
            return None
        return self.first if self.first == self.second else "tie"
