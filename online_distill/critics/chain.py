"""The critic chain: drops bad pseudo-targets (PTs) of a labeled example before training.

Impossible Distillation (Jung et al. 2024) keeps only the generations that pass critics;
here each critic looks at one example's PTs, drops some, and counts each drop by reason.
They run in this order, each only when switched on in `critics.*`:

==================  ==============================================  =========================
reason              drops a PT when                                 fits
==================  ==============================================  =========================
task_exactness      the task's checker rejects it for the prompt    tasks with exact answers
                    (`task_exactness` and a checker given)          (the demo's arithmetic)
length_ratio        len(PT tokens) / len(prompt tokens) is outside  summaries (a compression
                    [min_length_ratio, max_length_ratio]            bound); runaway outputs
duplicate           its token ids equal a kept PT's (`dedup`)       every task
near_duplicate      its character-trigram Jaccard with a kept PT    free text; no effect on
                    is >= near_dup_threshold (`dedup`)              2-4 character answers
diversity           its token overlap with a kept PT exceeds        paraphrase data wanting
                    max_pt_overlap (1.0 = off)                      lexical variety
similarity          its mean similarity to the other PTs of its     sampled PTs of open tasks:
                    prompt is < min_similarity (0 = off)            drops the outlier
prompt_similarity   its similarity to its prompt is                 paraphrase and summary,
                    < min_prompt_similarity (0 = off)               where output restates input
==================  ==============================================  =========================

The last two need a similarity measure: `critics.similarity` (off turns both off), or the
`similarity` given to CriticChain.

Greedy critics (duplicate, near_duplicate, diversity) walk the PTs in order and compare each
with those already kept, so of two equal PTs the first stays; the teacher writes its greedy
PT first, so the greedy PT is the one kept.

Semantic agreement is a vote: each PT still alive is compared with every PT that passed the
exactness and length critics, duplicates included (a PT repeated by three samples is strong
agreement, even though only one copy is kept for training). It needs at least two such PTs;
with exactly two the similarity is symmetric, so both are kept or both dropped.

On the demo the answers are 2-4 characters ("58" is 85 reversed), so the similarity critics
compare answers with each other ("64" vs "63"), not with meaning; token overlap then falls
back to character sets (see `TokenOverlapSimilarity`). The exactness critic is the one that
matters there; the prompt-similarity critic is meaningless for it and stays off (0.0).
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from online_distill.config.critics import CriticsConfig
from online_distill.critics.dedup import jaccard, shingles
from online_distill.messages.schema import LabeledExample, PseudoTarget

from .similarity import EmbeddingSimilarity, Similarity, TokenOverlapSimilarity, make_similarity

Checker = Callable[[str, str], bool]
"""A task's exactness check: checker(prompt_text, pt_text) is True for an acceptable PT."""

REASONS: tuple[str, ...] = (
    "task_exactness",
    "length_ratio",
    "duplicate",
    "near_duplicate",
    "diversity",
    "similarity",
    "prompt_similarity",
)
"""Every drop reason, in the order the critics run."""


class _FromConfig(enum.Enum):
    FROM_CONFIG = "from_config"


FROM_CONFIG = _FromConfig.FROM_CONFIG
"""Default of CriticChain's `similarity`: build it with `make_similarity(cfg)`."""


@dataclass
class CriticStats:
    """Counts since the chain was built."""

    examples: int = 0
    """Examples filtered."""
    kept: int = 0
    """PTs kept."""
    dropped: Counter[str] = field(default_factory=Counter)
    """PTs dropped, by reason (see REASONS)."""
    dropped_examples: int = 0
    """Examples dropped because none of their PTs was kept."""


