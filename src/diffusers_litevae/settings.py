"""Settings declared once: a dataclass field carries its command-line flag (help, choices, spelling, group).

A command's settings class declares each setting as ``name: type = setting(default, "help", ...)`` and checks its
values in ``__post_init__``; the command builds its flags with :func:`add_setting_arguments` and turns the parsed
flags back into the class with :func:`settings_from_args`. A subclass may change a default by redeclaring the field
with a plain default: the flag keeps the help and spelling declared in the base class.

The flag follows the field's type: ``bool`` gives ``--name/--no-name`` (or ``--name`` alone with
``action="store_true"``), ``int``/``float``/``str`` (or ``X | None``) one value of that type, ``list[X]`` one or more
values (``nargs="+"``). Anything else (a JSON object, a path list) names its ``type`` and ``nargs`` explicitly.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["add_setting_arguments", "check_choice", "check_choices", "input_error", "setting", "settings_from_args"]

_METADATA_KEY = "cli"


def setting(
    default: Any = dataclasses.MISSING,
    help: str | None = None,
    *,
    flags: Sequence[str] = (),
    group: str | None = None,
    choices: Sequence | None = None,
    metavar: str | None = None,
    required: bool = False,
    action: str | None = None,
    type: Callable | None = None,
    nargs: str | int | None = None,
    default_factory: Callable | Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field that also declares its command-line flag.

    Args:
        default: the setting's default (also the flag's, unless ``required``).
        help: the flag's help text (``%(default)s`` may appear in it).
        flags: the flag's spellings (default ``--<field name>``), aliases too; the field's name alone
            (``("image_dir",)``) for a positional argument.
        group: the ``--help`` section the flag is listed under (see :func:`add_setting_arguments`).
        choices: the allowed values.
        metavar: the value's name in ``--help``.
        required: the flag must be given (then its argparse default is ``None``).
        action: an argparse action name (``"store_true"``); default derived from the field's type.
        type: converts the flag's text; default derived from the field's type.
        nargs: how many values; default derived from the field's type.
        default_factory: as in ``dataclasses.field``, for mutable defaults.

    A setting of the API only (no flag) is a plain dataclass field.
    """
    metadata = {
        _METADATA_KEY: dict(
            help=help,
            flags=tuple(flags),
            group=group,
            choices=None if choices is None else list(choices),
            metavar=metavar,
            required=required,
            action=action,
            type=type,
            nargs=nargs,
        )
    }
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def check_choice(name: str, value, choices: Sequence[str], error: type[Exception] = ValueError) -> None:
    """Refuse a ``value`` of setting ``name`` that is not one of ``choices``, raising ``error``."""
    if value not in choices:
        allowed = f"'{choices[0]}' or '{choices[1]}'" if len(choices) == 2 else f"one of {', '.join(choices)}"
        raise error(f"--{name} must be {allowed}, got {value!r}.")


def check_choices(settings, error: type[Exception] = ValueError) -> None:
    """Refuse every field of ``settings`` (a dataclass instance) whose value is not among its setting's
    ``choices``: argparse checks them on the command line, this in ``__post_init__`` for the Python API too.
    ``None`` passes where it is the default."""
    for field in dataclasses.fields(settings):
        choices = field.metadata.get(_METADATA_KEY, {}).get("choices")
        value = getattr(settings, field.name)
        if choices and not (value is None and field.default is None):
            check_choice(field.name, value, choices, error)


def input_error(command: str, message) -> int:
    """Bad input to ``litevae <command>`` as its one ``error:`` line on stderr (whitespace folded, so a message
    written over several lines stays one line); returns the exit code, 2."""
    print(f"litevae {command}: error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def _declaration(cls: type, name: str) -> dict | None:
    """The flag declared for field ``name`` by ``cls`` or the nearest base class that declares one."""
    for klass in cls.__mro__:
        field = getattr(klass, "__dataclass_fields__", {}).get(name)
        if field is not None and _METADATA_KEY in field.metadata:
            return field.metadata[_METADATA_KEY]
    return None


def _unwrap_optional(annotation):
    """``X`` for ``X | None`` (and ``Optional[X]``); the annotation itself otherwise."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def _argument(field: dataclasses.Field, annotation, declared: dict) -> tuple[list[str], dict]:
    """The ``add_argument`` call (names, keyword arguments) of one field."""
    kind = _unwrap_optional(annotation)
    kwargs: dict[str, Any] = {"help": declared["help"]}
    if declared["action"]:
        kwargs["action"] = declared["action"]
    elif kind is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(kind) is list:
        kwargs["nargs"] = "+"
        (item,) = typing.get_args(kind)
        if item is not str:
            kwargs["type"] = item
    elif kind in (int, float):
        kwargs["type"] = kind
    for key in ("type", "nargs", "choices", "metavar"):
        if declared[key] is not None:
            kwargs[key] = declared[key]
    if declared["flags"][:1] == (field.name,):
        return [field.name], kwargs
    kwargs["dest"] = field.name
    if declared["required"]:
        kwargs.update(required=True, default=None)
    elif field.default_factory is not dataclasses.MISSING:
        kwargs["default"] = field.default_factory()
    else:
        kwargs["default"] = None if field.default is dataclasses.MISSING else field.default
    return list(declared["flags"] or [f"--{field.name}"]), kwargs


def add_setting_arguments(
    parser: argparse.ArgumentParser, cls: type, *, one_of: Sequence[str] = ()
) -> dict[str, argparse._ArgumentGroup]:
    """Add a flag for every field of the settings dataclass ``cls`` that declares one (see :func:`setting`). Exactly
    one of the fields in ``one_of`` must be given: their flags form a required mutually exclusive group, inside the
    ``--help`` section of the first of them.

    The ``--help`` sections are the fields' groups: in the order of ``cls.setting_groups`` (a class attribute, a tuple
    of group names) where the class has one, then in the order of each group's first field.

    Returns:
        The argument groups made, by name, so a command can add flags that are not settings to them.
    """
    hints = typing.get_type_hints(cls)
    groups: dict[str | None, argparse._ArgumentGroup] = {
        name: parser.add_argument_group(name) for name in getattr(cls, "setting_groups", ())
    }
    exclusive = None
    for field in dataclasses.fields(cls):
        declared = _declaration(cls, field.name)
        if declared is None:
            continue
        name = declared["group"]
        if name not in groups:
            groups[name] = parser.add_argument_group(name) if name else parser
        container = groups[name]
        if field.name in one_of:
            exclusive = exclusive or container.add_mutually_exclusive_group(required=True)
            container = exclusive
        names, kwargs = _argument(field, hints[field.name], declared)
        container.add_argument(*names, **kwargs)
    return {name: group for name, group in groups.items() if name}


def settings_from_args(cls: type, args: argparse.Namespace, **overrides):
    """An instance of the settings dataclass ``cls`` from parsed flags: every field with a value in ``args``
    (attributes that are not fields are ignored), then ``overrides``."""
    names = {field.name for field in dataclasses.fields(cls) if field.init}
    values = {name: value for name, value in vars(args).items() if name in names}
    return cls(**{**values, **overrides})
