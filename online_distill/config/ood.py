"""The OOD-feedback loop (GOLD): new prompts steered toward the tails of traffic."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .base import check_range
from .coerce import normalize_fields


@dataclass(frozen=True, kw_only=True)
class OODConfig:
    """GOLD's out-of-distribution feedback: the prompts the student finds hardest (highest
    energy) become few-shot examples asking the teacher for new prompts like them."""

    enabled: bool = False
    """Run the OOD-feedback actor."""

    energy_temperature: float = 1.0
    """T in the energy score E(x) = -T * logsumexp(f(x) / T) of the student's logits f."""

    score: Literal["nll", "nll_gap", "energy", "answer_gap"] = "nll"
    """What makes a prompt out of distribution for the student: the negative log-likelihood
    of its tokens ("nll", GOLD's "lowest likelihood"), the energy -T*logsumexp(f/T)
    ("energy"), the student's NLL minus the teacher's per prompt token ("nll_gap": what
    neither can predict cancels, what only the student lacks stands out), or the same gap
    on the teacher's *answer* ("answer_gap": the actor reads the labels topic instead of
    the prompts topic, scores the student on the teacher's greedy answer against the
    teacher's own log-probabilities from the label, so no teacher call and no prompt token
    counts: what the student has not learned and the teacher knows; bench/RESULTS.md,
    "GOLD that pays"). On the demo, a student
    trained on add2 puts 100% of mul/sub2/add3 prompts above the 99th percentile of add2 by
    NLL, but only 54% of mul by mean energy after 300 steps and 7% after 800 (README "OOD
    feedback")."""

    energy_aggregate: Literal["mean", "max", "last"] = "mean"
    """How per-token scores (energies or NLLs) make one sequence score: their mean, their
    max, or the last token's."""

    window_size: int = 2000
    """Recent prompts whose energies form the reference distribution for tail picks."""

    tail_quantile: float = 0.99
    """Prompts with energy above this quantile of the window are the tail."""

    min_window: int = 200
    """Energies the window must hold before any prompt is picked as a tail (capped at
    window_size), so the first quantiles are not guesses from a handful of prompts."""

    tail_capacity: int = 256
    """Most recent distinct tail prompts kept as few-shot candidates; older ones are
    forgotten, so the examples follow what the current student finds hard."""

    few_shot_examples: int = 4
    """Tail prompts shown to the teacher in each feedback generation prompt."""

    feedback_per_round: int = 8
    """Few-shot generation prompts built (each from its own tail picks) per feedback round."""

    generations_per_prompt: int = 4
    """Continuations the teacher samples per few-shot prompt; each may become one new
    prompt after parsing, de-duplication, noise rejection and the share cap."""

    feedback_share_cap: float = 0.2
    """Most share of the prompts topic that synthetic feedback prompts may take, so real
    traffic always dominates."""

    noise_rejection_zscore: float = 4.0
    """Drop generated prompts whose energy z-score against the window exceeds this (noise,
    not tail)."""

    min_answer_gap: float = 0.1
    """With ``score=answer_gap``: a tail must also lag the teacher by more than this, in
    nats per answer token, and a feedback round runs only when new such tails arrived since
    the last one: once the student has learned the tails, feedback stops (its budget
    follows the measured gap)."""

    sample_share: float = 1.0
    """Share of the polled traffic that is scored (a random sample): below 1 the actor
    costs less CPU beside the teacher and the learner; the tails are found all the same,
    only more slowly."""

    feedback_interval_s: float = 5.0
    """How often the OOD actor picks tails and asks the teacher for new prompts."""

    num_cpus: float = 0.25
    """CPUs Ray reserves for the OOD-feedback actor."""

    def __post_init__(self) -> None:
        normalize_fields(self)
        check_range(self, "energy_temperature", gt=0, fix="a typical value is 1.0")
        check_range(self, "window_size", ge=10, fix="a typical value is 2000")
        check_range(self, "tail_quantile", gt=0, lt=1, fix="a typical value is 0.95")
        check_range(
            self,
            "few_shot_examples",
            ge=1,
            le=self.window_size,
            fix="at most window_size; a typical value is 4",
        )
        check_range(self, "min_window", ge=1, fix="a typical value is 200")
        check_range(self, "tail_capacity", ge=1, fix="a typical value is 256")
        check_range(self, "feedback_per_round", ge=1, le=1024, fix="a typical value is 8")
        check_range(self, "generations_per_prompt", ge=1, le=64, fix="a typical value is 4")
        check_range(self, "feedback_share_cap", ge=0, le=1, fix="a typical value is 0.2")
        check_range(self, "noise_rejection_zscore", gt=0, fix="a typical value is 4.0")
        check_range(self, "feedback_interval_s", gt=0, fix="a typical value is 5")
        check_range(self, "min_answer_gap", ge=0, fix="a typical value is 0.1")
        check_range(self, "sample_share", gt=0, le=1, fix="a typical value is 0.5")
        check_range(self, "num_cpus", ge=0, fix="a typical value is 0.25")
