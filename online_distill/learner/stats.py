"""What the learner stage reports and raises: its counters since start
(:class:`LearnerStageStats`, mutable, read by the metrics exporter), what a learner process
reports (:class:`LearnerSnapshot`, frozen plain values: it crosses Ray as it is and the
status line reads its attributes; :class:`WorkerReport` for a Ray Train worker), the
prompt-time figures a version's manifest records, and the fatal non-finite-weights error."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from online_distill.learner.trainer import StepStats


def prompt_time_metrics(times: list[float]) -> dict[str, float]:
    """What a version's manifest records of the prompts it trained on since its parent:
    how many, and when the newest and the median one entered the stream (unix s)."""
    if not times:
        return {"prompts_trained": 0.0}
    ordered = sorted(times)
    return {"prompts_trained": float(len(ordered)), "prompt_newest_at": ordered[-1],
            "prompt_median_at": ordered[len(ordered) // 2]}


@dataclass(frozen=True, slots=True)
class LearnerSnapshot:
    """One learner process's state: its counters since start (see
    :class:`LearnerStageStats`), the last step, what it published, its lag and drift. The
    multi-worker job reports rank 0's, with every worker's step and the group's restarts."""

    step: int = 0
    skipped_steps: int = 0
    """Steps with no update (a non-finite loss or gradient)."""
    loss: float | None = None
    """The last step's loss; None before the first step."""
    tokens: int = 0
    """The last step's continuation tokens."""
    polled: int = 0
    """Labeled-example records read; each is trained, skipped by a counted reason,
    dead-lettered, still waiting (``pending``) or in the step under way (``in_step``)."""
    fresh_trained: int = 0
    duplicates: int = 0
    held_out: int = 0
    critic_dropped: int = 0
    empty: int = 0
    stale: int = 0
    """Skipped by the freshness policy: older than ``learner.max_lag_s``."""
    overrun: int = 0
    """Skipped by the freshness policy: the oldest beyond 4 waiting batches."""
    self_distilled: int = 0
    by_origin: dict[str, int] = field(default_factory=dict)
    checkpoints: int = 0
    checkpoint_failures: int = 0
    non_finite_steps: int = 0
    non_finite_dropped: int = 0
    published: tuple[int, ...] = ()
    """Versions this process published, oldest first."""
    pending: int = 0
    """Examples polled and waiting for a step."""
    in_step: int = 0
    """Fresh examples in the step under way (taken off ``pending``, not yet trained)."""
    train_seconds: float = 0.0
    trained_tokens: int = 0
    live: dict[str, float] | None = None
    """Mean ``kl`` and ``agreement`` over the live examples of the last step with any."""
    critics: dict[str, Any] | None = None
    """The critic chain's counters (:meth:`CriticChain.snapshot`); None without critics."""
    drift: dict[str, Any] | None = None
    """The drift monitor's state (:meth:`DriftMonitor.snapshot`)."""
    lag: int = -1
    """Labels of its partitions not yet committed; -1: not known yet."""
    workers: dict[int, int] = field(default_factory=dict)
    """Multi-worker job only: each worker's step, by rank."""
    restarts: int = 0
    """Multi-worker job only: restarts of the worker group after a failure."""


@dataclass(frozen=True, slots=True)
class WorkerReport:
    """What one Ray Train worker of a multi-worker learner reports to its job."""

    snapshot: LearnerSnapshot
    losses: tuple[float, ...] = ()
    """The losses of its last steps (up to 1000), oldest first."""
    param_digest: str | None = None
    """A fingerprint of its weights, in the report after its final checkpoint only."""


class NonFiniteWeights(RuntimeError):
    """The student's weights hold NaN or inf: training cannot go on from them."""


@dataclass
class LearnerStageStats:
    """Counters since start."""

    polled: int = 0
    fresh_trained: int = 0
    duplicates: int = 0
    held_out: int = 0
    """Examples kept out of training for the evaluation gate's rolling probe."""
    critic_dropped: int = 0
    """Examples none of whose pseudo-targets passed the critics."""
    empty: int = 0
    """Examples with no token to train on (every pseudo-target empty): skipped."""
    stale: int = 0
    """Examples skipped as older than ``learner.max_lag_s`` (freshness first)."""
    overrun: int = 0
    """Examples skipped as the oldest beyond 4 waiting batches (freshness first)."""
    self_distilled: int = 0
    """Student-labeled examples trained on (self-distillation rounds)."""
    by_origin: dict[str, int] = field(default_factory=dict)
    """Fresh examples trained on, by the origin of their prompt (traffic or feedback)."""
    in_step: int = 0
    """Fresh examples in the step under way (set before they leave ``pending``)."""
    checkpoints: int = 0
    checkpoint_failures: int = 0
    """Checkpoints that could not be written (disk full, I/O error); their offsets stayed
    uncommitted, so a restart re-trains from the last good checkpoint."""
    published: int = 0
    non_finite_steps: int = 0
    """Steps with a non-finite loss or gradient (no update; their examples retried)."""
    non_finite_dropped: int = 0
    """Examples dead-lettered because their loss alone was not finite."""
    last_step: StepStats | None = None
    train_seconds: float = 0.0
    """Wall time inside training steps (sampling, forward, backward, optimizer)."""
    trained_tokens: int = 0
    by_topic: Counter[str] = field(default_factory=Counter)
    """Records polled, per topic."""
    recent_steps: deque[StepStats] = field(default_factory=lambda: deque(maxlen=1024))
    """Steps not yet exported (drained by the metrics exporter)."""
    recent_live: deque[tuple[float, float, float, float]] = field(
        default_factory=lambda: deque(maxlen=8192))
    """(kl, jsd, agreement, energy) of each live-traffic example trained on, not yet
    exported (see :mod:`online_distill.learner.live_signals`)."""
    last_live: dict[str, float] | None = None
    """Mean KL and agreement over the live examples of the last step that had any."""

    def snapshot(self, *, step: int, skipped_steps: int, pending: int,
                 published: tuple[int, ...], critics: dict[str, Any] | None,
                 drift: dict[str, Any] | None, lag: int = -1) -> LearnerSnapshot:
        """The counters now (copies), with what the learner process knows beyond the
        stage's counters (the trainer's step, the critics, the drift monitor, the lag)."""
        last = self.last_step
        return LearnerSnapshot(
            step=step, skipped_steps=skipped_steps,
            loss=last.loss if last else None, tokens=last.tokens if last else 0,
            polled=self.polled, fresh_trained=self.fresh_trained, duplicates=self.duplicates,
            held_out=self.held_out, critic_dropped=self.critic_dropped, empty=self.empty,
            stale=self.stale, overrun=self.overrun,
            self_distilled=self.self_distilled, by_origin=dict(self.by_origin),
            checkpoints=self.checkpoints, checkpoint_failures=self.checkpoint_failures,
            non_finite_steps=self.non_finite_steps,
            non_finite_dropped=self.non_finite_dropped, published=published,
            pending=pending, in_step=self.in_step, train_seconds=self.train_seconds,
            trained_tokens=self.trained_tokens,
            live=dict(self.last_live) if self.last_live is not None else None,
            critics=critics, drift=drift, lag=lag)

def feedback_share(by_origin: Mapping[str, int]) -> float:
    """Share of trained examples whose prompt came from the OOD-feedback loop (0 when none)."""
    total = sum(by_origin.values())
    return by_origin.get("feedback", 0) / total if total else 0.0
