"""Names quoted in the source and the docs still exist: every dotted `harness.`/`advisor.` name (a module, or a
module's attribute), every `python -m MODULE` and every quoted `tunegate COMMAND` in harness/, advisor/, bench/,
app.py, the README files and docs/ resolves. Checked on the source (modules and their attributes are looked up
in the files' syntax trees; of the package only the CLI's typer app is imported, for its commands); the failure
lists every stale reference as file:line."""

from __future__ import annotations

import ast
import importlib.util
import re
from functools import cache
from pathlib import Path

import typer.main

from harness.cli import app

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("harness", "advisor")
# Markdown under reports/ records past runs as they were; runs/, build/ and dist/ are generated; hidden folders
# (.venv, caches) are not the project's.
SKIP = ("reports", "runs", "tests", "build", "dist")
DOTTED = re.compile(r"(?<![\w./-])(?<!-m )((?:harness|advisor)(?:\.[A-Za-z_]\w*)+)")
PYTHON_M = re.compile(r"\bpython3? -m ([A-Za-z_][\w.]*)")
TUNEGATE = re.compile(r"(?<![\w/.-])tunegate ([a-z][a-z-]*)(?![\w/-])(?: ([a-z][a-z-]*))?")
SUFFIXES = {"py", "yaml", "yml", "json", "jsonl", "md", "toml", "txt", "html", "db", "csv", "ini"}


def sources() -> list[Path]:
    """The files whose references are checked: Python under harness/, advisor/, bench/, app.py, and Markdown."""
    out = [ROOT / "app.py"]
    for pattern in ("harness/**/*.py", "advisor/**/*.py", "bench/**/*.py", "**/*.md"):
        for path in ROOT.glob(pattern):
            folders = path.relative_to(ROOT).parts[:-1]
            if not any(f in SKIP or f.startswith(".") for f in folders):
                out.append(path)
    return sorted(set(out))


def module_file(name: str) -> Path | None:
    """The source file of project module `name` (a package's __init__.py), or None."""
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _defined(body: list[ast.stmt] | ast.Module, name: str) -> ast.AST | str | None:
    """How `name` is defined among statements: its def/class node, 'value' for an assignment, or the dotted
    name it is imported as ('module:attr' for `from module import attr`)."""
    found: ast.AST | str | None = None
    for node in body.body if isinstance(body, ast.Module) else body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            found = node
        elif (isinstance(node, ast.Assign) and name in _target_names(node.targets)) or (
            isinstance(node, ast.AnnAssign) and name in _target_names([node.target])
        ):
            found = "value"
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    found = f"{node.module}:{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname == name:
                    found = f"{alias.name}:"
        elif isinstance(node, ast.If):  # `if TYPE_CHECKING:` / fallbacks: names defined in either branch
            found = _defined(node.body, name) or _defined(node.orelse, name) or found
        elif isinstance(node, ast.Try):
            found = _defined(node.body, name) or found
    return found


