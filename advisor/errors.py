"""Input errors that name the file, line and field, found from PyYAML's node marks."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml
from pydantic import BaseModel, ValidationError

from harness.errors import UserError, dotted

M = TypeVar("M", bound=BaseModel)


class AdvisorInputError(UserError):
    """A problem with the user's answers, rules or data; the CLI prints it and exits 2 (a harness UserError)."""


def read_utf8(path: Path) -> str:
    """The file's text; a UTF-8 byte-order mark is dropped, bytes that are not UTF-8 are one clear error."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise AdvisorInputError("file not found", file=path) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise AdvisorInputError(f"not UTF-8 text (byte 0x{raw[exc.start]:02x} cannot be decoded); "
                                "save the file as UTF-8", file=path, line=line) from None


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error naming both lines
    (PyYAML would keep the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.setdefault(key, line)
            except TypeError:          # an unhashable key: let PyYAML report it
                continue
            if first != line:
                raise AdvisorInputError(f"duplicate key '{key}': given on line {first} and again on line {line}",
                                        line=line, field=str(key))
        return super().construct_mapping(node, deep=deep)


class YamlFile:
    """A YAML file parsed twice: into Python data and into nodes that know their line numbers."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        text = read_utf8(self.path)
        try:
            self.node = yaml.compose(text, Loader=yaml.SafeLoader)
            loader = UniqueKeyLoader(text)
            try:
                self.data: Any = loader.get_single_data()
            finally:
                loader.dispose()
        except AdvisorInputError as exc:
            raise AdvisorInputError(exc.message, file=self.path, line=exc.line, field=exc.field) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise AdvisorInputError(f"invalid YAML: {getattr(exc, 'problem', None) or exc}", file=self.path,
                                    line=mark.line + 1 if mark else None) from None

    def resolve(self, loc: Sequence[Any]) -> tuple[list[Any], int | None]:
        """Follow a pydantic error location through the nodes. Parts that are neither keys nor
        indexes (union tags such as 'clause') are dropped; a missing key is reported at the line of
        the mapping that lacks it. Returns the field path and its line."""
        node, path = self.node, cast(list[Any], [])
        line = node.start_mark.line + 1 if node is not None else None
        for i, part in enumerate(loc):
            if isinstance(node, yaml.MappingNode) and isinstance(part, str):
                match = next(((k, v) for k, v in node.value if k.value == part), None)
                if match is None:
                    if part in _TAGS:
                        continue
                    return path + [p for p in loc[i:] if p not in _TAGS], line
                node, line = match[1], match[0].start_mark.line + 1
                path.append(part)
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
                path.append(part)
            elif part not in _TAGS:
                path.append(part)
        return path, line

    def validate(self, model: type[M], what: str = "file") -> M:
        if not isinstance(self.data, dict):
            raise AdvisorInputError(f"the {what} must be a YAML mapping of key: value", file=self.path, line=1)
        try:
            return model.model_validate(self.data)
        except ValidationError as exc:
            raise self.error_from(exc) from None

    def error_from(self, exc: ValidationError) -> AdvisorInputError:
        err = exc.errors()[0]
        path, line = self.resolve([p for p in err["loc"] if not str(p).startswith("function-")])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        msg = msg.removeprefix("Value error, ")
        more = len(exc.errors()) - 1
        if more:
            msg += f" (and {more} more error{'s' if more > 1 else ''})"
        return AdvisorInputError(msg, file=self.path, line=line, field=dotted(path) or None)


_TAGS = {"clause", "all", "any", "not", "[key]"}  # union tags and pydantic's dict-key marker
