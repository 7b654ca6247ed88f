"""Distillation losses: pure functions on tensors.

Conventions shared by every function here:

- Shapes: logits ``(B, T, V)``, ``mask (B, T)`` bool, ``target_ids (B, T)`` long. Student,
  teacher and targets are already aligned position by position (the caller shifts: the
  logits at position t predict the token at t + 1). Every function returns a scalar.
- Computed in fp32 and in log space (``log_softmax``, ``logsumexp``), whatever the input dtype.
- Masked positions are dropped *before* any arithmetic, so garbage (even inf/NaN) at padded
  positions cannot reach the loss or its gradient.
- Reduction: the per-token divergence is **summed over the vocabulary and averaged over valid
  tokens**. ``num_valid`` lets the caller pass the number of valid tokens of the whole
  optimizer step, so that micro-batches accumulated with ``num_valid`` = the global count sum
  exactly to the full-batch loss (a per-micro-batch mean was a real GKD bug, trl#4719).
  With no valid token the result is a differentiable 0, never NaN.
- Probability-zero entries: a term ``p * (log p - log q)`` with ``p = 0`` is 0 (also when
  ``log q = -inf``), written with the "double where" so that gradients stay finite.
  ``p > 0`` with ``q = 0`` is a true infinite KL and is returned as inf.
- Temperature: logits are divided by ``temperature`` before the softmax; no ``T**2``
  rescaling is applied (as in TRL's GKDTrainer). Scale the loss weight yourself if you want it.

Papers: sequence-level and word-level KD on pseudo-targets (Calderon et al., ACL 2023);
forward/reverse KL and the generalized JSD of GKD (Agarwal et al., ICLR 2024).

Sparse teachers: an API teacher (vLLM, an OpenAI-compatible server) returns only the top-k
tokens of each position, with their log-probabilities. We keep one more bin, the remaining
mass ``1 - sum(top-k)``, so the teacher is a proper distribution over k + 1 bins. The
student's full distribution is *folded* onto the same bins: its probabilities of the k
teacher tokens, and one tail bin holding the student's mass on every other token,
``log(1 - sum_k p_S) = log1mexp(logsumexp(log p_S[top-k]))``. Every divergence is then the
same formula on the (k + 1)-bin distributions. Folding can only lose information (the data
processing inequality), so the sparse divergence is a lower bound of the dense one and
equals it when k = V (see bench/RESULTS.md for the measured gap at k = 5, 20, 64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F

Divergence = Literal["forward_kl", "reverse_kl", "jsd", "tvd"]
DIVERGENCES: tuple[str, ...] = get_args(Divergence)

# The student's folded tail bin is computed from a mass clamped just below 1, so that
# log(1 - mass) and its gradient stay finite when the top-k hold (nearly) all of it.
_TAIL_CLAMP = -1e-7


# ----------------------------------------------------------------------------- helpers


def _valid_count(mask: torch.Tensor, num_valid: int | torch.Tensor | None) -> torch.Tensor:
    """The normaliser: ``num_valid`` if given, else the mask's count; at least 1."""
    count = mask.sum() if num_valid is None else torch.as_tensor(num_valid, device=mask.device)
    return count.to(torch.float32).clamp_min(1.0)


