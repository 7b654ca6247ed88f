"""Field checks for the message dataclasses: each returns the canonical value or raises
ValueError naming the field and saying what is wrong."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

LOGPROB_EPS = 1e-3
"""Log-probabilities up to this far above 0 are rounding noise and are clamped to 0."""
MAX_TOKEN_ID = 2**31 - 1
"""Token ids are non-negative int32."""


def check_text(name: str, value: object, *, nonempty: bool = False) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be str, got {type(value).__name__}")
    if nonempty and not value:
        raise ValueError(f"{name} must not be empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{name} is not encodable as UTF-8 ({e.reason})") from None
    return value


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return str(value)


def check_finite(name: str, value: object, *, nonnegative: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x}")
    if nonnegative and x < 0:
        raise ValueError(f"{name} must be >= 0, got {x}")
    return x


def check_strings(name: str, value: object) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
        raise ValueError(f"{name} must be a tuple of str, got {type(value).__name__}")
    return tuple(check_text(f"{name}[{i}]", v, nonempty=True) for i, v in enumerate(value))


def check_seq(name: str, value: object) -> tuple[object, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list, np.ndarray)):
        raise ValueError(f"{name} must be a tuple, got {type(value).__name__}")
    return tuple(value)


def as_array(name: str, value: object, ndim: int, kinds: str, what: str) -> np.ndarray:
    """`value` as an ndarray of `ndim` dims whose dtype kind is in `kinds` (any if empty)."""
    if isinstance(value, (str, bytes)):
        raise ValueError(f"{name} must be {what}, got {type(value).__name__}")
    try:
        a = np.asarray(value)
    except (ValueError, TypeError, OverflowError, RecursionError) as e:
        raise ValueError(f"{name} must be a rectangular array of {what} ({e})") from None
    if a.size == 0 and a.ndim == 1 and ndim == 2:
        a = a.reshape(0, 0)  # () for a (T=0, k) array
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {a.shape}")
    if a.size and a.dtype.kind not in kinds:
        raise ValueError(f"{name} must hold {what}, got dtype {a.dtype}")
    return a


def where(bad: np.ndarray) -> str:
    return "".join(f"[{i}]" for i in np.argwhere(bad)[0])


def check_token_ids(name: str, value: object, ndim: int) -> np.ndarray:
    a = as_array(name, value, ndim, "iu", "ints")
    bad = (a < 0) | (a > MAX_TOKEN_ID)
    if bad.any():
        raise ValueError(f"{name}{where(bad)} = {a[bad][0]}: token ids must be in [0, 2**31)")
    return a.astype(np.int64)


def check_logprobs(name: str, value: object, ndim: int) -> np.ndarray:
    a = as_array(name, value, ndim, "fiu", "floats")
    with np.errstate(over="ignore"):  # below float32's range means probability 0: -inf
        a = a.astype(np.float32)
    bad = np.isnan(a) | (a > LOGPROB_EPS)
    if bad.any():
        raise ValueError(
            f"{name}{where(bad)} = {a[bad][0]}: log-probabilities must be <= 0 (or -inf)"
        )
    return np.where(a >= 0, np.float32(0.0), a)  # clamps the noise, and -0.0 to 0.0


def as_rows(a: np.ndarray) -> tuple[tuple[Any, ...], ...]:
    return tuple(map(tuple, a.tolist()))


def check_timestamp(name: str, value: object) -> float:
    return check_finite(name, value, nonnegative=True)
