"""Energy scores of prompts under a causal LM (GOLD, shared/PAPERS.md section 3).

The energy of a position with next-token logits f is ``E = -T * logsumexp(f / T)``; a high
energy means the model puts little unnormalised mass anywhere: the input is unlike what it
was trained on. A prompt's score aggregates the energies of its token positions (every
position of the prompt, from the one after ``<bos>`` to the last prompt token, whose logits
predict the first answer token).

Aggregates: ``mean`` (the default of ``ood.energy_aggregate``), ``max`` and ``last``.
``mean`` is the default: it uses every position, so it is graded and does not grow with the
prompt's length, and it is the one under which GOLD's noise rejection can work. Measured on
the demo task (scripts not shipped): the demo student trained 1500 CE steps on head-heavy
traffic (90% add2), 3 seeds; AUROC of "a tail-kind prompt has a higher energy than an add2
prompt" (400 prompts per kind), share of tail kinds among the picks above the 0.95
quantile of a 2000-prompt traffic window (10% tail kinds, so 100% is the best possible),
and the median z-score of random punctuation/letter strings against that window (the
last two columns from separately trained students of the same recipe):

=========  ==================  ==================  ==================  ============  ======
aggregate  AUROC add3          AUROC sub2          AUROC mul           tail kinds    noise z
=========  ==================  ==================  ==================  ============  ======
mean       0.75 / 0.37 / 0.38  0.82 / 0.92 / 0.65  0.99 / 0.99 / 0.90  56 / 75 / 64  3.4-4.2
max        0.83 / 0.99 / 0.52  0.71 / 0.85 / 0.52  0.59 / 0.98 / 0.45  -             -
last       1.00 / 0.99 / 0.85  0.99 / 0.85 / 0.85  1.00 / 0.87 / 0.84  97 / 53 / 63  1.5-1.8
=========  ==================  ==================  ==================  ============  ======

``last`` separates head from tail best, but it saturates: every unfamiliar prompt, garbage
included, gets the same last-position energy, so the 0.95 quantile cuts inside a tie
(picks within the tail are arbitrary) and noise cannot be told from tails. ``mean`` is
graded (mul furthest out) and puts the median garbage string beyond 95% of every tail
kind (though a z-score of 4 rejects it in only one run of three); it often misses add3,
whose tokens look like add2's. ``max`` is close to useless with a tokenizer that prepends
``<bos>``: the first position sees only ``<bos>``, so its energy is the same for every
prompt and often the maximum. The shipped demo teacher is no guide here (it was trained on
every kind: AUROCs 0.05-0.67), so only a student trained on skewed traffic was measured.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor
from transformers import PreTrainedModel

from online_distill.models.generation import right_pad

Aggregate = Literal["mean", "max", "last"]
"""How per-position energies make one sequence score."""


def token_energies(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``-T * logsumexp(logits / T, -1)``: (B, L, V) logits -> (B, L) energies (float32+)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    scaled = logits.float() / temperature  # (B, L, V)
    return -temperature * torch.logsumexp(scaled, dim=-1)  # (B, L)


def aggregate(energies: Tensor, mask: Tensor, how: Aggregate = "mean") -> Tensor:
    """One score per row of (B, L) ``energies`` over its valid positions (``mask`` (B, L),
    True/1 = valid) -> (B,). ``last`` takes the last valid position (any padding side).
    A row with no valid position scores 0, never NaN."""
    if energies.shape != mask.shape:
        raise ValueError(f"energies {tuple(energies.shape)} and mask {tuple(mask.shape)} differ")
    valid = mask.bool()  # (B, L)
    count = valid.sum(dim=-1)  # (B,)
    if how == "mean":
        total = energies.masked_fill(~valid, 0.0).sum(dim=-1)  # (B,)
        return total / count.clamp(min=1)
    if how == "max":
        best = energies.masked_fill(~valid, float("-inf")).max(dim=-1).values  # (B,)
        return torch.where(count > 0, best, torch.zeros_like(best))
    if how == "last":
        positions = torch.arange(energies.shape[-1], device=energies.device)  # (L,)
        last = (positions * valid).argmax(dim=-1)  # (B,) index of the last valid position
        picked = energies.gather(-1, last.unsqueeze(-1)).squeeze(-1)  # (B,)
        return torch.where(count > 0, picked, torch.zeros_like(picked))
    raise ValueError(f"unknown aggregate {how!r}: use 'mean', 'max' or 'last'")


def prompt_energies(
    model: PreTrainedModel,
    token_ids: Sequence[Sequence[int]],
    pad_id: int,
    temperature: float = 1.0,
    how: Aggregate = "mean",
    batch_size: int = 64,
) -> list[float]:
    """The energy score of each token sequence under ``model``, in input order.

    Sequences are right-padded with ``pad_id`` in batches of ``batch_size`` and run with an
    attention mask, in eval mode under ``torch.inference_mode`` (the model's training flag
    is restored afterwards). An empty sequence scores 0.
    """

    def energies(logits: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
        return aggregate(token_energies(logits, temperature), mask, how)  # (B,)

    return _score_batches(model, token_ids, pad_id, energies, batch_size)


def token_nll(logits: Tensor, ids: Tensor, mask: Tensor | None = None) -> Tensor:
    """NLL of each sequence's next tokens: (B, L, V) logits, (B, L) ids -> (B, L-1)."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, L-1, V)
    return -logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # (B, L-1)


