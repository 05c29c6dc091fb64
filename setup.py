"""Build hook: copy the built-in suites and the demo's files into the wheel (see harness/bundled.py).
Everything else about the package is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

BUNDLED = {"suites": "suites", "demo": "examples/demo"}  # the same table as harness/bundled.py


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        for name, source in BUNDLED.items():
            target = Path(self.build_lib) / "harness" / "_bundled" / name
            shutil.copytree(
                source,
                target,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "generate.py", "make_*.py"),
            )


setup(cmdclass={"build_py": BuildPyWithData})
