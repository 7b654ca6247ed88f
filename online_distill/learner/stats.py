"""What the learner stage reports and raises: its counters since start, the prompt-time
figures a version's manifest records, and the fatal non-finite-weights error."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from online_distill.learner.trainer import StepStats


def prompt_time_metrics(times: list[float]) -> dict[str, float]:
    """What a version's manifest records of the prompts it trained on since its parent:
    how many, and when the newest and the median one entered the stream (unix s)."""
    if not times:
        return {"prompts_trained": 0.0}
    ordered = sorted(times)
    return {"prompts_trained": float(len(ordered)), "prompt_newest_at": ordered[-1],
            "prompt_median_at": ordered[len(ordered) // 2]}


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
    self_distilled: int = 0
    """Student-labeled examples trained on (self-distillation rounds)."""
    by_origin: dict[str, int] = field(default_factory=dict)
    """Fresh examples trained on, by the origin of their prompt (traffic or feedback)."""
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
