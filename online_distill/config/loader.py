"""Build a Config from one YAML file plus dotted `a.b.c=value` overrides, and back to a dict.

Precedence: field defaults < the YAML file < overrides, applied in the order given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from .base import ConfigError, default_of, field_types, is_secret, suggest
from .coerce import coerce, is_text_type
from .root import Config

REDACTED = "***"
"""What `config_to_dict(redact=True)` writes for a set secret. Read back, a secret field
holding exactly this is unset, so a process given the redacted config (every actor) reads
the secret from the environment instead, as for a secret never written in the config."""

_OVERRIDE_SYNTAX = (
    "write section.field=value, e.g. learner.lr=3e-4, kafka.bootstrap_servers=host:9092, "
    "demo.traffic_mix.add2=0.5 or log_level=DEBUG"
)


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: Sequence[str] = ()
) -> Config:
    """Load the config: defaults, then the YAML file at `path` (if any), then `overrides`.

    Each override is `section.field=value` (or `field=value` for a top-level field, or
    `section.field.key=value` for one entry of a mapping field). The value is parsed as a
    YAML scalar or flow list/mapping, then converted to the field's annotated type.
    Raises ConfigError naming the dotted field path, the bad value and how to fix it.
    """
    where = f"config file {path}" if path is not None else "the defaults"
    with _hostile_input(where):
        raw: dict[str, Any] = _read_yaml(Path(path)) if path is not None else {}
    if isinstance(overrides, str):  # a lone string would be split into characters
        overrides = [overrides]
    for text in overrides:
        with _hostile_input(f"override {text.partition('=')[0].strip()!r}"):
            _apply_override(raw, text)
    with _hostile_input(f"{where} with the overrides"):
        return config_from_dict(raw)


@contextlib.contextmanager
def _hostile_input(where: str) -> Iterator[None]:
    """Input no config can be made of (a self-referencing YAML alias or nesting thousands
    deep, bytes that are not UTF-8, an integer of thousands of digits) is a ConfigError too,
    not whatever exception the parser happened to raise."""
    try:
        yield
    except ConfigError:
        raise
    except (RecursionError, UnicodeDecodeError, ValueError) as exc:
        kind = {RecursionError: "nests too deeply or refers to itself (a YAML alias)",
                UnicodeDecodeError: "is not UTF-8 text"}.get(type(exc), "holds a value "
                                                              "that cannot be read")
        raise ConfigError(f"{where} {kind} ({type(exc).__name__}); write plain values "
                          "there") from None


def config_from_dict(raw: Mapping[str, Any]) -> Config:
    """Build a Config from a plain nested dict (the shape config_to_dict returns)."""
    hints = field_types(Config)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        name = str(key)
        if name not in hints:
            raise _unknown(name)
        tp = hints[name]
        if _is_section(tp):
            kwargs[name] = _build_section(tp, _section_mapping(name, value), name)
        else:
            kwargs[name] = coerce(value, tp, name, lenient=True)
    return Config(**kwargs)


def config_to_dict(cfg: Any, *, redact: bool = False) -> dict[str, Any]:
    """The config as a plain nested dict of YAML types; load_config reads it back unchanged.

    With `redact=True`, non-empty secret fields (kafka.sasl_password) read `REDACTED`
    ('***'), which load_config and config_from_dict read back as unset.
    """
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out[f.name] = config_to_dict(value, redact=redact)
        elif redact and is_secret(f) and value:
            out[f.name] = REDACTED
        else:
            out[f.name] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _section_mapping(name: str, value: Any) -> Mapping[str, Any]:
    if value is None:  # `kafka:` with nothing under it
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"expected a mapping of field: value (indent the fields under '{name}:')",
            path=name,
            value=value,
        )
    return value


def _build_section(cls: type, raw: Mapping[str, Any], prefix: str) -> Any:
    hints = field_types(cls)
    secret = {f.name for f in dataclasses.fields(cls) if is_secret(f)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        name = str(key)
        path = f"{prefix}.{name}"
        if name not in hints:
            raise _unknown(path)
        if name in secret and value == REDACTED:
            value = ""  # a redacted config: the secret comes from the environment
        kwargs[name] = coerce(value, hints[name], path, lenient=True, secret=name in secret)
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise err.prefixed(prefix) from None


def _unknown(path: str) -> ConfigError:
    """'unknown config field' with the closest known dotted path, if any is close."""
    roots = field_types(Config)
    fields = {
        f"{section}.{name}": name
        for section, tp in roots.items()
        if _is_section(tp)
        for name in field_types(tp)
    }
    section, _, name = path.partition(".")
    if not name:  # a top-level key: a section name or run_dir/log_level
        hint = suggest(path, roots)
    elif section in roots:  # the same name in another section, else a close one in this one
        elsewhere = [p for p, n in fields.items() if n == name]
        own = {n: p for p, n in fields.items() if p.startswith(section + ".")}
        close = difflib.get_close_matches(name, list(own), n=1, cutoff=0.6)
        target = elsewhere[0] if elsewhere else own[close[0]] if close else ""
        hint = f" (did you mean '{target}'?)" if target else ""
    else:  # misspelt section (lerner.lr)
        hint = suggest(path, fields)
    return ConfigError(
        f"unknown config field{hint}; `online-distill config` lists every field", path=path
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        # Only the problem and where it is: PyYAML's own message quotes the offending line,
        # which may hold a secret (a password with an unbalanced quote).
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}; fix the "
                          "syntax there (quotes, indentation, a missing ':')") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"config file {path} must be a mapping of section names (kafka, "
            f"learner, ...) to their fields, not a {type(data).__name__}"
        )
    return dict(data)


def _apply_override(raw: dict[str, Any], text: str) -> None:
    """Set one `a.b.c=value` override into the nested dict `raw` (copying what it changes)."""
    key, sep, value_text = text.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not sep or not key or any(not p for p in parts) or len(parts) > 3:
        raise ConfigError(f"malformed override {text!r}: {_OVERRIDE_SYNTAX}")
    hints = field_types(Config)
    head = parts[0]
    if head not in hints:
        raise _unknown(key)
    tp = hints[head]
    if not _is_section(tp):
        if len(parts) > 1:
            raise _unknown(key)
        raw[head] = _parse_value(value_text, tp, key)
        return
    if len(parts) == 1:
        raise ConfigError(
            f"'{head}' is a section; set one field at a time: {_OVERRIDE_SYNTAX}", path=key
        )
    section_hints = field_types(tp)
    name = parts[1]
    if name not in section_hints:
        raise _unknown(f"{head}.{name}")
    section = dict(_section_mapping(head, raw.get(head)))
    raw[head] = section
    field_tp = section_hints[name]
    if len(parts) == 2:
        section[name] = _parse_value(value_text, field_tp, key)
        return
    if typing.get_origin(field_tp) is not dict:
        raise ConfigError(
            f"'{head}.{name}' is not a mapping, so it has no entries; write {head}.{name}=value",
            path=key,
        )
    current = section.get(name)
    if current is None:  # not in the YAML file: start from the field's default mapping
        current = default_of(next(f for f in dataclasses.fields(tp) if f.name == name))
    if not isinstance(current, Mapping):
        raise ConfigError("expected a mapping of key: value", path=f"{head}.{name}", value=current)
    entry = _parse_value(value_text, typing.get_args(field_tp)[1], key)
    section[name] = {**current, parts[2]: entry}


def _parse_value(text: str, tp: Any, path: str) -> Any:
    """Parse an override's value text as YAML, keeping the raw text for string fields."""
    text = text.strip()
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        if is_text_type(tp):
            return text
        raise ConfigError(
            "cannot parse the value as YAML (quote it, e.g. 'a: b')", path=path, value=text
        ) from None
    if is_text_type(tp) and not isinstance(value, str):
        if value is None and type(None) in typing.get_args(tp):
            return None
        # `serve.served_model_name=1.10`, `critics.similarity=off`, `ray.address=`: YAML makes
        # a number, a bool or null, but the field holds text, so the text as written is meant.
        return text
    return value
