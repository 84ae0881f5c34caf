#!/usr/bin/env python3
"""Print pip requirements that pin every runtime dependency of pyproject.toml to its floor (``>=X`` -> ``==X``).

CI installs these in a second virtual environment and runs the model and pipeline tests there, so the floors that
pyproject.toml promises are the versions that were tested. One exception, passed with ``--keep``: PyPI has only CUDA
builds of old torch releases (several GB each) and the CPU wheel index is out of reach of CI, so torch stays at the
CPU build CI installs (``torch==2.13.0``); its floor (2.2, for ``nn.Module.compile``) is not installed here.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path


def floors(pyproject: Path, keep: set[str]) -> list[str]:
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    pins = []
    for requirement in dependencies:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*", requirement)
        if match is None:
            sys.exit(f"{requirement!r}: every runtime dependency needs a plain '>=' floor to be tested.")
        name, version = match.groups()
        if name.lower() not in keep:
            pins.append(f"{name}=={version}")
    return pins


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pyproject", default=Path(__file__).resolve().parents[1] / "pyproject.toml", type=Path)
    parser.add_argument("--keep", default="torch", help="comma-separated names left unpinned (default: torch).")
    args = parser.parse_args()
    print("\n".join(floors(args.pyproject, {name.strip().lower() for name in args.keep.split(",") if name.strip()})))


if __name__ == "__main__":
    main()
