"""Turn YAML values (or values passed in Python) into the annotated type of a config field.

Two modes. `lenient=True` is the loader's: it also parses text ("3e-4" -> 0.0003, which
YAML 1.1 leaves a string; "0.9,0.95" -> a tuple; "yes" -> True). `lenient=False` is what
every `__post_init__` runs: only exact types, widened where nothing is lost (int -> float,
list -> tuple), so a value built in Python is checked as strictly as one from YAML.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal

from .base import ConfigError, field_types, is_secret, show

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NONE = {"null", "none", "~", ""}

_Wrong = Callable[[str], ConfigError]
"""Builds the 'expected <type>' error for the value being coerced, with an extra hint."""


def type_name(tp: Any) -> str:
    """A reader's name for an annotated type: 'float', "one of 'hf', 'vllm'", ..."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(show(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        inner = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(inner) + (" or null" if type(None) in args else "")
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {type_name(args[0])}"
        return f"a list of {len(args)} values ({', '.join(type_name(a) for a in args)})"
    if origin is dict:
        return f"a mapping of {type_name(args[0])} to {type_name(args[1])}"
    if tp is bool:
        return "true or false"
    return getattr(tp, "__name__", str(tp))


def is_text_type(tp: Any) -> bool:
    """True when values of `tp` are strings (str, a Literal of strings, or Optional of those)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is str:
        return True
    if origin is Literal:
        return all(isinstance(a, str) for a in args)
    if origin in (typing.Union, types.UnionType):
        return all(is_text_type(a) for a in args if a is not type(None))
    return False


def coerce(value: Any, tp: Any, path: str, *, lenient: bool, secret: bool = False) -> Any:
    """Return `value` as type `tp`, or raise ConfigError naming `path`, the value and the type."""

    def wrong(extra: str = "") -> ConfigError:
        problem = f"expected {type_name(tp)}{extra}"
        return ConfigError(problem, path=path, value=value, secret=secret)

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (lenient and isinstance(value, str) and value.lower() in _NONE):
            if type(None) in args:
                return None
            raise wrong()
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"{path}: config unions must be Optional[X], got {tp}")
        try:
            return coerce(value, inner[0], path, lenient=lenient, secret=secret)
        except ConfigError:
            raise wrong() from None
    if origin is Literal:
        return _coerce_literal(value, args, path, lenient=lenient, wrong=wrong)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if lenient and isinstance(value, str | int):
            text = str(value).strip().lower()
            if text in _TRUE | _FALSE:
                return text in _TRUE
        raise wrong()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if lenient and isinstance(value, float) and value.is_integer():
            return int(value)
        if lenient and isinstance(value, str):
            try:
                number = float(value.replace("_", ""))
            except ValueError:
                raise wrong() from None
            if number.is_integer():
                return int(number)
        raise wrong(" (a whole number)")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif lenient and isinstance(value, str):
            try:
                number = float(value.replace("_", ""))
            except ValueError:
                raise wrong() from None
        else:
            raise wrong()
        if not math.isfinite(number):
            raise wrong(" (a finite number)")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise wrong(" (quote the value in YAML to keep it as text)" if lenient else "")
    if origin is tuple:
        return _coerce_tuple(value, args, path, lenient=lenient, wrong=wrong)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise wrong()
        return {
            coerce(k, args[0], f"{path}.{k}", lenient=lenient): coerce(
                v, args[1], f"{path}.{k}", lenient=lenient
            )
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise wrong()
    raise TypeError(f"{path}: unsupported config field type {tp!r}")


def _coerce_literal(
    value: Any, choices: tuple[Any, ...], path: str, *, lenient: bool, wrong: _Wrong
) -> Any:
    if value in choices and type(value) in {type(c) for c in choices}:
        return value
    if lenient and isinstance(value, bool):
        # YAML 1.1 reads a bare `off`/`on`/`yes`/`no` as a bool; give the word back.
        words = ("on", "true", "yes") if value else ("off", "false", "no")
        for word in words:
            if word in choices:
                return word
    by_upper = {str(c).upper(): c for c in choices}
    close = difflib.get_close_matches(str(value).upper(), list(by_upper), n=1, cutoff=0.6)
    hint = f" (did you mean {show(by_upper[close[0]])}?)" if close else ""
    raise wrong(hint)


def _coerce_tuple(
    value: Any, args: tuple[Any, ...], path: str, *, lenient: bool, wrong: _Wrong
) -> tuple[Any, ...]:
    if lenient and isinstance(value, str):
        value = [part.strip() for part in value.split(",")] if value.strip() else []
    if not isinstance(value, list | tuple):
        raise wrong("")
    if len(args) == 2 and args[1] is Ellipsis:
        item_types: list[Any] = [args[0]] * len(value)
    elif len(value) != len(args):
        raise wrong(f" (got {len(value)} values)")
    else:
        item_types = list(args)
    return tuple(
        coerce(v, t, f"{path}[{i}]", lenient=lenient)
        for i, (v, t) in enumerate(zip(value, item_types, strict=True))
    )


def normalize_fields(obj: Any) -> None:
    """Check every field of frozen dataclass `obj` against its annotation, in place.

    Called first in each config `__post_init__`; widens int -> float and list -> tuple
    (copies dicts) so later checks and users see exactly the annotated types.
    """
    cls: type = type(obj)
    hints = field_types(cls)
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        fixed = coerce(value, hints[f.name], f.name, lenient=False, secret=is_secret(f))
        if fixed is not value:
            object.__setattr__(obj, f.name, fixed)
