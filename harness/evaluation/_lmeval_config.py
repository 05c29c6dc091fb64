"""lm-eval suites as data: the `lm_eval:` block of a suite, its task folders and content version."""

from __future__ import annotations

import hashlib
from importlib.metadata import version
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from harness.base._errors import UserError, YamlDoc
from harness.bundled import suites_dir

LOCAL_TASKS = suites_dir() / "lmeval" / "tasks"
ID_FIELDS = ("id", "doc_id", "idx", "question_id")


class LmEvalConfig(BaseModel):
    """The `lm_eval:` block of a `kind: lm_eval` suite."""

    model_config = ConfigDict(extra="forbid")
    tasks: list[str] = Field(min_length=1)
    include_path: list[str] = Field(default_factory=list)  # extra task folders, relative to the suite file
    limit: int | None = Field(default=None, ge=1)  # first N documents of each task
    num_fewshot: int | None = Field(default=None, ge=0)
    batch_size: int = Field(default=16, ge=1)
    bootstrap_iters: int = Field(default=1000, ge=0)  # stderr of non-mean metrics (0: none)
    apply_chat_template: bool = False
    system_instruction: str | None = None
    gen_kwargs: dict[str, Any] | None = None  # overrides of generate_until tasks' settings
    id_field: str | None = None  # document field that names an item
    seed: int = 1234


def include_dirs(suite_path: Path, cfg: LmEvalConfig) -> list[Path]:
    return [LOCAL_TASKS] + [(suite_path.parent / p).resolve() for p in cfg.include_path]


def validate(doc: YamlDoc, cfg: LmEvalConfig) -> None:
    """Checks that need no model: include folders exist."""
    for i, p in enumerate(cfg.include_path):
        if not (doc.path.parent / p).is_dir():
            raise UserError(
                f"task folder '{p}' not found (relative to the suite file)",
                file=doc.path,
                line=doc.line_of(("lm_eval", "include_path", i)),
                field=f"lm_eval.include_path[{i}]",
            )


def _local_manager(dirs: list[Path]) -> Any:
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=[str(d) for d in dirs], include_defaults=False)


def suite_version(suite_path: Path, cfg: LmEvalConfig) -> str:
    """Content hash of the suite file, lm-eval's version and every local task folder it names.

    Tasks from lm-eval's own registry are pinned by lm-eval's version (their datasets by the hub)."""

    digest = hashlib.sha256(suite_path.read_bytes())
    digest.update(f"\0lm_eval={version('lm_eval')}".encode())
    index = _local_manager(include_dirs(suite_path, cfg)).task_index
    for name in cfg.tasks:
        digest.update(f"\0task={name}".encode())
        for folder in sorted({p.parent for p in _local_yaml_paths(name, index)}):
            for f in sorted(folder.rglob("*")):
                if f.is_file() and "__pycache__" not in f.parts:
                    digest.update(f"\0{f.relative_to(folder)}\0".encode() + f.read_bytes())
    return digest.hexdigest()[:16]


def _local_yaml_paths(name: str, index: dict[str, Any]) -> list[Path]:
    entry = index.get(name)
    if entry is None:
        return []
    if entry.yaml_path is not None:
        return [Path(entry.yaml_path)]
    return [Path(index[t].yaml_path) for t in sorted(entry.tags) if t in index and index[t].yaml_path]
