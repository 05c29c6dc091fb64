"""Bench scripts are commands, not libraries: tests run them the way a person does (`python bench/X.py ...`)
in a fresh process that imports this checkout's harness; a test of one pure function imports the script as a
module under a name of its own (`bench_module`)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from tests.support import REPO


def run_bench(script: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`python bench/SCRIPT ARGS...` from the repository root; fails the test with its output when it fails."""
    env = os.environ | {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=timeout,
    )
    assert result.returncode == 0, (
        f"bench/{script} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


@contextmanager
def bench_module(script: str) -> Iterator[ModuleType]:
    """bench/SCRIPT imported as the module `<stem>_under_test`, registered in sys.modules while the block runs (its
    dataclasses look their module up while each class is made)."""
    name = f"{Path(script).stem}_under_test"
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / script)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)
