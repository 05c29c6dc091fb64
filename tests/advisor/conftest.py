from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import write_jsonl


@pytest.fixture
def jsonl(tmp_path: Path):
    def make(name: str, rows: list[dict]) -> Path:
        return write_jsonl(tmp_path / name, rows)

    return make
