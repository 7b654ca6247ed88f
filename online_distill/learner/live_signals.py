"""What the learner measures of the student on live traffic, from its own training forward pass.

Each training step runs the student over fresh labeled examples *before* updating on them,
so its logits there are the served-like student meeting new traffic. From them, at no extra
forward pass, the learner takes per example (over the rows of its teacher pseudo-targets):

- ``kl``: KL(teacher || student) per continuation token, on the teacher's top-k + tail bins;
- ``jsd``: the generalized Jensen-Shannon divergence with beta 0.5 on the same bins;
- ``agreement``: share of continuation positions where the student's argmax is the teacher's
  most likely token;
- ``energy``: the prompt's energy under the student, ``-logsumexp(logits)`` averaged over the
  prompt's positions (the same score as :func:`online_distill.models.scores.prompt_energies`
  with the ``mean`` aggregate at temperature 1).

They feed the metrics (gauges, the energy histogram) and the drift monitor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from online_distill.losses import token_divergence


@dataclass(frozen=True, slots=True)
class LiveSignals:
    """Per-example signals of one step, aligned with ``examples`` (indexes into the step's
    example list)."""

    examples: tuple[int, ...]
    kl: tuple[float, ...]
    jsd: tuple[float, ...]
    agreement: tuple[float, ...]
    energy: tuple[float, ...]


@torch.no_grad()
def row_signals(logits: Tensor, loss_mask: Tensor, s_bins: Tensor, t_bins: Tensor,
                teacher_top: Tensor) -> Tensor:
    """Per-row (B, 4) [kl, jsd, agreement, energy] of one micro-batch; NaN for rows with no
    continuation token.

    logits (B, S, V); loss_mask (B, S) bool; s_bins, t_bins (N, k+1) for the N masked
    positions in row-major order; teacher_top (N,) the teacher's most likely id there.
    """
    b = logits.shape[0]
    rows = loss_mask.nonzero()[:, 0]  # (N,) row of each valid position
    count = torch.zeros(b, device=logits.device).index_add_(
        0, rows, torch.ones_like(rows, dtype=torch.float32))  # (B,)

    def per_row(values: Tensor) -> Tensor:  # (N,) -> (B,) mean over each row's positions
        total = torch.zeros(b, device=logits.device).index_add_(0, rows, values.float())
        return total / count.clamp(min=1)

    kl = per_row(token_divergence(s_bins, t_bins, "forward_kl"))
    jsd = per_row(token_divergence(s_bins, t_bins, "jsd", beta=0.5))
    agree = per_row((logits[loss_mask].argmax(-1) == teacher_top).float())
    # Prompt positions: up to and including the one that predicts the first continuation
    # token (index P - 1 for a prompt of P tokens).
    positions = torch.arange(logits.shape[1], device=logits.device)  # (S,)
    first = loss_mask.float().argmax(-1)  # (B,)
    prompt_mask = positions.unsqueeze(0) <= first.unsqueeze(1)  # (B, S)
    energies = -torch.logsumexp(logits.float(), dim=-1)  # (B, S)
    energy = (energies * prompt_mask).sum(-1) / prompt_mask.sum(-1)  # (B,)
    out = torch.stack([kl, jsd, agree, energy], dim=1)  # (B, 4)
    out[count == 0] = float("nan")
    return out


def per_example(values: Tensor, row_examples: Sequence[int]) -> LiveSignals | None:
    """Average the rows' (R, 4) signals per example (rows with example < 0 or NaN values,
    such as the student's own rows, are left out)."""
    sums: dict[int, list[float]] = {}
    counts: dict[int, int] = {}
    for r, ex in enumerate(row_examples):
        if ex < 0 or bool(torch.isnan(values[r]).any()):
            continue
        acc = sums.setdefault(ex, [0.0, 0.0, 0.0, 0.0])
        for j in range(4):
            acc[j] += float(values[r, j])
        counts[ex] = counts.get(ex, 0) + 1
    if not sums:
        return None
    order = sorted(sums)
    means = [[v / counts[ex] for v in sums[ex]] for ex in order]
    return LiveSignals(tuple(order), *(tuple(m[j] for m in means) for j in range(4)))
