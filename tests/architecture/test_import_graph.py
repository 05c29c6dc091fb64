"""The house rules of the code base, checked on the source: no import cycles among harness/ and advisor/
modules, packages in layers that import only downwards (so no package-level cycle either), and an import
inside a function only where it keeps a heavy library off the CLI's fast paths, with its reason on the line."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("harness", "advisor")
HEAVY = (
    "torch",
    "transformers",
    "trl",
    "peft",
    "lm_eval",
    "datasets",
    "accelerate",
    "bitsandbytes",
    "liger_kernel",
    "sklearn",
    "scipy",
    "pandas",
    "numpy",
    "ray",
    "langfuse",
    "opentelemetry",
    "gguf",
    "streamlit",
    "altair",
    "sacrebleu",
    "rouge_score",
    "jsonschema",
    "selenium",
    "psycopg",
    "nvidia_ml_py",
    "pynvml",
    "httpx",
    "datasketch",
    "alembic",
)


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _target(name: str, mods: dict[str, Path]) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def _imported(node: ast.stmt, mod: str, is_pkg: bool, mods: dict[str, Path]) -> set[str]:
    """The project modules an import statement in module `mod` names (none for other statements)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            anchor = mod if is_pkg else mod.rpartition(".")[0]
            for _ in range(node.level - 1):
                anchor = anchor.rpartition(".")[0]
            base = f"{anchor}.{base}".strip(".")
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
    else:
        return set()
    return {t for n in names if (t := _target(n, mods)) and t != mod}


def top_level_edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports when it is imported (imports under `if TYPE_CHECKING:` and
    inside functions excluded)."""
    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        graph[mod] = set().union(*(_imported(node, mod, is_pkg, mods) for node in ast.parse(path.read_text()).body))
    return graph


def all_imports(mods: dict[str, Path]) -> list[tuple[str, int, str, str]]:
    """(file, line, module, imported module) for every import of a project module: at module level, under
    `if TYPE_CHECKING:` and inside functions alike."""
    out = []
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            for target in sorted(_imported(node, mod, is_pkg, mods)):
                out.append((str(path.relative_to(ROOT)), node.lineno, mod, target))
    return out


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    cycles = find_cycles(top_level_edges(modules()))
    assert cycles == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_cycle_finder_finds_a_cycle() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# The layers, lowest first: a module may import from its own layer and from those below it, never from above.
# harness/'s top-level modules are leaves (each its own layer); `base` is what every package builds on.
LAYERS = (
    "_lazy",
    "_nvml",
    "redact",
    "bundled",
    "tracing",
    "llm_client",
    "base",
    "plan",
    "store",
    "model",
    "scorers",
    "evaluation",
    "arms",
    "analysis",
    "gate",
    "run",
    "advisor",
    "ui",
    "cli",
)


def layer_of(mod: str) -> str:
    """The layer of a module: its package under harness/ (or the top-level module itself), or `advisor`."""
    parts = mod.split(".")
    return parts[0] if parts[0] != "harness" else parts[1] if len(parts) > 1 else "harness"


def upward_imports(imports: list[tuple[str, int, str, str]], layers: tuple[str, ...]) -> list[str]:
    """Each import that goes up the layers or into a module in no declared layer, as `file:line: ...`."""
    rank = {name: i for i, name in enumerate(layers)}
    bad = []
    for file, line, mod, target in imports:
        low, high = layer_of(mod), layer_of(target)
        if low not in rank or high not in rank:
            missing = sorted({low, high} - set(rank))
            bad.append(f"{file}:{line}: {mod} imports {target}, and {', '.join(missing)} is in no layer of LAYERS")
        elif rank[high] > rank[low]:
            bad.append(f"{file}:{line}: {mod} imports {target}: {low} may not import {high}, a layer above it")
    return bad


def test_imports_only_go_down_the_layers() -> None:
    bad = upward_imports(all_imports(modules()), LAYERS)
    assert bad == [], "imports up the layers (order: " + " < ".join(LAYERS) + "):\n" + "\n".join(bad)


def test_the_layer_check_names_an_upward_import() -> None:
    imports = [
        ("harness/plan/_load.py", 7, "harness.plan._load", "harness.base._errors"),
        ("harness/store/_store.py", 36, "harness.store._store", "harness.analysis._compare"),
        ("harness/gate/_decide.py", 3, "harness.gate._decide", "harness.nowhere"),
    ]
    assert upward_imports(imports, ("base", "plan", "store", "analysis", "gate")) == [
        (
            "harness/store/_store.py:36: harness.store._store imports harness.analysis._compare: store may not import "
            "analysis, a layer above it"
        ),
        "harness/gate/_decide.py:3: harness.gate._decide imports harness.nowhere, and nowhere is in no layer of LAYERS",
    ]


def test_no_package_level_cycles() -> None:
    """Packages (and harness/'s top-level modules) import each other without a cycle, counting every import."""
    graph: dict[str, set[str]] = {}
    for _, _, mod, target in all_imports(modules()):
        if layer_of(mod) != layer_of(target):
            graph.setdefault(layer_of(mod), set()).add(layer_of(target))
    cycles = find_cycles(graph)
    assert cycles == [], "package import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def _function_imports(path: Path) -> list[tuple[int, list[str]]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import):
                    out.append((inner.lineno, [a.name for a in inner.names]))
                elif isinstance(inner, ast.ImportFrom) and inner.level == 0:
                    out.append((inner.lineno, [inner.module or ""]))
    return out


def test_imports_inside_functions_are_heavy_and_explained() -> None:
    """A function-level import is allowed for a heavy third-party library, or for a project module that pulls
    one in, and then says why on its line (`# heavy: ...`, or a comment naming the library)."""
    bad = []
    for path in modules().values():
        lines = path.read_text().splitlines()
        for lineno, names in _function_imports(path):
            line = lines[lineno - 1]
            heavy = all(n.split(".")[0] in HEAVY for n in names)
            explained = "#" in line
            if not (heavy or explained):
                bad.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert bad == [], "imports inside functions without a reason:\n" + "\n".join(bad)
