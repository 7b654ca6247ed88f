"""Drift detection on the prompts a learner trains on: reference window against current window.

Per live prompt the learner reports four signals (`SIGNALS`): the prompt's *energy* under the
student, its *length* in tokens, its *tokens* (ids) and the student-teacher *divergence* (KL).
Each signal compares the newest `window` prompts (current) with the `window` prompts just before
them (reference) and exports a score; `DriftMonitor` raises an alert while a score is above the
threshold and logs every change.

Two scores (`Method`):

- ``psi``, the population stability index: the reference's quantiles cut the line into k
  equal-mass bins, r and c are the shares of the reference and the current in each bin, and
  PSI = sum (c - r) ln(c / r). Rules of thumb: < 0.1 stable, 0.1-0.2 moderate, > 0.2 significant.
  Without drift, two windows of n values each give about 2 (k - 1) / n from sampling noise alone
  (0.036 for n = 500, k = 10), so a 0.2 threshold is far above noise at the default window 500.
- ``ks``, the two-sample Kolmogorov-Smirnov statistic: the largest distance between the two
  empirical CDFs, in [0, 1]; about 0.1 is a usual bar at these window sizes. Token ids have no
  order, so for the token signal ``ks`` means the total variation distance, the largest
  difference of probability the two windows give to any set of tokens.

Why adjacent windows rather than a frozen reference: the student keeps learning, so its energies
(and divergences) move slowly on their own and a frozen reference would end up permanently in
alert. Adjacent windows flag a change within about two windows and settle again once both windows
hold the new traffic. The trade-off: a drift slower than about a window's worth of change per
window is not flagged; the plots of the raw signals still show it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import chain, islice
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

SIGNALS: tuple[str, ...] = ("energy", "length", "tokens", "divergence")
"""The signals of one learner, in the order they are reported."""
Method = Literal["psi", "ks"]
_K = TypeVar("_K", bound=Hashable)
_F64 = npt.NDArray[np.float64]
_OTHER = "other"
"""The category key of every token id outside the reference's most frequent ones."""
_MAX_EVENTS = 100
"""How many events `DriftMonitor.events` keeps."""


def _sample(x: npt.ArrayLike) -> _F64:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"expected a non-empty 1-D sample, got shape {arr.shape}")
    return arr


def _psi_of_counts(r: _F64, c: _F64, eps: float) -> float:
    """sum (c - r) ln(c / r) of two count vectors (k,), shares floored at eps and renormalised."""
    rp, cp = np.maximum(r / r.sum(), eps), np.maximum(c / c.sum(), eps)  # (k,), (k,)
    rp, cp = rp / rp.sum(), cp / cp.sum()
    return float(np.sum((cp - rp) * np.log(cp / rp)))


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10, eps: float = 1e-4) -> float:
    """Population stability index of two samples over the reference's equal-mass bins.

    Tied reference quantiles (integer lengths, a constant sample) merge bins; bins are closed on
    the right and the outer ones are open to -inf and +inf. Empty shares are floored at `eps`.
    """
    ref, cur = _sample(reference), _sample(current)
    edges = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1]))  # (m,), m < bins
    r = np.bincount(np.searchsorted(edges, ref), minlength=edges.size + 1)  # (m + 1,)
    c = np.bincount(np.searchsorted(edges, cur), minlength=edges.size + 1)  # (m + 1,)
    return _psi_of_counts(r.astype(np.float64), c.astype(np.float64), eps)