def _xlogx_ratio(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """Elementwise ``p * (log p - log q)`` with the ``p = 0`` terms exactly 0.

    The double where keeps every branch finite, so that the backward pass of the
    unselected branch cannot produce ``0 * inf = NaN``.
    """
    zero = torch.isneginf(logp)
    logp_safe = torch.where(zero, torch.zeros_like(logp), logp)
    logq_safe = torch.where(zero, torch.zeros_like(logq), logq)
    return torch.where(zero, torch.zeros_like(logp), logp_safe.exp() * (logp_safe - logq_safe))


def kl_from_logprobs(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last dim of log-probabilities ``(N, V) -> (N,)``.

    With no zero-probability entry in p (the usual case: finite logits) this is torch's
    fused ``kl_div``; otherwise the guarded form, which costs several (N, V) temporaries.
    """
    if torch.isneginf(logp).any():
        return _xlogx_ratio(logp, logq).sum(-1)
    return F.kl_div(logq, logp, reduction="none", log_target=True).sum(-1)


def token_divergence(
    student_logp: torch.Tensor,
    teacher_logp: torch.Tensor,
    kind: Divergence,
    beta: float = 0.5,
) -> torch.Tensor:
    """Per-position divergence between two log-distributions ``(N, V) -> (N,)``.

    - ``forward_kl``: KL(P_T || P_S) = sum_v P_T (log P_T - log P_S)   (mode covering)
    - ``reverse_kl``: KL(P_S || P_T) = sum_v P_S (log P_S - log P_T)   (mode seeking)
    - ``jsd``: generalized Jensen-Shannon of GKD, with M = beta * P_T + (1 - beta) * P_S,
      ``beta * KL(P_T || M) + (1 - beta) * KL(P_S || M)``. The endpoints follow TRL's
      GKDTrainer (``generalized_jsd_loss``): beta = 0 *is* forward KL(P_T || P_S) and
      beta = 1 *is* reverse KL(P_S || P_T). (The mixture formula itself tends to 0 at both
      ends; divided by beta, resp. 1 - beta, it tends to exactly those KLs, which is the
      sense in which JSD(beta) moves from forward to reverse KL, GKD section 3.)
    - ``tvd``: total variation, 0.5 * sum_v |P_T - P_S|.
    """
    if kind == "forward_kl" or (kind == "jsd" and beta == 0.0):
        return kl_from_logprobs(teacher_logp, student_logp)
    if kind == "reverse_kl" or (kind == "jsd" and beta == 1.0):
        return kl_from_logprobs(student_logp, teacher_logp)
    if kind == "jsd":
        if not 0.0 < beta < 1.0:
            raise ValueError(f"jsd beta={beta}: must be in [0, 1]")
        # log M = logaddexp(log beta + log P_T, log(1 - beta) + log P_S), (N, V).
        t_in, s_in = teacher_logp, student_logp
        empty = torch.isneginf(teacher_logp) & torch.isneginf(student_logp)
        if empty.any():
            # Bins empty under both (e.g. an absent tail bin) would make the backward NaN;
            # their KL terms are 0 whatever M is, so give them a finite stand-in.
            t_in = torch.where(empty, torch.zeros_like(t_in), t_in)
            s_in = torch.where(empty, torch.zeros_like(s_in), s_in)
        mixture = torch.logaddexp(t_in + math.log(beta), s_in + math.log(1.0 - beta))
        return beta * kl_from_logprobs(teacher_logp, mixture) + (1.0 - beta) * kl_from_logprobs(
            student_logp, mixture
        )
    if kind == "tvd":
        return 0.5 * (teacher_logp.exp() - student_logp.exp()).abs().sum(-1)
    raise ValueError(f"unknown divergence {kind!r}: use one of {', '.join(DIVERGENCES)}")


def reduce_valid(per_token: torch.Tensor, mask: torch.Tensor, num_valid: int | torch.Tensor | None
            ) -> torch.Tensor:
    """Sum of the valid tokens' values divided by the (global) valid count."""
    return per_token.sum() / _valid_count(mask, num_valid)


# ----------------------------------------------------------------------------- dense


def sequence_ce(
    student_logits: torch.Tensor,
    target_ids: torch.Tensor,
    mask: torch.Tensor,
    *,
    num_valid: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Sequence-level KD: cross-entropy of the student on teacher pseudo-targets.

    ``-sum_{valid t} log P_S(target_t) / num_valid``. Shapes: student_logits (B, T, V),
    target_ids (B, T), mask (B, T). Calderon et al. 2023 (sequence-level KD with PTs).
    """
    logits = student_logits[mask].float()  # (N, V)
    ce = F.cross_entropy(logits, target_ids[mask], reduction="none")  # (N,)
    return reduce_valid(ce, mask, num_valid)


def divergence(
    kind: Divergence,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    beta: float = 0.5,
    temperature: float = 1.0,
    *,
    num_valid: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Word-level KD with a dense teacher: mean over valid tokens of ``token_divergence``.

    student_logits and teacher_logits (B, T, V), mask (B, T); returns a scalar.
    """
    if temperature <= 0:
        raise ValueError(f"temperature={temperature}: must be > 0")
    s = F.log_softmax(student_logits[mask].float() / temperature, dim=-1)  # (N, V)
    t = F.log_softmax(teacher_logits[mask].float() / temperature, dim=-1)  # (N, V)
    return reduce_valid(token_divergence(s, t, kind, beta), mask, num_valid)


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
               temperature: float = 1.0, *, num_valid: int | torch.Tensor | None = None
               ) -> torch.Tensor:
    """KL(P_T || P_S) per token, averaged over valid tokens (word-level KD, GKD).

    Equals ``F.kl_div(log P_S, log P_T, log_target=True, reduction="sum") / num_valid``.
    """
    return divergence("forward_kl", student_logits, teacher_logits, mask,
                      temperature=temperature, num_valid=num_valid)


def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
               temperature: float = 1.0, *, num_valid: int | torch.Tensor | None = None
               ) -> torch.Tensor:
    """KL(P_S || P_T) per token, averaged over valid tokens (GKD's mode-seeking choice)."""
    return divergence("reverse_kl", student_logits, teacher_logits, mask,
                      temperature=temperature, num_valid=num_valid)


def generalized_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                    mask: torch.Tensor, beta: float = 0.5, temperature: float = 1.0, *,
                    num_valid: int | torch.Tensor | None = None) -> torch.Tensor:
    """GKD's generalized JSD(beta), averaged over valid tokens.

    M = beta * P_T + (1 - beta) * P_S; loss = beta * KL(P_T || M) + (1 - beta) * KL(P_S || M).
    beta = 0 gives forward KL(P_T || P_S) and beta = 1 reverse KL(P_S || P_T) exactly (TRL's
    GKDTrainer convention). Agarwal et al., ICLR 2024, eq. for D_JSD(beta).
    """
    return divergence("jsd", student_logits, teacher_logits, mask, beta=beta,
                      temperature=temperature, num_valid=num_valid)


