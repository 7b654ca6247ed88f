"""Self-distillation rounds (Impossible Distillation): the student labels, the critics filter.

Every ``learner.self_distill_every_steps`` steps the learner lets the current student sample
``learner.self_distill_samples`` candidate pseudo-targets for recent prompts, runs them
through the critics (on the demo the task-exactness critic keeps only correct answers), and
trains on the survivors as labeled examples whose pseudo-targets are marked
``source="student"``. Targets: when the learner has a teacher scorer (GKD on-policy or
Joint-Teaching), the teacher's top-k distributions on the student's tokens; otherwise the
sampled token itself with probability 1 - ``epsilon`` (the rest in the tail bin), which
makes every divergence a smoothed sequence-level cross-entropy, as in the paper.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from online_distill.learner.trainer import Learner
from online_distill.messages import LabeledExample, PseudoTarget
from online_distill.messages.scores import TokenScores
from online_distill.models.generation import generate

Filter = Callable[[LabeledExample], LabeledExample | None]


@dataclass
class SelfDistillStats:
    rounds: int = 0
    candidates: int = 0
    kept_examples: int = 0
    kept_pts: int = 0


class SelfDistiller:
    """Builds student-labeled examples for recent prompts, filtered by the critics."""

    def __init__(self, learner: Learner, tokenizer: PreTrainedTokenizerBase, samples: int,
                 max_new_tokens: int, critic: Filter | None = None, top_k: int = 20,
                 epsilon: float = 1e-3) -> None:
        self.learner, self.tokenizer = learner, tokenizer
        self.samples, self.max_new_tokens = samples, max_new_tokens
        self.critic, self.top_k, self.epsilon = critic, top_k, epsilon
        self.stats = SelfDistillStats()

    def round(self, examples: Sequence[LabeledExample], tag: str) -> list[LabeledExample]:
        """Student-labeled, critic-filtered copies of ``examples`` (new prompt ids)."""
        if not examples:
            return []
        prompts = [ex.prompt_token_ids for ex in examples]
        gen = generate(self.learner.model, prompts, self.learner.pad_id, self.max_new_tokens,
                       n=self.samples, mode="sample", temperature=1.0)
        # Row i of the output is sample i % n of prompt i // n.
        scores = self._scores(prompts, gen.continuations)
        out = []
        self.stats.rounds += 1
        for j, ex in enumerate(examples):
            pts = []
            for i in range(j * self.samples, (j + 1) * self.samples):
                tokens = gen.continuations[i]
                if not tokens:
                    continue
                pts.append(self._pseudo_target(tokens, scores[i]))
            self.stats.candidates += len(pts)
            if not pts:
                continue
            candidate = LabeledExample(
                prompt_id=f"{ex.prompt_id}#self-{tag}", prompt_text=ex.prompt_text,
                messages=ex.messages,
                prompt_token_ids=ex.prompt_token_ids, pseudo_targets=tuple(pts),
                teacher_id=f"student@{tag}", origin=ex.origin, kind=ex.kind,
                prompt_created_at=ex.prompt_created_at)
            kept = self.critic(candidate) if self.critic is not None else candidate
            if kept is not None:
                out.append(kept)
                self.stats.kept_examples += 1
                self.stats.kept_pts += len(kept.pseudo_targets)
        return out

    def _scores(self, prompts: Sequence[Sequence[int]], conts: list[list[int]]
                ) -> list[TokenScores | None]:
        scorer = self.learner.scorer
        if scorer is None:
            return [None] * len(conts)
        keep = [i for i, c in enumerate(conts) if c]
        scored = scorer.score([prompts[i // self.samples] for i in keep],
                              [conts[i] for i in keep], self.top_k)
        out: list[TokenScores | None] = [None] * len(conts)
        for i, s in zip(keep, scored, strict=True):
            out[i] = s
        return out

    def _pseudo_target(self, tokens: list[int], scores: TokenScores | None) -> PseudoTarget:
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        n = len(tokens)
        if scores is not None:
            return PseudoTarget(
                token_ids=tuple(tokens), text=text, source="student", decoding="sample",
                topk_ids=tuple(map(tuple, scores.topk_ids.tolist())),
                topk_logprobs=tuple(map(tuple, scores.topk_logprobs.tolist())),
                tail_logmass=tuple(scores.tail_logmass.tolist()),
                sampled_logprobs=tuple(scores.token_logprobs.tolist()))
        top, tail = math.log1p(-self.epsilon), math.log(self.epsilon)
        return PseudoTarget(
            token_ids=tuple(tokens), text=text, source="student", decoding="sample",
            topk_ids=tuple((t,) for t in tokens), topk_logprobs=((top,),) * n,
            tail_logmass=(tail,) * n, sampled_logprobs=(top,) * n)
