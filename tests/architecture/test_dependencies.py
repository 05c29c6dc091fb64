"""Honest dependencies: every third-party module the package imports (harness/, advisor/, app.py, imports
inside functions included) is declared in pyproject.toml, in the base list or an extra; every declared
runtime dependency is imported by the package or listed below with the reason it is needed; the README
says what each extra is for; and what is declared is what `make setup` installed."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [*sorted((ROOT / "harness").rglob("*.py")), *sorted((ROOT / "advisor").rglob("*.py")), ROOT / "app.py"]
OWN = {"harness", "advisor", "tests"}
TEST_ONLY_EXTRAS = {"test"}  # tools for the test suite, never imported by the package
# Extras that only make sense with an NVIDIA GPU: `make setup` installs them only where nvidia-smi exists.
GPU_EXTRAS = {"gpu"}

# Declared runtime dependencies the package needs without importing them itself: {distribution: reason}.
INDIRECT = {
    "accelerate": "transformers needs it to place weights (device_map, low_cpu_mem_usage) and TRL's trainer runs "
    "on it; declared for its version floor",
    "bitsandbytes": "transformers' BitsAndBytesConfig loads the qlora arm's 4-bit NF4 weights through it "
    "(harness/model/_load.py nf4_config), and the qlora recipe's paged 8-bit AdamW is its kernel",
    "psycopg": "SQLAlchemy's driver for postgresql+psycopg:// store URLs (harness/store/_engine.py)",
}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@cache
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def declared() -> dict[str, str]:
    """Runtime distribution (normalized) -> where it is declared: 'base' or the extra's name."""
    out = {normalize(Requirement(r).name): "base" for r in pyproject()["dependencies"]}
    for extra, reqs in pyproject()["optional-dependencies"].items():
        if extra not in TEST_ONLY_EXTRAS:
            for r in reqs:
                out.setdefault(normalize(Requirement(r).name), extra)
    return out


def imported_modules() -> dict[str, set[str]]:
    """Dotted third-party module name -> the files importing it (absolute imports anywhere in a file)."""
    out: dict[str, set[str]] = {}
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                else []
            )
            for name in names:
                top = name.partition(".")[0]
                if top not in sys.stdlib_module_names and top not in OWN and top != "__future__":
                    out.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return out


@cache
def providers() -> dict[str, list[str]]:
    return metadata.packages_distributions()


@cache
def files_of(dist: str) -> tuple[str, ...]:
    return tuple(str(f) for f in metadata.distribution(dist).files or [])


@cache
def distributions_of(module: str) -> frozenset[str]:
    """The installed distributions that provide a module (a namespace package is narrowed to the one whose
    files hold the imported subpackage); for one not installed, the declared distribution named like it."""
    top = module.partition(".")[0]
    dists = {normalize(d) for d in providers().get(top, [])}
    if len(dists) > 1:
        prefix = module.replace(".", "/")
        dists = {
            d for d in dists if any(f.startswith(prefix + "/") or f == prefix + ".py" for f in files_of(d))
        } or dists
    return frozenset(dists or ({normalize(top)} & set(declared())))


def test_every_imported_module_is_declared() -> None:
    runtime = declared()
    problems = []
    for module, files in sorted(imported_modules().items()):
        dists = distributions_of(module)
        if not dists:
            problems.append(
                f"{module} (imported by {sorted(files)}) is provided by no installed or declared distribution"
            )
        elif not dists & set(runtime):
            problems.append(
                f"{module} (imported by {sorted(files)}) comes from {sorted(dists)}, declared neither "
                "in [project.dependencies] nor in a runtime extra"
            )
    assert not problems, "\n".join(problems)


def test_every_declared_dependency_is_imported_or_has_a_reason() -> None:
    used = {d for module in imported_modules() for d in distributions_of(module)}
    runtime = declared()
    unused = sorted(d for d in runtime if d not in used and d not in INDIRECT)
    assert not unused, f"declared but never imported, and no reason given in INDIRECT: {unused}"
    stale = sorted(d for d in INDIRECT if d in used or d not in runtime)
    assert not stale, f"INDIRECT lists distributions that are imported after all, or no longer declared: {stale}"


def test_the_readme_says_what_each_extra_is_for() -> None:
    readme = (ROOT / "README.md").read_text()
    for extra, reqs in pyproject()["optional-dependencies"].items():
        line = next((ln for ln in readme.splitlines() if f"tunegate[{extra}]" in ln), None)
        assert line is not None, f"README names no `tunegate[{extra}]`"
        for r in reqs:
            assert Requirement(r).name in line, f"README's line for tunegate[{extra}] does not name {r}"


def test_declared_dependencies_are_installed() -> None:
    """What `make setup` installs is what is declared: the base list and every extra but the GPU ones, which it
    installs only on a machine with an NVIDIA GPU (liger-kernel's Triton kernels and bitsandbytes' 4-bit
    kernels run on CUDA only)."""
    missing, gpu_missing = [], []
    for dist, where in declared().items():
        try:
            metadata.version(dist)
        except metadata.PackageNotFoundError:
            (gpu_missing if where in GPU_EXTRAS else missing).append(f"{dist} ({where})")
    assert not missing, f"declared but not installed: {missing}"
    if gpu_missing:
        pytest.skip(f"the GPU extra is not installed on this machine: {gpu_missing}")
