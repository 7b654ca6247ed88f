"""Turn (prompt, continuation, teacher distributions) rows into aligned training tensors.

One row is a prompt's token ids ``p`` (length P) and a continuation ``c`` (length L) with
the teacher's top-k at each continuation token. The model input is ``p + c``; the logits
at position ``P - 1 + i`` predict ``c[i]``, so targets, loss mask and teacher
distributions are placed at positions ``P - 1 .. P + L - 2``. Rows are right-padded
(causal attention never looks right, so padding changes nothing before it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from online_distill.losses import SparseTeacher
from online_distill.messages import LabeledExample, PseudoTarget
from online_distill.messages.scores import TokenScores


@dataclass(frozen=True, slots=True)
class Row:
    """One training sequence: prompt ids, continuation ids, and who wrote the continuation."""

    prompt_ids: tuple[int, ...]
    continuation: tuple[int, ...]
    scores: TokenScores
    source: str  # "teacher" | "student"
    example: int = -1
    """Index of the example it came from in the step's example list (-1: none)."""

    @staticmethod
    def from_pseudo_target(prompt_ids: Sequence[int], pt: PseudoTarget, example: int = -1
                           ) -> Row:
        scores = TokenScores(
            topk_ids=pt.topk_ids_array(np.int64),
            topk_logprobs=pt.topk_logprobs_array(),
            tail_logmass=pt.tail_logmass_array(),
            token_logprobs=pt.sampled_logprobs_array(),
        )
        return Row(tuple(prompt_ids), tuple(pt.token_ids), scores, pt.source, example)


def rows_from_examples(examples: Sequence[LabeledExample], max_pts: int | None = None
                       ) -> list[Row]:
    """Every (prompt, pseudo-target) pair of the examples, at most ``max_pts`` per prompt."""
    rows = []
    for i, ex in enumerate(examples):
        for pt in ex.pseudo_targets[:max_pts]:
            if pt.num_tokens:
                rows.append(Row.from_pseudo_target(ex.prompt_token_ids, pt, i))
    return rows


@dataclass(frozen=True, slots=True)
class TrainingBatch:
    """Aligned tensors of a micro-batch.

    input_ids (B, S), attention_mask (B, S), target_ids (B, S) (the next token),
    loss_mask (B, S) bool (continuation positions), teacher_rows (B,) bool (rows whose
    continuation the teacher wrote: sequence-level CE applies only to those), and the
    sparse teacher (B, S, k) aligned with the positions.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    target_ids: torch.Tensor
    loss_mask: torch.Tensor
    teacher_rows: torch.Tensor
    teacher: SparseTeacher

    @property
    def num_tokens(self) -> int:
        """Continuation tokens (the ones with a loss)."""
        return int(self.loss_mask.sum())

    @property
    def ce_mask(self) -> torch.Tensor:
        """loss_mask restricted to teacher-written rows (B, S)."""
        return self.loss_mask & self.teacher_rows.unsqueeze(1)


def collate(rows: Sequence[Row], pad_id: int, max_len: int) -> TrainingBatch:
    """Pad rows into a :class:`TrainingBatch`; sequences longer than max_len lose their end."""
    if not rows:
        raise ValueError("collate needs at least one row")
    # One k per batch: rows with a larger top-k fold their extra entries into the tail bin
    # (exact: the tail is the mass outside the kept entries).
    k = min(r.scores.topk_ids.shape[1] for r in rows if r.continuation) if any(
        r.continuation for r in rows) else 1
    width = min(max_len, max(len(r.prompt_ids) + len(r.continuation) for r in rows))
    b = len(rows)
    # Filled as numpy buffers (cheap slice writes), handed to torch without a copy.
    input_ids = np.full((b, width), pad_id, dtype=np.int64)
    attention = np.zeros((b, width), dtype=np.int64)
    targets = np.full((b, width), pad_id, dtype=np.int64)
    loss_mask = np.zeros((b, width), dtype=np.bool_)
    top_ids = np.zeros((b, width, k), dtype=np.int64)
    top_lp = np.full((b, width, k), -np.inf, dtype=np.float32)
    tail = np.zeros((b, width), dtype=np.float32)
    for i, r in enumerate(rows):
        seq = (r.prompt_ids + r.continuation)[:width]
        input_ids[i, : len(seq)] = seq
        attention[i, : len(seq)] = 1
        p = len(r.prompt_ids)
        # Continuation token j sits at p + j and is predicted from position p - 1 + j.
        n = max(0, min(len(r.continuation), width - p + 1))
        if n == 0 or p == 0:
            continue
        pos = slice(p - 1, p - 1 + n)
        targets[i, pos] = r.continuation[:n]
        loss_mask[i, pos] = True
        lp = r.scores.topk_logprobs[:n]  # (n, k_row)
        row_tail = r.scores.tail_logmass[:n]  # (n,)
        if lp.shape[1] > k:
            row_tail = np.logaddexp.reduce(
                np.concatenate([row_tail[:, None], lp[:, k:]], axis=1), axis=1)
        top_ids[i, pos] = r.scores.topk_ids[:n, :k]
        top_lp[i, pos] = lp[:, :k]
        tail[i, pos] = row_tail
    teacher_rows = torch.tensor([r.source == "teacher" for r in rows])
    t = torch.from_numpy
    return TrainingBatch(t(input_ids), t(attention), t(targets), t(loss_mask), teacher_rows,
                         SparseTeacher(t(top_ids), t(top_lp), t(tail)))
