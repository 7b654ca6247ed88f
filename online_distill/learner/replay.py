"""A bounded replay buffer of labeled examples, de-duplicated by prompt id.

At-least-once delivery means a prompt id can arrive twice (a restarted teacher re-labels
its uncommitted batch). The buffer remembers the last ``seen_capacity`` ids and drops
repeats, so a duplicate is neither trained as fresh data nor stored twice.
"""

from __future__ import annotations

import random
from collections import OrderedDict

from online_distill.messages import LabeledExample


class ReplayBuffer:
    """Keeps the newest ``capacity`` examples for replay; remembers more ids for dedup."""

    def __init__(self, capacity: int, seed: int = 0, seen_capacity: int | None = None) -> None:
        if capacity < 0:
            raise ValueError(f"replay capacity={capacity}: must be >= 0")
        self.capacity = capacity
        self.seen_capacity = seen_capacity or max(100_000, 10 * capacity)
        self._items: OrderedDict[str, LabeledExample] = OrderedDict()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._rng = random.Random(seed)
        self.duplicates = 0
        """Examples refused because their prompt id was already seen."""

    def seen(self, prompt_id: str) -> bool:
        return prompt_id in self._seen

    def add(self, example: LabeledExample) -> bool:
        """Store the example; False (and counted) when its prompt id was seen before."""
        if example.prompt_id in self._seen:
            self.duplicates += 1
            return False
        self._seen[example.prompt_id] = None
        if len(self._seen) > self.seen_capacity:
            self._seen.popitem(last=False)
        if self.capacity:
            self._items[example.prompt_id] = example
            if len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return True

    def sample(self, n: int, exclude: set[str] | None = None) -> list[LabeledExample]:
        """Up to ``n`` distinct stored examples, uniformly, skipping ids in ``exclude``."""
        pool = [ex for pid, ex in self._items.items() if not exclude or pid not in exclude]
        return self._rng.sample(pool, min(n, len(pool)))

    def __len__(self) -> int:
        return len(self._items)
