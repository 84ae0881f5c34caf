"""``litevae push``: write a model card and upload an ``AutoencoderLite`` folder to the Hugging Face Hub.

Example::

    litevae push outputs/litevae-taef2 --metrics eval/kodak/summary.json --metrics_label litevae-b \\
        --repo_id your-name/litevae-b-taef2 --dry_run
"""

from __future__ import annotations

import argparse
import sys

from ..settings import add_setting_arguments, settings_from_args

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .model_card import CardOptions

    parser.add_argument(
        "model_dir", help="AutoencoderLite folder (config.json + weights; distillation.json when distilled)"
    )
    parser.add_argument(
        "--metrics", required=True, help="summary.json written by `litevae eval` that includes this model"
    )
    parser.add_argument(
        "--metrics_label", default=None, help="this model's label in the metrics file (default: found by path)"
    )
    add_setting_arguments(parser, CardOptions)
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--token", default=None, help="Hugging Face token (default: the one stored by `hf auth login`)")
    parser.add_argument(
        "--commit_message",
        default=None,
        help='commit message of the upload (default: "Upload LiteVAE model with diffusers-litevae")',
    )
    parser.add_argument(
        "--output_dir",
        default=None,
        help="write the upload folder here (must be new or empty; default: a temporary folder)",
    )
    parser.add_argument(
        "--dry_run", "--dry-run", action="store_true", help="only write the folder that would be uploaded and list it"
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .model_card import CardOptions
    from .push import DEFAULT_COMMIT_MESSAGE, PushError, push_to_hub

    try:
        result = push_to_hub(
            args.model_dir,
            args.metrics,
            settings_from_args(CardOptions, args),
            args.metrics_label,
            private=args.private,
            token=args.token,
            commit_message=args.commit_message or DEFAULT_COMMIT_MESSAGE,
            output_dir=args.output_dir,
            dry_run=args.dry_run,
        )
    except PushError as error:
        print(f"litevae push: error: {error}", file=sys.stderr)
        return 2
    if args.dry_run:
        folder = Path(result)
        print(f"dry run: nothing uploaded; the folder that would be uploaded is {folder}")
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            print(f"  {file.relative_to(folder)}  ({file.stat().st_size:,} bytes)")
    else:
        print(f"uploaded to {result}")
    return 0


def interrupted(args: argparse.Namespace) -> str:
    """What a Ctrl-C leaves behind (printed by the ``litevae`` entry point)."""
    if args.dry_run or args.output_dir:
        where = f"{args.output_dir} may be incomplete: delete it and " if args.output_dir else ""
        return f"{where}run the same command again."
    return "an upload is one commit, so the repo has all of this upload or none of it; run the same command again."
