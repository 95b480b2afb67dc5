"""A package's exports loaded on first use (PEP 562): a package that re-exports its modules'
names would otherwise import every module, and with them torch, transformers' Trainer and
model code, before a script can parse its command line. ``--help`` and a refused flag then
waited ~7 s for code they never run."""
from __future__ import annotations

import sys
from importlib import import_module
from typing import Callable, Iterable, Mapping


def lazy_exports(package: str, where: Mapping[str, Iterable[str]]
                 ) -> tuple[list[str], Callable[[str], object], Callable[[], list[str]]]:
    """``(names, __getattr__, __dir__)`` for ``package`` (its ``__name__``): ``where`` maps each
    of its modules (relative, e.g. ``"speed.settings"``) to the names it exports; a name's
    module is imported when the name is first read. ``__dir__`` lists them beside what the
    package holds already, so ``dir()`` and a notebook's completion still show them."""
    module_of = {name: module for module, names in where.items() for name in names}

    def __getattr__(name: str):
        if name in module_of:
            return getattr(import_module(f".{module_of[name]}", package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(module_of))

    return sorted(module_of, key=str.lower), __getattr__, __dir__
