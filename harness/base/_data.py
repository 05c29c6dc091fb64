"""Training data as JSONL in the formats users already have, detected per file and validated per row.

Formats: chat `messages`, alpaca `instruction/input/output`, `prompt/completion`, and preference
`prompt/chosen/rejected`. A bad row is reported with its file, line and field.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from harness.base._errors import RowErrors, UserError, decode_utf8, from_validation, loads_json

Role = Literal["system", "user", "assistant"]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role
    content: str


class ChatRow(BaseModel):
    model_config = ConfigDict(extra="allow")
    messages: list[Message] = Field(min_length=1)

    @field_validator("messages")
    @classmethod
    def ends_with_assistant(cls, messages: list[Message]) -> list[Message]:
        if messages[-1].role != "assistant":
            raise ValueError("the last message must be the assistant's answer")
        if not any(m.role == "user" for m in messages):
            raise ValueError("needs at least one user message")
        return messages


class AlpacaRow(BaseModel):
    model_config = ConfigDict(extra="allow")
    instruction: str = Field(min_length=1)
    input: str = ""
    output: str


class PromptCompletionRow(BaseModel):
    model_config = ConfigDict(extra="allow")
    prompt: str = Field(min_length=1)
    completion: str


class PreferenceRow(BaseModel):
    model_config = ConfigDict(extra="allow")
    prompt: str = Field(min_length=1)
    chosen: str = Field(min_length=1)
    rejected: str = Field(min_length=1)


FORMATS: dict[str, type[BaseModel]] = {
    "messages": ChatRow,
    "alpaca": AlpacaRow,
    "prompt_completion": PromptCompletionRow,
    "preference": PreferenceRow,
}
Format = Literal["auto", "messages", "alpaca", "prompt_completion", "preference"]


class Example(BaseModel):
    """One supervised example: the prompt as chat messages plus the answer the model should give."""

    prompt: list[Message]
    answer: str
    line: int = 0

    @property
    def messages(self) -> list[dict[str, str]]:
        return [m.model_dump() for m in self.prompt] + [{"role": "assistant", "content": self.answer}]

    @property
    def user_text(self) -> str:
        return "\n".join(m.content for m in self.prompt if m.role == "user")


class Preference(BaseModel):
    prompt: list[Message]
    chosen: str
    rejected: str
    line: int = 0


def detect_format(row: dict[str, Any]) -> str | None:
    keys = set(row)
    if "messages" in keys:
        return "messages"
    if {"chosen", "rejected"} & keys:
        return "preference"
    if "instruction" in keys:
        return "alpaca"
    if {"prompt", "completion"} & keys:
        return "prompt_completion"
    return None


MAX_ROW_BYTES = 8 * 2**20
"""The largest row a JSONL file may hold: a longer one is an error (before it is read whole), not gigabytes of
memory spent on one example that training would truncate anyway."""


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; bad JSON, bytes that are not UTF-8, oversized rows,
    integers of more than MAX_DIGITS digits and nesting too deep name their line. A UTF-8 byte-order mark is
    accepted. The one JSONL reader: training, preference and test data, suite items, safety sets, the advisor."""
    path = Path(path)
    if path.is_dir():
        raise UserError("is a folder, not a data file", file=path)
    if not path.is_file():
        raise UserError("data file not found", file=path)
    with path.open("rb") as f:
        lineno = 0
        while raw := f.readline(MAX_ROW_BYTES + 1):
            lineno += 1
            if len(raw) > MAX_ROW_BYTES:
                raise UserError(
                    f"the row is longer than {MAX_ROW_BYTES // 2**20} MiB; shorten or split it", file=path, line=lineno
                )
            text = decode_utf8(raw, path, first_line=lineno)
            if not text.strip():
                continue
            try:
                obj = loads_json(text)
            except json.JSONDecodeError as exc:
                raise UserError(f"invalid JSON: {exc.msg} (column {exc.colno})", file=path, line=lineno) from None
            except ValueError as exc:  # an integer of too many digits, nesting too deep
                raise UserError(f"invalid JSON: {exc}", file=path, line=lineno) from None
            if not isinstance(obj, dict):
                raise UserError("each line must be a JSON object", file=path, line=lineno)
            yield lineno, obj


def load_rows(path: str | Path, fmt: Format = "auto") -> tuple[str, list[tuple[int, BaseModel]]]:
    """Validate every row of a JSONL file against one format (detected from the first row); the first bad row is
    reported with the lines of the others."""
    rows: list[tuple[int, BaseModel]] = []
    bad = RowErrors()
    detected: str | None = None if fmt == "auto" else fmt
    for lineno, obj in read_jsonl(path):
        if detected is None:
            detected = detect_format(obj)
            if detected is None:
                raise UserError(
                    "cannot tell the data format: expected 'messages', 'instruction'/'output', "
                    "'prompt'/'completion' or 'prompt'/'chosen'/'rejected' keys",
                    file=path,
                    line=lineno,
                )
        try:
            rows.append((lineno, FORMATS[detected].model_validate(obj)))
        except ValidationError as exc:
            bad.add(from_validation(exc, path, line=lineno))
    bad.raise_if_any()
    if not rows:
        raise UserError("no rows", file=path)
    return detected or "messages", rows


def _to_example(fmt: str, row: BaseModel, lineno: int) -> Example:
    if isinstance(row, ChatRow):
        return Example(prompt=row.messages[:-1], answer=row.messages[-1].content, line=lineno)
    if isinstance(row, AlpacaRow):
        text = row.instruction + (f"\n\n{row.input}" if row.input else "")
        return Example(prompt=[Message(role="user", content=text)], answer=row.output, line=lineno)
    if isinstance(row, PromptCompletionRow):
        return Example(prompt=[Message(role="user", content=row.prompt)], answer=row.completion, line=lineno)
    raise AssertionError(fmt)


def load_examples(path: str | Path, fmt: Format = "auto") -> list[Example]:
    """Supervised examples from any SFT format; preference files are refused with a clear reason."""
    detected, rows = load_rows(path, fmt)
    if detected == "preference":
        raise UserError(
            "this is preference data (prompt/chosen/rejected); a supervised arm needs "
            "messages, alpaca or prompt/completion rows",
            file=path,
            line=rows[0][0],
        )
    return [_to_example(detected, row, lineno) for lineno, row in rows]


def load_preferences(path: str | Path) -> list[Preference]:
    detected, rows = load_rows(path)
    if detected != "preference":
        raise UserError(
            f"a DPO arm needs preference rows (prompt/chosen/rejected), this file is '{detected}'",
            file=path,
            line=rows[0][0],
        )
    return [
        Preference(
            prompt=[Message(role="user", content=r.prompt)],
            chosen=r.chosen,  # type: ignore[attr-defined]
            rejected=r.rejected,
            line=n,
        )
        for n, r in rows
    ]  # type: ignore[attr-defined]


def file_sha256(path: str | Path) -> str:

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
