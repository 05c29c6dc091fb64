"""Credentials out of text before it is stored, logged or printed: URL userinfo, bearer tokens, API keys."""
from __future__ import annotations

import re

MASK = "***"

_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?<=://)[^/\s@]+@"), MASK + "@"),                                   # scheme://user:pass@host
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), rf"\1 {MASK}"),        # Authorization values
    (re.compile(r"\b(sk|pk|rk|hf|ghp|gho|xox[abp])[-_][A-Za-z0-9_-]{6,}"), rf"\1-{MASK}"),  # well-known key shapes
    (re.compile(r"(?i)\b([\w-]*(?:api[_-]?key|token|secret|password|passwd))(\"?'?\s*[:=]\s*\"?'?)"
                r"[^\s\"'&,;}]+"), rf"\1\2{MASK}"),                                   # key=value, "key": "value"
)


def redact(text: str) -> str:
    """`text` with every credential-shaped substring replaced by ***."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text
