"""The tail prompts kept as few-shot examples, and energy-based noise rejection."""

from __future__ import annotations

import random
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from .window import EnergyWindow


@dataclass(frozen=True, slots=True)
class TailExample:
    """A traffic prompt whose energy was above the tail threshold when it was scored."""

    text: str
    energy: float
    kind: str = ""
    """Task tag of the prompt; "" when unknown."""
    id: str = ""
    """Id of the PromptMessage (becomes a parent id of the feedback it inspires)."""
    chat: bool = False
    """The prompt was a conversation (``text`` is its last user turn)."""


class TailSet:
    """The latest ``capacity`` distinct tail prompts (by text; a repeat refreshes its entry)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: OrderedDict[str, TailExample] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, example: TailExample) -> None:
        """Keep ``example`` as the newest entry, evicting the oldest beyond capacity."""
        self._items.pop(example.text, None)
        self._items[example.text] = example
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def examples(self) -> list[TailExample]:
        """Every entry, oldest first."""
        return list(self._items.values())

    def kinds(self) -> Counter[str]:
        """Entries per kind ("" counts the prompts without one)."""
        return Counter(e.kind for e in self._items.values())

    def pick(self, k: int, rng: random.Random, same_kind: bool = True) -> list[TailExample]:
        """Up to ``k`` distinct few-shot examples drawn uniformly without replacement.

        With ``same_kind`` they share one kind: a kind is chosen with probability
        proportional to its count in the tail, then up to ``k`` of its entries (fewer when
        it has fewer). Prompts without a kind form one group of their own, so a tail with
        no kinds at all gives any ``k``. Empty tail: [].
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        pool = list(self._items.values())
        if not pool:
            return []
        if same_kind:
            counts = self.kinds()
            kinds = sorted(counts)
            kind = rng.choices(kinds, weights=[counts[c] for c in kinds])[0]
            pool = [e for e in pool if e.kind == kind]
        return rng.sample(pool, min(k, len(pool)))


class NoiseFilter:
    """GOLD's noise rejection: drop a generated prompt whose score is far above what it
    imitates.

    One-sided, in standard deviations of the traffic window: a generated prompt is noise
    when its score exceeds its reference by more than ``zscore_threshold`` window stds. The
    reference is the highest score among the tail examples it was generated from (or the
    window's mean when none is given): tail-like prompts are *meant* to be far from the bulk,
    so measuring them against the bulk would reject exactly the prompts GOLD asks for (on
    the demo it dropped 611 of 651 scored mul prompts); gibberish lies far beyond even its
    parents. A window with fewer than 2 values keeps everything (no spread to measure with).
    """

    def __init__(self, zscore_threshold: float) -> None:
        if zscore_threshold <= 0:
            raise ValueError(f"zscore_threshold must be > 0, got {zscore_threshold}")
        self.zscore_threshold = zscore_threshold
        self.kept = 0
        self.dropped = 0

    def keep(self, energy: float, window: EnergyWindow, parents: Sequence[float] = ()) -> bool:
        """True to keep the prompt; counts the decision."""
        ok = True
        if len(window) >= 2:
            reference = max(parents) if parents else window.mean()
            spread = window.std()
            ok = spread <= 0 or (energy - reference) / spread <= self.zscore_threshold
        if ok:
            self.kept += 1
        else:
            self.dropped += 1
        return ok
