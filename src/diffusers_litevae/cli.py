"""The ``litevae`` command line: one subcommand per capability, each in the module that implements it.

Every subcommand module defines ``add_arguments(parser)`` and ``run(args) -> int``, and may define
``interrupted(args) -> str`` (what a Ctrl-C leaves behind); it is imported only when its subcommand runs.

How every command ends: bad input is one ``error:`` line on stderr and exit code 2
(:func:`~diffusers_litevae.settings.input_error`); Ctrl-C one ``interrupted:`` line and exit code 130; a closed
pipe (``litevae info | head -1``) exit code 141, quietly.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import os
import sys

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "info": ("diffusers_litevae.cli", "print LiteVAE encoder presets with their parameter counts"),
    "distill": ("diffusers_litevae.training.distill_cli", "distil a LiteVAE encoder against a frozen teacher VAE"),
    "train": ("diffusers_litevae.training.train_cli", "train a whole LiteVAE from scratch with the paper's recipe"),
    "cache-latents": ("diffusers_litevae.caching.cli", "encode an image folder or Hub dataset into a latent cache"),
    "eval": ("diffusers_litevae.evaluation.cli", "reconstruction metrics and speed of one or more VAEs"),
    "push": ("diffusers_litevae.hub.cli", "write a model card and upload a model folder to the Hugging Face Hub"),
    "push-cache": ("diffusers_litevae.caching.push_cli", "upload a latent cache to the Hugging Face Hub as a dataset"),
}
INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, as the shell reports a program stopped by Ctrl-C
BROKEN_PIPE_EXIT_CODE = 141  # 128 + SIGPIPE, as the shell reports a program whose reader went away


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` lists every option's default as ``(default: ...)``, also for options without help text, except
    where there is nothing to show (``None``, off switches) or the help text already names it."""

    def add_argument(self, action: argparse.Action) -> None:
        if not action.help and _has_default_to_show(action):  # argparse shows no help line for these otherwise
            action = copy.copy(action)
            action.help = "default: %(default)s"
        super().add_argument(action)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = (action.help or "").lower()
        if not _has_default_to_show(action) or "%(default)" in help_text or "default:" in help_text:
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, with a usage mistake reported as one ``error:`` line (exit code 2) like every other
    mistake, pointing to ``--help`` instead of printing the whole usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _has_default_to_show(action: argparse.Action) -> bool:
    return bool(action.option_strings) and action.default not in (None, False, argparse.SUPPRESS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--latent_channels", type=int, default=4, help="latent channels to count parameters at")


def run(args: argparse.Namespace) -> int:
    from .models.litevae_encoder import ENCODER_PRESETS, LiteVAEEncoder

    print(f"{'preset':<8}{'feature UNets':<22}{'aggregation UNet':<22}{'encoder params':>16}")
    for name, spec in ENCODER_PRESETS.items():
        encoder = LiteVAEEncoder.from_preset(name, latent_channels=args.latent_channels)
        count = sum(p.numel() for p in encoder.parameters())
        print(
            f"{name:<8}{f'{spec.feature_channels} x {spec.feature_channel_mults}':<22}"
            f"{f'{spec.aggregation_channels} x {spec.aggregation_channel_mults}':<22}{count / 1e6:>14.3f} M"
        )
    return 0


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The full parser; only the subcommand named in ``argv`` (if any) has its module imported."""
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((token for token in argv if token in SUBCOMMANDS), None)
    parser = ArgumentParser(prog="litevae", description="LiteVAE for Hugging Face diffusers.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text, formatter_class=DefaultsHelpFormatter)
        sub.set_defaults(_module=module_name)
        if name == chosen:
            _module(module_name).add_arguments(sub)
    return parser


def _module(name: str):
    return sys.modules[__name__] if name == __name__ else importlib.import_module(name)


def main(argv: list[str] | None = None) -> int:
    args = None
    try:
        args = build_parser(argv).parse_args(argv)
        code = int(_module(args._module).run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return code
    except KeyboardInterrupt:
        command = args.command if args is not None else None
        explain = getattr(_module(args._module), "interrupted", None) if args is not None else None
        message = explain(args) if explain is not None else "nothing was written."
        fresh_line = "\n" if sys.stderr.isatty() else ""  # a progress bar on the terminal may be cut off mid-line
        print(f"{fresh_line}litevae{f' {command}' if command else ''}: interrupted: {message}", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    except BrokenPipeError:
        # The reader is gone: send what is still buffered nowhere, so the exit flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return BROKEN_PIPE_EXIT_CODE


if __name__ == "__main__":
    raise SystemExit(main())
