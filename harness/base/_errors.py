"""User-facing errors: every bad input names its file, line and field and exits 2."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml
from pydantic import BaseModel, ValidationError

from harness.base._kinds import ARM_KINDS

M = TypeVar("M", bound=BaseModel)


class UserError(Exception):
    """A problem with the user's input. The CLI prints it on one line and exits 2."""

    exit_code = 2

    def __init__(
        self, message: str, *, file: str | Path | None = None, line: int | None = None, field: str | None = None
    ) -> None:
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


class RowErrors:
    """The bad rows of one file, gathered so that one pass over the file reports them all: the first row's
    error, and the lines of the others (`raise_if_any`)."""

    SHOWN = 5  # line numbers of further bad rows named in the message

    def __init__(self) -> None:
        self.first: UserError | None = None
        self.more: list[int | None] = []  # a further bad row's line; None for a row without one (a hub dataset's)

    def add(self, error: UserError) -> None:
        if self.first is None:
            self.first = error
        else:
            self.more.append(error.line)

    def raise_if_any(self) -> None:
        """Raise the first error, its message naming how many other rows are bad and where."""
        if self.first is None:
            return
        first = self.first
        if self.more:
            n, known = len(self.more), [line for line in self.more if line is not None]
            where = ""
            if known:
                plural = "s" if len(known) > 1 else ""
                shown = ", ".join(str(line) for line in known[: self.SHOWN])
                where = f": line{plural} {shown}" + (", ..." if len(known) > self.SHOWN else "")
            first = type(first)(
                f"{first.message} (and {n} more row{'s' if n > 1 else ''} with errors{where})",
                file=first.file,
                line=first.line,
                field=first.field,
            )
        raise first


def printable(text: object, keep: str = "") -> str:
    """`text` with control and other invisible characters (ESC, BEL, form feed, NUL, bidi overrides, lone
    surrogates) written as backslash escapes (`\\x1b`), so text from a file, a name or the store cannot drive a
    terminal (window titles, colours), break an XML file or hide in a Markdown comment. Characters in `keep`
    (say "\\n") stay as they are."""
    return "".join(
        c if c.isprintable() or c in keep else c.encode("unicode_escape", "backslashreplace").decode("ascii")
        for c in str(text)
    )


