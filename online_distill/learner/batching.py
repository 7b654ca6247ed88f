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
from online_distill.messages.schema import FrozenArray
from online_distill.messages.scores import TokenScores


@dataclass(frozen=True, slots=True)
class Row:
    """One training sequence: prompt ids, continuation ids, and who wrote the continuation.

    The ids are any sequence of ints; rows made from messages hold the messages' own
    read-only arrays (:class:`FrozenArray`), which `collate` reads without a copy.
    """

    prompt_ids: Sequence[int]
    continuation: Sequence[int]
    scores: TokenScores
    source: str  # "teacher" | "student"
    example: int = -1
    """Index of the example it came from in the step's example list (-1: none)."""

    @staticmethod
    def from_pseudo_target(prompt_ids: Sequence[int], pt: PseudoTarget, example: int = -1
                           ) -> Row:
        scores = TokenScores(
            # Read-only views of the message (a decoded record's bytes), but for the ids:
            # int64 as TokenScores wants them, one vectorised cast from the record's u1/u2/u4.
            topk_ids=pt.topk_ids_array(np.int64, copy=False),
            topk_logprobs=pt.topk_logprobs_array(copy=False),
            tail_logmass=pt.tail_logmass_array(copy=False),
            token_logprobs=pt.sampled_logprobs_array(copy=False),
        )
        prompt = prompt_ids if isinstance(prompt_ids, FrozenArray) else tuple(prompt_ids)
        return Row(prompt, pt.token_ids, scores, pt.source, example)


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
    """Pad rows into a :class:`TrainingBatch`; sequences longer than max_len lose their end.

    Vectorised: each field is filled by one masked write of all the rows' values,
    concatenated (row-major order matches the mask's), so the cost per token is numpy's,
    not Python's; the buffers go to torch without a copy.
    """
    if not rows:
        raise ValueError("collate needs at least one row")
    prompts = [_ids(r.prompt_ids) for r in rows]
    conts = [_ids(r.continuation) for r in rows]
    p = np.array([a.shape[0] for a in prompts], dtype=np.int64)  # (B,)
    c = np.array([a.shape[0] for a in conts], dtype=np.int64)  # (B,)
    # One k per batch: rows with a larger top-k fold their extra entries into the tail bin
    # (exact: the tail is the mass outside the kept entries).
    scored = [r for r, length in zip(rows, c.tolist(), strict=True) if length]
    k = min(r.scores.topk_ids.shape[1] for r in scored) if scored else 1
    b, width = len(rows), int(min(max_len, (p + c).max()))
    cols = np.arange(width)  # (S,)

    # The model input: prompt then continuation, cut at width.
    in_seq = cols < np.minimum(p + c, width)[:, None]  # (B, S)
    input_ids = np.full((b, width), pad_id, dtype=np.int64)
    input_ids[in_seq] = _cat([x for pair in zip(prompts, conts, strict=True) for x in pair],
                             p + c, width)

    # Continuation token j sits at p + j and is predicted from position p - 1 + j: the
    # first n of each row's tokens (none without a prompt) have a target and a teacher.
    n = np.where(p > 0, np.clip(width - p + 1, 0, c), 0)  # (B,)
    loss_mask = (cols >= p[:, None] - 1) & (cols < (p + n - 1)[:, None])  # (B, S)
    targets = np.full((b, width), pad_id, dtype=np.int64)
    targets[loss_mask] = _cat(conts, c, n)
    top_ids = np.zeros((b, width, k), dtype=np.int64)
    top_lp = np.full((b, width, k), -np.inf, dtype=np.float32)
    tail = np.zeros((b, width), dtype=np.float32)
    if scored:  # the rows without a continuation give no entries: c = 0
        live = [(r.scores, len(r.continuation)) for r in scored]
        top_ids[loss_mask] = _cat([sc.topk_ids[:m, :k] for sc, m in live], c, n)
        top_lp[loss_mask] = _cat([sc.topk_logprobs[:m, :k] for sc, m in live], c, n)
        tail[loss_mask] = _cat([_tail(sc, k)[:m] for sc, m in live], c, n)

    teacher_rows = torch.tensor([r.source == "teacher" for r in rows])
    t = torch.from_numpy
    return TrainingBatch(t(input_ids), t(in_seq.astype(np.int64)), t(targets), t(loss_mask),
                         teacher_rows, SparseTeacher(t(top_ids), t(top_lp), t(tail)))


def _ids(ids: Sequence[int]) -> np.ndarray:
    """A row's token ids as a 1-d int array: a message's own array, or the ids converted."""
    if isinstance(ids, FrozenArray):
        return ids.array
    return np.asarray(ids, dtype=np.int64).reshape(-1)


def _cat(parts: list[np.ndarray], lengths: np.ndarray, keep: np.ndarray | int) -> np.ndarray:
    """``parts`` concatenated, keeping the first ``keep`` (per row, or one for all) of each
    row's entries: row i's parts (in order, rows in order) hold ``lengths[i]`` entries."""
    flat = np.concatenate(parts)
    starts = np.cumsum(lengths) - lengths  # (B,)
    pos = np.arange(flat.shape[0]) - np.repeat(starts, lengths)
    return flat[pos < np.repeat(np.broadcast_to(keep, lengths.shape), lengths)]


def _tail(scores: TokenScores, k: int) -> np.ndarray:
    """(L,) tail log-mass once the top-k entries past the first ``k`` are folded into it."""
    lp = scores.topk_logprobs
    if lp.shape[1] <= k:
        return scores.tail_logmass
    return np.logaddexp.reduce(np.concatenate([scores.tail_logmass[:, None], lp[:, k:]], 1), 1)
