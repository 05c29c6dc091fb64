"""User-facing errors: every bad input names its file, line and field and exits 2."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from harness.plan._kinds import ARM_KINDS


class UserError(Exception):
    """A problem with the user's input. The CLI prints it on one line and exits 2."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | Path | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.message, self.file, self.line, self.field = message, file, line, field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = f"{self.file}"
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        field = f"field '{self.field}': " if self.field else ""
        return f"{where}{field}{self.message}"


def dotted(loc: Sequence[Any]) -> str:
    """('arms', 2, 'r') -> 'arms[2].r'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _line_map(node: yaml.Node, path: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            k = key.value if isinstance(key, yaml.ScalarNode) else str(key)
            lines[path + (k,)] = key.start_mark.line + 1
            _line_map(value, path + (k,), lines)
            lines[path + (k,)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, path + (i,), lines)


class YamlDoc:
    """A parsed YAML file that remembers the line of every key, for error messages."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise UserError("file not found", file=self.path)
        text = self.path.read_text(encoding="utf-8")
        try:
            self.data: Any = yaml.safe_load(text)
            node = yaml.compose(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise UserError(f"invalid YAML: {getattr(exc, 'problem', exc)}", file=self.path,
                            line=mark.line + 1 if mark else None) from None
        self.lines: dict[tuple[Any, ...], int] = {}
        if node is not None:
            _line_map(node, (), self.lines)

    def line_of(self, loc: Sequence[Any]) -> int | None:
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get(())

    def validate(self, model: type[BaseModel], *, context: dict[str, Any] | None = None) -> Any:
        if not isinstance(self.data, dict):
            raise UserError("expected a mapping at the top level", file=self.path, line=1)
        try:
            return model.model_validate(self.data, context=context)
        except ValidationError as exc:
            raise from_validation(exc, self.path, self.line_of) from None


def from_validation(exc: ValidationError, file: str | Path, line_of: Any = None,
                    line: int | None = None) -> UserError:
    """The first pydantic error as a UserError with file, line and field."""
    err = exc.errors()[0]
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    # a discriminated union puts its tag right after the list index; drop it from the field path
    loc = [p for i, p in enumerate(loc)
           if not (i > 0 and isinstance(loc[i - 1], int) and p in _UNION_TAGS)]
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    more = len(exc.errors()) - 1
    if more:
        msg += f" (and {more} more error{'s' if more > 1 else ''})"
    found_line = line if line is not None else (line_of(loc) if line_of else None)
    return UserError(msg, file=file, line=found_line, field=dotted(loc) or None)


_UNION_TAGS = set(ARM_KINDS)
