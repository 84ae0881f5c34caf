"""``litevae push``: write a model card and upload an ``AutoencoderLite`` folder to the Hugging Face Hub.

Example::

    litevae push outputs/litevae-taef2 --metrics eval/kodak/summary.json --metrics_label litevae-b \\
        --repo_id your-name/litevae-b-taef2 --dry_run
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from ..settings import add_setting_arguments, input_error, setting, settings_from_args
from .settings import CardOptions, PushSettings

__all__ = ["add_arguments", "interrupted", "run"]


@dataclass(frozen=True)
class _Model:
    """The flags of ``litevae push`` that name the model and its evaluation."""

    model_dir: str | None = setting(
        None, "AutoencoderLite folder (config.json + weights; distillation.json when distilled)", flags=("model_dir",)
    )
    metrics: str | None = setting(
        None, "summary.json written by `litevae eval` that includes this model", required=True
    )
    metrics_label: str | None = setting(None, "this model's label in the metrics file (default: found by path)")


@dataclass(frozen=True)
class _Arguments(PushSettings, CardOptions, _Model):
    """Every flag of ``litevae push``: the model and its metrics, the card's options, then the upload's settings."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_setting_arguments(parser, _Arguments)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .push import PushError, push_to_hub

    card, settings = settings_from_args(CardOptions, args), settings_from_args(PushSettings, args)
    try:
        result = push_to_hub(args.model_dir, args.metrics, card, args.metrics_label, settings)
    except PushError as error:
        return input_error("push", error)
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
