"""Shared pieces of the config classes: the error type, field docstrings, range checks.

Every config class is a frozen dataclass whose fields each carry a docstring: a string
literal written directly under the field (the vLLM convention). Python drops those strings
at class creation, so `field_docs` reads them back from the class source with `ast`. The
help that `online-distill config` prints is generated from them; nothing is written twice.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import inspect
import textwrap
import typing
from collections.abc import Iterable, Mapping
from typing import Any

SECRET: Mapping[str, bool] = {"secret": True}
"""Field metadata that marks a secret: describe_config shows '***' instead of the value."""

_NO_VALUE: Any = object()


class ConfigError(ValueError):
    """A config value is wrong. The message names the dotted field path, the bad value and a fix.

    `path` is relative to where the error was raised (a field name inside a section's
    `__post_init__`); the loader re-raises it with the section prefixed (`learner.lr`).
    """

    def __init__(
        self, problem: str, *, path: str = "", value: Any = _NO_VALUE, secret: bool = False
    ) -> None:
        self.problem = problem
        self.path = path
        self.value = value
        self.secret = secret
        super().__init__(self._render())

    def _render(self) -> str:
        if not self.path:
            return self.problem
        if self.value is _NO_VALUE:
            return f"{self.path}: {self.problem}"
        shown = "'***'" if self.secret else show(self.value)
        return f"{self.path} = {shown}: {self.problem}"

    def prefixed(self, prefix: str) -> ConfigError:
        """The same error with `prefix.` put in front of its path (used by the loader)."""
        path = f"{prefix}.{self.path}" if self.path else prefix
        return ConfigError(self.problem, path=path, value=self.value, secret=self.secret)


def show(value: Any) -> str:
    """A short, YAML-like rendering of a value for messages and help text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
    return repr(value)


def suggest(name: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest candidate, or '' when none is close."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


@functools.cache
def field_docs(cls: type) -> Mapping[str, str]:
    """The docstring under each field of dataclass `cls`, read from its source with `ast`.

    A field docstring is a string-literal expression statement directly after an annotated
    assignment in the class body. Fields without one are absent from the result (the unit
    tests fail on that).
    """
    source = textwrap.dedent(inspect.getsource(cls))
    tree = ast.parse(source)
    class_def = next(node for node in tree.body if isinstance(node, ast.ClassDef))
    docs: dict[str, str] = {}
    body = class_def.body
    for stmt, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[stmt.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


@functools.cache
def field_types(cls: type) -> Mapping[str, Any]:
    """The resolved type annotation of each field of dataclass `cls` (strings evaluated)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def is_secret(f: dataclasses.Field[Any]) -> bool:
    """True when the field was declared with `metadata=SECRET`."""
    return bool(f.metadata.get("secret", False))


def default_of(f: dataclasses.Field[Any]) -> Any:
    """The default value of a dataclass field (calling its default_factory if it has one)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise TypeError(f"field {f.name} has no default; every config field must have one")


def fail(name: str, value: Any, problem: str) -> typing.NoReturn:
    """Raise a ConfigError for field `name` holding `value`."""
    raise ConfigError(problem, path=name, value=value)


def check_range(
    obj: object,
    name: str,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    fix: str = "",
) -> None:
    """Check that field `name` of `obj` lies in the given bounds, else raise ConfigError.

    The message reads `name = value: must be > 0 (fix)`; `fix` says what to set instead,
    for example "a typical value is 3e-4".
    """
    value = getattr(obj, name)
    if value is None:
        return
    lower = f"> {gt}" if gt is not None else f">= {ge}" if ge is not None else ""
    upper = f"< {lt}" if lt is not None else f"<= {le}" if le is not None else ""
    ok = (
        (gt is None or value > gt)
        and (ge is None or value >= ge)
        and (lt is None or value < lt)
        and (le is None or value <= le)
    )
    if ok:
        return
    rule = f"must be {lower} and {upper}" if lower and upper else f"must be {lower or upper}"
    fail(name, value, f"{rule} ({fix})" if fix else rule)


def check_nonempty(obj: object, name: str, fix: str) -> None:
    """Check that string field `name` of `obj` is not empty or blank."""
    value = getattr(obj, name)
    if not value.strip():
        fail(name, value, f"must not be empty ({fix})")


def check_resources(obj: object, name: str) -> None:
    """Custom Ray resources: names without spaces, amounts >= 0 (Ray's own GPU and CPU are
    separate fields)."""
    value: dict[str, float] = getattr(obj, name)
    for key, amount in value.items():
        if not key or " " in key or key in ("CPU", "GPU", "memory"):
            fail(name, value, f"{key!r} is not a custom resource name; CPU and GPU have their "
                 "own num_cpus/num_gpus fields, custom names look like 'teacher_slot'")
        if amount < 0:
            fail(name, value, f"{key} = {amount}: amounts must be >= 0")
