"""The house rules of the code base, checked on the source: no import cycles among harness/ and advisor/
modules, and an import inside a function only where it keeps a heavy library off the CLI's fast paths,
with its reason on the line."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("harness", "advisor")
HEAVY = ("torch", "transformers", "trl", "peft", "lm_eval", "datasets", "accelerate", "bitsandbytes", "liger_kernel",
         "sklearn", "scipy", "pandas", "numpy", "ray", "langfuse", "opentelemetry", "gguf", "streamlit", "altair",
         "sacrebleu", "rouge_score", "jsonschema", "selenium", "psycopg", "nvidia_ml_py", "pynvml", "httpx",
         "datasketch", "alembic")


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


def top_level_edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports when it is imported (imports under `if TYPE_CHECKING:` and
    inside functions excluded)."""
    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        edges: set[str] = set()
        is_pkg = path.name == "__init__.py"
        for node in ast.parse(path.read_text()).body:
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
                continue
            edges |= {t for n in names if (t := _target(n, mods)) and t != mod}
        graph[mod] = edges
    return graph


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
    for mod, path in modules().items():
        lines = path.read_text().splitlines()
        for lineno, names in _function_imports(path):
            line = lines[lineno - 1]
            heavy = all(n.split(".")[0] in HEAVY for n in names)
            explained = "#" in line
            if not (heavy or explained):
                bad.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert bad == [], "imports inside functions without a reason:\n" + "\n".join(bad)
