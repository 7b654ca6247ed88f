"""What the teacher stage counts (:class:`TeacherStats`, mutable, read by the metrics
exporter) and what it reports (:class:`TeacherSnapshot`, frozen plain values: it crosses Ray
as it is and the status line reads its attributes)."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class TeacherSnapshot:
    """One teacher actor's counters since its start, with its consumer's lag."""

    polled: int = 0
    labeled: int = 0
    dead_lettered: int = 0
    retries: int = 0
    batches: int = 0
    label_seconds: float = 0.0
    labeled_tokens: int = 0
    pseudo_targets: int = 0
    outages: int = 0
    outage_seconds: float = 0.0
    by_origin: dict[str, int] = field(default_factory=dict)
    """Prompts labeled, by origin (traffic or feedback)."""
    lag: int = -1
    """Records of its partitions not yet committed; -1: not known yet."""
    partitions: int = 0
    """Partitions its consumer holds."""


@dataclass
class TeacherStats:
    """Counters of one stage instance since start (the metrics module exports them)."""

    polled: int = 0
    labeled: int = 0
    dead_lettered: int = 0
    retries: int = 0
    batches: int = 0
    label_seconds: float = 0.0
    labeled_tokens: int = 0
    pseudo_targets: int = 0
    by_origin: dict[str, int] = field(default_factory=dict)
    by_topic: Counter[str] = field(default_factory=Counter)
    """Records polled, per input topic."""
    batch_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=4096))
    """Labeling time of each recent batch (drained by the metrics exporter)."""
    queue_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=4096))
    """Per recent prompt: from entering the stream to the teacher starting on it."""
    outages: int = 0
    """Batches put back because the backend failed every prompt (see the stage's docstring)."""
    outage_seconds: float = 0.0

    def snapshot(self, lag: int = -1, partitions: int = 0) -> TeacherSnapshot:
        """The counters now, with the consumer's ``lag`` and ``partitions`` (the actor's
        lag probe knows them)."""
        return TeacherSnapshot(
            polled=self.polled, labeled=self.labeled, dead_lettered=self.dead_lettered,
            retries=self.retries, batches=self.batches, label_seconds=self.label_seconds,
            labeled_tokens=self.labeled_tokens, pseudo_targets=self.pseudo_targets,
            outages=self.outages, outage_seconds=self.outage_seconds,
            by_origin=dict(self.by_origin), lag=lag, partitions=partitions)