def prompt_nll(
    model: PreTrainedModel,
    token_ids: Sequence[Sequence[int]],
    pad_id: int,
    how: Aggregate = "mean",
    batch_size: int = 64,
) -> list[float]:
    """Negative log-likelihood of each sequence's own tokens under ``model`` (from the second
    token on), aggregated per sequence like the energies; high = unlike the training data.

    This is GOLD's other criterion ("lowest likelihood"); ``ood.score`` picks between the
    two (see ``online_distill.config`` and the measurement in README "OOD feedback").
    """

    def nll(logits: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
        return aggregate(token_nll(logits, ids), mask[:, 1:], how)  # (B,)

    return _score_batches(model, token_ids, pad_id, nll, batch_size, min_width=2)


def prompt_nll_gap(
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    token_ids: Sequence[Sequence[int]],
    pad_id: int,
    how: Aggregate = "mean",
    batch_size: int = 64,
) -> list[float]:
    """Per token, the student's NLL minus the teacher's, aggregated per sequence.

    What neither model can predict (the random digits of an arithmetic prompt, a name)
    cancels out; what the student has not learned but the teacher has stands out. Both
    models must share one tokenizer.
    """
    out: list[float] = []
    for start in range(0, len(token_ids), batch_size):
        chunk = [list(ids) for ids in token_ids[start : start + batch_size]]
        own = _score_tensors(student, chunk, pad_id, token_nll)  # (B, L-1)
        ref = _score_tensors(teacher, chunk, pad_id, token_nll)  # (B, L-1)
        _, mask = right_pad(chunk, pad_id, min_width=2)  # (B, L)
        out.extend(aggregate(own - ref, mask[:, 1:], how).double().tolist())
    return out


Answer = tuple[Sequence[int], Sequence[int], Sequence[float]]
"""A labeled answer: the prompt's ids (P,), the teacher's answer ids (T,), and the teacher's
log-probability of each answer token (T,)."""


def answer_gaps(
    student: PreTrainedModel,
    answers: Sequence[Answer],
    pad_id: int,
    how: Aggregate = "mean",
    batch_size: int = 64,
    floor: float = -30.0,
) -> list[float]:
    """Per answer token, the student's NLL minus the teacher's, aggregated per answer.

    ``gap_t = -log p_student(y_t | x, y_<t) - (-log p_teacher(y_t | x, y_<t))`` over the
    teacher's own answer y to prompt x. Only the answer is scored: the prompt's tokens (the
    random digits of an arithmetic problem, a user's wording), which no model can predict
    and which dominate a prompt's NLL or energy, never enter; an answer the teacher is sure
    of and the student is not stands out. The teacher's log-probabilities come from its
    label (no teacher call); ones below ``floor`` (-inf) are clamped to it. An answer with
    no tokens scores NaN (the caller leaves it out).
    """
    out: list[float] = []
    for start in range(0, len(answers), batch_size):
        chunk = answers[start : start + batch_size]
        seqs = [list(prompt) + list(answer) for prompt, answer, _ in chunk]
        nll = _score_tensors(student, seqs, pad_id, lambda lg, ids, _m: token_nll(lg, ids))
        gap = torch.zeros_like(nll, dtype=torch.float64)  # (B, L-1)
        mask = torch.zeros_like(gap, dtype=torch.bool)  # (B, L-1)
        for row, (prompt, answer, teacher_lp) in enumerate(chunk):
            first, n = len(prompt) - 1, len(answer)  # position first + t predicts answer[t]
            if n == 0 or first < 0:
                continue
            lp = torch.tensor(list(teacher_lp), dtype=torch.float64).clamp(min=floor)  # (T,)
            gap[row, first : first + n] = nll[row, first : first + n].double() + lp
            mask[row, first : first + n] = True
        scores = aggregate(gap, mask, how).tolist()
        valid = mask.any(dim=-1).tolist()  # (B,)
        out.extend(s if ok else float("nan") for s, ok in zip(scores, valid, strict=True))
    return out


def prompt_scores(model: PreTrainedModel, token_ids: Sequence[Sequence[int]], pad_id: int,
                  score: str, temperature: float, how: Aggregate,
                  teacher: PreTrainedModel | None = None) -> list[float]:
    """``ood.score``'s OOD score of each sequence: ``"nll"``, ``"nll_gap"`` (needs the
    teacher) or ``"energy"``."""
    if score == "nll_gap":
        if teacher is None:
            raise ValueError("ood.score=nll_gap needs the teacher model to compare with")
        return prompt_nll_gap(model, teacher, token_ids, pad_id, how)
    if score == "nll":
        return prompt_nll(model, token_ids, pad_id, how)
    if score == "energy":
        return prompt_energies(model, token_ids, pad_id, temperature, how)
    raise ValueError(f"unknown OOD score {score!r}: use 'nll' or 'energy'")


def _score_tensors(model: PreTrainedModel, chunk: list[list[int]], pad_id: int,
                   fn: Callable[[Tensor, Tensor, Tensor], Tensor], min_width: int = 2
                   ) -> Tensor:
    """One right-padded batch through ``model`` in eval/inference mode (the training flag is
    restored); returns ``fn(logits, ids, mask)`` computed on CPU."""
    device = next(model.parameters()).device
    ids, mask = right_pad(chunk, pad_id, min_width)  # (B, L)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            return fn(logits.cpu(), ids, mask)
    finally:
        model.train(was_training)


def _score_batches(
    model: PreTrainedModel,
    token_ids: Sequence[Sequence[int]],
    pad_id: int,
    fn: Callable[[Tensor, Tensor, Tensor], Tensor],
    batch_size: int,
    min_width: int = 1,
) -> list[float]:
    """Right-pad in batches, run the model, apply ``fn(logits, ids, mask) -> (B,)``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out: list[float] = []
    for start in range(0, len(token_ids), batch_size):
        chunk = [list(ids) for ids in token_ids[start : start + batch_size]]
        out.extend(_score_tensors(model, chunk, pad_id, fn, min_width).double().tolist())
    return out
