"""Helpers shared by the tests (not tests themselves): the repository's path, small file writers, stores
filled for the app and gate tests, tiny plans, and local servers (OpenAI-compatible chat, OTLP receiver)."""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