def _target_names(targets: list[ast.expr]) -> set[str]:
    """The names an assignment binds (`A = ...`, `A, B = ...`)."""
    out: set[str] = set()
    for target in targets:
        if isinstance(target, ast.Name):
            out.add(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            out |= _target_names(target.elts)
    return out


def _exports(tree: ast.Module) -> dict[str, str]:
    """A package's lazy export table (`_EXPORTS = {name: module}`), if it has one."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def resolves(module: str, attrs: list[str]) -> bool:
    """Whether project module `module` has the attribute chain `attrs` (looked up in the source)."""
    path = module_file(module)
    if path is None:
        return False
    if not attrs:
        return True
    name, rest = attrs[0], attrs[1:]
    if module_file(f"{module}.{name}"):
        return resolves(f"{module}.{name}", rest)
    tree = _tree(path)
    if name in _exports(tree):
        target = _exports(tree)[name]
        return resolves(target, rest) if target.endswith("." + name) else resolves(target, attrs)
    found = _defined(tree.body, name)
    if isinstance(found, str) and ":" in found:
        source, _, attr = found.partition(":")
        if source.split(".")[0] not in PACKAGES:
            return True  # a third-party name: present if the import is
        return resolves(source, [attr, *rest] if attr else rest)
    if isinstance(found, ast.ClassDef):
        return _has_member(module, found, rest)
    return found is not None


def _has_member(module: str, cls: ast.ClassDef, attrs: list[str]) -> bool:
    """Whether class `cls` of `module` has the attribute chain `attrs`, its own or inherited (a member inherited
    from a third-party base counts as present)."""
    if not attrs:
        return True
    member = _defined(cls.body, attrs[0])
    if isinstance(member, ast.ClassDef):
        return _has_member(module, member, attrs[1:])
    if member is not None:
        return True
    for base in cls.bases:
        if not isinstance(base, ast.Name):
            return True
        where = _defined(_tree(module_file(module)), base.id)
        if isinstance(where, ast.ClassDef) and _has_member(module, where, attrs):
            return True
        if isinstance(where, str) and ":" in where:
            source, _, name = where.partition(":")
            if source.split(".")[0] not in PACKAGES or resolves(source, [name, *attrs]):
                return True
    return False


def dotted_resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    if parts[-1] in SUFFIXES and len(parts) > 1:  # a file name written with dots: harness.cli.py is no module
        return False
    for cut in range(len(parts), 0, -1):
        if module_file(".".join(parts[:cut])):
            return resolves(".".join(parts[:cut]), parts[cut:])
    return False


def module_runs(name: str) -> bool:
    """Whether `python -m name` has something to run: a project module or package with __main__, or an
    installed one."""
    if name.split(".")[0] in (*PACKAGES, "tests", "bench"):
        path = module_file(name)
        return path is not None and (path.name != "__init__.py" or (path.parent / "__main__.py").is_file())
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


@cache
def commands() -> dict[str, set[str]]:
    """tunegate's commands: name -> its subcommands (empty for a plain command)."""
    group = typer.main.get_command(app)
    return {name: set(getattr(cmd, "commands", {})) for name, cmd in group.commands.items()}


def tunegate_resolves(command: str, sub: str | None) -> bool:
    if command not in commands():
        return False
    subs = commands()[command]
    return not subs or sub is None or sub in subs


def _code_lines(lines: list[str]) -> list[bool]:
    """Per line of a Markdown file: whether it is code (inside a fenced block, or indented four spaces)."""
    inside, out = False, []
    for line in lines:
        if line.lstrip().startswith("```"):
            inside = not inside
            out.append(False)
        else:
            out.append(inside or line.startswith(("    ", "\t")))
    return out


def stale_references(where: str, text: str, markdown: bool) -> list[str]:
    """`where:line: reference` for each reference in `text` that does not resolve."""
    lines = text.splitlines()
    code_lines = _code_lines(lines) if markdown else [False] * len(lines)
    bad = []
    for number, (line, code) in enumerate(zip(lines, code_lines), 1):
        for match in DOTTED.finditer(line):
            name = match.group(1)
            if not dotted_resolves(name):
                bad.append(f"{where}:{number}: {name}")
        for match in PYTHON_M.finditer(line):
            if not module_runs(match.group(1)):
                bad.append(f"{where}:{number}: python -m {match.group(1)}")
        for match in TUNEGATE.finditer(line):
            before = line[: match.start()]
            quoted = before.endswith(("`", '"', "'"))
            # a command at the start of a code line (fenced, or indented as code); elsewhere prose names the tool
            typed = before.strip() in ("", "$") and (code or line.startswith(("    ", "\t")))
            if (quoted or typed) and not tunegate_resolves(match.group(1), match.group(2)):
                bad.append(f"{where}:{number}: tunegate {' '.join(g for g in match.groups() if g)}")
    return bad


def test_quoted_names_commands_and_modules_exist() -> None:
    bad = [
        ref
        for path in sources()
        for ref in stale_references(str(path.relative_to(ROOT)), path.read_text(), path.suffix == ".md")
    ]
    assert bad == [], f"{len(bad)} references to names, modules or commands that do not exist:\n" + "\n".join(bad)


def test_stale_references_are_named_with_file_and_line() -> None:
    text = (
        "Scores go through `harness.scorers.build` and `harness.plan.Plan.model_validate`; views in\n"
        "`harness.views`, the loader `harness.base._data.load_rows`, stats `harness.base._stats.nothing`.\n"
        "Run `tunegate show 3`, `tunegate safety accuracy`, `tunegate compare a b`, `tunegate safety nope`.\n"
        "tunegate keeps its store; python -m harness.run; python -m harness.safety accuracy\n"
        "```\n"
        "$ tunegate gate policy.yaml\n"
        "tunegate frobnicate\n"
        "```\n"
    )
    assert stale_references("doc.md", text, markdown=True) == [
        "doc.md:2: harness.views",
        "doc.md:2: harness.base._stats.nothing",
        "doc.md:3: tunegate compare a",
        "doc.md:3: tunegate safety nope",
        "doc.md:4: python -m harness.safety",
        "doc.md:7: tunegate frobnicate",
    ]
