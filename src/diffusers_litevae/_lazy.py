"""Lazy imports through module ``__getattr__`` (PEP 562), so importing the package (as ``litevae --help`` does)
loads neither torch nor diffusers: :func:`lazy_exports` for a package's public names, :func:`defer_module` for the
model modules diffusers' pipeline loader looks up in ``sys.modules``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading


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


def defer_module(name: str) -> None:
    """Put module ``name`` in ``sys.modules`` (and on its parent package) without running its code yet.

    Its code runs, once and into the same module object, the first time a name it does not hold yet is read. Dunder
    attributes never run it, so tools that scan ``sys.modules`` (``inspect.getmodule``, even in the middle of
    importing torch) do not set it off half-way, as ``importlib.util.LazyLoader`` would.
    """
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    module = importlib.util.module_from_spec(spec)
    namespace = vars(module)
    lock = threading.RLock()
    running = []  # non-empty while the module's code runs

    def __getattr__(attribute: str):
        if attribute.startswith("__") and attribute.endswith("__") and attribute != "__all__":  # __all__: star imports
            raise AttributeError(f"module {name!r} has no attribute {attribute!r}")
        with lock:  # another thread waits for the run instead of seeing a half-run module
            if namespace.get("__getattr__") is __getattr__:
                if running:  # read by the module's own code while it runs: as in a circular import
                    raise AttributeError(f"partially initialized module {name!r} has no attribute {attribute!r}")
                running.append(True)
                try:
                    spec.loader.exec_module(module)
                finally:
                    running.clear()
                if namespace.get("__getattr__") is __getattr__:
                    del namespace["__getattr__"]
        try:
            return namespace[attribute]
        except KeyError:
            raise AttributeError(f"module {name!r} has no attribute {attribute!r}") from None

    namespace["__getattr__"] = __getattr__
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    setattr(sys.modules[parent], child, module)
