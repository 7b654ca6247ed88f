"""Critics that drop bad pseudo-targets between the teacher and the learner (plain logic,
no Ray): see `chain` for the critics and which task each fits, `similarity` for the
similarity measures."""

from __future__ import annotations

from online_distill.config import Config
from online_distill.tasks.arithmetic import exact_match

from .chain import FROM_CONFIG, REASONS, Checker, CriticChain, CriticStats
from .similarity import (
    EmbeddingSimilarity,
    Similarity,
    TokenOverlapSimilarity,
    make_similarity,
    resolve_embedding_model,
)


def build_critics(cfg: Config) -> CriticChain | None:
    """The critic chain of `cfg.critics`, or None when `critics.enabled` is false.

    The exactness checker is the demo task's `exact_match` when the demo is on; other tasks
    have none (pass a checker to CriticChain directly).
    """
    if not cfg.critics.enabled:
        return None
    checker: Checker | None = exact_match if cfg.demo.enabled else None
    return CriticChain(cfg.critics, checker=checker)


__all__ = [
    "FROM_CONFIG",
    "REASONS",
    "Checker",
    "CriticChain",
    "CriticStats",
    "EmbeddingSimilarity",
    "Similarity",
    "TokenOverlapSimilarity",
    "build_critics",
    "make_similarity",
    "resolve_embedding_model",
]
