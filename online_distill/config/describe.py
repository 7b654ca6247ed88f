"""Render the effective config with every field's help, generated from the field docstrings."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal

from .base import default_of, field_docs, field_types, is_secret, show
from .root import Config

_MASK = "'***'"
_MAX_ALIGN = 44


def describe_config(cfg: Config) -> str:
    """Every section and field as `name = value  # help`, help taken from the docstrings.

    Lines starting with `*` hold a value that differs from the default (the default is
    given after the help). Secret fields show '***' when set.
    """
    lines = [
        "# online-distill effective config; '*' marks a value that differs from its default.",
        "# Override any field with section.field=value (e.g. learner.lr=3e-4).",
    ]
    scalars, sections = _split(cfg)
    lines += _field_lines(cfg, scalars, indent="")
    docs = field_docs(Config)
    for name in sections:
        lines += ["", f"[{name}]  # {_one_line(docs.get(name, ''))}"]
        section = getattr(cfg, name)
        lines += _field_lines(section, [f.name for f in dataclasses.fields(section)], "  ")
    return "\n".join(lines) + "\n"


def _split(cfg: Config) -> tuple[list[str], list[str]]:
    scalars: list[str] = []
    sections: list[str] = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        is_section = dataclasses.is_dataclass(value) and not isinstance(value, type)
        (sections if is_section else scalars).append(f.name)
    return scalars, sections


def _field_lines(obj: Any, names: list[str], indent: str) -> list[str]:
    cls: type = type(obj)
    docs, hints = field_docs(cls), field_types(cls)
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    rows: list[tuple[str, str]] = []
    for name in names:
        f = by_name[name]
        value, default = getattr(obj, name), default_of(f)
        changed = value != default
        secret = is_secret(f)
        shown = _MASK if secret and value else show(value)
        help_text = _one_line(docs.get(name, "")) + _choices(hints[name])
        if changed and not secret:
            help_text += f" (default: {show(default)})"
        marker = "* " if changed else "  "
        rows.append((f"{indent}{marker}{name} = {shown}", help_text))
    width = min(max((len(left) for left, _ in rows), default=0), _MAX_ALIGN)
    return [f"{left.ljust(width)}  # {help_text}" for left, help_text in rows]


def _choices(tp: Any) -> str:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is Literal:
        return " [one of: " + ", ".join(show(a) for a in args) + "]"
    return ""


def _one_line(doc: str) -> str:
    return " ".join(doc.split())
