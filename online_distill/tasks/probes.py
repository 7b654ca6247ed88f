"""Fixed probe sets of the demo task and a one-call report of a model on them.

- ``head``: ``add2`` problems, the bulk of traffic before the drift;
- ``tail``: the rare kinds (``add3``, ``sub2``, ``mul``) in equal shares;
- ``post_drift``: drawn from the post-drift traffic mix.

The sets are fixed by their seeds (the evaluation gate and the benchmarks compare models on
the same problems); pass another ``seed`` for a fresh draw.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from transformers import PreTrainedModel, PreTrainedTokenizerFast

from online_distill.tasks.arithmetic import HEAD_KINDS, KINDS, TAIL_KINDS, Problem, sample_problem
from online_distill.tasks.evaluate import exact_match_by_kind, in_context_continuation
from online_distill.tasks.traffic import DEFAULT_DRIFT_MIX, check_mix

ProbeName = Literal["head", "tail", "post_drift"]
PROBE_NAMES: tuple[ProbeName, ...] = ("head", "tail", "post_drift")
_SEEDS: dict[ProbeName, int] = {"head": 101, "tail": 102, "post_drift": 103}


def probe_set(
    name: ProbeName,
    size: int = 300,
    seed: int | None = None,
    drift_mix: Mapping[str, float] = DEFAULT_DRIFT_MIX,
) -> list[Problem]:
    """The probe set ``name`` (``size`` problems; fixed unless ``seed`` is given)."""
    if name not in _SEEDS:
        raise ValueError(f"unknown probe set {name!r}: use one of {', '.join(PROBE_NAMES)}")
    rng = random.Random(_SEEDS[name] if seed is None else _SEEDS[name] * 1_000_003 + seed)
    if name == "post_drift":
        weights = check_mix(drift_mix, "drift_mix")
        kinds = rng.choices(list(weights), weights=list(weights.values()), k=size)
    else:
        pool = HEAD_KINDS if name == "head" else TAIL_KINDS
        kinds = [pool[i % len(pool)] for i in range(size)]
    return [sample_problem(kind, rng) for kind in kinds]


def probe_scores(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    names: Sequence[ProbeName] = ("head", "tail"),
    size: int = 300,
    seed: int | None = None,
) -> dict[str, float]:
    """Greedy exact-match of a loaded model on each named probe set."""
    return {name: exact_match_by_kind(model, tokenizer, probe_set(name, size, seed))["all"]
            for name in names}


def measure_demo_model(
    model_dir: str | Path, size: int = 300, seed: int | None = None, continuation_trials: int = 100
) -> dict[str, float]:
    """Greedy exact-match on each probe set and per kind, plus few-shot continuation rates.

    Keys: ``head``, ``tail``, ``post_drift``, ``kind/<kind>``, ``continuation/<kind>``
    (well-formed new line of the same kind, sampled at temperature 1) and
    ``continuation_correct/<kind>``.
    """
    from online_distill.models.loader import load_model

    model, tokenizer = load_model(model_dir)
    report: dict[str, float] = {}
    per_kind: dict[str, list[float]] = {}
    for name in PROBE_NAMES:
        problems = probe_set(name, size=size, seed=seed)
        scores = exact_match_by_kind(model, tokenizer, problems)
        report[name] = scores["all"]
        for kind in KINDS:
            if kind in scores:
                per_kind.setdefault(kind, []).append(scores[kind])
    for kind, values in per_kind.items():
        report[f"kind/{kind}"] = sum(values) / len(values)
    for kind in TAIL_KINDS:
        result = in_context_continuation(
            model, tokenizer, kind, trials=continuation_trials, seed=seed or 0
        )
        report[f"continuation/{kind}"] = result.well_formed_same_kind
        report[f"continuation_correct/{kind}"] = result.correct
    return report
