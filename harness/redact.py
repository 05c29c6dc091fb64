"""Credentials out of anything stored or printed: URL passwords, bearer tokens, `api_key=` values, `sk-`/`hf_`
style keys, and the exact values of the keys configured in the environment."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

MASK = "***"
_SECRET_ENV = re.compile(r"(API_KEY|SECRET_KEY|SECRET|TOKEN|PASSWORD)$")
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # scheme://user:password@host or scheme://token@host: the whole userinfo
    (re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.\-]*://)[^/\s@:]*(:[^/\s@]*)?@"), rf"\1{MASK}@"),
    (re.compile(r"(\bBearer\s+)[^\s\"',;]+", re.IGNORECASE), rf"\1{MASK}"),
    (re.compile(r"(\bBasic\s+)[A-Za-z0-9+/=]{8,}", re.IGNORECASE), rf"\1{MASK}"),
    # api_key=..., "api-key": "...", token: ..., password=..., secret=...
    (
        re.compile(
            r"""(\b(?:api[_-]?key|access[_-]?token|auth[_-]?token|token|password|passwd|secret)["']?\s*[:=]\s*["']?)"""
            r"""[^\s"'&,;}]+""",
            re.IGNORECASE,
        ),
        rf"\1{MASK}",
    ),
    (re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_\-]{8,}"), rf"\1-{MASK}"),
    (re.compile(r"\bhf_[A-Za-z0-9]{16,}"), f"hf_{MASK}"),
    (re.compile(r"\b(ghp|gho|xox[abp])[-_][A-Za-z0-9_-]{6,}"), rf"\1-{MASK}"),  # GitHub and Slack tokens
]


def configured_secrets() -> list[str]:
    """The values of environment variables that hold credentials (names ending in API_KEY, SECRET, TOKEN ...)."""
    return [v for k, v in os.environ.items() if _SECRET_ENV.search(k.upper()) and len(v) >= 6]


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every credential it contains replaced by ***."""
    for secret in sorted({*configured_secrets(), *(s for s in secrets if s and len(s) >= 4)}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_json(value: Any, secrets: Iterable[str] = ()) -> Any:
    """A JSON-like value with every string in it redacted (dict keys included)."""
    secrets = list(secrets)
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {redact(str(k), secrets) if isinstance(k, str) else k: redact_json(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_json(v, secrets) for v in value]
    return value
