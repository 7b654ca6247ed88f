"""What the OOD-feedback stage calls out to: the student's energies and the teacher's pens.

- :class:`StudentEnergyScorer`: OOD scores (``ood.score``: NLL or energy) of prompt texts
  under the newest *served* student
  (the promoted version in the weights store; the starting student before any promotion),
  reloaded when the promotion changes, so the tails are the served model's tails.
- :class:`TeacherPromptWriter`: the teacher backend continuing few-shot feedback texts
  (sampled, temperature 1), returning the continuations' text.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from online_distill.config import OODConfig
from online_distill.models.loader import load_model
from online_distill.models.scores import prompt_scores
from online_distill.teachers.protocol import LabelRequest, TeacherBackend
from online_distill.weights.store import LocalWeightsStore


class StudentEnergyScorer:
    """Callable: prompt texts -> energies under the served student version."""

    def __init__(self, store: LocalWeightsStore, initial_path: str, cfg: OODConfig,
                 refresh_s: float = 5.0, teacher: PreTrainedModel | None = None) -> None:
        self.store, self.cfg, self.refresh_s = store, cfg, refresh_s
        self.teacher = teacher  # for ood.score=nll_gap
        self.version: int | None = None
        self.model, self.tokenizer = load_model(initial_path)
        self._checked = 0.0

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.refresh_s:
            return
        self._checked = now
        promoted = self.store.promoted()
        if promoted is None or promoted == self.version:
            return
        try:
            self.model, self.tokenizer = self.store.load(promoted)
        except (OSError, ValueError):  # pruned meanwhile: try the next one later
            return
        self.version = promoted

    def __call__(self, texts: list[str]) -> list[float]:
        self.refresh()
        ids = [self.tokenizer(t).input_ids for t in texts]
        return prompt_scores(self.model, ids, int(self.tokenizer.pad_token_id or 0),
                             self.cfg.score, self.cfg.energy_temperature,
                             self.cfg.energy_aggregate, teacher=self.teacher)


class TeacherPromptWriter:
    """Callable: (few-shot texts, n) -> n sampled continuations per text, flattened."""

    def __init__(self, teacher: TeacherBackend, tokenizer: PreTrainedTokenizerBase,
                 max_new_tokens: int = 24) -> None:
        self.teacher, self.tokenizer = teacher, tokenizer
        self.max_new_tokens = max_new_tokens

    def __call__(self, texts: Sequence[str], n: int) -> list[str]:
        tok = self.tokenizer
        ids = [tok(t).input_ids for t in texts]
        request = LabelRequest(n=n, decoding="sample", include_greedy=False, temperature=1.0,
                               top_k_logprobs=1, max_new_tokens=self.max_new_tokens)
        return [pt.text for pts in self.teacher.label(ids, request) for pt in pts]
