"""The reference distribution of recent energies: a sliding window with exact statistics."""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterable


class EnergyWindow:
    """The latest ``size`` energy scores, kept in arrival order and sorted.

    Insertion and eviction are O(size) list moves (bisect + insort), quantiles O(1), mean
    and standard deviation O(size) once per change (cached): fine for a few thousand values.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.size = size
        self._order: deque[float] = deque()
        self._sorted: list[float] = []
        self._moments: tuple[float, float] | None = None

    def __len__(self) -> int:
        return len(self._order)

    def add(self, values: Iterable[float]) -> None:
        """Append values (oldest ones beyond ``size`` are evicted); non-finite ones raise."""
        for value in values:
            v = float(value)
            if not math.isfinite(v):
                raise ValueError(f"energy must be finite, got {value}")
            self._order.append(v)
            insort(self._sorted, v)
            if len(self._order) > self.size:
                old = self._order.popleft()
                del self._sorted[bisect_left(self._sorted, old)]
        self._moments = None

    def quantile(self, q: float) -> float:
        """The q-quantile, linear interpolation between order statistics (numpy's default)."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {q}")
        if not self._sorted:
            raise ValueError("quantile of an empty window")
        pos = q * (len(self._sorted) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(self._sorted) - 1)
        frac = pos - lo
        return self._sorted[lo] + (self._sorted[hi] - self._sorted[lo]) * frac

    def _stats(self) -> tuple[float, float]:
        if self._moments is None:
            n = len(self._sorted)
            if n == 0:
                self._moments = (0.0, 0.0)
            else:
                mean = math.fsum(self._sorted) / n
                var = math.fsum((v - mean) ** 2 for v in self._sorted) / n
                self._moments = (mean, math.sqrt(var))
        return self._moments

    def mean(self) -> float:
        """Mean of the window (0 when empty)."""
        return self._stats()[0]

    def std(self) -> float:
        """Population standard deviation of the window (0 when empty)."""
        return self._stats()[1]

    def zscore(self, x: float) -> float:
        """``(x - mean) / std``; with std 0: 0 at the mean, else +-inf."""
        mean, std = self._stats()
        if std > 0:
            return (x - mean) / std
        return 0.0 if x == mean else math.copysign(math.inf, x - mean)
