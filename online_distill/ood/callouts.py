"""What the OOD-feedback stage calls out to: the student's energies and the teacher's pens.

- :class:`StudentEnergyScorer`: OOD scores (``ood.score``: NLL or energy) of prompt texts
  under the newest *served* student
  (the promoted version in the weights store; the starting student before any promotion),
  reloaded when the promotion changes, so the tails are the served model's tails.
- :class:`StudentAnswerScorer`: with ``ood.score=answer_gap``, the served student's gap to
  the teacher on labeled answers (read from the labels topic).
- :class:`TeacherPromptWriter`: the teacher backend continuing few-shot feedback texts
  (sampled, temperature 1), returning the continuations' text.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from online_distill.config import OODConfig
from online_distill.messages import LabeledExample
from online_distill.models.loader import load_model
from online_distill.models.scores import answer_gaps, prompt_scores
from online_distill.ood.inputs import ScoringInput, label_answer, scoring_ids
from online_distill.teachers.protocol import LabelRequest, TeacherBackend
from online_distill.weights import PromotedFollower, WeightsStore


class StudentEnergyScorer:
    """Callable: prompt texts -> energies under the served student version.

    Checks the promoted version at most every ``refresh_s``; a version that does not load
    leaves the previous student scoring (:class:`PromotedFollower`'s policy).
    """

    def __init__(self, store: WeightsStore, initial_path: str, cfg: OODConfig,
                 refresh_s: float = 5.0, teacher: PreTrainedModel | None = None) -> None:
        self.store, self.cfg, self.refresh_s = store, cfg, refresh_s
        self.teacher = teacher  # for ood.score=nll_gap
        self.follower: PromotedFollower[tuple[PreTrainedModel, PreTrainedTokenizerBase]] = (
            PromotedFollower(store, store.load, initial=load_model(initial_path),
                             min_interval_s=refresh_s, name="ood scorer"))

    @property
    def version(self) -> int | None:
        """The served version scoring now (None: still the starting student)."""
        return self.follower.version

    @property
    def model(self) -> PreTrainedModel:
        return self._loaded()[0]

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self._loaded()[1]

    def _loaded(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        value = self.follower.value
        assert value is not None  # the starting student is the follower's initial value
        return value

    def refresh(self) -> None:
        self.follower.poll()

    def __call__(self, texts: list[ScoringInput]) -> list[float]:
        self.refresh()
        model, tokenizer = self._loaded()  # one version for the whole batch
        ids = [scoring_ids(tokenizer, t) for t in texts]
        return prompt_scores(model, ids, int(tokenizer.pad_token_id or 0),
                             self.cfg.score, self.cfg.energy_temperature,
                             self.cfg.energy_aggregate, teacher=self.teacher)


class StudentAnswerScorer(StudentEnergyScorer):
    """Callable: labeled examples -> the served student's answer gaps (``ood.score=
    answer_gap``): its NLL of the teacher's answer minus the teacher's, per answer token."""

    def __call__(self, examples: list[LabeledExample]) -> list[float]:  # type: ignore[override]
        self.refresh()
        model, tokenizer = self._loaded()
        return answer_gaps(model, [label_answer(e) for e in examples],
                           int(tokenizer.pad_token_id or 0), self.cfg.energy_aggregate)


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
