"""Probe sets the evaluation gate scores every candidate on.

A probe returns, per metric, one value per probe item (so the gate can compare two versions
item by item); :data:`HIGHER_IS_BETTER` says which way each metric points.

- :class:`TaskProbe`: a task's own problems with a checker (the demo's head and tail sets):
  greedy ``exact_match`` and the ``nll`` per token of the reference answers.
- :class:`LabelProbe`: held-out live labeled examples (any task): ``agreement``, the share of
  teacher pseudo-target tokens that are the student's argmax under teacher forcing, and
  ``nll``, the student's negative log-likelihood per token of those pseudo-targets
  (both averaged over each example's tokens).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from online_distill.messages import LabeledExample
from online_distill.models.generation import right_pad
from online_distill.tasks.arithmetic import Problem, is_correct
from online_distill.tasks.evaluate import complete

HIGHER_IS_BETTER: dict[str, bool] = {"exact_match": True, "agreement": True, "nll": False}
ItemScores = dict[str, list[float]]
"""Metric name -> one value per probe item, in the probe's order."""


class Probe(Protocol):
    name: str

    def ready(self) -> bool:
        """Whether the probe has enough examples to be scored."""
        ...

    def fingerprint(self) -> str:
        """Changes whenever the probe's content changes (scores are cached by it)."""
        ...

    def score(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
              ) -> ItemScores: ...


@torch.no_grad()
def teacher_forced(model: PreTrainedModel, sequences: Sequence[tuple[list[int], list[int]]],
                   pad_id: int, batch_size: int = 64) -> ItemScores:
    """Per (prompt ids, target ids) pair: agreement and NLL per token of its target tokens.

    A pair with no target tokens scores agreement 0 and NLL 0 (it has nothing to get wrong
    or right; it counts the same for every version).
    """
    device = next(model.parameters()).device
    cfg = model.config
    context = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)
    vocab = int(cfg.vocab_size)
    agree: list[float] = []
    nll: list[float] = []
    for start in range(0, len(sequences), batch_size):
        chunk = list(sequences[start : start + batch_size])
        # Held-out examples are live traffic: cut them to the model's context, and let ids
        # outside its vocabulary count as neither input nor target (they would index past
        # the embeddings).
        seqs = [(p + t)[:context] if context else p + t for p, t in chunk]
        known = [[0 <= x < vocab for x in seq] for seq in seqs]
        ids, mask = right_pad([[x if ok else pad_id for x, ok in zip(seq, k, strict=True)]
                               for seq, k in zip(seqs, known, strict=True)],
                              pad_id, min_width=2)  # (B, W)
        target = torch.zeros_like(ids, dtype=torch.bool)  # positions whose token is a target
        for row, (p, t) in enumerate(chunk):
            end = min(len(p) + len(t), len(seqs[row]))
            target[row, len(p) : end] = torch.tensor(known[row][len(p):end], dtype=torch.bool)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).cpu()  # (B, W-1, V)
        labels, where = ids[:, 1:], target[:, 1:]  # (B, W-1)
        token_logp = logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1)  # (B, W-1)
        hits = (logp.argmax(-1) == labels) & where  # (B, W-1)
        count = where.sum(-1).clamp(min=1).float()  # (B,)
        agree += (hits.sum(-1) / count).tolist()
        nll += (-(token_logp * where).sum(-1) / count).tolist()
    return {"agreement": agree, "nll": nll}


class TaskProbe:
    """A task's fixed problems: greedy exact-match and NLL of the reference answers."""

    def __init__(self, name: str, problems: Sequence[Problem]) -> None:
        self.name = name
        self.problems = list(problems)

    def ready(self) -> bool:
        return bool(self.problems)

    def fingerprint(self) -> str:
        return f"{self.name}:{len(self.problems)}"

    def score(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
              ) -> ItemScores:
        prompts = [p.prompt for p in self.problems]
        answers = complete(model, tokenizer, prompts)  # type: ignore[arg-type]
        em = [float(is_correct(p, a)) for p, a in zip(self.problems, answers, strict=True)]
        pairs = []  # the demo model ends a line with "\n", its end-of-sequence token
        for p in self.problems:
            prompt = tokenizer(p.prompt).input_ids
            answer = tokenizer(p.answer + "\n", add_special_tokens=False).input_ids
            pairs.append((list(prompt), list(answer)))
        forced = teacher_forced(model, pairs, pad_id=int(tokenizer.pad_token_id or 0))
        return {"exact_match": em, "nll": forced["nll"]}


class LabelProbe:
    """Held-out live examples scored against their first pseudo-target."""

    def __init__(self, name: str, examples: Callable[[], Sequence[LabeledExample]],
                 generation: Callable[[], int], min_examples: int = 20) -> None:
        self.name = name
        self.examples, self.generation = examples, generation
        self.min_examples = min_examples

    def ready(self) -> bool:
        return len(self.examples()) >= self.min_examples

    def fingerprint(self) -> str:
        return f"{self.name}:{self.generation()}:{len(self.examples())}"

    def score(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
              ) -> ItemScores:
        pairs = [(list(ex.prompt_token_ids), list(ex.pseudo_targets[0].token_ids))
                 for ex in self.examples()]
        return teacher_forced(model, pairs, pad_id=int(tokenizer.pad_token_id or 0))