def ks(reference: np.ndarray, current: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic sup |F_ref - F_cur|, exact on ties."""
    ref, cur = np.sort(_sample(reference)), np.sort(_sample(current))
    grid = np.concatenate([ref, cur])  # (n + m,): every jump of either CDF
    f_ref = np.searchsorted(ref, grid, side="right") / ref.size  # (n + m,)
    f_cur = np.searchsorted(cur, grid, side="right") / cur.size  # (n + m,)
    return float(np.max(np.abs(f_ref - f_cur)))


def _aligned(reference: Mapping[_K, float], current: Mapping[_K, float]) -> tuple[_F64, _F64]:
    """The two count vectors (k,) over the union of categories."""
    keys = list(reference.keys() | current.keys())
    r = np.array([reference.get(k, 0.0) for k in keys], dtype=np.float64)  # (k,)
    c = np.array([current.get(k, 0.0) for k in keys], dtype=np.float64)  # (k,)
    if r.sum() <= 0 or c.sum() <= 0:
        raise ValueError("both distributions need a positive total count")
    return r, c


def categorical_psi(
    reference: Mapping[_K, float], current: Mapping[_K, float], eps: float = 1e-4
) -> float:
    """PSI of two categorical distributions given as counts (or weights) per category."""
    return _psi_of_counts(*_aligned(reference, current), eps)


def total_variation(reference: Mapping[_K, float], current: Mapping[_K, float]) -> float:
    """0.5 * sum |p - q| of the normalised counts: the largest |P(A) - Q(A)| over sets A."""
    r, c = _aligned(reference, current)
    return float(0.5 * np.sum(np.abs(r / r.sum() - c / c.sum())))


class _Windowed:
    """Two adjacent windows of `window` items each and a score cached for `stride` new items."""

    def __init__(self, window: int, method: Method, stride: int | None) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if method not in ("psi", "ks"):
            raise ValueError(f"method must be 'psi' or 'ks', got {method!r}")
        self.window = window
        self.method: Method = method
        self.stride = max(1, window // 4) if stride is None else stride
        """How many new items trigger a recomputation of the score."""
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.seen = 0
        """Items observed so far."""
        self._score: float | None = None
        self._score_at = -1

    @property
    def ready(self) -> bool:
        """Whether both windows are full."""
        return self.seen >= 2 * self.window

    @property
    def score(self) -> float | None:
        """The drift score of current against reference; None until both windows are full."""
        if not self.ready:
            return None
        if self._score_at < 0 or self.seen - self._score_at >= self.stride:
            self._score, self._score_at = self._compute(), self.seen
        return self._score

    def _compute(self) -> float:
        raise NotImplementedError


class WindowDrift(_Windowed):
    """One continuous signal: the newest `window` values (current) against the `window` values
    just before them (reference). Adjacent windows flag a change within about two windows and
    settle after it; a drift slower than about a window's worth per window is not flagged."""

    def __init__(self, window: int, method: Method = "psi", stride: int | None = None) -> None:
        super().__init__(window, method, stride)
        self._values: deque[float] = deque(maxlen=2 * window)
        self.ignored = 0
        """Non-finite values dropped by `observe`."""

    def observe(self, values: Iterable[float]) -> None:
        """Append values; NaN and infinities are ignored and counted in `ignored`."""
        arr = np.fromiter(values, dtype=np.float64)  # (n,)
        finite = arr[np.isfinite(arr)]  # (f,)
        self.ignored += arr.size - finite.size
        self.seen += finite.size
        self._values.extend(finite.tolist())

    def reset(self) -> None:
        """Forget every value (the values' meaning changed, e.g. a new scoring model)."""
        self._values.clear()
        self.seen, self._score, self._score_at = 0, None, -1

    def _windows(self) -> tuple[_F64, _F64]:
        both = np.fromiter(self._values, dtype=np.float64, count=len(self._values))  # (2w,)
        return both[: self.window], both[self.window :]

    def _compute(self) -> float:
        ref, cur = self._windows()
        return psi(ref, cur) if self.method == "psi" else ks(ref, cur)

    def tail_share(self, quantile: float) -> float | None:
        """Share of the current window above the reference's `quantile` quantile (about
        1 - quantile without drift); None until both windows are full."""
        if not self.ready:
            return None
        ref, cur = self._windows()
        return float(np.mean(cur > np.quantile(ref, quantile)))


class TokenDrift(_Windowed):
    """Token distribution of prompts: counts of token ids over the prompts of each window (the
    window counted in prompts). Categories: the reference's `max_categories` most frequent ids and
    one 'other' bucket; scored by `categorical_psi` (psi) or `total_variation` (ks)."""

    def __init__(
        self, window: int, method: Method = "psi", stride: int | None = None,
        max_categories: int = 50,
    ) -> None:
        super().__init__(window, method, stride)
        self.max_categories = max_categories
        self._prompts: deque[tuple[int, ...]] = deque(maxlen=2 * window)

    def observe(self, prompts: Iterable[Sequence[int]]) -> None:
        """Append the token ids of each prompt."""
        for ids in prompts:
            self._prompts.append(tuple(ids))
            self.seen += 1

    def _compute(self) -> float:
        ref = Counter(chain.from_iterable(islice(self._prompts, 0, self.window)))
        cur = Counter(chain.from_iterable(islice(self._prompts, self.window, None)))
        top = [tok for tok, _ in ref.most_common(self.max_categories)]
        r: dict[Hashable, float] = {tok: float(ref[tok]) for tok in top}
        c: dict[Hashable, float] = {tok: float(cur[tok]) for tok in top}
        r[_OTHER] = float(ref.total() - sum(ref[tok] for tok in top))
        c[_OTHER] = float(cur.total() - sum(cur[tok] for tok in top))
        if sum(r.values()) <= 0 or sum(c.values()) <= 0:
            return 0.0  # windows of empty prompts: nothing to compare
        return categorical_psi(r, c) if self.method == "psi" else total_variation(r, c)


@dataclass
class DriftEvent:
    """One stretch of time during which a signal's score stayed above the threshold."""

    signal: str
    """The name of the signal, one of `SIGNALS`."""
    started_at: float
    """clock() when the score first went above the threshold."""
    peak: float
    """The highest score seen during the event."""
    ended_at: float | None = None
    """clock() when the score went back to <= threshold; None while the event lasts."""


class DriftMonitor:
    """All signals of one learner. `threshold` applies to every signal's score."""

    def __init__(
        self, window: int, threshold: float, method: Method = "psi", tail_quantile: float = 0.99,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0.0 < tail_quantile < 1.0:
            raise ValueError(f"tail_quantile must be in (0, 1), got {tail_quantile}")
        self.window, self.threshold, self.method = window, threshold, method
        self.tail_quantile = tail_quantile
        self._clock = clock
        self.energy = WindowDrift(window, method)
        self.length = WindowDrift(window, method)
        self.tokens = TokenDrift(window, method)
        self.divergence = WindowDrift(window, method)
        self._signals: dict[str, WindowDrift | TokenDrift] = {
            "energy": self.energy, "length": self.length,
            "tokens": self.tokens, "divergence": self.divergence,
        }
        self._active: dict[str, DriftEvent] = {}
        self.events: list[DriftEvent] = []
        """All events so far, oldest first, bounded to the last 100."""
        self.started: dict[str, int] = dict.fromkeys(SIGNALS, 0)
        """Events started so far, per signal (never bounded): a counter for Prometheus,
        which a detection shorter than its scrape interval cannot slip past."""

    def observe(
        self, *, energy: Sequence[float] = (), length: Sequence[int] = (),
        tokens: Sequence[Sequence[int]] = (), divergence: Sequence[float] = (),
    ) -> list[DriftEvent]:
        """Feed the signals, update each alert state; return the events started or ended now."""
        self.energy.observe(energy)
        self.length.observe(float(n) for n in length)
        self.tokens.observe(tokens)
        self.divergence.observe(divergence)
        now = self._clock()
        changed: list[DriftEvent] = []
        for name, score in self.scores().items():
            event = self._active.get(name)
            if score is not None and score > self.threshold:
                if event is not None:
                    event.peak = max(event.peak, score)
                    continue
                event = DriftEvent(signal=name, started_at=now, peak=score)
                self._active[name] = event
                self.events.append(event)
                del self.events[:-_MAX_EVENTS]
                self.started[name] += 1
                changed.append(event)
                log.warning(
                    "drift detected on %s: %s %.2f > threshold %.2f (last %d prompts vs the %d "
                    "before)", name, self.method, score, self.threshold, self.window, self.window,
                )
            elif event is not None:
                event.ended_at = now
                del self._active[name]
                changed.append(event)
                log.info(
                    "drift on %s ended after %.1f s (peak %s %.2f)",
                    name, now - event.started_at, self.method, event.peak,
                )
        return changed

    def scores(self) -> dict[str, float | None]:
        """The current score of every signal (None until its windows are full)."""
        return {name: self._signals[name].score for name in SIGNALS}

    def detected(self) -> dict[str, bool]:
        """Whether each signal is in alert now."""
        return {name: name in self._active for name in SIGNALS}

    def tail_share(self) -> float | None:
        """The energy signal's share of current traffic above the reference's tail quantile."""
        return self.energy.tail_share(self.tail_quantile)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able summary of the monitor's state."""
        return {
            "method": self.method, "threshold": self.threshold, "window": self.window,
            "scores": self.scores(), "detected": self.detected(), "tail_share": self.tail_share(),
            "events": [asdict(e) for e in self.events], "started": dict(self.started),
        }
