"""The package's layers import only downward: package-wide helpers (Hub ids, the runtime policy) and transforms,
models, I/O, then caching / evaluation / training, then hub, then the command-line dispatcher. A lower layer that
imports a higher one ties the model code to the tools."""

from __future__ import annotations

import ast
from pathlib import Path

import diffusers_litevae

PACKAGE = Path(diffusers_litevae.__file__).parent

# first path component under the package -> layer (higher imports lower)
LAYERS = {
    "_lazy": 0,
    "transforms": 0,
    "hub_ids": 0,
    "runtime": 0,
    "models": 1,
    "vae_io": 2,
    "image_io": 2,
    "file_io": 2,
    "settings": 2,
    "pretrained": 2,
    "testing_utils": 2,
    "caching": 3,
    "evaluation": 3,
    "training": 3,
    "hub": 4,
    "cli": 5,
}


def _layer(parts: tuple[str, ...]) -> int:
    if not parts:  # the package itself: its __init__ only re-exports, lazily
        return max(LAYERS.values())
    name = parts[0].removesuffix(".py")
    assert name in LAYERS, f"{name!r} has no layer: add it to LAYERS in this test"
    return LAYERS[name]


def _imported_modules(path: Path, root: Path = PACKAGE) -> list[tuple[int, tuple[str, ...]]]:
    """``(line, module path under the package)`` of every package-internal import in ``path`` (a file under
    ``root``, the package folder)."""
    package = path.relative_to(root).parts[:-1]  # the package the file's relative imports start from
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = (*base, *(node.module.split(".") if node.module else ()))
                if not node.module:  # `from . import models`: each name is a submodule
                    found.extend((node.lineno, (*base, alias.name)) for alias in node.names)
                    continue
            elif node.module and node.module.split(".")[0] == "diffusers_litevae":
                target = tuple(node.module.split(".")[1:])
            else:
                continue
            found.append((node.lineno, target))
        elif isinstance(node, ast.Import):
            found.extend(
                (node.lineno, tuple(alias.name.split(".")[1:]))
                for alias in node.names
                if alias.name.split(".")[0] == "diffusers_litevae"
            )
    return found


def test_layers_import_only_downward():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).parts
        if parts == ("__init__.py",):
            continue
        own = _layer(parts)
        for line, target in _imported_modules(path):
            if target and _layer(target) > own:
                upward.append(f"{'/'.join(parts)}:{line} imports {'.'.join(target)}")
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_the_check_resolves_relative_imports(tmp_path):
    """A models module importing the hub, by a relative or an absolute import, is seen as such."""
    source = tmp_path / "models" / "bad.py"
    source.parent.mkdir()
    source.write_text("from ..hub import push\nfrom . import smc\nimport diffusers_litevae.cli\n")
    targets = [target for _, target in _imported_modules(source, root=tmp_path)]
    assert targets == [("hub",), ("models", "smc"), ("cli",)]
    assert [_layer(target) > _layer(("models",)) for target in targets] == [True, False, True]