class CriticChain:
    """Filters the PTs of labeled examples with the critics `cfg` switches on.

    `checker` is the task's exactness check (None: no exactness critic). `similarity`
    defaults to `make_similarity(cfg)`; pass a Similarity to override it, or None to turn
    the two similarity critics off. Not thread-safe (the stats are plain counters).
    """

    def __init__(
        self,
        cfg: CriticsConfig,
        checker: Checker | None = None,
        similarity: Similarity | None | _FromConfig = FROM_CONFIG,
    ) -> None:
        self.cfg = cfg
        self.checker = checker
        self.similarity: Similarity | None = (
            make_similarity(cfg) if similarity is FROM_CONFIG else similarity
        )
        self.overlap = TokenOverlapSimilarity()
        """Surface token overlap of the diversity critic (independent of `similarity`)."""
        self.stats = CriticStats()

    def filter(self, ex: LabeledExample) -> LabeledExample | None:
        """`ex` with only its kept PTs (itself when all are kept), or None when none is."""
        pts = ex.pseudo_targets
        alive = list(range(len(pts)))  # indices into pts of the PTs still kept
        cfg = self.cfg
        self.stats.examples += 1
        if cfg.task_exactness and self.checker is not None:
            alive = self._exactness(ex, alive)
        alive = self._length_ratio(ex, alive)
        voters = list(alive)
        if cfg.dedup:
            alive = self._dedup(pts, alive)
        if cfg.max_pt_overlap < 1.0:
            alive = self._diversity(pts, alive)
        if self.similarity is not None and alive:
            alive = self._semantic(ex, voters, alive, self.similarity)
        self.stats.kept += len(alive)
        if not alive:
            self.stats.dropped_examples += 1
            return None
        if len(alive) == len(pts):
            return ex
        return replace(ex, pseudo_targets=tuple(pts[i] for i in alive))

    def filter_many(self, examples: Iterable[LabeledExample]) -> list[LabeledExample]:
        """The kept examples, in order, each with only its kept PTs."""
        batch = list(examples)
        if isinstance(self.similarity, EmbeddingSimilarity) and self._semantic_on():
            texts = [ex.prompt_text for ex in batch if self.cfg.min_prompt_similarity > 0]
            texts += [pt.text for ex in batch for pt in ex.pseudo_targets]
            self.similarity.prefetch(texts)  # one batched model pass for the whole batch
        out = []
        for ex in batch:
            kept = self.filter(ex)
            if kept is not None:
                out.append(kept)
        return out

    def __call__(self, ex: LabeledExample) -> LabeledExample | None:
        """Same as `filter`, so the chain can be passed where a filter function is expected."""
        return self.filter(ex)

    def snapshot(self) -> dict[str, int | dict[str, int]]:
        """The counters for metrics: every reason is present, 0 when it never dropped."""
        dropped = {reason: self.stats.dropped[reason] for reason in REASONS}
        return {
            "examples": self.stats.examples,
            "kept": self.stats.kept,
            "dropped": dropped,
            "dropped_total": sum(dropped.values()),
            "dropped_examples": self.stats.dropped_examples,
        }

    # --- the critics: each takes and returns indices of alive PTs, counting its drops -----

    def _drop(self, alive: list[int], bad: set[int], reason: str) -> list[int]:
        if bad:
            self.stats.dropped[reason] += len(bad)
        return [i for i in alive if i not in bad]

    def _exactness(self, ex: LabeledExample, alive: list[int]) -> list[int]:
        assert self.checker is not None
        pts = ex.pseudo_targets
        bad = {i for i in alive if not self.checker(ex.prompt_text, pts[i].text)}
        return self._drop(alive, bad, "task_exactness")

    def _length_ratio(self, ex: LabeledExample, alive: list[int]) -> list[int]:
        lo, hi = self.cfg.min_length_ratio, self.cfg.max_length_ratio
        prompt_len = max(1, len(ex.prompt_token_ids))
        ratios = {i: len(ex.pseudo_targets[i].token_ids) / prompt_len for i in alive}
        bad = {i for i, r in ratios.items() if not lo <= r <= hi}
        return self._drop(alive, bad, "length_ratio")

    def _dedup(self, pts: tuple[PseudoTarget, ...], alive: list[int]) -> list[int]:
        kept: list[int] = []
        for i in alive:
            sh = shingles(pts[i].text)
            if any(pts[i].token_ids == pts[k].token_ids for k in kept):
                self.stats.dropped["duplicate"] += 1
            elif any(
                jaccard(sh, shingles(pts[k].text)) >= self.cfg.near_dup_threshold for k in kept
            ):
                self.stats.dropped["near_duplicate"] += 1
            else:
                kept.append(i)
        return kept

    def _diversity(self, pts: tuple[PseudoTarget, ...], alive: list[int]) -> list[int]:
        kept: list[int] = []
        limit = self.cfg.max_pt_overlap
        for i in alive:
            if any(self.overlap.similarity(pts[i].text, pts[k].text) > limit for k in kept):
                self.stats.dropped["diversity"] += 1
            else:
                kept.append(i)
        return kept

    def _semantic_on(self) -> bool:
        return self.similarity is not None and (
            self.cfg.min_similarity > 0 or self.cfg.min_prompt_similarity > 0
        )

    def _semantic(
        self, ex: LabeledExample, voters: list[int], alive: list[int], sim: Similarity
    ) -> list[int]:
        """Critics e (agreement among the PTs) and f (relatedness to the prompt)."""
        agree = self.cfg.min_similarity > 0 and len(voters) >= 2
        related = self.cfg.min_prompt_similarity > 0
        if not (agree or related):
            return alive
        pts = ex.pseudo_targets
        # One matrix call (an embedding model runs once per example): when the prompt is
        # needed it is row/column 0, and voter v is row/column off + v.
        off = 1 if related else 0
        texts = [ex.prompt_text] * off + [pts[i].text for i in voters]
        m = sim.matrix(texts)  # (off + V, off + V)
        row = {i: off + v for v, i in enumerate(voters)}  # PT index -> matrix row
        if agree:
            others = len(voters) - 1
            mean = {i: sum(m[row[i]][row[j]] for j in voters if j != i) / others for i in alive}
            bad = {i for i in alive if mean[i] < self.cfg.min_similarity}
            alive = self._drop(alive, bad, "similarity")
        if related:
            bad = {i for i in alive if m[0][row[i]] < self.cfg.min_prompt_similarity}
            alive = self._drop(alive, bad, "prompt_similarity")
        return alive
