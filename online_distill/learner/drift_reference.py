"""Prompt energies for the drift monitor, under a frozen copy of the student.

The student the learner trains changes every step, and its energies move with it: at the
demo's learning rate, two adjacent windows of 500 prompts (3 s of traffic) scored by the
training student differ by a PSI of 0.3-8 from learning alone, with no change in the
traffic. So the drift monitor scores prompts under a *reference* copy of the student, frozen
for ``renew_after`` prompts: both windows it compares were scored by the same model, and a
score above the threshold means the traffic changed. The copy is renewed (and the energy
windows restarted) once it has scored ``renew_after`` prompts and no energy drift is in
alert, so the reference keeps up with what the student has learned.

Cost: one copy of the student's weights, and a forward pass over each live prompt (the
prompt only, no continuation, no backward): a small fraction of a training step.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from transformers import PreTrainedModel

from online_distill.models.scores import prompt_energies


class ReferenceEnergy:
    """Scores prompts under a frozen copy of the live student (module docstring)."""

    def __init__(self, pad_id: int, renew_after: int) -> None:
        if renew_after < 1:
            raise ValueError(f"renew_after must be >= 1, got {renew_after}")
        self.pad_id, self.renew_after = pad_id, renew_after
        self.model: PreTrainedModel | None = None
        self.scored = 0
        """Prompts scored by the current copy."""
        self.renewals = 0

    def score(self, student: PreTrainedModel, prompts: Sequence[Sequence[int]],
              may_renew: bool) -> tuple[list[float], bool]:
        """Energies of ``prompts`` and whether the copy was renewed first (then every earlier
        energy is incomparable with these: restart the windows)."""
        renewed = self.model is None or (may_renew and self.scored >= self.renew_after)
        if renewed:
            self.model = copy.deepcopy(student).eval()
            self.scored = 0
            self.renewals += 1
        assert self.model is not None
        energies = prompt_energies(self.model, prompts, self.pad_id)
        self.scored += len(prompts)
        return energies, renewed
