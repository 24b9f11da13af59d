"""The flat keys of a run's settings, read from the stage config dataclasses: one place per
hyper-parameter.

A run is configured by stage configs (``DataPlan``, ``FairSteerConfig``, ``SearchPlan``,
``PanelPlan``; see :class:`~fairlens.apps.run_config.RunConfig`). Each dataclass field is one
*key*: its name (or ``metadata["key"]``, with the section's prefix) is the JSON key of config files
and reports, and ``--key-with-dashes`` is its command-line flag. The flag's type, choices and help
come from the field: its annotation (``int``, ``float``, ``bool``, ``Literal[...]``,
``tuple[...]``, optional with ``| None``), ``metadata["choices"]`` (a registry), and the entry for
the field in the class docstring's ``Attributes:`` section. Adding a hyper-parameter is adding a
field (and its docstring line) to its stage config: the flag, the config-file key, the report and
the resume check follow.

Field metadata understood here: ``key`` (the flat name, instead of prefix + field name),
``flags`` (extra option strings, e.g. ``("--format",)``), ``choices`` (a registry: its keys are the
valid values), ``nargs`` (``"*"`` where an empty list means something), ``cli`` (False: config
files only).
"""

from __future__ import annotations

import argparse
import math
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from fairlens.errors import ConfigError


@dataclass(frozen=True)
class ConfigKey:
    """One setting of a run: where it lives and how it is written on the command line.

    Attributes:
        key: The flat name (config files, reports, ``--key-with-dashes``).
        section: The RunConfig attribute holding the stage config (None: RunConfig's own field).
        field: The field's name in its dataclass.
        hint: The field's resolved type annotation.
        default: The field's default.
        help: The field's docstring entry.
        metadata: The field's metadata (see the module docstring).
    """

    key: str
    section: str | None
    field: str
    hint: Any
    default: Any
    help: str
    metadata: Mapping[str, Any]

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")


def attribute_docs(cls: type) -> dict[str, str]:
    """The ``Attributes:`` entries of a class docstring (Google style), one line each."""
    lines = (cls.__doc__ or "").expandtabs().splitlines()
    docs: dict[str, str] = {}
    start = next((i for i, line in enumerate(lines) if line.strip() == "Attributes:"), None)
    if start is None:
        return docs
    indent = len(lines[start]) - len(lines[start].lstrip())
    entry_depth, current = None, None
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if depth <= indent:
            break
        entry_depth = depth if entry_depth is None else entry_depth
        match = re.match(r"(\w+)(?: \([^)]*\))?: (.*)", line.strip())
        if depth == entry_depth and match:
            current = match.group(1)
            docs[current] = match.group(2)
        elif current is not None:
            docs[current] += " " + line.strip()
    return {k: _plain(v) for k, v in docs.items()}


def _plain(text: str) -> str:
    """Docstring markup as plain text (for ``--help``)."""
    text = re.sub(r":\w+:`~?([\w.]+)`", lambda m: m.group(1).rsplit(".", 1)[-1], text)
    return text.replace('``"', "'").replace('"``', "'").replace("``", "'")


def section_keys(cls: type, section: str | None, prefix: str = "") -> list[ConfigKey]:
    """The keys of one stage config dataclass."""
    hints = get_type_hints(cls)
    docs: dict[str, str] = {}
    for base in reversed(cls.__mro__):  # a subclass documents the fields it adds
        docs.update(attribute_docs(base))
    out = []
    for f in fields(cls):
        if f.name not in docs:
            raise TypeError(f"{cls.__name__}.{f.name} has no entry in the class docstring")
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        out.append(
            ConfigKey(
                key=f.metadata.get("key", prefix + f.name),
                section=section,
                field=f.name,
                hint=hints[f.name],
                default=default,
                help=docs[f.name],
                metadata=f.metadata,
            )
        )
    return out


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """(the type without ``None``, whether None is allowed)."""
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        optional = len(args) < len(get_args(hint))
        return (args[0] if len(args) == 1 else hint), optional
    return hint, False


_NONE = "__none__"  # what an optional flag's "none" / "all" parses to (argparse's None = unset)


def _number(kind: type, optional: bool) -> Any:
    def parse(text: str) -> Any:
        if optional and text.lower() in ("none", "all"):
            return _NONE
        try:
            value = kind(text)
        except ValueError:
            word = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {word}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        return value

    parse.__name__ = kind.__name__
    return parse


def _text(optional: bool) -> Any:
    def parse(text: str) -> str:
        return _NONE if optional and text.lower() == "none" else text

    return parse


