"""Bench scripts are commands, not libraries: tests run them the way a person does (`python bench/X.py ...`)
in a fresh process that imports this checkout's harness."""

from __future__ import annotations

import os
import subprocess
import sys

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
