"""What watches a finished training step, outside the step itself.

The learner stage trains; after each step that took an update, each observer sees the
step's number, its fresh examples (in the order they trained) and its stats. None of them
can change what was trained or when offsets commit.

- :class:`AuditLog`: one line ``<step> <prompt id>`` per fresh example in
  ``run_dir/trained_ids.log``, so an operator (or a test) can tell which prompts trained
  which step; it survives restarts (append).
- :class:`LiveSignalsObserver`: the live-traffic signals of the step's forward pass
  (:mod:`online_distill.learner.live_signals`) into the stage's stats for the metrics.
- :class:`DriftObserver`: the live prompts' energy, length, tokens and divergence into the
  drift monitor, energies scored under a frozen reference copy of the student
  (:mod:`online_distill.learner.drift_reference`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from transformers import PreTrainedModel

from online_distill.learner.drift import DriftMonitor
from online_distill.learner.drift_reference import ReferenceEnergy
from online_distill.learner.live_signals import LiveSignals
from online_distill.learner.stats import LearnerStageStats
from online_distill.learner.trainer import StepStats
from online_distill.messages import LabeledExample


class StepObserver(Protocol):
    """Sees each finished step (an update was taken)."""

    def observe(self, step: int, fresh: Sequence[LabeledExample], stats: StepStats) -> None:
        """``fresh``: the step's fresh examples, the first ``len(fresh)`` of its batch."""
        ...


def live_traffic(fresh: Sequence[LabeledExample], sig: LiveSignals) -> list[tuple[int, int]]:
    """(index into ``fresh``, index into the signals) of the step's live-traffic examples:
    traffic and served prompts (feedback prompts and replayed or self-distilled examples are
    not live traffic)."""
    return [(i, j) for j, i in enumerate(sig.examples)
            if i < len(fresh) and fresh[i].origin != "feedback"]


class AuditLog:
    """``<step> <prompt id>`` per fresh example, appended and flushed after each step."""

    def __init__(self, path: str | Path) -> None:
        self._file = open(path, "a")  # noqa: SIM115 - open for the stage's lifetime

    def observe(self, step: int, fresh: Sequence[LabeledExample], stats: StepStats) -> None:
        self._file.write("".join(f"{step} {ex.prompt_id}\n" for ex in fresh))
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class LiveSignalsObserver:
    """Keeps each live example's (kl, jsd, agreement, energy) for the metrics exporter, and
    the step's mean KL and agreement for the status."""

    def __init__(self, stats: LearnerStageStats) -> None:
        self.stats = stats

    def observe(self, step: int, fresh: Sequence[LabeledExample], stats: StepStats) -> None:
        sig = stats.signals
        live = live_traffic(fresh, sig) if sig is not None else []
        if sig is None or not live:
            return
        for _, j in live:
            self.stats.recent_live.append((sig.kl[j], sig.jsd[j], sig.agreement[j],
                                           sig.energy[j]))
        self.stats.last_live = {
            "kl": sum(sig.kl[j] for _, j in live) / len(live),
            "agreement": sum(sig.agreement[j] for _, j in live) / len(live)}


class DriftObserver:
    """Feeds the drift monitor with the step's live prompts.

    With a ``reference`` the energies are re-scored under its frozen copy of the student
    (``student()`` is copied when it renews); without one, the training forward's energies
    are used, which also move as the student learns.
    """

    def __init__(self, drift: DriftMonitor, reference: ReferenceEnergy | None,
                 student: Callable[[], PreTrainedModel]) -> None:
        self.drift, self.reference, self.student = drift, reference, student

    def observe(self, step: int, fresh: Sequence[LabeledExample], stats: StepStats) -> None:
        sig = stats.signals
        live = live_traffic(fresh, sig) if sig is not None else []
        if sig is None or not live:
            return
        prompts = [fresh[i].prompt_token_ids for i, _ in live]
        energy = [sig.energy[j] for _, j in live]
        if self.reference is not None:
            energy, renewed = self.reference.score(
                self.student(), prompts, may_renew=not self.drift.detected()["energy"])
            if renewed:  # earlier energies came from another copy: restart the windows
                self.drift.energy.reset()
        self.drift.observe(energy=energy, length=[len(p) for p in prompts],
                           tokens=prompts, divergence=[sig.kl[j] for _, j in live])