def tvd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
        temperature: float = 1.0, *, num_valid: int | torch.Tensor | None = None
        ) -> torch.Tensor:
    """Total variation distance 0.5 * sum_v |P_T - P_S| per token, averaged over valid tokens."""
    return divergence("tvd", student_logits, teacher_logits, mask,
                      temperature=temperature, num_valid=num_valid)


# ----------------------------------------------------------------------------- sparse


@dataclass(frozen=True, slots=True)
class SparseTeacher:
    """A teacher's top-k per position plus the remaining mass.

    ids (B, T, k) long, logprobs (B, T, k) float (natural log, at the teacher's own
    temperature), tail_logmass (B, T) float: log(1 - sum(exp(logprobs))), -inf when the
    top-k cover everything.
    """

    ids: torch.Tensor
    logprobs: torch.Tensor
    tail_logmass: torch.Tensor


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for x <= 0, stable at both ends (Maechler 2012)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def sparse_from_logits(teacher_logits: torch.Tensor, k: int, temperature: float = 1.0
                       ) -> SparseTeacher:
    """Top-k view of dense logits (B, T, V): what an API teacher would return."""
    logp = F.log_softmax(teacher_logits.float() / temperature, dim=-1)  # (B, T, V)
    top = logp.topk(min(k, logp.shape[-1]), dim=-1)  # (B, T, k)
    covered = torch.logsumexp(top.values, dim=-1)  # (B, T)
    tail = log1mexp(covered.clamp(max=_TAIL_CLAMP))
    if k >= logp.shape[-1]:
        tail = torch.full_like(covered, -math.inf)
    return SparseTeacher(top.indices, top.values, tail)


def fold_student(student_logp: torch.Tensor, ids: torch.Tensor, teacher_tail: torch.Tensor
                 ) -> torch.Tensor:
    """Fold a student's full log-distribution (N, V) onto the teacher's k + 1 bins (N, k + 1).

    The tail bin holds the student's mass outside the k ids. Where the teacher has no tail
    (``-inf``: its top-k cover the vocabulary), the student's tail bin is -inf too (it is
    then empty up to rounding), so that bin contributes nothing.
    """
    picked = student_logp.gather(-1, ids)  # (N, k)
    covered = torch.logsumexp(picked, dim=-1).clamp(max=_TAIL_CLAMP)  # (N,)
    tail = log1mexp(covered)  # (N,)
    tail = torch.where(torch.isneginf(teacher_tail), torch.full_like(tail, -math.inf), tail)
    return torch.cat([picked, tail.unsqueeze(-1)], dim=-1)


def sparse_divergence(
    kind: Divergence,
    student_logits: torch.Tensor,
    teacher: SparseTeacher,
    mask: torch.Tensor,
    beta: float = 0.5,
    temperature: float = 1.0,
    *,
    num_valid: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Word-level KD against a sparse (top-k + tail) teacher, averaged over valid tokens.

    student_logits (B, T, V); teacher fields (B, T, k) and (B, T); mask (B, T). The student
    is folded onto the teacher's k + 1 bins (module docstring) and ``token_divergence`` is
    applied there. ``temperature`` divides the *student's* logits only: the teacher's
    log-probabilities arrive already at the temperature the backend used.
    """
    s_bins, t_bins = sparse_bins(student_logits, teacher, mask, temperature)
    return reduce_valid(token_divergence(s_bins, t_bins, kind, beta), mask, num_valid)


def sparse_bins(student_logits: torch.Tensor, teacher: SparseTeacher, mask: torch.Tensor,
                temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's and the teacher's log-probabilities on the teacher's k + 1 bins at the
    N valid positions of ``mask`` (row-major): two (N, k + 1) tensors."""
    if temperature <= 0:
        raise ValueError(f"temperature={temperature}: must be > 0")
    s_full = F.log_softmax(student_logits[mask].float() / temperature, dim=-1)  # (N, V)
    ids = teacher.ids[mask].long()  # (N, k)
    tail = teacher.tail_logmass[mask].float()  # (N,)
    t_bins = torch.cat([teacher.logprobs[mask].float(), tail.unsqueeze(-1)], dim=-1)  # (N, k+1)
    return fold_student(s_full, ids, tail), t_bins
