"""The small protocols every teacher backend follows (local HF, vLLM, OpenAI-compatible).

A backend works on token ids of the shared tokenizer: the labels topic carries ids, and the
learner aligns the teacher's per-token distributions with the student's positions by id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from transformers import PreTrainedTokenizerBase

from online_distill.messages import PseudoTarget
from online_distill.messages.scores import TokenScores


@dataclass(frozen=True, slots=True)
class LabelRequest:
    """How to label: n sampled (or beam) PTs, optionally one greedy PT besides them."""

    n: int = 4
    decoding: str = "sample"
    include_greedy: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    top_k_logprobs: int = 20
    max_new_tokens: int = 16
    seed: int | None = None


@runtime_checkable
class TeacherScorer(Protocol):
    """Teacher distributions on given sequences (GKD on-policy steps, Joint-Teaching)."""

    def score(
        self,
        prompt_ids: Sequence[Sequence[int]],
        continuation_ids: Sequence[Sequence[int]],
        top_k: int,
    ) -> list[TokenScores]:
        """One :class:`TokenScores` per (prompt, continuation) pair, L = len(continuation)."""
        ...


@runtime_checkable
class TeacherBackend(TeacherScorer, Protocol):
    """A scorer that can also label prompts with pseudo-targets."""

    teacher_id: str
    tokenizer: PreTrainedTokenizerBase
    """The tokenizer of the ids the backend reads and writes (shared with the student)."""

    def label(
        self, prompt_ids: Sequence[Sequence[int]], request: LabelRequest, *,
        conversations: Sequence[Sequence[Mapping[str, str]] | None] | None = None,
    ) -> list[list[PseudoTarget]]:
        """For each prompt, its pseudo-targets (greedy first when requested).

        ``prompt_ids`` are what the teacher reads: a conversation rendered with the chat
        template. ``conversations`` (optional, one entry per prompt: its messages as
        ``{"role", "content"}`` dicts, or None for a text prompt) is for backends that send
        conversations as they are (the OpenAI-compatible chat endpoint); in-process
        backends ignore it. A PT that ended at EOS (end of turn) keeps it as last token.
        """
        ...


def teacher_pseudo_target(tokenizer: PreTrainedTokenizerBase, token_ids: Sequence[int],
                          scores: TokenScores, decoding: str) -> PseudoTarget:
    """A teacher-written PT from its tokens and the teacher's scores at each of them."""
    return PseudoTarget.from_arrays(
        token_ids=np.asarray(token_ids, dtype=np.int64),
        text=str(tokenizer.decode(list(token_ids), skip_special_tokens=True)),
        source="teacher",
        decoding=decoding,  # type: ignore[arg-type]
        topk_ids=scores.topk_ids,
        topk_logprobs=scores.topk_logprobs,
        tail_logmass=scores.tail_logmass,
        sampled_logprobs=scores.token_logprobs,
    )
