"""What the OOD-feedback stage counts (:class:`OODStats`, mutable, read by the metrics
exporter) and what it reports (:class:`OODSnapshot`, frozen plain values: it crosses Ray as
it is and the status line reads its attributes)."""

from __future__ import annotations

from dataclasses import dataclass, field

DROP_REASONS: tuple[str, ...] = ("invalid", "duplicate", "noise", "over_budget")
"""Why a generated continuation did not become a feedback prompt."""


@dataclass(frozen=True, slots=True)
class OODSnapshot:
    """The OOD actor's counters since its start (see :class:`OODStats` for each one), with
    the student version it scores under."""

    polled: int = 0
    dead_lettered: int = 0
    scored: int = 0
    unscored: int = 0
    ignored_feedback: int = 0
    unsampled: int = 0
    unreadable: int = 0
    judged: int = 0
    tail_hits: int = 0
    tail_size: int = 0
    threshold: float | None = None
    rounds: int = 0
    failed_rounds: int = 0
    generated: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    kept_by_kind: dict[str, int] = field(default_factory=dict)
    by_topic: dict[str, int] = field(default_factory=dict)
    tail_by_kind: dict[str, int] = field(default_factory=dict)
    tail_share: float = 0.0
    """Share of judged traffic above the tail threshold."""
    student_version: int | None = None
    """The student version prompts are scored under (None: the initial student)."""


@dataclass
class OODStats:
    """Counters of one stage instance since start (the metrics module exports them)."""

    polled: int = 0
    dead_lettered: int = 0
    scored: int = 0
    """Traffic prompts scored and added to the window."""
    unscored: int = 0
    """Traffic prompts whose energy was not finite (not added to the window)."""
    ignored_feedback: int = 0
    """Feedback prompts met on the input topics (remembered for dedup, not scored)."""
    unsampled: int = 0
    """Traffic left unscored by ``ood.sample_share``."""
    unreadable: int = 0
    """Labels that did not decode (``ood.score=answer_gap``; the learner dead-letters them)."""
    judged: int = 0
    """Scored traffic prompts compared with the tail threshold (window >= min_window)."""
    tail_hits: int = 0
    """Of those, the ones above the threshold (offered to the tail set)."""
    tail_size: int = 0
    threshold: float | None = None
    """The window's tail_quantile after the last scored batch; None before min_window."""
    rounds: int = 0
    failed_rounds: int = 0
    generated: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    """Generated continuations dropped, per reason of DROP_REASONS."""
    kept_by_kind: dict[str, int] = field(default_factory=dict)
    """Feedback prompts produced, per kind."""
    by_topic: dict[str, int] = field(default_factory=dict)
    """Records polled, per topic."""
    tail_by_kind: dict[str, int] = field(default_factory=dict)
    """The tail set's content per kind, after the last batch."""

    @property
    def tail_share(self) -> float:
        """Share of judged traffic above the tail threshold (about 1 - tail_quantile)."""
        return self.tail_hits / self.judged if self.judged else 0.0

    def drop(self, reason: str, n: int = 1) -> None:
        """Count ``n`` continuations dropped for ``reason``."""
        self.dropped[reason] = self.dropped.get(reason, 0) + n

    def snapshot(self, student_version: int | None = None) -> OODSnapshot:
        """The counters now (copies), ``tail_share`` included, with the version the
        scorer uses (the actor's scorer knows it)."""
        return OODSnapshot(
            polled=self.polled, dead_lettered=self.dead_lettered, scored=self.scored,
            unscored=self.unscored, ignored_feedback=self.ignored_feedback,
            unsampled=self.unsampled, unreadable=self.unreadable,
            judged=self.judged, tail_hits=self.tail_hits, tail_size=self.tail_size,
            threshold=self.threshold, rounds=self.rounds, failed_rounds=self.failed_rounds,
            generated=self.generated, kept=self.kept, dropped=dict(self.dropped),
            kept_by_kind=dict(self.kept_by_kind), by_topic=dict(self.by_topic),
            tail_by_kind=dict(self.tail_by_kind), tail_share=self.tail_share,
            student_version=student_version)
