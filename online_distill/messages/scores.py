"""Per-token teacher scores of one continuation: what a backend returns, what batching reads."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class TokenScores:
    """The teacher's distribution at each token of one continuation (L tokens, top-k).

    topk_ids (L, k) int64, topk_logprobs (L, k) float32, tail_logmass (L,) float32,
    token_logprobs (L,) float32: the teacher log-probability of the continuation's own token.
    """

    topk_ids: npt.NDArray[np.int64]
    topk_logprobs: npt.NDArray[np.float32]
    tail_logmass: npt.NDArray[np.float32]
    token_logprobs: npt.NDArray[np.float32]
