"""Module-level lazy exports (PEP 562): a package's public names are imported from their submodules on first use,
so importing the package (as ``litevae --help`` does) loads neither torch nor diffusers."""

from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str], namespace: dict):
    """``(__getattr__, __dir__)`` for ``package`` whose public ``name`` lives in submodule ``exports[name]``.

    A resolved name is stored in ``namespace`` (the package's ``globals()``), so each import happens once.
    """

    def __getattr__(name: str):
        submodule = exports.get(name)
        if submodule is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{submodule}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