def argparse_kwargs(spec: ConfigKey) -> dict[str, Any] | None:
    """How argparse reads one key (None: not on the command line)."""
    if spec.metadata.get("cli", True) is False:
        return None
    kind, optional = _unwrap(spec.hint)
    kwargs: dict[str, Any] = {"dest": spec.key, "default": None}
    if get_origin(kind) is tuple:
        kwargs["nargs"] = spec.metadata.get("nargs", "+")
        kind = get_args(kind)[0]
    if kind is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif kind in (int, float):
        kwargs["type"] = _number(kind, optional and "nargs" not in kwargs)
    elif kind is str or get_origin(kind) is Literal:
        kwargs["type"] = _text(optional and "nargs" not in kwargs)
        if "choices" in spec.metadata:
            kwargs["choices"] = list(spec.metadata["choices"])
        elif get_origin(kind) is Literal:
            kwargs["choices"] = list(get_args(kind))
        if optional and "choices" in kwargs and "nargs" not in kwargs:
            kwargs["choices"].append(_NONE)
    else:
        return None
    default = spec.default
    if isinstance(default, tuple):
        default = " ".join(map(str, default)) or "none"
    shown = "" if default is None else f"default: {default}"
    if optional and kind in (int, float):
        shown += ("; " if shown else "") + "'all' or 'none' = None"
    help_text = f"{spec.help} ({shown})" if shown else spec.help
    kwargs["help"] = help_text.replace("%", "%%")
    return kwargs


def add_flags(parser: argparse._ActionsContainer, specs: Sequence[ConfigKey]) -> None:
    """One option per key: ``--key-with-dashes`` (plus ``metadata["flags"]``)."""
    for spec in specs:
        kwargs = argparse_kwargs(spec)
        if kwargs is None:
            continue
        if "choices" in kwargs and _NONE in kwargs["choices"]:
            kwargs["choices"] = [c for c in kwargs["choices"] if c != _NONE]
            kwargs["type"] = _choice_or_none(kwargs["choices"])
            kwargs["metavar"] = "{" + ",".join([*kwargs.pop("choices"), "none"]) + "}"
        names = [*spec.metadata.get("flags", ()), spec.flag]
        parser.add_argument(*dict.fromkeys(names), **kwargs)


def _choice_or_none(choices: list[str]) -> Any:
    def parse(text: str) -> str:
        if text.lower() == "none":
            return _NONE
        if text not in choices:
            raise argparse.ArgumentTypeError(
                f"invalid choice: {text!r} (choose from {', '.join([*choices, 'none'])})"
            )
        return text

    return parse


def flag_values(args: argparse.Namespace, specs: Sequence[ConfigKey]) -> dict[str, Any]:
    """The keys set on the command line (lists as tuples; 'none' / 'all' as None)."""
    out: dict[str, Any] = {}
    for spec in specs:
        value = getattr(args, spec.key, None)
        if value is None:
            continue
        out[spec.key] = (
            None if value == _NONE else tuple(value) if isinstance(value, list) else value
        )
    return out


def coerce(spec: ConfigKey, value: Any, source: str) -> Any:
    """A JSON value as the field's type (lists → tuples), or a ConfigError naming the key."""
    kind, optional = _unwrap(spec.hint)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}: {spec.key!r} cannot be null.", f"give a {_name(kind)}.")
    if get_origin(kind) is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(
                f"{source}: {spec.key!r} must be a list, got {value!r}.",
                f"give a list, e.g. [{value!r}].",
            )
        return tuple(_scalar(spec, get_args(kind)[0], v, source) for v in value)
    return _scalar(spec, kind, value, source)


def _scalar(spec: ConfigKey, kind: Any, value: Any, source: str) -> Any:
    expected = {bool: bool, int: int, float: int | float, str: str}.get(kind)
    if get_origin(kind) is Literal:
        if value not in get_args(kind):
            raise ConfigError(
                f"{source}: {spec.key!r} takes {_name(kind)}, got {value!r}.",
                f"fix {spec.key!r} (or pass {spec.flag}).",
            )
        return value
    bad_bool = kind is not bool and isinstance(value, bool)
    if expected is not None and (bad_bool or not isinstance(value, expected)):
        raise ConfigError(
            f"{source}: {spec.key!r} must be a {_name(kind)}, got {value!r}.",
            f"fix {spec.key!r} (or pass {spec.flag}).",
        )
    return float(value) if kind is float else value


def _name(kind: Any) -> str:
    if get_origin(kind) is Literal:
        return "one of " + ", ".join(map(repr, get_args(kind)))
    return getattr(kind, "__name__", str(kind))


__all__ = [
    "ConfigKey",
    "add_flags",
    "argparse_kwargs",
    "attribute_docs",
    "coerce",
    "flag_values",
    "section_keys",
]
