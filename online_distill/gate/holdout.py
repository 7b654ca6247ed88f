"""Live prompts held out of training so the evaluation gate can score today's traffic.

Whether a prompt is held out depends only on its id
(:func:`online_distill.messages.holdout.held_out`), so the learner and the gate agree
without talking to each other.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from online_distill.messages import LabeledExample
from online_distill.messages.holdout import held_out

__all__ = ["HoldoutBuffer", "held_out"]


class HoldoutBuffer:
    """The held-out labeled examples the gate scores students on.

    ``fixed``: the first ``fixed_size`` held-out examples seen, then frozen (a regression
    guard for tasks without their own probe set); ``rolling``: the latest ``rolling_size``
    (follows drifting traffic). ``generation`` counts changes, so scores can be cached.
    """

    def __init__(self, share: float, fixed_size: int, rolling_size: int) -> None:
        self.share = share
        self.fixed: list[LabeledExample] = []
        self.fixed_size = fixed_size
        self.rolling: deque[LabeledExample] = deque(maxlen=max(1, rolling_size))
        self.rolling_size = rolling_size
        self.generation = 0
        self._ids: set[str] = set()

    def offer(self, examples: Iterable[LabeledExample]) -> int:
        """Keep the held-out examples among ``examples``; returns how many were kept."""
        kept = 0
        for ex in examples:
            if not held_out(ex.prompt_id, self.share) or ex.prompt_id in self._ids:
                continue
            if not ex.pseudo_targets:
                continue
            self._ids.add(ex.prompt_id)
            kept += 1
            if len(self.fixed) < self.fixed_size:
                self.fixed.append(ex)
            elif self.rolling_size > 0:
                if len(self.rolling) == self.rolling.maxlen:
                    self._ids.discard(self.rolling[0].prompt_id)
                self.rolling.append(ex)
        if kept:
            self.generation += 1
        return kept
