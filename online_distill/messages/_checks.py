"""Field checks for the message dataclasses: each returns the canonical value or raises
ValueError naming the field and saying what is wrong."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, overload

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
    """Token ids as an int array of any width (a record's u1/u2/u4 stays as it is: no copy)."""
    a = as_array(name, value, ndim, "iu", "ints")
    small = a.dtype.kind == "u" and a.dtype.itemsize <= 2  # u1/u2: in range by their type
    if a.size and not small and not (a.min() >= 0 and a.max() <= MAX_TOKEN_ID):
        bad = (a < 0) | (a > MAX_TOKEN_ID)
        raise ValueError(f"{name}{where(bad)} = {a[bad][0]}: token ids must be in [0, 2**31)")
    if a.dtype.kind not in "iu" or a.dtype == np.uint64 or not a.dtype.isnative:
        a = a.astype(np.int64)  # an empty float list; uint64 would mix with int64 as float64
    return a


def check_logprobs(name: str, value: object, ndim: int) -> np.ndarray:
    """Log-probabilities as float32; an array that is float32 already and needs no clamping
    is returned as it is (no copy)."""
    a = as_array(name, value, ndim, "fiu", "floats")
    if a.dtype == np.float16:  # a record's f2: exact in float32, one vectorised copy
        a = a.astype(np.float32)
    elif a.dtype != np.float32 or not a.dtype.isnative:
        with np.errstate(over="ignore"):  # below float32's range means probability 0: -inf
            a = a.astype(np.float32)
    if not a.size or a.max() < 0:  # the common case in one pass (a NaN makes the max NaN)
        return a
    bad = np.isnan(a) | (a > LOGPROB_EPS)
    if bad.any():
        raise ValueError(
            f"{name}{where(bad)} = {a[bad][0]}: log-probabilities must be <= 0 (or -inf)"
        )
    if ((a > 0) | ((a == 0) & np.signbit(a))).any():
        a = np.where(a >= 0, np.float32(0.0), a)  # clamps the noise, and -0.0 to 0.0
    return a


def check_timestamp(name: str, value: object) -> float:
    return check_finite(name, value, nonnegative=True)


# --- read-only arrays with a tuple's face -------------------------------------------------


def frozen(a: np.ndarray, value: object) -> FrozenArray:
    """`a`, which a check made from `value`, as a FrozenArray, copied only when needed.

    A read-only array is taken as it is: it is frozen data already (a decoded record's bytes,
    another message's array), so a decoded message views its record without a copy. A
    writeable array that may be the caller's (`value` itself, or a view of something) is
    copied, so that the caller's later writes cannot change the message.
    """
    if a.flags.writeable and (a is value or a.base is not None):
        a = a.copy()
    return FrozenArray(a)


class FrozenArray(Sequence[Any]):
    """A read-only numpy array (1-d or 2-d) that reads like the tuple it stands for.

    Messages keep their arrays in these: no per-token Python objects, yet ``len``, ``in``,
    iteration and indexing give Python ints/floats (rows of a 2-d array as tuples), a slice
    is a FrozenArray, and ``==`` and ``hash`` are by value: equal to another FrozenArray with
    the same shape and values (-inf equals -inf; NaN never occurs, the checks refuse it) and
    to the nested tuple of the same values, with that tuple's hash. ``.array`` (or
    ``np.asarray``) is the array itself, without a copy; ``.tolist()`` gives plain lists.
    """

    __slots__ = ("array", "_hash")

    array: np.ndarray
    _hash: int | None

    def __init__(self, array: np.ndarray) -> None:
        """Wrap `array` without a copy; the caller hands it over (see `frozen`)."""
        if array.flags.writeable:
            array = array.view()
            array.flags.writeable = False
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "_hash", None)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("FrozenArray is immutable")

    def __reduce__(self) -> tuple[type[FrozenArray], tuple[np.ndarray]]:
        return FrozenArray, (self.array,)

    def __len__(self) -> int:
        return int(self.array.shape[0])

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> FrozenArray: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return FrozenArray(self.array[index])
        item = self.array[index]
        return item.item() if self.array.ndim == 1 else tuple(item.tolist())

    def __iter__(self) -> Iterator[Any]:
        rows = self.array.tolist()
        return iter(rows) if self.array.ndim == 1 else map(tuple, rows)

    def __contains__(self, value: object) -> bool:
        return value in self.as_tuple()

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return self.array.astype(self.array.dtype if dtype is None else dtype, copy=bool(copy))

    def tolist(self) -> list[Any]:
        """Plain (nested) lists of Python ints or floats, for JSON."""
        return list(self.array.tolist())

    def as_tuple(self) -> tuple[Any, ...]:
        """The (nested) tuple of Python values this array stands for."""
        rows = self.array.tolist()
        return tuple(rows) if self.array.ndim == 1 else tuple(map(tuple, rows))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenArray):
            a, b = self.array, other.array
            return a is b or (a.shape == b.shape and bool(np.array_equal(a, b)))
        if isinstance(other, tuple):
            return self.as_tuple() == other
        return NotImplemented

    def __hash__(self) -> int:
        h = self._hash
        if h is None:
            h = hash(self.as_tuple())
            object.__setattr__(self, "_hash", h)
        return h

    def __repr__(self) -> str:
        return f"FrozenArray({self.as_tuple()!r}, dtype={self.array.dtype})"