def ensure_folder(folder: str | Path, *, field: str | None = None) -> Path:
    """Create `folder` and its parents; a file in the way, or no permission, is one clear UserError."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), folder)
        raise UserError(f"cannot create the folder {folder}: {blocker} is a file", field=field) from None
    except OSError as exc:
        raise UserError(f"cannot create the folder {folder}: {exc.strerror or exc}", field=field) from None
    return folder


def dotted(loc: Sequence[Any]) -> str:
    """('arms', 2, 'r') -> 'arms[2].r'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def read_utf8(path: str | Path, *, error: type[UserError] = UserError) -> str:
    """A text file's contents. A UTF-8 byte-order mark is dropped; a missing file, a folder, an unreadable
    file or bytes that are not UTF-8 are one clear error naming the file (and the line of the bad byte)."""
    path = Path(path)
    if path.is_dir():
        raise error("is a folder, not a file", file=path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise error("file not found", file=path) from None
    except OSError as exc:
        raise error(f"cannot read the file: {exc.strerror or exc}", file=path) from None
    return decode_utf8(raw, path, error=error)


def decode_utf8(raw: bytes, path: str | Path, *, first_line: int = 1, error: type[UserError] = UserError) -> str:
    """`raw` as text (a leading UTF-8 byte-order mark dropped); bytes that are not UTF-8 name their line."""
    try:
        return raw.decode("utf-8-sig" if first_line == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        line = first_line + raw.count(b"\n", 0, exc.start)
        raise error(
            f"not UTF-8 text (byte 0x{raw[exc.start]:02x} cannot be decoded); save the file as UTF-8",
            file=path,
            line=line,
        ) from None


MAX_DEPTH = 64
"""The deepest nesting of mappings and sequences a YAML document may have: deeper is refused before it is
built (PyYAML's composer and constructor recurse once per level)."""
MAX_ALIAS_NODES = 10_000
"""How many nodes aliases (`*name`) may add to a YAML document when expanded: more is refused before anything
walks the document (a few hundred bytes of nested aliases can otherwise expand to billions of nodes)."""
MAX_DIGITS = 100
"""The longest integer a YAML or JSON file may hold, in digits: no setting needs more, and Python refuses to
parse integers of over 4,300 digits anyway."""


def too_many_digits(text: str) -> bool:
    """Whether the integer literal `text` has more than MAX_DIGITS digits (signs, prefixes and `_` aside)."""
    return sum(c.isalnum() for c in text) > MAX_DIGITS


def bounded_int(text: str) -> int:
    """`int(text)` for a JSON reader's parse_int: a literal of more than MAX_DIGITS digits is a ValueError."""
    if too_many_digits(text):
        raise ValueError(f"a number of {len(text.lstrip('+-'))} digits; at most {MAX_DIGITS} are accepted")
    return int(text)


def loads_json(text: str) -> Any:
    """`json.loads` with limits: integers of at most MAX_DIGITS digits, and nesting deeper than Python's
    recursion allows refused. Raises ValueError (json.JSONDecodeError for bad syntax) with a message for the
    user."""
    try:
        return json.loads(text, parse_int=bounded_int)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _check_shape(text: str, path: Path, error: type[UserError]) -> None:
    """Refuse YAML nested more than MAX_DEPTH levels deep, from its events (PyYAML's parser does not recurse;
    its composer and constructor do, once per level)."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise error(f"nested more than {MAX_DEPTH} levels deep", file=path, line=event.start_mark.line + 1)
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.YAMLError:
        return  # the composer reports it, with its line


def _check_aliases(root: yaml.Node, path: Path, error: type[UserError]) -> None:
    """Refuse a document whose aliases would expand to more than MAX_ALIAS_NODES extra nodes, or that refers to
    itself (`&a [*a]`), counting each shared node once (linear in the document's size, never expanding it)."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise error(
                "an alias refers to the node that contains it (a recursive alias)",
                file=path,
                line=node.start_mark.line + 1,
            )
        open_nodes.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(v) for v in node.value)
        open_nodes.discard(key)
        sizes[key] = total
        return total

    expanded = size(root)
    if expanded - len(sizes) > MAX_ALIAS_NODES:
        raise error(
            f"aliases (*name) expand this document to {expanded:,} nodes from {len(sizes):,}; at most "
            f"{MAX_ALIAS_NODES:,} nodes may come from aliases",
            file=path,
            line=root.start_mark.line + 1,
        )


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error naming both lines
    (PyYAML would keep the last one silently), and .nan/.inf are refused (no setting means "not a number")."""

    error: type[UserError] = UserError

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
                seen[key] = line
            except TypeError:  # an unhashable key: let PyYAML report it
                continue
            if first is not None:
                error = self.error(
                    f"duplicate key '{key}': given on line {first} and again on line {line}", line=line, field=str(key)
                )
                error.mark, error.key = node.start_mark, key  # type: ignore[attr-defined]  # to name its path
                raise error
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        value: float = super().construct_yaml_float(node)  # type: ignore[no-untyped-call]
        if not math.isfinite(value):
            error = self.error(f"'{node.value}' is not a finite number", line=node.start_mark.line + 1)
            error.mark = node.start_mark  # type: ignore[attr-defined]  # the scalar's place, to name its key
            raise error
        return value

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if too_many_digits(str(node.value)):
            error = self.error(
                f"a number of {len(str(node.value))} characters; at most {MAX_DIGITS} digits are accepted",
                line=node.start_mark.line + 1,
            )
            error.mark = node.start_mark  # type: ignore[attr-defined]  # the scalar's place, to name its key
            raise error
        value: int = super().construct_yaml_int(node)  # type: ignore[no-untyped-call]
        return value


UniqueKeyLoader.add_constructor("tag:yaml.org,2002:float", UniqueKeyLoader.construct_yaml_float)
UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", UniqueKeyLoader.construct_yaml_int)


class YamlDoc:
    """A YAML file parsed twice: into Python data (duplicate keys and .nan/.inf refused) and into nodes that
    know their line numbers, for error messages. The one loader for plans, policies, suites, answers and rules;
    every problem is `error` (a UserError: one line naming file, line and field; exit 2). Hostile input is
    refused before it is built: nesting deeper than MAX_DEPTH, aliases that expand to more than MAX_ALIAS_NODES
    nodes (or refer to themselves), integers of more than MAX_DIGITS digits."""

    def __init__(self, path: str | Path, *, error: type[UserError] = UserError) -> None:
        self.path, self.error = Path(path), error
        text = read_utf8(self.path, error=error)
        loader_cls = type("_Loader", (UniqueKeyLoader,), {"error": error})
        _check_shape(text, self.path, error)
        try:
            self.node: yaml.Node | None = yaml.compose(text, Loader=yaml.SafeLoader)
            if self.node is not None:
                _check_aliases(self.node, self.path, error)
            loader = loader_cls(text)
            try:
                self.data: Any = loader.get_single_data()
            finally:
                loader.dispose()  # type: ignore[no-untyped-call]
        except UserError as exc:
            mark, field = getattr(exc, "mark", None), exc.field
            if mark is not None:  # the full path: the mapping's (or the bad scalar's), then the duplicate key
                path = _path_of(self.node, mark) + ((exc.key,) if hasattr(exc, "key") else ())  # type: ignore[attr-defined]
                field = dotted(path) or field
            raise error(exc.message, file=self.path, line=exc.line, field=field or None) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise error(
                f"invalid YAML: {getattr(exc, 'problem', None) or exc}",
                file=self.path,
                line=mark.line + 1 if mark else None,
            ) from None
        self.lines: dict[tuple[Any, ...], int] = {}
        if self.node is not None:
            _line_map(self.node, (), self.lines)

    def line_of(self, loc: Sequence[Any]) -> int | None:
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get(())

    def resolve(self, loc: Sequence[Any]) -> tuple[list[Any], int | None]:
        """Follow a pydantic error location through the nodes. Parts that are neither keys nor indexes
        (union tags such as 'lora' or 'clause') are dropped; a missing key is reported at the line of the
        mapping that lacks it. Returns the field path and its line."""
        node, path = self.node, cast(list[Any], [])
        line = node.start_mark.line + 1 if node is not None else None
        for i, part in enumerate(loc):
            if isinstance(node, yaml.MappingNode) and isinstance(part, str):
                match = next(((k, v) for k, v in node.value if k.value == part), None)
                if match is None:
                    if part in _UNION_TAGS:
                        continue
                    return path + [p for p in loc[i:] if p not in _UNION_TAGS], line
                node, line = match[1], match[0].start_mark.line + 1
                path.append(part)
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
                path.append(part)
            elif part not in _UNION_TAGS:
                path.append(part)
        return path, line

    def validate(self, model: type[M], *, context: dict[str, Any] | None = None, what: str = "file") -> M:
        if not isinstance(self.data, dict):
            raise self.error(
                f"expected a mapping at the top level: the {what} must be a YAML mapping of key: value",
                file=self.path,
                line=1,
            )
        try:
            return model.model_validate(self.data, context=context)
        except ValidationError as exc:
            raise self.error_from(exc) from None

    def error_from(self, exc: ValidationError) -> UserError:
        """The first pydantic error, with the line and field it points at in this file; the message names the
        line and field of the others (the first few), so one run shows every mistake in the file."""
        where = []
        for err in exc.errors():
            path, line = self.resolve([p for p in err["loc"] if not str(p).startswith("function-")])
            where.append((line, dotted(path) or None))
        line, field = where[0]
        message = _message(exc, in_file_order(where[1:])).removeprefix("Value error, ")
        return self.error(message, file=self.path, line=line, field=field)


def in_file_order(places: Sequence[tuple[int | None, str | None]]) -> list[str]:
    """(line, field) places of further errors as "line N field 'f'", in file order (places without a line last)."""
    ordered = sorted(places, key=lambda w: (w[0] is None, w[0] or 0))
    return [f"line {line} field '{field}'" if field else f"line {line}" for line, field in ordered]


def _path_of(node: yaml.Node | None, mark: Any, path: tuple[Any, ...] = ()) -> tuple[Any, ...]:
    """The key path of the value node that starts at `mark` (() if none does)."""
    if node is None:
        return ()
    if (node.start_mark.line, node.start_mark.column) == (mark.line, mark.column) and path:
        return path
    children: list[tuple[Any, yaml.Node]] = []
    if isinstance(node, yaml.MappingNode):
        children = [(k.value if isinstance(k, yaml.ScalarNode) else str(k), v) for k, v in node.value]
    elif isinstance(node, yaml.SequenceNode):
        children = list(enumerate(node.value))
    for key, child in children:
        if found := _path_of(child, mark, path + (key,)):
            return found
    return ()


def _line_map(node: yaml.Node, path: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            k = key.value if isinstance(key, yaml.ScalarNode) else str(key)
            _line_map(value, path + (k,), lines)
            lines[path + (k,)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, path + (i,), lines)


OTHERS_SHOWN = 3  # further errors of one validation named (where they are) after the first one's message


def _message(exc: ValidationError, others: Sequence[str]) -> str:
    """The first error's message, then how many more there are and where (`others`: one place per further
    error, the first OTHERS_SHOWN of them named)."""
    err = exc.errors()[0]
    msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
    if err["type"] == "finite_number" or (isinstance(err.get("input"), float) and err["input"] != err["input"]):
        msg = "must be a finite number"
    return with_others(msg, others)


def with_others(message: str, others: Sequence[str]) -> str:
    """`message`, then how many further errors there are and where (`others`: one place per further error, the
    first OTHERS_SHOWN of them named)."""
    if more := len(others):
        named = "; ".join(others[:OTHERS_SHOWN]) + ("; ..." if more > OTHERS_SHOWN else "")
        message += f" (and {more} more error{'s' if more > 1 else ''}: {named})"
    return message


def _field_loc(err: Any) -> list[Any]:
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    # a discriminated union puts its tag right after the list index; drop it from the field path
    return [p for i, p in enumerate(loc) if not (i > 0 and isinstance(loc[i - 1], int) and p in _UNION_TAGS)]


def from_validation(exc: ValidationError, file: str | Path, line_of: Any = None, line: int | None = None) -> UserError:
    """The first pydantic error as a UserError with file, line and field (for rows of a JSONL file); the message
    names the fields of the others."""
    locs = [_field_loc(err) for err in exc.errors()]
    others = [f"field '{dotted(loc)}'" if loc else "the row" for loc in locs[1:]]
    found_line = line if line is not None else (line_of(locs[0]) if line_of else None)
    return UserError(_message(exc, others), file=file, line=found_line, field=dotted(locs[0]) or None)


# union tags pydantic puts in an error location (plan arm types; advisor clauses) and its dict-key marker
_UNION_TAGS = {*ARM_KINDS, "clause", "all", "any", "not", "[key]"}
