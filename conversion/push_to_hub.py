"""Publish an AutoencoderLite folder to the Hugging Face Hub with a generated model card.

The same as ``litevae push`` (see ``docs/evaluation_and_hub.md``)::

    python conversion/push_to_hub.py outputs/litevae-taef2 --metrics eval/kodak/summary.json \\
        --repo_id your-name/litevae-b-taef2 [--dry_run] [--private]
"""

from __future__ import annotations

import argparse

from diffusers_litevae.hub.cli import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
