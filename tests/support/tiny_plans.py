"""Helpers for the harness tests: tiny suites, small data files and plan files in a tmp folder."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import REPO

JSON_TRAIN = REPO / "suites" / "json_extract" / "train.jsonl"


def write_suites(root: Path, items: int = 3) -> Path:
    """Two small suites (a generate task and a multiple-choice regression) under root/suites."""
    suites = root / "suites"
    gen, mc = suites / "tiny_json", suites / "tiny_mc"
    gen.mkdir(parents=True, exist_ok=True)
    mc.mkdir(parents=True, exist_ok=True)
    src = (REPO / "suites" / "json_extract" / "items.jsonl").read_text().splitlines()[:items]
    (gen / "items.jsonl").write_text("\n".join(src) + "\n")
    (gen / "suite.yaml").write_text(
        "name: tiny_json\nkind: generate\ncategory: task\ngeneration:\n"
        "  max_new_tokens: 6\n  batch_size: 4\nscorers: [exact_match, json_valid]\n"
    )
    src = (REPO / "suites" / "general_knowledge" / "items.jsonl").read_text().splitlines()[:items]
    (mc / "items.jsonl").write_text("\n".join(src) + "\n")
    (mc / "suite.yaml").write_text("name: tiny_mc\nkind: multiple_choice\ncategory: regression\n")
    return suites


def write_data(root: Path, rows: int = 8) -> tuple[Path, Path]:
    """(train.jsonl, prefs.jsonl): json_extract rows, and preference pairs (compact vs pretty JSON)."""
    lines = JSON_TRAIN.read_text().splitlines()[:rows]
    train = root / "train.jsonl"
    train.write_text("\n".join(lines) + "\n")
    prefs = root / "prefs.jsonl"
    pairs = []
    for line in lines:
        row = json.loads(line)
        pairs.append(
            {
                "prompt": row["prompt"],
                "chosen": row["completion"],
                "rejected": json.dumps(json.loads(row["completion"]), indent=2),
            }
        )
    prefs.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return train, prefs


def tiny_env(root: Path, *, items: int = 3, rows: int = 8, one_thread: bool = False) -> Iterator[dict[str, Any]]:
    """A module fixture's body: tiny suites (TUNEGATE_SUITES points at them) and training/preference data under
    `root`; `one_thread` also gives every worker process one CPU thread (two shared cores in CI)."""
    suites = write_suites(root, items=items)
    train, prefs = write_data(root, rows=rows)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNEGATE_SUITES", str(suites))
        if one_thread:
            mp.setenv("OMP_NUM_THREADS", "1")
        yield {"root": root, "train": train, "prefs": prefs, "suites": suites}


def train_arm(name: str, kind: str = "lora", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": kind, "max_steps": 1, "batch_size": 2, "max_length": 128} | extra


def write_plan(
    path: Path,
    model: Path | str,
    arms: list[dict[str, Any]],
    *,
    train: Path | None = None,
    prefs: Path | None = None,
    suites: list[str] | None = None,
    **extra: Any,
) -> Path:
    data: dict[str, Any] = {}
    if train:
        data["train"] = str(train)
    if prefs:
        data["preference"] = str(prefs)
    plan = {
        "name": extra.pop("name", "tiny"),
        "model": str(model),
        "data": data,
        "arms": arms,
        "suites": suites or ["tiny_json", "tiny_mc"],
    } | extra
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path
