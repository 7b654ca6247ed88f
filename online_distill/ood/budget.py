"""The feedback share cap: synthetic prompts stay a bounded share of what the teacher gets."""

from __future__ import annotations

import math
import sys


class FeedbackBudget:
    """Counts traffic and feedback prompts and says how many more feedback prompts fit.

    With t traffic and f feedback prompts so far, ``allowance()`` is the largest x with
    ``(f + x) / (t + f + x) <= cap``, i.e. ``x = floor((cap * (t + f) - f) / (1 - cap))``.
    Counts are cumulative since the stage started.
    """

    def __init__(self, cap: float) -> None:
        if not 0.0 <= cap <= 1.0:
            raise ValueError(f"cap must be in [0, 1], got {cap}")
        self.cap = cap
        self.traffic = 0
        self.feedback = 0

    def saw_traffic(self, n: int) -> None:
        """``n`` more traffic prompts reached the teacher."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self.traffic += n

    def sent_feedback(self, n: int) -> None:
        """``n`` more feedback prompts were produced."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self.feedback += n

    def share(self) -> float:
        """Feedback share so far (0 when nothing was counted)."""
        total = self.traffic + self.feedback
        return self.feedback / total if total else 0.0

    def _fits(self, extra: int) -> bool:
        f = self.feedback + extra
        return f <= self.cap * (self.traffic + f) + 1e-9

    def allowance(self) -> int:
        """How many more feedback prompts keep the share at or under ``cap``."""
        if self.cap >= 1.0:
            return sys.maxsize
        t, f = self.traffic, self.feedback
        x = max(0, math.floor((self.cap * (t + f) - f) / (1.0 - self.cap) + 1e-6))
        while x > 0 and not self._fits(x):  # float rounding: never overshoot the cap
            x -= 1
        return x
