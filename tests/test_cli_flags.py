"""Every ``litevae`` command keeps its flags: spelling, default, choices, number of values and kind, as recorded in
``fixtures/cli_flags.json``. A flag derived from a settings field (``diffusers_litevae.settings``) must come out as
the hand-written flag it replaced; a change to a flag shows here and needs the fixture updated on purpose."""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from diffusers_litevae.cli import SUBCOMMANDS, build_parser
from diffusers_litevae.settings import add_setting_arguments, setting, settings_from_args

FIXTURE = Path(__file__).parent / "fixtures" / "cli_flags.json"


def describe_flags(command: str) -> dict:
    """What ``litevae <command> --help`` promises of each flag, as plain JSON values."""
    parser = build_parser([command])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    flags = {}
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        default = action.default
        flags[" ".join(action.option_strings) or action.dest] = {
            "dest": action.dest,
            "default": default if isinstance(default, (int, float, str, bool, type(None), list)) else repr(default),
            "choices": list(action.choices) if action.choices else None,
            "nargs": action.nargs,
            "required": action.required,
            "kind": type(action).__name__,
            "type": getattr(action.type, "__name__", None),
        }
    return flags


@pytest.mark.parametrize("command", list(SUBCOMMANDS))
def test_every_command_keeps_its_flags_and_defaults(command):
    expected = json.loads(FIXTURE.read_text())[command]
    assert describe_flags(command) == expected


@dataclass
class _Base:
    image_dir: str = setting(".", "the images", flags=("image_dir",))
    api_only: int = 3  # a plain field: no flag
    size: int = setting(256, "crop size", group="data", flags=("--size", "--resolution"))
    folders: list[str] | None = setting(None, "image folders", group="data")
    repeats: list[int] | None = setting(None, "repeats per folder", group="data")
    flip: bool = setting(True, "random flips", group="data")
    quiet: bool = setting(False, "no output", action="store_true")
    teacher: str = setting("", "teacher VAE", required=True, group="teacher")
    scale: float | None = setting(None, "latent scale", group="teacher")


@dataclass
class _Child(_Base):
    size: int = 512  # a new default; flag, help and group stay the base class's


def test_flags_are_derived_from_the_fields_and_round_trip():
    parser = argparse.ArgumentParser()
    groups = add_setting_arguments(parser, _Child)
    assert list(groups) == ["data", "teacher"]
    args = parser.parse_args(["photos", "--resolution", "64", "--repeats", "1", "8", "--no-flip", "--teacher", "t"])
    assert not hasattr(args, "api_only")
    settings = settings_from_args(_Child, args, scale=0.5)
    assert settings == _Child(image_dir="photos", size=64, repeats=[1, 8], flip=False, teacher="t", scale=0.5)
    defaults = settings_from_args(_Child, parser.parse_args(["x", "--teacher", "t", "--quiet"]))
    assert (defaults.size, defaults.flip, defaults.quiet, defaults.folders) == (512, True, True, None)
    with pytest.raises(SystemExit):  # --teacher is required; --scale takes a number
        parser.parse_args(["x", "--scale", "x"])
    help_text = parser.format_help()
    assert "--size SIZE, --resolution SIZE" in help_text and "crop size" in help_text


@dataclass
class _TeacherFirst(_Base):
    setting_groups = ("teacher",)  # a class attribute, not a field


def test_a_settings_class_may_order_its_help_sections():
    parser = argparse.ArgumentParser()
    assert list(add_setting_arguments(parser, _TeacherFirst)) == ["teacher", "data"]
    help_text = parser.format_help()
    assert help_text.index("teacher:") < help_text.index("data:")
    assert "setting_groups" not in {field.name for field in dataclasses.fields(_TeacherFirst)}
