"""Data files that ship with tunegate: the built-in suites and the demo's plan, answers and gate.

In a checkout they are the repository's `suites/` and `examples/demo/`; in an installed wheel they are
copied under `harness/_bundled/` at build time (setup.py), so `tunegate demo`, `eval --suite` and `app`
work from any directory.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent
BUNDLED = {"suites": "suites", "demo": "examples/demo"}  # name in the wheel -> folder in the checkout


def bundled_dir(name: str) -> Path:
    """The folder of bundled data `name` ('suites' or 'demo'): the wheel's copy, else the checkout's."""
    installed = _PACKAGE / "_bundled" / name
    return installed if installed.is_dir() else _CHECKOUT / BUNDLED[name]


def suites_dir() -> Path:
    return bundled_dir("suites")


def demo_dir() -> Path:
    return bundled_dir("demo")
