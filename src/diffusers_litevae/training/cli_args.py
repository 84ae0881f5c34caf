"""The command-line pieces both training commands share (``litevae distill`` and ``litevae train``, whose flags are
derived from their settings classes): the settings of parsed flags, what a Ctrl-C leaves behind, and how a run is
started (logging, the recorded command line, bad input as one ``error:`` line)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..settings import input_error, settings_from_args
from .errors import TrainingInputError

__all__ = ["config_from_args", "interrupted", "run_training"]


def config_from_args(settings_class: type, args: argparse.Namespace):
    """The ``settings_class`` settings of parsed ``args``; one ``--train_data_dir`` folder is given as the API spells
    it (a path, not a one-item list).

    Raises:
        TrainingInputError: a value out of range.
    """
    folders = args.train_data_dir
    one_folder = folders is not None and len(folders) == 1
    return settings_from_args(settings_class, args, train_data_dir=folders[0] if one_folder else folders)


def interrupted(args: argparse.Namespace) -> str:
    """What a Ctrl-C of a training command leaves behind (printed by the ``litevae`` entry point)."""
    from .checkpointing import find_latest_checkpoint

    latest = find_latest_checkpoint(Path(args.output_dir) / "checkpoints")
    if latest is None:
        return (
            f"no checkpoint was written yet (one every {args.checkpointing_steps} steps, in "
            f"{Path(args.output_dir) / 'checkpoints'}); run the command again to start over."
        )
    return f"{latest} is kept; add --resume_from_checkpoint latest to the same command to go on from there."


def run_training(args: argparse.Namespace, settings_class: type, train, command: str, summary) -> int:
    """Run ``train(config)`` with the ``settings_class`` settings of ``args`` (INFO logging, the command line
    recorded) for ``litevae <command>``: bad input (:class:`TrainingInputError`) is one ``error:`` line and exit code
    2; otherwise the line ``summary(result)`` gives (if any) is printed and the code is 0."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    from ..file_io import invoked_command

    try:
        config = config_from_args(settings_class, args)
        # The exact command, recorded in the run's JSON summary: the model card shows it as the way to reproduce it.
        config.command_line = invoked_command()
        result = train(config)
    except TrainingInputError as error:
        return input_error(command, error)
    line = summary(result)
    if line:
        print(line)
    return 0
