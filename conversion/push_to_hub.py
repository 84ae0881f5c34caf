"""Publish an AutoencoderLite folder to the Hugging Face Hub with a generated model card.

The same as ``litevae push`` (see ``docs/evaluation_and_hub.md``)::

    python conversion/push_to_hub.py outputs/litevae-taef2 --metrics eval/kodak/summary.json \\
        --repo_id your-name/litevae-b-taef2 [--dry_run] [--private]
"""

from __future__ import annotations

import sys

from diffusers_litevae.cli import main as litevae


def main(argv: list[str] | None = None) -> int:
    return litevae(["push", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
