"""Personal data and secrets in text: regular expressions plus a Luhn check, not a library.

Checked on PyPI: presidio-analyzer needs a spaCy language model downloaded at run time (it fails offline), and
scrubadub installs and runs offline but found neither card numbers in the usual 4x4 layouts nor API keys, and
pulls in scikit-learn, textblob and faker. The patterns here cover emails, phone numbers (10-15 digits in common
layouts), payment card numbers (13-19 digits that pass Luhn), IPv4 addresses (not loopback/unspecified), AWS
access key ids and secret assignments, `sk-` API keys, GitHub and Slack tokens, private key blocks and
`password=`/`api_key:`-style assignments. `redact` hides a matched value for a report."""

from __future__ import annotations

import re

_PII_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("private_key", re.compile(r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY(?: BLOCK)?-----")),
    ("aws_access_key", re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b")),
    ("aws_secret_key", re.compile(r"(?i)aws_?secret_?(?:access_?)?key\W{0,3}[:=]\s*['\"]?[A-Za-z0-9/+=]{40}")),
    ("api_key", re.compile(r"\bsk-(?:proj-|ant-|live-|test-)?[A-Za-z0-9_\-]{20,}")),
    ("github_token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b")),
    ("slack_token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    (
        "secret_assignment",
        re.compile(
            r"(?i)\b(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token)\b\s*[:=]\s*['\"]?[^\s'\",;]{8,}"
        ),
    ),
    ("email", re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b")),
    ("credit_card", re.compile(r"(?<![\d\-])(?:\d[ \-]?){12,18}\d(?![\d\-])")),
    (
        "ipv4",
        re.compile(
            r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.])"
        ),
    ),
    (
        "phone",
        re.compile(
            r"(?<![\w+])(?:\+\d{1,3}[ .\-]?)?(?:\(\d{1,4}\)[ .\-]?|\d{1,4}[ .\-])(?:\d{2,4}[ .\-]){1,3}\d{2,4}(?![\w])"
        ),
    ),
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


def redact(kind: str, value: str) -> str:
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
                text = text[: m.start()] + " " * (m.end() - m.start()) + text[m.end() :]
    return found
