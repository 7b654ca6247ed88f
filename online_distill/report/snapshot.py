"""What the supervisor gathers from the loop's actors at each status interval.

Each station reports one frozen snapshot of plain values, defined next to its stage's
counters: :class:`~online_distill.teachers.stats.TeacherSnapshot`,
:class:`~online_distill.learner.stats.LearnerSnapshot`,
:class:`~online_distill.gate.stage.GateSnapshot` and
:class:`~online_distill.ood.stats.OODSnapshot`. An actor that did not answer (restarting,
or a learner job that failed) is a :class:`Restarting`. :class:`LoopSnapshot` holds them
all; the status line, the run's timeline and ``up``'s summary read its attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:  # the station modules import torch; readers need only Restarting
    from online_distill.gate.stage import GateSnapshot
    from online_distill.learner.stats import LearnerSnapshot
    from online_distill.ood.stats import OODSnapshot
    from online_distill.teachers.stats import TeacherSnapshot


@dataclass(frozen=True, slots=True)
class Restarting:
    """An actor that gave no snapshot: ``error`` says why (``no answer`` within the
    timeout, the exception's type, or the learner job's failure)."""

    error: str


StationSnapshot: TypeAlias = (
    "TeacherSnapshot | LearnerSnapshot | GateSnapshot | OODSnapshot | Restarting")


@dataclass(frozen=True, slots=True)
class LoopSnapshot:
    """Every actor's snapshot at one moment (``ood`` is None when it is not enabled)."""

    teachers: tuple[TeacherSnapshot | Restarting, ...]
    learner: LearnerSnapshot | Restarting
    gate: GateSnapshot | Restarting
    ood: OODSnapshot | Restarting | None = None

    def by_name(self) -> dict[str, StationSnapshot]:
        """Each actor's snapshot by its Ray name (``teacher-0``..., ``learner``, ``gate``,
        ``ood``)."""
        out: dict[str, StationSnapshot] = {
            f"teacher-{i}": t for i, t in enumerate(self.teachers)}
        out["learner"], out["gate"] = self.learner, self.gate
        if self.ood is not None:
            out["ood"] = self.ood
        return out

    def restarting(self) -> list[str]:
        """Names of the actors that gave no snapshot."""
        return [name for name, s in self.by_name().items() if isinstance(s, Restarting)]

    def answering_teachers(self) -> list[TeacherSnapshot]:
        """The teachers' snapshots, without the ones that did not answer."""
        return [t for t in self.teachers if not isinstance(t, Restarting)]

    @property
    def labeled(self) -> int:
        """Prompts labeled by the teachers that answered, since each one's start."""
        return sum(t.labeled for t in self.answering_teachers())
