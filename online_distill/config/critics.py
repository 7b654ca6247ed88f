"""The critics: filters that drop bad pseudo-targets before training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .base import check_nonempty, check_range
from .coerce import normalize_fields


@dataclass(frozen=True, kw_only=True)
class CriticsConfig:
    """Filters between teacher and learner that drop bad pseudo-targets (Impossible
    Distillation's critics); each is switchable and counted in metrics."""

    enabled: bool = True
    """Run the critics; off passes every PT to the learner."""

    similarity: Literal["embedding", "token_overlap", "off"] = "token_overlap"
    """How PTs of one prompt are compared for agreement: sentence-embedding cosine,
    token-set overlap (Jaccard), or not at all."""

    embedding_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    """Sentence-embedding model for similarity=embedding (hub id, offline cache, or path)."""

    min_similarity: float = 0.5
    """Drop a PT whose mean similarity to the other PTs of its prompt is below this."""

    max_pt_overlap: float = 1.0
    """Surface-diversity critic: drop a PT whose token overlap with a kept PT of the same
    prompt exceeds this; 1.0 keeps exact repeats apart from dedup."""

    min_length_ratio: float = 0.0
    """Drop a PT shorter than this many times its prompt's length (in tokens)."""

    max_length_ratio: float = 10.0
    """Drop a PT longer than this many times its prompt's length (in tokens)."""

    dedup: bool = True
    """Drop PTs identical to another PT of the same prompt."""

    near_dup_threshold: float = 0.9
    """With dedup, also drop PTs whose character-trigram Jaccard with a kept one is at
    least this."""

    task_exactness: bool = True
    """Apply the task's own exactness check to PTs when the task defines one (the demo
    task checks the arithmetic)."""

    min_prompt_similarity: float = 0.0
    """Drop a PT whose similarity to its own prompt is below this, for tasks whose output
    must stay related to the input (paraphrase, summary); 0.0 turns the critic off."""

    def __post_init__(self) -> None:
        normalize_fields(self)
        if self.similarity == "embedding":
            check_nonempty(self, "embedding_model", "name a sentence-embedding model")
        check_range(self, "min_similarity", ge=0, le=1, fix="a typical value is 0.5")
        check_range(self, "max_pt_overlap", ge=0, le=1, fix="1.0 turns the critic off")
        check_range(self, "min_length_ratio", ge=0, fix="0.0 turns the lower bound off")
        check_range(
            self,
            "max_length_ratio",
            gt=self.min_length_ratio,
            fix="must exceed min_length_ratio; a typical value is 10",
        )
        check_range(self, "near_dup_threshold", gt=0, le=1, fix="a typical value is 0.9")
        check_range(self, "min_prompt_similarity", ge=0, le=1, fix="0.0 turns the critic off")
