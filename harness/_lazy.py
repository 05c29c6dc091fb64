"""Lazy package exports (PEP 562): a package's public names are imported from its private modules on first use,
so importing one light part of the harness (the store, the gate) never loads the heavy ones (torch)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_getattr(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """The module `__getattr__` for `package`: name -> the module that defines it (or the submodule itself)."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(exports[name])
        value = module if module.__name__.endswith("." + name) else getattr(module, name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
